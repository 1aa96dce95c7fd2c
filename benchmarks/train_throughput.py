"""Meta-training throughput: the Ray Data + Ray Train loop (1 and 2 workers) vs a tight in-memory loop.

Same model (ProtoNet Conv4), same episode shape (the benchmark config: 60-way 1-shot 5-query), same
optimizer. The tight loop holds the decoded train split in memory and builds each episode with the same
``EpisodicSampler`` in the training process, with no Ray at all. Ray Train's rate is read from the run's
``episodes_per_second`` metric history (MLflow), leaving out the first logging interval (start-up) and
meta-validation. Rounds alternate the methods to cancel machine drift::

    python benchmarks/train_throughput.py [--steps 300] [--rounds 2]

Prints the table and writes ``benchmarks/results/train_throughput.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import machine_info  # noqa: E402
from paths import repo_relative  # noqa: E402

from fewray.algorithms import build_classifier  # noqa: E402
from fewray.platform.config import load_config  # noqa: E402
from fewray.data.catalog import load_split  # noqa: E402
from fewray.data.episodes import EpisodicSampler  # noqa: E402
from fewray.platform.features import to_float  # noqa: E402
from fewray.platform.train import make_optimizer, run_metatrain  # noqa: E402


def tight_loop(cfg, images, labels, steps: int, warmup: int = 10) -> float:
    """Episodes per second of a plain loop: sample, gather, forward, backward, step."""
    torch.set_num_threads(cfg.train.torch_threads or cfg.train.cpus_per_worker)
    t = cfg.train
    model = build_classifier(cfg.model)
    opt, sched = make_optimizer(model, cfg)
    sampler = EpisodicSampler(labels, t.ways, t.shots, t.queries, cfg.seed)
    for i in range(warmup + steps):
        if i == warmup:
            t0 = time.perf_counter()
        e = sampler.episode(i)
        out = model(mode="train", support_img=to_float(images[e.support_idx]),
                    support_label=torch.from_numpy(e.support_label),
                    query_img=to_float(images[e.query_idx]), query_label=torch.from_numpy(e.query_label))
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()
        sched.step()
    return steps / (time.perf_counter() - t0)


def ray_train(cfg_path: str, catalog: str, steps: int, workers: int, log_interval: int) -> float:
    """Episodes per second (all workers) of run_metatrain, from its MLflow metric history."""
    from mlflow.tracking import MlflowClient

    threads = 2 // workers or 1
    with tempfile.TemporaryDirectory() as d:
        cfg = load_config(cfg_path, [f"data.root={catalog}", f"train.num_steps={steps}", f"train.val_interval={steps}",
                                     f"train.log_interval={log_interval}", f"train.num_workers={workers}",
                                     f"train.torch_threads={threads}", "val.num_tasks=10", "tracking.experiment=throughput"])
        uri = f"sqlite:///{d}/mlflow.db"
        res = run_metatrain(cfg, Path(d) / "out", tracking_uri=uri)
        hist = sorted((m.step, m.value) for m in MlflowClient(uri).get_metric_history(res["mlflow_run_id"], "episodes_per_second"))
    rates = [v for s, v in hist if s > log_interval]
    return float(np.mean(rates))


def main(argv=None) -> int:
    import ray

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/classification/protonet_conv4_omniglot.yaml")
    p.add_argument("--catalog", default="data/omniglot")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out", default="benchmarks/results/train_throughput")
    args = p.parse_args(argv)
    catalog = str(Path(args.catalog).resolve())
    cfg = load_config(args.config, [f"data.root={catalog}"])
    data = load_split(catalog, "train", cfg.data.channels)
    ray.init(address="local", logging_level="ERROR", include_dashboard=False)
    results: dict[str, list[float]] = {"in-memory loop": [], "Ray Data + Ray Train, 1 worker": [],
                                       "Ray Data + Ray Train, 2 workers": []}
    for r in range(args.rounds):
        results["in-memory loop"].append(tight_loop(cfg, data.images, data.labels, args.steps))
        results["Ray Data + Ray Train, 1 worker"].append(ray_train(args.config, catalog, args.steps, 1, 25))
        results["Ray Data + Ray Train, 2 workers"].append(ray_train(args.config, catalog, args.steps, 2, 25))
        print(f"round {r}: " + ", ".join(f"{k} {v[-1]:.2f} ep/s" for k, v in results.items()), flush=True)
    info = machine_info()
    base = float(np.mean(results["in-memory loop"]))
    t = cfg.train
    lines = [f"Meta-training throughput, ProtoNet Conv4, {t.ways}-way {t.shots}-shot {t.queries}-query episodes, "
             f"{args.steps} steps x {args.rounds} alternating rounds. {info['date']}, {info['cpu']}, {info['cores']} cores, "
             f"torch {info['torch']}, Ray {info['ray']}.", "",
             "| loop | episodes/s (mean of rounds) | rounds | time per episode vs in-memory |", "|---|---|---|---|"]
    for k, v in results.items():
        m = float(np.mean(v))
        lines.append(f"| {k} | {m:.2f} | {', '.join(f'{x:.2f}' for x in v)} | {100 * (base / m - 1):+.1f}% |")
    table = "\n".join(lines)
    print(table)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    report = {"machine": info, "results": results, "steps": args.steps}
    Path(args.out + ".json").write_text(json.dumps(repo_relative(report), indent=2) + "\n")
    Path(args.out + ".md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""MAML's speed side by side in one run: meta-training tasks/s of fewray against a plain PyTorch loop (and learn2learn
where it is installed), and meta-test tasks/s of the per-task protocol against the looped and vectorised chunks.

Same model (Conv4 + a 5-way linear head, as configs/classification/maml/conv4_omniglot.yaml), same episodes (the
train split's episodes 0.. of Omniglot 28x28 5-way 1-shot 15-query, built once by fewray's EpisodeBuilder), the
paper's settings (second order, one inner step of 0.4, meta-batches of 32 tasks, Adam 1e-3). Rows:

- **plain PyTorch loop**: the benchmark's own 20 lines: batch-norm without running statistics
  (``torch.func.replace_all_batch_norm_modules_``), per task ``torch.func.functional_call`` + ``torch.func.grad``
  for the inner step, the query losses averaged, one backward and one Adam step per meta-batch; episodes in memory.
- **fewray MAML, loop / vmap**: ``model(mode="train", support_img=(32, 5, 1, 28, 28), ...)`` with
  ``task_batching`` loop / vmap, episodes in memory (the model's own cost).
- **fewray metatrain**: ``run_metatrain`` of the config with ``train.meta_batch_size=32``: Ray Data streams the
  meta-batches, Ray Train steps (1 worker, 2 torch threads); the rate is the run's ``episodes_per_second`` history in
  MLflow without its first logging window (start-up) - what a user's run logs.
- **learn2learn MAML** (``--l2l-python``, an interpreter of an environment of its own with learn2learn): its
  ``MAML.clone()`` / ``adapt()`` on the same episodes (saved to a temporary .npz), same architecture.

Meta-test (``--test-tasks`` tasks of 5-way 1-shot 15-query, 3 first-order inner steps of 0.4, chunks of 100 tasks):
the per-task protocol (``forward(mode='support')`` / ``forward(mode='query')`` task by task: what
``forward_tasks`` ran before meta-batches) against ``forward_tasks`` looped and vectorised; and the fine-tune heads
(Baseline's 150 SGD steps of a new linear head per task on frozen features) looped against vectorised.

Rounds alternate the rows to cancel machine drift. Usage::

    RAY_AUTH_MODE=disabled python benchmarks/maml_speed.py [--meta-batches 6] [--rounds 2] [--l2l-python /work/l2l/bin/python]

Prints the table and writes ``benchmarks/results/maml_speed.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from machine import machine_info  # noqa: E402
from paths import repo_relative  # noqa: E402

from fewray.algorithms import build_classifier  # noqa: E402
from fewray.data.builders import EpisodeBuilder  # noqa: E402
from fewray.platform.config import load_config  # noqa: E402
from fewray.platform.errors import run_cli  # noqa: E402
from fewray.platform.features import to_float  # noqa: E402

CONFIG = "configs/classification/maml/conv4_omniglot.yaml"
MODEL = {"type": "MAML", "backbone": {"type": "Conv4", "in_channels": 1},
         "head": {"type": "LinearHead", "num_classes": 5, "in_channels": 64},
         "num_inner_steps": 1, "inner_lr": 0.4, "test_num_inner_steps": 3}


def episodes(catalog: str, split: str, n: int, seed: int) -> dict[str, torch.Tensor]:
    """``n`` 5-way 1-shot 15-query episodes of ``split`` as float tensors ``(n, M, 1, 28, 28)`` and labels ``(n, M)``."""
    rows = EpisodeBuilder(catalog, split, 1, 5, 1, 15, seed, tasks_per_row=n)({"id": np.array([0])})
    return {k: (to_float(torch.from_numpy(rows[k][0])) if k.endswith("img") else torch.from_numpy(rows[k][0]))
            for k in ("support_img", "support_label", "query_img", "query_label")}


def plain_loop(eps: dict, meta_batch: int, warmup: int = 1) -> float:
    """Tasks/s of the plain second-order MAML loop (functional_call + torch.func.grad), one Adam step per meta-batch."""
    from torch.func import functional_call, grad, replace_all_batch_norm_modules_

    torch.manual_seed(0)
    model = build_classifier(MODEL)
    replace_all_batch_norm_modules_(model)  # batch statistics only, as the paper (torch's own helper)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    params = dict(model.named_parameters())

    def logits(p, x):
        return functional_call(model, p, (), {"mode": "logits", "img": x})

    n = len(eps["support_img"]) // meta_batch
    for b in range(n):
        if b == warmup:
            t0 = time.perf_counter()
        sl = slice(b * meta_batch, (b + 1) * meta_batch)
        loss = 0.0
        for s, y, q, qy in zip(eps["support_img"][sl], eps["support_label"][sl], eps["query_img"][sl],
                               eps["query_label"][sl]):
            g = grad(lambda p: F.cross_entropy(logits(p, s), y))(params)
            fast = {k: params[k] - 0.4 * g[k] for k in params}
            loss = loss + F.cross_entropy(logits(fast, q), qy)
        opt.zero_grad()
        (loss / meta_batch).backward()
        opt.step()
    return (n - warmup) * meta_batch / (time.perf_counter() - t0)


def fewray_model(eps: dict, meta_batch: int, batching: str, warmup: int = 1) -> float:
    """Tasks/s of fewray's MAML forward on stacked meta-batches (``task_batching``), one Adam step per meta-batch."""
    torch.manual_seed(0)
    model = build_classifier({**MODEL, "task_batching": batching})
    model.train()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    n = len(eps["support_img"]) // meta_batch
    for b in range(n):
        if b == warmup:
            t0 = time.perf_counter()
        sl = slice(b * meta_batch, (b + 1) * meta_batch)
        out = model(mode="train", **{k: v[sl] for k, v in eps.items()})
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    return (n - warmup) * meta_batch / (time.perf_counter() - t0)


def fewray_metatrain(catalog: str, meta_batch: int, steps: int, log_interval: int) -> float:
    """Episodes/s of ``run_metatrain`` (Ray Data + Ray Train, 1 worker), from its MLflow history after the first window."""
    from mlflow.tracking import MlflowClient

    from fewray.platform.train import run_metatrain

    with tempfile.TemporaryDirectory() as d:
        cfg = load_config(CONFIG, [f"data.root={catalog}", f"train.meta_batch_size={meta_batch}",
                                   f"train.num_steps={steps}", f"train.val_interval={steps}",
                                   f"train.log_interval={log_interval}", "val.num_tasks=10",
                                   "tracking.experiment=maml_speed"])
        uri = f"sqlite:///{d}/mlflow.db"
        res = run_metatrain(cfg, Path(d) / "out", tracking_uri=uri)
        hist = sorted((m.step, m.value) for m in
                      MlflowClient(uri).get_metric_history(res["mlflow_run_id"], "episodes_per_second"))
    return float(np.mean([v for s, v in hist if s > log_interval]))


L2L_SCRIPT = r"""
import sys, time, numpy as np, torch, torch.nn as nn, torch.nn.functional as F
import learn2learn as l2l
torch.set_num_threads(2)
d = np.load(sys.argv[1]); T = int(sys.argv[2])
def block(i, o):
    return [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(), nn.MaxPool2d(2)]
torch.manual_seed(0)
net = nn.Sequential(*block(1, 64), *block(64, 64), *block(64, 64), *block(64, 64), nn.Flatten(), nn.Linear(64, 5))
maml = l2l.algorithms.MAML(net, lr=0.4, first_order=False)
opt = torch.optim.Adam(maml.parameters(), 1e-3)
s, sy, q, qy = (torch.from_numpy(d[k]) for k in ("support_img", "support_label", "query_img", "query_label"))
n = len(s) // T
for b in range(n):
    if b == 1:
        t0 = time.perf_counter()
    loss = 0.0
    for i in range(b * T, (b + 1) * T):
        learner = maml.clone()
        learner.adapt(F.cross_entropy(learner(s[i]), sy[i]))
        loss = loss + F.cross_entropy(learner(q[i]), qy[i])
    opt.zero_grad(); (loss / T).backward(); opt.step()
print((n - 1) * T / (time.perf_counter() - t0))
"""


def learn2learn(python: str, eps: dict, meta_batch: int) -> float:
    """Tasks/s of learn2learn's MAML in its own interpreter on the same episodes."""
    with tempfile.TemporaryDirectory() as d:
        np.savez(f"{d}/eps.npz", **{k: v.numpy() for k, v in eps.items()})
        Path(d, "l2l.py").write_text(L2L_SCRIPT)
        out = subprocess.run([python, f"{d}/l2l.py", f"{d}/eps.npz", str(meta_batch)], capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": ""})
    if out.returncode != 0:
        raise SystemExit(f"learn2learn run failed: {out.stderr.strip().splitlines()[-1]}")
    return float(out.stdout.strip().splitlines()[-1])


def _chunked_rate(model, batching: str, s: torch.Tensor, sl: torch.Tensor, q: torch.Tensor, chunk: int) -> float:
    """Tasks/s of ``model.forward_tasks`` over chunks of ``chunk`` tasks with ``task_batching=batching``."""
    model.before_meta_test({"task_batching": batching})
    t0 = time.perf_counter()
    with torch.no_grad():
        for c in range(0, len(s), chunk):
            model.forward_tasks(s[c:c + chunk], sl[c:c + chunk], q[c:c + chunk], 5)
    return len(s) / (time.perf_counter() - t0)


def meta_test_rates(eps: dict, chunk: int = 100) -> dict[str, float]:
    """Meta-test tasks/s: MAML's per-task protocol, forward_tasks loop and vmap; Baseline's heads loop and vmap."""
    torch.manual_seed(0)
    rates: dict[str, float] = {}
    model = build_classifier(MODEL)
    model.before_meta_test()
    s, sl, q = eps["support_img"], eps["support_label"], eps["query_img"]
    n = len(s)
    with torch.no_grad():
        t0 = time.perf_counter()
        for i in range(n):
            model.before_forward_support()
            model(mode="support", img=s[i], label=sl[i])
            model(mode="query", img=q[i])
        rates["MAML, per-task protocol (before)"] = n / (time.perf_counter() - t0)
        for batching in ("loop", "vmap"):
            rates[f"MAML, forward_tasks {batching}"] = _chunked_rate(model, batching, s, sl, q, chunk)
    base = build_classifier({"type": "Baseline", "backbone": {"type": "Conv4", "in_channels": 1},
                             "head": {"type": "LinearHead", "num_classes": 64, "in_channels": 64}})
    with torch.no_grad():
        sf = base.extract_feat(s.flatten(0, 1)).view(n, -1, 64)
        qf = base.extract_feat(q.flatten(0, 1)).view(n, -1, 64)
    for batching in ("loop", "vmap"):
        rates[f"Baseline heads (150 steps), {batching}"] = _chunked_rate(base, batching, sf, sl, qf, chunk)
    return rates


def main(argv=None) -> int:
    from fewray.platform.runtime import init_ray

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--catalog", default="data/omniglot")
    p.add_argument("--meta-batch", type=int, default=32)
    p.add_argument("--meta-batches", type=int, default=6, help="meta-batches per in-memory row (the first is warm-up)")
    p.add_argument("--pipeline-steps", type=int, default=24, help="steps of the metatrain row")
    p.add_argument("--test-tasks", type=int, default=200)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--l2l-python", default=None, help="interpreter with learn2learn installed (row left out if None)")
    p.add_argument("--out", default="benchmarks/results/maml_speed")
    args = p.parse_args(argv)
    catalog = str(Path(args.catalog).resolve())
    if not Path(catalog, "catalog.json").is_file():
        raise SystemExit(f"no catalog at {args.catalog}: python pipelines/prepare_data.py omniglot --out {args.catalog}")
    torch.set_num_threads(2)
    eps = episodes(catalog, "train", args.meta_batch * args.meta_batches, 0)
    test_eps = episodes(catalog, "test", args.test_tasks, 0)
    init_ray()  # a local Ray, fewray's progress lines only
    train: dict[str, list[float]] = {}
    test: dict[str, list[float]] = {}
    for r in range(args.rounds):
        row = {"plain PyTorch loop": plain_loop(eps, args.meta_batch),
               "fewray MAML model, loop": fewray_model(eps, args.meta_batch, "loop"),
               "fewray MAML model, vmap": fewray_model(eps, args.meta_batch, "vmap"),
               "fewray metatrain (Ray Data + Ray Train, 1 worker)": fewray_metatrain(
                   catalog, args.meta_batch, args.pipeline_steps, max(2, args.pipeline_steps // 4))}
        if args.l2l_python:
            row["learn2learn MAML"] = learn2learn(args.l2l_python, eps, args.meta_batch)
        for k, v in row.items():
            train.setdefault(k, []).append(v)
        for k, v in meta_test_rates(test_eps).items():
            test.setdefault(k, []).append(v)
        print(f"round {r}: " + ", ".join(f"{k} {v:.2f}" for k, v in {**row, **{k: v[-1] for k, v in test.items()}}.items()),
              flush=True)
    info = machine_info()
    plain = float(np.mean(train["plain PyTorch loop"]))
    lines = [f"MAML Conv4, Omniglot 28x28 5-way 1-shot 15-query, second order, 1 inner step of 0.4, meta-batches of "
             f"{args.meta_batch} tasks; {args.rounds} alternating rounds. {info['date']}, {info['cpu']}, "
             f"{info['cores']} cores, torch {info['torch']}, Ray {info['ray']}.", "",
             "| meta-training | tasks/s (mean) | rounds | plain loop / this |", "|---|---|---|---|"]
    for k, v in train.items():
        m = float(np.mean(v))
        lines.append(f"| {k} | {m:.2f} | {', '.join(f'{x:.2f}' for x in v)} | {plain / m:.2f}x |")
    if not args.l2l_python:
        lines.append("| learn2learn MAML | not run (no --l2l-python) | | |")
    lines += ["", f"| meta-test ({args.test_tasks} tasks, chunks of 100) | tasks/s (mean) | rounds | speed-up |",
              "|---|---|---|---|"]
    for k, v in test.items():
        m = float(np.mean(v))
        ref = test["MAML, per-task protocol (before)" if k.startswith("MAML") else "Baseline heads (150 steps), loop"]
        lines.append(f"| {k} | {m:.2f} | {', '.join(f'{x:.2f}' for x in v)} | {m / float(np.mean(ref)):.2f}x |")
    table = "\n".join(lines)
    print(table)
    report = {"machine": info, "train": train, "test": test, "args": vars(args)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".json").write_text(json.dumps(repo_relative(report), indent=2) + "\n")
    Path(args.out + ".md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    run_cli(main)

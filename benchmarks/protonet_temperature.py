"""ProtoNet's metric scale on 84x84 images: PrototypeHead ``temperature`` vs early meta-training.

Conv4 at 84x84 gives 1600-d features; at initialisation the squared query-prototype distances are near
900 (the table prints the median), so with the paper's unscaled ``-||q - c||^2`` (``temperature: 1.0``) the
softmax starts saturated and a short schedule spends its episodes leaving that regime. Oreshkin et al.
("TADAM", NeurIPS 2018) showed the metric's scale matters; this script measures it on Caltech-101 84x84
with the zoo's episode shape (``configs/classification/proto_net/conv4_caltech101.yaml``: 5-way 5-shot
10-query, Adam 1e-3, standard augmentation). For each temperature it trains the same initial model on the
same episodes in one process (no Ray), prints the training loss / accuracy per window and the 5-way 1-shot
accuracy on meta-val tasks::

    python benchmarks/protonet_temperature.py [--steps 100] [--val-tasks 300] [--temperatures 1,0.1,0.01]

Prints the table and writes ``benchmarks/results/protonet_temperature.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from machine import machine_info  # noqa: E402
from paths import repo_relative  # noqa: E402

from fewray.algorithms import build_classifier  # noqa: E402
from fewray.algorithms.heads.prototype_head import neg_sq_euclidean, prototypes  # noqa: E402
from fewray.platform.config import load_config  # noqa: E402
from fewray.data.catalog import load_split  # noqa: E402
from fewray.data.episodes import EpisodicSampler  # noqa: E402
from fewray.data.transforms import Augmenter  # noqa: E402
from fewray.platform.features import extract_features, to_float  # noqa: E402
from fewray.evaluation.fewshot_accuracy import aggregate  # noqa: E402
from fewray.platform.metatest import evaluate_tasks  # noqa: E402
from fewray.platform.train import make_optimizer  # noqa: E402

CONFIG = ROOT / "configs/classification/proto_net/conv4_caltech101.yaml"
OUT = ROOT / "benchmarks/results/protonet_temperature"


def initial_distances(cfg, images: np.ndarray, sampler: EpisodicSampler) -> float:
    """Median squared distance query-prototype of episode 0 under the untrained (seed 0) model."""
    torch.manual_seed(cfg.seed)
    model = build_classifier(cfg.model.model_dump()).train()
    e = sampler.episode(0)
    with torch.no_grad():
        s = model.extract_feat(to_float(images[e.support_idx]))
        q = model.extract_feat(to_float(images[e.query_idx]))
    protos = prototypes(s, torch.from_numpy(e.support_label), sampler.ways)
    return float(-neg_sq_euclidean(q, protos).median())


def train_and_validate(cfg, temperature: float, train, val, sampler: EpisodicSampler, steps: int, window: int,
                       val_tasks: int) -> dict:
    """Meta-train ``steps`` episodes of ``sampler`` at ``temperature`` (the config's optimizer and schedule), then
    meta-validate with the config's ``val`` setting."""
    torch.manual_seed(cfg.seed)
    model_cfg = cfg.model.model_dump()
    model_cfg["head"] = {**model_cfg["head"], "temperature": temperature}
    model = build_classifier(model_cfg).train()
    opt, sched = make_optimizer(model, cfg)
    augment = Augmenter(cfg.data.augment, cfg.data.image_size, cfg.seed)
    losses, accs, t0 = [], [], time.perf_counter()
    for i in range(steps):
        e = sampler.episode(i)
        out = model(mode="train", support_img=to_float(augment(train.images[e.support_idx], 2 * i)),
                    support_label=torch.from_numpy(e.support_label),
                    query_img=to_float(augment(train.images[e.query_idx], 2 * i + 1)),
                    query_label=torch.from_numpy(e.query_label))
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()
        sched.step()
        losses.append(float(out["loss"].detach()))
        accs.append(100 * float(out["accuracy"]))
    train_seconds = time.perf_counter() - t0
    model.eval()
    feats = extract_features(model, val.images)
    v = cfg.val
    per_task = evaluate_tasks(model, feats, val.labels, v.ways, v.shots, v.queries, v.seed, range(val_tasks), "val")
    mean, _, ci95 = aggregate(per_task)
    windows = [(k + window, float(np.mean(losses[k:k + window])), float(np.mean(accs[k:k + window])))
               for k in range(0, steps, window)]
    return {"temperature": temperature, "windows": windows, "val_1shot": mean, "val_ci95": ci95,
            "train_seconds": train_seconds}


def render(cfg, rows: list[dict], d0: float, args, info: dict) -> str:
    """Markdown table: one row per temperature, loss / accuracy per window, meta-val accuracy."""
    t, v, o = cfg.train, cfg.val, cfg.train.optimizer
    steps = [w[0] for w in rows[0]["windows"]]
    head = ["temperature", *(f"loss / acc @ep {s}" for s in steps),
            f"val {v.ways}-way {v.shots}-shot ({args.val_tasks} tasks)"]
    lines = [
        f"ProtoNet Conv4, Caltech-101 {cfg.data.image_size}x{cfg.data.image_size} train split, {args.steps} episodes "
        f"of {t.ways}-way {t.shots}-shot {t.queries}-query each run "
        f"(same seed, same episodes and augmentation), {o.type} {o.lr:g}; loss and training accuracy (%) averaged over "
        f"windows of {args.window} episodes. Median squared query-prototype distance at initialisation: {d0:.0f}. "
        f"{info['date']}, {info['cpu']}, {info['cores']} cores.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in rows:
        cells = [f"{r['temperature']:g}", *(f"{loss:.2f} / {acc:.1f}" for _, loss, acc in r["windows"]),
                 f"{r['val_1shot']:.2f} ± {r['val_ci95']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    """Run every temperature, print the table, write JSON and Markdown."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--window", type=int, default=25)
    p.add_argument("--val-tasks", type=int, default=300)
    p.add_argument("--temperatures", default="1,0.1,0.01")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(CONFIG)
    train = load_split(cfg.data.root, "train", channels=cfg.data.channels)
    val = load_split(cfg.data.root, "val", channels=cfg.data.channels)
    sampler = EpisodicSampler(train.labels, cfg.train.ways, cfg.train.shots, cfg.train.queries, cfg.seed, "train")
    d0 = initial_distances(cfg, train.images, sampler)
    rows = []
    for temp in (float(x) for x in args.temperatures.split(",")):
        rows.append(train_and_validate(cfg, temp, train, val, sampler, args.steps, args.window, args.val_tasks))
        print(f"temperature {temp:g}: val {rows[-1]['val_1shot']:.2f}", flush=True)
    info = machine_info()
    table = render(cfg, rows, d0, args, info)
    print(table)
    OUT.with_suffix(".md").write_text(table)
    report = {"machine": info, "initial_median_sq_distance": d0, "args": vars(args), "rows": rows}
    OUT.with_suffix(".json").write_text(json.dumps(repo_relative(report), indent=2))


if __name__ == "__main__":
    main()

"""MAML's meta-batch step with channels-last against contiguous (NCHW) weights, side by side in one run.

The runtime stores a model's 4-D weights channels-last (:func:`fewray.platform.features.channels_last`) unless the
model sets ``prefers_channels_last = False``; MAML does, by this table. Conv4 + 5-way linear head (the Omniglot
meta-batch config), 32 tasks of 5-way K-shot 15-query 28x28 random images, second order, one inner step, one Adam
step; tasks/s is the mean of 3 timed steps after a warm-up, rounds alternate the layouts.

Usage::

    python benchmarks/maml_memory_format.py [--rounds 2]

Writes ``benchmarks/results/maml_memory_format.md``.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch
import yaml

from fewray.algorithms.builder import build_classifier
from fewray.platform.config import config_from_dict

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs/classification/maml/conv4_omniglot_5way5shot_metabatch32.yaml"


def tasks_per_second(model, shots: int, tasks: int = 32, steps: int = 3) -> float:
    """Mean tasks/s of ``steps`` meta-batch steps (after one warm-up) of ``model``."""
    torch.manual_seed(0)
    s = torch.rand(tasks, 5 * shots, 1, 28, 28)
    sl = torch.arange(5).repeat_interleave(shots).repeat(tasks, 1)
    q, ql = torch.rand(tasks, 75, 1, 28, 28), torch.arange(5).repeat_interleave(15).repeat(tasks, 1)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    rates = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        loss = model(mode="train", support_img=s, support_label=sl, query_img=q, query_label=ql)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i:
            rates.append(tasks / (time.perf_counter() - t0))
    return sum(rates) / len(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(2)
    cfg = config_from_dict(yaml.safe_load(CONFIG.read_text()))
    base = build_classifier(cfg.model)
    rates: dict[tuple[int, str], list[float]] = {}
    for _ in range(args.rounds):
        for shots in (1, 5):
            for layout in ("contiguous", "channels_last"):
                model = copy.deepcopy(base)
                if layout == "channels_last":
                    model = model.to(memory_format=torch.channels_last)
                rates.setdefault((shots, layout), []).append(tasks_per_second(model, shots))
    lines = ["| setting | contiguous tasks/s | channels-last tasks/s | channels-last slower by |", "|---|---|---|---|"]
    for shots in (1, 5):
        c, cl = rates[(shots, "contiguous")], rates[(shots, "channels_last")]
        mc, mcl = sum(c) / len(c), sum(cl) / len(cl)
        lines.append(f"| 5-way {shots}-shot, 32 tasks | {mc:.2f} ({', '.join(f'{x:.2f}' for x in c)}) | "
                     f"{mcl:.2f} ({', '.join(f'{x:.2f}' for x in cl)}) | {mc / mcl:.2f}x |")
    table = "\n".join(lines)
    print(table)
    out = ROOT / "benchmarks/results/maml_memory_format.md"
    out.write_text(f"MAML Conv4 meta-batch step, second order, 2 torch threads "
                   f"(`python benchmarks/maml_memory_format.py --rounds {args.rounds}`), {time.strftime('%Y-%m-%d')}, "
                   f"torch {torch.__version__}.\n\n{table}\n")


if __name__ == "__main__":
    main()

"""Detection speed, side by side in one run: fewray's training (Ray Data stream + Ray Train) and evaluation (Ray
tasks over image shards) against a plain PyTorch loop on the same model and the same batches, as torchvision's
detection reference does it (``references/detection/engine.py``: ``train_one_epoch`` sums the loss dict and steps
the optimizer; ``evaluate`` runs the model over the images, then pycocotools' COCOeval).

Usage (from the repository root, on a quiet machine; needs ``data/coco_fsdet``)::

    RAY_AUTH_MODE=disabled python benchmarks/det_speed.py [--steps 60] [--repeats 2]

- training: the base-training config (``configs/detection/faster_rcnn/lite0_fpn_coco_base_training.yaml``:
  Faster R-CNN, EfficientNet-Lite0 + FPN, 2 images of at most 384 px per step, 2 torch threads). The plain loop
  takes its batches from the very same builder (``DetectionBatchBuilder``, no Ray); fewray runs
  ``run_metatrain`` (1 Ray Train worker) and its rate is the mean of the logged ``batches_per_second`` windows after
  the first (steady state; the start-up, Ray Train's worker start and the model build, is reported apart).
  Overhead = plain images/s / fewray images/s - 1.
- evaluation: the test split (coco_mini val2017, 206 images, the split fewshot_det_coco.py reports; ``--split val``
  for its first 103): the plain loop
  (one process, 2 threads; detections then COCOeval) against fewray's fan-out (``detect_split``) with 1 Ray task of
  2 CPUs, 1 task of 1 CPU and 2 tasks of 1 CPU, on warm workers (one untimed 2-task pass first, as on a cluster
  that has evaluated before). Scaling = 2 tasks of 1 CPU against 1 task of 1 CPU (the same work per CPU, twice the
  CPUs). Beside it, the cold case as ``pipelines/evaluate.py`` meets it: Ray restarted (its start not timed), the
  workers prewarmed (:func:`prewarm_detection_workers`) and the split evaluated at once, so each worker's imports
  (~4 s) are inside the time. Earlier measurements had the 1-task run on a warm worker and the 2-task run starting
  a cold one (1.30x, 1.23x): after a training, Ray kills idle workers beyond one per CPU while training's actors
  linger, so the evaluations now get a Ray of their own.

Runs alternate plain / fewray (ABBA over ``--repeats``). Writes ``benchmarks/results/det_speed.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from machine import machine_info  # noqa: E402

from fewray.platform.errors import run_cli  # noqa: E402

OUT = REPO / "benchmarks" / "results" / "det_speed"
CONFIG = "configs/detection/faster_rcnn/lite0_fpn_coco_base_training.yaml"


def _cfg(steps: int, overrides: list[str] = ()):
    from fewray.platform.config import load_config
    from fewray.tasks.detection import DetectionTask

    cfg = load_config(REPO / CONFIG, [f"train.num_steps={steps}", f"train.val_interval={steps}",
                                      "train.log_interval=10", "val.split=val", *overrides])
    return DetectionTask().resolve_config(cfg)


def plain_train(steps: int) -> float:
    """Images/s of the plain loop over ``steps`` batches (the first 10 not timed), 2 torch threads."""
    from fewray.algorithms import build_classifier
    from fewray.data.detection.builder import DetectionBatchBuilder
    from fewray.data.detection.training import training_records
    from fewray.platform.train import make_optimizer
    from fewray.tasks.detection import DetectionTask

    torch.set_num_threads(2)
    cfg = _cfg(steps)
    d = cfg.data
    builder = DetectionBatchBuilder(training_records(d.root, "train", d.classes), cfg.train.batch_size, cfg.seed,
                                    min_size=d.min_size, max_size=d.image_size, flip=True)
    model = build_classifier(cfg.model)
    model.train()
    opt, sched = make_optimizer(model, cfg)
    task = DetectionTask()
    t0, seen = None, 0
    for step in range(steps):
        if step == 10:
            t0, seen = time.perf_counter(), 0
        row = {k: torch.from_numpy(v)[None] for k, v in builder(step).items()}
        inputs = task.model_inputs(row)
        loss = sum(model(inputs["images"], inputs["targets"]).values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        seen += len(inputs["images"])
    return seen / (time.perf_counter() - t0)


def fewray_train(steps: int, tmp: Path) -> tuple[float, float]:
    """``(images/s in steady state, seconds of the whole run)`` of run_metatrain, 1 worker, 2 torch threads."""
    import mlflow

    from fewray.platform.train import run_metatrain

    cfg = _cfg(steps, ["train.torch_threads=2"])
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    t0 = time.perf_counter()
    out = run_metatrain(cfg, tmp / f"train_{time.time_ns()}", tracking_uri=uri)
    total = time.perf_counter() - t0
    hist = mlflow.tracking.MlflowClient(uri).get_metric_history(out["mlflow_run_id"], "batches_per_second")
    rates = [m.value for m in sorted(hist, key=lambda m: m.step)][1:]
    return statistics.mean(rates) * cfg.train.batch_size, total


def plain_eval(model_cfg: dict, state: dict, scorer) -> float:
    """Images/s of a plain loop: every image through the model (2 threads), then one COCOeval."""
    from fewray.algorithms import build_classifier
    from fewray.tasks.detection import decode_record_image, predict_images

    torch.set_num_threads(2)
    model = build_classifier(model_cfg, for_checkpoint=True)
    model.load_state_dict(state)
    model.eval()
    t0 = time.perf_counter()
    images = [decode_record_image(r) for r in scorer.records]
    dets = predict_images(model, images, "cpu", 2)
    ev = scorer.evaluator
    ev.compute(ev.merge([ev.process(scorer.outputs(dets, model_cfg["class_names"]))]))
    return len(images) / (time.perf_counter() - t0)


def fewray_eval(model_cfg: dict, state: dict, scorer, workers: int, threads: int,
                cold: bool = False) -> tuple[float, dict]:
    """Images/s of ``detect_split`` with ``workers`` tasks of ``threads`` CPUs; ``cold``: on a restarted Ray with
    the workers prewarmed as ``pipelines/evaluate.py`` does (Ray's own start not timed, the workers' is)."""
    import ray

    from fewray.platform.evaluate_detection import detect_split, prewarm_detection_workers
    from fewray.platform.runtime import init_ray

    if cold:
        ray.shutdown()
        init_ray()
    t0 = time.perf_counter()
    if cold:
        prewarm_detection_workers(workers, {"num_cpus": threads})
    metrics, _ = detect_split(model_cfg, state, scorer, 2, workers, threads)
    return len(scorer.records) / (time.perf_counter() - t0), metrics


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--split", default="test", help="the catalog split evaluated (test: 206 images, the split the "
                   "benchmarks report; val: 103)")
    p.add_argument("--checkpoint", default="runs/det/base/train_result.json",
                   help="a trained detector for the evaluation side (default: the base model of fewshot_det_coco.py)")
    args = p.parse_args(argv)
    from fewray.platform.checkpoint import load_checkpoint, resolve_checkpoint
    from fewray.platform.runtime import init_ray
    from fewray.tasks.detection import DetectionScorer

    init_ray()
    rows: dict[str, list[float]] = {"plain train": [], "fewray train": [], "fewray train run seconds": [],
                                    "plain eval": [], "fewray eval 1 task x 2 CPUs": [],
                                    "fewray eval 1 task x 1 CPU": [], "fewray eval 2 tasks x 1 CPU": [],
                                    "fewray eval 1 task x 1 CPU, cold": [], "fewray eval 2 tasks x 1 CPU, cold": []}
    state = load_checkpoint(resolve_checkpoint(REPO / args.checkpoint))
    model_cfg = state["config"]["model"]
    cfg = _cfg(args.steps)
    scorer = DetectionScorer(cfg.data.root, args.split, decode=False)
    same = []
    with tempfile.TemporaryDirectory() as d:
        for i in range(args.repeats):
            order = ["plain", "fewray"] if i % 2 == 0 else ["fewray", "plain"]
            for who in order:
                if who == "plain":
                    rows["plain train"].append(plain_train(args.steps))
                    rows["plain eval"].append(plain_eval(model_cfg, state["model"], scorer))
                else:
                    rate, total = fewray_train(args.steps, Path(d))
                    rows["fewray train"].append(rate)
                    rows["fewray train run seconds"].append(total)
                    # a Ray of its own: training's actors left behind make Ray kill idle workers (its soft limit
                    # of one worker per CPU), so a "warm" 2-task run after training started a cold worker (1.23x)
                    import ray

                    ray.shutdown()
                    init_ray()
                    outs = [fewray_eval(model_cfg, state["model"], scorer, 2, 1)[1]]  # untimed: two warm workers
                    for label, w, t, cold in (("1 task x 2 CPUs", 1, 2, False), ("1 task x 1 CPU", 1, 1, False),
                                              ("2 tasks x 1 CPU", 2, 1, False), ("1 task x 1 CPU, cold", 1, 1, True),
                                              ("2 tasks x 1 CPU, cold", 2, 1, True)):
                        r, m = fewray_eval(model_cfg, state["model"], scorer, w, t, cold)
                        rows[f"fewray eval {label}"].append(r)
                        outs.append(m)
                    same.append(all(o == outs[0] for o in outs))
                print(f"repeat {i + 1} {who}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in rows.items() if v), flush=True)
    mean = {k: statistics.mean(v) for k, v in rows.items()}
    overhead = mean["plain train"] / mean["fewray train"] - 1
    scaling = mean["fewray eval 2 tasks x 1 CPU"] / mean["fewray eval 1 task x 1 CPU"]
    cold = mean["fewray eval 2 tasks x 1 CPU, cold"] / mean["fewray eval 1 task x 1 CPU, cold"]
    result = {"machine": machine_info(), "steps": args.steps, "repeats": args.repeats, "runs": rows, "mean": mean,
              "train_overhead": overhead, "eval_scaling_2_vs_1": scaling, "split": args.split,
              "eval_scaling_2_vs_1_cold": cold,
              "eval_2_tasks_vs_1_task_2_cpus": mean["fewray eval 2 tasks x 1 CPU"] / mean["fewray eval 1 task x 2 CPUs"],
              "identical_metrics_1_and_2_tasks": all(same)}
    lines = ["# Detection speed: fewray against a plain PyTorch loop (torchvision's reference shape)", "",
             f"`python benchmarks/det_speed.py --steps {args.steps} --repeats {args.repeats} --split {args.split}` "
             f"({len(scorer.records)} images evaluated); images/s, mean of "
             f"{args.repeats} runs alternated (ABBA). {result['machine'].get('cpu', '')}.", "",
             "| what | images/s | runs |", "|---|---|---|"]
    for k, v in rows.items():
        if k != "fewray train run seconds":
            lines.append(f"| {k} | {mean[k]:.2f} | {', '.join(f'{x:.2f}' for x in v)} |")
    lines += ["", f"- training overhead of Ray Data + Ray Train in steady state: {100 * overhead:+.1f}% "
                  f"(target at most 15%); a whole {args.steps}-step run took {mean['fewray train run seconds']:.0f} s "
                  f"with start-up and one validation",
              f"- evaluation scaling on warm workers, 2 tasks x 1 CPU over 1 task x 1 CPU: {scaling:.2f}x (target at "
              f"least 1.6x); cold (a restarted Ray, the workers' imports timed, as `pipelines/evaluate.py`): "
              f"{cold:.2f}x; "
              f"2 tasks x 1 CPU over 1 task x 2 CPUs (torch's intra-op threads): "
              f"{result['eval_2_tasks_vs_1_task_2_cpus']:.2f}x",
              f"- COCOeval numbers identical across 1 and 2 tasks: {all(same)}"]
    text = "\n".join(lines) + "\n"
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    OUT.with_suffix(".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    run_cli(main)

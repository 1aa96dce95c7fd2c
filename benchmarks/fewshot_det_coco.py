"""TFA's few-shot COCO protocol on the COCO images of ../shared/data: base training, K-shot fine-tuning for
K = 1, 5, 10 over 3 seeds of shots, COCO AP / AP50 of the BASE and NOVEL classes on coco_mini val2017.

Usage (from the repository root; each stage resumes: a finished row is kept, a training run resumes)::

    RAY_AUTH_MODE=disabled python benchmarks/fewshot_det_coco.py --stage base        # ~40 min on 2 cores
    RAY_AUTH_MODE=disabled python benchmarks/fewshot_det_coco.py --stage finetune \\
        --methods tfa_cos,tfa_fc,fsce,ft_full --shots 1,5,10 --seeds 0,1,2
    # the methods with their own base training (from the base-only weights): Meta R-CNN, FSDetView, Attention-RPN, MPSR
    RAY_AUTH_MODE=disabled python benchmarks/fewshot_det_coco.py --stage qs_base
    RAY_AUTH_MODE=disabled python benchmarks/fewshot_det_coco.py --stage finetune \\
        --methods meta_rcnn,fsdetview,attention_rpn,mpsr
    python benchmarks/fewshot_det_coco.py --table-only

**Data** (``configs/detection/coco_split.yaml``; TFA's class split: 20 novel classes = the VOC ones, 60 base):
train = coco128 + coco_mini train2017 (337 images, 2,828 boxes), val = the first half of coco_mini val2017 (103
images; picks checkpoints), test = all of coco_mini val2017 (206 images, 1,786 boxes; the reported numbers).

**Rows** (every one through the user-facing pipelines, ``pipelines/metatrain.py`` then ``pipelines/evaluate.py``):

- base-only: ``configs/detection/faster_rcnn/lite0_fpn_coco_base_training.yaml`` (Faster R-CNN, EfficientNet-Lite0
  ImageNet + FPN, trained on the base classes' boxes); it predicts no novel class, so NOVEL AP is 0 by construction;
- TFA w/fc, TFA w/cos (``configs/detection/tfa/``), FSCE (``configs/detection/fsce/``) and FRCN+ft-full
  (``configs/detection/faster_rcnn/ft_full_lite0_fpn_coco_kshot.yaml``: the same surgery, nothing frozen),
  each fine-tuned on TFA's balanced K-shot set of all 80 classes (``data.few_shot``: K instances per class, seed
  = which set; nested 1 < 5 < 10 per seed) for ``--steps-per-shot`` x K steps of 2 images (lr decayed x0.1 at
  80%), from the base detector by ``random_init`` surgery; one checkpoint, validated once at the last step on
  the test split (``val.split=test``: that validation is the reported evaluation, nothing is selected on it;
  the base-only row goes through ``pipelines/evaluate.py``'s Ray fan-out, the same evaluator);
- the query-support detectors Meta R-CNN, FSDetView and Attention-RPN, and MPSR (``configs/detection/meta_rcnn/``,
  ``fsdetview/``, ``attention_rpn/``, ``mpsr/``): their
  base training (``--stage qs_base``) starts from the base-only detector's weights (the CPU budget does not train
  the shared parts again) and trains on query-support steps of the base classes (MPSR: with its multi-scale
  crops); their base-only rows and their
  K-shot rows (from their own base, same K-shot sets, steps and schedule) come from the same commands.

Writes ``benchmarks/results/fewshot_det_coco.{json,md}`` (each row with its budget and its time on this
machine) and prints the table: mean and standard deviation over the seeds.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from machine import machine_info  # noqa: E402
from paths import repo_relative  # noqa: E402
from runner import pipeline  # noqa: E402

from fewray.platform.errors import run_cli  # noqa: E402

OUT = REPO / "benchmarks" / "results" / "fewshot_det_coco"
SPLIT_FILE = "configs/detection/coco_split.yaml"
BASE_CONFIG = "configs/detection/faster_rcnn/lite0_fpn_coco_base_training.yaml"
METHODS = {
    "tfa_cos": ("TFA w/cos", "configs/detection/tfa/cos_lite0_fpn_coco_kshot.yaml"),
    "tfa_fc": ("TFA w/fc", "configs/detection/tfa/fc_lite0_fpn_coco_kshot.yaml"),
    "fsce": ("FSCE", "configs/detection/fsce/lite0_fpn_coco_kshot.yaml"),
    "ft_full": ("FRCN+ft-full", "configs/detection/faster_rcnn/ft_full_lite0_fpn_coco_kshot.yaml"),
    "meta_rcnn": ("Meta R-CNN", "configs/detection/meta_rcnn/lite0_fpn_coco_kshot.yaml"),
    "fsdetview": ("FSDetView", "configs/detection/fsdetview/lite0_fpn_coco_kshot.yaml"),
    "attention_rpn": ("Attention-RPN", "configs/detection/attention_rpn/lite0_fpn_coco_kshot.yaml"),
    "mpsr": ("MPSR", "configs/detection/mpsr/lite0_fpn_coco_kshot.yaml"),
}
#: the query-support detectors' own base training (``--stage qs_base``): label, config, output dir under --runs
QS_BASES = {
    "meta_rcnn": ("Meta R-CNN base-only", "configs/detection/meta_rcnn/lite0_fpn_coco_base_training.yaml",
                  "meta_rcnn_base"),
    "fsdetview": ("FSDetView base-only", "configs/detection/fsdetview/lite0_fpn_coco_base_training.yaml",
                  "fsdetview_base"),
    "attention_rpn": ("Attention-RPN base-only",
                      "configs/detection/attention_rpn/lite0_fpn_coco_base_training.yaml", "attention_rpn_base"),
    "mpsr": ("MPSR base-only", "configs/detection/mpsr/lite0_fpn_coco_base_training.yaml", "mpsr_base"),
}
SHOWN = ("AP", "AP50", "BASE_AP", "BASE_AP50", "NOVEL_AP", "NOVEL_AP50")


def _load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {"rows": {}}


def _save(results: dict) -> None:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    (OUT.with_suffix(".json")).write_text(json.dumps(repo_relative(results), indent=2) + "\n")


def run_base(args, results: dict, log: Path, db: str) -> None:
    """Train (or resume) the base detector and evaluate it on the test split: the base-only row."""
    if not (REPO / args.catalog / "catalog.json").is_file():
        pipeline("pipelines/prepare_data.py", "detection", "--source", args.source, "--split-file", SPLIT_FILE,
                 "--out", args.catalog, log=log)
    out_dir = REPO / args.base_dir
    t0 = time.perf_counter()
    total, _ = _budget(BASE_CONFIG)
    # in chunks of --base-chunk steps, each a resume of the last (the schedule is by step): a stream of thousands of
    # 1.8 MB rows runs so far ahead of training that Ray Data's backpressure engages, and its scheduling loop then
    # spins a core of this 2-core machine (fewray/platform/streaming.py); a 1000-step stream stays below that
    # (a resumed chunk continues exactly as one long run would: fewray.platform.train.step_seed)
    for stop in list(range(args.base_chunk, total, args.base_chunk)) + [total]:
        pipeline("pipelines/metatrain.py", "--config", BASE_CONFIG, "--set", f"data.root={args.catalog}",
                 "--set", f"train.num_steps={stop}", "--output-dir", str(out_dir), "--tracking-uri", db, log=log)
    _base_row(args, results, log, db, "base_only", "base-only (FasterRCNN on the 60 base classes)", BASE_CONFIG,
              out_dir, t0)


def _base_row(args, results: dict, log: Path, db: str, key: str, label: str, config: str, out_dir: Path,
              t0: float) -> None:
    """Evaluate a trained base detector on the test split (``pipelines/evaluate.py``) and keep its row."""
    train = json.loads((out_dir / "train_result.json").read_text())
    ev_json = out_dir / "evaluate_test.json"
    t1 = time.perf_counter()
    pipeline("pipelines/evaluate.py", "--config", config, "--set", f"data.root={args.catalog}", "--checkpoint",
             str(out_dir / "train_result.json"), "--output", str(ev_json), "--tracking-uri", db, log=log)
    test = json.loads(ev_json.read_text())
    steps, batch = _budget(config)
    results["rows"][key] = {
        "method": label, "shots": None, "seed": None, "config": config, "steps": steps, "batch_size": batch,
        "train_seconds": train["train_seconds"], "evaluate_seconds": round(time.perf_counter() - t1, 1),
        "test": {k: test[k] for k in SHOWN}, "best_step": train["best_step"],
        "val": {k: v for k, v in train.items() if k.startswith("best_val_")},
        "wall_seconds": round(time.perf_counter() - t0, 1)}
    _save(results)
    print(f"{key}: " + ", ".join(f"{k} {test[k]:.2f}" for k in SHOWN), flush=True)


def run_qs_base(args, results: dict, log: Path, db: str, method: str) -> None:
    """Base-train a query-support detector from the Faster R-CNN base detector, evaluate it on test."""
    key = f"{method}/base"
    if key in results["rows"]:
        return
    label, config, out_name = QS_BASES[method]
    out_dir = REPO / args.runs / out_name
    t0 = time.perf_counter()
    print(f"{key}: training ...", flush=True)
    pipeline("pipelines/metatrain.py", "--config", config, "--set", f"data.root={args.catalog}",
             "--set", f"model.init_from={args.base_dir}/train_result.json", "--output-dir", str(out_dir),
             "--tracking-uri", db, log=log)
    _base_row(args, results, log, db, key, label, config, out_dir, t0)


def _budget(config: str) -> tuple[int, int]:
    import yaml

    cfg = yaml.safe_load((REPO / config).read_text())
    return int(cfg["train"]["num_steps"]), int(cfg["train"]["batch_size"])


def run_finetune(args, results: dict, log: Path, db: str, method: str, shots: int, seed: int) -> None:
    """One fine-tuning row: ``method`` on the ``shots``-shot set of ``seed``, trained then evaluated on test."""
    key = f"{method}/{shots}shot/seed{seed}"
    if key in results["rows"]:
        return
    label, config = METHODS[method]
    steps = args.steps_per_shot * shots
    out_dir = REPO / args.runs / f"{method}_{shots}shot_seed{seed}"
    base = f"{args.runs}/{QS_BASES[method][2]}" if method in QS_BASES else args.base_dir
    sets = ["--set", f"data.root={args.catalog}", "--set", f"model.init_from={base}/train_result.json",
            "--set", f"data.few_shot.num_novel_shots={shots}", "--set", f"data.few_shot.num_base_shots={shots}",
            "--set", f"data.few_shot.seed={seed}", "--set", f"train.num_steps={steps}",
            "--set", f"train.val_interval={steps}", "--set", f"train.lr_schedule.milestones=[{int(steps * 0.8)}]"]
    if method == "fsce":
        sets += ["--set", f"train.hooks=[{{type: ContrastiveLossDecayHook, decay_steps: [{int(steps * 0.6)}, "
                          f"{int(steps * 0.8)}], decay_rate: 0.5}}]"]
    # one checkpoint (validated once, at the last step) on the test split: the run's validation IS the test
    # evaluation (the same COCOeval per class split; no checkpoint is chosen on it), which saves a second pass
    sets += ["--set", "val.split=test"]
    t0 = time.perf_counter()
    print(f"{key}: training {steps} steps ...", flush=True)
    pipeline("pipelines/metatrain.py", "--config", config, *sets, "--output-dir", str(out_dir), "--tracking-uri", db,
             log=log)
    train = json.loads((out_dir / "train_result.json").read_text())
    results["rows"][key] = {
        "method": label, "shots": shots, "seed": seed, "config": config, "steps": steps, "batch_size": 2,
        "train_seconds": train["train_seconds"], "evaluate_seconds": 0.0,
        "test": {k: train[f"best_val_{k}"] for k in SHOWN}, "wall_seconds": round(time.perf_counter() - t0, 1)}
    _save(results)
    print(f"{key}: " + ", ".join(f"{k} {results['rows'][key]['test'][k]:.2f}" for k in SHOWN), flush=True)


def _ms(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def table(results: dict) -> str:
    """The Markdown table: one line per method and K (mean ± std over the seeds run), budget and time."""
    rows = results["rows"]
    lines = ["| method | K | seeds | BASE AP | BASE AP50 | NOVEL AP | NOVEL AP50 | AP (all 80) | budget | "
             "train + eval time |", "|---|---|---|---|---|---|---|---|---|---|"]
    if "base_only" in rows:
        r = rows["base_only"]
        t = r["test"]
        lines.append(f"| {r['method']} | - | - | {t['BASE_AP']:.2f} | {t['BASE_AP50']:.2f} | {t['NOVEL_AP']:.2f} | "
                     f"{t['NOVEL_AP50']:.2f} | {t['AP']:.2f} | {r['steps']} steps x {r['batch_size']} images | "
                     f"{r['train_seconds'] / 60:.1f} + {r['evaluate_seconds'] / 60:.1f} min |")
    for method, (label, _) in METHODS.items():
        if f"{method}/base" in rows:
            r = rows[f"{method}/base"]
            t = r["test"]
            lines.append(f"| {r['method']} | - | - | {t['BASE_AP']:.2f} | {t['BASE_AP50']:.2f} | {t['NOVEL_AP']:.2f} "
                         f"| {t['NOVEL_AP50']:.2f} | {t['AP']:.2f} | {r['steps']} steps x {r['batch_size']} images "
                         f"(from the base-only detector) | {r['train_seconds'] / 60:.1f} + "
                         f"{r['evaluate_seconds'] / 60:.1f} min |")
        for k in sorted({r["shots"] for key, r in rows.items() if key.startswith(method + "/") and r["shots"]}):
            group = [r for key, r in rows.items() if key.startswith(f"{method}/{k}shot/")]
            col = {m: [g["test"][m] for g in group if not math.isnan(g["test"][m])] for m in SHOWN}
            secs = statistics.mean(g["train_seconds"] for g in group) / 60
            ev = statistics.mean(g["evaluate_seconds"] for g in group) / 60
            lines.append(f"| {label} | {k} | {', '.join(str(g['seed']) for g in group)} | {_ms(col['BASE_AP'])} | "
                         f"{_ms(col['BASE_AP50'])} | {_ms(col['NOVEL_AP'])} | {_ms(col['NOVEL_AP50'])} | "
                         f"{_ms(col['AP'])} | {group[0]['steps']} steps x 2 images | {secs:.1f} + {ev:.1f} min |")
    return "\n".join(lines)


def write_table(results: dict) -> str:
    md = ["# Few-shot detection, TFA's COCO protocol on the COCO images of ../shared/data",
          "", "`python benchmarks/fewshot_det_coco.py` (see its docstring). COCO AP in percent on coco_mini val2017 "
          "(206 images), pycocotools COCOeval once per class split over the detections merged from the Ray tasks. "
          "Mean ± standard deviation over the seeds of shots listed. Times: training + evaluation per run on this "
          "machine (" + results.get("machine", {}).get("cpu", "") + "); a fine-tuning row's test evaluation is its "
          "run's one validation, inside its training time (Ray start, model build and the 206-image pass included). "
          "Fine-tuning: all 80 classes, K instances each, lr 0.01 decayed x0.1 at 80%.", "", table(results), ""]
    text = "\n".join(md)
    OUT.with_suffix(".md").write_text(text)
    return text


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", choices=["base", "qs_base", "finetune"], default=None)
    p.add_argument("--methods", default=None, help="finetune: default tfa_cos,tfa_fc,fsce,ft_full; qs_base: "
                   "default meta_rcnn,fsdetview,attention_rpn,mpsr")
    p.add_argument("--shots", default="1,5,10")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--steps-per-shot", type=int, default=20, help="fine-tuning steps per shot (default 20)")
    p.add_argument("--catalog", default="data/coco_fsdet")
    p.add_argument("--source", default="../shared/data")
    p.add_argument("--base-dir", default="runs/det/base")
    p.add_argument("--base-chunk", type=int, default=1000, help="base training steps per metatrain call (resumed)")
    p.add_argument("--runs", default="runs/det")
    p.add_argument("--table-only", action="store_true")
    args = p.parse_args(argv)
    results = _load(OUT.with_suffix(".json"))
    runs = REPO / args.runs
    runs.mkdir(parents=True, exist_ok=True)
    log, db = runs / "benchmark.log", f"sqlite:///{runs / 'mlflow.db'}"
    if not args.table_only:
        results["machine"] = machine_info()
        if args.stage == "base":
            run_base(args, results, log, db)
        elif args.stage == "qs_base":
            for method in (args.methods or ",".join(QS_BASES)).split(","):
                run_qs_base(args, results, log, db, method)
        elif args.stage == "finetune":
            for seed in [int(s) for s in args.seeds.split(",")]:
                for shots in [int(k) for k in args.shots.split(",")]:
                    for method in (args.methods or "tfa_cos,tfa_fc,fsce,ft_full").split(","):
                        run_finetune(args, results, log, db, method, shots, seed)
    print(write_table(results))
    return 0


if __name__ == "__main__":
    run_cli(main)

"""Meta-test speed before and after a change: ``benchmarks/metatest_speed.py`` of two commits, alternated.

Issue 14 ("nothing lost") asks that the runtime's refactor leave meta-test speed where it was: fewray's ratios to
the ideal (one batched feature pass plus all tasks' arithmetic, the floor for this work on this machine; see
``metatest_speed.py``) no worse after than before beyond the spread of the runs. This script extracts the
``--before`` commit's tree with ``git archive`` into ``runs/speed_before_after/<commit>`` and runs each tree's own
``benchmarks/metatest_speed.py`` (its own fewray first on ``PYTHONPATH``, which Ray's workers inherit) on the same
checkpoint, catalog and tasks, ``--repeats`` times each, alternating before / after so that a change in the
machine's load hits both. Every run measures its own ideal, so each ratio is side by side within one process.

Usage (from the repository root, after ``make data`` and a trained ProtoNet, e.g. the zoo's)::

    python benchmarks/metatest_speed_before_after.py --before 5d77a46 \\
        --checkpoint runs/zoo/proto_net_conv4_omniglot/train_result.json

Prints the table and writes ``benchmarks/results/metatest_speed_before_after.{json,md}``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from machine import machine_info  # noqa: E402
from paths import repo_relative  # noqa: E402

from fewray.platform.errors import FewrayError, run_cli  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "metatest_speed_before_after"


def git(*args: str) -> str:
    """``git ARGS`` in the repository; its stdout (stripped).

    Raises:
        FewrayError: git fails (an unknown commit, say), with its message.
    """
    r = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        raise FewrayError(f"git {' '.join(args)}: {r.stderr.strip()}")
    return r.stdout.strip()


def extract_tree(commit: str, dest: Path) -> Path:
    """The files of ``commit`` under ``dest`` (``git archive``; reused when already there)."""
    if not (dest / "fewray" / "__init__.py").is_file():
        dest.mkdir(parents=True, exist_ok=True)
        data = subprocess.run(["git", "archive", commit], cwd=ROOT, capture_output=True, check=True).stdout
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            tar.extractall(dest, filter="data")
    return dest


def ratios(report: dict) -> dict[str, float]:
    """fewray's ratios to the ideal in one ``metatest_speed.py`` report: per setting and worker count, the
    cold first call (x ideal + Ray start) and each scaling row."""
    out: dict[str, float] = {}
    start = report["ray_start_seconds"]
    for setting in dict.fromkeys(r["setting"] for r in report["rows"]):
        group = {r["method"]: r["seconds"] for r in report["rows"] if r["setting"] == setting}
        for w in ("1 worker", "2 workers"):
            out[f"{setting}, fewray ({w}) x ideal"] = group[f"fewray ({w})"] / group["ideal"]
    out["first call in a fresh Ray x (ideal + Ray start)"] = ((report["cold_first_call_seconds"] + start)
                                                              / (report["rows"][0]["seconds"] + start))
    for s in report["scaling"]:
        out[f"{s['tasks']} tasks (5w1s, 2 workers) x ideal"] = s["fewray_seconds"] / s["ideal_seconds"]
    return out


def run_tree(tree: Path, label: str, i: int, args, runs: Path) -> dict:
    """One ``metatest_speed.py`` run of ``tree``; its report plus which fewray it imported."""
    out = runs / f"{label}_{i}"
    env = {**os.environ, "PYTHONPATH": str(tree), "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}
    cmd = [sys.executable, "benchmarks/metatest_speed.py", "--skip-peer", "--checkpoint", str(Path(args.checkpoint).resolve()),
           "--catalog", str(Path(args.catalog).resolve()), "--tasks", str(args.tasks), "--settings", args.settings,
           "--scaling", args.scaling, "--out", str(out)]
    where = subprocess.run([sys.executable, "-c", "import fewray; print(fewray.__file__)"], cwd=tree, env=env,
                           capture_output=True, text=True).stdout.strip()
    if not Path(where).resolve().is_relative_to(tree.resolve()):
        raise FewrayError(f"the {label} run would import fewray from {where}, not from {tree}")
    print(f"== {label} run {i + 1}: {tree}", flush=True)
    log = runs / f"{label}_{i}.log"
    with log.open("w") as fh:
        rc = subprocess.run(cmd, cwd=tree, env=env, stdout=fh, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        raise FewrayError(f"{label} run {i + 1} failed (exit {rc}); see {log}")
    report = json.loads(Path(f"{out}.json").read_text())
    r = ratios(report)
    for k, v in r.items():
        print(f"   {k}: {v:.2f}", flush=True)
    return {"tree": label, "run": i + 1, "ratios": r, "report": report}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before", default="5d77a46", help="the commit before the change (default: before issue 14)")
    p.add_argument("--checkpoint", default="runs/zoo/proto_net_conv4_omniglot/train_result.json")
    p.add_argument("--catalog", default="data/omniglot")
    p.add_argument("--tasks", type=int, default=2000)
    # 5x1 only by default: metatest_speed.py's plain per-task loop takes ~260 s at 20x5 on 2 cores, every run
    p.add_argument("--settings", default="5x1", help="WAYSxSHOTS list (metatest_speed.py --settings)")
    p.add_argument("--scaling", default="2000,10000", help="metatest_speed.py --scaling")
    p.add_argument("--repeats", type=int, default=2, help="runs per tree, alternated")
    args = p.parse_args(argv)
    for path, what in ((args.checkpoint, "--checkpoint"), (Path(args.catalog) / "catalog.json", "--catalog")):
        if not Path(path).is_file():
            raise FewrayError(f"{what}: {path} does not exist (train the zoo's ProtoNet / run `make data` first)")
    before = git("rev-parse", "--short", args.before)
    after = git("rev-parse", "--short", "HEAD")
    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    runs = ROOT / "runs" / "speed_before_after"
    trees = {f"before ({before})": extract_tree(before, runs / before),
             f"after ({after}{' + uncommitted' if dirty else ''})": ROOT}
    results = []
    for i in range(args.repeats):
        # ABBA order: before/after, then after/before, so neither tree always runs on a warmer machine.
        for label, tree in (list(trees.items()) if i % 2 == 0 else list(trees.items())[::-1]):
            results.append(run_tree(tree, label.split(" ")[0], i, args, runs))
            results[-1]["tree"] = label
    keys = list(results[0]["ratios"])
    lines = [f"Meta-test speed before and after: fewray's ratio to the ideal (lower is better), ProtoNet Conv4, "
             f"Omniglot test split, {args.tasks} tasks, 15 queries; each run measures its own ideal. "
             f"Runs alternate before/after in ABBA order. `python benchmarks/metatest_speed_before_after.py --before {args.before}`.",
             "", "| ratio | " + " | ".join(f"{r['tree']} #{r['run']}" for r in results) + " | before spread | after mean |",
             "|---|" + "---|" * (len(results) + 2)]
    summary = {}
    for k in keys:
        b = [r["ratios"][k] for r in results if r["tree"].startswith("before")]
        a = [r["ratios"][k] for r in results if r["tree"].startswith("after")]
        summary[k] = {"before": b, "after": a, "before_max": max(b), "after_mean": statistics.mean(a),
                      "no_worse": statistics.mean(a) <= max(b) + (max(b) - min(b))}
        lines.append(f"| {k} | " + " | ".join(f"{r['ratios'][k]:.2f}" for r in results)
                     + f" | {min(b):.2f}-{max(b):.2f} | {statistics.mean(a):.2f} |")
    info = machine_info()
    lines += ["", f"No worse (after's mean <= before's max + before's spread) in "
              f"{sum(s['no_worse'] for s in summary.values())} of {len(summary)} ratios. "
              f"Machine: {info.get('cpu', '')}, {info.get('cores', '')} cores, {info.get('date', '')}."]
    table = "\n".join(lines)
    print(table)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.with_suffix(".json").write_text(json.dumps(repo_relative(
        {"before": before, "after": after, "args": vars(args), "machine": info, "summary": summary,
         "runs": [{k: v for k, v in r.items() if k != "report"} | {"seconds": {
             "ray_start": r["report"]["ray_start_seconds"], "cold_first_call": r["report"]["cold_first_call_seconds"],
             "rows": {f"{x['setting']} {x['method']}": x["seconds"] for x in r["report"]["rows"]}}}
                  for r in results]}), indent=2) + "\n")
    OUT.with_suffix(".md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    run_cli(main)

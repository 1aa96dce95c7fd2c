"""Meta-test: tasks fanned out as independent Ray tasks, accuracies aggregated into mean, std and ci95.

The flow (DESIGN.md, "frozen-backbone meta-test"):

1. one Ray task loads the checkpoint and extracts the features of the whole split once
   (mmfewshot's fast_test), on a GPU when the cluster has one; for a classifier that adapts its
   backbone per task (MAML: ``frozen_backbone_at_test = False``) it ships the decoded images instead;
2. the features go through the object store to ``num_workers`` evaluation tasks
   (one per GPU, or per CPU slot when there is none), each taking a contiguous chunk of task ids;
3. each task rebuilds its episodes from ``(seed, task_id)``, so the result does not depend on the
   number of workers, and returns ``{task_id: accuracy}``; a retried Ray task overwrites its own
   ids, so every task counts exactly once;
4. the driver aggregates ``accuracy_mean``, ``accuracy_std`` (population std) and
   ``ci95 = 1.96 * std / sqrt(num_tasks)``, all in percent.
"""

from __future__ import annotations

import os
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import ray
import torch

from fewray.algorithms import build_classifier
from fewray.tasks.base import TrainingTask
from fewray.evaluation.fewshot_accuracy import FewShotAccuracy
from fewray.platform.base_classes import resolve_base_classes
from fewray.platform.checkpoint import load_checkpoint, load_model_state, resolve_checkpoint
from fewray.data.catalog import load_split, read_labels
from fewray.data.episodes import EpisodicSampler
from fewray.platform.features import extract_features
from fewray.platform.preflight import check_checkpoint_model, check_image_size
from fewray.platform.runtime import cluster_slots, default_workers, discard, init_ray, largest_node_cpus

if TYPE_CHECKING:
    from fewray.platform.config import ExperimentConfig
# MLflow, matplotlib and YAML are imported inside meta_test_checkpoint (driver only): the Ray task
# functions below live in this module, and every worker that runs them imports it (mlflow costs seconds).


@dataclass
class MetaTestResult:
    """Aggregated meta-test result (accuracies in percent).

    Attributes:
        accuracy_mean, accuracy_std, ci95 (float): mean, population std and 95% CI half-width.
        num_tasks, ways, shots, queries, seed (int): what was evaluated.
        split (str): catalog split; num_workers (int): evaluation tasks used.
        task_accuracies (dict[int, float]): per-task accuracy by task id (percent).
        seconds (float): wall time of the meta-test (features and tasks).
    """

    accuracy_mean: float
    accuracy_std: float
    ci95: float
    num_tasks: int
    ways: int
    shots: int
    queries: int
    seed: int
    split: str
    num_workers: int
    seconds: float = 0.0
    task_accuracies: dict[int, float] = field(default_factory=dict, repr=False)

    def summary(self) -> dict[str, Any]:
        """Everything but the per-task accuracies."""
        d = asdict(self)
        d.pop("task_accuracies")
        return d

    def line(self) -> str:
        """``5-way 1-shot: accuracy 98.61% ± 0.21 (95% CI, 2000 tasks)``."""
        return (
            f"{self.ways}-way {self.shots}-shot: accuracy {self.accuracy_mean:.2f}% ± {self.ci95:.2f} "
            f"(95% CI, {self.num_tasks} tasks)"
        )


@torch.no_grad()
def evaluate_tasks(
    model: torch.nn.Module,
    feats: torch.Tensor,
    labels: np.ndarray,
    ways: int,
    shots: int,
    queries: int,
    seed: int,
    task_ids: list[int] | range,
    split: str = "",
    block: int | None = None,
) -> dict[int, float]:
    """Accuracy (percent) of each task id, through the classifier's ``forward_tasks``.

    Frozen-backbone classifiers (``frozen_backbone_at_test = True``: metric and fine-tune methods) get
    precomputed features; the others (MAML, which adapts the backbone per task) get the images.
    Tasks go ``block`` at a time: one batched computation for heads that have one (ProtoNet, fine-tune
    heads), the per-task support/query protocol otherwise.

    Args:
        model: a classifier with ``before_meta_test`` and ``forward_tasks``.
        feats: ``(M, D)`` (or ``(M, C, h, w)``) features of the split, or its ``(M, C, H, W)`` uint8 images
            when the model does not freeze its backbone; labels: ``(M,)`` classes of the split.
        ways, shots, queries, seed: the episode shape and seed; task_ids: which episodes.
        block: tasks per batched computation; default 250 on features, 8 on images (bounds memory).

    Returns:
        ``{task_id: accuracy_percent}``.
    """
    sampler = EpisodicSampler(labels, ways, shots, queries, seed, split)
    model.before_meta_test()
    on_images = not getattr(model, "frozen_backbone_at_test", True)
    block = block or (8 if on_images else 250)
    device = next(model.parameters(), torch.empty(0)).device
    ids = [int(t) for t in task_ids]
    out: dict[int, float] = {}
    for s in range(0, len(ids), block):
        eps = [sampler.episode(t) for t in ids[s : s + block]]
        support_idx = torch.from_numpy(np.stack([e.support_idx for e in eps]))
        query_idx = torch.from_numpy(np.stack([e.query_idx for e in eps]))
        support_label = torch.from_numpy(np.stack([e.support_label for e in eps]))
        query_label = torch.from_numpy(np.stack([e.query_label for e in eps]))
        support, query = feats[support_idx], feats[query_idx]
        if on_images:  # uint8 (T, M, C, H, W) -> float in [0, 1]
            support, query = support.float().div_(255.0), query.float().div_(255.0)
        scores = model.forward_tasks(support.to(device), support_label.to(device), query.to(device), ways).cpu()
        accs = (scores.argmax(-1) == query_label).double().mean(1).mul(100.0)
        out.update(zip((e.episode_id for e in eps), accs.tolist()))
    return out


def _build(model_cfg: dict, state: dict) -> torch.nn.Module:
    """The model of ``model_cfg`` with ``state`` loaded, in eval mode, as its training task evaluates it
    (``eval_model``: the classifier itself, or prototypes on a self-supervised model's backbone)."""
    from fewray.tasks import task_for_class

    model = build_classifier(model_cfg, for_checkpoint=True)
    model.load_state_dict(state)
    return task_for_class(type(model)).eval_model(model).eval()  # as meta-validation evaluates it


def _extract(model_cfg: dict, state: dict, root: str, split: str, channels: int, batch_size: int, threads: int,
             image_ids: np.ndarray | None = None):
    """Features of the split (one backbone pass), or its images for a model that adapts its backbone.

    With ``image_ids`` only those images go through the backbone; the rows of the other images are zeros
    (no task reads them).
    """
    torch.set_num_threads(max(1, threads))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = _build(model_cfg, state).to(device)
    data = load_split(root, split, channels)
    if not getattr(model, "frozen_backbone_at_test", True):
        return np.ascontiguousarray(data.images), data.labels
    images = data.images if image_ids is None else data.images[image_ids]
    feats = extract_features(model, images, batch_size, device).numpy()
    if image_ids is not None:  # scatter back to split positions: tasks index the split
        full = np.zeros((len(data.labels), *feats.shape[1:]), dtype=feats.dtype)
        full[image_ids] = feats
        feats = full
    return feats, data.labels


def task_images(labels: np.ndarray, settings: list[tuple[int, int, int, int]], num_tasks: int,
                split: str = "", fraction: float = 0.5) -> np.ndarray | None:
    """The split's images that tasks ``0..num_tasks-1`` use, when they are few enough to embed alone.

    A meta-test of a few tasks (a quick check, a CI run) then embeds a few thousand images, not the whole
    split; a full meta-test (2000 5-way tasks) touches nearly every image and embeds the split as before.

    Args:
        labels: ``(M,)`` classes of the split; settings: ``(ways, shots, queries, seed)`` of every episode
            shape evaluated on one feature pass (e.g. one per shot count); num_tasks: episodes per setting.
        fraction: return None (embed everything) when the tasks may touch more than this share of the images.

    Returns:
        Sorted unique image indices, or None.
    """
    draws = sum(w * (k + q) for w, k, q, _ in settings) * num_tasks
    if draws > fraction * len(labels):  # upper bound of the images used: not worth a subset
        return None
    ids = []
    for ways, shots, queries, seed in settings:
        sampler = EpisodicSampler(labels, ways, shots, queries, seed, split)
        for t in range(num_tasks):
            ep = sampler.episode(t)
            ids += [ep.support_idx, ep.query_idx]
    return np.unique(np.concatenate(ids))


def _evaluate_chunk(model_cfg: dict, state: dict, feats: np.ndarray, labels: np.ndarray, episode: dict, task_ids):
    model = _build(model_cfg, state).to("cuda" if torch.cuda.is_available() else "cpu")
    with warnings.catch_warnings():  # zero-copy view of the object store's read-only array; never written
        warnings.simplefilter("ignore", UserWarning)
        feats_t = torch.from_numpy(feats)
    return evaluate_tasks(model, feats_t, labels, task_ids=task_ids, **episode)


def _warm_up() -> int:
    """A no-op Ray task: the worker that runs it imports this module (torch, fewray) and stays warm."""
    return os.getpid()


def chunks(n: int, k: int) -> list[range]:
    """Split ``range(n)`` into ``k`` contiguous, nearly equal, non-empty ranges."""
    k = max(1, min(k, n))
    bounds = np.linspace(0, n, k + 1).round().astype(int)
    return [range(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


@dataclass(frozen=True)
class ModelSpec:
    """A model to meta-test: its ``model:`` config section (a dict, as ``cfg.model.model_dump()``) and its
    ``state_dict``.

    Example::

        >>> from fewray.algorithms import build_classifier
        >>> cfg = {"type": "ProtoNet", "backbone": {"type": "Conv4", "in_channels": 1}, "head": {"type": "PrototypeHead"}}
        >>> ModelSpec(cfg, build_classifier(cfg).state_dict()).cfg["type"]
        'ProtoNet'
    """

    cfg: dict
    state: dict


@dataclass(frozen=True)
class SplitSpec:
    """One split of a catalog: ``root`` (a directory or URI the worker nodes can read), ``split`` (``test``,
    ``val``, ...) and the images' ``channels`` (1 or 3)."""

    root: str
    split: str
    channels: int


@dataclass(frozen=True)
class EpisodeSpec:
    """``num_tasks`` N-way K-shot Q-query tasks (``ways``, ``shots``, ``queries`` per class), each rebuilt from
    ``(seed, task id)`` so that any number of workers evaluates the same tasks.

    Example::

        >>> EpisodeSpec(ways=5, shots=1, queries=15, num_tasks=2000).setting()
        (5, 1, 15, 0)
    """

    ways: int
    shots: int
    queries: int
    num_tasks: int
    seed: int = 0

    def setting(self) -> tuple[int, int, int, int]:
        """``(ways, shots, queries, seed)``: the episode shape :func:`task_images` takes."""
        return (self.ways, self.shots, self.queries, self.seed)


@dataclass
class SplitInputs:
    """Object-store references of a model state and of one split's features (or images) and labels."""

    state_ref: Any
    feats_ref: Any
    labels_ref: Any


def split_inputs(model: ModelSpec, data: SplitSpec, batch_size: int = 512,
                 image_ids: np.ndarray | None = None) -> SplitInputs:
    """Start the one feature pass over ``data``'s split (a Ray task; on a GPU when the cluster has one).

    Returns at once with references; :func:`run_metatest` evaluates tasks on them, and several calls
    (shot counts, seeds) can share one pass. ``image_ids`` (:func:`task_images`) restricts the pass to
    the images those tasks use; ``batch_size``: images per backbone pass.
    """
    gpus, _ = cluster_slots()
    extract_opts = {"num_gpus": 1} if gpus else {"num_cpus": largest_node_cpus()}
    threads = 1 if gpus else largest_node_cpus()
    state_ref = ray.put({k: v.cpu() for k, v in model.state.items()})
    feats_ref, labels_ref = (
        ray.remote(_extract)
        .options(num_returns=2, max_retries=3, **extract_opts)
        .remote(model.cfg, state_ref, data.root, data.split, data.channels, batch_size, threads, image_ids)
    )
    return SplitInputs(state_ref, feats_ref, labels_ref)


def run_metatest(
    model: ModelSpec,
    data: SplitSpec,
    episodes: EpisodeSpec,
    *,
    num_workers: int | None = None,
    batch_size: int = 512,
    on_progress: Callable[[int], None] | None = None,
    prewarm: bool = True,
    inputs: "SplitInputs | None" = None,
) -> MetaTestResult:
    """Meta-test a classifier on the ``episodes`` of ``data``'s split with Ray tasks.

    Args:
        model: the classifier's config and weights; data: the catalog split; episodes: the tasks.
        num_workers: evaluation Ray tasks; default one per GPU, else one per CPU slot of the cluster.
        batch_size: images per backbone pass of the feature extraction.
        on_progress: called with the number of tasks finished each time a Ray task completes.
        prewarm: while the features are extracted, start ``num_workers`` zero-CPU no-op tasks so that
            the evaluation tasks find worker processes that have already imported torch and fewray
            (takes a cold worker's torch import off the critical path).
        inputs: the split's features already in the object store (:func:`split_inputs`), e.g. to evaluate
            several shot counts on one feature pass; default: extract them now.

    Raises:
        DataError: missing split, ways > classes, or shots + queries > images of a class
            (checked on the driver before any task starts).
    """
    root, split, ep = data.root, data.split, episodes
    t0 = time.perf_counter()
    labels = read_labels(root, split)
    EpisodicSampler(labels, ep.ways, ep.shots, ep.queries, ep.seed, split)  # fail fast, one line
    gpus, _ = cluster_slots()
    num_workers = num_workers or default_workers()
    for _ in range(num_workers if prewarm else 0):  # fire and forget: they finish during the feature pass
        ray.remote(_warm_up).options(num_cpus=0).remote()
    if inputs is None:
        inputs = split_inputs(model, data, batch_size, task_images(labels, [ep.setting()], ep.num_tasks, split))
    state_ref, feats_ref, labels_ref = inputs.state_ref, inputs.feats_ref, inputs.labels_ref
    episode = dict(ways=ep.ways, shots=ep.shots, queries=ep.queries, seed=ep.seed, split=split)
    eval_opts = {"num_gpus": 1} if gpus else {"num_cpus": 1}
    remote_eval = ray.remote(_evaluate_chunk).options(max_retries=3, **eval_opts)
    task_chunks = chunks(ep.num_tasks, num_workers)
    pending = {
        remote_eval.remote(model.cfg, state_ref, feats_ref, labels_ref, episode, ids): len(ids) for ids in task_chunks
    }
    evaluator = FewShotAccuracy()
    partials: list[dict[int, float]] = []
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                partials.append(evaluator.process(ray.get(ref)))
                n = pending.pop(ref)
                if on_progress:
                    on_progress(n)
    except KeyboardInterrupt:
        raise  # Ctrl-C: stop now; Ray's shutdown ends the running tasks
    except BaseException:
        discard(pending)  # a bad input fails every chunk alike: report it once, not as "unhandled" errors
        raise
    accs = evaluator.merge(partials)
    metrics = evaluator.compute(accs)
    return MetaTestResult(
        accuracy_mean=metrics["accuracy_mean"],
        accuracy_std=metrics["accuracy_std"],
        ci95=metrics["ci95"],
        num_tasks=metrics["num_tasks"],
        ways=ep.ways,
        shots=ep.shots,
        queries=ep.queries,
        seed=ep.seed,
        split=split,
        num_workers=len(task_chunks),
        seconds=time.perf_counter() - t0,
        task_accuracies=accs,
    )


def _load_for_test(cfg: "ExperimentConfig", checkpoint: str | Path, tracking_uri: str | None):
    """``(label, state, uri)``: a checkpoint path, a ``train_result.json`` or a ``models:/NAME/VERSION`` URI,
    loaded with ``weights_only=True`` and checked against ``cfg.model``; ``uri`` is the tracking URI when the
    registry had to be read (else None).

    Raises:
        CheckpointError: missing/unreadable checkpoint, unknown registered model or version, or weights that
            do not fit the model.
    """
    from fewray.platform.model_registry import is_model_uri, load_registered_checkpoint
    from fewray.platform.tracking import setup_tracking

    uri = None
    if is_model_uri(checkpoint):
        uri = setup_tracking(tracking_uri or cfg.tracking.tracking_uri, cfg.tracking.experiment)
        state, _ = load_registered_checkpoint(str(checkpoint), tracking_uri=uri)
        label = str(checkpoint)
    else:
        path = resolve_checkpoint(checkpoint)
        state = load_checkpoint(path)
        label = str(path)
    check_checkpoint_model(state, cfg.model.model_dump(), label)
    cfg = resolve_base_classes(cfg, state)
    load_model_state(build_classifier(cfg.model.model_dump(), for_checkpoint=True), state, label)
    return label, state, uri, cfg


def prepare_metatest(cfg: "ExperimentConfig", checkpoint: str | Path, shots: list[int],
                     tracking_uri: str | None = None):
    """Every check of a meta-test, on the driver, before Ray or MLflow runs are started.

    The catalog's image size against ``data.image_size``, the checkpoint (found, readable, of the config's
    model, weights that fit) and the episodes of each shot count against the test split.

    Returns:
        ``(label, state, cfg, labels)``: the checkpoint's name, its state, the config with the checkpoint's
        base-class count, and the test split's labels.

    Raises:
        DataError, CheckpointError, TrackingError: as :func:`meta_test_checkpoint`; ConfigError: a detector or a
            multi-label model (evaluated by ``pipelines/evaluate.py``).
    """
    from fewray.platform.errors import ConfigError
    from fewray.tasks import task_for

    task = task_for(cfg)
    if task.val_metrics != TrainingTask.val_metrics:  # not few-shot classification: no episodes to meta-test
        raise ConfigError(f"model.type {cfg.model.type} is not a few-shot classifier (its training task is "
                          f"{type(task).__name__}): evaluate it with pipelines/evaluate.py")
    check_image_size(cfg)
    label, state, _, cfg = _load_for_test(cfg, checkpoint, tracking_uri)
    t = cfg.test
    labels = read_labels(cfg.data.root, t.split)
    for k in shots:
        EpisodicSampler(labels, t.ways, k, t.queries, t.seed, t.split)
    return label, state, cfg, labels


def meta_test_checkpoint(
    cfg: "ExperimentConfig",
    checkpoint: str | Path,
    num_workers: int | None = None,
    tracking_uri: str | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Meta-test ``checkpoint`` on ``cfg.test`` with Ray and log it to MLflow (one shot count: ``test.shots``).

    Logs params (flattened config, checkpoint path), metrics (``accuracy_mean``, ``accuracy_std``,
    ``ci95``, ``seconds``), the config, the per-task CSV (``tasks/task_accuracies.csv``) and a task-accuracy
    histogram (``plots/task_accuracy_hist.png``).

    Args:
        cfg: the experiment config (``test:`` gives the episodes, ``model:`` the architecture).
        checkpoint: ``checkpoint.pt``, a checkpoint directory, a ``train_result.json`` or a registered model
            ``models:/NAME/VERSION`` (also ``models:/NAME/latest``, ``models:/NAME@ALIAS``).
        num_workers: evaluation Ray tasks (default: one per GPU, else per CPU).
        tracking_uri: MLflow tracking URI (default ``cfg.tracking.tracking_uri``, ``MLFLOW_TRACKING_URI``, ./mlflow.db).
        progress: a tqdm bar (tasks done of total, rate, ETA) on a terminal - pass ``sys.stderr.isatty()``;
            otherwise a plain progress line on stderr at each quarter.

    Returns:
        The result JSON: :meth:`MetaTestResult.summary` plus ``line``, ``checkpoint``,
        ``mlflow_run_id`` and ``tracking_uri``.

    Raises:
        CheckpointError: missing, unreadable or mismatched checkpoint, unknown registered model or version;
        DataError: bad data or episode shape; TrackingError: unreachable tracking server.
        All before any Ray task starts.
    """
    return meta_test_single(_meta_test_logged(cfg, checkpoint, [cfg.test.shots], num_workers, tracking_uri, progress))


def meta_test_shots(
    cfg: "ExperimentConfig",
    checkpoint: str | Path,
    shots: list[int],
    num_workers: int | None = None,
    tracking_uri: str | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Meta-test ``checkpoint`` at several shot counts (``cfg.test`` gives the rest) in one MLflow run.

    Each shot count is a :func:`run_metatest` on one shared feature pass (same ways, queries, tasks and seed). The
    run holds ``accuracy_mean_<K>shot``, ``accuracy_std_<K>shot``, ``ci95_<K>shot`` and ``accuracy_mean`` / ``ci95``
    with step = K (a curve over shots in the MLflow UI), ``tasks/task_accuracies_<K>shot.csv``,
    ``plots/task_accuracy_hist_<K>shot.png``, ``plots/accuracy_vs_shots.png`` (mean with 95% CI error bars)
    and ``result.json``.

    Args:
        cfg, checkpoint, num_workers, tracking_uri, progress: as :func:`meta_test_checkpoint`.
        shots: shot counts K, e.g. ``[1, 5, 10]`` (duplicates are dropped, order kept).

    Returns:
        ``{"results": [summary + "line" per K], "lines", "shots", "ways", "queries", "num_tasks", "seed", "split",
        "checkpoint", "mlflow_run_id", "tracking_uri"}``.

    Raises:
        ConfigError: empty ``shots``; CheckpointError, DataError (checked for every K before any task),
        TrackingError: as :func:`meta_test_checkpoint`.
    """
    from fewray.platform.errors import ConfigError

    shots = list(dict.fromkeys(int(k) for k in shots))
    if not shots or min(shots) < 1:
        raise ConfigError(f"--shots needs one or more positive integers, got {shots}")
    return _meta_test_logged(cfg, checkpoint, shots, num_workers, tracking_uri, progress)


class TaskProgress:
    """Meta-test progress: a tqdm bar on a terminal, else a plain line on stderr at each quarter of the tasks
    (``meta-test: 500/2000 tasks (25%), 12 s``), so that logs of ``ray job submit`` and CI show it too."""

    def __init__(self, total: int, tty: bool) -> None:
        from tqdm import tqdm

        self.total, self.done, self.tty, self.t0 = total, 0, tty, time.perf_counter()
        self.bar = tqdm(total=total, unit="task", desc="meta-test", disable=not tty)
        self.next_line = total / 4

    def update(self, n: int) -> None:
        """``n`` more tasks finished."""
        import sys

        self.done += n
        self.bar.update(n)
        if not self.tty and self.done >= self.next_line:
            print(f"meta-test: {self.done}/{self.total} tasks ({100 * self.done // self.total}%), "
                  f"{time.perf_counter() - self.t0:.0f} s", file=sys.stderr, flush=True)
            while self.next_line <= self.done:
                self.next_line += self.total / 4

    def set_postfix_str(self, text: str) -> None:
        """Shown after the bar (e.g. the shot count being evaluated)."""
        self.bar.set_postfix_str(text)

    def close(self) -> None:
        """Close the bar."""
        self.bar.close()


def _meta_test_logged(cfg: "ExperimentConfig", checkpoint: str | Path, shots: list[int], num_workers: int | None,
                      tracking_uri: str | None, progress: bool) -> dict[str, Any]:
    """The meta-test of :func:`meta_test_shots` (one MLflow run, one feature pass for every shot count); with one
    shot count the metric and artifact names carry no ``_<K>shot`` suffix and no accuracy-vs-shots plot is made."""
    import mlflow
    import yaml

    from fewray.platform.config import flatten
    from fewray.platform.plots import plot_accuracy_histogram, plot_accuracy_vs_shots
    from fewray.platform.tracking import log_dict_params, setup_tracking

    label, state, cfg, labels = prepare_metatest(cfg, checkpoint, shots, tracking_uri)
    t = cfg.test
    uri = setup_tracking(tracking_uri or cfg.tracking.tracking_uri, cfg.tracking.experiment)
    init_ray()
    cfg_dict = cfg.to_dict()
    several = len(shots) > 1
    results: list[dict[str, Any]] = []
    name = "-".join(str(k) for k in shots)
    with mlflow.start_run(run_name=f"{cfg.name}-metatest-{t.ways}w{name}s") as run:
        mlflow.set_tag("fewray.kind", "metatest-shots" if several else "metatest")
        params = {**flatten(cfg_dict), "checkpoint": label}
        log_dict_params({**params, "shots": ",".join(map(str, shots))} if several else params)
        mlflow.log_text(yaml.safe_dump(cfg_dict, sort_keys=False), "config/config.yaml")
        bar = TaskProgress(t.num_tasks * len(shots), progress)
        try:
            with tempfile.TemporaryDirectory() as d:
                model = ModelSpec(cfg.model.model_dump(), state["model"])
                data = SplitSpec(cfg.data.root, t.split, cfg.data.channels)
                episodes = [EpisodeSpec(t.ways, k, t.queries, t.num_tasks, t.seed) for k in shots]
                image_ids = task_images(labels, [e.setting() for e in episodes], t.num_tasks, t.split)
                inputs = split_inputs(model, data, t.batch_size, image_ids)
                for k, ep in zip(shots, episodes):  # one feature pass serves every shot count
                    bar.set_postfix_str(f"{k}-shot")
                    res = run_metatest(model, data, ep, num_workers=num_workers, batch_size=t.batch_size,
                                       on_progress=bar.update, inputs=inputs)
                    suffix = f"_{k}shot" if several else ""
                    mlflow.log_metrics({f"accuracy_mean{suffix}": res.accuracy_mean,
                                        f"accuracy_std{suffix}": res.accuracy_std, f"ci95{suffix}": res.ci95,
                                        f"seconds{suffix}": res.seconds})
                    if several:
                        mlflow.log_metrics({"accuracy_mean": res.accuracy_mean, "ci95": res.ci95}, step=k)
                    ids = sorted(res.task_accuracies)
                    csv = "task_id,accuracy\n" + "".join(f"{i},{res.task_accuracies[i]:.4f}\n" for i in ids)
                    mlflow.log_text(csv, f"tasks/task_accuracies{suffix}.csv")
                    png = plot_accuracy_histogram([res.task_accuracies[i] for i in ids], res.line(),
                                                  Path(d) / f"task_accuracy_hist{suffix}.png")
                    mlflow.log_artifact(str(png), "plots")
                    results.append({**res.summary(), "line": res.line()})
                if several:
                    mlflow.log_artifact(str(plot_accuracy_vs_shots(results, Path(d) / "accuracy_vs_shots.png")), "plots")
        finally:
            bar.close()
        out = {"results": results, "lines": [r["line"] for r in results], "shots": shots, "ways": t.ways,
               "queries": t.queries, "num_tasks": t.num_tasks, "seed": t.seed, "split": t.split,
               "checkpoint": label, "mlflow_run_id": run.info.run_id, "mlflow_experiment_id": run.info.experiment_id,
               "tracking_uri": uri}
        mlflow.log_dict(out if several else meta_test_single(out), "result.json")
    return out


def meta_test_single(out: dict[str, Any]) -> dict[str, Any]:
    """The one-shot-count result JSON (summary + ``line``, ``checkpoint``, run id, URI) of a single-K ``out``."""
    (result,) = out["results"]
    return {**result, **{k: out[k] for k in ("checkpoint", "mlflow_run_id", "mlflow_experiment_id", "tracking_uri")}}

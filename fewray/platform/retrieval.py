"""Image retrieval runs: gallery features extracted by Ray tasks, queries ranked in shards, an MLflow run.

The flow of ``pipelines/retrieve.py`` (mmpretrain's ``ImageToImageRetriever`` test loop, fanned out as
fewray's meta-test is):

1. every check on the driver, before Ray or MLflow start: the config (:class:`RetrievalConfig`), the checkpoint,
   the gallery (a catalog split, or a folder of images) and the queries (a split, or image files: each one
   opened), ``topk`` against the gallery size, a saved prototype file (its rows and feature dimension against the
   gallery and the encoder), the output paths;
2. gallery features: the gallery is cut into contiguous shards of whole batches (batch boundaries at multiples
   of ``batch_size`` from the first image, whatever the number of shards), one Ray task per shard builds an
   :class:`~fewray.algorithms.retrievers.ImageToImageRetriever` on its :class:`CatalogLoader` and returns the
   shard's ``(n, D)`` features; the driver concatenates them in gallery order. Each batch holds the same images
   for any number of workers, so the features are identical for 1 or N workers;
3. queries (a split's features, extracted the same way; image files on the driver) are ranked against the
   gallery in shards of query blocks by Ray tasks; each returns its queries' top-k and, when queries and
   gallery are labelled, its :class:`~fewray.evaluation.retrieval.RetrievalMetrics` partial (by query id);
4. the driver merges the partials and computes ``Recall@K`` and ``mAP@R``; the MLflow run holds the params, the
   metrics (named ``Recall_at_1``, ``mAP_at_R``: MLflow refuses ``@`` in metric names) and ``result.json``.

The documented protocol (``configs/retrieval/``): Caltech-101's test classes as gallery and queries, every test
image a query against all the other test images (leave-one-out: the query is left out of its own ranking and
of its class count R).

A retrieval config is its own YAML schema (:class:`RetrievalConfig`), not an experiment config: its ``model:`` is
a retriever (``type: ImageToImageRetriever`` with an ``image_encoder`` backbone), not a classifier.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydantic
import ray
import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import nn

from fewray.algorithms import BACKBONES, HEADS
from fewray.algorithms.retrievers import (
    PROTOTYPE_LOADERS,
    RETRIEVERS,
    ImageToImageRetriever,
    check_topk,
    load_prototype_file,
    rank_similarity,
)
from fewray.core.registry import format_validation_error, validate_kwargs
from fewray.evaluation.retrieval import DEFAULT_TOPK, RetrievalMetrics
from fewray.platform.config import (MAX_SEED, DataConfig, TrackingConfig, apply_overrides, check_backbone_channels,
                                    read_yaml_config)
from fewray.data.catalog import load_split, read_catalog_info, read_columns, read_labels
from fewray.data.sources._common import IMAGE_EXTENSIONS
from fewray.platform.errors import CheckpointError, ConfigError, DataError
from fewray.platform.features import channels_last, to_float
from fewray.platform.metatest import chunks
from fewray.platform.runtime import default_workers, get_all, init_ray, task_options

#: query rows ranked per similarity computation (block boundaries are multiples of it for any sharding)
RANK_BLOCK = 256


# --- the prototype loader of a catalog split ------------------------------------------------------------

@PROTOTYPE_LOADERS.register
class CatalogLoader:
    """Batches of one catalog split's images, uint8 ``(B, C, H, W)`` tensors, in catalog order (a retriever's
    ``prototype={"root": ROOT, "split": "test"}``).

    Args:
        root (str): catalog directory (``pipelines/prepare_data.py``) or URI.
        split (str): the split. Default ``test``.
        channels (int | None): 1 or 3; None: the catalog's (``catalog.json``), else 3. Default None.
        batch_size (int): images per batch. Default 128.
        start, stop (int | None): only the images ``start..stop-1`` (a shard); batches start at ``start``.

    Raises:
        DataError: missing catalog or split, undecodable images (when iterated; the split is read then).

    Example::

        >>> loader = CatalogLoader("data/caltech101", "test", batch_size=64)  # doctest: +SKIP
        >>> next(iter(loader)).shape  # doctest: +SKIP
        torch.Size([64, 3, 84, 84])
    """

    def __init__(self, root: str, split: str = "test", channels: int | None = None, batch_size: int = 128,
                 start: int = 0, stop: int | None = None) -> None:
        if batch_size < 1:
            raise ConfigError(f"prototype.batch_size must be >= 1, got {batch_size}")
        self.root, self.split, self.batch_size, self.start, self.stop = str(root), split, batch_size, start, stop
        self.channels = channels if channels is not None else int(read_catalog_info(self.root).get("channels", 3))

    def __iter__(self):
        images = load_split(self.root, self.split, self.channels).images
        stop = len(images) if self.stop is None else min(self.stop, len(images))
        for s in range(self.start, stop, self.batch_size):
            yield torch.from_numpy(np.ascontiguousarray(images[s:min(s + self.batch_size, stop)]))


# --- the config ------------------------------------------------------------------------------------------

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RetrieverConfig(_Strict):
    """The retriever, built through :data:`~fewray.algorithms.retrievers.RETRIEVERS`.

    Attributes:
        type (str): ``ImageToImageRetriever``.
        image_encoder (dict): a backbone config ``{type: Conv4, in_channels: 3}``.
        head (dict | None): a head config, only for training the encoder (not used by a retrieval run).
        similarity_fn (str): ``cosine_similarity``.
        topk (int): gallery items printed and saved per query (``-1``: all). Default 10.
    """

    type: str = "ImageToImageRetriever"
    image_encoder: dict[str, Any] = Field(default_factory=lambda: {"type": "Conv4", "in_channels": 3})
    head: dict[str, Any] | None = None
    similarity_fn: str = "cosine_similarity"
    topk: int = 10


class GalleryConfig(_Strict):
    """The gallery: ``split`` of ``data.root``, or ``folder`` (images directly in it, unlabelled, and in class
    sub-folders ``folder/<class>/``, labelled by the folder name)."""

    split: str = Field("test", min_length=1)
    folder: str | None = None


class QueryConfig(_Strict):
    """The queries: ``split`` of ``data.root`` (the gallery's split: leave-one-out), or None (image files given on
    the command line)."""

    split: str | None = None


class RetrievalConfig(_Strict):
    """A retrieval run (``configs/retrieval/*.yaml``): data, retriever, gallery, queries, metrics, tracking.

    Attributes:
        name (str): run name; seed (int): seeds a randomly initialised encoder.
        data (DataConfig): ``root`` (the gallery's catalog), ``image_size`` and ``channels`` the encoder sees.
        model (RetrieverConfig): the retriever.
        gallery (GalleryConfig), query (QueryConfig): what is ranked for what.
        recall_topk (list[int]): the K of each Recall@K. Default ``[1, 5, 10]``.
        batch_size (int): images per encoder pass. Default 128.
        tracking (TrackingConfig): MLflow experiment and tracking URI.

    Raises:
        ConfigError: an unknown key, a wrong type, an unknown retriever / encoder / head type or argument, a
            ``model.topk`` of 0 or below -1, ``data.channels`` that the encoder does not take (naming the key).
    """

    name: str = Field("retrieval", min_length=1, pattern=r"\S")
    seed: int = Field(0, ge=0, le=MAX_SEED)
    data: DataConfig = Field(default_factory=lambda: DataConfig(channels=3, image_size=84, root="data/caltech101"))
    model: RetrieverConfig = Field(default_factory=RetrieverConfig)
    gallery: GalleryConfig = Field(default_factory=GalleryConfig)
    query: QueryConfig = Field(default_factory=QueryConfig)
    recall_topk: list[int] = Field(default_factory=lambda: list(DEFAULT_TOPK), min_length=1)
    batch_size: int = Field(128, ge=1)
    tracking: TrackingConfig = Field(default_factory=lambda: TrackingConfig(experiment="retrieval"))

    @field_validator("recall_topk")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(k < 1 for k in v):
            raise ValueError("every K of Recall@K must be >= 1")
        return v

    @model_validator(mode="after")
    def _check_model(self) -> "RetrievalConfig":
        m = self.model
        cls = RETRIEVERS.get(m.type)
        enc = m.image_encoder
        if "type" not in enc:
            raise ConfigError("config key 'model.image_encoder.type' is missing")
        validate_kwargs(BACKBONES.get(enc["type"]), {k: v for k, v in enc.items() if k != "type"}, "model.image_encoder")
        if m.head is not None:
            if "type" not in m.head:
                raise ConfigError("config key 'model.head.type' is missing")
            validate_kwargs(HEADS.get(m.head["type"]), {k: v for k, v in m.head.items() if k != "type"}, "model.head")
        validate_kwargs(cls, {"similarity_fn": m.similarity_fn, "topk": m.topk}, "model",
                        skip={"image_encoder", "prototype", "head", "data_preprocessor"})
        try:
            check_topk(m.topk, 1 << 62)
        except ConfigError as exc:
            raise ConfigError(f"config key 'model.topk': {exc}") from None
        check_backbone_channels(enc, self.data.channels, "model.image_encoder", "the encoder")
        return self

    def to_dict(self) -> dict[str, Any]:
        """The config as plain Python types."""
        return self.model_dump(mode="json")


def retrieval_config_from_dict(raw: dict[str, Any]) -> RetrievalConfig:
    """Validate a raw retrieval config; relative ``data.root`` and ``gallery.folder`` become absolute.

    Raises:
        ConfigError: naming the first bad key.
    """
    try:
        cfg = RetrievalConfig.model_validate(raw)
    except pydantic.ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None
    if "://" not in cfg.data.root:
        cfg.data.root = str(Path(cfg.data.root).expanduser().resolve())
    if cfg.gallery.folder:
        cfg.gallery.folder = str(Path(cfg.gallery.folder).expanduser().resolve())
    return cfg


def _with_values(raw: dict[str, Any], overrides: list[str] | None, values: dict[str, Any] | None) -> dict[str, Any]:
    from fewray.platform.config import set_by_path

    raw = apply_overrides(raw, overrides)
    for key, value in (values or {}).items():
        raw = set_by_path(raw, key, value)
    return raw


def load_retrieval_config(path: str | Path, overrides: list[str] | None = None,
                          values: dict[str, Any] | None = None) -> RetrievalConfig:
    """Read, override and validate a retrieval YAML config.

    Args:
        path: the YAML file.
        overrides: ``["model.topk=5", ...]`` (``--set``; values parsed as YAML).
        values: ``{"data.root": "...", ...}`` set as they are after the overrides (command-line flags).

    Raises:
        ConfigError: missing or unreadable file, invalid YAML, unknown key, wrong type (naming the key).

    Example::

        >>> cfg = load_retrieval_config("configs/retrieval/conv4_caltech101.yaml", ["model.topk=5"])
        >>> cfg.model.image_encoder["type"], cfg.model.topk, cfg.query.split
        ('Conv4', 5, 'test')
    """
    return retrieval_config_from_dict(_with_values(read_yaml_config(path), overrides, values))


def retrieval_config_from_checkpoint(checkpoint: str | Path, overrides: list[str] | None = None,
                                     values: dict[str, Any] | None = None) -> RetrievalConfig:
    """The retrieval config of a fewray checkpoint used without ``--config``: its experiment config's
    ``data`` (the gallery catalog ``data.root``, image size, channels), ``model.backbone`` as the image
    encoder, ``test.split`` as the gallery split, its seed and MLflow experiment; named ``<name>_retrieval``.

    Raises:
        CheckpointError: a missing or unreadable checkpoint, or one without a stored config.
        ConfigError: an override that does not validate.
    """
    from fewray.platform.checkpoint import load_checkpoint
    from fewray.platform.config import config_from_dict

    state = load_checkpoint(checkpoint)
    if not isinstance(state.get("config"), dict):
        raise CheckpointError(f"checkpoint {checkpoint} stores no config: give --config with its encoder")
    c = config_from_dict(state["config"])
    raw = {"name": f"{c.name}_retrieval", "seed": c.seed,
           "data": {k: v for k, v in c.data.model_dump().items() if k != "augment"},
           "model": {"image_encoder": dict(c.model.backbone)}, "gallery": {"split": c.test.split},
           "tracking": {"experiment": c.tracking.experiment, "tracking_uri": c.tracking.tracking_uri}}
    return retrieval_config_from_dict(_with_values(raw, overrides, values))


# --- gallery and queries -----------------------------------------------------------------------------------

@dataclass
class ImageSet:
    """A gallery or a query set: a catalog split (read by the Ray tasks) or images held in memory.

    Attributes:
        kind (str): ``"catalog"`` or ``"images"``.
        names (list[str]): each item's name (its file name, or ``<split>#<i>`` for catalogs without ``filename``).
        classes (list[str | None]): each item's class name (None: unlabelled).
        root, split (str | None): the catalog split (``kind == "catalog"``).
        images (np.ndarray | None): ``(N, C, H, W)`` uint8 (``kind == "images"``).
        description (dict): what the result JSON says about it.
    """

    kind: str
    names: list[str]
    classes: list[str | None]
    root: str | None = None
    split: str | None = None
    images: np.ndarray | None = None
    description: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def labelled(self) -> bool:
        """Every item has a class."""
        return all(c is not None for c in self.classes)


def catalog_set(root: str, split: str) -> ImageSet:
    """A catalog split's item names and classes (the images stay in the catalog).

    Raises:
        DataError: missing catalog or split, a file that is not a catalog split.
    """
    import pyarrow.parquet as pq

    labels = read_labels(root, split)
    path = f"{root.rstrip('/')}/{split}.parquet"
    have = set(pq.read_schema(path).names)
    cols = read_columns(path, [c for c in ("class_name", "filename") if c in have])
    classes = cols.column("class_name").to_pylist() if "class_name" in have else [str(int(x)) for x in labels]
    names = cols.column("filename").to_pylist() if "filename" in have else [f"{split}#{i}" for i in range(len(labels))]
    return ImageSet("catalog", [str(n) for n in names], [str(c) for c in classes], root=root, split=split,
                    description={"kind": "catalog", "root": root, "split": split, "num_items": len(labels)})


def load_images(paths: list[str | Path], image_size: int, channels: int) -> np.ndarray:
    """``(N, C, S, S)`` uint8 of image files (:func:`fewray.data.images.load_image`: resized, converted).

    Raises:
        DataError: a missing or unreadable file, naming it.
    """
    from fewray.data.images import load_image

    return np.stack([load_image(str(p), image_size, channels) for p in paths])


def folder_set(folder: str, image_size: int, channels: int) -> ImageSet:
    """The images of ``folder``: those directly in it (unlabelled) and those in ``folder/<class>/`` (labelled by
    the sub-folder's name), sorted; all read now.

    Raises:
        DataError: a missing folder, a folder without images, an unreadable image (naming the file).
    """
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"gallery folder not found: {folder}")

    def images_in(d: Path) -> list[Path]:
        return sorted(f for f in d.iterdir()
                      if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in IMAGE_EXTENSIONS)

    items: list[tuple[Path, str | None]] = [(f, None) for f in images_in(root)]
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        items += [(f, d.name) for f in images_in(d)]
    if not items:
        raise DataError(f"gallery folder {folder} holds no images ({', '.join(IMAGE_EXTENSIONS)}), "
                        f"neither directly nor in class sub-folders")
    images = load_images([f for f, _ in items], image_size, channels)
    return ImageSet("images", [str(f.relative_to(root)) for f, _ in items], [c for _, c in items], images=images,
                    description={"kind": "folder", "folder": str(root), "num_items": len(items)})


def files_set(paths: list[str], image_size: int, channels: int) -> ImageSet:
    """Query image files (unlabelled), all read now.

    Raises:
        DataError: a missing or unreadable image, naming the file.
    """
    images = load_images(paths, image_size, channels)
    return ImageSet("images", [str(p) for p in paths], [None] * len(paths), images=images,
                    description={"kind": "images", "num_items": len(paths)})


# --- the encoder -------------------------------------------------------------------------------------------

def checkpoint_encoder(checkpoint: str | Path) -> tuple[nn.Module, Any]:
    """``(backbone, experiment config)`` of a fewray checkpoint (a ``checkpoint.pt``, its directory or a
    ``train_result.json``): the classifier's ``backbone`` with the trained weights, in eval mode.

    Raises:
        CheckpointError: missing or unreadable checkpoint, weights that do not fit, no stored config.
    """
    from fewray.platform.checkpoint import load_classifier

    model = load_classifier(None, checkpoint)
    backbone = getattr(model, "backbone", None)
    if not isinstance(backbone, nn.Module):
        raise CheckpointError(f"checkpoint {checkpoint}: its {type(model).__name__} has no backbone to retrieve with")
    return backbone.eval(), model.cfg


def build_retriever(cfg: RetrievalConfig, encoder: nn.Module | None = None) -> ImageToImageRetriever:
    """The retriever of ``cfg.model`` (without a prototype yet): the encoder given (a checkpoint's backbone) or
    built from ``model.image_encoder`` (random weights seeded by ``cfg.seed`` unless the backbone loads its
    own, e.g. ``EfficientNetLite0(pretrained=True)``), eval mode, channels-last, images scaled by
    :func:`~fewray.platform.features.to_float`.

    Raises:
        ConfigError: as :class:`RetrievalConfig`; CheckpointError: a backbone's weights file is missing.
    """
    m = cfg.model
    if encoder is None:
        torch.manual_seed(cfg.seed)
        encoder = BACKBONES.build(m.image_encoder, "model.image_encoder")
    retriever = RETRIEVERS.build({"type": m.type, "head": m.head, "similarity_fn": m.similarity_fn, "topk": m.topk},
                                 "model", image_encoder=channels_last(encoder), prototype=None,
                                 data_preprocessor=to_float)
    return retriever.eval()


def feature_dim(retriever: ImageToImageRetriever, channels: int, image_size: int) -> int:
    """The encoder's feature dimension ``D`` at ``image_size`` (one forward pass of a blank image)."""
    with torch.no_grad():
        x = torch.zeros(1, channels, image_size, image_size, dtype=torch.uint8)
        return int(retriever(x, mode="tensor").shape[1])


# --- Ray fan-out -------------------------------------------------------------------------------------------

def batch_shards(n: int, batch_size: int, k: int) -> list[range]:
    """``range(n)`` in at most ``k`` contiguous shards of whole batches: every shard starts at a multiple of
    ``batch_size``, so each batch holds the same images for any ``k``.

    Example::

        >>> batch_shards(10, 4, 2), batch_shards(10, 4, 1)
        ([range(0, 8), range(8, 10)], [range(0, 10)])
    """
    num_batches = max(1, math.ceil(n / batch_size))
    return [range(c.start * batch_size, min(c.stop * batch_size, n)) for c in chunks(num_batches, k)]


def _extract_shard(encoder: nn.Module, source: Any, start: int, stop: int, batch_size: int, threads: int) -> np.ndarray:
    """Features ``(stop - start, D)`` of one gallery shard (a Ray task): ``source`` is ``(root, split, channels)``
    of a catalog, or a ``(N, C, H, W)`` uint8 array."""
    torch.set_num_threads(max(1, threads))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if isinstance(source, np.ndarray):
        loader = [torch.from_numpy(np.ascontiguousarray(source[s:min(s + batch_size, stop)]))
                  for s in range(start, stop, batch_size)]
    else:
        root, split, channels = source
        loader = CatalogLoader(root, split, channels, batch_size, start, stop)
    retriever = ImageToImageRetriever(encoder.to(device), prototype=loader, data_preprocessor=to_float)
    retriever.prepare_prototype()
    return retriever.prototype_vecs.cpu().numpy()


def extract_features(encoder: nn.Module, images: ImageSet, batch_size: int, channels: int,
                     num_workers: int | None = None) -> torch.Tensor:
    """Features ``(N, D)`` of an image set, extracted by Ray tasks over shards of whole batches (see
    :func:`batch_shards`): the same features, bit for bit, for any number of workers.

    Args:
        encoder: the image encoder (shipped once through the object store).
        images: a catalog split (read by each task) or images in memory (shipped through the object store).
        batch_size: images per encoder pass; channels: image channels of the catalog.
        num_workers: Ray tasks; default :func:`default_workers`.

    Raises:
        DataError: raised in a task (a missing split, an undecodable image) and re-raised here.
    """
    num_workers = num_workers or default_workers()
    shards = batch_shards(len(images), batch_size, num_workers)
    opts, threads = task_options(len(shards))
    encoder_ref = ray.put(encoder.cpu().eval())
    source = ray.put(images.images) if images.kind == "images" else (images.root, images.split, channels)
    remote = ray.remote(_extract_shard).options(max_retries=3, **opts)
    refs = [remote.remote(encoder_ref, source, s.start, s.stop, batch_size, threads) for s in shards]
    return torch.from_numpy(np.concatenate(get_all(refs)))


def _rank_shard(gallery: np.ndarray, queries: np.ndarray, start: int, stop: int, similarity_fn: str, topk: int,
                leave_one_out: bool, query_labels: np.ndarray | None, gallery_labels: np.ndarray | None,
                recall_topk: tuple[int, ...], block: int) -> tuple[int, np.ndarray, np.ndarray, dict | None]:
    """Top-k of queries ``start..stop-1`` (a Ray task), in blocks of ``block`` queries, with their
    :class:`~fewray.evaluation.retrieval.RetrievalMetrics` partial when labels are given."""
    torch.set_num_threads(1)
    retriever = ImageToImageRetriever(nn.Identity(), prototype=torch.from_numpy(np.array(gallery)),
                                      similarity_fn=similarity_fn)
    retriever.prepare_prototype()
    evaluator = RetrievalMetrics(recall_topk) if query_labels is not None else None
    idx, scores, partial = [], [], {}
    for s in range(start, stop, block):
        e = min(s + block, stop)
        with torch.no_grad():
            sim = retriever.matching(torch.from_numpy(np.array(queries[s:e])))
        exclude = torch.arange(s, e) if leave_one_out else None
        sc, ix = rank_similarity(sim, topk, exclude)
        idx.append(ix.numpy())
        scores.append(sc.numpy())
        if evaluator is not None:
            partial.update(evaluator.process(
                {"query_ids": np.arange(s, e), "similarity": sim.numpy()},
                {"query_labels": query_labels[s:e], "gallery_labels": gallery_labels,
                 "exclude": np.arange(s, e) if leave_one_out else None}))
    return start, np.concatenate(idx), np.concatenate(scores), (partial if evaluator is not None else None)


@dataclass
class Ranking:
    """Ranked gallery per query: ``indices``/``scores`` ``(N, k)``, and the metrics when labelled."""

    indices: np.ndarray
    scores: np.ndarray
    metrics: dict[str, float] | None
    num_workers: int


def rank_queries(gallery: torch.Tensor, queries: torch.Tensor | None, similarity_fn: str, topk: int,
                 query_labels: np.ndarray | None = None, gallery_labels: np.ndarray | None = None,
                 recall_topk: tuple[int, ...] = DEFAULT_TOPK, num_workers: int | None = None,
                 block: int = RANK_BLOCK) -> Ranking:
    """Rank the gallery for every query with Ray tasks over shards of query blocks, and evaluate.

    Args:
        gallery: ``(P, D)`` features; queries: ``(N, D)``, or None for leave-one-out (the gallery's own items
            are the queries, each left out of its own ranking).
        similarity_fn: a :data:`~fewray.algorithms.retrievers.SIMILARITY_FNS` name; topk: items kept per query.
        query_labels, gallery_labels: class ids (one vocabulary) for Recall@K and mAP@R; None: no metrics.
        recall_topk: the K of each Recall@K; num_workers: Ray tasks (default :func:`default_workers`).
        block: queries per similarity computation; shards are whole blocks, so the similarities (and the
            ranking) of a query do not depend on ``num_workers``.

    Returns:
        A :class:`Ranking`; its metrics are identical for any ``num_workers``.
    """
    leave_one_out = queries is None
    gallery_np = gallery.numpy()
    gallery_ref = ray.put(gallery_np)
    query_ref = gallery_ref if leave_one_out else ray.put(queries.numpy())
    n = len(gallery_np) if leave_one_out else len(queries)
    shards = batch_shards(n, block, num_workers or default_workers())
    opts = {"num_gpus": 0, "num_cpus": 1}
    remote = ray.remote(_rank_shard).options(max_retries=3, **opts)
    labelled = query_labels is not None and gallery_labels is not None
    refs = [remote.remote(gallery_ref, query_ref, s.start, s.stop, similarity_fn, topk, leave_one_out,
                          query_labels if labelled else None, gallery_labels if labelled else None,
                          tuple(recall_topk), block) for s in shards]
    parts = sorted(get_all(refs), key=lambda p: p[0])
    metrics = None
    if labelled:
        evaluator = RetrievalMetrics(recall_topk)
        metrics = evaluator.compute(evaluator.merge([p[3] for p in parts]))
    return Ranking(np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts]), metrics, len(shards))


# --- a retrieval run ---------------------------------------------------------------------------------------

@dataclass
class RetrievalPlan:
    """Everything a run needs, checked on the driver (:func:`prepare_retrieval`)."""

    cfg: RetrievalConfig
    retriever: ImageToImageRetriever
    gallery: ImageSet
    queries: ImageSet
    leave_one_out: bool
    topk: int
    feature_dim: int
    checkpoint: str | None
    prototype: torch.Tensor | None = None
    prototype_file: str | None = None


def _metric_key(name: str) -> str:
    """An MLflow metric name (MLflow refuses ``@``): ``Recall@1`` -> ``Recall_at_1``, ``mAP@R`` -> ``mAP_at_R``."""
    return name.replace("@", "_at_")


def prepare_retrieval(cfg: RetrievalConfig, checkpoint: str | None = None, query_images: list[str] | None = None,
                      topk: int | None = None, prototype_file: str | None = None) -> RetrievalPlan:
    """Every check of a retrieval run, on the driver, before Ray or MLflow start.

    Args:
        cfg: the run's config (``gallery``, ``query``, ``data``, ``model``).
        checkpoint: a fewray checkpoint whose classifier's backbone is the encoder (its type must be
            ``model.image_encoder.type``); None: the encoder of ``model.image_encoder`` (pretrained or random).
        query_images: query image files (then ``query.split`` is not used).
        topk: items per query (default ``model.topk``).
        prototype_file: gallery features saved earlier (``--dump-prototype``), used instead of extracting them.

    Raises:
        ConfigError: no queries, ``topk`` larger than the gallery, a checkpoint of another encoder type.
        DataError: a missing catalog, split or folder, a catalog of another image size, an unreadable image
            (naming the file), a prototype file of another number of items or feature dimension (naming both).
        CheckpointError: a missing, unreadable or mismatched checkpoint.
    """
    from fewray.platform.preflight import check_image_size

    encoder = None
    if checkpoint is not None:
        encoder, ckpt_cfg = checkpoint_encoder(checkpoint)
        was, now = ckpt_cfg.model.backbone.get("type"), cfg.model.image_encoder.get("type")
        if was != now:
            raise CheckpointError(f"checkpoint {checkpoint} has a {was} backbone; the config's model.image_encoder "
                                  f"is {now} (use a config of the same encoder)")
        if ckpt_cfg.data.channels != cfg.data.channels:
            raise CheckpointError(f"checkpoint {checkpoint} was trained on {ckpt_cfg.data.channels}-channel images; "
                                  f"data.channels is {cfg.data.channels}")
    if cfg.gallery.folder:
        gallery = folder_set(cfg.gallery.folder, cfg.data.image_size, cfg.data.channels)
    else:
        check_image_size(cfg)
        gallery = catalog_set(cfg.data.root, cfg.gallery.split)
    if query_images:
        queries = files_set(query_images, cfg.data.image_size, cfg.data.channels)
        leave_one_out = False
    elif cfg.query.split:
        if cfg.gallery.folder:
            check_image_size(cfg)
        queries = catalog_set(cfg.data.root, cfg.query.split)
        leave_one_out = gallery.kind == "catalog" and queries.split == gallery.split
    else:
        raise ConfigError("no queries: give query image files (--query IMAGE ...) or a split (--query-split SPLIT)")
    k = cfg.model.topk if topk is None else topk
    check_topk(k, len(gallery), leave_one_out)
    retriever = build_retriever(cfg, encoder)
    dim = feature_dim(retriever, cfg.data.channels, cfg.data.image_size)
    prototype = None
    if prototype_file is not None:
        prototype = load_prototype_file(prototype_file)
        if prototype.shape[0] != len(gallery):
            raise DataError(f"prototype file {prototype_file} holds features of {prototype.shape[0]} items but the "
                            f"gallery has {len(gallery)} images")
        if prototype.shape[1] != dim:
            raise DataError(f"prototype file {prototype_file} holds {prototype.shape[1]}-d features but the image "
                            f"encoder gives {dim}-d features (a prototype of another encoder or image size?)")
    return RetrievalPlan(cfg, retriever, gallery, queries, leave_one_out, k, dim,
                         str(checkpoint) if checkpoint is not None else None, prototype,
                         str(prototype_file) if prototype_file is not None else None)


def _class_ids(gallery: ImageSet, queries: ImageSet) -> tuple[np.ndarray, np.ndarray] | None:
    """Gallery and query class ids in one vocabulary (class names: a split's labels restart at 0), or None."""
    if not (gallery.labelled and queries.labelled):
        return None
    vocab = {c: i for i, c in enumerate(sorted({*gallery.classes, *queries.classes}))}
    return np.array([vocab[c] for c in queries.classes]), np.array([vocab[c] for c in gallery.classes])


def run_retrieval(plan: RetrievalPlan, num_workers: int | None = None, tracking_uri: str | None = None,
                  dump_prototype: str | None = None) -> dict[str, Any]:
    """Run a prepared retrieval (:func:`prepare_retrieval`) with Ray and log it to MLflow.

    Returns:
        The result JSON: ``name``, ``protocol``, ``gallery``, ``queries``, ``encoder``, ``similarity_fn``, ``topk``,
        ``metrics`` (``Recall@K``, ``mAP@R`` in percent, ``num_queries``; None without labels), ``results`` (per
        query: ``query``, ``class``, ``topk`` = ``[{rank, index, name, class, score}]``), ``num_workers``,
        ``seconds``, ``mlflow_run_id``, ``mlflow_experiment_id``, ``tracking_uri``.

    Raises:
        TrackingError: an unreachable tracking server; DataError: raised in a Ray task.
    """
    import mlflow

    from fewray.platform.config import flatten
    from fewray.platform.tracking import log_dict_params, setup_tracking

    cfg = plan.cfg
    uri = setup_tracking(tracking_uri or cfg.tracking.tracking_uri, cfg.tracking.experiment)
    init_ray()
    t0 = time.perf_counter()
    g, q = plan.gallery, plan.queries
    ids = _class_ids(g, q)
    protocol = (f"leave-one-out: every image of split '{g.split}' is a query against all the other images of it"
                if plan.leave_one_out else f"{len(q)} queries against a gallery of {len(g)} images")
    with mlflow.start_run(run_name=f"{cfg.name}-retrieval") as run:
        mlflow.set_tag("fewray.kind", "retrieval")
        log_dict_params({**flatten(cfg.to_dict()), "checkpoint": plan.checkpoint, "topk": plan.topk,
                         "gallery_size": len(g), "num_queries": len(q), "leave_one_out": plan.leave_one_out,
                         "prototype_file": plan.prototype_file})
        mlflow.log_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), "config/config.yaml")
        encoder = plan.retriever.image_encoder
        if plan.prototype is not None:
            gallery_feats = plan.prototype.float()
        else:
            gallery_feats = extract_features(encoder, g, cfg.batch_size, cfg.data.channels, num_workers)
        if dump_prototype:
            plan.retriever.prototype = gallery_feats
            plan.retriever.dump_prototype(dump_prototype)
        if plan.leave_one_out:
            query_feats = None
        elif q.kind == "images":
            with torch.no_grad():
                query_feats = torch.cat([plan.retriever(torch.from_numpy(q.images[s:s + cfg.batch_size]), mode="tensor")
                                         for s in range(0, len(q), cfg.batch_size)]).float()
        else:
            query_feats = extract_features(encoder, q, cfg.batch_size, cfg.data.channels, num_workers)
        ranking = rank_queries(gallery_feats, query_feats, cfg.model.similarity_fn, plan.topk,
                               *(ids if ids is not None else (None, None)), tuple(cfg.recall_topk), num_workers)
        seconds = time.perf_counter() - t0
        results = []
        for i in range(len(q)):
            top = [{"rank": r + 1, "index": int(j), "name": g.names[j], "class": g.classes[j],
                    "score": float(s)} for r, (j, s) in enumerate(zip(ranking.indices[i], ranking.scores[i]))]
            results.append({"query": q.names[i], "class": q.classes[i], "topk": top})
        if ranking.metrics:
            mlflow.log_metrics({_metric_key(k): float(v) for k, v in ranking.metrics.items()})
        mlflow.log_metrics({"seconds": seconds, "feature_dim": plan.feature_dim})
        out = {"name": cfg.name, "protocol": protocol, "gallery": g.description, "queries": q.description,
               "encoder": {"type": cfg.model.image_encoder["type"], "checkpoint": plan.checkpoint,
                           "feature_dim": plan.feature_dim, "image_size": cfg.data.image_size},
               "similarity_fn": cfg.model.similarity_fn, "topk": plan.topk, "metrics": ranking.metrics,
               "results": results, "num_workers": ranking.num_workers, "seconds": seconds,
               "mlflow_run_id": run.info.run_id, "mlflow_experiment_id": run.info.experiment_id, "tracking_uri": uri}
        mlflow.log_dict(out, "result.json")
    return out


def result_lines(result: dict[str, Any], show: int | None = None) -> list[str]:
    """What the pipeline prints: one line per query (its top-k with names and classes; the first ``show``
    queries, all when None) and the metrics line.

    Example::

        >>> r = {"results": [{"query": "q.png", "class": None, "topk": [
        ...     {"rank": 1, "index": 3, "name": "cat/1.jpg", "class": "cat", "score": 0.9}]}], "metrics": None}
        >>> result_lines(r)
        ['q.png: 1. cat/1.jpg [cat] 0.900']
    """
    lines = []
    rows = result["results"] if show is None else result["results"][:show]
    for item in rows:
        cls = f" [{item['class']}]" if item.get("class") is not None else ""
        top = "; ".join(f"{t['rank']}. {t['name']}" + (f" [{t['class']}]" if t.get("class") is not None else "")
                        + f" {t['score']:.3f}" for t in item["topk"])
        lines.append(f"{item['query']}{cls}: {top}")
    if show is not None and len(result["results"]) > show:
        lines.append(f"... and {len(result['results']) - show} more queries (all in the result JSON)")
    m = result.get("metrics")
    if m:
        parts = ", ".join(f"{k} {v:.2f}%" for k, v in m.items() if k != "num_queries")
        lines.append(f"{parts} ({m['num_queries']} queries; {result.get('protocol', '')})")
    return lines


def print_result(result: dict[str, Any], show: int | None = None) -> None:
    """Print :func:`result_lines` on stdout."""
    for line in result_lines(result, show):
        print(line, file=sys.stdout, flush=True)

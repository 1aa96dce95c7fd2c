"""Checks run on the driver before any work starts: data that fits the config, resources the cluster has,
and a training output directory that belongs to the same model and data.

Each failure is one line naming the key, the request or the path (a :class:`~fewray.platform.errors.FewrayError`),
so a run never waits forever for CPUs that do not exist, never trains on images of another size than the
model's, and never reuses another model's checkpoints.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import TYPE_CHECKING, Any

from fewray.platform.errors import CheckpointError, DataError, FewrayError

if TYPE_CHECKING:
    from fewray.platform.config import ExperimentConfig


class ResourceError(FewrayError):
    """The cluster cannot supply the CPUs or GPUs a run asks for."""


def check_image_size(cfg: "ExperimentConfig") -> None:
    """``data.image_size`` must be the catalog's image size (``catalog.json``'s ``image_size``).

    One rule for every entry point: the model sees images of ``data.image_size`` pixels. Training and
    meta-test read the catalog's images as stored, and the APIs resize a user's images to
    ``data.image_size``; a config that disagrees with its catalog would make the two see different
    images (and a model built for one size get another), so it is refused. Catalogs without a recorded
    size (remote URIs, hand-made ones) are not checked.

    Raises:
        DataError: ``data.image_size=84 but the catalog ROOT holds 28x28 images ...``.
    """
    from fewray.data.catalog import read_catalog_info

    root = cfg.data.root
    if "://" in root:
        return
    try:
        size = read_catalog_info(root).get("image_size")
    except (OSError, ValueError, AttributeError):
        return  # a missing or unreadable catalog.json is reported where the splits are read
    if isinstance(size, int) and size != cfg.data.image_size:
        raise DataError(f"data.image_size={cfg.data.image_size} but the catalog {root} holds {size}x{size} images: "
                        f"set data.image_size={size}, or rebuild the catalog with prepare_data.py --image-size "
                        f"{cfg.data.image_size}")


def _describe(cpus: float, gpus: float) -> str:
    return f"{cpus:g} CPUs" + (f" and {gpus:g} GPUs" if gpus else "")


def cluster_shortfall(num_workers: int, cpus_per_worker: float, gpus_per_worker: float) -> str | None:
    """Why the Ray cluster connected now cannot place ``num_workers`` workers of the given size, or None.

    Each worker must fit on one node; together they must fit in the cluster's totals.
    """
    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    need = {k: v for k, v in (("CPU", cpus_per_worker), ("GPU", gpus_per_worker)) if v > 0}
    fit = sum(min((int(r.get(k, 0) // v) for k, v in need.items()), default=num_workers) for r in nodes)
    if fit >= num_workers:  # workers that fit, node by node
        return None
    total_cpu = sum(r.get("CPU", 0) for r in nodes)
    total_gpu = sum(r.get("GPU", 0) for r in nodes)
    have = f"the cluster has {_describe(total_cpu, total_gpu)} on {len(nodes)} node{'s' if len(nodes) != 1 else ''}"
    largest = max((r.get("CPU", 0) for r in nodes), default=0)
    if cpus_per_worker > largest:
        have += f" (at most {largest:g} CPUs on one node)"
    return have


def check_resources(num_workers: int, cpus_per_worker: float, use_gpu: bool, what: str, keys: str,
                    wait_s: float = 0.0, poll_s: float = 2.0) -> None:
    """Fail before any work when Ray cannot place the workers ``what`` asks for (call after ``init_ray``).

    Args:
        num_workers, cpus_per_worker, use_gpu: the request (one GPU per worker with ``use_gpu``).
        what: the work, for the message (``training``, ``each sweep trial``); keys: the config keys to change.
        wait_s: seconds to wait for nodes to join (an autoscaling cluster) before failing; 0 fails at once.
        poll_s: seconds between looks at the cluster while waiting.

    Raises:
        ResourceError: ``training asks for 2 workers x 64 CPUs = 128 CPUs but the cluster has 2 CPUs on 1 node
        (change train.num_workers / train.cpus_per_worker)``.
    """
    gpus = 1 if use_gpu else 0
    deadline = time.monotonic() + wait_s
    while True:
        problem = cluster_shortfall(num_workers, cpus_per_worker, gpus)
        if problem is None:
            return
        if time.monotonic() >= deadline:
            break
        time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))
    ask = f"{num_workers} worker{'s' if num_workers != 1 else ''} x {_describe(cpus_per_worker, gpus)}"
    waited = f" after waiting {wait_s:g} s" if wait_s else ""
    raise ResourceError(f"{what} asks for {ask} = {_describe(num_workers * cpus_per_worker, num_workers * gpus)} "
                        f"but {problem}{waited} (change {keys})")


# ---- does a training output directory belong to this config? ------------------------------------------

#: config keys that make a checkpoint belong to a model and its data (the rest may change on resume,
#: e.g. a longer ``train.num_steps`` or another ``tracking.experiment``)
#: detection adds the classes trained and the K-shot set (two fine-tunings of one base model are other data)
IDENTITY_KEYS = ("model", "data.channels", "data.image_size", "data.classes", "data.few_shot", "data.min_size")


def identity(cfg_dict: dict[str, Any], catalog: dict[str, Any] | None = None, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The flat ``{key: value}`` that says which model and data a checkpoint belongs to.

    The model section, the image channels and size, and, when known, the catalog's dataset and split
    counts (``catalog.json``): the data is recognised by what it holds, not by its path, so an output
    directory copied to another machine (another ``data.root``) still resumes. ``skip``: model keys that
    hold file paths (e.g. MetaBaseline's ``pretrained_backbone``), which differ between machines.
    """
    from fewray.platform.config import flatten

    skipped = {f"model.{key}" for key in skip}
    out = {k: v for k, v in flatten(cfg_dict).items()
           if k not in skipped and any(k == key or k.startswith(key + ".") for key in IDENTITY_KEYS)}
    if catalog:
        out["catalog.dataset"] = catalog.get("dataset")
        for split, counts in sorted((catalog.get("splits") or {}).items()):
            if isinstance(counts, dict):
                out[f"catalog.splits.{split}"] = f"{counts.get('classes')} classes, {counts.get('images')} images"
    return out


def fingerprint(ident: dict[str, Any]) -> str:
    """A short stable hash of :func:`identity` (stored in checkpoints and as an MLflow tag)."""
    text = json.dumps(ident, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def check_same_identity(stored: dict[str, Any], current: dict[str, Any], where: str, hint: str) -> None:
    """Raise when two identities differ on a key both define, naming the first differing keys.

    Keys only one side has (a catalog not recorded by an older checkpoint, a model argument written out in
    one config and left to its default in the other) are not compared.

    Raises:
        CheckpointError: ``<where> holds a checkpoint of another model or data: model.type is 'ProtoNet' there,
        'MatchingNet' here; ... (<hint>)``.
    """
    shared = sorted(set(stored) & set(current), key=lambda k: (k.count("."), k))  # model.type before its parts
    diffs = [k for k in shared if stored[k] != current[k]]
    if not diffs:
        return
    shown = "; ".join(f"{k} is {stored.get(k)!r} there, {current.get(k)!r} here" for k in diffs[:3])
    more = f" (and {len(diffs) - 3} more keys)" if len(diffs) > 3 else ""
    raise CheckpointError(f"{where} holds a checkpoint of another model or data: {shown}{more} ({hint})")


#: model keys a checkpoint must share with the config it is tested or loaded under (head arguments such as a
#: temperature may change at test time)
MODEL_KEYS = ("type", "backbone.type", "head.type")


def check_checkpoint_model(state: dict[str, Any], model_cfg: dict[str, Any], label: str) -> None:
    """A checkpoint must have been trained as the model the config describes (same classifier, backbone, head).

    Checkpoints without a stored config (bare state dicts) are only checked by loading their weights.

    Raises:
        CheckpointError: ``checkpoint PATH was trained as model.type 'ProtoNet'; the config says 'MatchingNet'``.
    """
    stored = state.get("config") if isinstance(state, dict) else None
    if not isinstance(stored, dict) or not isinstance(stored.get("model"), dict):
        return
    from fewray.platform.config import flatten

    stored_model, model = flatten(stored["model"]), flatten(model_cfg)
    for key in MODEL_KEYS:
        was, now = stored_model.get(key), model.get(key)
        if was is not None and now is not None and was != now:
            raise CheckpointError(f"checkpoint {label} was trained as model.{key} {was!r}; the config says {now!r} "
                                  f"(use the config it was trained with)")

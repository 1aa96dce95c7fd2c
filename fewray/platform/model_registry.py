"""The MLflow Model Registry for fewray models: register a checkpoint, load ``models:/NAME/VERSION`` back.

What a registered version holds (the artifact directory ``model/`` of its training run):

- ``state_dict.pth``: written by ``mlflow.pytorch.log_state_dict`` - a plain dict of tensors, numbers and
  strings: ``{"model": state_dict, "config": experiment config dict, "step": int, "metrics": {...}}``
  (the checkpoint without optimizer and scheduler state);
- ``config.yaml``: the experiment config; ``fewray.json``: format, step, metrics and the source checkpoint.

Why not ``mlflow.pytorch.log_model``: its default format pickles the whole ``nn.Module`` and loading it
unpickles arbitrary code (MLflow 3 refuses unless ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION`` is set), and its
``pt2`` format exports one traced ``forward`` while a few-shot classifier has a support/query protocol.
A state dict loads with ``torch.load(weights_only=True)`` (like every fewray checkpoint) and rebuilds the
classifier from the config, so nothing in a downloaded file is ever unpickled.

Example (registering needs a finished meta-training run in an MLflow store, so those lines are skipped when
the examples are tested)::

    >>> import json, tempfile
    >>> from pathlib import Path
    >>> from fewray.platform.model_registry import (is_model_uri, load_registered_checkpoint, parse_model_uri,
    ...                                             register_checkpoint)
    >>> result = json.loads(Path("runs/protonet/train_result.json").read_text())  # doctest: +SKIP
    >>> info = register_checkpoint(result["best_checkpoint"], "protonet-omniglot",
    ...                            run_id=result["mlflow_run_id"])  # doctest: +SKIP
    >>> info["uri"]  # doctest: +SKIP
    'models:/protonet-omniglot/1'
    >>> state, path = load_registered_checkpoint(info["uri"], tempfile.mkdtemp())  # doctest: +SKIP
    >>> sorted(state)  # doctest: +SKIP
    ['config', 'metrics', 'model', 'step']

The ``models:/`` URIs it accepts (anything else is a checkpoint path)::

    >>> parse_model_uri("models:/protonet-omniglot/1"), parse_model_uri("models:/protonet-omniglot@champion")
    (('protonet-omniglot', '1', None), ('protonet-omniglot', None, 'champion'))
    >>> is_model_uri("models:/protonet-omniglot/latest"), is_model_uri("runs/protonet/train_result.json")
    (True, False)
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import yaml
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from fewray.platform.checkpoint import load_checkpoint
from fewray.platform.errors import CheckpointError

MODEL_ARTIFACT_PATH = "model"
STATE_FILE = "state_dict.pth"
_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>[^/]+)|@(?P<alias>[^/]+))$")


def is_model_uri(value: str | Path) -> bool:
    """True for ``models:/...`` strings (registered models), False for paths."""
    return str(value).startswith("models:/")


def parse_model_uri(uri: str) -> tuple[str, str | None, str | None]:
    """``(name, version, alias)`` of ``models:/NAME/VERSION``, ``models:/NAME/latest`` or ``models:/NAME@ALIAS``.

    Raises:
        CheckpointError: any other form (e.g. no version).
    """
    m = _URI.match(str(uri))
    if not m:
        raise CheckpointError(f"bad model URI '{uri}': expected models:/NAME/VERSION, models:/NAME/latest "
                              "or models:/NAME@ALIAS")
    return m.group("name"), m.group("version"), m.group("alias")


def check_model_name(name: str) -> None:
    """Fail fast on a name the registry or a ``models:/`` URI cannot hold.

    Raises:
        ConfigError: empty, or containing ``/``, ``@`` or whitespace.
    """
    from fewray.platform.errors import ConfigError

    if not name or any(c in name for c in "/@") or name != name.strip() or any(c.isspace() for c in name):
        raise ConfigError(f"bad registered model name '{name}' (non-empty, no '/', '@' or spaces)")


def register_checkpoint(checkpoint: str | Path, name: str, run_id: str, tracking_uri: str | None = None) -> dict[str, Any]:
    """Log a checkpoint's model to ``run_id`` with ``mlflow.pytorch.log_state_dict`` and register it as ``name``.

    Args:
        checkpoint: ``checkpoint.pt``, a checkpoint directory or a ``train_result.json`` (its best checkpoint).
        name: registered model name (created on first use; each call adds a version).
        run_id: the run the model artifacts go to (the meta-training run).
        tracking_uri: MLflow tracking URI (default: the current one).

    Returns:
        ``{"name", "version", "uri": "models:/NAME/VERSION", "run_id", "source"}``.

    Raises:
        CheckpointError: unreadable checkpoint; ConfigError: empty name.
    """
    check_model_name(name)
    path = Path(checkpoint)
    if path.suffix == ".json" and path.is_file():
        try:
            path = Path(json.loads(path.read_text())["best_checkpoint"])
        except (ValueError, KeyError):
            raise CheckpointError(f"{checkpoint} is not a train_result.json (no 'best_checkpoint')") from None
    state = load_checkpoint(path)
    keep = {"model": state["model"], "config": state.get("config", {}), "step": int(state.get("step", 0)),
            "metrics": dict(state.get("metrics", {}))}
    client = MlflowClient(tracking_uri)
    uri = tracking_uri or mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    from mlflow import pytorch as mlflow_pytorch

    with mlflow.start_run(run_id=run_id):
        mlflow_pytorch.log_state_dict(keep, MODEL_ARTIFACT_PATH)
        mlflow.log_text(yaml.safe_dump(keep["config"], sort_keys=False), f"{MODEL_ARTIFACT_PATH}/config.yaml")
        mlflow.log_dict({"format": "fewray-state-dict-v1", "file": STATE_FILE, "step": keep["step"],
                         "metrics": keep["metrics"], "source_checkpoint": str(path)},
                        f"{MODEL_ARTIFACT_PATH}/fewray.json")
        source = mlflow.get_artifact_uri(MODEL_ARTIFACT_PATH)
    try:
        client.create_registered_model(name, description="fewray few-shot classifier (state dict + config)")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    mv = client.create_model_version(name, source=source, run_id=run_id,
                                     tags={"fewray.step": str(keep["step"]),
                                           "fewray.val_accuracy_mean": str(keep["metrics"].get("accuracy_mean", ""))})
    return {"name": name, "version": str(mv.version), "uri": f"models:/{name}/{mv.version}", "run_id": run_id,
            "source": source}


def resolve_model_version(uri: str, tracking_uri: str | None = None) -> Any:
    """The ``ModelVersion`` behind a ``models:/`` URI.

    Raises:
        CheckpointError: unknown model name, version or alias, naming it.
    """
    name, version, alias = parse_model_uri(uri)
    client = MlflowClient(tracking_uri)
    try:
        client.get_registered_model(name)
    except MlflowException:
        raise CheckpointError(f"no registered model named '{name}' in {tracking_uri or mlflow.get_tracking_uri()}") from None
    try:
        if alias:
            return client.get_model_version_by_alias(name, alias)
        if version == "latest":
            versions = client.search_model_versions(f"name = '{name}'")
            if not versions:
                raise CheckpointError(f"registered model '{name}' has no versions")
            return max(versions, key=lambda v: int(v.version))
        if not version.isdigit():
            raise CheckpointError(f"bad model version '{version}' in '{uri}' (a number, 'latest' or @alias)")
        return client.get_model_version(name, version)
    except MlflowException:
        what = f"alias '{alias}'" if alias else f"version {version}"
        raise CheckpointError(f"registered model '{name}' has no {what}") from None


def load_registered_checkpoint(uri: str, dst: str | Path | None = None,
                               tracking_uri: str | None = None) -> tuple[dict[str, Any], Path]:
    """Download a registered version and load it like a checkpoint (``torch.load(weights_only=True)``).

    Args:
        uri: ``models:/NAME/VERSION`` (or ``/latest``, ``@ALIAS``); dst: download directory (default: a new
            temporary directory); tracking_uri: MLflow tracking URI (default: the current one).

    Returns:
        ``(state, path)``: ``state`` has ``model`` (state dict), ``config``, ``step``, ``metrics``; ``path`` is the
        downloaded ``state_dict.pth``.

    Raises:
        CheckpointError: unknown name/version, or a version whose artifacts are not a fewray state dict.
    """
    mv = resolve_model_version(uri, tracking_uri)
    dst = Path(dst or tempfile.mkdtemp(prefix="fewray-model-"))
    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=mv.source, dst_path=str(dst),
                                                    tracking_uri=tracking_uri)
    except MlflowException as exc:
        raise CheckpointError(f"cannot download {uri} ({mv.source}): {str(exc).splitlines()[0]}") from None
    path = Path(local) / STATE_FILE
    if not path.is_file():
        raise CheckpointError(f"{uri} is not a fewray model (no {STATE_FILE} in {mv.source})")
    return load_checkpoint(path), path

"""BaseRetriever: a model that ranks a database of prototypes (a gallery) for each query (mmpretrain's retriever).

mmpretrain's ``BaseRetriever`` (https://mmpretrain.readthedocs.io/en/latest/api/models.html#retrievers, source
``mmpretrain/models/retrievers/base.py``) rebuilt on plain PyTorch: no mmengine runner, data samples or
distributed gathering. The *prototype* is the gallery: images whose features are compared with each query's.
It is given in one of four forms, turned into a ``(P, D)`` feature matrix by :meth:`BaseRetriever.prepare_prototype`
(mmpretrain's four forms):

- a data loader: any iterable of image batches, each a tensor ``(B, C, H, W)``, a dict with an ``img`` entry,
  or a tuple/list whose first item is the images (what ``DataLoader(TensorDataset(...))`` yields);
- a dict: a data-loader config built by :data:`PROTOTYPE_LOADERS` (``type`` defaults to ``CatalogLoader``,
  which :mod:`fewray.platform.retrieval` registers: ``{"root": catalog_dir, "split": "test"}`` reads a split
  of a fewray catalog);
- a path (``str`` / :class:`~pathlib.Path`): features saved by :meth:`BaseRetriever.dump_prototype`, read
  with ``torch.load(weights_only=True)`` (a file holding Python objects is refused, never unpickled);
- a tensor ``(P, D)``: the features themselves.

Images are uint8 ``(B, C, H, W)`` in 0..255 as fewray's catalogs store them, or floats: without a
``data_preprocessor`` uint8 batches become floats in [0, 1] (fewray's convention,
:func:`fewray.platform.features.to_float`) and float batches pass unchanged.

Ranking (:func:`rank_similarity`) sorts by descending similarity; equal similarities keep gallery order (the
lower index first), so a ranking never depends on how the queries were batched or sharded.
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fewray.algorithms.utils.weights import torch_load_checked
from fewray.core.errors import ConfigError, DataError
from fewray.core.registry import Registry

#: data-loader configs for a ``dict`` prototype: ``type`` name -> a class whose instances iterate over image
#: batches. :mod:`fewray.platform.retrieval` registers ``CatalogLoader`` (a split of a fewray catalog); it
#: lives there because reading a catalog is the runtime's job (``fewray.algorithms`` never imports it).
PROTOTYPE_LOADERS = Registry("prototype loader")
#: the loader a prototype dict without ``type`` is built with
DEFAULT_PROTOTYPE_LOADER = "CatalogLoader"

__all__ = ["BaseRetriever", "DEFAULT_PROTOTYPE_LOADER", "PROTOTYPE_LOADERS", "batch_images", "feature_matrix",
           "load_prototype_file", "rank_similarity"]


def batch_images(batch: Any) -> torch.Tensor:
    """The images of one data-loader batch: a tensor ``(B, C, H, W)``, a dict's ``img`` entry, or the first item
    of a tuple/list.

    Raises:
        DataError: a batch of another kind, or images that are not a 4-D tensor.

    Example::

        >>> batch_images({"img": torch.zeros(2, 3, 8, 8), "label": torch.tensor([0, 1])}).shape
        torch.Size([2, 3, 8, 8])
    """
    if isinstance(batch, Mapping):
        if "img" not in batch:
            raise DataError(f"a prototype batch dict needs an 'img' entry (it has {', '.join(map(str, batch)) or 'none'})")
        batch = batch["img"]
    elif isinstance(batch, (tuple, list)) and batch:
        batch = batch[0]
    if not isinstance(batch, torch.Tensor) or batch.dim() != 4:
        got = f"a tensor of shape {tuple(batch.shape)}" if isinstance(batch, torch.Tensor) else type(batch).__name__
        raise DataError(f"a prototype batch must hold images (B, C, H, W), got {got}")
    return batch


def feature_matrix(feats: Any) -> torch.Tensor:
    """An encoder's output as a ``(N, D)`` matrix: a tuple/list gives its last item (mmpretrain's ``feats[-1]``),
    a dict its last value; maps ``(N, C, h, w)`` are flattened to ``(N, C*h*w)``.

    Raises:
        DataError: an output that is not a tensor of at least 2 dimensions.

    Example::

        >>> feature_matrix((torch.zeros(2, 8), torch.zeros(2, 4, 3, 3))).shape
        torch.Size([2, 36])
    """
    if isinstance(feats, (tuple, list)) and feats:
        feats = feats[-1]
    elif isinstance(feats, Mapping) and feats:
        feats = list(feats.values())[-1]
    if not isinstance(feats, torch.Tensor) or feats.dim() < 2:
        got = f"shape {tuple(feats.shape)}" if isinstance(feats, torch.Tensor) else type(feats).__name__
        raise DataError(f"the image encoder must give features (N, D) or maps (N, C, h, w), got {got}")
    return feats.flatten(1) if feats.dim() > 2 else feats


def load_prototype_file(path: str | Path) -> torch.Tensor:
    """The ``(P, D)`` features saved by :meth:`BaseRetriever.dump_prototype`, loaded with ``weights_only=True``.

    Raises:
        DataError: a missing, empty or damaged file, a file holding Python objects (it is not unpickled), or a
            file whose content is not a non-empty 2-D floating tensor; the message names the file.

    Example::

        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "gallery.pt")
        >>> torch.save(torch.ones(3, 4), path)
        >>> load_prototype_file(path).shape
        torch.Size([3, 4])
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"prototype file not found: {path}" if not p.exists() else f"prototype path {path} is not a file")
    vecs = torch_load_checked(p, "prototype file", DataError, hint="write it with dump_prototype")
    return check_prototype(vecs, f"prototype file {path}")


def check_prototype(vecs: Any, what: str) -> torch.Tensor:
    """``vecs`` if it is a non-empty ``(P, D)`` floating tensor, else a DataError starting with ``what``."""
    if not isinstance(vecs, torch.Tensor):
        raise DataError(f"{what} holds a {type(vecs).__name__}, not a (P, D) tensor of features "
                        f"(write it with dump_prototype)")
    if vecs.dim() != 2 or vecs.shape[0] == 0 or vecs.shape[1] == 0:
        raise DataError(f"{what} holds a tensor of shape {tuple(vecs.shape)}, not (P, D) features of P >= 1 items")
    if not vecs.is_floating_point():
        raise DataError(f"{what} holds {vecs.dtype} values, not floating-point features")
    return vecs


def rank_similarity(sim: torch.Tensor, topk: int = -1,
                    exclude: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The gallery ranked for each query: the ``topk`` largest similarities and their gallery indices.

    Sorted by descending similarity; equal similarities keep gallery order (a stable sort: the lower index
    first), so the ranking of a query does not depend on the other queries of its batch.

    Args:
        sim: ``(N, P)`` similarities of ``N`` queries to ``P`` gallery items (larger = more similar).
        topk: how many to keep per query; ``-1`` keeps every candidate.
        exclude: ``(N,)`` gallery index to leave out of each query's ranking (the query itself when queries
            and gallery are the same set: leave-one-out), or None. Each query then has ``P - 1`` candidates.

    Returns:
        ``(scores, indices)``, both ``(N, k)``: ``k = topk``, or the number of candidates for ``-1``.

    Raises:
        ConfigError: ``topk`` is 0, below -1, or larger than the number of candidates (naming both).
        DataError: ``exclude`` of another length than the queries, or an index outside the gallery.

    Example::

        >>> sim = torch.tensor([[0.1, 0.9, 0.9, 0.5], [0.8, 0.2, 0.3, 0.4]])
        >>> rank_similarity(sim, topk=2)[1].tolist()    # ties keep gallery order
        [[1, 2], [0, 3]]
        >>> rank_similarity(sim, topk=2, exclude=torch.tensor([1, 0]))[1].tolist()
        [[2, 3], [3, 2]]
    """
    n, p = sim.shape
    candidates = p - (1 if exclude is not None else 0)
    check_topk(topk, p, exclude is not None)
    k = candidates if topk == -1 else topk
    order = torch.sort(sim, dim=1, descending=True, stable=True).indices
    if exclude is not None:
        exclude = torch.as_tensor(exclude, dtype=torch.long, device=sim.device).reshape(-1)
        if len(exclude) != n:
            raise DataError(f"exclude has {len(exclude)} entries for {n} queries")
        if n and (int(exclude.min()) < 0 or int(exclude.max()) >= p):
            raise DataError(f"exclude holds gallery indices outside 0..{p - 1}")
        keep = order != exclude[:, None]
        order = order[keep].view(n, candidates)
    order = order[:, :k]
    return sim.gather(1, order), order


def check_topk(topk: int, gallery_size: int, leave_one_out: bool = False) -> None:
    """``topk`` must be -1 (all) or 1..candidates, the candidates being the gallery, less the query itself when
    each query is left out of its own ranking.

    Raises:
        ConfigError: ``topk 50 is larger than the gallery (40 items)``, or a ``topk`` of 0 or below -1.
    """
    if isinstance(topk, bool) or not isinstance(topk, int) or topk == 0 or topk < -1:
        raise ConfigError(f"topk must be a positive integer or -1 (all), got {topk!r}")
    candidates = gallery_size - (1 if leave_one_out else 0)
    if topk > candidates:
        loo = f", {candidates} per query when each query is left out of its own ranking" if leave_one_out else ""
        raise ConfigError(f"topk {topk} is larger than the gallery ({gallery_size} items{loo})")


class BaseRetriever(nn.Module, metaclass=ABCMeta):
    """Base class of retrievers (mmpretrain's ``BaseRetriever``,
    https://mmpretrain.readthedocs.io/en/latest/api/generated/mmpretrain.models.retrievers.BaseRetriever.html).

    A subclass implements :meth:`extract_feat` (images -> features ``(N, D)``) and :meth:`matching` (features ->
    similarities ``(N, P)`` to the prototype); this class turns the prototype into features
    (:meth:`prepare_prototype`), saves them (:meth:`dump_prototype`) and ranks the gallery (:meth:`predict`).

    Args:
        prototype (DataLoader | Iterable | dict | str | Path | Tensor | None): the gallery, in one of the four
            forms of the module docstring: a loader of image batches, a data-loader config dict (built by
            :data:`PROTOTYPE_LOADERS`, ``type`` default ``CatalogLoader``), the path of features saved by
            :meth:`dump_prototype`, or a ``(P, D)`` tensor. None: no gallery yet (set :attr:`prototype` before
            :meth:`prepare_prototype`). Default None.
        data_preprocessor (Callable | nn.Module | None): maps a batch of images ``(B, C, H, W)`` to the
            encoder's input; None: uint8 images become floats in [0, 1], float images pass unchanged. Default None.

    Attributes:
        prototype: as given; prototype_inited (bool): :meth:`prepare_prototype` has run;
        prototype_vecs (Tensor): ``(P, D)`` float32 features of the gallery (a non-persistent buffer, on the
            device of the model's parameters), once prepared.

    Raises:
        ConfigError (prepare_prototype): no prototype, or one of an unsupported type.
        DataError (prepare_prototype, matching): an empty gallery, a file or tensor that is not ``(P, D)``
            features, query features of another dimension than the prototype's (naming both).
    """

    def __init__(self, prototype: Any = None, data_preprocessor: Callable | None = None) -> None:
        super().__init__()
        if data_preprocessor is not None and not callable(data_preprocessor):
            raise ConfigError(f"data_preprocessor must be callable, got {type(data_preprocessor).__name__}")
        self.data_preprocessor = data_preprocessor
        self.prototype = prototype
        self.prototype_inited = False

    # --- to implement ------------------------------------------------------------------------------------

    @abstractmethod
    def extract_feat(self, inputs: torch.Tensor) -> torch.Tensor:
        """Features ``(N, D)`` of preprocessed images ``(N, C, H, W)``."""

    @abstractmethod
    def matching(self, inputs: torch.Tensor) -> torch.Tensor:
        """Similarities ``(N, P)`` of query features ``(N, D)`` to the prototype (larger = more similar)."""

    def loss(self, inputs: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """A dict of losses of a batch of images and labels (training a retriever's encoder).

        Raises:
            NotImplementedError: this retriever cannot be trained.
        """
        raise NotImplementedError(f"{type(self).__name__} has no loss")

    # --- shared ------------------------------------------------------------------------------------------

    def preprocess(self, inputs: torch.Tensor) -> torch.Tensor:
        """Images as the encoder takes them: ``data_preprocessor(inputs)``, or without one uint8 -> [0, 1] floats."""
        if self.data_preprocessor is not None:
            return self.data_preprocessor(inputs)
        if inputs.dtype == torch.uint8:
            return inputs.float().div_(255.0)
        return inputs

    def _device(self) -> torch.device:
        p = next(self.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    def forward(self, inputs: torch.Tensor, labels: torch.Tensor | None = None, mode: str = "tensor") -> Any:
        """The unified entry (mmpretrain's three modes).

        Args:
            inputs: images ``(N, C, H, W)`` (uint8 or float, see :meth:`preprocess`).
            labels: ``(N,)`` class indices, for ``mode="loss"``.
            mode: ``"tensor"``: features ``(N, D)``; ``"predict"``: :meth:`predict`'s dict; ``"loss"``:
                :meth:`loss`'s dict of losses.

        Raises:
            ValueError: an unknown ``mode``, or ``mode="loss"`` without labels.
        """
        if mode == "tensor":
            return self.extract_feat(self.preprocess(inputs))
        if mode == "predict":
            return self.predict(inputs)
        if mode == "loss":
            if labels is None:
                raise ValueError("forward(mode='loss') needs labels")
            return self.loss(self.preprocess(inputs), labels)
        raise ValueError(f"unknown forward mode '{mode}' (tensor, predict, loss)")

    @torch.no_grad()
    def predict(self, inputs: torch.Tensor, topk: int | None = None,
                exclude: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Rank the prototype for each query image (prepares the prototype first if needed).

        Args:
            inputs: query images ``(N, C, H, W)`` (uint8 or float, see :meth:`preprocess`).
            topk: items per query; default the retriever's ``topk`` (``-1``: all).
            exclude: ``(N,)`` gallery index to leave out of each query's ranking (leave-one-out), or None.

        Returns:
            ``{"score": (N, P) similarities, "pred_label": (N, k) gallery indices, most similar first,
            "pred_score": (N, k) their similarities}`` (mmpretrain's ``score`` / ``pred_label`` / ``pred_score``).

        Raises:
            ConfigError: ``topk`` larger than the gallery; DataError: as :meth:`matching`.
        """
        if not self.prototype_inited:
            self.prepare_prototype()
        was_training = self.training
        self.eval()
        try:
            sim = self.matching(self.extract_feat(self.preprocess(inputs.to(self._device()))))
        finally:
            self.train(was_training)
        k = getattr(self, "topk", -1) if topk is None else topk
        scores, indices = rank_similarity(sim, k, exclude)
        return {"score": sim, "pred_label": indices, "pred_score": scores}

    @torch.no_grad()
    def features_of_loader(self, loader: Iterable) -> torch.Tensor:
        """Features ``(P, D)`` (float32, on the CPU) of every batch of ``loader``, in order, in eval mode.

        Raises:
            DataError: a batch that holds no images (see :func:`batch_images`), or a loader without images.
        """
        was_training = self.training
        self.eval()
        device = self._device()
        out = []
        try:
            for batch in loader:
                x = self.preprocess(batch_images(batch).to(device))
                out.append(self.extract_feat(x).float().cpu())
        finally:
            self.train(was_training)
        if not out:
            raise DataError("the prototype loader gave no images: the gallery is empty")
        return torch.cat(out)

    def _describe_prototype(self) -> str:
        p = self.prototype
        if isinstance(p, (str, Path)):
            return f"prototype file {p}"
        return "prototype"

    @torch.no_grad()
    def prepare_prototype(self) -> None:
        """Turn :attr:`prototype` into the ``(P, D)`` buffer :attr:`prototype_vecs` (mmpretrain's
        ``prepare_prototype``): a tensor is used as it is, a path is loaded (:func:`load_prototype_file`), a
        loader or a loader config is run through :meth:`extract_feat` in eval mode.

        Raises:
            ConfigError: no prototype, an unsupported type, or a loader config that does not build.
            DataError: an empty gallery, a tensor or file that is not ``(P, D)`` features.
        """
        p = self.prototype
        if p is None:
            raise ConfigError(f"{type(self).__name__} has no prototype: give a loader, a loader config, "
                              f"a features file or a (P, D) tensor")
        if isinstance(p, torch.Tensor):
            vecs = check_prototype(p, "the prototype tensor")
        elif isinstance(p, (str, Path)):
            vecs = load_prototype_file(p)
        elif isinstance(p, Mapping):
            cfg = dict(p)
            cfg.setdefault("type", DEFAULT_PROTOTYPE_LOADER)
            if cfg["type"] not in PROTOTYPE_LOADERS:
                hint = (" (fewray.platform.retrieval registers it: import that module first)"
                        if cfg["type"] == DEFAULT_PROTOTYPE_LOADER else "")
                raise ConfigError(f"unknown prototype loader type '{cfg['type']}' (registered: "
                                  f"{', '.join(PROTOTYPE_LOADERS.list()) or 'none'}){hint}")
            vecs = self.features_of_loader(PROTOTYPE_LOADERS.build(cfg, "prototype"))
        elif isinstance(p, Iterable):
            vecs = self.features_of_loader(p)
        else:
            raise ConfigError(f"prototype must be a data loader, a loader config dict, a features file path or a "
                              f"(P, D) tensor, got {type(p).__name__}")
        self.register_buffer("prototype_vecs", vecs.detach().float().to(self._device()), persistent=False)
        self.prototype_inited = True

    def dump_prototype(self, path: str | Path) -> Path:
        """Save the prototype's ``(P, D)`` features to ``path`` (``torch.save`` of a plain CPU tensor, readable with
        ``weights_only=True``); a retriever built with ``prototype=path`` then gives the same results.

        Returns:
            ``path`` as a :class:`~pathlib.Path` (parent directories are created).
        """
        if not self.prototype_inited:
            self.prepare_prototype()
        path = Path(path).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(self.prototype_vecs.detach().cpu().contiguous(), path)
        return path

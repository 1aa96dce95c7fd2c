"""ArcFaceClsHead: additive angular margin (ArcFace) and sub-center ArcFace, as mmpretrain's head of that name.

Also :func:`adaptive_margins`, the class-frequency margins of mmpretrain's ``SetAdaptiveMarginsHook``, to be
given to :meth:`ArcFaceClsHead.set_margins` when training starts.
"""

from __future__ import annotations

import math
import operator
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fewray.algorithms.builder import HEADS
from fewray.algorithms.heads.base_finetune_head import BaseFinetuneHead
from fewray.algorithms.heads.utils import accuracy
from fewray.core.errors import ConfigError

#: the config path the head's one-line errors name (its usual place in an experiment config)
WHERE = "model.head"
#: cosines are clamped to ``[-1 + CLAMP, 1 - CLAMP]`` before ``acos`` (its derivative is infinite at +-1)
CLAMP = 1e-6


def _number(text: Any, what: str) -> float:
    """``float(text)`` if it is a finite number, else a one-line ConfigError saying ``what`` was wrong."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        value = math.nan
        finite = False
    else:
        finite = math.isfinite(value)
    if isinstance(text, bool) or not finite:
        raise ConfigError(f"config key '{WHERE}.margins': {what} is not a finite number: {text!r}")
    return value


def _full(t: torch.Tensor) -> torch.Tensor:
    """``t`` in float32 if it is a 16-bit float (``acos`` near +-1 needs the precision), else as is."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def read_margins_file(path: str | os.PathLike) -> list[float]:
    """The margins of a text file, one number per line (blank lines are skipped), in class order.

    Args:
        path (str | PathLike): the file, e.g. ``margins.txt``; a relative path is relative to the working
            directory (a Ray job's: the submitted working directory).

    Returns:
        list[float]: line ``i`` (not counting blank lines) is the margin of class ``i``.

    Raises:
        ConfigError: the file is missing, not a UTF-8 text file, or a line is not a finite number (the
            message gives the line number, counting from 1).
    """
    p = Path(path).expanduser()
    if not p.is_file():
        state = "is a directory, not a file" if p.is_dir() else "not found"
        raise ConfigError(f"config key '{WHERE}.margins': margins file {state}: {path}")
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config key '{WHERE}.margins': cannot read margins file {path} as text "
                          f"({type(exc).__name__})") from None
    return [_number(line.strip(), f"line {i} of {path}") for i, line in enumerate(lines, 1) if line.strip()]


def margins_tensor(
    margins: float | Sequence[float] | str | os.PathLike | torch.Tensor, num_classes: int
) -> torch.Tensor:
    """Per-class margins ``(num_classes,)`` float32 from a number, a sequence of ``num_classes`` numbers, or a file.

    Raises:
        ConfigError: a value that is not a finite number, a sequence of the wrong length, a bad file
            (see :func:`read_margins_file`).
    """
    if isinstance(margins, (str, os.PathLike)):
        values = read_margins_file(margins)
        source = f"margins file {margins} holds {len(values)} margins"
    elif isinstance(margins, (int, float)) and not isinstance(margins, bool):
        values = [_number(margins, "the margin")] * num_classes
        source = ""
    else:
        if isinstance(margins, torch.Tensor):
            margins = margins.detach().cpu().reshape(-1).tolist()
        try:
            items = list(margins)
        except TypeError:
            raise ConfigError(f"config key '{WHERE}.margins': expected a number, a list of numbers or a margins "
                              f"file path, got {margins!r}") from None
        values = [_number(v, f"margins[{i}]") for i, v in enumerate(items)]
        source = f"{len(values)} margins given"
    if len(values) != num_classes:
        raise ConfigError(f"config key '{WHERE}.margins': {source} but num_classes is {num_classes} "
                          f"(one margin per class)")
    return torch.tensor(values, dtype=torch.float32)


def adaptive_margins(
    class_counts: Sequence[int] | torch.Tensor,
    margin_min: float = 0.05,
    margin_max: float = 0.5,
    power: float = -0.25,
) -> torch.Tensor:
    r"""Per-class margins from class frequencies (mmpretrain's ``SetAdaptiveMarginsHook``).

    From "Google Landmark Recognition 2020 Competition Third Place Solution" (Ha et al. 2020,
    https://arxiv.org/abs/2010.05350): rarer classes get larger margins,

    .. math::
        f_c = n_c^{p}, \qquad
        m_c = m_{min} + (m_{max} - m_{min}) \frac{f_c - \min_j f_j}{\max_j f_j - \min_j f_j},

    with ``n_c`` the training images of class ``c`` (a class with none counts as 1, as mmpretrain). With the
    default ``power < 0`` the rarest class gets ``margin_max`` and the most frequent ``margin_min``. When all
    counts are equal the normalisation is 0/0 (mmpretrain then produces NaN margins); here every class gets
    ``margin_max``, i.e. plain ArcFace with the default 0.5 margin.

    Args:
        class_counts (Sequence[int] | Tensor): ``(num_classes,)`` images per class, class ``c`` at index ``c``
            (e.g. ``numpy.bincount(train_labels)``).
        margin_min (float): the smallest margin. Default 0.05.
        margin_max (float): the largest margin. Default 0.5.
        power (float): the exponent ``p`` of the counts. Default -0.25.

    Returns:
        Tensor: float32 margins ``(num_classes,)``, for :meth:`ArcFaceClsHead.set_margins`.

    Raises:
        ValueError: no classes, a negative count, or ``margin_min > margin_max``.

    Example::

        >>> adaptive_margins([1, 16, 81], margin_min=0.05, margin_max=0.5, power=-0.25)
        tensor([0.5000, 0.1625, 0.0500])
    """
    counts = torch.as_tensor(class_counts, dtype=torch.float64).reshape(-1)
    if counts.numel() == 0:
        raise ValueError("adaptive_margins needs the image count of at least one class, got none")
    if (counts < 0).any():
        raise ValueError(f"class counts must be >= 0, got {counts.min().item():g}")
    if margin_min > margin_max:
        raise ValueError(f"margin_min ({margin_min}) must be <= margin_max ({margin_max})")
    freq = counts.clamp(min=1) ** power
    spread = freq.max() - freq.min()
    if spread == 0:
        return torch.full(counts.shape, float(margin_max), dtype=torch.float32)
    normalised = (freq - freq.min()) / spread
    return (margin_min + (margin_max - margin_min) * normalised).float()


@HEADS.register
class ArcFaceClsHead(BaseFinetuneHead):
    r"""ArcFace and sub-center ArcFace: scaled cosine logits with an additive angular margin on the target.

    From "ArcFace: Additive Angular Margin Loss for Deep Face Recognition" (Deng, Guo, Xue and Zafeiriou,
    CVPR 2019, https://arxiv.org/abs/1801.07698) and "Sub-center ArcFace: Boosting Face Recognition by
    Large-scale Noisy Web Faces" (Deng, Guo, Liu, Gong and Zafeiriou, ECCV 2020,
    https://www.ecva.net/papers/eccv_2020/papers_ECCV/papers/123560715.pdf); mmpretrain's ``ArcFaceClsHead``.

    With ``x`` the feature and ``w_{c,k}`` the ``k``-th of the ``num_subcenters`` weight vectors of class
    ``c``, :math:`\cos\theta_c = \max_k \cos(x, w_{c,k})` (sub-center ArcFace takes the closest
    sub-center). Prediction (``forward(feats)``): logits :math:`s\cos\theta_c`. Training
    (``forward(feats, labels)``): the target class ``y`` gets :math:`s\cos(\theta_y + m_y)` instead, the other
    classes keep :math:`s\cos\theta_c`. Past :math:`\theta_y + m_y > \pi` the cosine would rise again, so (as
    mmpretrain and insightface) the target logit is then :math:`s(\cos\theta_y - m_y \sin m_y)`; with
    ``easy_margin`` it is instead :math:`s\cos\theta_y` whenever :math:`\cos\theta_y \le 0`.

    As a few-shot pre-training head it stands where Baseline++'s
    :class:`~fewray.algorithms.heads.CosineDistanceHead` does (see
    :class:`~fewray.algorithms.classifiers.ArcFaceBaseline`): it is a
    :class:`~fewray.algorithms.heads.BaseFinetuneHead` (``forward(feats, labels=None)`` -> logits,
    ``forward_train`` -> ``{"loss", "accuracy"}``).

    Args:
        num_classes (int): classes ``C`` (all base classes in pre-training; experiment configs leave it out
            and training fills in the train split's class count). Default 5 (as the other fine-tune heads).
        in_channels (int): feature dimension ``D``. Default 64.
        num_subcenters (int): weight vectors per class ``K``; 1 is plain ArcFace, mmpretrain's sub-center
            example uses 3. Default 1.
        scale (float): the logit scale ``s``. Default 64.0.
        margins (float | list[float] | str): the angular margin ``m`` in radians: one number for all classes,
            a list of ``C`` numbers (class ``c`` at index ``c``), or the path of a text file with one number
            per line (see :func:`read_margins_file`). Default 0.5.
        easy_margin (bool): use the margin only where :math:`\cos\theta_y > 0`. Default False.
        loss (dict | None): loss config; default ``{type: CrossEntropyLoss, loss_weight: 1.0}``.

    Shapes:
        ``forward(feats (B, D), labels (B,) | None)`` -> ``(B, C)``. The weights are ``fc.weight``
        ``(C*K, D)``, row ``c*K + k`` the ``k``-th sub-center of class ``c`` (mmpretrain's order).
        ``margins`` is a buffer ``(C,)`` saved with the weights, so margins set at training start
        (:meth:`set_margins`, :func:`adaptive_margins`) come back with a checkpoint.

    Raises:
        ConfigError: ``num_subcenters < 1``; margins that are not finite numbers, a list of the wrong
            length, a missing or non-numeric margins file (one line, naming ``model.head.<key>``).
        ValueError: ``num_classes`` or ``in_channels`` < 1.

    Example::

        >>> head = ArcFaceClsHead(num_classes=10, in_channels=64, num_subcenters=3, scale=30.0, margins=0.3)
        >>> feats, labels = torch.randn(4, 64), torch.tensor([0, 3, 3, 9])
        >>> head(feats).shape, head.forward_train(feats, labels)["loss"].shape
        (torch.Size([4, 10]), torch.Size([]))
        >>> head.set_margins(adaptive_margins([5, 1, 20, 5, 5, 5, 5, 5, 5, 5]))
    """

    def __init__(
        self,
        num_classes: int = 5,
        in_channels: int = 64,
        num_subcenters: int = 1,
        scale: float = 64.0,
        margins: float | list[float] | str = 0.5,
        easy_margin: bool = False,
        loss: dict[str, Any] | None = None,
    ) -> None:
        try:
            k = operator.index(num_subcenters) if not isinstance(num_subcenters, bool) else 0
        except TypeError:
            k = 0
        if k < 1:
            raise ConfigError(f"config key '{WHERE}.num_subcenters': must be an integer >= 1, got {num_subcenters!r}")
        num_subcenters = int(k)
        super().__init__(num_classes, in_channels, loss)
        self.init_kwargs.update(num_subcenters=num_subcenters, scale=scale, margins=margins, easy_margin=easy_margin)
        self.num_subcenters, self.scale, self.easy_margin = num_subcenters, float(scale), bool(easy_margin)
        self.fc = nn.Linear(in_channels, num_classes * num_subcenters, bias=False)
        self.register_buffer("margins", margins_tensor(margins, num_classes))

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, in_channels={self.in_channels}, "
                f"num_subcenters={self.num_subcenters}, scale={self.scale}, easy_margin={self.easy_margin}")

    def set_margins(self, margins: float | Sequence[float] | torch.Tensor) -> None:
        """Replace the per-class margins (e.g. with :func:`adaptive_margins` at training start).

        Args:
            margins (float | Sequence[float] | Tensor): one margin for all classes, or ``num_classes`` of them.

        Raises:
            ConfigError: a value that is not a finite number, or not ``num_classes`` values.
        """
        new = margins_tensor(margins, self.num_classes)
        with torch.no_grad():
            self.margins.copy_(new.to(self.margins.device))

    def cosine(self, feats: torch.Tensor) -> torch.Tensor:
        """:math:`\\cos\\theta` ``(B, C)`` of features ``(B, D)``: the best of each class's sub-centers."""
        x = F.normalize(_full(feats.flatten(1)), dim=-1)
        w = F.normalize(_full(self.fc.weight), dim=-1)
        cos = F.linear(x, w)
        if self.num_subcenters == 1:
            return cos
        return cos.unflatten(-1, (self.num_classes, self.num_subcenters)).amax(-1)

    def add_margin(self, cos: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``cos`` ``(B, C)`` with the target entry of each row replaced by the margin rule (unscaled)."""
        index = labels.long().unsqueeze(-1)
        target = cos.gather(-1, index).squeeze(-1)
        m = self.margins[labels.long()]
        phi = torch.cos(torch.acos(target.clamp(-1 + CLAMP, 1 - CLAMP)) + m)
        if self.easy_margin:
            phi = torch.where(target > 0, phi, target)
        else:  # theta + m < pi  <=>  cos(theta) > cos(pi - m) = -cos(m)
            phi = torch.where(target > -torch.cos(m), phi, target - m * torch.sin(m))
        return cos.scatter(-1, index, phi.unsqueeze(-1))

    def forward_train(self, feats: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Loss of the margin logits and accuracy of the plain ones (what prediction would score), of features
        ``(B, D)`` and labels ``(B,)`` in ``0..num_classes-1``."""
        cos = self.cosine(feats)
        logits = self.scale * self.add_margin(cos, labels)
        return {"loss": self.loss(logits, labels), "accuracy": accuracy(cos, labels)}

    def forward(self, feats: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``(B, C)``: ``scale * cos``; with ``labels`` ``(B,)`` the target entries carry the margin."""
        cos = self.cosine(feats)
        if labels is not None:
            cos = self.add_margin(cos, labels)
        return self.scale * cos

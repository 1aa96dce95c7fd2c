"""MatchingNet: Matching Networks for One Shot Learning (Vinyals et al., NeurIPS 2016), without FCE."""

from __future__ import annotations

from fewray.algorithms.builder import CLASSIFIERS
from fewray.algorithms.classifiers.base_metric import BaseMetricClassifier


@CLASSIFIERS.register
class MatchingNet(BaseMetricClassifier):
    """Matching Networks: a backbone embedding plus :class:`~fewray.algorithms.heads.MatchingHead`.

    A query's label distribution is the softmax-attention over cosine similarities to the support
    embeddings, applied to their one-hot labels; trained episodically with the NLL of the true class.
    Full context embeddings (the bidirectional LSTM / attention LSTM) are not implemented (as mmfewshot).

    Args:
        backbone (nn.Module): e.g. ``Conv4``, ``(N, C, H, W) -> (N, D)``.
        head (nn.Module): normally ``MatchingHead``.

    Example::

        >>> import torch
        >>> from fewray.algorithms import build_classifier
        >>> model = build_classifier({"type": "MatchingNet", "backbone": {"type": "Conv4", "in_channels": 1},
        ...                           "head": {"type": "MatchingHead"}})
        >>> out = model(mode="train", support_img=torch.rand(5, 1, 28, 28), support_label=torch.arange(5),
        ...             query_img=torch.rand(5, 1, 28, 28), query_label=torch.arange(5))
        >>> sorted(out)
        ['accuracy', 'loss']
        >>> model.before_meta_test()   # then 2 tasks scored at once on frozen features (T, N*K, D)
        >>> model.forward_tasks(torch.randn(2, 5, 64), torch.arange(5).repeat(2, 1), torch.randn(2, 3, 64),
        ...                     num_classes=5).shape
        torch.Size([2, 3, 5])
    """

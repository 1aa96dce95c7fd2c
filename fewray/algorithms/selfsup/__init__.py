"""Self-supervised models (mmpretrain's ``selfsup``): a backbone trained without labels, registered in
:data:`SELFSUP`.

==========  ====================================================  =============================================
model       inputs of the training call                           losses
==========  ====================================================  =============================================
``SimCLR``  two augmented views ``[view1, view2]`` ``(B, C, H, W)``  ``{"loss": NT-Xent, "accuracy"}``
==========  ====================================================  =============================================

Example::

    >>> from fewray.algorithms import SELFSUP
    >>> SELFSUP.list()
    ['SimCLR']
"""

from fewray.algorithms.builder import SELFSUP
from fewray.algorithms.selfsup.base import BaseSelfSupervisor, SelfSupDataPreprocessor
from fewray.algorithms.selfsup.simclr import SimCLR

__all__ = ["SELFSUP", "BaseSelfSupervisor", "SelfSupDataPreprocessor", "SimCLR"]

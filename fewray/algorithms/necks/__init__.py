"""Necks: modules between a backbone and a head (mmpretrain's ``necks``), registered in :data:`NECKS`.

Example::

    >>> from fewray.algorithms import NECKS
    >>> NECKS.build({"type": "NonLinearNeck", "in_channels": 64, "hid_channels": 128, "out_channels": 32}).fc1
    Linear(in_features=128, out_features=32, bias=False)
"""

from fewray.algorithms.builder import NECKS
from fewray.algorithms.necks.nonlinear_neck import NonLinearNeck

__all__ = ["NECKS", "NonLinearNeck"]

"""Retrievers (mmpretrain's ``mmpretrain.models.retrievers``): rank a gallery of images for each query image.

Registered in :data:`RETRIEVERS` (``fewray.algorithms.builder``); a ``dict`` prototype is built by
:data:`PROTOTYPE_LOADERS` (``CatalogLoader``, registered by :mod:`fewray.platform.retrieval`).
"""

from fewray.algorithms.builder import RETRIEVERS
from fewray.algorithms.retrievers.base import (
    PROTOTYPE_LOADERS,
    BaseRetriever,
    check_topk,
    feature_matrix,
    load_prototype_file,
    rank_similarity,
)
from fewray.algorithms.retrievers.image_to_image import SIMILARITY_FNS, ImageToImageRetriever, cosine_similarity

__all__ = ["BaseRetriever", "ImageToImageRetriever", "PROTOTYPE_LOADERS", "RETRIEVERS", "SIMILARITY_FNS",
           "check_topk", "cosine_similarity", "feature_matrix", "load_prototype_file", "rank_similarity"]

"""Dataset sources: official releases -> fewray's Parquet catalog (one small module per dataset).

=================  =========================================================  ==========================
name               release layout                                             class split
=================  =========================================================  ==========================
``mini_imagenet``  ``train.csv``/``val.csv``/``test.csv`` + ``images/``        Ravi & Larochelle (64/16/20)
``tiered_imagenet`` ``{split}_images_png.pkl`` + ``{split}_labels.pkl``      Ren et al. (351/97/160)
``cub``            ``CUB_200_2011/`` (images, images.txt, classes.txt, ...)   CloserLook (100/50/50)
``cifar_fs``       ``cifar-100-python/`` + ``splits/bertinetto/*.txt``        Bertinetto et al. (64/16/20)
``folder``         ``<class>/<images>``                                       a split file or seeded random
``caltech101``     ``101_ObjectCategories/<class>/*.jpg``                      fewray's, seed 0 (60/15/25)
=================  =========================================================  ==========================

Every source writes ``train``/``val``/``test`` Parquet tables of ``image_size x image_size`` RGB images
(``image`` encoded bytes, ``label`` 0..C-1 per split, ``class_name``) and ``catalog.json``, atomically;
bad input is a :class:`~fewray.core.errors.DataError` naming the file or class. Omniglot (grayscale,
rotations as classes) lives in :mod:`fewray.data.omniglot`.

Multi-label catalogs (one label *set* per image, no ``label`` column) come from detection annotations, COCO
JSON (official, Roboflow, one file) or Pascal VOC XML: :data:`MULTI_LABEL_SOURCES`
(:mod:`fewray.data.sources.multilabel`); ``prepare_data.py multilabel`` makes them (its ``--split-file``
names each split's annotation files, e.g. ``configs/multi_label/coco_split.yaml``).

Example::

    >>> from fewray.data.sources import SOURCES
    >>> SOURCES["caltech101"]("../shared/data/caltech101", "data/caltech101")  # doctest: +SKIP
    >>> from fewray.data.catalog import load_split
    >>> load_split("data/caltech101", "test", channels=3).images.shape  # doctest: +SKIP
    (..., 3, 84, 84)
"""

from fewray.data.sources.caltech101 import prepare_caltech101
from fewray.data.sources.cifar_fs import prepare_cifar_fs
from fewray.data.sources.cub import prepare_cub
from fewray.data.sources.folder import prepare_folder
from fewray.data.sources.mini_imagenet import prepare_mini_imagenet
from fewray.data.sources.multilabel import prepare_multilabel
from fewray.data.sources.tiered_imagenet import prepare_tiered_imagenet

#: dataset name -> ``prepare(source, out, image_size=..., ..., progress=None) -> catalog info``
SOURCES = {
    "mini_imagenet": prepare_mini_imagenet,
    "tiered_imagenet": prepare_tiered_imagenet,
    "cub": prepare_cub,
    "cifar_fs": prepare_cifar_fs,
    "folder": prepare_folder,
    "caltech101": prepare_caltech101,
}

#: multi-label sources: name -> ``prepare(source, out, image_size=..., ..., progress=None) -> catalog info``
MULTI_LABEL_SOURCES = {
    "multilabel": prepare_multilabel,
}

#: default output side per source (natural images 84, CIFAR-FS its native 32, multi-label 224: ImageNet backbones)
DEFAULT_IMAGE_SIZE = {"mini_imagenet": 84, "tiered_imagenet": 84, "cub": 84, "cifar_fs": 32, "folder": 84,
                      "caltech101": 84, "multilabel": 224}

__all__ = [
    "DEFAULT_IMAGE_SIZE",
    "MULTI_LABEL_SOURCES",
    "SOURCES",
    "prepare_caltech101",
    "prepare_cifar_fs",
    "prepare_cub",
    "prepare_folder",
    "prepare_mini_imagenet",
    "prepare_multilabel",
    "prepare_tiered_imagenet",
]

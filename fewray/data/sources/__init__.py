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

Detection catalogs (the original image files with their boxes, labels and crowd/difficult flags; ``catalog.json``
``task: "detection"``, a base/novel ``class_splits``) come from the same COCO / Roboflow / VOC releases:
:data:`DETECTION_SOURCES` (:func:`fewray.data.detection.prepare.prepare_detection`); ``prepare_data.py detection``
makes them (``--split-file configs/detection/coco_split.yaml``: TFA's few-shot COCO protocol). Their images are
stored as they are, so :data:`DEFAULT_IMAGE_SIZE` has no entry for them (the detection batch builder resizes at
training time: short side ``min_size``, long side at most ``max_size``).

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


def prepare_detection(*args, **kwargs):
    """Make a detection catalog: :func:`fewray.data.detection.prepare.prepare_detection` (same arguments), imported
    when called, since the detection package reads this package's release layouts (a top-level import would be
    circular).

    Example::

        >>> DETECTION_SOURCES["detection"] is prepare_detection
        True
        >>> prepare_detection("../shared/data/no_such_release", "data/x")
        Traceback (most recent call last):
        fewray.core.errors.DataError: detection source directory not found: ../shared/data/no_such_release
    """
    from fewray.data.detection.prepare import prepare_detection as prepare

    return prepare(*args, **kwargs)


#: detection sources: name -> ``prepare(source, out, split_file=None, format="auto", class_splits=None,
#: progress=None) -> catalog info`` (original images, not resized)
DETECTION_SOURCES = {
    "detection": prepare_detection,
}

#: default output side per source (not for detection: its catalogs keep the original images) (natural images 84, CIFAR-FS its native 32, multi-label 224: ImageNet backbones)
DEFAULT_IMAGE_SIZE = {"mini_imagenet": 84, "tiered_imagenet": 84, "cub": 84, "cifar_fs": 32, "folder": 84,
                      "caltech101": 84, "multilabel": 224}

__all__ = [
    "DEFAULT_IMAGE_SIZE",
    "DETECTION_SOURCES",
    "MULTI_LABEL_SOURCES",
    "SOURCES",
    "prepare_caltech101",
    "prepare_cifar_fs",
    "prepare_cub",
    "prepare_detection",
    "prepare_folder",
    "prepare_mini_imagenet",
    "prepare_multilabel",
    "prepare_tiered_imagenet",
]

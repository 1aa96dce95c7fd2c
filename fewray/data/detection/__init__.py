"""Few-shot object detection data: class splits, COCO / VOC datasets with K-shot sampling, a Parquet catalog, and
the batch builder of training steps (mmfewshot's detection datasets on TFA's protocol).

=================================  ==========================================================================
module                             what it holds
=================================  ==========================================================================
:mod:`.splits`                     ``COCO_SPLIT`` (TFA's 60 base / 20 novel), ``VOC_SPLIT`` (3 splits),
                                   ``resolve_classes``
:mod:`.records`                    one image = a plain dict (boxes ``(M, 4)`` x1, y1, x2, y2 pixels, labels,
                                   ignore, ann_ids, areas); ``select_classes``
:mod:`.coco`                       ``FewShotCocoDataset`` (COCO JSON: official, coco128, Roboflow)
:mod:`.voc`                        ``FewShotVOCDataset`` (VOCdevkit layout)
:mod:`.shots`                      ``sample_shots`` (TFA's K-shot protocol, nested over K), ``apply_shots``,
                                   TFA's shot files
:mod:`.catalog`                    the detection catalog (Parquet: original image bytes + boxes)
:mod:`.prepare`                    ``prepare_detection``: a release -> a catalog (``prepare_data.py detection``)
:mod:`.builder`                    ``DetectionBatchBuilder``: one training step's batch from ``(seed, step)``
=================================  ==========================================================================

Example::

    >>> from fewray.data.detection import FewShotVOCDataset
    >>> splits = {"ALL_CLASSES": ["RBC", "WBC", "Platelets"], "BASE_CLASSES": ["RBC", "WBC"],
    ...           "NOVEL_CLASSES": ["Platelets"]}
    >>> ds = FewShotVOCDataset("../shared/data/bccd/BCCD", "test", "ALL_CLASSES", splits, num_novel_shots=5)
    >>> int(ds.num_boxes()[2])
    5
"""

from fewray.data.detection.builder import DetectionBatchBuilder, resize_for_detection
from fewray.data.detection.catalog import check_detection_catalog, read_detection_split, write_detection_catalog
from fewray.data.detection.coco import FewShotCocoDataset, load_coco_records
from fewray.data.detection.prepare import prepare_detection
from fewray.data.detection.records import make_record, select_classes
from fewray.data.detection.shots import apply_shots, read_tfa_coco_shots, read_tfa_voc_shots, sample_shots
from fewray.data.detection.splits import COCO_SPLIT, VOC_SPLIT, resolve_classes
from fewray.data.detection.voc import FewShotVOCDataset, load_voc_records

__all__ = [
    "COCO_SPLIT",
    "DetectionBatchBuilder",
    "FewShotCocoDataset",
    "FewShotVOCDataset",
    "VOC_SPLIT",
    "apply_shots",
    "check_detection_catalog",
    "load_coco_records",
    "load_voc_records",
    "make_record",
    "prepare_detection",
    "read_detection_split",
    "read_tfa_coco_shots",
    "read_tfa_voc_shots",
    "resize_for_detection",
    "sample_shots",
    "select_classes",
    "write_detection_catalog",
]

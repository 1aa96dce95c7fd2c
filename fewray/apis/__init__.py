"""fewray's inference APIs, mmfewshot's names: ``fewray.apis`` as ``mmfewshot.classification.apis`` and detection's
``init_detector`` / ``inference_detector`` / ``show_result`` as ``mmfewshot.detection.apis``. The top layer: it may import every other one, and none
imports it.

Example::

    >>> from fewray.apis import init_classifier, inference_classifier, process_support_images
    >>> callable(init_classifier) and callable(inference_classifier) and callable(process_support_images)
    True
"""

from fewray.apis.classification import (SupportSetError, inference_classifier, init_classifier, load_image,
                                        process_support_images, show_result_pyplot)
from fewray.apis.detection import inference_detector, init_detector, show_result

__all__ = ["SupportSetError", "inference_classifier", "inference_detector", "init_detector", "show_result", "init_classifier", "load_image", "process_support_images",
           "show_result_pyplot"]

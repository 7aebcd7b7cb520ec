"""Offline datasets. Nothing here downloads.

* ``images`` — Fashion-MNIST from Debian, scikit-learn's digits (the ``train`` extra), ImageFolder trees;
* ``sequences`` — the registry of named sequence datasets and :func:`build_sequence_datasets`, built from:
  ``sequence_base`` (the item format, :class:`SeqInfo`, :func:`pad_collate`, the dataset classes), ``ts_format``
  (UCR/UEA ``.ts`` files), ``sequential_images`` (sequential Fashion-MNIST), ``listops`` (ListOps generated with
  the LRA grammar), ``lra`` (the Long Range Arena release files) and ``events`` (event-camera streams: format,
  augment, readers, simulate, datasets);
* ``coco`` — COCO-format detection folders.
"""

from .events import build_event_datasets
from .images import (
    DATASETS,
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_DIR,
    DataInfo,
    DatasetMissing,
    TensorImageDataset,
    UnreadableImage,
    balanced_subset,
    build_datasets,
    load_digits,
    load_fashion_mnist,
    stratified_split,
)
from .sequences import (
    SEQUENCE_DATASETS,
    SEQUENCE_REGISTRY,
    SeqInfo,
    build_sequence_datasets,
    is_sequence_data,
    pad_collate,
)

__all__ = [
    "DATASETS", "FASHION_MNIST_CLASSES", "FASHION_MNIST_DIR", "DataInfo", "DatasetMissing", "SEQUENCE_DATASETS",
    "SEQUENCE_REGISTRY", "SeqInfo", "TensorImageDataset", "UnreadableImage", "balanced_subset", "build_datasets",
    "build_event_datasets", "build_sequence_datasets", "is_sequence_data", "load_digits", "load_fashion_mnist",
    "pad_collate", "stratified_split",
]

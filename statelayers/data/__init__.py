"""Offline datasets, each in its own module: ``images`` (Fashion-MNIST from Debian, scikit-learn's digits,
ImageFolder trees), ``sequences`` (the named sequence datasets and the collate that pads them), ``events``
(event-camera streams), ``coco`` (COCO-format detection folders). Nothing here downloads."""

from .images import (
    DATASETS,
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_DIR,
    DataInfo,
    DatasetMissing,
    TensorImageDataset,
    balanced_subset,
    build_datasets,
    load_digits,
    load_fashion_mnist,
    stratified_split,
)
from .sequences import SEQUENCE_DATASETS, SeqInfo, build_sequence_datasets, is_sequence_data, pad_collate

__all__ = [
    "DATASETS", "FASHION_MNIST_CLASSES", "FASHION_MNIST_DIR", "DataInfo", "DatasetMissing", "SEQUENCE_DATASETS",
    "SeqInfo", "TensorImageDataset", "balanced_subset", "build_datasets", "build_sequence_datasets",
    "is_sequence_data", "load_digits", "load_fashion_mnist", "pad_collate", "stratified_split",
]

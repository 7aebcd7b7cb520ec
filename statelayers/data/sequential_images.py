"""Sequential Fashion-MNIST: each 28×28 image read pixel by pixel in row-major order, a dense sequence of shape
(784, 1) normalised with the training-set pixel mean/std (Debian's ``dataset-fashion-mnist``, read by
:mod:`statelayers.data.images`)."""

from __future__ import annotations

from .images import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    fashion_mnist_root,
    load_fashion_mnist_cached,
)
from .sequence_base import PixelSequenceDataset, SeqInfo, SequenceSets, apply_subset

__all__ = ["build_sequential_fashion_mnist"]


def build_sequential_fashion_mnist(subset: int | None, seed: int, max_len: int | None) -> SequenceSets:
    """(train, eval, info) of sequential Fashion-MNIST, 60,000 / 10,000 sequences (see the module docstring);
    ``subset``, ``seed`` and ``max_len`` as in :func:`statelayers.data.sequences.build_sequence_datasets`."""
    xtr, ytr, xte, yte = load_fashion_mnist_cached(fashion_mnist_root())
    classes = list(FASHION_MNIST_CLASSES)
    mean, std = FASHION_MNIST_MEAN[0], FASHION_MNIST_STD[0]
    train = PixelSequenceDataset(xtr, ytr, classes, mean=mean, std=std, max_len=max_len)
    evals = PixelSequenceDataset(xte, yte, classes, mean=mean, std=std, max_len=max_len)
    train = apply_subset(train, subset, seed, len(classes))
    length = xtr.shape[1] * xtr.shape[2]
    info = SeqInfo(
        name="sfmnist", num_classes=len(classes), input_kind="dense", in_chans=1,
        max_len=min(length, max_len or length), classes=classes, train_size=len(train), eval_size=len(evals),
        note=(f"sequential Fashion-MNIST (Debian dataset-fashion-mnist, {fashion_mnist_root()}): 28x28 images read "
              f"pixel by pixel in row-major order, 784 x 1, normalised with the training-set pixel mean "
              f"{mean:.4f} / std {std:.4f}" + (f"; first {max_len} pixels kept" if max_len else "")),
    )
    return train, evals, info

"""Offline image datasets: Fashion-MNIST from Debian's `dataset-fashion-mnist`, and scikit-learn's
digits, which is always installed with the test extras. Nothing here downloads anything."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import torch

__all__ = ["FASHION_MNIST_DIR", "load_fashion_mnist", "load_digits", "DatasetMissing"]

FASHION_MNIST_DIR = Path(os.environ.get("STATELAYERS_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)


class DatasetMissing(FileNotFoundError):
    """A dataset is not on this machine; the message says how to install it."""


def _read_idx(path: Path) -> torch.Tensor:
    """Read a gzip IDX file (big-endian header, then uint8 data) into a uint8 tensor."""
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise ValueError(f"{path} is not a readable gzip IDX file: {e}") from e
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    expected = 4 + 4 * ndim
    n = 1
    for s in shape:
        n *= s
    if len(data) != expected + n:
        raise ValueError(f"{path} is truncated or corrupt: header says {shape}, {len(data) - expected} bytes of data")
    return torch.frombuffer(bytearray(data[expected:]), dtype=torch.uint8).reshape(shape)


def load_fashion_mnist(root: str | Path | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train images (60000, 28, 28) uint8, train labels, test images (10000, 28, 28), test labels)."""
    root = Path(root) if root is not None else FASHION_MNIST_DIR
    names = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
             "t10k-labels-idx1-ubyte.gz")
    missing = [n for n in names if not (root / n).is_file()]
    if missing:
        raise DatasetMissing(
            f"Fashion-MNIST not found in {root} (missing {', '.join(missing)}). Install it with "
            "`sudo apt-get update && sudo apt-get install -y dataset-fashion-mnist`, or point "
            "STATELAYERS_FASHION_MNIST at a folder holding the four IDX .gz files."
        )
    xtr, ytr, xte, yte = (_read_idx(root / n) for n in names)
    return xtr, ytr.long(), xte, yte.long()


def load_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1,797 8×8 digits as (images (1797, 8, 8) uint8 in 0..255, labels)."""
    try:
        from sklearn.datasets import load_digits as _load
    except ImportError as e:
        raise DatasetMissing("the digits dataset needs scikit-learn: `pip install scikit-learn`") from e
    d = _load()
    x = torch.from_numpy(d.images).float().mul(255.0 / 16.0).round().clamp(0, 255).to(torch.uint8)
    return x, torch.from_numpy(d.target).long()

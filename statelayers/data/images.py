"""Offline image datasets for the training engine. Nothing here downloads anything.

Built-in sets (see :data:`DATASETS`):

* ``"digits"`` — scikit-learn's 1,797 8×8 gray digits (scikit-learn comes with the ``train`` extra). There is no
  official split, so :func:`build_datasets` makes one fixed stratified 80/20 train/eval split (per class, a
  ``torch.Generator`` permutation seeded with :data:`DIGITS_SPLIT_SEED`; ``round(0.2 * n_class)`` images go to
  eval: 1,438 / 359 images). It does not depend on the run's ``seed``, so runs with different seeds are scored
  on the same images and evaluating a checkpoint never sees its training images. Mean/std are computed from
  that training split when the datasets are built (cheap: 1,438 8×8 images).
* ``"fashion_mnist"`` (or ``"fashion-mnist"``) — the 60k/10k 28×28 gray IDX files from Debian's
  ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``, or the folder in ``STATELAYERS_FASHION_MNIST``).

Anything else is a path to an ImageFolder tree in the ImageNet layout: ``PATH/train/<class>/*.jpg`` and
``PATH/val/<class>/*`` (or ``PATH/validation/<class>/*``), read with torchvision's ``ImageFolder`` and transformed
with timm's ``create_transform``. Up to :data:`IMAGEFOLDER_SAMPLE` training images, spread evenly over the
class-sorted file list (the same ones for every seed and subset), decide what the data looks like:

* channels: 1 (images read as ``"L"``) when every sampled image is grayscale (PIL mode ``1``, ``L`` or ``LA``), else
  3 (read as ``"RGB"``); an explicit ``in_chans`` (1 or 3) wins;
* size, when ``img_size`` is not given: the median shorter side of the sampled images (``S`` for a tree of S×S
  images), which are then used whole (``crop_pct`` 1.0 unless given: resize the shorter side to the size, centre
  crop) rather than upscaled to 224;
* normalisation (``norm``): ``"imagenet"`` (the default) or a given ``(mean, std)`` pair is used when it has one
  value per channel (3-channel data); otherwise, and with ``norm="data"``, the per-channel mean and population std of
  the pixel values in [0, 1] of the sampled images, decoded as the model gets them (before any resize). The engine
  passes the model's own timm default mean/std (ImageNet's for the ResNets, DeiT, Swin, PVTv2) and ``"data"`` for
  small-image models (the CIFAR-style ResNets) and grayscale data: see ``statelayers.engine.tasks.image``.

An image file that cannot be decoded raises :class:`UnreadableImage` (a ``ValueError``) naming the file.

The tensor sets return ``(float32 tensor (1, H, W) normalised with the training mean/std, int label)``
(``(3, H, W)``, the gray channel repeated, with ``in_chans=3``).
Their augmentations (``hflip``, ``crop_pad``) run on tensors in [0, 1] after any resize and before
normalisation, so ``crop_pad`` pads with black (the background of both sets) at the size fed to the model.
ImageFolder's ``crop_pad`` pads the resized, cropped image with black before the flip.
"""

from __future__ import annotations

import functools
import gzip
import math
import numbers
import os
import statistics
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Subset

from .._extras import require

__all__ = [
    "DATASETS",
    "FASHION_MNIST_DIR",
    "DataInfo",
    "DatasetMissing",
    "IMAGEFOLDER_SAMPLE",
    "TensorImageDataset",
    "UnreadableImage",
    "build_datasets",
    "check_train_aug",
    "fashion_mnist_root",
    "load_digits",
    "load_fashion_mnist",
    "load_fashion_mnist_cached",
]

FASHION_MNIST_DIR = Path(os.environ.get("STATELAYERS_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
# Per-pixel mean and (population) std of the 60,000 Fashion-MNIST training images scaled to [0, 1], computed
# once in float64 with `x = load_fashion_mnist()[0].double() / 255; x.mean(), x.std(unbiased=False)`.
FASHION_MNIST_MEAN = (0.28604060,)
FASHION_MNIST_STD = (0.35302424,)
DIGITS_CLASSES = tuple(str(i) for i in range(10))
DIGITS_EVAL_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0  # fixed: the split is the same for every run seed
IMAGEFOLDER_SAMPLE = 512  # training images an ImageFolder tree is probed with (channels, size, statistics)
_GRAY_MODES = frozenset({"1", "L", "LA"})  # PIL modes read as one channel

DATASETS: dict[str, str] = {
    "digits": "scikit-learn digits: 1,797 8x8 gray images, 10 classes, fixed stratified 80/20 split",
    "fashion_mnist": "Fashion-MNIST: 60,000 train / 10,000 test 28x28 gray images, 10 classes "
                     "(apt-get install -y dataset-fashion-mnist)",
}
_ALIASES = {"digits": "digits", "fashion_mnist": "fashion_mnist", "fashion-mnist": "fashion_mnist"}
_ACCEPTED = ("'digits', 'fashion_mnist' (or 'fashion-mnist'), or a path to an ImageFolder tree "
             "(PATH/train/<class>/<image> and PATH/val/<class>/<image>, or PATH/validation/...)")

# train_aug keys by dataset kind. Absent keys mean "that augmentation is off".
_TENSOR_AUG_KEYS = frozenset({"hflip", "crop_pad"})
_FOLDER_AUG_KEYS = frozenset({"hflip", "crop_pad", "scale", "ratio", "auto_augment", "re_prob", "interpolation",
                              "crop_pct", "color_jitter"})
_INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "box", "hamming", "lanczos", "random")


class DatasetMissing(FileNotFoundError):
    """A dataset is not on this machine; the message says how to install it."""


class UnreadableImage(ValueError):
    """An image file of a dataset cannot be decoded. The message (one line) names the file and says to remove or
    replace it.

    A DataLoader worker that raises it is re-raised in the main process by torch as ``UnreadableImage("Caught
    UnreadableImage in DataLoader worker process N.\nOriginal Traceback ...")``; the constructor keeps only the
    original one-line message of such a text, so that the error reads the same with and without workers."""

    def __init__(self, message: str = ""):
        text = str(message)
        if text.startswith("Caught ") and "\nOriginal Traceback" in text:
            last = text.rstrip().splitlines()[-1]
            marker = f"{type(self).__name__}: "
            text = last.split(marker, 1)[1] if marker in last else last
        super().__init__(text)


@dataclass
class DataInfo:
    """What the engine needs to know about a dataset to build a model and report on it."""

    name: str  # "digits" | "fashion_mnist" | "imagefolder"
    num_classes: int
    in_chans: int
    img_size: int  # side length of the square images fed to the model
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: list[str]
    train_size: int  # after `subset`
    eval_size: int


# ----------------------------------------------------------------------------------------------- raw readers


def _read_idx(path: Path) -> torch.Tensor:
    """Read a gzip IDX file (big-endian header, then uint8 data) into a uint8 tensor."""
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise ValueError(f"{path} is not a readable gzip IDX file: {e}") from e
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    ndim = data[3]
    expected = 4 + 4 * ndim
    if ndim == 0 or len(data) < expected:
        raise ValueError(f"{path} is truncated or corrupt: {len(data)} bytes cannot hold a {ndim}-d IDX header")
    shape = struct.unpack(f">{ndim}I", data[4:expected])
    n = 1
    for s in shape:
        n *= s
    if len(data) != expected + n:
        raise ValueError(f"{path} is truncated or corrupt: header says {shape}, {len(data) - expected} bytes of data")
    return torch.frombuffer(bytearray(data[expected:]), dtype=torch.uint8).reshape(shape)


_FASHION_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                  "t10k-labels-idx1-ubyte.gz")


def fashion_mnist_root(root: str | Path | None = None) -> Path:
    """The folder of the Fashion-MNIST IDX files: ``root`` if given, else ``$STATELAYERS_FASHION_MNIST`` (read at
    call time), else :data:`FASHION_MNIST_DIR`."""
    if root is not None:
        return Path(root)
    env = os.environ.get("STATELAYERS_FASHION_MNIST")
    return Path(env) if env else FASHION_MNIST_DIR


def load_fashion_mnist(root: str | Path | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train images (60000, 28, 28) uint8, train labels, test images (10000, 28, 28), test labels).

    ``root`` defaults to ``$STATELAYERS_FASHION_MNIST`` (read at call time) or :data:`FASHION_MNIST_DIR`.
    Raises :class:`DatasetMissing` if a file is absent and ``ValueError`` if one is truncated or inconsistent.
    """
    root = fashion_mnist_root(root)
    missing = [n for n in _FASHION_FILES if not (root / n).is_file()]
    if missing:
        raise DatasetMissing(
            f"Fashion-MNIST not found in {root} (missing {', '.join(missing)}). Install it with "
            "`sudo apt-get update && sudo apt-get install -y dataset-fashion-mnist`, or point "
            "STATELAYERS_FASHION_MNIST at a folder holding the four IDX .gz files."
        )
    xtr, ytr, xte, yte = (_read_idx(root / n) for n in _FASHION_FILES)
    for split, x, y in (("train", xtr, ytr), ("t10k", xte, yte)):
        if x.ndim != 3 or y.ndim != 1 or x.shape[0] != y.shape[0] or x.shape[1] != x.shape[2]:
            raise ValueError(f"{root}: {split} images {tuple(x.shape)} and labels {tuple(y.shape)} do not match "
                             "(expected (N, 28, 28) and (N,))")
        if y.numel() and int(y.max()) >= len(FASHION_MNIST_CLASSES):
            raise ValueError(f"{root}: {split} labels go up to {int(y.max())}, expected 0..9")
    return xtr, ytr.long(), xte, yte.long()


@lru_cache(maxsize=2)
def _fashion_cached(root: str, _stamp: tuple) -> tuple[torch.Tensor, ...]:
    return load_fashion_mnist(root)


def load_fashion_mnist_cached(root: Path) -> tuple[torch.Tensor, ...]:
    """:func:`load_fashion_mnist` of the folder ``root`` (see :func:`fashion_mnist_root`), read once per process
    and kept while the files are unchanged (size and mtime): the image, sequence and event sets all read it."""
    try:
        stamp = tuple((s.st_size, s.st_mtime_ns) for s in ((root / n).stat() for n in _FASHION_FILES))
    except OSError:
        return load_fashion_mnist(root)  # raises DatasetMissing with the install command
    return _fashion_cached(str(root), stamp)


def load_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1,797 8×8 digits as (images (1797, 8, 8) uint8 in 0..255, labels).

    Raises :class:`statelayers._extras.MissingDependency` (naming the extra that installs scikit-learn) when
    scikit-learn is not installed."""
    d = require("sklearn.datasets", "the digits dataset").load_digits()
    x = torch.from_numpy(d.images).float().mul(255.0 / 16.0).round().clamp(0, 255).to(torch.uint8)
    return x, torch.from_numpy(d.target).long()


# ----------------------------------------------------------------------------------------------- splits


def _generator(seed: int, salt: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + salt)


def stratified_split(labels: torch.Tensor, eval_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, eval indices), both sorted: per class a seeded permutation, the first
    ``round(eval_fraction * n_class)`` go to eval."""
    g = _generator(seed, 1)
    train, held = [], []
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(idx.numel(), generator=g)]
        k = int(round(eval_fraction * idx.numel()))
        held.append(idx[:k])
        train.append(idx[k:])
    return torch.cat(train).sort().values, torch.cat(held).sort().values


def balanced_subset(labels: torch.Tensor, k: int, seed: int, num_classes: int | None = None) -> torch.Tensor:
    """Sorted indices of a class-balanced ``k``-element subset: ``k // C`` per class, and one more for
    ``k % C`` classes picked at random; within a class the images are picked at random (seeded)."""
    labels = torch.as_tensor(labels).long()
    num_classes = int(num_classes if num_classes is not None else int(labels.max()) + 1)
    if not 1 <= k <= labels.numel():
        raise ValueError(f"subset={k} must be between 1 and the training-set size {labels.numel()}")
    g = _generator(seed, 2)
    per_class = torch.full((num_classes,), k // num_classes, dtype=torch.long)
    per_class[torch.randperm(num_classes, generator=g)[: k % num_classes]] += 1
    out = []
    for c in range(num_classes):
        idx = torch.nonzero(labels == c).flatten()
        need = int(per_class[c])
        if idx.numel() < need:
            raise ValueError(f"subset={k} needs {need} images of class {c}, the training split has {idx.numel()}")
        out.append(idx[torch.randperm(idx.numel(), generator=g)[:need]])
    return torch.cat(out).sort().values


# ----------------------------------------------------------------------------------------------- tensor sets


class TensorImageDataset(Dataset):
    """In-memory uint8 gray images → ``(float32 (1, S, S) normalised, int label)``.

    Per sample: scale to [0, 1], resize to ``img_size`` (bilinear) if it differs from the stored size, apply
    ``transform`` (a tensor → tensor callable, e.g. random crop / flip), then normalise with ``mean``/``std``
    (one value, or one per channel); ``channels=3`` repeats the gray channel (for 3-channel models).
    ``indices`` are the positions of these images in the source set (for checking splits).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, *, mean: tuple[float, ...],
                 std: tuple[float, ...], img_size: int, classes: list[str],
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 indices: torch.Tensor | None = None, channels: int = 1):
        if images.dtype != torch.uint8 or images.ndim != 3:
            raise ValueError(f"expected uint8 images (N, H, W), got {images.dtype} {tuple(images.shape)}")
        self.images = images
        self.targets = labels.long()
        self.classes = list(classes)
        self.img_size = int(img_size)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self.transform = transform
        self.indices = indices if indices is not None else torch.arange(images.shape[0])
        self.channels = int(channels)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x = self.images[i].to(torch.float32).div_(255.0).unsqueeze(0)
        if x.shape[-1] != self.img_size or x.shape[-2] != self.img_size:
            down = self.img_size < max(x.shape[-2:])
            x = F.interpolate(x[None], size=(self.img_size, self.img_size), mode="bilinear", align_corners=False,
                              antialias=down)[0]
        if self.transform is not None:
            x = self.transform(x)
        if self.channels != 1:
            x = x.expand(self.channels, -1, -1)
        return (x - self.mean) / self.std, int(self.targets[i])


def _tensor_transform(aug: dict[str, Any], img_size: int):
    hflip = float(aug.get("hflip", 0.0))
    crop_pad = int(aug.get("crop_pad", 0))
    if hflip == 0 and crop_pad == 0:
        return None
    from torchvision.transforms import v2

    tfs = []
    if crop_pad:
        tfs.append(v2.RandomCrop(img_size, padding=crop_pad, fill=0))
    if hflip:
        tfs.append(v2.RandomHorizontalFlip(p=hflip))
    return v2.Compose(tfs)


# ----------------------------------------------------------------------------------------------- train_aug check


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _aug_error(key: str, value: Any, rule: str) -> ValueError:
    return ValueError(f"train_aug {key}={value!r} is invalid: {rule}")


def _probability(key: str, v: Any) -> float:
    if not _is_number(v) or not 0.0 <= float(v) <= 1.0:  # NaN fails the comparison
        raise _aug_error(key, v, "it must be a probability in [0, 1]")
    return float(v)


def _pair(key: str, v: Any, rule: str, low: float, high: float) -> tuple[float, float]:
    if not isinstance(v, (list, tuple)) or len(v) != 2 or not all(_is_number(x) for x in v):
        raise _aug_error(key, v, f"it must be a pair [min, max] with {rule}")
    lo, hi = float(v[0]), float(v[1])
    if not (low < lo <= hi <= high):
        raise _aug_error(key, v, f"it must be a pair [min, max] with {rule}")
    return lo, hi


def _check_auto_augment(v: Any) -> str:
    rule = ("it must be a timm AutoAugment / RandAugment / AugMix string such as 'rand-m9-mstd0.5-inc1', "
            "'original' or 'augmix-m5-w4-d2'")
    if not isinstance(v, str) or not v:
        raise _aug_error("auto_augment", v, rule)
    from timm.data.auto_augment import augment_and_mix_transform, auto_augment_transform, rand_augment_transform

    build = (rand_augment_transform if v.startswith("rand") else augment_and_mix_transform if v.startswith("augmix")
             else auto_augment_transform)
    try:
        build(v, dict(translate_const=100, img_mean=(128, 128, 128)))
    except Exception as e:  # timm asserts, or fails to parse a number of the string
        raise _aug_error("auto_augment", v, f"{rule} ({type(e).__name__}: {e})".replace("\n", " ")) from e
    return v


def _check_aug_value(key: str, v: Any) -> Any:
    """The value of train_aug ``key`` in the form the transforms take; ValueError naming the key otherwise."""
    if key in ("hflip", "re_prob"):
        return _probability(key, v)
    if key == "crop_pad":
        if not isinstance(v, numbers.Integral) or isinstance(v, bool) or v < 0:
            raise _aug_error(key, v, "it must be a whole number of pixels >= 0 (0: no padded crop)")
        return int(v)
    if key == "scale":
        return _pair(key, v, "0 < min <= max <= 1 (fractions of the image area), e.g. [0.08, 1.0]", 0.0, 1.0)
    if key == "ratio":
        return _pair(key, v, "0 < min <= max (aspect ratios), e.g. [0.75, 1.333]", 0.0, math.inf)
    if key == "crop_pct":
        if not _is_number(v) or not 0.0 < float(v) <= 1.0:
            raise _aug_error(key, v, "it must be a fraction in (0, 1] (the centre crop's share of the resized side)")
        return float(v)
    if key == "interpolation":
        if v not in _INTERPOLATIONS:
            raise _aug_error(key, v, f"it must be one of {', '.join(_INTERPOLATIONS)}")
        return v
    if key == "color_jitter":
        ok = (_is_number(v) and 0.0 <= float(v) < math.inf) or (
            isinstance(v, (list, tuple)) and len(v) in (3, 4) and all(_is_number(x) and 0.0 <= float(x) < math.inf
                                                                   for x in v))
        if not ok:
            raise _aug_error(key, v, "it must be a strength >= 0 or a list of 3 or 4 (brightness, contrast, "
                                     "saturation[, hue]) strengths >= 0")
        return float(v) if _is_number(v) else tuple(float(x) for x in v)
    if key == "auto_augment":
        return _check_auto_augment(v)
    return v


def _data_kind(which: str | Path) -> tuple[str, frozenset]:
    return ("ImageFolder", _FOLDER_AUG_KEYS) if isinstance(which, Path) else (which, _TENSOR_AUG_KEYS)


def check_train_aug(data: str | os.PathLike, train_aug: dict | None, *, for_this_data: bool = True) -> dict:
    """``train_aug`` checked for ``data`` (a dataset name or an ImageFolder path; nothing is read): every key must
    apply to that kind of data and have a value of the right type and range (see :func:`build_datasets`). Keys set
    to None are dropped (off / the default). Returns the dict in the form the transforms take; raises a one-line
    ``ValueError`` naming the key and value otherwise. ``for_this_data=False`` refuses only keys that apply to no
    image data (a recipe's keys for another kind of data are refused when the datasets are built)."""
    if train_aug is None:
        return {}
    if not isinstance(train_aug, dict):
        raise ValueError(f"train_aug must be a dict of augmentation settings, got {type(train_aug).__name__}")
    kind, allowed = _data_kind(_resolve(data))
    aug = {k: v for k, v in train_aug.items() if v is not None}
    bad = sorted(str(k) for k in set(aug) - (allowed if for_this_data else _TENSOR_AUG_KEYS | _FOLDER_AUG_KEYS))
    if bad:
        raise ValueError(f"train_aug keys {bad} do not apply to {kind} data; it accepts {sorted(allowed)}")
    return {k: _check_aug_value(k, v) for k, v in aug.items()}


def _tensor_sets(name: str, xtr, ytr, xev, yev, *, classes, mean, std, img_size, aug, subset, seed, itr, iev,
                 in_chans):
    native = xtr.shape[-1]
    img_size = native if img_size is None else int(img_size)
    if img_size < 1:
        raise ValueError(f"img_size={img_size} must be positive")
    channels = 1 if in_chans is None else in_chans
    mean, std = tuple(mean) * channels, tuple(std) * channels
    if subset is not None:
        keep = balanced_subset(ytr, int(subset), seed, len(classes))
        xtr, ytr, itr = xtr[keep], ytr[keep], itr[keep]
    common = dict(mean=mean, std=std, img_size=img_size, classes=classes, channels=channels)
    train = TensorImageDataset(xtr, ytr, transform=_tensor_transform(aug, img_size), indices=itr, **common)
    evals = TensorImageDataset(xev, yev, indices=iev, **common)
    info = DataInfo(name=name, num_classes=len(classes), in_chans=channels, img_size=img_size, mean=mean,
                    std=std, classes=list(classes), train_size=len(train), eval_size=len(evals))
    return train, evals, info


def _pixel_stats(images: torch.Tensor) -> tuple[tuple[float], tuple[float]]:
    x = images.to(torch.float64) / 255.0
    return (float(x.mean()),), (float(x.std(unbiased=False)),)


# ----------------------------------------------------------------------------------------------- ImageFolder


def _unreadable(path: str, e: BaseException) -> UnreadableImage:
    from PIL import UnidentifiedImageError

    why = "not an image format PIL can decode" if isinstance(e, UnidentifiedImageError) else \
        (f"{type(e).__name__}: {e}".splitlines() or [type(e).__name__])[0]
    return UnreadableImage(f"cannot read image {path} ({why}); remove or replace the file")


def _read_image(path: str, mode: str):
    """The image at ``path`` decoded and converted to PIL ``mode`` ("L" or "RGB"); :class:`UnreadableImage`
    naming the file if it cannot be (the ImageFolder loader; a module function, so workers can pickle it)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.convert(mode)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise _unreadable(path, e) from e


def _peek(path: str) -> tuple[str, tuple[int, int]]:
    """(PIL mode, (width, height)) from the file's header."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.mode, img.size
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise _unreadable(path, e) from e


def _spread(items: list, k: int) -> list:
    """At most ``k`` of ``items``, evenly spaced (all of them when there are at most ``k``)."""
    n = len(items)
    return list(items) if n <= k else [items[i * n // k] for i in range(k)]


def _folder_stats(paths: list[str], mode: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and population std of the pixel values in [0, 1] of the images ``paths`` decoded in
    ``mode``, over all their pixels (float64). A channel without spread gets std 1."""
    import numpy as np

    channels = 1 if mode == "L" else 3
    total, squares, count = np.zeros(channels), np.zeros(channels), 0
    for path in paths:
        x = np.asarray(_read_image(path, mode), dtype=np.float64).reshape(-1, channels) / 255.0
        total += x.sum(axis=0)
        squares += np.square(x).sum(axis=0)
        count += x.shape[0]
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
    return tuple(float(m) for m in mean), tuple(float(v) if v > 1e-12 else 1.0 for v in std)


def _norm_stats(norm, in_chans: int, sample: list[str], mode: str):
    if isinstance(norm, str) and norm not in ("imagenet", "data"):
        raise ValueError(f"norm={norm!r} must be 'imagenet', 'data' or a (mean, std) pair")
    if norm == "imagenet":
        from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

        norm = (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)
    if not isinstance(norm, str):
        mean, std = (tuple(float(v) for v in t) for t in norm)
        if len(mean) == len(std) == in_chans:
            return mean, std
    return _folder_stats(sample, mode)


def _imagefolder_sets(root: Path, *, img_size, aug, subset, seed, in_chans, norm):
    expected = (f"an ImageFolder tree at {root}: {root}/train/<class>/<image> and {root}/val/<class>/<image> "
                "(or validation/ instead of val/)")
    if not root.is_dir():
        raise DatasetMissing(f"{root} does not exist; expected {expected}")
    train_dir = root / "train"
    if not train_dir.is_dir():
        raise DatasetMissing(f"{root} has no train/ folder; expected {expected}")
    val_dir = next((root / v for v in ("val", "validation") if (root / v).is_dir()), None)
    if val_dir is None:
        raise DatasetMissing(f"{root} has no val/ or validation/ folder; expected {expected}")

    from timm.data import create_transform
    from timm.data.transforms import RandomResizedCropAndInterpolation
    from torchvision import transforms
    from torchvision.datasets import ImageFolder

    try:
        train = ImageFolder(str(train_dir))
    except FileNotFoundError as e:
        raise DatasetMissing(f"{train_dir}: {e}; expected {expected}") from e
    try:
        evals = ImageFolder(str(val_dir), allow_empty=True)
    except FileNotFoundError as e:
        raise DatasetMissing(f"{val_dir}: {e}; expected {expected}") from e
    unknown = sorted(set(evals.classes) - set(train.classes))
    if unknown:
        raise ValueError(f"{val_dir} has classes that {train_dir} lacks: {unknown}")
    # Label validation images with the training set's class indices (val may lack some classes).
    remap = {evals.class_to_idx[c]: train.class_to_idx[c] for c in evals.classes}
    evals.samples = [(p, remap[t]) for p, t in evals.samples]
    evals.imgs = evals.samples
    evals.targets = [t for _, t in evals.samples]
    evals.classes, evals.class_to_idx = list(train.classes), dict(train.class_to_idx)
    if len(evals) == 0:
        raise DatasetMissing(f"{val_dir} holds no images; expected {expected}")

    # what the data looks like, from a fixed sample of the training files (not the subset: the same every run)
    sample = _spread([p for p, _ in train.samples], IMAGEFOLDER_SAMPLE)
    headers = [_peek(p) for p in sample]
    if in_chans is None:
        in_chans = 1 if all(m in _GRAY_MODES for m, _ in headers) else 3
    mode = "L" if in_chans == 1 else "RGB"
    size_from_data = img_size is None
    size = statistics.median_low(min(wh) for _, wh in headers) if size_from_data else int(img_size)
    if size < 1:
        raise ValueError(f"img_size={size} must be positive")
    mean, std = _norm_stats(norm, in_chans, sample, mode)

    interpolation = aug.get("interpolation", "bilinear")
    crop_pct = aug.get("crop_pct", 1.0 if size_from_data else None)  # data-sized images are used whole
    eval_tf = create_transform(size, is_training=False, crop_pct=crop_pct, mean=mean, std=std,
                               interpolation="bilinear" if interpolation == "random" else interpolation)
    primary, secondary, final = create_transform(
        size, is_training=True, separate=True, mean=mean, std=std, interpolation=interpolation,
        scale=aug.get("scale"), ratio=aug.get("ratio"), hflip=float(aug.get("hflip", 0.0)),
        color_jitter=aug.get("color_jitter"), auto_augment=aug.get("auto_augment"),
        re_prob=float(aug.get("re_prob", 0.0)),
    )
    primary = list(primary.transforms)
    if not isinstance(primary[0], RandomResizedCropAndInterpolation):
        raise RuntimeError(f"unexpected first timm train transform {primary[0]!r}")
    geometry = 1
    if "scale" not in aug and "ratio" not in aug:
        # No random-resized crop asked for: train on the eval geometry (resize + centre crop at crop_pct).
        primary = list(eval_tf.transforms[:2]) + primary[1:]
        geometry = 2
    if aug.get("crop_pad"):  # the CIFAR crop: pad the model-sized image with black, crop back at random
        primary.insert(geometry, transforms.RandomCrop(size, padding=int(aug["crop_pad"]), fill=0))
    train.transform = transforms.Compose(primary + list(secondary.transforms) + list(final.transforms))
    evals.transform = eval_tf
    train.loader = evals.loader = functools.partial(_read_image, mode=mode)

    train_out: Dataset = train
    if subset is not None:
        keep = balanced_subset(torch.tensor(train.targets), int(subset), seed, len(train.classes))
        train_out = Subset(train, keep.tolist())
    info = DataInfo(name="imagefolder", num_classes=len(train.classes), in_chans=in_chans, img_size=size, mean=mean,
                    std=std, classes=list(train.classes), train_size=len(train_out), eval_size=len(evals))
    return train_out, evals, info


# ----------------------------------------------------------------------------------------------- entry point


def _resolve(data: str | os.PathLike) -> str | Path:
    """A built-in dataset name, or a Path for an ImageFolder tree."""
    if isinstance(data, os.PathLike):
        return Path(data).expanduser()
    if not isinstance(data, str):
        raise ValueError(f"data must be a string, got {type(data).__name__}; expected {_ACCEPTED}")
    key = data.strip().lower()
    if key in _ALIASES:
        return _ALIASES[key]
    looks_like_path = os.sep in data or "/" in data or data.startswith((".", "~")) or Path(data).exists()
    if looks_like_path:
        return Path(data).expanduser()
    raise ValueError(f"unknown dataset {data!r}; expected {_ACCEPTED}")


def build_datasets(data: str, *, img_size: int | None = None, train_aug: dict | None = None,
                   subset: int | None = None, seed: int = 0, in_chans: int | None = None,
                   norm: str | tuple = "imagenet") -> tuple[Dataset, Dataset, DataInfo]:
    """(train dataset, eval dataset, info) for ``data``: ``"digits"``, ``"fashion_mnist"``/``"fashion-mnist"``,
    or the path of an ImageFolder tree (``train/`` and ``val/`` or ``validation/``).

    ``img_size``: side fed to the model (default: native 8 / 28; for ImageFolder the median shorter side of a
    sample of the training images); the tensor sets are resized bilinearly. ``in_chans``: 1 or 3 channels (default:
    1 for digits / Fashion-MNIST; for ImageFolder 1 when every sampled image is grayscale, else 3). ``norm``
    (ImageFolder only; digits and Fashion-MNIST always use their training split's statistics): ``"imagenet"``,
    a ``(mean, std)`` pair (used when it has one value per channel), or ``"data"``: the per-channel statistics of
    the sampled training images, which 1-channel data always gets (see the module docstring).
    ``train_aug`` (training split only; every key optional, absent or None = off):

    * digits / Fashion-MNIST: ``hflip`` (probability), ``crop_pad`` (random crop back to ``img_size`` after
      zero-padding by this many pixels).
    * ImageFolder (timm ``create_transform``): ``hflip``; ``crop_pad`` (as above, after the resize / crop);
      ``scale`` / ``ratio`` turn on the random-resized crop
      (``ratio`` defaults to (3/4, 4/3) once ``scale`` is set; without either, training uses the eval resize +
      centre crop); ``auto_augment`` (e.g. ``"rand-m9-mstd0.5-inc1"``); ``color_jitter``; ``re_prob`` (random
      erasing); ``interpolation``; ``crop_pct`` (eval crop, also the un-augmented train crop; default 1.0 when
      the size comes from the data, else timm's 0.875).

    Keys that do not apply to the chosen data, and values of the wrong type or range, raise ``ValueError``
    (:func:`check_train_aug`). ``subset=K`` keeps a class-balanced K-image subset of the training split,
    deterministic in ``seed`` (normalisation statistics stay those of the full training split). The digits
    train/eval split is fixed and does not depend on ``seed``.

    Raises ``ValueError`` for an unknown name, :class:`DatasetMissing` for data not on this machine and
    :class:`UnreadableImage` (a ``ValueError``) for an image file that cannot be decoded.
    """
    aug = check_train_aug(data, train_aug)
    if subset is not None and int(subset) < 1:
        raise ValueError(f"subset={subset} must be a positive number of training images")
    if in_chans is not None and (not isinstance(in_chans, numbers.Integral) or isinstance(in_chans, bool)
                                 or in_chans not in (1, 3)):
        raise ValueError(f"in_chans={in_chans!r}: image data is read with 1 (grayscale) or 3 (RGB) channels")
    which = _resolve(data)
    if isinstance(which, Path):
        return _imagefolder_sets(which, img_size=img_size, aug=aug, subset=subset, seed=seed, in_chans=in_chans,
                                 norm=norm)
    if which == "digits":
        x, y = load_digits()
        itr, iev = stratified_split(y, DIGITS_EVAL_FRACTION, DIGITS_SPLIT_SEED)
        mean, std = _pixel_stats(x[itr])
        return _tensor_sets("digits", x[itr], y[itr], x[iev], y[iev], classes=list(DIGITS_CLASSES), mean=mean,
                            std=std, img_size=img_size, aug=aug, subset=subset, seed=seed, itr=itr, iev=iev,
                            in_chans=in_chans)
    xtr, ytr, xte, yte = load_fashion_mnist_cached(fashion_mnist_root())
    return _tensor_sets("fashion_mnist", xtr, ytr, xte, yte, classes=list(FASHION_MNIST_CLASSES),
                        mean=FASHION_MNIST_MEAN, std=FASHION_MNIST_STD, img_size=img_size, aug=aug, subset=subset,
                        seed=seed, itr=torch.arange(len(ytr)), iev=torch.arange(len(yte)), in_chans=in_chans)

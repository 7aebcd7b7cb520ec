"""What every sequence dataset of :mod:`statelayers.data.sequences` shares: the item format, its collate, the
description the engine reads (:class:`SeqInfo`) and the dataset classes.

Every sequence dataset yields ``(inputs, label)`` where ``inputs`` is a dict of tensors:

* ``"x"``       float32 ``(L, C)``  dense inputs (time series, pixels), or
* ``"tokens"``  int64 ``(L,)``      token ids in ``[0, vocab)`` (ListOps, text, event tokens);
* ``"tau"``     float32 ``(L,)``    optional: integration time step of each token (event data, ms);
* ``"tokens2"`` int64 ``(L2,)``     optional: the second document of a retrieval pair.

:func:`pad_collate` pads a list of such items to the longest sequence in the batch (``x`` with 0, ``tokens`` with
:data:`~statelayers.layers.padding.PAD_TOKEN`, ``tau`` with 0) and adds ``"lengths"`` (and ``"lengths2"``), so
models can mask the padding. The engine moves the dict to the device and calls ``model(**inputs)``.

Datasets expose ``targets`` (int64 labels of their items), ``indices`` (positions in the source split) and
``classes``. The readers of the named datasets (``ts_format``, ``sequential_images``, ``listops``, ``lra``, and
``events``, whose items carry ``tau``) build on this module, so none of them imports another.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset

from ..layers.padding import PAD_TOKEN
from .images import balanced_subset

__all__ = [
    "DenseSequenceDataset",
    "PixelSequenceDataset",
    "SeqInfo",
    "SequenceDataset",
    "SequenceSets",
    "TokenSequenceDataset",
    "apply_subset",
    "check_max_len",
    "pad_collate",
]


@dataclass
class SeqInfo:
    """What the engine needs to know about a sequence dataset to build a model and report on it."""

    name: str
    num_classes: int
    input_kind: str  # "dense" (inputs["x"], `in_chans` channels) or "tokens" (inputs["tokens"], `vocab_size`)
    in_chans: int = 0  # dense: channels C
    vocab_size: int = 0  # tokens: ids are in [0, vocab_size)
    max_len: int = 0  # longest sequence in either split
    classes: list[str] = field(default_factory=list)
    train_size: int = 0
    eval_size: int = 0
    has_tau: bool = False
    retrieval: bool = False  # items carry "tokens2"
    simulated: bool = False  # synthetic data (ListOps grammar, events simulated from images)
    note: str = ""  # provenance, shown in run folders

    def model_kwargs(self) -> dict:
        """Keyword arguments a sequence model needs from the data (besides num_classes)."""
        kw = {"in_chans": self.in_chans} if self.input_kind == "dense" else {"vocab_size": self.vocab_size}
        if self.retrieval:
            kw["retrieval"] = True
        return kw


SequenceSets = tuple[Dataset, Dataset, SeqInfo]  # (train dataset, eval dataset, info): what a builder returns


def _pad(seqs: list[torch.Tensor], value) -> torch.Tensor:
    return torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True, padding_value=value)


def pad_collate(batch: list[tuple[dict, int]]) -> tuple[dict, torch.Tensor]:
    """Pad a list of ``(inputs, label)`` items into one batch (see the module docstring)."""
    if not batch:
        raise ValueError("empty batch")
    keys = set(batch[0][0])
    main = "x" if "x" in keys else "tokens"
    out: dict[str, torch.Tensor] = {}
    out["lengths"] = torch.tensor([len(item[0][main]) for item in batch], dtype=torch.long)
    for key in sorted(keys):
        seqs = [item[0][key] for item in batch]
        if key in ("tokens", "tokens2"):
            out[key] = _pad(seqs, PAD_TOKEN)
        else:
            out[key] = _pad(seqs, 0.0)
    if "tokens2" in keys:
        out["lengths2"] = torch.tensor([len(item[0]["tokens2"]) for item in batch], dtype=torch.long)
    labels = torch.as_tensor([int(item[1]) for item in batch], dtype=torch.long)
    return out, labels


# ----------------------------------------------------------------------------------------------- dataset classes


class SequenceDataset(Dataset):
    """Items are looked up by their position ``j`` in the source split; ``indices`` lists the positions this
    dataset shows (all of them, or a subset)."""

    classes: list[str]
    indices: torch.Tensor
    _labels: torch.Tensor  # labels of every source position

    def __len__(self) -> int:
        return int(self.indices.numel())

    def __getitem__(self, i: int) -> tuple[dict[str, torch.Tensor], int]:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for a dataset of {n} sequences")
        j = int(self.indices[i])
        return self._inputs(j), self._label(j)

    @property
    def targets(self) -> torch.Tensor:
        return self._labels[self.indices]

    def _label(self, j: int) -> int:
        return int(self._labels[j])

    def _inputs(self, j: int) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def select(self, keep) -> SequenceDataset:
        """A view of the items at positions ``keep`` of this dataset (the storage is shared)."""
        new = copy.copy(self)
        new.indices = self.indices[torch.as_tensor(keep, dtype=torch.long)]
        return new


class DenseSequenceDataset(SequenceDataset):
    """Normalised float32 series ``(L_i, C)`` (lengths may differ) → ``{"x": (min(L_i, max_len), C)}``."""

    def __init__(self, series: list[np.ndarray], labels, classes: Sequence[str], max_len: int | None = None):
        if not series:
            raise ValueError("no series")
        if any(s.ndim != 2 for s in series) or len({s.shape[1] for s in series}) != 1:
            raise ValueError(f"series must be (L, C) arrays with one C, got shapes {sorted({s.shape for s in series})}")
        self.series = [np.ascontiguousarray(s, dtype=np.float32) for s in series]
        self._labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        self.classes = list(classes)
        self.max_len = max_len
        self.indices = torch.arange(len(self.series))

    def _inputs(self, j: int) -> dict[str, torch.Tensor]:
        return {"x": torch.from_numpy(self.series[j][: self.max_len].copy())}

    def lengths(self) -> list[int]:
        return [min(self.series[int(j)].shape[0], self.max_len or 1 << 62) for j in self.indices]


class PixelSequenceDataset(SequenceDataset):
    """uint8 images ``(N, H, W)`` → ``{"x": (H·W, 1)}``: pixels in row-major order, scaled to [0, 1] and normalised
    with ``mean``/``std`` (so ``x.reshape(H, W) * std + mean`` is the image / 255)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, classes: Sequence[str], *, mean: float,
                 std: float, max_len: int | None = None):
        if images.dtype != torch.uint8 or images.ndim != 3:
            raise ValueError(f"expected uint8 images (N, H, W), got {images.dtype} {tuple(images.shape)}")
        self.images = images
        self._labels = torch.as_tensor(labels, dtype=torch.long)
        self.classes = list(classes)
        self.mean, self.std = float(mean), float(std)
        self.max_len = max_len
        self.indices = torch.arange(images.shape[0])

    def _inputs(self, j: int) -> dict[str, torch.Tensor]:
        x = self.images[j].reshape(-1, 1)[: self.max_len].to(torch.float32).div_(255.0)
        return {"x": x.sub_(self.mean).div_(self.std)}


class TokenSequenceDataset(SequenceDataset):
    """Token ids stored as bytes (ids < 256, already cut to ``max_len``) → ``{"tokens": int64 (L,)}`` and, for
    document pairs, ``{"tokens2": int64 (L2,)}``."""

    def __init__(self, docs: list[bytes], labels, classes: Sequence[str], docs2: list[bytes] | None = None):
        if docs2 is not None and len(docs2) != len(docs):
            raise ValueError(f"{len(docs)} first documents but {len(docs2)} second documents")
        self.docs, self.docs2 = docs, docs2
        self._labels = torch.as_tensor(np.asarray(labels, dtype=np.int64), dtype=torch.long)
        self.classes = list(classes)
        self.indices = torch.arange(len(docs))

    @staticmethod
    def _ids(doc: bytes) -> torch.Tensor:
        return torch.from_numpy(np.frombuffer(doc, dtype=np.uint8).astype(np.int64))

    def _inputs(self, j: int) -> dict[str, torch.Tensor]:
        out = {"tokens": self._ids(self.docs[j])}
        if self.docs2 is not None:
            out["tokens2"] = self._ids(self.docs2[j])
        return out

    def longest(self) -> int:
        longest = max((len(self.docs[int(j)]) for j in self.indices), default=0)
        if self.docs2 is not None:
            longest = max(longest, max((len(self.docs2[int(j)]) for j in self.indices), default=0))
        return longest


def check_max_len(max_len: int | None) -> int | None:
    """``max_len`` as an int (``None`` stays ``None``: native lengths); ``ValueError`` unless it is positive."""
    if max_len is None:
        return None
    if int(max_len) < 1:
        raise ValueError(f"max_len={max_len} must be a positive number of steps")
    return int(max_len)


def apply_subset(train: SequenceDataset, subset: int | None, seed: int, num_classes: int) -> SequenceDataset:
    """``train`` itself (``subset`` None) or a view of a class-balanced ``subset``-sequence subset of it
    (:func:`statelayers.data.images.balanced_subset`, seeded by ``seed``)."""
    if subset is None:
        return train
    return train.select(balanced_subset(train.targets, int(subset), seed, num_classes))

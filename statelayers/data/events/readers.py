"""Readers of event recordings on disk (nothing downloaded): N-MNIST ``.bin`` files, tonic-style ``.npy`` /
``.npz`` event arrays, IBM DVS128 Gesture in the layout tonic 1.7 writes, and the Spiking Heidelberg Digits HDF5
files (h5py, from the ``seq`` extra). Large sets are returned as :class:`~.format.LazyStreams` that read each
recording when it is indexed."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..._extras import require
from ..images import DatasetMissing
from .format import (
    DVS_GESTURE_SENSOR,
    FIELDS,
    NMNIST_SENSOR,
    SHD_SENSOR,
    LazyStreams,
    check_event_ranges,
    check_sensor,
    make_events,
    require_event_fields,
    sort_by_time,
)

__all__ = [
    "DVS_GESTURE_CLASSES",
    "SHD_CLASSES",
    "EventFiles",
    "SHDStreams",
    "load_events",
    "read_dvs_gesture",
    "read_dvs_gesture_file",
    "read_nmnist_bin",
    "read_shd",
]

DVS_GESTURE_CLASSES = (  # tonic.datasets.DVSGesture.classes; the label is the .npy file name
    "Hand clapping", "Right hand wave", "Left hand wave", "Right arm cw", "Right arm ccw", "Left arm cw",
    "Left arm ccw", "Arm roll", "Air drums", "Air guitar", "Other gestures",
)
SHD_CLASSES = (  # fallback names; read_shd takes them from the file's extra/keys when it has them
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    "null", "eins", "zwei", "drei", "vier", "fuenf", "sechs", "sieben", "acht", "neun",
)


def _to_int(v: np.ndarray, name: str, where: str) -> np.ndarray:
    if v.dtype.kind == "f":
        if not np.isfinite(v).all():
            raise ValueError(f"{where}: field {name!r} holds NaN or infinite values")
        v = np.rint(v)
    return v.astype(np.int64)


def _canonical(events: np.ndarray, where: str) -> np.ndarray:
    """Fields x, y, t, p as EVENT_DTYPE (floats rounded), sorted by t (stable)."""
    require_event_fields(events, where)
    out = make_events(*(_to_int(np.asarray(events[f]), f, where) for f in FIELDS))
    return sort_by_time(out)


def read_nmnist_bin(path: str | os.PathLike, *, sensor_size=NMNIST_SENSOR) -> np.ndarray:
    """Events of one N-MNIST (or N-Caltech101) ``.bin`` recording, sorted by ``t``, as :data:`EVENT_DTYPE`.

    5 bytes per event: ``x`` (8 bit), ``y`` (8 bit), then 24 bits big-endian: polarity in the top bit and a 23-bit
    timestamp in µs. As in tonic's ``read_mnist_file``: an event with ``y = 240`` is a timestamp-overflow marker
    (not an event) that adds 2¹³ µs to all later timestamps. ``sensor_size`` (default N-MNIST's 34×34; ``None`` to
    skip) bounds ``x`` and ``y``. A file that is empty, not a whole number of events, or holds coordinates
    outside the sensor raises ``ValueError`` naming it.
    """
    path = Path(path)
    data = path.read_bytes()
    if len(data) == 0 or len(data) % 5:
        raise ValueError(f"{path}: {len(data)} bytes is not a whole, non-zero number of 5-byte N-MNIST events "
                         "(truncated or corrupt)")
    raw = np.frombuffer(data, dtype=np.uint8).reshape(-1, 5).astype(np.int64)
    x, y = raw[:, 0], raw[:, 1]
    p = raw[:, 2] >> 7
    t = ((raw[:, 2] & 0x7F) << 16) | (raw[:, 3] << 8) | raw[:, 4]
    overflow = y == 240
    if overflow.any():
        t = t + (np.cumsum(overflow) << 13)
    keep = ~overflow
    events = make_events(x[keep], y[keep], t[keep], p[keep])
    if sensor_size is not None:
        check_event_ranges(events, check_sensor(sensor_size), f"{path} (corrupt N-MNIST file?)")
    return sort_by_time(events)


def load_events(path: str | os.PathLike, *, sensor_size=None) -> np.ndarray:
    """A tonic-style structured event array saved with ``np.save`` (``.npy``) or ``np.savez`` (``.npz``: one
    structured array, or arrays named ``x``, ``y``, ``t``, ``p``), as :data:`EVENT_DTYPE` sorted by ``t``.
    Missing fields raise ``ValueError`` naming the file; ``sensor_size`` also checks the coordinates."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        obj = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise ValueError(f"{path} is not a readable .npy/.npz file: {e}") from e
    if isinstance(obj, np.lib.npyio.NpzFile):
        with obj:
            keys = list(obj.files)
            if all(f in keys for f in FIELDS):
                arr = make_events(*(obj[f] for f in FIELDS), dtype=np.dtype([(f, obj[f].dtype) for f in FIELDS]))
            else:
                structured = [k for k in keys if obj[k].dtype.names]
                if len(structured) != 1:
                    raise ValueError(f"{path} holds {keys}: expected arrays named x, y, t, p or exactly one structured "
                                     "event array with fields x, y, t, p")
                arr = obj[structured[0]]
    else:
        arr = obj
    if arr.dtype.names is None:
        raise ValueError(f"{path} holds a plain {arr.dtype} array of shape {arr.shape}, not a structured event array "
                         "with fields x, y, t, p (DVS-Gesture's (N, 4) files are read by read_dvs_gesture_file)")
    events = _canonical(arr, str(path))
    if sensor_size is not None:
        check_event_ranges(events, check_sensor(sensor_size), str(path))
    return events


def read_dvs_gesture_file(path: str | os.PathLike, *, sensor_size=DVS_GESTURE_SENSOR) -> np.ndarray:
    """One DVS-Gesture sample as tonic 1.7 stores it: an ``(N, 4)`` ``.npy`` array with columns ``x, y, p, t``
    and ``t`` in **milliseconds**. As ``tonic.datasets.DVSGesture.__getitem__`` does, ``t`` is multiplied by 1000
    in the array's own dtype and truncated to integer µs. Returns :data:`EVENT_DTYPE` sorted by ``t``."""
    path = Path(path)
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise ValueError(f"{path} is not a readable .npy file: {e}") from e
    if arr.dtype.names is not None or arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"{path}: expected an (N, 4) array with columns x, y, p, t (ms) as tonic's DVSGesture "
                         f"writes, got {arr.dtype} {arr.shape}")
    # tonic: events[:, 3] *= 1000 in the file's dtype, then a cast of every column to its integer field (truncation)
    t = arr[:, 3] * arr.dtype.type(1000)
    events = make_events(arr[:, 0].astype(np.int64), arr[:, 1].astype(np.int64), t.astype(np.int64),
                         arr[:, 2].astype(np.int64))
    if sensor_size is not None:
        check_event_ranges(events, check_sensor(sensor_size), str(path))
    return sort_by_time(events)


class EventFiles(LazyStreams):
    """Event arrays read on demand from files by ``reader``."""

    def __init__(self, paths: Sequence[Path], reader: Callable[[Path], np.ndarray] = load_events):
        self.paths, self.reader = [Path(p) for p in paths], reader
        self.users: list[int] = []  # DVS-Gesture: from the folder names
        self.lighting: list[str] = []

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.reader(self.paths[i])


_GESTURE_LAYOUT = ("tonic 1.7's layout after download and extraction: DATA_DIR/ibmGestureTrain/<userNN_lighting>/"
                   "<label>.npy and DATA_DIR/ibmGestureTest/..., each .npy an (N, 4) array of columns x, y, p, t (ms), "
                   "label 0..10 = the file name (tonic.datasets.DVSGesture(save_to=S) puts it in S/DVSGesture/, "
                   "which is also accepted as DATA_DIR)")


def _split_root(data_dir, split: str, name: str, layout: str) -> Path:
    """``data_dir`` expanded, once ``split`` is "train" or "test" and ``data_dir`` is given (the errors name
    the dataset ``name`` and its ``layout``)."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if data_dir is None:
        raise DatasetMissing(f"{name} needs a data directory (--data-dir): {layout}")
    return Path(data_dir).expanduser()


def _dvs_gesture_folder(data_dir, split: str) -> Path:
    root = _split_root(data_dir, split, "dvs_gesture", _GESTURE_LAYOUT)
    sub = "ibmGestureTrain" if split == "train" else "ibmGestureTest"
    for cand in (root / sub, root / "DVSGesture" / sub):
        if cand.is_dir():
            return cand
    raise DatasetMissing(f"DVS-Gesture not found: no {root / sub} (or {root / 'DVSGesture' / sub}); expected "
                         f"{_GESTURE_LAYOUT}")


def read_dvs_gesture(data_dir: str | os.PathLike, split: str = "train") -> tuple[EventFiles, np.ndarray]:
    """``(streams, labels)`` of one DVS-Gesture split in tonic's on-disk layout (see :func:`read_dvs_gesture_file`).

    ``streams`` reads each sample when indexed (the training split is ~1,000 recordings of ~10⁵–10⁶ events);
    ``streams.users`` and ``streams.lighting`` come from the folder names (``user01_fluorescent``), as tonic
    parses them. Samples are ordered by folder, then label (tonic's order follows ``os.walk``).
    """
    folder = _dvs_gesture_folder(data_dir, split)
    paths, labels, users, lighting = [], [], [], []
    for sub in sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")):
        m = re.fullmatch(r"user(\d+)_(.+)", sub.name)
        if m is None:
            raise ValueError(f"{sub}: folder names in {folder} must look like user01_fluorescent; expected "
                             f"{_GESTURE_LAYOUT}")
        files = []
        for f in sub.glob("*.npy"):
            if not f.stem.isdigit() or not 0 <= int(f.stem) < len(DVS_GESTURE_CLASSES):
                raise ValueError(f"{f}: DVS-Gesture files are named by their label 0..10 (0.npy ... 10.npy)")
            files.append((int(f.stem), f))
        for label, f in sorted(files):
            paths.append(f)
            labels.append(label)
            users.append(int(m.group(1)))
            lighting.append(m.group(2))
    if not paths:
        raise DatasetMissing(f"{folder} holds no <userNN_lighting>/<label>.npy files; expected {_GESTURE_LAYOUT}")
    streams = EventFiles(paths, read_dvs_gesture_file)
    streams.users, streams.lighting = users, lighting
    return streams, np.asarray(labels, dtype=np.int64)


_SHD_LAYOUT = ("the Zenke-lab files as tonic 1.7 extracts them: DATA_DIR/shd_train.h5 and DATA_DIR/shd_test.h5 "
               "(unzipped from shd_*.h5.zip; tonic.datasets.SHD(save_to=S) puts them in S/SHD/, also accepted), each "
               "with spikes/times (seconds), spikes/units (channel 0..699) and labels (0..19)")


def _shd_file(data_dir, split: str) -> Path:
    root = _split_root(data_dir, split, "shd", _SHD_LAYOUT)
    name = f"shd_{split}.h5"
    for cand in (root / name, root / "SHD" / name):
        if cand.is_file():
            return cand
    zipped = [z for z in (root / f"{name}.zip", root / "SHD" / f"{name}.zip") if z.is_file()]
    hint = f" ({zipped[0]} is there: unzip it)" if zipped else ""
    raise DatasetMissing(f"SHD not found: no {root / name} (or {root / 'SHD' / name}){hint}; expected {_SHD_LAYOUT}")


class SHDStreams(LazyStreams):
    """The spike trains of one SHD file, read on demand (one open h5py handle per process)."""

    def __init__(self, path: Path, n: int):
        self.path, self.n = Path(path), int(n)
        self.classes: list[str] = list(SHD_CLASSES)
        self._file, self._pid = None, None

    def __len__(self) -> int:
        return self.n

    def _h5(self):
        if self._file is None or self._pid != os.getpid():
            h5py = require("h5py", "reading SHD")
            self._file, self._pid = h5py.File(self.path, "r"), os.getpid()
        return self._file

    def __getstate__(self):
        return {**self.__dict__, "_file": None, "_pid": None}

    def __getitem__(self, i: int) -> np.ndarray:
        if not -self.n <= i < self.n:
            raise IndexError(f"index {i} out of range for {self.n} samples")
        i = i % self.n
        f = self._h5()
        times, units = np.asarray(f["spikes/times"][i]).ravel(), np.asarray(f["spikes/units"][i]).ravel()
        if times.shape != units.shape:
            raise ValueError(f"{self.path}: sample {i} has {times.size} spike times but {units.size} units")
        # tonic's HSD.__getitem__: float64 seconds × 1e6, truncated to integer µs; x = unit, p = 1.
        events = make_events(units.astype(np.int64), 0, (times.astype(np.float64) * 1e6).astype(np.int64), 1)
        check_event_ranges(events, SHD_SENSOR, f"{self.path} sample {i}")
        return sort_by_time(events)


def read_shd(data_dir: str | os.PathLike, split: str = "train") -> tuple[SHDStreams, np.ndarray]:
    """``(streams, labels)`` of one SHD split: ``DATA_DIR/shd_{split}.h5`` as tonic 1.7 reads it
    (``tonic.datasets.hsd``): event ``k`` of sample ``i`` has ``x = spikes/units[i][k]`` (channel, sensor
    ``(700, 1, 1)``), ``t = spikes/times[i][k]`` seconds → integer µs (truncated, as tonic), ``y = 0``, ``p = 1``
    (tonic's artificial polarity). Requires ``h5py``."""
    path = _shd_file(data_dir, split)
    h5py = require("h5py", "reading SHD")
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in ("spikes/times", "spikes/units", "labels") if k not in f]
            if missing:
                raise ValueError(f"{path} lacks {', '.join(missing)}; expected {_SHD_LAYOUT}")
            labels = np.asarray(f["labels"][()]).astype(np.int64).ravel()
            n_t, n_u = len(f["spikes/times"]), len(f["spikes/units"])
            keys = [k.decode() if isinstance(k, bytes) else str(k) for k in f["extra/keys"][()]] \
                if "extra/keys" in f else []
    except OSError as e:
        raise ValueError(f"{path} is not a readable HDF5 file: {e}") from e
    if not n_t == n_u == labels.size:
        raise ValueError(f"{path}: {n_t} spike-time rows, {n_u} unit rows and {labels.size} labels do not match")
    if labels.size and (labels.min() < 0 or labels.max() >= len(SHD_CLASSES)):
        raise ValueError(f"{path}: labels go from {labels.min()} to {labels.max()}, expected 0..19")
    streams = SHDStreams(path, labels.size)
    streams.classes = keys if len(keys) == len(SHD_CLASSES) else list(SHD_CLASSES)
    return streams, labels


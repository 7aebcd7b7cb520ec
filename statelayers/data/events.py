"""Event-camera (and spike-train) data for S7: event arrays, tokens, time steps, augmentation, readers, datasets.

**Event arrays** follow tonic's conventions: a 1-D numpy structured array with fields ``x, y, t, p`` (any order,
integer fields; this module creates :data:`EVENT_DTYPE` = four little-endian int64 fields, which is what
``tonic.datasets.NMNIST`` uses), ``t`` in microseconds, sorted by ``t``. A sensor is tonic's ``(W, H, P)``
tuple: ``x`` is the column in ``[0, W)``, ``y`` the row in ``[0, H)``, ``P`` the number of polarities (2 for
cameras, 1 for the 700-channel cochlea sensors of SHD/SSC, whose ``x`` is the channel).

**Tokens** (:func:`tokenize`): an event becomes one integer ``T = 2·(x·H + y) + p``, a bijection of the
``W×H×2`` grid onto ``[0, 2·W·H)`` (S7 §5). For one-polarity sensors (``P = 1``, e.g. SHD's ``(700, 1, 1)``)
the polarity is ignored and ``T = x·H + y`` (= the channel id), vocabulary ``W·H`` (700).

**Time steps** (:func:`time_steps`): ``τ_k = (t_k − t_{k−1}) / 1000`` (ms), ``τ_0 = 0`` — causal, see there.

**Items** (:class:`EventSequenceDataset`): ``({"tokens": int64 (L,), "tau": float32 (L,)}, label)``, the S7
item format of :mod:`statelayers.data.sequences`; batch them with ``seqdata.pad_collate``.

**Datasets** (:func:`build_event_datasets`, nothing is downloaded):

* ``"events_fashion_mnist"`` — **simulated** events: each Fashion-MNIST image (Debian's
  ``dataset-fashion-mnist``) is moved along a saccade path in front of a simulated 34×34 event camera
  (:func:`simulate_events`), as N-MNIST was recorded from MNIST. Not a recording; labelled "simulated".
* ``"dvs_gesture"`` — IBM DVS128 Gesture in the layout tonic 1.7 writes (:func:`read_dvs_gesture`).
* ``"shd"`` — Spiking Heidelberg Digits, the ``shd_train.h5`` / ``shd_test.h5`` files (:func:`read_shd`).
"""

from __future__ import annotations

import inspect
import math
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .images import FASHION_MNIST_CLASSES, DatasetMissing, balanced_subset
from .sequences import SeqInfo

__all__ = [
    "AUGMENTATIONS",
    "DVS_GESTURE_CLASSES",
    "DVS_GESTURE_SENSOR",
    "EVENT_DATASETS",
    "EVENT_DTYPE",
    "EventAugment",
    "EventSequenceDataset",
    "NMNIST_SENSOR",
    "SHD_SENSOR",
    "build_event_datasets",
    "check_events",
    "detokenize",
    "drop_event",
    "drop_event_chunk",
    "flip_lr",
    "flip_polarity",
    "flip_ud",
    "load_events",
    "make_events",
    "read_dvs_gesture",
    "read_dvs_gesture_file",
    "read_nmnist_bin",
    "read_shd",
    "roll",
    "rotate",
    "scale",
    "simulate_events",
    "slice_by_count",
    "slice_by_time",
    "spatial_jitter",
    "time_jitter",
    "time_skew",
    "time_steps",
    "tokenize",
    "uniform_noise",
    "vocab_size",
]

EVENT_DTYPE = np.dtype([("x", "<i8"), ("y", "<i8"), ("t", "<i8"), ("p", "<i8")])
FIELDS = ("x", "y", "t", "p")
NMNIST_SENSOR = (34, 34, 2)
DVS_GESTURE_SENSOR = (128, 128, 2)
SHD_SENSOR = (700, 1, 1)
DVS_GESTURE_CLASSES = (  # tonic.datasets.DVSGesture.classes; the label is the .npy file name
    "Hand clapping", "Right hand wave", "Left hand wave", "Right arm cw", "Right arm ccw", "Left arm cw",
    "Left arm ccw", "Arm roll", "Air drums", "Air guitar", "Other gestures",
)
SHD_CLASSES = (  # fallback names; read_shd takes them from the file's extra/keys when it has them
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    "null", "eins", "zwei", "drei", "vier", "fuenf", "sechs", "sieben", "acht", "neun",
)
SIMULATION_SEED = 0  # fixed: the simulated "recordings" are the same for every run seed

EVENT_DATASETS: dict[str, str] = {
    "events_fashion_mnist": "SIMULATED events from Fashion-MNIST (saccade motion + log-intensity threshold, "
                            "34x34x2 sensor as N-MNIST), 60,000 / 10,000 streams, 10 classes",
    "dvs_gesture": "IBM DVS128 Gesture in tonic's layout (--data-dir), 128x128x2 sensor, 11 classes",
    "shd": "Spiking Heidelberg Digits shd_train.h5 / shd_test.h5 (--data-dir), 700 channels, 20 classes",
}
_ALIASES = {"events_fashion_mnist": "events_fashion_mnist", "events_fashion": "events_fashion_mnist",
            "dvs_gesture": "dvs_gesture", "dvsgesture": "dvs_gesture", "shd": "shd"}


# ----------------------------------------------------------------------------------------------- event arrays


def _sensor(sensor_size) -> tuple[int, int, int]:
    try:
        w, h, p = (int(s) for s in sensor_size)
    except (TypeError, ValueError) as e:
        raise ValueError(f"sensor_size must be tonic's (W, H, P) tuple, got {sensor_size!r}") from e
    if w < 1 or h < 1 or p not in (1, 2):
        raise ValueError(f"sensor_size {sensor_size!r}: W and H must be >= 1 and P (polarities) 1 or 2")
    return w, h, p


def make_events(x, y, t, p, *, dtype: np.dtype = EVENT_DTYPE) -> np.ndarray:
    """A structured event array (like ``tonic.io.make_structured_array``). ``x`` sets the length; ``y``, ``t``,
    ``p`` may be arrays of that length or scalars."""
    x = np.atleast_1d(np.asarray(x))
    if x.ndim != 1:
        raise ValueError(f"x must be 1-D, got shape {x.shape}")
    out = np.empty(x.shape[0], dtype=dtype)
    for name, v in zip(FIELDS, (x, y, t, p)):
        v = np.asarray(v)
        if v.ndim > 1 or (v.ndim == 1 and v.shape[0] != x.shape[0]):
            raise ValueError(f"field {name!r} has shape {v.shape}, expected ({x.shape[0]},) or a scalar")
        out[name] = v
    return out


def _require_fields(events, where: str = "events") -> None:
    names = getattr(getattr(events, "dtype", None), "names", None)
    if names is None:
        raise ValueError(f"{where} is not a structured event array with fields x, y, t, p "
                         f"(got {type(events).__name__} {getattr(events, 'dtype', '')})")
    missing = [f for f in FIELDS if f not in names]
    if missing:
        raise ValueError(f"{where} lacks field(s) {', '.join(repr(m) for m in missing)}: has {list(names)}, "
                         "expected tonic-style fields x, y, t, p")
    if events.ndim != 1:
        raise ValueError(f"{where} must be a 1-D event array, got shape {events.shape}")


def _check_ranges(events, sensor, where: str) -> None:
    w, h, _ = sensor
    for name, hi in (("x", w), ("y", h)):
        v = events[name]
        if v.size and (v.min() < 0 or v.max() >= hi):
            bad = int(np.flatnonzero((v < 0) | (v >= hi))[0])
            raise ValueError(f"{where}: field {name!r} of event {bad} is {v[bad]}, outside [0, {hi}) of the "
                             f"{w}x{h} sensor")
    p = events["p"]
    if p.size and not np.isin(p, (0, 1)).all():
        bad = int(np.flatnonzero(~np.isin(p, (0, 1)))[0])
        raise ValueError(f"{where}: field 'p' of event {bad} is {p[bad]}, polarities must be 0 or 1")


def check_events(events: np.ndarray, sensor_size=None, *, where: str = "events") -> np.ndarray:
    """Validate an event array and return it: fields ``x, y, t, p`` present, 1-D, sorted by ``t``, ``p`` in
    {0, 1}, and (with ``sensor_size``) ``0 <= x < W``, ``0 <= y < H``. ``ValueError`` names the field."""
    _require_fields(events, where)
    t = events["t"]
    if t.size > 1:
        back = t[1:] < t[:-1]  # not np.diff: it wraps around for unsigned timestamps
        if back.any():
            k = int(np.flatnonzero(back)[0]) + 1
            raise ValueError(f"{where}: field 't' is not sorted: event {k} has t={t[k]} < t={t[k - 1]} of the event "
                             "before it (sort with events[np.argsort(events['t'], kind='stable')])")
    if sensor_size is not None:
        _check_ranges(events, _sensor(sensor_size), where)
    else:
        p = events["p"]
        if p.size and not np.isin(p, (0, 1)).all():
            raise ValueError(f"{where}: field 'p' holds values other than 0 and 1")
    return events


def _to_int(v: np.ndarray, name: str, where: str) -> np.ndarray:
    if v.dtype.kind == "f":
        if not np.isfinite(v).all():
            raise ValueError(f"{where}: field {name!r} holds NaN or infinite values")
        v = np.rint(v)
    return v.astype(np.int64)


def _canonical(events: np.ndarray, where: str) -> np.ndarray:
    """Fields x, y, t, p as EVENT_DTYPE (floats rounded), sorted by t (stable)."""
    _require_fields(events, where)
    out = make_events(*(_to_int(np.asarray(events[f]), f, where) for f in FIELDS))
    return _sort_by_t(out)


def _sort_by_t(events: np.ndarray) -> np.ndarray:
    t = events["t"]
    if t.size > 1 and (t[1:] < t[:-1]).any():
        return events[np.argsort(t, kind="stable")]
    return events


# ----------------------------------------------------------------------------------------------- tokens and time


def vocab_size(sensor_size) -> int:
    """Number of distinct tokens: ``2·W·H`` for two-polarity sensors, ``W·H`` for one-polarity ones."""
    w, h, p = _sensor(sensor_size)
    return p * w * h


def tokenize(events: np.ndarray, sensor_size) -> np.ndarray:
    """int64 tokens ``T = 2·(x·H + y) + p`` (``P = 2``) or ``T = x·H + y`` (``P = 1``; ``p`` ignored).

    S7 (§5 of the design notes) replaced EventSSM's ``x·y + W·H·p``, which collides (e.g. (2, 3) and (3, 2)), with
    ``2·(x·s + y) + p``. **Deviation from the official code:** it uses ``s = resolution[0] = W``, a bijection only
    when ``W >= H`` (for ``W < H``, (x, y) and (x + 1, y − W) collide). We use ``s = H``, the number of ``y``
    values, so the map is a bijection onto ``[0, vocab_size)`` for every sensor; for square sensors (DVS128,
    N-MNIST) both give the same tokens. Out-of-range coordinates raise ``ValueError``.
    """
    sensor = _sensor(sensor_size)
    _require_fields(events)
    _check_ranges(events, sensor, "tokenize")
    w, h, p = sensor
    pix = events["x"].astype(np.int64) * h + events["y"].astype(np.int64)
    return 2 * pix + events["p"].astype(np.int64) if p == 2 else pix


def detokenize(tokens, sensor_size) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(x, y, p)`` int64 arrays from tokens, the inverse of :func:`tokenize` (``p = 0`` for ``P = 1``)."""
    w, h, p = _sensor(sensor_size)
    tokens = np.asarray(tokens, dtype=np.int64)
    if tokens.size and (tokens.min() < 0 or tokens.max() >= p * w * h):
        raise ValueError(f"tokens must be in [0, {p * w * h}) for sensor {(w, h, p)}")
    pol = tokens % 2 if p == 2 else np.zeros_like(tokens)
    pix = tokens // 2 if p == 2 else tokens
    return pix // h, pix % h, pol


def time_steps(t, unit_us: float = 1000.0) -> np.ndarray:
    """Causal integration steps (float32): ``τ_0 = 0``, ``τ_k = (t_k − t_{k−1}) / unit_us`` (ms by default).

    ``t`` is an event array or its timestamps (µs). **Deviation from the official code**, which uses the forward
    difference ``t_{k+1} − t_k`` and drops the last event: that gap is only known once the *next* event has
    arrived, so it cannot be computed online. With the backward difference the state update for event ``k``
    needs only events ``<= k``: a model can run on a live stream event by event, and the first event of a
    sequence (or a crop of one) has ``τ = 0`` (no decay before it, the state starts at zero anyway). All events
    are kept.
    """
    if getattr(getattr(t, "dtype", None), "names", None):
        t = t["t"]
    t = np.asarray(t)
    if t.ndim != 1:
        raise ValueError(f"timestamps must be 1-D, got shape {t.shape}")
    if unit_us <= 0:
        raise ValueError(f"unit_us={unit_us} must be positive")
    tau = np.zeros(t.shape[0], dtype=np.float64)
    if t.shape[0] > 1:
        d = np.diff(t.astype(np.int64) if t.dtype.kind in "iub" else t.astype(np.float64))
        if (d < 0).any():
            raise ValueError("field 't' is not sorted: time steps would be negative")
        tau[1:] = d / float(unit_us)
    return tau.astype(np.float32)


# ----------------------------------------------------------------------------------------------- slicing


def slice_by_count(events: np.ndarray, count: int, overlap: int = 0, *, include_incomplete: bool = False,
                   return_indices: bool = False) -> list:
    """Windows of ``count`` events with ``overlap`` events shared by neighbours (tonic's ``SliceByEventCount``).

    A recording shorter than ``count`` gives one slice of all its events; the tail that does not fill a window is
    dropped unless ``include_incomplete``. Returns event arrays, or ``(start, stop)`` index pairs if
    ``return_indices``. An empty recording gives no slices.
    """
    count, overlap = int(count), int(overlap)
    stride = count - overlap
    if count < 1 or overlap < 0 or stride < 1:
        raise ValueError(f"need count >= 1 and 0 <= overlap < count, got count={count}, overlap={overlap}")
    n = len(events)
    if n == 0:
        return []
    width = min(count, n)
    span = (n - width) / stride
    n_slices = int(math.ceil(span) if include_incomplete else math.floor(span)) + 1
    idx = [(k * stride, min(k * stride + width, n)) for k in range(n_slices)]
    return idx if return_indices else [events[a:b] for a, b in idx]


def slice_by_time(events: np.ndarray, window_us: float, overlap_us: float = 0, *, include_incomplete: bool = False,
                  return_indices: bool = False) -> list:
    """Windows ``[t0 + k·stride, t0 + k·stride + window_us)`` with ``stride = window_us − overlap_us``, from the
    first event's time ``t0`` (tonic's ``SliceByTime``). At least one window; the last partial window is dropped
    unless ``include_incomplete``. Returns event arrays, or ``(start, stop)`` index pairs if ``return_indices``.
    """
    stride = window_us - overlap_us
    if window_us <= 0 or overlap_us < 0 or stride <= 0:
        raise ValueError(f"need window_us > 0 and 0 <= overlap_us < window_us, got {window_us}, {overlap_us}")
    if len(events) == 0:
        return []
    t = events["t"]
    duration = t[-1] - t[0]
    span = (duration - window_us) / stride
    n_slices = max(int(math.ceil(span) if include_incomplete else math.floor(span)) + 1, 1)
    starts = t[0] + np.arange(n_slices) * stride
    a = np.searchsorted(t, starts)
    b = np.searchsorted(t, starts + window_us)
    idx = [(int(i), int(j)) for i, j in zip(a, b)]
    return idx if return_indices else [events[i:j] for i, j in idx]


# ----------------------------------------------------------------------------------------------- augmentations
#
# Each takes an event array and returns a new one with the same fields and dtype, sorted by t and inside the
# sensor. Random ones take a ``np.random.Generator`` (keyword ``rng``). A parameter given as a ``(low, high)``
# tuple is drawn uniformly from that range with ``rng`` (tonic's convention; integers inclusive of both ends).


def _draw(value, rng, *, integer: bool = False):
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"a random range must be (low, high), got {value!r}")
        if rng is None:
            raise ValueError(f"the range {value!r} needs rng=np.random.Generator")
        lo, hi = value
        return int(rng.integers(int(lo), int(hi) + 1)) if integer else float(rng.uniform(lo, hi))
    return int(value) if integer else float(value)


def _cast(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if dtype.kind == "b":
        return values != 0
    if dtype.kind in "iu" and values.dtype.kind == "f":
        values = np.rint(values)
    return values.astype(dtype)


def _moved(events: np.ndarray, sensor, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Events at new (float) coordinates, rounded; those that leave the sensor are dropped."""
    w, h, _ = sensor
    xr, yr = np.rint(x), np.rint(y)
    keep = (xr >= 0) & (xr < w) & (yr >= 0) & (yr < h)
    out = events[keep].copy()
    out["x"] = _cast(xr[keep], events.dtype["x"])
    out["y"] = _cast(yr[keep], events.dtype["y"])
    return out


def drop_event(events: np.ndarray, p: float, *, rng: np.random.Generator) -> np.ndarray:
    """Remove ``round(p·N)`` events chosen uniformly without replacement (tonic ``drop_event_numpy``)."""
    p = _draw(p, rng)
    if not 0 <= p <= 1:
        raise ValueError(f"drop probability {p} must be in [0, 1]")
    n = len(events)
    k = int(p * n + 0.5)
    if k == 0:
        return events.copy()
    return np.delete(events, rng.choice(n, k, replace=False))


def drop_event_chunk(events: np.ndarray, max_fraction: float, *, rng: np.random.Generator) -> np.ndarray:
    """Remove one contiguous run of ``k ~ U{1, …, ⌊max_fraction·N⌋}`` events at a uniform position (EventSSM's
    ``DropEventChunk``, which tonic lacks; its probability lives in :class:`EventAugment`)."""
    if not 0 <= max_fraction <= 1:
        raise ValueError(f"max_fraction {max_fraction} must be in [0, 1]")
    n = len(events)
    kmax = int(max_fraction * n)
    if kmax < 1:
        return events.copy()
    k = int(rng.integers(1, kmax + 1))
    start = int(rng.integers(0, n - k + 1))
    return np.concatenate([events[:start], events[start + k:]])


def uniform_noise(events: np.ndarray, sensor_size, n, *, rng: np.random.Generator) -> np.ndarray:
    """Add ``n`` events uniform over the sensor (``x``, ``y``, ``p``) and ``[t_min, t_max)`` (tonic
    ``uniform_noise_numpy``; integer fields are drawn as integers, ``t`` uniform then truncated like tonic), then
    sort by ``t`` (stable: a noise event lands after recorded events of the same time). Not applied to an empty
    stream."""
    w, h, pol = _sensor(sensor_size)
    n = _draw(n, rng, integer=True)
    if n < 0:
        raise ValueError(f"n={n} noise events must be >= 0")
    if len(events) == 0 or n == 0:
        return events.copy()
    noise = np.zeros(n, dtype=events.dtype)
    noise["x"] = _cast(rng.integers(0, w, n), events.dtype["x"])
    noise["y"] = _cast(rng.integers(0, h, n), events.dtype["y"])
    noise["p"] = _cast(rng.integers(0, pol, n), events.dtype["p"])
    t = events["t"]
    noise["t"] = rng.uniform(float(t.min()), float(t.max()), n)  # truncated into an integer field, as tonic
    out = np.concatenate([events, noise])
    return out[np.argsort(out["t"], kind="stable")]


def time_skew(events: np.ndarray, coefficient, offset=0.0, *, rng: np.random.Generator | None = None) -> np.ndarray:
    """``t ← t·coefficient + offset`` (tonic ``time_skew_numpy``: integer ``t`` is truncated towards zero, exactly
    as tonic's assignment does). ``coefficient`` must be positive so the order is kept."""
    c, o = _draw(coefficient, rng), _draw(offset, rng)
    if c <= 0:
        raise ValueError(f"time_skew coefficient {c} must be positive (a non-positive one reverses or collapses time)")
    out = events.copy()
    out["t"] = events["t"] * c + o
    return out


def time_jitter(events: np.ndarray, std_us, *, rng: np.random.Generator, clip_negative: bool = False) -> np.ndarray:
    """Add Gaussian noise of standard deviation ``std_us`` to every timestamp, then sort by ``t`` (tonic
    ``time_jitter_numpy`` with ``sort_timestamps=True``). Integer timestamps are rounded to nearest (tonic
    truncates towards zero, which biases the jitter by about −½ µs). ``clip_negative`` drops events with
    ``t < 0``."""
    std = _draw(std_us, rng)
    if std < 0:
        raise ValueError(f"std_us={std} must be >= 0")
    out = events.copy()
    out["t"] = _cast(events["t"] + rng.normal(0.0, std, len(events)), events.dtype["t"])
    if clip_negative:
        out = out[out["t"] >= 0]
    return out[np.argsort(out["t"], kind="stable")]


def spatial_jitter(events: np.ndarray, sensor_size, std=1.0, *, rng: np.random.Generator) -> np.ndarray:
    """Add independent Gaussian noise of standard deviation ``std`` pixels to ``x`` and ``y`` (tonic
    ``spatial_jitter_numpy`` with ``var_x = var_y = std²``, ``sigma_xy = 0``, ``clip_outliers=True``: events that
    leave the sensor are dropped). Coordinates are rounded to nearest (tonic truncates towards zero, a −½ px bias).
    An axis of size 1 (SHD's ``y``) is not jittered, so one-row sensors get EventSSM's 1-D channel jitter."""
    w, h, pol = _sensor(sensor_size)
    std = _draw(std, rng)
    if std < 0:
        raise ValueError(f"std={std} must be >= 0")
    n = len(events)
    x = events["x"] + (rng.normal(0.0, std, n) if w > 1 else 0.0)
    y = events["y"] + (rng.normal(0.0, std, n) if h > 1 else 0.0)
    return _moved(events, (w, h, pol), np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))


def flip_lr(events: np.ndarray, sensor_size) -> np.ndarray:
    """``x ← W − 1 − x`` (tonic ``RandomFlipLR`` with ``p=1``)."""
    w, _, _ = _sensor(sensor_size)
    out = events.copy()
    out["x"] = w - 1 - events["x"]
    return out


def flip_ud(events: np.ndarray, sensor_size) -> np.ndarray:
    """``y ← H − 1 − y`` (tonic ``RandomFlipUD`` with ``p=1``)."""
    _, h, _ = _sensor(sensor_size)
    out = events.copy()
    out["y"] = h - 1 - events["y"]
    return out


def flip_polarity(events: np.ndarray) -> np.ndarray:
    """``p ← 1 − p`` (tonic ``RandomFlipPolarity`` with ``p=1``)."""
    out = events.copy()
    out["p"] = np.logical_not(events["p"]).astype(events.dtype["p"])
    return out


def roll(events: np.ndarray, sensor_size, dx, dy, *, rng: np.random.Generator | None = None) -> np.ndarray:
    """Translate by ``(dx, dy)`` whole pixels; events that leave the sensor are dropped (EventSSM's ``Roll``,
    which despite its name does not wrap around)."""
    sensor = _sensor(sensor_size)
    dx, dy = _draw(dx, rng, integer=True), _draw(dy, rng, integer=True)
    return _moved(events, sensor, events["x"] + float(dx), events["y"] + float(dy))


def rotate(events: np.ndarray, sensor_size, angle_deg, *, rng: np.random.Generator | None = None) -> np.ndarray:
    """Rotate by ``angle_deg`` about the sensor centre; events that leave the sensor are dropped (EventSSM's
    ``Rotate`` clips them onto the border instead)."""
    w, h, pol = _sensor(sensor_size)
    a = math.radians(_draw(angle_deg, rng))
    cx, cy = (w - 1) / 2, (h - 1) / 2
    x, y = events["x"] - cx, events["y"] - cy
    return _moved(events, (w, h, pol), x * math.cos(a) - y * math.sin(a) + cx, x * math.sin(a) + y * math.cos(a) + cy)


def scale(events: np.ndarray, sensor_size, factor, *, rng: np.random.Generator | None = None) -> np.ndarray:
    """Scale coordinates by ``factor`` about the sensor centre; events that leave the sensor are dropped."""
    w, h, pol = _sensor(sensor_size)
    f = _draw(factor, rng)
    if f <= 0:
        raise ValueError(f"scale factor {f} must be positive")
    cx, cy = (w - 1) / 2, (h - 1) / 2
    return _moved(events, (w, h, pol), (events["x"] - cx) * f + cx, (events["y"] - cy) * f + cy)


AUGMENTATIONS: dict[str, Callable] = {
    "drop_event": drop_event, "drop_event_chunk": drop_event_chunk, "uniform_noise": uniform_noise,
    "time_skew": time_skew, "time_jitter": time_jitter, "spatial_jitter": spatial_jitter, "flip_lr": flip_lr,
    "flip_ud": flip_ud, "flip_polarity": flip_polarity, "roll": roll, "rotate": rotate, "scale": scale,
}


class EventAugment:
    """Apply augmentation steps in order, each with its own probability.

    ``steps``: ``(name, probability, kwargs)`` triples; ``name`` is a key of :data:`AUGMENTATIONS`, ``kwargs`` its
    parameters (ranges as ``(low, high)`` tuples); ``sensor_size`` and ``rng`` are passed where a function takes
    them. Calling with ``rng`` (what :class:`EventSequenceDataset` does, seeded per item) makes the result a pure
    function of that generator; without it a generator seeded with ``seed`` at construction is used. One uniform
    number is drawn per step whether or not the step fires, so changing one probability does not reshuffle the
    draws of the others' decisions. :meth:`s7` builds the S7/EventSSM recipe.
    """

    def __init__(self, sensor_size, steps: Sequence[tuple[str, float, dict]], *, seed: int = 0):
        self.sensor_size = _sensor(sensor_size)
        self.steps: list[tuple[str, float, dict]] = []
        self._extra: list[tuple[str, ...]] = []  # which of sensor_size / rng each step's function takes
        for step in steps:
            try:
                name, prob, kwargs = step
            except (TypeError, ValueError) as e:
                raise ValueError(f"an augmentation step must be (name, probability, kwargs), got {step!r}") from e
            if name not in AUGMENTATIONS:
                raise ValueError(f"unknown augmentation {name!r}; expected one of {sorted(AUGMENTATIONS)}")
            if not 0.0 <= float(prob) <= 1.0:
                raise ValueError(f"augmentation {name!r}: probability {prob} must be in [0, 1]")
            kwargs = dict(kwargs or {})
            sig = inspect.signature(AUGMENTATIONS[name])
            extra = {k: None for k in ("sensor_size", "rng") if k in sig.parameters}
            try:
                sig.bind(None, **kwargs, **extra)
            except TypeError as e:
                raise ValueError(f"augmentation {name!r}: bad arguments {kwargs}: {e}") from e
            self.steps.append((name, float(prob), kwargs))
            self._extra.append(tuple(extra))
        self.seed = seed
        self._rng = np.random.default_rng(seed)

    @classmethod
    def s7(cls, sensor_size, *, seed: int = 0, drop_event: float = 0.1, max_drop_chunk: float = 0.1,
           p_drop_chunk: float = 0.3, noise: int = 100, time_skew: float = 1.1, time_jitter_us: float = 100.0,
           spatial_jitter: float = 1.0, max_roll: int = 4, max_angle: float = 10.0, max_scale: float = 1.5,
           p_geometric: float = 0.3) -> EventAugment:
        """The augmentation of the S7 / EventSSM DVS-Gesture and SHD recipes (defaults = EventSSM's): drop a chunk
        (p 0.3, up to 10 % of the events), drop 10 % of the events, up to 100 noise events, time skew in
        [1/1.1, 1.1], time jitter 100 µs, spatial jitter 1 px; on 2-D sensors also roll ±4 px, rotate ±10°,
        scale [1/1.5, 1.5], each with probability 0.3. CutMix (a batch-level mix) is not included."""
        w, h, _ = _sensor(sensor_size)
        steps = [
            ("drop_event_chunk", p_drop_chunk, {"max_fraction": max_drop_chunk}),
            ("drop_event", 1.0, {"p": drop_event}),
            ("uniform_noise", 1.0, {"n": (0, noise)}),
            ("time_skew", 1.0, {"coefficient": (1.0 / time_skew, time_skew)}),
            ("time_jitter", 1.0, {"std_us": time_jitter_us}),
            ("spatial_jitter", 1.0, {"std": spatial_jitter}),
        ]
        if w > 1 and h > 1:
            steps += [
                ("roll", p_geometric, {"dx": (-max_roll, max_roll), "dy": (-max_roll, max_roll)}),
                ("rotate", p_geometric, {"angle_deg": (-max_angle, max_angle)}),
                ("scale", p_geometric, {"factor": (1.0 / max_scale, max_scale)}),
            ]
        return cls(sensor_size, steps, seed=seed)

    def __call__(self, events: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        rng = self._rng if rng is None else rng
        given = {"sensor_size": self.sensor_size, "rng": rng}
        for (name, prob, kwargs), extra in zip(self.steps, self._extra):
            if rng.random() < prob:
                events = AUGMENTATIONS[name](events, **kwargs, **{k: given[k] for k in extra})
        return events

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}(p={p:g}, {k})" for n, p, k in self.steps)
        return f"EventAugment(sensor_size={self.sensor_size}, [{inner}])"


# ----------------------------------------------------------------------------------------------- file readers


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
        _check_ranges(events, _sensor(sensor_size), f"{path} (corrupt N-MNIST file?)")
    return _sort_by_t(events)


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
        _check_ranges(events, _sensor(sensor_size), str(path))
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
        _check_ranges(events, _sensor(sensor_size), str(path))
    return _sort_by_t(events)


class _Lazy(Sequence):
    """A read-on-demand sequence of event arrays: ``len()`` and ``[i]`` (picklable for DataLoader workers)."""

    def __getitem__(self, i):  # pragma: no cover - abstract
        raise NotImplementedError


class EventFiles(_Lazy):
    """Event arrays read on demand from files by ``reader``."""

    def __init__(self, paths: Sequence[Path], reader: Callable[[Path], np.ndarray] = load_events):
        self.paths, self.reader = [Path(p) for p in paths], reader
        self.users: list[int] = []  # DVS-Gesture: from the folder names
        self.lighting: list[str] = []

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.reader(self.paths[i])


class _Take(_Lazy):
    """``streams[indices[i]]``."""

    def __init__(self, streams: Sequence, indices: Sequence[int]):
        self.streams, self.indices = streams, [int(i) for i in indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.streams[self.indices[i]]


_GESTURE_LAYOUT = ("tonic 1.7's layout after download and extraction: DATA_DIR/ibmGestureTrain/<userNN_lighting>/"
                   "<label>.npy and DATA_DIR/ibmGestureTest/..., each .npy an (N, 4) array of columns x, y, p, t (ms), "
                   "label 0..10 = the file name (tonic.datasets.DVSGesture(save_to=S) puts it in S/DVSGesture/, "
                   "which is also accepted as DATA_DIR)")


def _dvs_gesture_folder(data_dir, split: str) -> Path:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if data_dir is None:
        raise DatasetMissing(f"dvs_gesture needs a data directory (--data-dir): {_GESTURE_LAYOUT}")
    sub = "ibmGestureTrain" if split == "train" else "ibmGestureTest"
    root = Path(data_dir).expanduser()
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
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if data_dir is None:
        raise DatasetMissing(f"shd needs a data directory (--data-dir): {_SHD_LAYOUT}")
    root = Path(data_dir).expanduser()
    name = f"shd_{split}.h5"
    for cand in (root / name, root / "SHD" / name):
        if cand.is_file():
            return cand
    zipped = [z for z in (root / f"{name}.zip", root / "SHD" / f"{name}.zip") if z.is_file()]
    hint = f" ({zipped[0]} is there: unzip it)" if zipped else ""
    raise DatasetMissing(f"SHD not found: no {root / name} (or {root / 'SHD' / name}){hint}; expected {_SHD_LAYOUT}")


class SHDStreams(_Lazy):
    """The spike trains of one SHD file, read on demand (one open h5py handle per process)."""

    def __init__(self, path: Path, n: int):
        self.path, self.n = Path(path), int(n)
        self.classes: list[str] = list(SHD_CLASSES)
        self._file, self._pid = None, None

    def __len__(self) -> int:
        return self.n

    def _h5(self):
        if self._file is None or self._pid != os.getpid():
            import h5py

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
        _check_ranges(events, SHD_SENSOR, f"{self.path} sample {i}")
        return _sort_by_t(events)


def read_shd(data_dir: str | os.PathLike, split: str = "train") -> tuple[SHDStreams, np.ndarray]:
    """``(streams, labels)`` of one SHD split: ``DATA_DIR/shd_{split}.h5`` as tonic 1.7 reads it
    (``tonic.datasets.hsd``): event ``k`` of sample ``i`` has ``x = spikes/units[i][k]`` (channel, sensor
    ``(700, 1, 1)``), ``t = spikes/times[i][k]`` seconds → integer µs (truncated, as tonic), ``y = 0``, ``p = 1``
    (tonic's artificial polarity). Requires ``h5py``."""
    path = _shd_file(data_dir, split)
    try:
        import h5py
    except ImportError as e:
        raise DatasetMissing("reading SHD needs h5py: `pip install h5py`") from e
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


# ----------------------------------------------------------------------------------------------- simulation


def simulate_events(image, *, rng: np.random.Generator, sensor_size=NMNIST_SENSOR, duration_us: float = 100_000.0,
                    n_steps: int = 100, amplitude_px: float = 2.0, threshold: float = 0.25,
                    threshold_std: float = 0.03, refractory_us: float = 500.0, log_eps: float = 0.1,
                    time_jitter: float = 0.1) -> np.ndarray:
    """SIMULATED events of a still image seen by a moving event camera, the way N-MNIST was recorded from MNIST.

    The image (uint8, or float in [0, 1]; e.g. 28×28) is centred on the ``W×H`` sensor (default N-MNIST's 34×34)
    and moved along a closed triangular saccade path — three linear sweeps of ``amplitude_px`` pixels in the
    directions 0°, 120° and 240° (horizontal and both diagonals, so edges of every orientation fire), starting at a
    random sub-pixel offset — over ``duration_us`` µs sampled at ``n_steps`` frames (bilinear interpolation).
    Each pixel sees the log intensity ``L = log(I + log_eps)`` and keeps a reference level; whenever ``L`` moves a
    contrast threshold ``C`` (per-pixel ``threshold·(1 + threshold_std·N(0, 1))``, the sensor's mismatch) above
    or below it, the pixel emits an ON (``p = 1``) or OFF (``p = 0``) event and the reference moves by ``C``.
    Several crossings in one frame interval are emitted at their linearly interpolated times, jittered by
    ``time_jitter`` of the interval (kept inside it); a pixel then stays silent for ``refractory_us`` after each of
    its events (paralysable dead time: events inside it are lost, the reference still moves).

    Returns :data:`EVENT_DTYPE` events sorted by ``t`` (µs, in ``[0, duration_us)``), all inside the sensor. The
    result is a function of ``image``, the parameters and ``rng`` only. With the defaults a Fashion-MNIST image
    gives 2.1k–4.1k events (5th–95th percentile over 1,000 training images; median 2.8k, range 1.5k–6.4k; a real
    N-MNIST digit has ~4k over three 100 ms saccades) in 4–8 ms on one CPU core.
    """
    w, h, pol = _sensor(sensor_size)
    if pol != 2:
        raise ValueError(f"simulate_events needs a two-polarity sensor, got {sensor_size!r}")
    src = np.asarray(image)
    if src.ndim != 2:
        raise ValueError(f"image must be 2-D (H, W), got shape {src.shape}")
    if src.dtype == np.uint8:
        img = src.astype(np.float32) / np.float32(255.0)
    elif src.dtype.kind in "fiub":
        img = src.astype(np.float32)
        if img.size and (not np.isfinite(img).all() or img.min() < 0 or img.max() > 1):
            raise ValueError("a non-uint8 image must hold intensities in [0, 1]")
    else:
        raise ValueError(f"image dtype {src.dtype} is not numeric")
    ih, iw = img.shape
    if ih > h or iw > w:
        raise ValueError(f"a {iw}x{ih} image does not fit the {w}x{h} sensor")
    n_steps = int(n_steps)
    if n_steps < 1 or duration_us / n_steps < 1:
        raise ValueError(f"need n_steps >= 1 and at least 1 µs per step, got n_steps={n_steps}, "
                         f"duration_us={duration_us}")
    if threshold <= 0 or log_eps <= 0 or amplitude_px < 0 or refractory_us < 0 or time_jitter < 0:
        raise ValueError("threshold and log_eps must be positive, amplitude_px, refractory_us and time_jitter >= 0")

    # Canvas with a zero margin wide enough for the path; frame s samples it at an offset (bilinear), written as
    # two small interpolation matrices per frame: frames[s] = Ry[s] @ canvas @ Rx[s].
    margin = int(math.ceil(amplitude_px)) + 2
    hc, wc = h + 2 * margin + 1, w + 2 * margin + 1
    canvas = np.zeros((hc, wc), np.float32)
    oy, ox = margin + (h - ih) // 2, margin + (w - iw) // 2
    canvas[oy:oy + ih, ox:ox + iw] = img
    radius = amplitude_px / math.sqrt(3.0)  # circumradius of the equilateral triangle of side amplitude_px
    ang = np.deg2rad([210.0, 330.0, 90.0])
    verts = np.stack([radius * np.cos(ang), radius * np.sin(ang)], axis=1)
    verts = np.vstack([verts, verts[:1]]) + rng.uniform(-0.5, 0.5, 2)
    n_frames = n_steps + 1
    f = np.arange(n_frames) * (3.0 / n_steps)
    seg = np.minimum(f.astype(np.int64), 2)
    frac = (f - seg)[:, None]
    pos = verts[seg] * (1 - frac) + verts[seg + 1] * frac  # (S, 2) image offset (dx, dy) in pixels
    sx, sy = margin - pos[:, 0], margin - pos[:, 1]
    ix, iy = np.floor(sx).astype(np.int64), np.floor(sy).astype(np.int64)
    fx, fy = (sx - ix).astype(np.float32), (sy - iy).astype(np.float32)
    ry = np.zeros((n_frames, h, hc), np.float32)
    rx = np.zeros((n_frames, wc, w), np.float32)
    rows, cols, s_idx = np.arange(h), np.arange(w), np.arange(n_frames)[:, None]
    ry[s_idx, rows, iy[:, None] + rows] = (1 - fy)[:, None]
    ry[s_idx, rows, iy[:, None] + rows + 1] = fy[:, None]
    rx[s_idx, ix[:, None] + cols, cols] = (1 - fx)[:, None]
    rx[s_idx, ix[:, None] + cols + 1, cols] = fx[:, None]
    frames = (ry @ canvas) @ rx  # (S, H, W)
    log_i = np.log(frames.reshape(n_frames, h * w) + np.float32(log_eps))

    # Level crossings. With u = (L − L_0)/C the reference is L_0 + j·C for an integer j that follows u with a
    # dead band of one level: j ← clamp(j, floor(u), ceil(u)); every unit change of j is one event.
    c = (threshold * np.maximum(1.0 + threshold_std * rng.standard_normal(h * w), 0.25)).astype(np.float32)
    u = (log_i - log_i[0]) / c
    lo, hi = np.floor(u), np.ceil(u)
    j = np.empty_like(u)
    cur = np.zeros(h * w, np.float32)
    j[0] = cur
    for s in range(1, n_frames):
        np.maximum(cur, lo[s], out=cur)
        np.minimum(cur, hi[s], out=cur)
        j[s] = cur
    dj = np.diff(j, axis=0)
    step, pix = np.nonzero(dj)
    d = dj[step, pix].astype(np.int64)
    cnt, sign = np.abs(d), np.sign(d)
    rep = np.repeat(np.arange(cnt.size), cnt)  # one row per crossing
    k = np.arange(rep.size) - np.repeat(np.cumsum(cnt) - cnt, cnt) + 1
    step, pix, sign = step[rep], pix[rep], sign[rep]
    level = j[step, pix] + sign * k  # the crossed level, in units of C
    u0, u1 = u[step, pix], u[step + 1, pix]
    where = np.clip((level - u0) / (u1 - u0), 0.0, 1.0)  # interpolated position inside the frame interval
    dt = duration_us / n_steps
    t0 = step * dt
    t = t0 + (where + time_jitter * rng.standard_normal(where.size)) * dt
    t = np.floor(np.clip(t, t0, t0 + dt - 1)).astype(np.int64)

    # Refractory period (paralysable): drop an event closer than refractory_us to the previous one of its pixel.
    order = np.lexsort((t, pix))
    pix, t, sign = pix[order], t[order], sign[order]
    keep = np.ones(pix.size, dtype=bool)
    if pix.size > 1:
        keep[1:] = (pix[1:] != pix[:-1]) | (np.diff(t) >= refractory_us)
    pix, t, sign = pix[keep], t[keep], sign[keep]
    order = np.argsort(t, kind="stable")
    pix, t, sign = pix[order], t[order], sign[order]
    return make_events(pix % w, pix // w, t, (sign > 0).astype(np.int64))


class SimulatedEventStreams(_Lazy):
    """Events simulated on demand from ``images[i]`` with a generator seeded by ``(seed, salt, keys[i])``, so
    each image always gives the same stream (like a recording), whatever subset or order it is read in."""

    def __init__(self, images, keys: Sequence[int], *, seed: int = SIMULATION_SEED, salt: int = 0, **sim_kwargs):
        images = images.numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
        if images.ndim != 3 or len(images) != len(keys):
            raise ValueError(f"expected images (N, H, W) and N keys, got {images.shape} and {len(keys)}")
        self.images, self.keys = images, [int(k) for k in keys]
        self.seed, self.salt, self.sim_kwargs = int(seed), int(salt), sim_kwargs

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> np.ndarray:
        rng = np.random.default_rng([v % 2**63 for v in (self.seed, self.salt, self.keys[i])])
        return simulate_events(self.images[i], rng=rng, **self.sim_kwargs)


# ----------------------------------------------------------------------------------------------- torch datasets


class EventSequenceDataset(Dataset):
    """Event streams → S7 items ``({"tokens": int64 (L,), "tau": float32 (L,)}, label)``.

    ``streams[i]`` is an event array (a list, or a lazy sequence such as :func:`read_dvs_gesture`'s). Per item,
    with a generator seeded by ``(seed, epoch, index)`` (``epoch`` is an attribute, 0 until the training loop sets
    it): with ``augment`` (an :class:`EventAugment` or any ``f(events, rng)``), a random window of ``max_events``
    consecutive events is cut first, then augmented, then cut to ``max_events`` again if noise made it longer
    (leading events); without ``augment`` the first ``max_events`` events are kept (evaluation). Then the events are
    tokenised (:func:`tokenize`) and ``tau`` computed (:func:`time_steps`, in units of ``time_unit_us``). If
    augmentation removed every event, the un-augmented window is used.
    """

    def __init__(self, streams: Sequence, labels, sensor_size, *, max_events: int | None = None,
                 augment: Callable | None = None, seed: int = 0, classes: Sequence[str] | None = None,
                 time_unit_us: float = 1000.0):
        self.streams = streams
        self.targets = torch.as_tensor(np.asarray(labels), dtype=torch.long).flatten()
        if len(streams) != len(self.targets):
            raise ValueError(f"{len(streams)} streams but {len(self.targets)} labels")
        if max_events is not None and int(max_events) < 1:
            raise ValueError(f"max_events={max_events} must be a positive number of events")
        self.sensor_size = _sensor(sensor_size)
        self.vocab_size = vocab_size(self.sensor_size)
        self.max_events = None if max_events is None else int(max_events)
        self.augment, self.seed, self.epoch = augment, int(seed), 0
        self.classes = list(classes) if classes is not None else []
        self.time_unit_us = float(time_unit_us)

    def __len__(self) -> int:
        return len(self.targets)

    def events(self, i: int) -> np.ndarray:
        """The (cropped, augmented) events of item ``i`` for the current epoch, before tokenisation."""
        events = self.streams[i]
        _require_fields(events, f"stream {i}")
        m = self.max_events
        if self.augment is None:
            return events[:m] if m is not None else events
        rng = np.random.default_rng([int(v) % 2**63 for v in (self.seed, self.epoch, i)])
        if m is not None and len(events) > m:
            start = int(rng.integers(0, len(events) - m + 1))
            events = events[start:start + m]
        out = self.augment(events, rng)
        if len(out) == 0:
            out = events
        return out[:m] if m is not None else out

    def __getitem__(self, i: int) -> tuple[dict[str, torch.Tensor], int]:
        events = self.events(i)
        tokens = tokenize(events, self.sensor_size)
        tau = time_steps(events["t"], self.time_unit_us)
        return {"tokens": torch.from_numpy(tokens), "tau": torch.from_numpy(tau)}, int(self.targets[i])


def _resolve(name: str) -> str:
    key = str(name).strip().lower().replace("-", "_")
    if key not in _ALIASES:
        raise ValueError(f"unknown event dataset {name!r}; expected one of {sorted(EVENT_DATASETS)}")
    return _ALIASES[key]


def build_event_datasets(name: str, *, data_dir: str | os.PathLike | None = None, seed: int = 0,
                         subset: int | None = None, max_events: int | None = None,
                         augment: bool | Callable = True) -> tuple[EventSequenceDataset, EventSequenceDataset, SeqInfo]:
    """``(train, eval, SeqInfo)`` for ``"events_fashion_mnist"``, ``"dvs_gesture"`` or ``"shd"``.

    * ``events_fashion_mnist``: SIMULATED events (:func:`simulate_events`, generated when an item is read, ~4 ms)
      from the 60k/10k Fashion-MNIST images (``data_dir`` = the IDX folder, default Debian's). The simulation is
      seeded by :data:`SIMULATION_SEED` and the image index, not by ``seed``: every run sees the same streams.
    * ``dvs_gesture``: ``data_dir`` in tonic's layout (:func:`read_dvs_gesture`), 11 classes, 128×128×2.
    * ``shd``: ``data_dir`` holding ``shd_train.h5`` / ``shd_test.h5`` (:func:`read_shd`), 20 classes, tokens =
      channel ids (vocabulary 700).

    ``subset=K``: class-balanced ``K``-stream training subset (``data.balanced_subset``, seeded by ``seed``).
    ``max_events``: crop every stream (random window when training with augmentation, leading events for eval).
    ``augment``: ``True`` = :meth:`EventAugment.s7` on the training split (on the 34×34 simulated sensor with
    ±2 px roll and scale in [1/1.2, 1.2]), ``False`` = none, or any ``f(events, rng)``. ``SeqInfo.max_len`` is
    ``max_events`` (0 when unbounded: lengths vary per stream and ``pad_collate`` pads per batch).
    Missing data raise :class:`DatasetMissing` with the expected layout.
    """
    which = _resolve(name)
    if subset is not None and int(subset) < 1:
        raise ValueError(f"subset={subset} must be a positive number of training streams")
    if which == "events_fashion_mnist":
        from .images import _fashion_root, _load_fashion_once

        xtr, ytr, xte, yte = _load_fashion_once(_fashion_root(data_dir))
        sensor, classes = NMNIST_SENSOR, list(FASHION_MNIST_CLASSES)
        keys_tr = np.arange(len(ytr))
        if subset is not None:
            keys_tr = balanced_subset(ytr, int(subset), seed, len(classes)).numpy()
        train_streams = SimulatedEventStreams(xtr.numpy()[keys_tr], keys_tr, salt=0)
        eval_streams = SimulatedEventStreams(xte.numpy(), np.arange(len(yte)), salt=1)
        ytr_np, yte_np = ytr.numpy()[keys_tr], yte.numpy()
        aug_kw = {"max_roll": 2, "max_scale": 1.2}
        note = ("events simulated from Fashion-MNIST (saccade motion + log-intensity threshold on a 34x34x2 sensor, "
                "as N-MNIST was recorded; simulated, not a recording)")
        simulated = True
    else:
        if which == "dvs_gesture":
            sensor, classes = DVS_GESTURE_SENSOR, list(DVS_GESTURE_CLASSES)
            train_streams, ytr_np = read_dvs_gesture(data_dir, "train")
            eval_streams, yte_np = read_dvs_gesture(data_dir, "test")
            note = "IBM DVS128 Gesture (tonic layout), 128x128x2 sensor, tokens 2*(x*128+y)+p"
        else:
            train_streams, ytr_np = read_shd(data_dir, "train")
            eval_streams, yte_np = read_shd(data_dir, "test")
            sensor, classes = SHD_SENSOR, list(train_streams.classes)
            note = "Spiking Heidelberg Digits, 700 channels, token = channel id"
        if subset is not None:
            keep = balanced_subset(torch.as_tensor(ytr_np), int(subset), seed, len(classes)).numpy()
            train_streams, ytr_np = _Take(train_streams, keep), ytr_np[keep]
        aug_kw, simulated = {}, False
    if augment is True:
        aug = EventAugment.s7(sensor, seed=seed, **aug_kw)
    elif augment is False or augment is None:
        aug = None
    elif callable(augment):
        aug = augment
    else:
        raise ValueError(f"augment must be True, False or a callable f(events, rng), got {augment!r}")
    common = dict(sensor_size=sensor, max_events=max_events, seed=seed, classes=classes)
    train = EventSequenceDataset(train_streams, ytr_np, augment=aug, **common)
    evals = EventSequenceDataset(eval_streams, yte_np, augment=None, **common)
    info = SeqInfo(name=which, num_classes=len(classes), input_kind="tokens", vocab_size=vocab_size(sensor),
                   max_len=int(max_events or 0), classes=classes, train_size=len(train), eval_size=len(evals),
                   has_tau=True, simulated=simulated, note=note)
    return train, evals, info

"""Event arrays and what a model reads from them: the array format and its checks, tokens, time steps and
slicing into windows.

**Event arrays** follow tonic's conventions: a 1-D numpy structured array with fields ``x, y, t, p`` (any order,
integer fields; this module creates :data:`EVENT_DTYPE` = four little-endian int64 fields, which is what
``tonic.datasets.NMNIST`` uses), ``t`` in microseconds, sorted by ``t``. A sensor is tonic's ``(W, H, P)``
tuple: ``x`` is the column in ``[0, W)``, ``y`` the row in ``[0, H)``, ``P`` the number of polarities (2 for
cameras, 1 for the 700-channel cochlea sensors of SHD/SSC, whose ``x`` is the channel).

**Tokens** (:func:`tokenize`): an event becomes one integer ``T = 2·(x·H + y) + p``, a bijection of the
``W×H×2`` grid onto ``[0, 2·W·H)`` (S7 §5). For one-polarity sensors (``P = 1``, e.g. SHD's ``(700, 1, 1)``)
the polarity is ignored and ``T = x·H + y`` (= the channel id), vocabulary ``W·H`` (700).

**Time steps** (:func:`time_steps`): ``τ_k = (t_k − t_{k−1}) / 1000`` (ms), ``τ_0 = 0`` — causal, see there.

A recording set too large to hold in memory is a :class:`LazyStreams`: a sequence that reads (or simulates) each
event array when it is indexed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = [
    "DVS_GESTURE_SENSOR",
    "EVENT_DTYPE",
    "FIELDS",
    "NMNIST_SENSOR",
    "SHD_SENSOR",
    "LazyStreams",
    "check_event_ranges",
    "check_events",
    "check_sensor",
    "detokenize",
    "make_events",
    "require_event_fields",
    "slice_by_count",
    "slice_by_time",
    "sort_by_time",
    "time_steps",
    "tokenize",
    "vocab_size",
]

EVENT_DTYPE = np.dtype([("x", "<i8"), ("y", "<i8"), ("t", "<i8"), ("p", "<i8")])
FIELDS = ("x", "y", "t", "p")
NMNIST_SENSOR = (34, 34, 2)
DVS_GESTURE_SENSOR = (128, 128, 2)
SHD_SENSOR = (700, 1, 1)


# ----------------------------------------------------------------------------------------------- event arrays


def check_sensor(sensor_size) -> tuple[int, int, int]:
    """``(W, H, P)`` as ints from tonic's sensor tuple; ``ValueError`` unless W, H >= 1 and P is 1 or 2."""
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


def require_event_fields(events, where: str = "events") -> None:
    """``ValueError`` (naming ``where``) unless ``events`` is a 1-D structured array with fields x, y, t, p."""
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


def check_event_ranges(events, sensor, where: str) -> None:
    """``ValueError`` (naming ``where``, the field and the first bad event) unless every ``x`` is in ``[0, W)``,
    every ``y`` in ``[0, H)`` of ``sensor`` = ``(W, H, P)`` and every ``p`` is 0 or 1."""
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
    require_event_fields(events, where)
    t = events["t"]
    if t.size > 1:
        back = t[1:] < t[:-1]  # not np.diff: it wraps around for unsigned timestamps
        if back.any():
            k = int(np.flatnonzero(back)[0]) + 1
            raise ValueError(f"{where}: field 't' is not sorted: event {k} has t={t[k]} < t={t[k - 1]} of the event "
                             "before it (sort with events[np.argsort(events['t'], kind='stable')])")
    if sensor_size is not None:
        check_event_ranges(events, check_sensor(sensor_size), where)
    else:
        p = events["p"]
        if p.size and not np.isin(p, (0, 1)).all():
            raise ValueError(f"{where}: field 'p' holds values other than 0 and 1")
    return events


def sort_by_time(events: np.ndarray) -> np.ndarray:
    """``events`` sorted by ``t`` (stable; the array itself when it is sorted already)."""
    t = events["t"]
    if t.size > 1 and (t[1:] < t[:-1]).any():
        return events[np.argsort(t, kind="stable")]
    return events


# ----------------------------------------------------------------------------------------------- tokens and time


def vocab_size(sensor_size) -> int:
    """Number of distinct tokens: ``2·W·H`` for two-polarity sensors, ``W·H`` for one-polarity ones."""
    w, h, p = check_sensor(sensor_size)
    return p * w * h


def tokenize(events: np.ndarray, sensor_size) -> np.ndarray:
    """int64 tokens ``T = 2·(x·H + y) + p`` (``P = 2``) or ``T = x·H + y`` (``P = 1``; ``p`` ignored).

    S7 (§5 of the design notes) replaced EventSSM's ``x·y + W·H·p``, which collides (e.g. (2, 3) and (3, 2)), with
    ``2·(x·s + y) + p``. **Deviation from the official code:** it uses ``s = resolution[0] = W``, a bijection only
    when ``W >= H`` (for ``W < H``, (x, y) and (x + 1, y − W) collide). We use ``s = H``, the number of ``y``
    values, so the map is a bijection onto ``[0, vocab_size)`` for every sensor; for square sensors (DVS128,
    N-MNIST) both give the same tokens. Out-of-range coordinates raise ``ValueError``.
    """
    sensor = check_sensor(sensor_size)
    require_event_fields(events)
    check_event_ranges(events, sensor, "tokenize")
    w, h, p = sensor
    pix = events["x"].astype(np.int64) * h + events["y"].astype(np.int64)
    return 2 * pix + events["p"].astype(np.int64) if p == 2 else pix


def detokenize(tokens, sensor_size) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(x, y, p)`` int64 arrays from tokens, the inverse of :func:`tokenize` (``p = 0`` for ``P = 1``)."""
    w, h, p = check_sensor(sensor_size)
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


# ----------------------------------------------------------------------------------------------- lazy streams


class LazyStreams(Sequence):
    """A read-on-demand sequence of event arrays: ``len()`` and ``[i]`` (picklable for DataLoader workers)."""

    def __getitem__(self, i):  # pragma: no cover - abstract
        raise NotImplementedError


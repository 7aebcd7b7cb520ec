"""Augmentations of event arrays (tonic's and EventSSM's, with the deviations each docstring names) and
:class:`EventAugment`, which chains them with a probability each (the S7 / EventSSM recipe: :meth:`EventAugment.s7`).

Each function takes an event array and returns a new one with the same fields and dtype, sorted by t and inside the
sensor. Random ones take a ``np.random.Generator`` (keyword ``rng``). A parameter given as a ``(low, high)`` tuple
is drawn uniformly from that range with ``rng`` (tonic's convention; integers inclusive of both ends).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence

import numpy as np

from .format import check_sensor

__all__ = [
    "AUGMENTATIONS",
    "EventAugment",
    "drop_event",
    "drop_event_chunk",
    "flip_lr",
    "flip_polarity",
    "flip_ud",
    "roll",
    "rotate",
    "scale",
    "spatial_jitter",
    "time_jitter",
    "time_skew",
    "uniform_noise",
]


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
    w, h, pol = check_sensor(sensor_size)
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
    w, h, pol = check_sensor(sensor_size)
    std = _draw(std, rng)
    if std < 0:
        raise ValueError(f"std={std} must be >= 0")
    n = len(events)
    x = events["x"] + (rng.normal(0.0, std, n) if w > 1 else 0.0)
    y = events["y"] + (rng.normal(0.0, std, n) if h > 1 else 0.0)
    return _moved(events, (w, h, pol), np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))


def flip_lr(events: np.ndarray, sensor_size) -> np.ndarray:
    """``x ← W − 1 − x`` (tonic ``RandomFlipLR`` with ``p=1``)."""
    w, _, _ = check_sensor(sensor_size)
    out = events.copy()
    out["x"] = w - 1 - events["x"]
    return out


def flip_ud(events: np.ndarray, sensor_size) -> np.ndarray:
    """``y ← H − 1 − y`` (tonic ``RandomFlipUD`` with ``p=1``)."""
    _, h, _ = check_sensor(sensor_size)
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
    sensor = check_sensor(sensor_size)
    dx, dy = _draw(dx, rng, integer=True), _draw(dy, rng, integer=True)
    return _moved(events, sensor, events["x"] + float(dx), events["y"] + float(dy))


def rotate(events: np.ndarray, sensor_size, angle_deg, *, rng: np.random.Generator | None = None) -> np.ndarray:
    """Rotate by ``angle_deg`` about the sensor centre; events that leave the sensor are dropped (EventSSM's
    ``Rotate`` clips them onto the border instead)."""
    w, h, pol = check_sensor(sensor_size)
    a = math.radians(_draw(angle_deg, rng))
    cx, cy = (w - 1) / 2, (h - 1) / 2
    x, y = events["x"] - cx, events["y"] - cy
    return _moved(events, (w, h, pol), x * math.cos(a) - y * math.sin(a) + cx, x * math.sin(a) + y * math.cos(a) + cy)


def scale(events: np.ndarray, sensor_size, factor, *, rng: np.random.Generator | None = None) -> np.ndarray:
    """Scale coordinates by ``factor`` about the sensor centre; events that leave the sensor are dropped."""
    w, h, pol = check_sensor(sensor_size)
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
        self.sensor_size = check_sensor(sensor_size)
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
        w, h, _ = check_sensor(sensor_size)
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


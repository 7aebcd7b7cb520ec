"""Event data as S7 sequence datasets: :class:`EventSequenceDataset` turns event streams into items
``({"tokens": int64 (L,), "tau": float32 (L,)}, label)`` (the item format of
:mod:`statelayers.data.sequence_base`), and :func:`build_event_datasets` builds the named event sets of
:data:`EVENT_DATASETS` (nothing is downloaded)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..images import FASHION_MNIST_CLASSES, balanced_subset, fashion_mnist_root, load_fashion_mnist_cached
from ..sequence_base import SeqInfo
from .augment import EventAugment
from .format import (
    DVS_GESTURE_SENSOR,
    NMNIST_SENSOR,
    SHD_SENSOR,
    LazyStreams,
    check_sensor,
    require_event_fields,
    time_steps,
    tokenize,
    vocab_size,
)
from .readers import DVS_GESTURE_CLASSES, read_dvs_gesture, read_shd
from .simulate import SimulatedEventStreams

__all__ = ["EVENT_DATASETS", "EventSequenceDataset", "build_event_datasets"]

EVENT_DATASETS: dict[str, str] = {
    "events_fashion_mnist": "SIMULATED events from Fashion-MNIST (saccade motion + log-intensity threshold, "
                            "34x34x2 sensor as N-MNIST), 60,000 / 10,000 streams, 10 classes",
    "dvs_gesture": "IBM DVS128 Gesture in tonic's layout (--data-dir), 128x128x2 sensor, 11 classes",
    "shd": "Spiking Heidelberg Digits shd_train.h5 / shd_test.h5 (--data-dir), 700 channels, 20 classes",
}
_ALIASES = {"events_fashion_mnist": "events_fashion_mnist", "events_fashion": "events_fashion_mnist",
            "dvs_gesture": "dvs_gesture", "dvsgesture": "dvs_gesture", "shd": "shd"}


class _Take(LazyStreams):
    """``streams[indices[i]]``."""

    def __init__(self, streams: Sequence, indices: Sequence[int]):
        self.streams, self.indices = streams, [int(i) for i in indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.streams[self.indices[i]]


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
        self.sensor_size = check_sensor(sensor_size)
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
        require_event_fields(events, f"stream {i}")
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
        xtr, ytr, xte, yte = load_fashion_mnist_cached(fashion_mnist_root(data_dir))
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

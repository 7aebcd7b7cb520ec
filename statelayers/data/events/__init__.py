"""Event-camera (and spike-train) data for S7, one module per concern:

* :mod:`~statelayers.data.events.format` — event arrays (tonic's structured ``x, y, t, p`` arrays, ``t`` in µs),
  their checks, the tokens ``T = 2·(x·H + y) + p``, the causal time steps ``τ`` (ms) and slicing into windows;
* :mod:`~statelayers.data.events.augment` — the augmentations and :class:`EventAugment` (the S7 / EventSSM recipe);
* :mod:`~statelayers.data.events.readers` — N-MNIST ``.bin``, ``.npy``/``.npz`` event arrays, DVS128 Gesture and
  SHD files;
* :mod:`~statelayers.data.events.simulate` — SIMULATED events of still images seen by a moving event camera;
* :mod:`~statelayers.data.events.datasets` — :class:`EventSequenceDataset` (items
  ``({"tokens": int64 (L,), "tau": float32 (L,)}, label)``, the item format of
  :mod:`statelayers.data.sequence_base`; batch them with ``pad_collate``) and :func:`build_event_datasets`.

**Datasets** (:func:`build_event_datasets`, nothing is downloaded):

* ``"events_fashion_mnist"`` — **simulated** events: each Fashion-MNIST image (Debian's
  ``dataset-fashion-mnist``) is moved along a saccade path in front of a simulated 34×34 event camera
  (:func:`simulate_events`), as N-MNIST was recorded from MNIST. Not a recording; labelled "simulated".
* ``"dvs_gesture"`` — IBM DVS128 Gesture in the layout tonic 1.7 writes (:func:`read_dvs_gesture`).
* ``"shd"`` — Spiking Heidelberg Digits, the ``shd_train.h5`` / ``shd_test.h5`` files (:func:`read_shd`).
"""

from .augment import (
    AUGMENTATIONS,
    EventAugment,
    drop_event,
    drop_event_chunk,
    flip_lr,
    flip_polarity,
    flip_ud,
    roll,
    rotate,
    scale,
    spatial_jitter,
    time_jitter,
    time_skew,
    uniform_noise,
)
from .datasets import EVENT_DATASETS, EventSequenceDataset, build_event_datasets
from .format import (
    DVS_GESTURE_SENSOR,
    EVENT_DTYPE,
    FIELDS,
    NMNIST_SENSOR,
    SHD_SENSOR,
    check_events,
    detokenize,
    make_events,
    slice_by_count,
    slice_by_time,
    time_steps,
    tokenize,
    vocab_size,
)
from .readers import (
    DVS_GESTURE_CLASSES,
    SHD_CLASSES,
    EventFiles,
    SHDStreams,
    load_events,
    read_dvs_gesture,
    read_dvs_gesture_file,
    read_nmnist_bin,
    read_shd,
)
from .simulate import SIMULATION_SEED, SimulatedEventStreams, simulate_events

__all__ = [
    "AUGMENTATIONS",
    "DVS_GESTURE_CLASSES",
    "DVS_GESTURE_SENSOR",
    "EVENT_DATASETS",
    "EVENT_DTYPE",
    "FIELDS",
    "NMNIST_SENSOR",
    "SHD_CLASSES",
    "SHD_SENSOR",
    "SIMULATION_SEED",
    "EventAugment",
    "EventFiles",
    "EventSequenceDataset",
    "SHDStreams",
    "SimulatedEventStreams",
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

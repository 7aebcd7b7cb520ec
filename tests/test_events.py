"""Event data for S7: arrays, tokens, causal time steps, slicing, augmentations (against tonic), readers (real N-MNIST
file, tonic's DVS-Gesture and SHD layouts as tiny fixtures), simulated events, datasets and their batches, errors."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from numpy.lib import recfunctions as rfn

from statelayers.data import events as E
from statelayers.data import images as D
from statelayers.data.images import DatasetMissing
from statelayers.data.sequences import PAD_TOKEN, SeqInfo, pad_collate

TONIC_DVS_DTYPE = np.dtype([("x", np.int16), ("y", np.int16), ("p", bool), ("t", np.int64)])


def events_dir() -> Path:
    env = os.environ.get("STATELAYERS_EVENTS_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared/data/events"


def sample_or_skip(name: str) -> Path:
    path = events_dir() / name
    if not path.is_file():
        pytest.skip(f"{path} is not on this machine (set STATELAYERS_EVENTS_DIR to the folder of sample recordings)")
    return path


def random_events(n=500, sensor=(34, 34, 2), seed=0, dtype=E.EVENT_DTYPE, t_max=100_000):
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(0, t_max, n))
    ev = np.zeros(n, dtype=dtype)
    ev["x"], ev["y"] = rng.integers(0, sensor[0], n), rng.integers(0, sensor[1], n)
    ev["p"], ev["t"] = rng.integers(0, sensor[2], n), t
    return ev


def assert_valid(ev, sensor, dtype=E.EVENT_DTYPE):
    assert ev.dtype == dtype
    E.check_events(ev, sensor)


# ----------------------------------------------------------------------------------------------- arrays


def test_make_events_and_check_events_name_the_field():
    ev = E.make_events([1, 2, 3], [0, 1, 2], [10, 20, 20], 1)
    assert ev.dtype == E.EVENT_DTYPE and ev.dtype.names == ("x", "y", "t", "p") and ev["p"].tolist() == [1, 1, 1]
    assert E.check_events(ev, (4, 3, 2)) is ev
    with pytest.raises(ValueError, match="'x'.*outside"):
        E.check_events(ev, (3, 3, 2))
    with pytest.raises(ValueError, match="'y'.*outside"):
        E.check_events(ev, (4, 2, 2))
    with pytest.raises(ValueError, match="'t' is not sorted"):
        E.check_events(E.make_events([0, 0], [0, 0], [5, 4], [0, 0]))
    with pytest.raises(ValueError, match="'p'"):
        E.check_events(E.make_events([0], [0], [0], [2]), (1, 1, 2))
    with pytest.raises(ValueError, match="lacks field.*'p'"):
        E.check_events(np.zeros(3, dtype=[("x", int), ("y", int), ("t", int)]))
    with pytest.raises(ValueError, match="not a structured event array"):
        E.check_events(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="sensor_size"):
        E.vocab_size((34, 34, 3))


# ----------------------------------------------------------------------------------------------- tokens and τ


@pytest.mark.parametrize("sensor", [(5, 7, 2), (7, 5, 2), (34, 34, 2), (1, 1, 2)])
def test_tokenize_is_a_bijection_on_the_full_grid(sensor):
    w, h, _ = sensor
    x, y, p = (a.ravel() for a in np.meshgrid(np.arange(w), np.arange(h), np.arange(2), indexing="ij"))
    ev = E.make_events(x, y, 0, p)
    tok = E.tokenize(ev, sensor)
    assert tok.dtype == np.int64 and E.vocab_size(sensor) == 2 * w * h
    assert np.array_equal(np.sort(tok), np.arange(2 * w * h))  # onto [0, 2WH), no collision
    x2, y2, p2 = E.detokenize(tok, sensor)
    assert np.array_equal(x2, x) and np.array_equal(y2, y) and np.array_equal(p2, p)
    assert np.array_equal(E.tokenize(E.make_events(x2, y2, 0, p2), sensor), tok)  # round trip both ways


def test_official_width_stride_collides_when_width_is_smaller_than_height():
    w, h = 5, 7  # the official code's T = 2(x·W + y) + p; ours uses H
    x, y, p = (a.ravel() for a in np.meshgrid(np.arange(w), np.arange(h), np.arange(2), indexing="ij"))
    official = 2 * (x * w + y) + p
    assert len(np.unique(official)) < 2 * w * h  # e.g. (0, 5) and (1, 0) share a token
    assert 2 * (0 * w + 5) == 2 * (1 * w + 0)
    assert len(np.unique(E.tokenize(E.make_events(x, y, 0, p), (w, h, 2)))) == 2 * w * h
    # on square sensors (DVS128, N-MNIST) both are the same map
    ev = random_events(200, (128, 128, 2))
    assert np.array_equal(E.tokenize(ev, (128, 128, 2)), 2 * (ev["x"] * 128 + ev["y"]) + ev["p"])


def test_one_polarity_sensor_tokens_are_channel_ids_and_bad_tokens_raise():
    ev = E.make_events([0, 699, 5], 0, [0, 1, 2], 1)  # tonic's SHD events carry p = 1
    assert E.tokenize(ev, E.SHD_SENSOR).tolist() == [0, 699, 5] and E.vocab_size(E.SHD_SENSOR) == 700
    assert [a.tolist() for a in E.detokenize([0, 699], E.SHD_SENSOR)] == [[0, 699], [0, 0], [0, 0]]
    with pytest.raises(ValueError, match="'x'"):
        E.tokenize(E.make_events([700], 0, 0, 1), E.SHD_SENSOR)
    with pytest.raises(ValueError, match="tokens must be in"):
        E.detokenize([2 * 34 * 34], E.NMNIST_SENSOR)


def test_time_steps_are_causal_backward_differences():
    t = np.array([10, 10, 1010, 3010, 3510])
    tau = E.time_steps(t)
    assert tau.dtype == np.float32 and tau.tolist() == [0.0, 0.0, 1.0, 2.0, 0.5]  # ms
    assert E.time_steps(E.make_events([0] * 5, 0, t, 0), unit_us=1.0).tolist() == [0, 0, 1000, 2000, 500]
    for k in range(1, len(t) + 1):  # causal: τ of a prefix is the prefix of τ (computable online)
        assert np.array_equal(E.time_steps(t[:k]), tau[:k])
    assert len(E.time_steps(t)) == len(t)  # no event is dropped
    assert E.time_steps(np.array([], dtype=np.int64)).shape == (0,)
    with pytest.raises(ValueError, match="not sorted"):
        E.time_steps(np.array([5, 3]))


# ----------------------------------------------------------------------------------------------- slicing


def test_slicing_matches_tonic():
    slicers = pytest.importorskip("tonic.slicers")
    ev = random_events(1000, t_max=50_000, seed=3)
    for count, overlap, inc in [(100, 0, False), (128, 32, False), (128, 32, True), (2000, 10, False), (1000, 0, True)]:
        ours = E.slice_by_count(ev, count, overlap, include_incomplete=inc, return_indices=True)
        ref = slicers.SliceByEventCount(count, overlap, inc).get_slice_metadata(ev, None)
        assert ours == [(int(a), min(int(b), len(ev))) for a, b in ref], (count, overlap, inc)
        got = E.slice_by_count(ev, count, overlap, include_incomplete=inc)
        assert [len(s) for s in got] == [b - a for a, b in ours]
    for window, overlap, inc in [(5000, 0, False), (7000, 2000, False), (7000, 2000, True), (10**6, 0, False)]:
        ours = E.slice_by_time(ev, window, overlap, include_incomplete=inc, return_indices=True)
        ref = slicers.SliceByTime(window, overlap, inc).get_slice_metadata(ev, None)
        assert ours == [(int(a), int(b)) for a, b in ref], (window, overlap, inc)
        for (a, b), s in zip(ours, E.slice_by_time(ev, window, overlap, include_incomplete=inc)):
            assert np.array_equal(s, ev[a:b])


def test_slicing_basics_and_errors():
    ev = random_events(10)
    assert [len(s) for s in E.slice_by_count(ev, 4)] == [4, 4]
    assert [len(s) for s in E.slice_by_count(ev, 4, include_incomplete=True)] == [4, 4, 2]
    assert [len(s) for s in E.slice_by_count(ev, 4, overlap=2)] == [4, 4, 4, 4]
    assert E.slice_by_count(ev[:0], 4) == [] and E.slice_by_time(ev[:0], 10) == []
    with pytest.raises(ValueError, match="overlap"):
        E.slice_by_count(ev, 4, overlap=4)
    with pytest.raises(ValueError, match="overlap_us"):
        E.slice_by_time(ev, 10, 10)


# ----------------------------------------------------------------------------------------------- augmentations


def test_deterministic_augmentations_equal_tonic():
    tonic = pytest.importorskip("tonic")
    from tonic import functional as TF

    for dtype, sensor in [(E.EVENT_DTYPE, (34, 34, 2)), (TONIC_DVS_DTYPE, (128, 128, 2))]:
        ev = random_events(400, sensor, dtype=dtype)
        for c, o in [(1.3, 100), (0.7, -50), (1 / 1.1, 0), (1.1, 12.5)]:
            assert np.array_equal(E.time_skew(ev, c, o), TF.time_skew_numpy(ev.copy(), c, o))
        assert np.array_equal(E.flip_lr(ev, sensor), tonic.transforms.RandomFlipLR(sensor, p=1.0)(ev))
        assert np.array_equal(E.flip_ud(ev, sensor), tonic.transforms.RandomFlipUD(sensor, p=1.0)(ev))
        assert np.array_equal(E.flip_polarity(ev), tonic.transforms.RandomFlipPolarity(p=1.0)(ev))
        # drop_event removes exactly as many events as tonic's (round(p·N)), keeping the rest in order
        np.random.seed(0)
        for p in (0.0, 0.1, 0.33, 1.0):
            kept = E.drop_event(ev, p, rng=np.random.default_rng(0))
            assert len(kept) == len(TF.drop_event_numpy(ev, p)) and np.isin(kept, ev).all()
            assert_valid(kept, sensor, dtype)


def test_random_augmentations_keep_fields_order_and_sensor():
    sensor = (34, 34, 2)
    for dtype in (E.EVENT_DTYPE, TONIC_DVS_DTYPE):
        ev = random_events(600, sensor, dtype=dtype)
        calls = {
            "drop_event": lambda e, r: E.drop_event(e, 0.2, rng=r),
            "drop_event_chunk": lambda e, r: E.drop_event_chunk(e, 0.3, rng=r),
            "uniform_noise": lambda e, r: E.uniform_noise(e, sensor, 50, rng=r),
            "time_skew": lambda e, r: E.time_skew(e, (0.9, 1.1), (0, 100), rng=r),
            "time_jitter": lambda e, r: E.time_jitter(e, 500.0, rng=r),
            "spatial_jitter": lambda e, r: E.spatial_jitter(e, sensor, 1.5, rng=r),
            "roll": lambda e, r: E.roll(e, sensor, (-4, 4), (-4, 4), rng=r),
            "rotate": lambda e, r: E.rotate(e, sensor, (-20, 20), rng=r),
            "scale": lambda e, r: E.scale(e, sensor, (0.6, 1.6), rng=r),
        }
        for name, fn in calls.items():
            a, b = fn(ev, np.random.default_rng(1)), fn(ev, np.random.default_rng(1))
            assert np.array_equal(a, b), name  # a function of the generator
            assert_valid(a, sensor, dtype)
            assert a is not ev
        assert len(E.uniform_noise(ev, sensor, 50, rng=np.random.default_rng(0))) == 650
        n_chunk = len(ev) - len(E.drop_event_chunk(ev, 0.3, rng=np.random.default_rng(0)))
        assert 1 <= n_chunk <= 180
    ev = random_events(300, sensor)
    assert np.array_equal(E.roll(ev, sensor, 0, 0), ev) and np.array_equal(E.rotate(ev, sensor, 0.0), ev)
    moved = E.roll(ev, sensor, 3, -2)
    inside = (ev["x"] + 3 < 34) & (ev["y"] - 2 >= 0)
    assert np.array_equal(moved["x"], ev["x"][inside] + 3) and np.array_equal(moved["y"], ev["y"][inside] - 2)
    # a one-row sensor (SHD) is jittered along x only, so no event leaves it through y
    shd = E.make_events(np.arange(700), 0, np.arange(700), 1)
    assert len(E.spatial_jitter(shd, E.SHD_SENSOR, 1.0, rng=np.random.default_rng(0))) > 690
    with pytest.raises(ValueError, match="needs rng"):
        E.time_skew(ev, (0.9, 1.1))
    with pytest.raises(ValueError, match="positive"):
        E.time_skew(ev, -1.0)


def test_event_augment_composes_seeded_steps():
    sensor = (128, 128, 2)
    ev = random_events(3000, sensor)
    aug = E.EventAugment.s7(sensor, seed=5)
    names = [s[0] for s in aug.steps]
    assert names[:6] == ["drop_event_chunk", "drop_event", "uniform_noise", "time_skew", "time_jitter",
                         "spatial_jitter"] and {"roll", "rotate", "scale"} <= set(names)
    a = aug(ev, np.random.default_rng(7))
    assert np.array_equal(a, aug(ev, np.random.default_rng(7)))
    assert not np.array_equal(a, aug(ev, np.random.default_rng(8)))
    assert_valid(a, sensor)
    assert 1500 < len(a) < 3100
    own1, own2 = E.EventAugment.s7(sensor, seed=5), E.EventAugment.s7(sensor, seed=5)
    assert np.array_equal(own1(ev), own2(ev))  # its own seeded generator when none is passed
    assert "roll" not in [s[0] for s in E.EventAugment.s7(E.SHD_SENSOR).steps]  # no 2-D geometry on SHD
    off = E.EventAugment(sensor, [("flip_lr", 0.0, {}), ("time_jitter", 0.0, {"std_us": 1e6})])
    assert np.array_equal(off(ev, np.random.default_rng(0)), ev)
    on = E.EventAugment(sensor, [("flip_lr", 1.0, {})])
    assert np.array_equal(on(ev, np.random.default_rng(0)), E.flip_lr(ev, sensor))
    with pytest.raises(ValueError, match="unknown augmentation"):
        E.EventAugment(sensor, [("mixup", 0.5, {})])
    with pytest.raises(ValueError, match="bad arguments"):
        E.EventAugment(sensor, [("drop_event", 0.5, {"prob": 0.1})])
    with pytest.raises(ValueError, match="probability"):
        E.EventAugment(sensor, [("drop_event", 1.5, {"p": 0.1})])


# ----------------------------------------------------------------------------------------------- N-MNIST, npy/npz


def nmnist_bytes(rows) -> bytes:
    out = bytearray()
    for x, y, p, t in rows:
        out += bytes([x, y, (p << 7) | (t >> 16), (t >> 8) & 0xFF, t & 0xFF])
    return bytes(out)


def test_nmnist_reader_equals_tonic_on_the_real_recording():
    io = pytest.importorskip("tonic.io")
    path = sample_or_skip("sample_nmnist.bin")
    ours = E.read_nmnist_bin(path)
    ref = io.read_mnist_file(str(path), dtype=np.dtype([("x", int), ("y", int), ("t", int), ("p", int)]))
    assert len(ours) == len(ref) > 1000
    for f in ("x", "y", "t", "p"):
        assert np.array_equal(ours[f], ref[f]), f
    assert_valid(ours, E.NMNIST_SENSOR)
    tok = E.tokenize(ours, E.NMNIST_SENSOR)
    assert tok.min() >= 0 and tok.max() < E.vocab_size(E.NMNIST_SENSOR) == 2312
    tau = E.time_steps(ours)
    assert tau[0] == 0 and (tau >= 0).all() and abs(tau.sum() - (ours["t"][-1] - ours["t"][0]) / 1000) < 1e-2


def test_nmnist_reader_overflow_markers_and_corrupt_files(tmp_path):
    io = pytest.importorskip("tonic.io")
    good = tmp_path / "00001.bin"
    good.write_bytes(nmnist_bytes([(1, 2, 1, 100), (0, 240, 0, 0), (3, 4, 0, 50), (33, 33, 1, 2**23 - 1)]))
    ours = E.read_nmnist_bin(good)
    ref = io.read_mnist_file(str(good), dtype=E.EVENT_DTYPE)
    assert np.array_equal(ours, ref) and ours["t"].tolist() == [100, 50 + 8192, 2**23 - 1 + 8192]
    trunc = tmp_path / "trunc.bin"
    trunc.write_bytes(good.read_bytes()[:-2])
    with pytest.raises(ValueError, match="trunc.bin.*truncated or corrupt"):
        E.read_nmnist_bin(trunc)
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty.bin"):
        E.read_nmnist_bin(empty)
    junk = tmp_path / "junk.bin"
    junk.write_bytes(nmnist_bytes([(200, 3, 0, 5)]))
    with pytest.raises(ValueError, match="junk.bin.*'x'"):
        E.read_nmnist_bin(junk)
    assert len(E.read_nmnist_bin(junk, sensor_size=None)) == 1  # N-Caltech101-size coordinates when unbounded


def test_load_events_npy_npz_and_missing_fields(tmp_path):
    ev = random_events(50, dtype=TONIC_DVS_DTYPE)
    np.save(tmp_path / "a.npy", ev)
    got = E.load_events(tmp_path / "a.npy", sensor_size=(34, 34, 2))
    assert got.dtype == E.EVENT_DTYPE and all(np.array_equal(got[f], ev[f].astype(np.int64)) for f in "xytp")
    np.savez(tmp_path / "b.npz", x=ev["x"], y=ev["y"], t=ev["t"], p=ev["p"])
    assert np.array_equal(E.load_events(tmp_path / "b.npz"), got)
    np.savez(tmp_path / "c.npz", events=ev)
    assert np.array_equal(E.load_events(tmp_path / "c.npz"), got)
    np.save(tmp_path / "d.npy", np.zeros(3, dtype=[("x", int), ("y", int), ("t", int)]))
    with pytest.raises(ValueError, match="d.npy lacks field.*'p'"):
        E.load_events(tmp_path / "d.npy")
    np.save(tmp_path / "e.npy", np.zeros((3, 4)))
    with pytest.raises(ValueError, match="e.npy.*not a structured"):
        E.load_events(tmp_path / "e.npy")
    np.savez(tmp_path / "f.npz", a=np.zeros(3), b=np.ones(2))
    with pytest.raises(ValueError, match="f.npz"):
        E.load_events(tmp_path / "f.npz")
    (tmp_path / "g.npy").write_bytes(b"not numpy")
    with pytest.raises(ValueError, match="g.npy"):
        E.load_events(tmp_path / "g.npy")
    with pytest.raises(ValueError, match="'x'"):
        E.load_events(tmp_path / "a.npy", sensor_size=(5, 5, 2))


# ----------------------------------------------------------------------------------------------- DVS-Gesture


def write_gesture_tree(root: Path, seed=0, under_tonic_folder=True):
    """Tiny DVS-Gesture in tonic's layout: (N, 4) int arrays x, y, p, t (ms) named <label>.npy per user folder."""
    base = root / "DVSGesture" if under_tonic_folder else root
    rng = np.random.default_rng(seed)
    layout = {"ibmGestureTrain": {"user01_fluorescent": [0, 3, 10, 4], "user02_led": [1, 3, 5, 7, 9, 6, 8],
                                "user05_lab": [2]},
              "ibmGestureTest": {"user24_natural": [0, 4, 8, 10]}}
    for split, users in layout.items():
        for user, labels in users.items():
            (base / split / user).mkdir(parents=True)
            for label in labels:
                n = int(rng.integers(30, 80))
                ev = np.zeros(n, dtype=TONIC_DVS_DTYPE)
                ev["x"], ev["y"] = rng.integers(0, 128, n), rng.integers(0, 128, n)
                ev["p"], ev["t"] = rng.integers(0, 2, n), np.sort(rng.integers(0, 6000, n))  # ms
                np.save(base / split / user / f"{label}.npy", rfn.structured_to_unstructured(ev))
    return base


def test_dvs_gesture_reader_matches_tonic_layout(tmp_path, monkeypatch):
    tonic_datasets = pytest.importorskip("tonic.datasets")
    write_gesture_tree(tmp_path)
    streams, labels = E.read_dvs_gesture(tmp_path, "train")
    assert len(streams) == 12 and labels.tolist() == [0, 3, 4, 10, 1, 3, 5, 6, 7, 8, 9, 2]  # by folder, then label
    assert streams.users == [1] * 4 + [2] * 7 + [5] and streams.lighting[0] == "fluorescent"
    monkeypatch.setattr(tonic_datasets.DVSGesture, "_check_exists", lambda self: True)  # never download
    ref = tonic_datasets.DVSGesture(str(tmp_path), train=True)
    assert sorted(map(str, streams.paths)) == sorted(ref.data)
    for j, path in enumerate(ref.data):
        i = [str(p) for p in streams.paths].index(path)
        ev_ref, y_ref = ref[j]
        ours = streams[i]
        assert labels[i] == y_ref and len(ours) == len(ev_ref)
        for f in ("x", "y", "t", "p"):
            assert np.array_equal(ours[f], ev_ref[f].astype(np.int64)), f
        assert_valid(ours, E.DVS_GESTURE_SENSOR)
    test_streams, test_labels = E.read_dvs_gesture(tmp_path / "DVSGesture", "test")  # the inner folder works too
    assert len(test_streams) == 4 and test_labels.tolist() == [0, 4, 8, 10]


def test_dvs_gesture_datasets_and_errors(tmp_path):
    write_gesture_tree(tmp_path, under_tonic_folder=False)
    train, evals, info = E.build_event_datasets("dvs-gesture", data_dir=tmp_path, max_events=40, seed=1)
    assert isinstance(info, SeqInfo) and (info.name, info.num_classes, info.vocab_size) == ("dvs_gesture", 11, 32768)
    assert (info.input_kind, info.has_tau, info.simulated, info.max_len) == ("tokens", True, False, 40)
    assert (len(train), len(evals)) == (info.train_size, info.eval_size) == (12, 4)
    assert train.augment is not None and evals.augment is None
    inputs, label = evals[0]
    raw = evals.streams[0]
    assert np.array_equal(inputs["tokens"].numpy(), E.tokenize(raw[:40], E.DVS_GESTURE_SENSOR)) and label == 0
    assert inputs["tau"].dtype == torch.float32 and inputs["tau"][0] == 0
    for i in range(len(train)):
        x, _ = train[i]
        assert 0 < len(x["tokens"]) <= 40 and int(x["tokens"].max()) < 32768
    sub, _, info2 = E.build_event_datasets("dvs_gesture", data_dir=tmp_path, subset=3, seed=0, augment=False)
    assert len(sub) == info2.train_size == 3 and sub.augment is None
    with pytest.raises(DatasetMissing, match="ibmGestureTrain.*columns x, y, p, t"):
        E.build_event_datasets("dvs_gesture", data_dir=tmp_path / "nowhere")
    with pytest.raises(DatasetMissing, match="data directory"):
        E.build_event_datasets("dvs_gesture")
    bad = tmp_path / "ibmGestureTrain" / "user01_fluorescent" / "3.npy"
    np.save(bad, np.zeros((5, 3)))
    with pytest.raises(ValueError, match="3.npy.*\\(N, 4\\)"):
        E.read_dvs_gesture_file(bad)
    np.save(bad, np.array([[130, 1, 0, 1]]))
    with pytest.raises(ValueError, match="3.npy.*'x'"):
        E.read_dvs_gesture_file(bad)
    np.save(tmp_path / "ibmGestureTrain" / "user01_fluorescent" / "11.npy", np.zeros((1, 4)))
    with pytest.raises(ValueError, match="11.npy.*label 0..10"):
        E.read_dvs_gesture(tmp_path)


# ----------------------------------------------------------------------------------------------- SHD


def write_shd(path: Path, n: int, seed=0):
    """An SHD file as the Zenke lab ships it: ragged (vlen) spikes/times (s, float16) and spikes/units (uint16)."""
    h5py = pytest.importorskip("h5py")
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        times = f.create_dataset("spikes/times", (n,), dtype=h5py.vlen_dtype(np.dtype("float16")))
        units = f.create_dataset("spikes/units", (n,), dtype=h5py.vlen_dtype(np.dtype("uint16")))
        for i in range(n):
            k = int(rng.integers(20, 60))
            times[i] = np.sort(rng.uniform(0, 1.0, k)).astype(np.float16)
            units[i] = rng.integers(0, 700, k).astype(np.uint16)
        f.create_dataset("labels", data=(np.arange(n) % 20).astype(np.uint8))
        f.create_dataset("extra/keys", data=[k.encode() for k in E.SHD_CLASSES])
        f.create_dataset("extra/speaker", data=rng.integers(0, 10, n).astype(np.uint16))


def test_shd_reader_matches_tonic(tmp_path, monkeypatch):
    tonic_datasets = pytest.importorskip("tonic.datasets")
    write_shd(tmp_path / "SHD" / "shd_train.h5", 24)
    streams, labels = E.read_shd(tmp_path, "train")
    assert len(streams) == 24 and labels.tolist() == [i % 20 for i in range(24)] and streams.classes[10] == "null"
    monkeypatch.setattr(tonic_datasets.SHD, "_check_exists", lambda self: True)  # never download
    ref = tonic_datasets.SHD(str(tmp_path), train=True)
    for i in (0, 5, 23):
        ev_ref, y_ref = ref[i]
        ours = streams[i]
        assert int(y_ref) == labels[i]
        assert np.array_equal(ours["t"], ev_ref["t"]) and np.array_equal(ours["x"], ev_ref["x"])
        assert np.array_equal(ours["p"], ev_ref["p"]) and (ours["y"] == 0).all()
        assert_valid(ours, E.SHD_SENSOR)
    import pickle

    again = pickle.loads(pickle.dumps(streams))  # DataLoader workers reopen the file
    assert np.array_equal(again[3], streams[3])


def test_shd_datasets_and_errors(tmp_path):
    h5py = pytest.importorskip("h5py")
    write_shd(tmp_path / "shd_train.h5", 40, seed=1)
    write_shd(tmp_path / "shd_test.h5", 10, seed=2)
    train, evals, info = E.build_event_datasets("shd", data_dir=tmp_path, subset=20, seed=0)
    assert (info.num_classes, info.vocab_size, info.train_size, info.eval_size) == (20, 700, 20, 10)
    assert sorted(train.targets.tolist()) == list(range(20))  # class-balanced
    inputs, label = evals[3]
    with h5py.File(tmp_path / "shd_test.h5") as f:
        units, times = f["spikes/units"][3], f["spikes/times"][3].astype(np.float64)
    order = np.argsort((times * 1e6).astype(np.int64), kind="stable")
    assert inputs["tokens"].tolist() == units[order].astype(np.int64).tolist() and label == 3  # token = channel
    expected_tau = np.diff((times[order] * 1e6).astype(np.int64), prepend=int(times[order][0] * 1e6)) / 1000
    assert np.allclose(inputs["tau"].numpy(), expected_tau, atol=1e-6)
    (tmp_path / "other").mkdir()
    with pytest.raises(DatasetMissing, match="shd_train.h5.*spikes/times"):
        E.read_shd(tmp_path / "other")
    (tmp_path / "other" / "shd_train.h5.zip").write_bytes(b"PK")
    with pytest.raises(DatasetMissing, match="unzip"):
        E.read_shd(tmp_path / "other")
    with h5py.File(tmp_path / "other" / "shd_train.h5", "w") as f:
        f.create_dataset("labels", data=np.zeros(2, np.uint8))
    with pytest.raises(ValueError, match="other/shd_train.h5 lacks spikes/times"):
        E.read_shd(tmp_path / "other")
    (tmp_path / "other" / "shd_train.h5").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a readable HDF5"):
        E.read_shd(tmp_path / "other")


# ----------------------------------------------------------------------------------------------- simulation


def shape_image(kind: str) -> np.ndarray:
    img = np.zeros((28, 28), np.uint8)
    if kind == "square":
        img[6:22, 6:22] = 255
    elif kind == "bar":
        img[2:26, 12:16] = 200
    elif kind == "ring":
        yy, xx = np.mgrid[:28, :28]
        img[np.abs(np.hypot(yy - 13.5, xx - 13.5) - 9) < 2.5] = 255
    return img


def test_simulated_events_are_deterministic_sorted_and_in_range():
    img = shape_image("square")
    a = E.simulate_events(img, rng=np.random.default_rng(3))
    b = E.simulate_events(img, rng=np.random.default_rng(3))
    c = E.simulate_events(img, rng=np.random.default_rng(4))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert_valid(a, E.NMNIST_SENSOR)
    assert 200 < len(a) < 5000 and 0 <= a["t"].min() and a["t"].max() < 100_000
    assert 0.3 < a["p"].mean() < 0.7  # a closed saccade path gives as many ON as OFF events
    assert np.array_equal(E.simulate_events(img.astype(np.float32) / 255, rng=np.random.default_rng(3)), a)
    streams = {k: E.simulate_events(shape_image(k), rng=np.random.default_rng(0)) for k in ("square", "bar", "ring")}
    hists = {k: np.bincount(E.tokenize(v, E.NMNIST_SENSOR), minlength=2312) for k, v in streams.items()}
    for k1 in hists:  # different images → different streams (where the events are)
        for k2 in hists:
            if k1 < k2:
                assert (hists[k1] > 0).sum() != (hists[k2] > 0).sum() or not np.array_equal(hists[k1], hists[k2])
                assert np.abs(hists[k1] - hists[k2]).sum() > 0.3 * (len(streams[k1]) + len(streams[k2]))
    assert len(E.simulate_events(np.zeros((28, 28), np.uint8), rng=np.random.default_rng(0))) == 0  # nothing moves
    with pytest.raises(ValueError, match="2-D"):
        E.simulate_events(np.zeros((1, 28, 28)), rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="does not fit"):
        E.simulate_events(np.zeros((40, 40)), rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        E.simulate_events(np.full((28, 28), 2.0), rng=np.random.default_rng(0))


def write_fake_fashion(root: Path, n_train=40, n_test=10):
    """Four tiny IDX files in Debian's layout (images drawn from three shapes, labels cycling 0..9)."""
    shapes = [shape_image(k) for k in ("square", "bar", "ring")]
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        imgs = np.stack([np.roll(shapes[i % 3], i % 5, axis=1) for i in range(n)])
        labels = (np.arange(n) % 10).astype(np.uint8)
        with gzip.open(root / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
            f.write(struct.pack(">IIII", 0x0803, n, 28, 28) + imgs.tobytes())
        with gzip.open(root / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(struct.pack(">II", 0x0801, n) + labels.tobytes())


def test_simulated_fashion_datasets_and_padded_batches(tmp_path):
    write_fake_fashion(tmp_path)
    train, evals, info = E.build_event_datasets("events_fashion_mnist", data_dir=tmp_path, subset=20, max_events=300,
                                                seed=2)
    assert info.simulated and "simulated from Fashion-MNIST" in info.note
    assert (info.num_classes, info.vocab_size, info.input_kind, info.has_tau) == (10, 2312, "tokens", True)
    assert (len(train), len(evals), info.train_size, info.eval_size, info.max_len) == (20, 10, 20, 10, 300)
    assert sorted(train.targets.tolist()) == sorted(list(range(10)) * 2)
    # eval items are fixed: the leading max_events events of a stream that does not depend on the run seed
    _, ev2, _ = E.build_event_datasets("events_fashion_mnist", data_dir=tmp_path, max_events=300, seed=9)
    x0, y0 = evals[0]
    assert torch.equal(x0["tokens"], ev2[0][0]["tokens"]) and y0 == 0 and len(x0["tokens"]) == 300
    full = evals.streams[0]
    assert np.array_equal(x0["tokens"].numpy(), E.tokenize(full[:300], E.NMNIST_SENSOR))
    # training items: augmented and cropped, a function of (seed, epoch, index)
    a, b = train[1][0], train[1][0]
    assert torch.equal(a["tokens"], b["tokens"]) and len(a["tokens"]) <= 300
    train.epoch = 1
    c = train[1][0]
    assert not torch.equal(a["tokens"], c["tokens"]) or not torch.equal(a["tau"], c["tau"])
    batch, labels = pad_collate([train[i] for i in range(4)] + [evals[0]])
    lengths = batch["lengths"]
    assert batch["tokens"].dtype == torch.int64 and batch["tau"].dtype == torch.float32 and labels.shape == (5,)
    assert batch["tokens"].shape == batch["tau"].shape == (5, int(lengths.max()))
    for i, n in enumerate(lengths.tolist()):
        assert (batch["tokens"][i, n:] == PAD_TOKEN).all() and (batch["tau"][i, n:] == 0).all()
        assert (batch["tokens"][i, :n] >= 0).all() and (batch["tokens"][i, :n] < 2312).all()
        assert batch["tau"][i, 0] == 0 and (batch["tau"][i, :n] >= 0).all()


def test_fashion_mnist_simulated_classes_differ():
    try:
        xtr, ytr, _, _ = D.load_fashion_mnist_cached(D.fashion_mnist_root(None))
    except DatasetMissing:
        pytest.skip("Fashion-MNIST is not installed (apt-get install -y dataset-fashion-mnist)")
    first = {c: int(np.flatnonzero(ytr.numpy() == c)[0]) for c in (1, 7, 8)}  # trouser, sneaker, bag
    streams = {c: E.simulate_events(xtr[i].numpy(), rng=np.random.default_rng(0)) for c, i in first.items()}
    for c, ev in streams.items():
        assert_valid(ev, E.NMNIST_SENSOR)
        assert 300 < len(ev) < 10_000, c
    toks = {c: set(E.tokenize(ev, E.NMNIST_SENSOR).tolist()) for c, ev in streams.items()}
    assert toks[1] != toks[7] != toks[8] != toks[1]
    train, evals, info = E.build_event_datasets("events_fashion_mnist", max_events=128)
    assert (len(train), len(evals)) == (60000, 10000) and info.simulated
    assert len(evals[9999][0]["tokens"]) == 128


def test_dataset_from_arrays_and_errors():
    sensor = (34, 34, 2)
    streams = [random_events(n, sensor, seed=n) for n in (5, 50, 1)]
    ds = E.EventSequenceDataset(streams, [0, 1, 2], sensor)
    x, y = ds[1]
    assert torch.equal(x["tokens"], torch.from_numpy(E.tokenize(streams[1], sensor))) and y == 1
    assert torch.equal(x["tau"], torch.from_numpy(E.time_steps(streams[1]["t"])))
    batch, labels = pad_collate([ds[i] for i in range(3)])
    assert batch["lengths"].tolist() == [5, 50, 1] and labels.tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="3 streams but 2 labels"):
        E.EventSequenceDataset(streams, [0, 1], sensor)
    with pytest.raises(ValueError, match="max_events"):
        E.EventSequenceDataset(streams, [0, 1, 2], sensor, max_events=0)
    with pytest.raises(ValueError, match="unknown event dataset"):
        E.build_event_datasets("nmnist")
    with pytest.raises(DatasetMissing, match="shd_train.h5"):
        E.build_event_datasets("shd", data_dir="/nonexistent/shd")

"""Readers of the ODE-LSTM irregularly sampled sets (statelayers.data.irregular) on fixtures written in the official
formats: Walker2d rollouts (a folder of (T, 17) .npy files) and PersonActivity (ConfLongDemo_JSI.txt lines), checked
against references written here from the official procedure (mlech26l/ode-lstms, irregular_sampled_datasets.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from statelayers.data.images import DatasetMissing
from statelayers.data.irregular import (
    PERSON_CLASSES,
    PERSON_TAGS,
    build_person_activity,
    build_walker2d,
    read_person_activity,
    read_walker_folder,
)
from statelayers.data.sequence_base import pad_collate

# ----------------------------------------------------------------------------------------------- Walker2d fixtures

WALKER_LENGTHS = (150, 181, 200, 163, 222, 140, 175, 190)  # 8 files: 1 test, 1 valid, 6 train (int(.15 N), int(.25 N))


def write_walker(folder: Path) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    arrays = {}
    for i, n in enumerate(WALKER_LENGTHS):
        arr = rng.normal(size=(n, 17))  # float64 as written; unique values locate every row
        np.save(folder / f"rollout_{i:03d}.npy", arr)
        arrays[f"rollout_{i:03d}.npy"] = arr
    return arrays


@pytest.fixture(scope="module")
def walker(tmp_path_factory):
    root = tmp_path_factory.mktemp("walker_root")
    arrays = write_walker(root / "data" / "walker")  # the ODE-LSTM layout
    return root, arrays


def reference_walker(arrays: dict[str, np.ndarray]) -> dict[str, list[tuple[np.ndarray, ...]]]:
    """The official procedure, written step by step: sorted names, RandomState(125487).shuffle, 15% test / 10%
    valid / rest train; one RandomState(891374) draw per step (train, valid, test files in order), keep if < 0.9,
    time = steps since the last kept one; windows of 64 every 16 with range(0, n - 64, 16)."""
    names = sorted(arrays)
    np.random.RandomState(125487).shuffle(names)
    n_test, n_tv = int(0.15 * len(names)), int(0.25 * len(names))
    parts = {"train": names[n_tv:], "valid": names[n_test:n_tv], "test": names[:n_test]}
    rng = np.random.RandomState(891374)
    out = {}
    for part in ("train", "valid", "test"):
        windows = []
        for name in parts[part]:
            arr = arrays[name].astype(np.float32)
            xs, ts, ys, skip = [], [], [], 0
            for t in range(arr.shape[0] - 1):
                skip += 1
                if rng.rand() < 0.9:
                    xs.append(arr[t])
                    ts.append(skip)
                    ys.append(arr[t + 1])
                    skip = 0
            for s in range(0, len(xs) - 64, 16):
                windows.append((np.stack(xs[s:s + 64]), np.array(ts[s:s + 64], np.float32), np.stack(ys[s:s + 64]),
                                name))
        out[part] = windows
    return out


def items(ds) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    return [(inp["x"].numpy(), inp["tau"].numpy(), y.numpy()) for inp, y in (ds[i] for i in range(len(ds)))]


def locate(arrays: dict[str, np.ndarray], row: np.ndarray) -> tuple[str, int]:
    for name, arr in arrays.items():
        hit = np.flatnonzero((arr.astype(np.float32) == row).all(axis=1))
        if hit.size:
            return name, int(hit[0])
    raise AssertionError("row not in any rollout")


# ----------------------------------------------------------------------------------------------- Walker2d tests


def test_read_walker_folder_gives_the_written_arrays(walker):
    root, arrays = walker
    for where in (root, root / "data", root / "data" / "walker"):
        read = read_walker_folder(where)
        assert list(read) == sorted(arrays)
        for name, arr in read.items():
            assert arr.dtype == np.float32 and arr.shape == arrays[name].shape
            np.testing.assert_array_equal(arr, arrays[name].astype(np.float32))


def test_walker_windows_match_the_official_procedure(walker):
    root, arrays = walker
    ref = reference_walker(arrays)
    train, valid, info = build_walker2d(root)
    _, test, info_test = build_walker2d(root, split="test")
    for ds, part in ((train, "train"), (valid, "valid"), (test, "test")):
        got = items(ds)
        assert len(got) == len(ref[part]) > 0
        for (x, tau, y), (rx, rtau, ry, _) in zip(got, ref[part]):
            assert x.shape == (64, 17) and tau.shape == (64,) and y.shape == (64, 17)
            np.testing.assert_array_equal(x, rx)
            np.testing.assert_array_equal(tau, rtau)
            np.testing.assert_array_equal(y, ry)
    assert (info.name, info.target, info.target_dims, info.in_chans, info.max_len) == (
        "walker2d", "step_regression", 17, 17, 64)
    assert info.next_step and info.has_tau and info.num_classes == 0 and info.input_kind == "dense"
    assert (info.train_size, info.eval_size, info_test.eval_size) == (len(train), len(valid), len(test))
    assert "valid split" in info.note and "test split" in info_test.note


def test_walker_targets_are_the_next_rollout_step_and_tau_counts_steps(walker):
    """Independent of the reference: every input row is a rollout row, its target the row after it, tau the
    distance in rows to the previous input; where nothing was dropped (tau = 1) the target is the next input."""
    root, arrays = walker
    _, valid, _ = build_walker2d(root)
    for x, tau, y in items(valid)[:4]:
        name, start = locate(arrays, x[0])
        src = arrays[name].astype(np.float32)
        rows = start + np.concatenate([[0], np.cumsum(tau[1:]).astype(int)])
        np.testing.assert_array_equal(x, src[rows])
        np.testing.assert_array_equal(y, src[rows + 1])
        ones = np.flatnonzero(tau[1:] == 1)
        np.testing.assert_array_equal(y[ones], x[ones + 1])
        assert (tau >= 1).all() and (tau == np.round(tau)).all()


def test_walker_splits_are_disjoint_files_and_deterministic(walker):
    root, arrays = walker
    train, valid, _ = build_walker2d(root, seed=3)
    _, test, _ = build_walker2d(root, split="test", seed=5)
    files = [{locate(arrays, x[0])[0] for x, _, _ in items(ds)} for ds in (train, valid, test)]
    assert len(files[1]) == len(files[2]) == 1 and len(files[0]) >= 5
    assert not (files[0] & files[1]) and not (files[0] & files[2]) and not (files[1] & files[2])
    again, _, _ = build_walker2d(root / "data" / "walker")
    for a, b in zip(items(train), items(again)):
        for u, v in zip(a, b):
            np.testing.assert_array_equal(u, v)
    taus = np.concatenate([t for _, t, _ in items(train)])
    assert 1.0 < taus.mean() < 1.25  # ~10% of the steps dropped: mean gap 1 / 0.9


def test_walker_subset_max_len_and_batching(walker):
    root, _ = walker
    full, _, _ = build_walker2d(root)
    a, _, info = build_walker2d(root, subset=5, seed=1, max_len=10)
    b, _, _ = build_walker2d(root, subset=5, seed=1, max_len=10)
    assert len(a) == 5 and info.train_size == 5 and info.max_len == 10
    assert torch.equal(a.indices, b.indices) and a.indices.max() < len(full)
    x, tau, y = items(a)[0]
    assert x.shape == (10, 17) and tau.shape == (10,) and y.shape == (10, 17)
    batch, target = pad_collate([a[0], a[1]])
    assert batch["x"].shape == (2, 10, 17) and batch["tau"].shape == (2, 10) and target.shape == (2, 10, 17)


def test_walker_missing_and_malformed(tmp_path):
    for where in (None, tmp_path / "nowhere", tmp_path):
        with pytest.raises(DatasetMissing, match="walker.zip"):
            build_walker2d(where)
    bad = tmp_path / "bad"
    write_walker(bad)
    with pytest.raises(ValueError, match="split must be one of"):
        build_walker2d(bad, split="train")
    np.save(bad / "rollout_100.npy", np.zeros(30))
    with pytest.raises(ValueError, match=r"rollout_100\.npy: expected a numeric \(T, C\) array") as e:
        read_walker_folder(bad)
    assert "\n" not in str(e.value)
    np.save(bad / "rollout_100.npy", np.zeros((30, 16)))
    with pytest.raises(ValueError, match=r"rollout_100\.npy: 16 columns, but the first file has 17"):
        build_walker2d(bad)
    (bad / "rollout_100.npy").write_bytes(b"not an npy file\n")
    with pytest.raises(ValueError, match=r"rollout_100\.npy: not a readable \.npy array") as e:
        read_walker_folder(bad)
    assert "\n" not in str(e.value)
    few = tmp_path / "few"
    few.mkdir()
    np.save(few / "rollout_000.npy", np.zeros((300, 17)))
    with pytest.raises(ValueError, match="walker2d: the valid split"):
        build_walker2d(few)


# ----------------------------------------------------------------------------------------------- PersonActivity

# the 11 activities of the file and the class each belongs to, written here independently of the module
ACTIVITY_GROUP = {
    "lying down": "lying", "lying": "lying",
    "sitting down": "sitting", "sitting": "sitting",
    "standing up from lying": "standing up", "standing up from sitting": "standing up",
    "standing up from sitting on the ground": "standing up",
    "walking": "walking", "falling": "falling", "on all fours": "on all fours",
    "sitting on the ground": "sitting on the ground",
}
PERSONS = (("A01", 120), ("A02", 97), ("B01", 130), ("B02", 81))  # the last one is left out, as officially
BACKWARDS = ("A02", 40)  # this line is written 5 ms before the one above it (as a few lines of the real file)


def write_person(path: Path) -> list[dict]:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(11)
    activities = list(ACTIVITY_GROUP)
    lines, rows = [], []
    tick = 633790226051280329
    for p, (person, n) in enumerate(PERSONS):
        for i in range(n):
            tick += int(rng.integers(270_000, 811_000))
            if (person, i) == BACKWARDS:
                tick -= 51_383 + 811_000
            tag = PERSON_TAGS[(i + p) % 4]
            xyz = rng.normal(2.0, 1.0, size=3)
            c = [repr(float(v)) for v in xyz]
            act = activities[(i // 9 + p) % len(activities)]
            rows.append({"person": person, "i": i, "tick": tick, "tag": tag, "xyz": xyz, "act": act})
            lines.append(f"{person},{tag},{tick},27.05.2009 14:03:25:127,{c[0]},{c[1]},{c[2]},{act}")
    path.write_text("\n".join(lines) + "\n")
    return rows


@pytest.fixture(scope="module")
def person(tmp_path_factory):
    root = tmp_path_factory.mktemp("person_root")
    rows = write_person(root / "data" / "person" / "ConfLongDemo_JSI.txt")  # the ODE-LSTM layout
    return root, rows


def reference_person(rows: list[dict]):
    """Windows from the written rows: one-hot tag + x, y, z; tau = tick difference / 1e6 (100 ms), 5.0 first,
    negative -> 0; label = index of the group in PERSON_CLASSES; windows of 32 every 16 by range(0, n - 32, 16); the
    last person left out."""
    windows = []
    for person, _ in PERSONS[:-1]:
        mine = [r for r in rows if r["person"] == person]
        x = np.array([[float(r["tag"] == t) for t in PERSON_TAGS] + list(r["xyz"]) for r in mine], np.float32)
        ticks = [r["tick"] for r in mine]
        tau = np.array([5.0] + [max(b - a, 0) / 1e6 for a, b in zip(ticks, ticks[1:])], np.float32)
        y = np.array([PERSON_CLASSES.index(ACTIVITY_GROUP[r["act"]]) for r in mine], np.int64)
        for s in range(0, len(mine) - 32, 16):
            windows.append((x[s:s + 32], tau[s:s + 32], y[s:s + 32]))
    return windows


def test_read_person_activity_gives_the_written_values(person):
    root, rows = person
    recs = read_person_activity(root / "data" / "person" / "ConfLongDemo_JSI.txt")
    assert [(r.person, len(r.tags)) for r in recs] == list(PERSONS)  # the reader keeps the last series
    assert [r.first_line for r in recs] == list(np.cumsum([0] + [n for _, n in PERSONS[:-1]]) + 1)
    flat = {k: np.concatenate([getattr(r, k) for r in recs]) for k in ("tags", "ticks", "coords", "activities")}
    np.testing.assert_array_equal(flat["ticks"], [r["tick"] for r in rows])
    np.testing.assert_array_equal(flat["coords"], np.array([r["xyz"] for r in rows], np.float32))
    assert [PERSON_TAGS[t] for t in flat["tags"]] == [r["tag"] for r in rows]
    assert {PERSON_TAGS[t] for t in flat["tags"]} == set(PERSON_TAGS)
    labels = np.concatenate([r.labels() for r in recs])
    assert [PERSON_CLASSES[c] for c in labels] == [ACTIVITY_GROUP[r["act"]] for r in rows]
    assert len({r["act"] for r in rows}) == 11 and set(labels.tolist()) == set(range(7))
    a02 = recs[1]
    ticks = np.array([r["tick"] for r in rows if r["person"] == "A02"])
    expected = np.concatenate([[5.0], np.diff(ticks) / 1e6])
    assert expected[BACKWARDS[1]] < 0  # the fixture's backwards step ...
    expected[BACKWARDS[1]] = 0.0  # ... is a gap of 0 (the official code would pass it on negative)
    np.testing.assert_allclose(a02.tau(), expected, rtol=1e-6)
    x = a02.inputs()
    assert x.shape == (97, 7) and (x[:, :4].sum(1) == 1).all()


def test_person_windows_and_split_match_the_official_procedure(person):
    root, rows = person
    ref = reference_person(rows)
    total = len(ref)
    perm = np.random.RandomState(98841).permutation(total)
    n_test, n_valid = int(0.2 * total), int(0.1 * total)
    train, valid, info = build_person_activity(root)
    train_t, test, info_t = build_person_activity(root / "data" / "person", split="test")
    expect = {"valid": perm[n_test:n_test + n_valid], "train": perm[n_test + n_valid:], "test": perm[:n_test],
              "train_t": perm[n_test:]}
    for ds, part in ((train, "train"), (valid, "valid"), (test, "test"), (train_t, "train_t")):
        got = items(ds)
        assert len(got) == len(expect[part]) > 0
        for (x, tau, y), j in zip(got, expect[part]):
            assert x.shape == (32, 7) and tau.shape == (32,) and y.shape == (32,) and y.dtype == np.int64
            np.testing.assert_array_equal(x, ref[j][0])
            np.testing.assert_allclose(tau, ref[j][1], rtol=1e-6)
            np.testing.assert_array_equal(y, ref[j][2])
    parts = [set(expect[k].tolist()) for k in ("train", "valid", "test")]
    assert sum(map(len, parts)) == total and len(set.union(*parts)) == total  # disjoint, all windows used
    assert (info.name, info.target, info.num_classes, info.in_chans, info.max_len) == (
        "person_activity", "step_class", 7, 7, 32)
    assert info.classes == list(PERSON_CLASSES) and info.has_tau and not info.next_step
    assert (info.train_size, info.eval_size, info_t.eval_size) == (len(train), len(valid), len(test))
    last = {tuple(r["xyz"].astype(np.float32)) for r in rows if r["person"] == PERSONS[-1][0]}
    assert not any(tuple(row[4:]) in last for ds in (train_t, test) for x, _, _ in items(ds) for row in x)
    again, _, _ = build_person_activity(root / "data" / "person" / "ConfLongDemo_JSI.txt")
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(items(train), items(again)))


def test_person_subset_max_len_and_batching(person):
    root, _ = person
    a, _, info = build_person_activity(root, subset=4, seed=2, max_len=12)
    b, _, _ = build_person_activity(root, subset=4, seed=2, max_len=12)
    assert len(a) == 4 and info.max_len == 12 and torch.equal(a.indices, b.indices)
    batch, target = pad_collate([a[0], a[1], a[2]])
    assert batch["x"].shape == (3, 12, 7) and batch["tau"].shape == (3, 12) and target.shape == (3, 12)
    assert target.dtype == torch.long


@pytest.mark.parametrize("bad, message", [
    ("A01,010-000-024-033,633790226051280329,27.05.2009,1.0,2.0,walking", "expected 8 comma-separated fields"),
    ("A01,010-000-099-099,633790226051280329,27.05.2009,1.0,2.0,3.0,walking", "unknown tag '010-000-099-099'"),
    ("A01,010-000-024-033,633790226051280329,27.05.2009,1.0,2.0,3.0,dancing", "unknown activity 'dancing'"),
    ("A01,010-000-024-033,6337902260.5,27.05.2009,1.0,2.0,3.0,walking", "time stamp '6337902260.5' is not an integer"),
    ("A01,010-000-024-033,633790226051280329,27.05.2009,1.0,x,3.0,walking", "are not numbers"),
    ("A01,010-000-024-033,633790226051280329,27.05.2009,1.0,nan,3.0,walking", "are not finite"),
])
def test_person_malformed_line_names_file_and_line(tmp_path, bad, message):
    path = tmp_path / "ConfLongDemo_JSI.txt"
    good = "A01,010-000-024-033,633790226051280329,27.05.2009 14:03:25:127,4.06,1.89,0.50,walking"
    path.write_text(f"{good}\n{good}\n\n{bad}\n{good}\n")
    with pytest.raises(ValueError, match=message) as e:
        build_person_activity(tmp_path)
    assert str(e.value).startswith(f"{path}:4: ") and "\n" not in str(e.value)


def test_person_missing_and_bad_split(tmp_path, person):
    for where in (None, tmp_path / "nowhere", tmp_path):
        with pytest.raises(DatasetMissing, match="ConfLongDemo_JSI.txt"):
            build_person_activity(where)
    with pytest.raises(ValueError, match="split must be one of"):
        build_person_activity(person[0], split="validation")
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("A01,010-000-024-033,633790226051280329,27.05.2009,1.0,2.0,3.0,walking\n")
    with pytest.raises(ValueError, match="too few for the split"):
        build_person_activity(tiny)

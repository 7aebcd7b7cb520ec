"""Per-step sequence tasks in the engine (issue 20, item 1): the losses and metrics against float64 loops and
scikit-learn, padding that never counts, best weights kept by the task's own metric, models that must not read the
future, the GRU's per-step head, and streaming generation equal to the full forward."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import yaml
from safetensors import safe_open

import statelayers  # noqa: F401  (registers the models)
import statelayers.data.sequences as sequences
from statelayers.data.sequence_base import (
    IGNORE_INDEX,
    DenseSequenceDataset,
    SeqInfo,
    StepSequenceDataset,
    pad_collate,
)
from statelayers.engine import TrainConfig, evaluate, train
from statelayers.engine.tasks.sequence import SequenceLoss, sequence_metrics

# ----------------------------------------------------------------------------------------------- references


def _batches(items, sizes):
    """pad_collate over consecutive groups of ``items`` of the given sizes."""
    out, i = [], 0
    for n in sizes:
        out.append(pad_collate(items[i:i + n]))
        i += n
    return out


def _ragged(seed=0, n=7, d=3, classes=None):
    """n sequences of random lengths with per-step targets (classes or d values) and made-up model outputs."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 9, size=n)
    xs = [rng.normal(size=(L, 2)).astype(np.float32) for L in lengths]
    if classes:
        ys = [rng.integers(0, classes, size=L) for L in lengths]
        outs = [rng.normal(size=(L, classes)) for L in lengths]
    else:
        ys = [rng.normal(size=(L, d)).astype(np.float32) for L in lengths]
        outs = [rng.normal(size=(L, d)) for L in lengths]
    return xs, ys, outs


def _padded_outputs(outs, batch_lengths):
    L = max(batch_lengths)
    width = outs[0].shape[1]
    # padded steps get garbage (large values): they must not count
    o = np.full((len(outs), L, width), 1e3)
    for i, a in enumerate(outs):
        o[i, : len(a)] = a
    return torch.tensor(o, dtype=torch.float32)


def _output_target_pairs(xs, ys, outs, sizes):
    """(padded model outputs, collated targets) per batch of the given sizes, as the engine's evaluation sees them."""
    ds = StepSequenceDataset(xs, ys)
    items = [ds[i] for i in range(len(ds))]
    pairs, i = [], 0
    for batch in _batches(items, sizes):
        n = batch[1].shape[0]
        pairs.append((_padded_outputs(outs[i:i + n], [len(a) for a in outs[i:i + n]]), batch[1]))
        i += n
    return pairs


@pytest.mark.parametrize("sizes", [(7,), (3, 4), (1, 1, 5)])
def test_step_regression_metrics_equal_float64_loops_and_sklearn(sizes):
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    xs, ys, outs = _ragged(d=3)
    pairs = _output_target_pairs(xs, ys, outs, sizes)
    got = sequence_metrics(pairs, "step_regression")
    # the reference: every valid step of every sequence, in float64 (outputs rounded to float32 as the model's are)
    y = np.concatenate(ys).astype(np.float64)
    p = np.concatenate([np.float32(o) for o in outs]).astype(np.float64)
    assert got["eval_mse"] == pytest.approx(mean_squared_error(y, p), rel=1e-12)
    assert got["eval_loss"] == got["eval_mse"]
    assert got["eval_rmse"] == pytest.approx(math.sqrt(mean_squared_error(y, p)), rel=1e-12)
    assert got["eval_mae"] == pytest.approx(mean_absolute_error(y, p), rel=1e-12)
    assert got["eval_r2"] == pytest.approx(r2_score(y, p), rel=1e-9, abs=1e-12)
    # the training loss of one padded batch is the same mean, up to float32 rounding of the sums
    loss = SequenceLoss("step_regression")(*pairs[0])
    n0 = sizes[0]
    ref = np.mean(np.square(np.concatenate([np.float32(o) for o in outs[:n0]]) - np.concatenate(ys[:n0])))
    assert loss.item() == pytest.approx(ref, rel=1e-5)


@pytest.mark.parametrize("sizes", [(7,), (2, 5)])
def test_step_class_metrics_equal_float64_loops(sizes):
    xs, ys, outs = _ragged(classes=5)
    pairs = _output_target_pairs(xs, ys, outs, sizes)
    padded = sum(int((y == IGNORE_INDEX).sum()) for _, y in pairs)
    assert padded == sum(y.numel() for _, y in pairs) - sum(len(y) for y in ys)  # exactly the padded steps
    got = sequence_metrics(pairs, "step_class", token_unit="byte")
    nll, correct, n = 0.0, 0, 0
    for o, y in zip(outs, ys):
        o = np.float32(o).astype(np.float64)
        for t in range(len(y)):
            z = o[t] - o[t].max()
            nll += -(z[y[t]] - math.log(np.exp(z).sum()))
            correct += int(o[t].argmax() == y[t])
            n += 1
    assert got["eval_loss"] == pytest.approx(nll / n, rel=1e-6)
    assert got["eval_acc"] == correct / n
    assert got["eval_bits_per_byte"] == pytest.approx(nll / n / math.log(2), rel=1e-6)
    assert got["eval_ppl"] == pytest.approx(math.exp(nll / n), rel=1e-6)
    assert "eval_top5" not in got
    loss = SequenceLoss("step_class")(*pairs[0])
    m = sum(len(y) for y in ys[: sizes[0]])
    ref = sum(-(np.float32(o[t]).astype(np.float64)[y[t]] - math.log(np.exp(np.float32(o[t]).astype(np.float64)).sum()))
              for o, y in zip(outs[: sizes[0]], ys[: sizes[0]]) for t in range(len(y))) / m
    assert loss.item() == pytest.approx(ref, rel=1e-5)


def test_whole_sequence_regression_metrics_and_collate():
    from sklearn.metrics import r2_score

    rng = np.random.default_rng(1)
    series = [rng.normal(size=(int(L), 2)) for L in rng.integers(3, 9, size=10)]
    targets = rng.normal(size=(10, 2))
    ds = DenseSequenceDataset(series, targets, [])
    x, y = pad_collate([ds[i] for i in range(10)])
    assert y.dtype == torch.float32 and y.shape == (10, 2)
    torch.testing.assert_close(y, torch.tensor(targets, dtype=torch.float32))
    pred = torch.tensor(rng.normal(size=(10, 2)), dtype=torch.float32)
    got = sequence_metrics([(pred[:4], y[:4]), (pred[4:], y[4:])], "regression")
    yy, pp = y.double().numpy(), pred.double().numpy()
    assert got["eval_mse"] == pytest.approx(np.mean((yy - pp) ** 2), rel=1e-12)
    assert got["eval_r2"] == pytest.approx(r2_score(yy, pp), rel=1e-9)
    # a single-value target given as (B,) outputs of shape (B, 1) works too
    one = DenseSequenceDataset(series, targets[:, 0], [])
    assert pad_collate([one[0], one[1]])[1].shape == (2, 1)


def test_per_step_targets_need_an_output_per_step():
    y = torch.zeros(2, 8, dtype=torch.long)
    with pytest.raises(ValueError, match="one model output per step.*stride=1"):
        SequenceLoss("step_class")(torch.zeros(2, 4, 5), y)
    with pytest.raises(ValueError, match="one model output per step"):
        sequence_metrics([(torch.zeros(2, 5), y)], "step_class")


# ----------------------------------------------------------------------------------------------- engine runs


def _toy_steps(n, seed, length=24):
    """Inputs (L, 2), targets: the running mean of channel 0 up to each step (a causal function of the inputs),
    with irregular time steps."""
    rng = np.random.default_rng(seed)
    xs, ys, taus = [], [], []
    for _ in range(n):
        L = int(rng.integers(length // 2, length + 1))
        x = rng.normal(size=(L, 2)).astype(np.float32)
        xs.append(x)
        ys.append((np.cumsum(x[:, :1], axis=0) / np.arange(1, L + 1)[:, None]).astype(np.float32))
        taus.append(rng.uniform(0.5, 1.5, size=L).astype(np.float32))
    return xs, ys, taus


@pytest.fixture
def toy_data(monkeypatch):
    """Registers two small per-step datasets: ``toy_steps`` (regression, next_step False) and ``toy_next``
    (the same arrays declared next-step, so that models reading the future are refused)."""

    def build(next_step):
        def _build(req):
            tr, ev = _toy_steps(64, 0), _toy_steps(24, 1)
            train_ds = StepSequenceDataset(*tr)
            eval_ds = StepSequenceDataset(*ev)
            info = SeqInfo(name="toy", num_classes=0, input_kind="dense", in_chans=2, max_len=24, train_size=64,
                           eval_size=24, has_tau=True, target="step_regression", target_dims=1,
                           next_step=next_step)
            return train_ds, eval_ds, info
        return _build

    for name, nxt in (("toy_steps", False), ("toy_next", True)):
        entry = sequences.SequenceDatasetEntry(name, "test data", build(nxt))
        monkeypatch.setitem(sequences.SEQUENCE_REGISTRY, name, entry)
        monkeypatch.setitem(sequences._BY_KEY, name, entry)


@pytest.mark.parametrize("model,kwargs", [("s7_tiny", {"discretization": "async"}), ("gru_small", {})])
def test_engine_trains_per_step_regression_and_keeps_the_lowest_mse(tmp_path, toy_data, model, kwargs):
    r = train(TrainConfig(model=model, data="toy_steps", epochs=3, batch_size=16, lr=3e-3, quiet=True,
                          output=str(tmp_path), name="run", model_kwargs=kwargs))
    assert r.score_name == "eval_mse"
    summary = yaml.safe_load((r.run_dir / "summary.yaml").read_text())
    assert summary["final"] and summary["best_metric"] == "eval_mse"
    import csv

    metrics = list(csv.DictReader(open(r.run_dir / "metrics.csv")))
    mses = [float(m["eval_mse"]) for m in metrics]
    assert r.best_acc == min(mses)
    # best.safetensors holds the epoch with the lowest MSE, and says so in its metadata
    with safe_open(str(r.run_dir / "best.safetensors"), "pt") as f:
        assert float(f.metadata()["eval_mse"]) == pytest.approx(min(mses), rel=1e-5)
    # evaluating the best weights again gives that epoch's numbers exactly
    out = evaluate(None, r.run_dir)
    assert out["eval_mse"] == pytest.approx(min(mses), rel=1e-9)
    assert set(out) >= {"eval_mse", "eval_rmse", "eval_mae", "eval_r2"}
    # learning happened: the fitted running mean beats predicting zero (MSE = E[y²])
    assert min(mses) < 0.8 * float(metrics[0]["eval_mse"]) or min(mses) < 0.05


def test_models_that_read_the_future_are_refused_on_next_step_data(tmp_path, toy_data):
    with pytest.raises(ValueError, match="reads the future.*bidirectional=False"):
        train(TrainConfig(model="s7_tiny", data="toy_next", epochs=1, batch_size=16, quiet=True,
                          output=str(tmp_path), model_kwargs={"bidirectional": True}))
    # the same model is accepted where the targets are not later inputs
    train(TrainConfig(model="s7_tiny", data="toy_steps", epochs=1, batch_size=16, quiet=True, max_steps=1,
                      output=str(tmp_path), name="ok", model_kwargs={"bidirectional": True}))


def test_cli_refuses_a_bidirectional_model_on_next_step_data_in_one_line(tmp_path, toy_data, capsys):
    from statelayers.cli import main

    code = main(["train", "--model", "s7_walker", "--data", "toy_next", "--epochs", "1", "--output", str(tmp_path),
                 "--model-kwargs", "in_chans=2", "num_classes=1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "reads the future" in err[0], err


def test_token_pooling_is_refused_for_per_step_targets(tmp_path, toy_data):
    with pytest.raises(ValueError, match="one model output per step"):
        train(TrainConfig(model="s7_tiny", data="toy_steps", epochs=1, batch_size=16, quiet=True, max_steps=1,
                          output=str(tmp_path), model_kwargs={"stride": 2}))


# ----------------------------------------------------------------------------------------------- models


def test_gru_per_step_head_is_causal():
    torch.manual_seed(0)
    m = timm.create_model("gru_small", in_chans=3, num_classes=4, head="none").eval()
    x = torch.randn(2, 12, 3)
    y = m(x=x)
    assert y.shape == (2, 12, 4)
    x2 = x.clone()
    x2[:, 7:] += torch.randn(2, 5, 3)
    y2 = m(x=x2)
    torch.testing.assert_close(y2[:, :7], y[:, :7], rtol=0, atol=0)
    assert not torch.allclose(y2[:, 7:], y[:, 7:])


@pytest.mark.parametrize("name,kwargs", [
    ("s7_tiny", dict(discretization="async", default_tau=1.0)),
    ("s7_tiny", dict(discretization="zoh")),
    ("s6_tiny", {}),
    ("s7_ptb", dict(bidirectional=False, vocab_size=40, num_classes=40, depth=3)),
])
def test_generation_equals_the_full_forward_on_the_same_prefix(name, kwargs):
    """Streaming `step` generates token by token; the logits it used for each token equal the full forward over the
    generated sequence (causal layers), and greedy generation picks their argmax."""
    torch.manual_seed(0)
    kw = {**dict(vocab_size=40, num_classes=40, head="none"), **kwargs}
    m = timm.create_model(name, **kw)
    m.train()
    m(tokens=torch.randint(0, 40, (8, 16)))  # BatchNorm running statistics from a batch, as after training
    m.eval()
    prompt = torch.randint(0, 40, (3, 5))
    seq = m.generate(prompt, steps=7, temperature=0)
    assert seq.shape == (3, 12) and torch.equal(seq[:, :5], prompt)
    full = m(tokens=seq)
    # greedy: each new token is the argmax of the full forward's logits one step before it
    assert torch.equal(full[:, 4:-1].argmax(-1), seq[:, 5:])
    state, outs = m.init_state(3), []
    for k in range(seq.shape[1]):
        o, state = m.step(seq[:, k], state)
        outs.append(o)
    torch.testing.assert_close(torch.stack(outs, 1), full, rtol=1e-4, atol=1e-4 * full.abs().max().item())
    # sampling is reproducible with a generator
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(m.generate(prompt, 6, 1.0, g1), m.generate(prompt, 6, 1.0, g2))


def test_generate_refuses_models_that_are_not_language_models():
    m = timm.create_model("s7_tiny", vocab_size=40, num_classes=3)
    with pytest.raises(ValueError, match="language model"):
        m.generate(torch.zeros(1, 2, dtype=torch.long), 3)


@pytest.mark.parametrize("name,inputs,out", [
    ("s7_personactivity", dict(x=torch.randn(2, 9, 7)), (2, 9, 7)),
    ("s7_walker", dict(x=torch.randn(2, 9, 17), tau=torch.rand(2, 9) + 0.1), (2, 9, 17)),
    ("s7_ptb", dict(tokens=torch.randint(0, 10000, (2, 9))), (2, 9, 10000)),
    ("s7_wikitext2", dict(tokens=torch.randint(0, 33278, (2, 9))), (2, 9, 33278)),
])
def test_official_per_step_configurations(name, inputs, out):
    """The official per-step configurations build, give an output per step, and are bidirectional as configured
    (the design note's table); no artefact gives their parameter counts."""
    m = timm.create_model(name).train()
    assert m(**inputs).shape == out
    assert all(b.ssm.bidirectional for b in m.blocks)


# ----------------------------------------------------------------------------------------------- language model


@pytest.mark.skipif(not Path("/usr/share/games/fortunes").is_dir(),
                    reason="Debian's fortunes corpus is not installed (apt-get install -y fortunes)")
def test_language_model_run_reports_bits_per_byte_and_generates(tmp_path, capsys):
    from statelayers.cli import main
    from statelayers.tools.generate import generate_from_run

    r = train(TrainConfig(model="s7_tiny", data="fortunes", max_len=32, subset=64, eval_subset=40, epochs=1,
                          batch_size=16, quiet=True, output=str(tmp_path), name="lm"))
    assert r.score_name == "eval_loss"
    row = r.final_metrics
    assert row["eval_bits_per_byte"] == pytest.approx(row["eval_loss"] / math.log(2), rel=1e-12)
    assert 0 < row["eval_bits_per_byte"] < 9  # an untrained byte model is near log2(256) = 8
    saved = yaml.safe_load((r.run_dir / "config.yaml").read_text())
    assert saved["data_info"]["token_unit"] == "byte" and saved["data_info"]["next_step"] is True
    # the CLI prints the prompt and its continuation, the same text as the Python function
    assert main(["generate", str(r.run_dir), "--prompt", "The ", "--tokens", "20", "--temperature", "0"]) == 0
    printed = capsys.readouterr().out.rstrip("\n")
    text = generate_from_run(r.run_dir, "The ", 20, temperature=0)
    assert printed == text and text.startswith("The ")
    # ...which is the model's greedy continuation
    model = timm.create_model("s7_tiny", vocab_size=256, num_classes=256, head="none")
    from statelayers.checkpoint import load_weights

    load_weights(model, r.run_dir / "best.safetensors")
    ids = model.eval().generate(torch.tensor([list(b"The ")]), 20, temperature=0)[0].tolist()
    assert text == bytes(ids).decode("utf-8", errors="replace")
    # a run that is not a language model is refused in one line
    assert main(["generate", str(tmp_path / "missing")]) == 2


def test_whole_series_regression_from_ts_files_trains_and_reports_r2(tmp_path):
    """sktime's Covid3Month (.ts, @targetLabel true): MSE training, eval_mse / eval_rmse / eval_mae / eval_r2, and
    `statelayers eval` on the run folder gives the best epoch's numbers."""
    pytest.importorskip("sktime")
    r = train(TrainConfig(model="s5_small", data="Covid3Month", epochs=2, batch_size=16, quiet=True,
                          output=str(tmp_path), name="reg"))
    assert r.score_name == "eval_mse"
    row = r.final_metrics
    assert row["eval_rmse"] == pytest.approx(math.sqrt(row["eval_mse"]), rel=1e-12)
    assert "eval_acc" not in row and math.isfinite(row["eval_r2"])
    out = evaluate(None, r.run_dir)
    assert out["eval_mse"] == pytest.approx(r.best_acc, rel=1e-9)

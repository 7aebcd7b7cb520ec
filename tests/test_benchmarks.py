"""CI runs each benchmark script on its smallest setting, to prove it works (nothing here is a timed test).

Every script runs in a subprocess with one thread; a test checks the exit code and that the printed markdown table
has the expected rows and columns. Data that is not installed (sktime's ACSF1) skips its test.
"""

from __future__ import annotations

import importlib.util

import pytest
from script_helpers import BENCH, check_ok, run_script, tables


def test_overhead_smallest(tmp_path):
    out = tmp_path / "report.md"
    proc = run_script("overhead.py", "--smallest", "--threads", "1", "--out", str(out))
    check_ok(proc)
    (header, rows), = tables(proc.stdout)
    assert header[:3] == ["family", "model", "mode"]
    for col in ("MAC ratio", "bytes ratio", "infer img/s", "infer time ratio", "train img/s", "train time ratio",
                "peak MiB infer / train"):
        assert col in header
    assert all(len(r) == len(header) for r in rows)
    models = ["resnet50", "s6la_resnet50", "s6la_resnet50+fold", "rla_resnet50", "mrla_resnet50",
              "deit_tiny_patch16_224", "s6la_deit_tiny_patch16_224", "mrla_deit_tiny_patch16_224"]
    assert sorted((r[1], r[2]) for r in rows) == sorted((m, mode) for m in models
                                                        for mode in ("fp32", "channels_last+bf16"))
    for r in rows:  # the vanilla rows are the reference of their family
        if r[1] in ("resnet50", "deit_tiny_patch16_224"):
            assert r[header.index("MAC ratio")] == "1.000" and r[header.index("infer time ratio")] == "1"
            assert r[header.index("bytes ratio")] == "1.000"
        elif r[1].startswith("s6la_resnet50"):  # the state adds traffic (at 32², batch 2, weights dominate it)
            assert float(r[header.index("bytes ratio")]) > 1
        assert float(r[header.index("infer img/s")]) > 0
        if r[1].endswith("+fold"):  # inference only, with fewer MACs than the unfolded model
            assert r[header.index("train img/s")] == "–" and r[header.index("train time ratio")] == "–"
            plain = next(p for p in rows if p[1] == "s6la_resnet50" and p[2] == r[2])
            assert float(r[header.index("GMACs")]) < float(plain[header.index("GMACs")])
        else:
            assert float(r[header.index("train img/s")]) > 0
    verdicts = [line for line in proc.stdout.splitlines() if line.startswith(("- PASS", "- FAIL", "- UNDECIDED"))]
    # per mode: inference and training of s6la_resnet50, inference of the folded model
    assert len(verdicts) == 6 and all("s6la_resnet50" in v for v in verdicts)
    report = out.read_text()
    assert "command: `python benchmarks/overhead.py --smallest" in report and "CPU:" in report
    assert "torch" in report and "| s6la_resnet50 | fp32 |" in report


def test_overhead_profile_smallest():
    proc = run_script("overhead.py", "--smallest", "--threads", "1", "--profile", "s6la_deit_tiny_patch16_224",
                      "--modes", "fp32", "--profile-rows", "6")
    check_ok(proc)
    heads = [line for line in proc.stdout.splitlines() if line.startswith("## ")]
    assert any(h.startswith("## s6la_deit_tiny_patch16_224 − deit_tiny_patch16_224, fp32, train") for h in heads)
    assert len(heads) == 6  # 2 models × (infer, train) + 2 differences
    assert all(len(rows) >= 1 for _, rows in tables(proc.stdout))


def test_depth_study_smallest_and_resume(tmp_path):
    out = tmp_path / "study"
    proc = run_script("depth_study.py", "--smallest", "--threads", "1", "--output", str(out),
                      "--out", str(tmp_path / "report.md"))
    check_ok(proc)
    (main_h, main_rows), (abl_h, abl_rows) = tables(proc.stdout)
    assert main_h[:3] == ["family", "depth", "model"] and "test acc (mean ± std)" in main_h and "params" in main_h
    assert [(r[0], r[1], r[2]) for r in main_rows] == [("vanilla", "20", "cifar_resnet20"),
                                                         ("s6la", "20", "s6la_cifar_resnet20")]
    assert [(r[0], r[1]) for r in abl_rows] == [("N = 32", "d_state=32")]
    for h, rows in ((main_h, main_rows), (abl_h, abl_rows)):
        assert all(len(r) == len(h) and 0.0 <= float(r[h.index("test acc (mean ± std)")]) <= 1.0 for r in rows)
    for f in ("depth_study.png", "depth_study.csv", "depth_study.md"):
        assert (out / f).is_file()
    assert len((out / "depth_study.csv").read_text().strip().splitlines()) == 1 + 3
    assert "![depth_study](" in (tmp_path / "report.md").read_text()
    # a second invocation finds every run finished and trains nothing
    again = run_script("depth_study.py", "--smallest", "--threads", "1", "--output", str(out))
    check_ok(again)
    assert "0 runs to train (3 already done)" in again.stdout
    assert tables(again.stdout)[0][1] == main_rows


def test_depth_study_refuses_over_budget(tmp_path):
    proc = run_script("depth_study.py", "--smallest", "--threads", "1", "--output", str(tmp_path),
                      "--no-ablations", "--budget-min", "0.001")
    assert proc.returncode == 2 and "refusing to start" in proc.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.skipif(importlib.util.find_spec("sktime") is None, reason="ACSF1 ships with sktime, not installed")
def test_s7_study_smallest(tmp_path):
    proc = run_script("s7_study.py", "--smallest", "--threads", "1", "--output", str(tmp_path))
    check_ok(proc)
    (header, rows), = tables(proc.stdout)
    for col in ("data", "model", "test acc (mean ± std)", "params", "train s", "wall s"):
        assert col in header
    assert [(r[0], r[1]) for r in rows] == [("acsf1", "S7"), ("acsf1", "S5"), ("acsf1", "GRU")]
    params = {r[1]: int(r[header.index("params")].replace(",", "")) for r in rows}
    assert abs(params["GRU"] - params["S7"]) / params["S7"] < 0.05  # --gru-width auto matches S7's size
    assert params["S5"] < params["S7"]
    assert (tmp_path / "s7_study.csv").is_file() and (tmp_path / "s7_study.png").is_file()


def test_s6la_breakdown_smallest():
    proc = run_script("s6la_breakdown.py", "--smallest", "--threads", "1")
    check_ok(proc)
    (header, rows), = tables(proc.stdout)
    assert header == ["variant", "ms per call", "time ratio to vanilla"]
    assert [r[0] for r in rows] == ["resnet50 (vanilla)", "widen only", "+ conv_out", "full s6la_resnet50",
                                    "full, reparameterize()"]
    assert rows[0][2] == "1.000"


def test_widened_conv_smallest():
    proc = run_script("widened_conv.py", "--smallest", "--threads", "1")
    check_ok(proc)
    (header, rows), = tables(proc.stdout)
    assert header[:3] == ["stage", "layout", "x-part alone ms"]
    assert {r[1] for r in rows} == {"NCHW", "channels_last"} and len(rows) == 8


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name.removesuffix(".py"), BENCH / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_overhead_median_ci_and_verdict():
    oh = load_script("overhead.py")
    # n = 10: P(Bin(10, 1/2) <= 1) = 11/1024, so (x_(2), x_(9)) covers 1 - 22/1024; k = 3 would cover only
    # 1 - 2*56/1024 = 0.891 < 0.9
    lo, hi, cov = oh.median_ci([float(v) for v in (9, 3, 7, 1, 5, 10, 2, 8, 4, 6)])
    assert (lo, hi) == (2.0, 9.0) and cov == pytest.approx(1 - 22 / 1024)
    # n = 20: P(Bin(20, 1/2) <= 5) = 21700/2**20 -> (x_(6), x_(15)); k = 7 covers 0.885
    lo, hi, cov = oh.median_ci([float(v) for v in range(20, 0, -1)])
    assert (lo, hi) == (6.0, 15.0) and cov == pytest.approx(1 - 2 * 21700 / 2**20)
    # too few values for 90 %: min and max, with the coverage they have (1 - 2/16 for n = 4)
    assert oh.median_ci([4.0, 1.0, 3.0, 2.0]) == (1.0, 4.0, pytest.approx(0.875))
    assert oh.median_ci([1.5]) == (1.5, 1.5, 0.0)
    times = {("a", "fp32"): {"infer": [1.0] * 5}, ("v", "fp32"): {"infer": [1.0, 1.0, 1.0, 1.0, 1.0]}}
    for ratios, target, label in (([1.01, 1.02, 1.03, 1.04, 1.05], 1.057, "PASS"),
                                  ([1.06, 1.07, 1.08, 1.09, 1.10], 1.057, "FAIL"),
                                  ([1.03, 1.05, 1.06, 1.07, 1.09], 1.057, "UNDECIDED")):
        times["a", "fp32"]["infer"] = ratios
        stats = oh.ratio_stats(times, "a", "v", "fp32", "infer")
        assert stats["median"] == pytest.approx(ratios[2]) and oh.verdict(stats, target) == label


def test_opcount_smallest(tmp_path):
    out = tmp_path / "ops.md"
    proc = run_script("opcount.py", "--smallest", "--by-op", "s6la_cifar_resnet20", "--out", str(out))
    check_ok(proc)
    (header, rows), *by_op = tables(proc.stdout)
    assert header[:4] == ["family", "model", "path", "ops per step"]
    assert [(r[1], r[2]) for r in rows] == [("cifar_resnet20", "–"), ("s6la_cifar_resnet20", "torch"),
                                            ("s6la_cifar_resnet20", "fused")]
    counts = {r[2]: int(r[3].replace(",", "")) for r in rows}
    assert counts["fused"] < counts["torch"]  # what the fused path is for
    assert len(by_op) == 2 and all(h == ["op", "vanilla", "model", "difference"] for h, _ in by_op)
    fused_ops = {r[0]: int(r[3]) for r in by_op[1][1]}
    assert fused_ops["statelayers.s6la_conv_update.default"] == 8  # one op per state update (9 blocks, 8 updates)
    assert "- PASS: s6la_cifar_resnet20 fused" in proc.stdout
    assert "command: `python benchmarks/opcount.py --smallest" in out.read_text()


@pytest.mark.slow
def test_dynamics_smallest(tmp_path):
    """The simulated double-pendulum study at its smallest setting (~30 s): the four models and both baselines."""
    proc = run_script("dynamics.py", "--smallest", "--threads", "1", "--output", str(tmp_path))
    check_ok(proc)
    (header, rows), = tables(proc.stdout)
    for col in ("model", "params", "eval MSE (mean ± std)", "MSE / constant velocity"):
        assert col in header
    assert [r[0] for r in rows] == ["S7 (async)", "S7 (zoh)", "S5", "GRU", "constant velocity (baseline)",
                                    "last value (baseline)"]
    assert rows[4][header.index("MSE / constant velocity")] == "1.00"
    assert "SIMULATED" in proc.stdout

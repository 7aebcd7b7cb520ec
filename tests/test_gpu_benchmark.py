"""benchmarks/gpu.py on its smallest setting (CPU): it runs, and its JSON and markdown have the promised shape.

Nothing here is timed or needs a GPU; the figures of a --smallest run mean nothing, only their form is checked.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from script_helpers import check_ok, run_script, tables

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu.py"

SMALLEST_SPEED = {  # family: models of --smallest, the vanilla one first
    "resnet50": ["resnet50", "s6la_resnet50", "rla_resnet50"],
    "deit_tiny": ["deit_tiny_patch16_224", "s6la_deit_tiny_patch16_224"],
    "cifar_resnet56": ["cifar_resnet56", "s6la_cifar_resnet56"],
    "swin_tiny": ["swin_tiny_patch4_window7_224", "s6la_swin_tiny_patch4_window7_224"],
    "pvt_v2_b0": ["pvt_v2_b0", "s6la_pvt_v2_b0"],
    "cifar_resnet110": ["cifar_resnet110", "s6la_cifar_resnet110"],
}
SPEED_COLUMNS = ["family", "model", "mode", "train ms", "train ratio", "infer ms", "infer ratio",
                 "peak MiB train / infer", "rounds", "first call s train / infer", "note"]
CHECK_COLUMNS = ["model", "batch", "input", "max abs diff", "max abs ref", "max rel diff", "verdict"]
SCAN_COLUMNS = ["L", "ours fwd ms", "ours fwd+bwd ms", "torch path fwd ms", "torch path fwd+bwd ms", "JAX fwd ms",
                "JAX fwd+bwd ms", "bound fwd ms", "ours / JAX fwd", "ours / JAX fwd+bwd", "ours fwd / bound",
                "max rel diff h / ∂a / ∂b", "note"]
S7_COLUMNS = ["model", "train ms", "train ratio", "infer ms", "infer ratio", "peak MiB train / infer", "rounds",
              "first call s train / infer", "note"]
S7_MODELS = ["s5_small", "s7_small", "gru_small"]  # the reference first
SCAN_LENGTHS = [64, 128]  # --smallest
HAVE_JAX = importlib.util.find_spec("jax") is not None
N_VERDICTS = 6 + 3 + 1  # speed, scan, s7


def load_gpu_module():
    """benchmarks/gpu.py as a module (its dataclass looks the module up in sys.modules while it loads)."""
    spec = importlib.util.spec_from_file_location("gpu_bench_script", SCRIPT)
    gpu = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = gpu
    try:
        spec.loader.exec_module(gpu)
    finally:
        sys.modules.pop(spec.name, None)
    return gpu


def run_gpu_script(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return run_script("gpu.py", *args, timeout=timeout)


@pytest.fixture(scope="module")
def smallest(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_bench")
    proc = run_gpu_script("--smallest", "--out-dir", str(out))
    check_ok(proc)
    return proc, out


def test_smallest_json(smallest):
    _, out = smallest
    res = json.loads((out / "gpu_bench.json").read_text())
    for key in ("command", "date", "device", "environment", "smallest", "budget_s", "sections", "plan_s",
                "elapsed_s", "settings", "correctness", "speed", "scan", "s7", "verdicts", "skipped"):
        assert key in res
    assert res["sections"] == ["correctness", "speed", "scan", "s7"]
    assert list(res["plan_s"]) == ["correctness"] + (["scan torch"] if HAVE_JAX else []) + ["scan", "s7", "eager"]
    assert list(res["plan_s"].values()) == sorted(res["plan_s"].values())
    assert res["plan_s"]["eager"] == res["budget_s"] - 15
    assert res["device"] == "cpu" and res["smallest"] is True
    assert "--smallest" in res["command"] and res["command"].startswith("python benchmarks/gpu.py")
    env = res["environment"]
    for key in ("torch", "timm", "triton", "python", "kernels"):
        assert key in env
    assert "setting" in env["kernels"] or env["kernels"].get("module") is False
    assert res["elapsed_s"] <= res["budget_s"]
    assert res["skipped"] == []

    c = res["correctness"]
    assert c["tolerance"] == pytest.approx(1e-4) and "CPU" in c["comparison"]
    assert len(c["models"]) >= 5 and c["all_pass"]
    for r in c["models"]:
        assert r["verdict"] == "PASS" and r["max_rel_diff"] == 0.0  # the model against itself on the CPU
    checked = {r["model"] for r in c["models"]}
    assert {"s6la_cifar_resnet20", "rla_cifar_resnet20", "mrla_cifar_resnet20"} <= checked
    assert not any(m.startswith(("s7_", "s5_", "gru_")) for m in checked)

    rows = res["speed"]
    assert [(r["family"], r["model"]) for r in rows] == [(f, m) for f, ms in SMALLEST_SPEED.items() for m in ms]
    for r in rows:
        assert r["mode"] == "eager" and r["status"] == "ok" and r["rounds"] == 2
        assert r["vanilla"] == SMALLEST_SPEED[r["family"]][0]
        assert r["train_ms"] > 0 and r["infer_ms"] > 0
        assert len(r["train_ms_per_round"]) == len(r["infer_ms_per_round"]) == 2
        for phase in ("train", "infer"):
            ratio = r[f"{phase}_ratio"]
            assert isinstance(ratio["median"], float) and ratio["median"] > 0
            assert 0 < ratio["min"] <= ratio["median"] <= ratio["max"]
            if r["model"] == r["vanilla"]:
                assert ratio["median"] == ratio["min"] == ratio["max"] == 1.0
        assert r["train_peak_mib"] is None  # no allocator statistics on the CPU

    verdicts = {v["target"]: v["verdict"] for v in res["verdicts"]}
    assert len(verdicts) == N_VERDICTS
    assert [v["section"] for v in res["verdicts"]] == ["speed"] * 6 + ["scan"] * 3 + ["s7"]
    assert all(v in ("PASS", "FAIL", "UNDECIDED", "N/A") for v in verdicts.values())
    speed = [t for t in verdicts if t.startswith("s6la_resnet50")]
    eager = [t for t in speed if "eager" in t and "compiled" not in t]
    assert len(eager) == 4 and all(verdicts[t] != "N/A" for t in eager)  # s6la and rla ResNet-50 ran
    assert all(verdicts[t] == "N/A" for t in speed if "compiled" in t)  # no compile unless --compile
    scan = [v for v in res["verdicts"] if v["section"] == "scan"]
    assert all("jax.lax.associative_scan" in v["target"] for v in scan[:2]) and "bandwidth bound" in scan[2]["target"]
    assert scan[2]["verdict"] != "N/A"  # the bound is measured everywhere
    if not HAVE_JAX:
        assert all(v["verdict"] == "N/A" and "not importable" in v["detail"] for v in scan[:2])
    (s7,) = [v for v in res["verdicts"] if v["section"] == "s7"]
    assert s7["target"].startswith("s7_small eager training step ≤ 1.50× s5_small") and s7["verdict"] != "N/A"


def test_smallest_scan_json(smallest):
    _, out = smallest
    sc = json.loads((out / "gpu_bench.json").read_text())["scan"]
    assert sc["lengths"] == SCAN_LENGTHS and sc["batch"] == 2 and sc["lanes"] == 8 and sc["dtype"] == "complex64"
    assert sc["impls"] == {"ours": "auto", "torch": "torch"}  # no Triton on the CPU: numba (auto) is "ours"
    assert sc["resolved"]["ours"] in ("numba", "torch") and sc["reps"] == 3 and sc["warmup"] == 1
    bw = sc["bandwidth"]
    assert bw["gbps"] > 0 and bw["bytes_moved"] == 2 * sc["copy_bytes"] and len(bw["seconds"]) == sc["reps"]
    jax = sc["jax"]
    if HAVE_JAX:
        assert jax["status"] == "ok" and jax["backend"] == "cpu" and jax["comparable"]
    else:
        assert jax["status"] == "skipped" and "not importable" in jax["note"]
    assert [r["length"] for r in sc["rows"]] == SCAN_LENGTHS
    for r in sc["rows"]:
        assert r["batch"] == 2 and r["lanes"] == 8 and r["elements"] == 2 * r["length"] * 8
        assert r["bytes_fwd"] == 24 * r["elements"]
        assert r["bound_ms"] == pytest.approx(1e3 * r["bytes_fwd"] / (bw["gbps"] * 1e9))
        for label in ("ours", "torch") + (("jax",) if HAVE_JAX else ()):
            for phase in ("fwd", "fwdbwd"):
                assert r[f"{label}_{phase}_ms"] > 0
                assert len(r["ms_per_rep"][f"{label}_{phase}"]) == sc["reps"]
                assert r["calls_per_rep"][f"{label}_{phase}"] == 1
        if not HAVE_JAX:
            assert r["jax_fwd_ms"] is None and r["ours_over_jax_fwd"] is None and r["ours_over_jax_fwdbwd"] is None
        assert r["ours_fwd_over_bound"] == pytest.approx(r["ours_fwd_ms"] / r["bound_ms"])
        assert r["ours_over_torch_fwd"] == pytest.approx(r["ours_fwd_ms"] / r["torch_fwd_ms"])
        assert r["errors"] == {}
        # a real check even on the CPU: the fast path and the torch path compute the same states and gradients
        assert set(r["diff_vs_torch"]) == {"h", "grad_a", "grad_b"}
        assert all(0 <= d < 1e-5 for d in r["diff_vs_torch"].values())


def test_smallest_s7_json(smallest):
    _, out = smallest
    s7 = json.loads((out / "gpu_bench.json").read_text())["s7"]
    assert s7["setting"] == {"models": S7_MODELS, "length": 64, "in_chans": 8, "num_classes": 10, "train_batch": 2,
                             "infer_batch": 2}
    assert s7["precision"] == "fp32" and s7["mode"] == "eager"
    assert [r["model"] for r in s7["rows"]] == S7_MODELS
    for r in s7["rows"]:
        assert r["status"] == "ok" and r["rounds"] == 2 and r["vanilla"] == "s5_small" and r["family"] == "s7_seq"
        assert r["train_ms"] > 0 and r["infer_ms"] > 0 and r["train_peak_mib"] is None
        assert 0 < r["train_ratio"]["min"] <= r["train_ratio"]["median"] <= r["train_ratio"]["max"]
    assert s7["rows"][0]["train_ratio"]["median"] == 1.0


def test_smallest_markdown(smallest):
    proc, out = smallest
    report = (out / "gpu_bench.md").read_text()
    assert report.strip() in proc.stdout
    for text in ("- command: `python benchmarks/gpu.py --smallest", "- GPU: none: CPU", "torch ", "triton ",
                 "timm ", "statelayers kernel path:", "- date: "):
        assert text in report
    (check_h, check_rows), (speed_h, speed_rows), (scan_h, scan_rows), (s7_h, s7_rows) = tables(report)
    assert check_h == CHECK_COLUMNS and speed_h == SPEED_COLUMNS and scan_h == SCAN_COLUMNS and s7_h == S7_COLUMNS
    assert all(len(r) == len(check_h) and r[-1] == "PASS" for r in check_rows)
    assert all(len(r) == len(speed_h) for r in speed_rows)
    assert [(r[0], r[1], r[2]) for r in speed_rows] == [(f, m, "eager") for f, ms in SMALLEST_SPEED.items()
                                                        for m in ms]
    for r in speed_rows:
        vanilla = r[1] == SMALLEST_SPEED[r[0]][0]
        for col in ("train ratio", "infer ratio"):
            cell = r[speed_h.index(col)]
            assert (cell == "1") if vanilla else float(cell.split()[0]) > 0
        assert float(r[speed_h.index("train ms")]) > 0 and float(r[speed_h.index("infer ms")]) > 0
    assert [r[0] for r in scan_rows] == [str(n) for n in SCAN_LENGTHS] and all(len(r) == len(scan_h) for r in scan_rows)
    for r in scan_rows:
        cells = dict(zip(scan_h, r))
        for col in ("ours fwd ms", "ours fwd+bwd ms", "torch path fwd ms", "torch path fwd+bwd ms", "bound fwd ms",
                    "ours fwd / bound"):
            assert float(cells[col]) >= 0
        assert (float(cells["JAX fwd ms"]) > 0) if HAVE_JAX else cells["JAX fwd ms"] == cells["ours / JAX fwd"] == "–"
        assert len(cells["max rel diff h / ∂a / ∂b"].split(" / ")) == 3
    assert "## Scan: `linear_scan`, complex64, batch 2, 8 lanes" in report
    assert 'ours: impl="auto"' in report and "copy bandwidth" in report
    assert HAVE_JAX or "JAX: skipped: jax is not importable here" in report
    assert [r[0] for r in s7_rows] == S7_MODELS and all(len(r) == len(s7_h) for r in s7_rows)
    assert s7_rows[0][s7_h.index("train ratio")] == "1" and float(s7_rows[1][s7_h.index("train ratio")].split()[0]) > 0
    assert "## S7: sequence classifiers on x (2, 64, 8)" in report
    verdict_lines = [line for line in report.splitlines() if line.startswith(("- PASS", "- FAIL", "- UNDECIDED",
                                                                              "- N/A"))]
    assert len(verdict_lines) == N_VERDICTS
    assert all("s6la_resnet50" in v for v in verdict_lines[:6])
    assert all("scan" in v for v in verdict_lines[6:9]) and "s7_small" in verdict_lines[9]


@pytest.mark.parametrize("bad", [["--families", "vgg16"], ["--rounds", "0"], ["--budget-s", "5"],
                                 ["--modes", "jit"], ["--sections", "scan", "jax"], ["--no-such-option"]])
def test_bad_argument_exits_2_with_one_line(bad, tmp_path):
    proc = run_gpu_script(*bad, "--out-dir", str(tmp_path), timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0], proc.stderr
    assert proc.stdout == "" and not any(tmp_path.iterdir())


def test_a_failing_model_is_recorded_in_one_line_and_the_rest_go_on(tmp_path):
    gpu = load_gpu_module()
    out = tmp_path / "speed.jsonl"
    setting = {"models": ["cifar_resnet20", "no_such_model", "s6la_cifar_resnet20"], "img_size": 28, "in_chans": 1,
               "train_batch": 2, "infer_batch": 2, "channels_last": False}
    run = {"device": "cpu", "mode": "eager", "precision": "fp32", "warmup": 1, "rounds": 2, "steps": 1,
           "deadline": 1e18}
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on a busy 2-core machine, 2 threads made these tiny steps 50× slower
    try:
        gpu.time_family("tiny", setting, run, gpu.Recorder(str(out)))
    finally:
        torch.set_num_threads(threads)
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    (err,) = [r for r in recs if r["kind"] == "model"]
    assert err["model"] == "no_such_model" and err["status"] == "error" and "\n" not in err["error"]
    (fam,) = [r for r in recs if r["kind"] == "family"]
    assert fam["status"] == "ok" and sorted(fam["times"]) == ["cifar_resnet20", "s6la_cifar_resnet20"]
    assert all(len(t["train"]) == len(t["infer"]) == 2 for t in fam["times"].values())


def test_time_plan_fits_the_budget_in_section_order():
    from types import SimpleNamespace

    gpu = load_gpu_module()
    every = SimpleNamespace(sections=list(gpu.SECTIONS), modes=["eager", "compiled"])
    plan = gpu.time_plan(every, 480, jax=True)
    assert list(plan) == ["correctness", "precompile", "scan torch", "scan", "s7", "eager", "compiled"]
    assert list(plan.values()) == sorted(plan.values()) and plan["compiled"] == 480 - gpu.REPORT_RESERVE_S
    assert plan["correctness"] == plan["precompile"] == pytest.approx(gpu.PHASE1_SHARE * 480)
    # the correctness section starts before the modes are known: its limit cannot depend on them
    assert gpu.time_plan(SimpleNamespace(sections=every.sections, modes=None), 480)["correctness"] == \
        plan["correctness"]
    assert "scan torch" not in gpu.time_plan(every, 480, jax=False)
    alone = gpu.time_plan(SimpleNamespace(sections=["scan", "s7"], modes=None), 480)
    assert list(alone) == ["scan", "s7"] and 0 < alone["scan"] < alone["s7"] == 480 - gpu.REPORT_RESERVE_S


def _write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_scan_with_jax_on_cuda_collects_judges_and_renders(tmp_path):
    """The GPU shape of the scan section (Triton, JAX on its gpu backend) from records written here: JAX is not
    installed on the CI machine, so its rows, ratios and verdicts are exercised on made-up times."""
    from types import SimpleNamespace

    gpu = load_gpu_module()
    setting = gpu.scan_setting("cuda", False)
    assert setting["impls"] == {"ours": "triton", "torch": "torch"} and setting["lengths"] == [1024, 4096, 16384]
    gbps = 4000.0
    ms = {  # L: (ours fwd, ours fwd+bwd, jax fwd, jax fwd+bwd) in ms; the torch path 10× ours
        1024: (0.05, 0.15, 0.10, 0.30),   # faster than JAX, within 3× the bound (0.05 ms)
        4096: (0.30, 0.70, 0.30, 0.60),   # as fast as JAX forward (overlapping), slower fwd+bwd
        16384: (0.60, 2.0, 0.95, 4.15),   # L 16384 is run first (the longest first)
    }
    spread = [0.98, 1.0, 1.02]
    recs = [{"kind": "impls", "impls": setting["impls"], "resolved": setting["impls"]},
            {"kind": "bandwidth", "bytes_moved": 2 * 2**30, "seconds": [2 * 2**30 / gbps / 1e9] * 3, "calls": 10,
             "gbps": gbps}]
    jrecs = [{"kind": "jax", "status": "ok", "version": "0.0-test", "backend": "gpu", "devices": ["cuda:0"]}]
    for L, (of, ob, jf, jb) in ms.items():
        for label, phase, t, out in (("ours", "fwd", of, recs), ("ours", "fwdbwd", ob, recs),
                                     ("torch", "fwd", 10 * of, recs), ("torch", "fwdbwd", 10 * ob, recs),
                                     ("jax", "fwd", jf, jrecs), ("jax", "fwdbwd", jb, jrecs)):
            out.append({"kind": "scan", "length": L, "label": label, "impl": label, "phase": phase,
                        "seconds": [1e-3 * t * s for s in spread], "calls": 5})
        recs.append({"kind": "diff", "length": L, "h": 1e-7, "grad_a": 2e-7, "grad_b": 1e-7})
    _write_jsonl(tmp_path / "scan.jsonl", recs)
    _write_jsonl(tmp_path / "scan_jax.jsonl", jrecs)
    args = SimpleNamespace(jax_found=True, warmup=3, smallest=False, precision="bf16")
    skipped = []
    sc = gpu.collect_scan(args, "cuda", setting, tmp_path, set(), skipped)
    assert skipped == [] and sc["jax"]["comparable"] and [r["length"] for r in sc["rows"]] == [1024, 4096, 16384]
    r = sc["rows"][0]
    assert r["bound_ms"] == pytest.approx(1e3 * 24 * 8 * 1024 * 256 / (gbps * 1e9))
    assert r["ours_fwd_ms"] == pytest.approx(0.05) and r["ours_over_jax_fwd"] == pytest.approx(0.5)
    assert r["ours_over_torch_fwdbwd"] == pytest.approx(0.1)
    fwd, fwdbwd, bound = gpu.scan_verdicts(args, sc)
    assert "triton" in fwd["target"] and fwd["verdict"] == "UNDECIDED"  # PASS, UNDECIDED (equal), PASS
    assert fwdbwd["verdict"] == "FAIL" and "L 4096: ours / JAX 1.17 (FAIL)" in fwdbwd["detail"]
    ratios = [row["ours_fwd_over_bound"] for row in sc["rows"]]
    assert bound["verdict"] == ("PASS" if max(ratios) * 1.02 <= 3 else "FAIL")
    lines = gpu.render_scan(sc)
    (head, rows), = tables("\n".join(lines))
    assert head == SCAN_COLUMNS and [row[0] for row in rows] == ["1024", "4096", "16384"]
    assert rows[0][head.index("ours / JAX fwd")] == "0.50" and rows[2][head.index("JAX fwd+bwd ms")] == "4.150"
    assert any("jax 0.0-test, gpu backend" in line for line in lines)
    # JAX on its CPU backend beside a CUDA run, or not there at all: reported, never compared
    _write_jsonl(tmp_path / "scan_jax.jsonl", [dict(jrecs[0], backend="cpu")] + jrecs[1:])
    cpu_jax = gpu.collect_scan(args, "cuda", setting, tmp_path, set(), [])
    assert not cpu_jax["jax"]["comparable"] and cpu_jax["rows"][0]["ours_over_jax_fwd"] is None
    assert [v["verdict"] for v in gpu.scan_verdicts(args, cpu_jax)[:2]] == ["N/A", "N/A"]
    # JAX stopped by its hard limit after L 16384 (run first): the other L's are listed as cut short
    _write_jsonl(tmp_path / "scan_jax.jsonl", [r for r in jrecs if r.get("length") in (None, 16384)])
    cut = []
    part = gpu.collect_scan(args, "cuda", setting, tmp_path, {"scan jax"}, cut)
    assert cut == ["scan L 1024 jax: hard time limit", "scan L 4096 jax: hard time limit"]
    assert part["rows"][2]["ours_over_jax_fwd"] is not None and part["rows"][0]["jax_fwd_ms"] is None
    fwd, fwdbwd = gpu.scan_verdicts(args, part)[:2]
    assert fwd["verdict"] == fwdbwd["verdict"] == "N/A" and "L 1024: not measured" in fwd["detail"]
    assert "L 16384: ours / JAX 0.63 (PASS)" in fwd["detail"]
    (tmp_path / "scan_jax.jsonl").unlink()
    gone = gpu.collect_scan(args, "cuda", setting, tmp_path, {"scan jax"}, [])
    assert gone["jax"] == {"status": "skipped", "note": "hard time limit"}

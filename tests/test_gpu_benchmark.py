"""benchmarks/gpu.py on its smallest setting (CPU): it runs, and its JSON and markdown have the promised shape.

Nothing here is timed or needs a GPU; the figures of a --smallest run mean nothing, only their form is checked.
"""

from __future__ import annotations

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
    for key in ("command", "date", "device", "environment", "smallest", "budget_s", "plan_s", "elapsed_s",
                "settings", "correctness", "speed", "verdicts", "skipped"):
        assert key in res
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
    assert len(verdicts) == 6
    assert all(v in ("PASS", "FAIL", "UNDECIDED", "N/A") for v in verdicts.values())
    eager = [t for t in verdicts if "eager" in t and "compiled" not in t]
    assert len(eager) == 4 and all(verdicts[t] != "N/A" for t in eager)  # s6la and rla ResNet-50 ran
    assert all(verdicts[t] == "N/A" for t in verdicts if "compiled" in t)  # no compile unless --compile


def test_smallest_markdown(smallest):
    proc, out = smallest
    report = (out / "gpu_bench.md").read_text()
    assert report.strip() in proc.stdout
    for text in ("- command: `python benchmarks/gpu.py --smallest", "- GPU: none: CPU", "torch ", "triton ",
                 "timm ", "statelayers kernel path:", "- date: "):
        assert text in report
    (check_h, check_rows), (speed_h, speed_rows) = tables(report)
    assert check_h == CHECK_COLUMNS and speed_h == SPEED_COLUMNS
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
    verdict_lines = [line for line in report.splitlines() if line.startswith(("- PASS", "- FAIL", "- UNDECIDED",
                                                                              "- N/A"))]
    assert len(verdict_lines) == 6 and all("s6la_resnet50" in v for v in verdict_lines)


@pytest.mark.parametrize("bad", [["--families", "vgg16"], ["--rounds", "0"], ["--budget-s", "5"],
                                 ["--modes", "jit"], ["--no-such-option"]])
def test_bad_argument_exits_2_with_one_line(bad, tmp_path):
    proc = run_gpu_script(*bad, "--out-dir", str(tmp_path), timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0], proc.stderr
    assert proc.stdout == "" and not any(tmp_path.iterdir())


def test_a_failing_model_is_recorded_in_one_line_and_the_rest_go_on(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_bench_script", SCRIPT)
    gpu = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = gpu  # its dataclass looks the module up
    try:
        spec.loader.exec_module(gpu)
    finally:
        sys.modules.pop(spec.name, None)
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

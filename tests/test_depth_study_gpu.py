"""`benchmarks/depth_study.py --preset gpu` in its CPU-sized form (`--smallest`): two runs on digits, each its own
`python -m statelayers train` process, both at once; the estimate's probe, the chosen budget, the report, and a
second invocation that finds both runs finished. One subprocess each, with one thread per process.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import subprocess
import sys
import time
from pathlib import Path

from script_helpers import one_thread_env, tables

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "depth_study.py"


def run_preset(out: Path, *args: str, timeout: int = 300) -> tuple[subprocess.CompletedProcess, int, float]:
    """(completed process, its pid, seconds it took)."""
    env = one_thread_env()
    t0 = time.perf_counter()
    with subprocess.Popen([sys.executable, str(SCRIPT), "--preset", "gpu", "--smallest", "--output", str(out), *args],
                          env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as p:
        try:
            stdout, stderr = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            raise
    proc = subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr)
    assert proc.returncode == 0, f"exit code {proc.returncode}\nstdout:\n{stdout[-3000:]}\nstderr:\n{stderr[-3000:]}"
    return proc, p.pid, time.perf_counter() - t0


def test_gpu_preset_smallest_parallel_then_resume(tmp_path):
    out = tmp_path / "study"
    proc, parent_pid, first_s = run_preset(out)
    text = proc.stdout
    # the estimate: a probe with both processes at once, then the budget it chose, before any training
    assert "# estimate: 2 runs to train (0 already done), 2 at once as separate processes" in text
    assert "# probe on cpu: 2 processes at once (2 pids)" in text
    assert "# estimated total:" in text and "# chosen budget: 1 epoch(s)" in text
    assert text.index("# chosen budget") < text.index("# Depth study")

    (main_h, main_rows), (proc_h, proc_rows) = tables(text)
    assert main_h[:3] == ["family", "depth", "model"] and "test acc (mean ± std)" in main_h and "params" in main_h
    assert [(r[0], r[1], r[2]) for r in main_rows] == [("vanilla", "20", "cifar_resnet20"),
                                                         ("s6la", "20", "s6la_cifar_resnet20")]
    assert all(len(r) == len(main_h) and 0.0 <= float(r[main_h.index("test acc (mean ± std)")]) <= 1.0
               for r in main_rows)

    # each run in its own process, the two side by side
    assert proc_h == ["run", "pid", "start s", "end s", "exit", "status"]
    assert sorted(r[0] for r in proc_rows) == ["cifar_resnet20-s0", "s6la_cifar_resnet20-s0"]
    assert all(r[4] == "0" and r[5] == "trained" for r in proc_rows)
    pids = {int(r[1]) for r in proc_rows}
    assert len(pids) == 2 and parent_pid not in pids
    starts, ends = [float(r[2]) for r in proc_rows], [float(r[3]) for r in proc_rows]
    assert max(starts) < min(ends), "the two runs did not overlap in time"
    assert "at most 2 at once" in text
    # the runs' own files say the same: each run wrote its config before the other wrote its summary
    runs = out / "runs"
    a, b = runs / "cifar_resnet20-s0", runs / "s6la_cifar_resnet20-s0"
    for x, y in ((a, b), (b, a)):
        assert (x / "config.yaml").stat().st_mtime < (y / "summary.yaml").stat().st_mtime
    for name in ("cifar_resnet20-s0", "s6la_cifar_resnet20-s0"):
        log = (out / "logs" / f"{name}.log").read_text()
        assert "trained: -m statelayers train --model" in log and "run folder:" in log

    for f in ("depth_study.md", "depth_study.csv", "depth_study.png", "processes.csv", "gpu_budget.yaml"):
        assert (out / f).is_file(), f
    assert len((out / "depth_study.csv").read_text().strip().splitlines()) == 1 + 2
    assert "| vanilla | 20 | cifar_resnet20 |" in (out / "depth_study.md").read_text()

    # a second invocation: the budget of the folder, nothing to train, no probe, the same table
    stamps = {p: p.stat().st_mtime for p in runs.glob("*/summary.yaml")}
    again, _, again_s = run_preset(out)
    assert "chosen by an earlier invocation" in again.stdout
    assert "# estimate: 0 runs to train (2 already done)" in again.stdout and "# probe" not in again.stdout
    assert again.stderr.count(": done") == 2
    assert tables(again.stdout)[0][1] == main_rows
    assert {p: p.stat().st_mtime for p in runs.glob("*/summary.yaml")} == stamps
    assert again_s < first_s


def load_script(monkeypatch):
    spec = importlib.util.spec_from_file_location("depth_study", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "depth_study", module)  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_train_argv_round_trips_through_the_cli(monkeypatch):
    """The preset starts each run as `python -m statelayers train ...`: those flags give back the same config."""
    depth_study = load_script(monkeypatch)
    from statelayers.cli import _train_config, build_parser
    from statelayers.engine import TrainConfig

    cfg = TrainConfig(model="s6la_cifar_resnet56", data="fashion_mnist", recipe="small", epochs=3, batch_size=128,
                      seed=2, model_kwargs={"zero_init_last": False, "d_state": 32, "h0": "random"}, amp="bf16",
                      workers=1, output="runs/x", name="s6la_cifar_resnet56-s2", quiet=True)
    argv = depth_study.train_argv(cfg)
    assert argv[:4] == [sys.executable, "-m", "statelayers", "train"]
    back = _train_config(build_parser().parse_args(argv[3:]))
    assert dataclasses.asdict(back) == dataclasses.asdict(cfg)


def test_plan_and_budget_choice(monkeypatch):
    """Longest runs first into the slots; the most epochs that fit, else a smaller subset, else the smallest."""
    ds = load_script(monkeypatch)
    jobs = [ds.Job("main", "x", 20, m, {}, 0, f"{m}-s0") for m in ("slow", "mid", "fast")]
    speeds = {"slow": dict(step_s=0.4, eval_ips=1e9, startup_s=10.0), "mid": dict(step_s=0.2, eval_ips=1e9,
                                                                                   startup_s=10.0),
              "fast": dict(step_s=0.1, eval_ips=1e9, startup_s=10.0)}
    order, dur, makespan = ds.plan(jobs, speeds, 2, 1000, 0, 100, 2)  # 10 steps per epoch
    assert [j.model for j in order] == ["slow", "mid", "fast"]
    per = {m: 10.0 + 2 * (10 * s + ds.PAR_EPOCH_OVERHEAD_S) + ds.PAR_RUN_END_S for m, s in
           (("slow", 0.4), ("mid", 0.2), ("fast", 0.1))}
    assert dur == {f"{m}-s0": per[m] for m in per}
    assert makespan == max(per["slow"], per["mid"] + per["fast"])  # two slots: slow | mid then fast

    def plan_of(epochs, subset):
        return ds.plan(jobs, speeds, epochs, subset, 0, 100, 2)

    def total(epochs, subset):
        return 5.0 + (1 + ds.MARGIN) * plan_of(epochs, subset)[2] + ds.REPORT_S

    cands = [(e, 1000) for e in range(6, 1, -1)] + [(2, 500), (2, 200)]
    budget = (total(4, 1000) + total(5, 1000)) / 2
    chosen, _, _, _, est, over = ds.choose_budget(cands, plan_of, 5.0, budget)
    assert chosen == (4, 1000) and est == total(4, 1000) <= budget and over[:2] == (5, 1000)
    chosen, *_ = ds.choose_budget(cands, plan_of, 5.0, (total(2, 500) + total(2, 1000)) / 2)
    assert chosen == (2, 500)
    chosen, *_, est, _ = ds.choose_budget(cands, plan_of, 5.0, 1.0)  # nothing fits: the smallest, over budget
    assert chosen == (2, 200) and est > 1.0

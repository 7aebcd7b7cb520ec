"""The training engine on real data (scikit-learn digits): run folders, exact resume after SIGKILL,
DDP on two CPU processes, gradient accumulation, damaged checkpoints, clear errors."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
import yaml
from safetensors.torch import load_file

import statelayers  # noqa: F401
from statelayers.checkpoint import CheckpointError, latest_checkpoint
from statelayers.cli import main
from statelayers.engine import TrainConfig, evaluate, train
from statelayers.engine.optim import build_optimizer, learning_rate

# BatchNorm statistics depend on how a batch is split; GroupNorm(1) makes a step a function of
# the global batch only, which the DDP and accumulation equivalences need
NO_BN = {"norm_layer": "groupnorm1"}
FAST = dict(model="s6la_cifar_resnet20", data="digits", quiet=True, train_aug={"hflip": 0.0, "crop_pad": 0})


def weights(run_dir: Path) -> dict:
    return load_file(str(latest_checkpoint(Path(run_dir) / "checkpoints") / "model.safetensors"))


def same(a: dict, b: dict, exact: bool = True) -> bool:
    if a.keys() != b.keys():
        return False
    if exact:
        return all(torch.equal(a[k], b[k]) for k in a)
    return all(torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-6) for k in a)


def env_one_thread():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def test_run_folder_metrics_checkpoints_and_eval(tmp_path):
    r = train(TrainConfig(**FAST, epochs=2, batch_size=64, output=str(tmp_path), name="run"))
    d = r.run_dir
    for f in ("config.yaml", "metrics.csv", "best.safetensors", "curves.png", "checkpoints/LAST"):
        assert (d / f).exists(), f
    assert any((d / "tb").iterdir())
    cfg = yaml.safe_load((d / "config.yaml").read_text())
    assert cfg["model"] == "s6la_cifar_resnet20" and cfg["lr_resolved"] == pytest.approx(0.1 * 64 / 128)
    rows = (d / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 3  # header + 2 epochs
    assert r.final_metrics["eval_acc"] > 0.5  # 10 classes: chance is 0.1
    # evaluating the last checkpoint reproduces the logged number exactly
    last = latest_checkpoint(d / "checkpoints") / "model.safetensors"
    out = evaluate("s6la_cifar_resnet20", last, "digits")
    assert out["eval_acc"] == pytest.approx(r.final_metrics["eval_acc"], abs=1e-12)


def test_no_weight_decay_for_ssm_parameters_and_linear_lr_scaling():
    cfg = TrainConfig(model="s6la_cifar_resnet20", recipe="resnet", batch_size=64, grad_accum=2).resolved()
    assert learning_rate(cfg, world=4) == pytest.approx(0.1 * 64 * 4 * 2 / 256)
    model = timm.create_model("s6la_cifar_resnet20")
    opt = build_optimizer(cfg, model, 0.1)
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    named = dict(model.named_parameters())
    for n in ("h0", "layer1.0.s6la.A_log", "layer1.0.s6la.dt_up.bias"):
        assert id(named[n]) not in decayed, n
    assert id(named["layer1.0.conv1.weight"]) in decayed and id(named["layer1.0.s6la.wB.weight"]) in decayed


def test_unknown_recipe_and_model_are_clear_errors(capsys):
    with pytest.raises(ValueError, match="unknown recipe"):
        TrainConfig(model="x", recipe="imagenet21k").resolved()
    assert main(["train", "--model", "no_such_model", "--data", "digits"]) == 2
    assert "unknown model 'no_such_model'" in capsys.readouterr().err


def test_missing_dataset_names_the_install_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("STATELAYERS_FASHION_MNIST", str(tmp_path / "nowhere"))
    assert main(["train", "--model", "cifar_resnet20", "--data", "fashion_mnist"]) == 2
    assert "apt-get install" in capsys.readouterr().err


def test_gradient_accumulation_equals_the_big_batch(tmp_path):
    common = dict(FAST, model_kwargs=NO_BN, epochs=1, max_steps=4, output=str(tmp_path))
    a = train(TrainConfig(**common, batch_size=64, name="big"))
    b = train(TrainConfig(**common, batch_size=32, grad_accum=2, name="accum"))
    assert same(weights(a.run_dir), weights(b.run_dir), exact=False)


def test_speed_options_run(tmp_path):
    r = train(TrainConfig(**FAST, epochs=1, batch_size=64, amp="bf16", channels_last=True, ema=True,
                          clip_grad=1.0, mixup=0.8, cutmix=1.0, smoothing=0.1, output=str(tmp_path), name="opts"))
    assert 0.0 <= r.final_metrics["ema_eval_acc"] <= 1.0
    assert torch.isfinite(torch.tensor(r.final_metrics["train_loss"]))
    assert (r.run_dir / "checkpoints").exists()
    assert (latest_checkpoint(r.run_dir / "checkpoints") / "ema.safetensors").is_file()


def _train_cmd(out: Path, name: str, extra=()):
    return [sys.executable, "-m", "statelayers", "train", "--model", "s6la_cifar_resnet20", "--data", "digits",
            "--epochs", "2", "--batch-size", "32", "--train-aug", "hflip=0.0", "crop_pad=0", "--output", str(out),
            "--name", name, "--quiet", *extra]


def test_sigkill_mid_epoch_then_resume_ends_with_the_same_weights(tmp_path, sigkill_then_resume):
    ref = subprocess.run(_train_cmd(tmp_path, "ref"), env=env_one_thread(), capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr
    state, resumed = sigkill_then_resume(_train_cmd(tmp_path, "killed", ["--ckpt-every", "5"]), tmp_path / "killed")
    assert state["epoch"] == 0 and state["batch_in_epoch"] > 0, "the kill should land mid-epoch"
    assert resumed.returncode == 0, resumed.stderr
    assert same(weights(tmp_path / "ref"), weights(tmp_path / "killed"))
    rows = (tmp_path / "killed" / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 3


def test_two_cpu_processes_match_one_process_at_the_same_global_batch(tmp_path):
    kw = ["--model-kwargs", "norm_layer=groupnorm1", "--max-steps", "6", "--epochs", "1"]
    one = subprocess.run(_train_cmd(tmp_path, "one", kw) + ["--batch-size", "64"], env=env_one_thread(),
                         capture_output=True, text=True)
    assert one.returncode == 0, one.stderr
    two = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "statelayers",
         *_train_cmd(tmp_path, "two", kw)[3:]],
        env=env_one_thread(), capture_output=True, text=True, timeout=600,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    summary = yaml.safe_load((tmp_path / "two" / "summary.yaml").read_text())
    assert summary["world_size"] == 2
    assert len(set(summary["replica_checksums"])) == 1, "the two processes ended with different weights"
    assert same(weights(tmp_path / "one"), weights(tmp_path / "two"), exact=False)


def test_two_processes_with_batchnorm_end_with_the_same_weights(tmp_path):
    """DDP gives every process rank 0's BatchNorm statistics at each forward pass, but after the last step each
    process holds its own; the engine broadcasts them before evaluating and checkpointing (without that the
    final cross-process weight check fails)."""
    two = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "statelayers",
         *_train_cmd(tmp_path, "bn", ["--max-steps", "2", "--epochs", "1"])[3:]],
        env=env_one_thread(), capture_output=True, text=True, timeout=600,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    summary = yaml.safe_load((tmp_path / "bn" / "summary.yaml").read_text())
    assert summary["world_size"] == 2 and len(set(summary["replica_checksums"])) == 1


def test_damaged_and_mismatched_checkpoints_are_clear_errors(tmp_path, capsys):
    r = train(TrainConfig(**FAST, epochs=1, max_steps=2, batch_size=64, output=str(tmp_path), name="c"))
    ckpt = latest_checkpoint(r.run_dir / "checkpoints")
    good = (ckpt / "model.safetensors").read_bytes()
    # another model
    with pytest.raises(CheckpointError, match="written for model 's6la_cifar_resnet20', not 'cifar_resnet20'"):
        evaluate("cifar_resnet20", ckpt / "model.safetensors", "digits")
    # truncated weights
    (ckpt / "model.safetensors").write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        evaluate("s6la_cifar_resnet20", ckpt / "model.safetensors", "digits")
    assert main(["eval", "--model", "s6la_cifar_resnet20", "--checkpoint", str(ckpt / "model.safetensors"),
                 "--data", "digits"]) == 2
    assert "corrupt or truncated" in capsys.readouterr().err
    # corrupt optimizer state on resume
    (ckpt / "model.safetensors").write_bytes(good)
    (ckpt / "state.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="state"):
        train(TrainConfig(model="", resume=str(r.run_dir)))
    with pytest.raises(CheckpointError, match="does not exist"):
        evaluate("s6la_cifar_resnet20", tmp_path / "missing.safetensors", "digits")


def test_demo_prints_both_models_side_by_side(tmp_path, capsys):
    assert main(["demo", "--data", "digits", "--epochs", "1", "--output", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "cifar_resnet20" in out and "s6la_cifar_resnet20" in out and "test acc" in out
    assert list(tmp_path.glob("demo-*/curves.png"))


def test_imagefolder_tree_trains_with_the_resnet_recipe(tmp_path):
    from PIL import Image

    from statelayers.data.images import load_digits

    x, y = load_digits()
    root = tmp_path / "tree"
    for split, rng in (("train", range(0, 300)), ("val", range(300, 360))):
        for i in rng:
            if y[i] < 3:
                d = root / split / f"class{int(y[i])}"
                d.mkdir(parents=True, exist_ok=True)
                Image.fromarray(x[i].numpy()).convert("RGB").resize((40, 40)).save(d / f"{i}.png")
    r = train(TrainConfig(model="cifar_resnet20", data=str(root), recipe="resnet", img_size=32, batch_size=16,
                          epochs=1, quiet=True, output=str(tmp_path), name="folder"))
    cfg = yaml.safe_load((r.run_dir / "config.yaml").read_text())
    assert cfg["data_info"]["num_classes"] == 3 and cfg["data_info"]["in_chans"] == 3
    assert cfg["sched"] == "step" and cfg["opt"] == "sgd"
    assert 0.0 <= r.final_metrics["eval_acc"] <= 1.0

"""Run folders (issue 16): every run gets its own folder, created atomically; a non-empty folder is never written
unless resumed or overwritten (the old one then kept aside); names and LAST pointers stay inside their folders.
Real short runs of the smallest model on digits, as in test_engine.py."""

import hashlib
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

import statelayers  # noqa: F401
from statelayers.checkpoint import CheckpointError, latest_checkpoint
from statelayers.cli import main
from statelayers.engine import TrainConfig, train
from statelayers.engine import rundir as rundir_module
from statelayers.engine.rundir import claim_run_dir


def one_thread_env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


FAST = dict(model="s6la_cifar_resnet20", data="digits", quiet=True, train_aug={"hflip": 0.0, "crop_pad": 0},
            epochs=1, max_steps=2, batch_size=64, eval_subset=100)


def tree_hashes(root: Path) -> dict[str, str]:
    """SHA-256 of every file under root, by relative path."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_an_existing_name_is_refused_and_the_first_run_left_untouched(tmp_path, capsys):
    first = train(TrainConfig(**FAST, output=str(tmp_path), name="a", seed=0))
    before = tree_hashes(first.run_dir)
    assert {"config.yaml", "metrics.csv", "best.safetensors", "summary.yaml", "checkpoints/LAST"} <= set(before)
    with pytest.raises(ValueError) as e:
        train(TrainConfig(**FAST, output=str(tmp_path), name="a", seed=1))
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path / "a") in msg and "--resume" in msg and "--overwrite" in msg
    # the command line: one line, exit 2
    argv = ["train", "--model", "s6la_cifar_resnet20", "--data", "digits", "--epochs", "1", "--max-steps", "2",
            "--batch-size", "64", "--output", str(tmp_path), "--name", "a", "--quiet", "--seed", "2"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "already exists" in err
    assert tree_hashes(first.run_dir) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]


def test_an_existing_empty_folder_is_used(tmp_path):
    (tmp_path / "empty").mkdir()
    r = train(TrainConfig(**FAST, output=str(tmp_path), name="empty"))
    assert r.run_dir == tmp_path / "empty" and (r.run_dir / "best.safetensors").is_file()


def test_overwrite_moves_the_old_run_aside_whole(tmp_path):
    first = train(TrainConfig(**FAST, output=str(tmp_path), name="a", seed=0))
    before = tree_hashes(first.run_dir)
    second = train(TrainConfig(**FAST, output=str(tmp_path), name="a", seed=1, overwrite=True))
    assert second.run_dir == tmp_path / "a"
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("a.old-")]
    assert len(aside) == 1 and tree_hashes(aside[0]) == before
    # the new folder holds the new run only: one metrics row, its own seed and weights
    assert len((second.run_dir / "metrics.csv").read_text().strip().splitlines()) == 2
    assert yaml.safe_load((second.run_dir / "config.yaml").read_text())["seed"] == 1
    a, b = load_file(str(aside[0] / "best.safetensors")), load_file(str(second.run_dir / "best.safetensors"))
    assert any(not (a[k] == b[k]).all() for k in a)
    # overwrite of a name that does not exist yet simply creates it
    third = train(TrainConfig(**FAST, output=str(tmp_path), name="new", overwrite=True))
    assert third.run_dir == tmp_path / "new" and not list(tmp_path.glob("new.old-*"))


def test_concurrent_claims_of_one_name_get_distinct_folders(tmp_path, monkeypatch):
    monkeypatch.setattr(rundir_module.time, "strftime", lambda *a: "20260101-000000")
    name = rundir_module.default_run_name("m", "d")
    barrier, got = threading.Barrier(8), []

    def claim():
        barrier.wait()
        got.append(claim_run_dir(tmp_path, None, name))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(got)) == 8
    assert {p.name for p in got} == {name} | {f"{name}-{k}" for k in range(1, 8)}
    # an explicit name claimed by many at once: exactly one wins, the others are refused
    wins, refused = [], []
    barrier = threading.Barrier(8)

    def claim_named():
        barrier.wait()
        try:
            wins.append(claim_run_dir(tmp_path, "same", name))
        except ValueError:
            refused.append(1)

    threads = [threading.Thread(target=claim_named) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and len(refused) == 7


# three real processes started together with default names, all in the same second (the clock is frozen so that
# they collide for sure; without it they collide only when started within one second)
_FROZEN_TRAIN = (
    "import sys, statelayers.engine.rundir as r; r.time.strftime = lambda *a: '20260101-000000'; "
    "from statelayers.cli import main; sys.exit(main(sys.argv[1:]))"
)


def test_three_processes_with_default_names_get_three_folders(tmp_path):
    out = tmp_path / "runs"
    procs = [subprocess.Popen(
        [sys.executable, "-c", _FROZEN_TRAIN, "train", "--model", "s6la_cifar_resnet20", "--data", "digits",
         "--epochs", "1", "--max-steps", "2", "--batch-size", "64", "--eval-subset", "100", "--train-aug",
         "hflip=0.0", "crop_pad=0", "--output", str(out), "--seed", str(s), "--quiet"],
        env=one_thread_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for s in range(3)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-2000:]
    folders = sorted(out.iterdir())
    base = "s6la_cifar_resnet20-digits-20260101-000000"
    assert [f.name for f in folders] == [base, base + "-1", base + "-2"]
    seeds, bests = set(), []
    for f in folders:
        cfg = yaml.safe_load((f / "config.yaml").read_text())
        seeds.add(cfg["seed"])
        assert len((f / "metrics.csv").read_text().strip().splitlines()) == 2  # header + its one epoch
        summary = yaml.safe_load((f / "summary.yaml").read_text())
        assert summary["global_step"] == 2
        best = load_file(str(f / "best.safetensors"))
        # the best weights are this run's: the same as its final checkpoint (one epoch, so best = last)
        last = load_file(str(latest_checkpoint(f / "checkpoints") / "model.safetensors"))
        assert all((best[k] == last[k]).all() for k in best)
        bests.append(best)
    assert seeds == {0, 1, 2}
    assert all(any(not (a[k] == b[k]).all() for k in a) for i, a in enumerate(bests) for b in bests[i + 1:])


@pytest.mark.slow  # 20 s: two DDP processes (the claim itself is tested in-process above)
def test_two_ddp_processes_with_a_default_name_share_one_folder(tmp_path):
    out = tmp_path / "runs"
    two = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "statelayers",
         "train", "--model", "s6la_cifar_resnet20", "--data", "digits", "--epochs", "1", "--max-steps", "1",
         "--batch-size", "32", "--eval-subset", "100", "--output", str(out), "--quiet"],
        env=one_thread_env(), capture_output=True, text=True, timeout=600,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    folders = list(out.iterdir())
    assert len(folders) == 1
    assert yaml.safe_load((folders[0] / "summary.yaml").read_text())["world_size"] == 2


@pytest.mark.parametrize("name", ["../x", "..", ".", "", "a/b", "/tmp/abs", "a\\b"])
def test_names_outside_the_output_folder_are_refused(tmp_path, name):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="single folder name") as e:
        train(TrainConfig(**FAST, output=str(out), name=name))
    assert "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []  # nothing written, not even the output folder


def test_a_negative_ckpt_every_is_refused_and_zero_means_epoch_ends():
    with pytest.raises(ValueError, match="ckpt_every"):
        TrainConfig(model="s6la_cifar_resnet20", ckpt_every=-5).resolved()
    assert TrainConfig(model="s6la_cifar_resnet20", ckpt_every=0).resolved().ckpt_every == 0


def test_a_last_pointer_outside_its_run_is_refused(tmp_path):
    r = train(TrainConfig(**FAST, output=str(tmp_path), name="run"))
    ckpts = r.run_dir / "checkpoints"
    good = latest_checkpoint(ckpts)
    assert good.parent == ckpts
    # a copy of the checkpoint outside the run, which LAST is then made to name in several ways
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    for f in good.iterdir():
        (outside / f.name).write_bytes(f.read_bytes())
    os.symlink(outside, ckpts / "step-99999999")
    for pointer in ("../../elsewhere", str(outside), "step-99999999", "..", ""):
        (ckpts / "LAST").write_text(pointer)
        with pytest.raises(CheckpointError, match="not a checkpoint folder inside") as e:
            latest_checkpoint(ckpts)
        assert "\n" not in str(e.value)
        with pytest.raises(CheckpointError, match="not a checkpoint folder inside"):
            train(TrainConfig(model="", resume=str(r.run_dir)))
    (ckpts / "LAST").write_text(good.name)
    assert latest_checkpoint(ckpts) == good

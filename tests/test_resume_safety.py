"""Issue 16 items 2-6, 10 and 11: damaged checkpoints and best weights are one-line errors (or passed over for the
newest intact checkpoint, saying so), --max-steps resumes exactly, --resume refuses changes to the run, a finished
run is extended on a recomputed schedule, eval reads model and data from the run folder, and bad output folders,
damaged config.yaml and data too large for the arithmetic are one-line errors. Real short runs on digits."""

import csv
import os
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

import statelayers  # noqa: F401
from statelayers.checkpoint import CheckpointError, checkpoint_folders, latest_checkpoint
from statelayers.cli import main
from statelayers.engine import TrainConfig, train
from statelayers.engine.loop import _nonfinite_loss_message
from statelayers.engine.rundir import lock_run_dir

# 4 optimizer steps an epoch
FAST = dict(model="s6la_cifar_resnet20", data="digits", quiet=True, train_aug={"hflip": 0.0, "crop_pad": 0},
            epochs=2, subset=100, batch_size=25, eval_subset=40, eval_batch_size=40)


def flip_bytes(path: Path, n: int = 16) -> None:
    """Invert n bytes in the middle of a file (the size and the header stay intact)."""
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    for i in range(mid, mid + n):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def rows(run_dir: Path) -> list[dict]:
    return list(csv.DictReader(open(Path(run_dir) / "metrics.csv", newline="")))


def last_weights(run_dir: Path) -> dict:
    """Copies (safetensors maps the file: a file damaged in place later would change mapped tensors)."""
    state = load_file(str(latest_checkpoint(Path(run_dir) / "checkpoints") / "model.safetensors"))
    return {k: v.clone() for k, v in state.items()}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 2-epoch run with a checkpoint every 3 steps (checkpoints at steps 3, 4, 6, 8; 6 and 8 kept)."""
    out = tmp_path_factory.mktemp("finished")
    return train(TrainConfig(**FAST, ckpt_every=3, output=str(out), name="run")).run_dir


def copy_run(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


# ------------------------------------------------------------------------------------------ item 2: damage


def test_damaged_best_weights_are_a_one_line_error(finished, tmp_path, capsys):
    run = copy_run(finished, tmp_path / "run")
    assert main(["eval", "--checkpoint", str(run)]) == 0  # model and data from the run folder
    capsys.readouterr()
    flip_bytes(run / "best.safetensors")
    assert main(["eval", "--checkpoint", str(run)]) == 2
    err = one_line_error(capsys)
    assert "best.safetensors" in err and "damaged" in err


@pytest.mark.parametrize("victim", ["model.safetensors", "state.pt"])
def test_resume_passes_over_a_damaged_checkpoint_for_the_newest_intact_one(finished, tmp_path, capsys, victim):
    run = copy_run(finished, tmp_path / "run")
    ckpts = run / "checkpoints"
    assert [p.name for p in checkpoint_folders(ckpts)] == ["step-00000006", "step-00000008"]
    want = last_weights(run)
    flip_bytes(ckpts / "step-00000008" / victim)
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert f"step-00000008/{victim} is damaged" in err and "resuming from" in err and "step-00000006" in err
    # it trained steps 7 and 8 again from step 6, exactly, and LAST names the new step 8
    assert same(last_weights(run), want)
    assert latest_checkpoint(ckpts).name.startswith("step-00000008")
    assert len(rows(run)) == 2


def test_no_intact_checkpoint_is_a_one_line_error_naming_the_file(finished, tmp_path, capsys):
    run = copy_run(finished, tmp_path / "run")
    for ckpt in checkpoint_folders(run / "checkpoints"):
        flip_bytes(ckpt / "state.pt")
    assert main(["train", "--resume", str(run), "--quiet"]) == 2
    err = one_line_error(capsys)
    assert "no intact checkpoint" in err and "state.pt is damaged" in err


def test_last_naming_a_missing_folder_falls_back_to_the_intact_one(finished, tmp_path, capsys):
    run = copy_run(finished, tmp_path / "run")
    (run / "checkpoints" / "LAST").write_text("step-00000099")
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    assert "does not exist" in capsys.readouterr().err
    assert latest_checkpoint(run / "checkpoints").name == "step-00000008"


def test_a_second_process_cannot_resume_a_run_in_use(finished, tmp_path, capsys):
    run = copy_run(finished, tmp_path / "run")
    held = lock_run_dir(run)
    try:
        assert main(["train", "--resume", str(run), "--quiet"]) == 2
        assert "in use by another process" in one_line_error(capsys)
    finally:
        held.close()


# ------------------------------------------------------------------------------------------ item 4: --max-steps


def test_max_steps_checkpoints_once_and_resuming_a_finished_run_takes_no_step(tmp_path, capsys):
    r = train(TrainConfig(**FAST, max_steps=6, ckpt_every=3, output=str(tmp_path), name="m"))
    ckpts = r.run_dir / "checkpoints"
    assert [p.name for p in checkpoint_folders(ckpts)] == ["step-00000004", "step-00000006"]
    before = last_weights(r.run_dir)
    assert main(["train", "--resume", str(r.run_dir), "--no-quiet"]) == 0  # the run was quiet, this is not
    assert "nothing to train" in capsys.readouterr().out
    assert [p.name for p in checkpoint_folders(ckpts)] == ["step-00000004", "step-00000006"]
    assert same(last_weights(r.run_dir), before)
    assert yaml.safe_load((r.run_dir / "summary.yaml").read_text())["global_step"] == 6
    # a larger budget continues the partial epoch: the same as one run with that budget
    assert main(["train", "--resume", str(r.run_dir), "--max-steps", "8", "--quiet"]) == 0
    whole = train(TrainConfig(**FAST, max_steps=8, ckpt_every=3, output=str(tmp_path), name="whole"))
    assert same(last_weights(r.run_dir), last_weights(whole.run_dir))
    assert [row["epoch"] for row in rows(r.run_dir)] == ["0", "1"]
    assert rows(r.run_dir)[1]["train_loss"] == rows(whole.run_dir)[1]["train_loss"]


# ------------------------------------------------------------------------------------------ item 5: changed flags


def test_resume_refuses_flags_that_change_the_run(finished, tmp_path, capsys):
    run = copy_run(finished, tmp_path / "run")
    assert main(["train", "--resume", str(run), "--lr", "5", "--model", "other", "--quiet"]) == 2
    err = one_line_error(capsys)
    assert "lr=5.0" in err and "model='other'" in err and "epochs" in err
    assert main(["train", "--resume", str(run), "--seed", "3", "--quiet"]) == 2  # a default-looking value too
    assert "seed=3" in one_line_error(capsys)
    with pytest.raises(ValueError, match="batch_size=7"):
        train(TrainConfig(model="", resume=str(run), batch_size=7))
    # the run's own values and the documented safe flags are accepted
    assert main(["train", "--resume", str(run), "--model", "s6la_cifar_resnet20", "--workers", "0", "--quiet"]) == 0


# ------------------------------------------------------------------------------------------ item 10: extending


def test_extending_a_finished_run_follows_the_longer_schedule(finished, tmp_path, capsys):
    run = copy_run(finished, tmp_path / "run")
    assert float(rows(run)[-1]["lr"]) < 1e-3 * float(rows(run)[0]["lr"]) or float(rows(run)[-1]["lr"]) == 0.0
    before = last_weights(run)
    assert main(["train", "--resume", str(run), "--epochs", "3", "--no-quiet"]) == 0
    said = capsys.readouterr().out
    assert "2 -> 3 epochs" in said
    three = train(TrainConfig(**{**FAST, "epochs": 3}, ckpt_every=3, output=str(tmp_path), name="three"))
    got, want = rows(run), rows(three.run_dir)
    assert [r["epoch"] for r in got] == ["0", "1", "2"]
    # the third epoch starts at the rate a 3-epoch run has after its second epoch (its row's lr), not at 0
    now = float(said.split("learning rate now ")[1].split(")")[0])
    assert now == pytest.approx(float(want[1]["lr"]), rel=1e-3) and now > 0
    after = last_weights(run)
    assert any(not torch.equal(before[k], after[k]) for k in before if before[k].is_floating_point())
    assert yaml.safe_load((run / "config.yaml").read_text())["epochs"] == 3
    # fewer epochs than trained is refused
    assert main(["train", "--resume", str(run), "--epochs", "1", "--quiet"]) == 2
    assert "cannot take them back" in one_line_error(capsys)


# ------------------------------------------------------------------------------------------ item 11: eval


def test_eval_reads_model_and_data_from_the_run_and_refuses_other_data(tmp_path, capsys):
    r = train(TrainConfig(**{**FAST, "eval_subset": None, "epochs": 1}, output=str(tmp_path), name="e"))
    assert main(["eval", "--checkpoint", str(r.run_dir)]) == 0
    out = dict(line.split() for line in capsys.readouterr().out.strip().splitlines())
    assert float(out["eval_acc"]) == pytest.approx(float(rows(r.run_dir)[0]["eval_acc"]), abs=5e-5)  # 4 decimals
    assert main(["eval", "--checkpoint", str(r.run_dir), "--data", "fashion_mnist"]) == 2
    err = one_line_error(capsys)
    assert "'digits'" in err and "'fashion_mnist'" in err and "--other-data" in err
    assert main(["eval", "--checkpoint", str(r.run_dir), "--model", "cifar_resnet20"]) == 2
    assert "trained as 's6la_cifar_resnet20'" in one_line_error(capsys)
    # a bare weights file: its model from its metadata, the data must be named
    assert main(["eval", "--checkpoint", str(r.run_dir / "best.safetensors")]) == 2
    assert "--data" in one_line_error(capsys)
    assert main(["eval", "--checkpoint", str(r.run_dir / "best.safetensors"), "--data", "digits"]) == 0


# ------------------------------------------------------------------------------------------ item 6: paths and data


def test_an_output_that_is_a_file_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    for output in (tmp_path / "file", tmp_path / "file" / "below"):
        assert main(["train", "--model", "s6la_cifar_resnet20", "--data", "digits", "--output", str(output),
                     "--quiet"]) == 2
        assert "is a file, not a folder" in one_line_error(capsys)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_an_unwritable_output_is_a_one_line_error(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    assert main(["train", "--model", "s6la_cifar_resnet20", "--data", "digits", "--output", str(locked / "runs"),
                 "--quiet"]) == 2
    assert "not writable" in one_line_error(capsys)


@pytest.mark.parametrize("text", ["model: [unclosed", "just a string", ""])
def test_a_damaged_config_yaml_is_a_one_line_error(finished, tmp_path, capsys, text):
    run = copy_run(finished, tmp_path / "run")
    (run / "config.yaml").write_text(text)
    assert main(["train", "--resume", str(run), "--quiet"]) == 2
    assert "config.yaml is damaged" in one_line_error(capsys)
    assert main(["eval", "--checkpoint", str(run)]) == 2
    assert "config.yaml is damaged" in one_line_error(capsys)


def test_a_nonfinite_loss_names_the_likely_cause():
    loss = torch.tensor(float("nan"))
    assert "NaN or inf" in _nonfinite_loss_message(loss, torch.tensor([1.0, float("inf")]), 3)
    assert "as large as 1e+30" in _nonfinite_loss_message(loss, torch.tensor([1.0, 1e30]), 3)
    assert "before any update" in _nonfinite_loss_message(loss, torch.ones(3), 0)
    assert "learning rate" in _nonfinite_loss_message(loss, torch.ones(3), 5)
    # sequence batches are dicts of tensors
    assert "NaN or inf" in _nonfinite_loss_message(loss, {"x": torch.tensor([float("nan")])}, 3)


def test_ts_data_too_large_for_float32_is_a_one_line_error(tmp_path, capsys):
    from test_seqdata import write_ts

    cases = [[[1e308 * (i % 2), 2.0, 3.0, float(i)]] for i in range(20)]
    path = write_ts(tmp_path / "big.ts", cases, ["a", "b"] * 10, ["a", "b"])
    assert main(["train", "--model", "gru_small", "--data", str(path), "--epochs", "1", "--output",
                 str(tmp_path / "runs"), "--quiet"]) == 2
    err = one_line_error(capsys)
    assert "too large to normalise" in err and "1e+308" in err


def test_checkpoint_error_types_stay_one_line(tmp_path):
    with pytest.raises(CheckpointError) as e:
        train(TrainConfig(model="", resume=str(tmp_path / "nothing")))
    assert "\n" not in str(e.value) and "does not exist" in str(e.value)

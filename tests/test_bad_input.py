"""Issue 16 item 6: inputs a user gets wrong end in one line `statelayers: error: ...` naming the problem and exit
status 2, early (before training where the input can be checked before), never in a traceback.

Every test runs the command line in-process (`statelayers.cli.main`)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from PIL import Image

import statelayers.data.images as images
from statelayers.cli import main
from statelayers.data.images import UnreadableImage, load_digits

pytest.importorskip("yaml")

TINY = ["--data", "digits", "--model", "s6la_cifar_resnet20", "--epochs", "1", "--subset", "64", "--eval-subset",
        "64", "--batch-size", "32", "--quiet"]


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    """(exit status, stderr) of `statelayers ARGS`."""
    rc = main(args)
    return rc, capsys.readouterr().err


def one_line_error(rc: int, err: str) -> str:
    """The message of a one-line error exit; fails unless the command exited 2 with exactly one stderr line."""
    lines = err.strip().splitlines()
    assert rc == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("statelayers: error: "), err
    assert "Traceback" not in err
    return lines[0]


def nothing_written(out) -> bool:
    return not out.exists() or not any(out.iterdir())


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """A small ImageFolder tree of real digits (8x8 grayscale PNGs, classes 0, 1, 2; 6 train and 2 val each)."""
    root = tmp_path_factory.mktemp("tree")
    x, y = load_digits()
    for c in range(3):
        idx = np.flatnonzero(y.numpy() == c)
        for split, picks in (("train", idx[:6]), ("val", idx[6:8])):
            (root / split / f"c{c}").mkdir(parents=True, exist_ok=True)
            for i in picks:
                Image.fromarray(x[i].numpy(), mode="L").save(root / split / f"c{c}" / f"{i}.png")
    return root


# ---------------------------------------------------------------------------------------------- --model-kwargs


def test_unknown_model_kwarg_names_the_key_the_model_and_what_it_accepts(tmp_path, capsys):
    out = tmp_path / "runs"
    msg = one_line_error(*run_cli(["train", *TINY, "--output", str(out), "--model-kwargs", "bogus=1"], capsys))
    assert "'bogus'" in msg and "s6la_cifar_resnet20" in msg
    accepted = msg.split("it accepts ", 1)[1].split(", ")
    assert {"d_state", "h0", "num_classes", "in_chans"} <= set(accepted) and "bogus" not in accepted
    assert nothing_written(out)


def test_several_unknown_model_kwargs_are_all_named(tmp_path, capsys):
    msg = one_line_error(*run_cli(["train", *TINY, "--output", str(tmp_path), "--model-kwargs", "bogus=1",
                                   "d_state=8", "nope=2"], capsys))
    assert "'bogus'" in msg and "'nope'" in msg and "'d_state'" not in msg.split("it accepts")[0]


def test_model_kwarg_contradicting_the_data_is_named(tmp_path, capsys):
    msg = one_line_error(*run_cli(["train", *TINY, "--output", str(tmp_path), "--model-kwargs", "num_classes=5"],
                                  capsys))
    assert "num_classes=5" in msg and "num_classes=10" in msg


def test_model_kwarg_of_the_wrong_type_is_one_line(tmp_path, capsys):
    msg = one_line_error(*run_cli(["train", *TINY, "--output", str(tmp_path), "--model-kwargs", "d_state=big"],
                                  capsys))
    assert "d_state='big'" in msg and "s6la_cifar_resnet20" in msg


# ---------------------------------------------------------------------------------------------- --train-aug


@pytest.mark.parametrize("aug,named", [
    ("hflip=big", "hflip"), ("hflip=1.5", "hflip"), ("crop_pad=-1", "crop_pad"), ("crop_pad=1.5", "crop_pad"),
    ("foo=1", "foo"), ("scale=[0.1,1]", "scale"),  # scale is ImageFolder's, not the digits'
])
def test_bad_train_aug_on_digits(tmp_path, capsys, aug, named):
    out = tmp_path / "runs"
    msg = one_line_error(*run_cli(["train", *TINY, "--output", str(out), "--train-aug", aug], capsys))
    assert f"train_aug {named}=" in msg or f"train_aug keys ['{named}']" in msg
    if named in ("foo", "scale"):
        assert "digits" in msg and "['crop_pad', 'hflip']" in msg  # the keys digits accepts
    assert nothing_written(out)


@pytest.mark.parametrize("aug,named", [
    ("scale=big", "scale"), ("scale=[0.9,0.1]", "scale"), ("scale=0.5", "scale"), ("ratio=[0,1]", "ratio"),
    ("crop_pct=0", "crop_pct"), ("crop_pct=nan", "crop_pct"), ("re_prob=2", "re_prob"),
    ("interpolation=fancy", "interpolation"), ("auto_augment=bogus", "auto_augment"),
    ("auto_augment=3", "auto_augment"), ("color_jitter=[1,2]", "color_jitter"), ("foo=1", "foo"),
])
def test_bad_train_aug_on_an_imagefolder(tree, tmp_path, capsys, aug, named):
    out = tmp_path / "runs"
    args = ["train", "--model", "s6la_cifar_resnet20", "--data", str(tree), "--epochs", "1", "--quiet",
            "--output", str(out), "--train-aug", aug]
    msg = one_line_error(*run_cli(args, capsys))
    assert f"train_aug {named}=" in msg or f"train_aug keys ['{named}']" in msg
    assert nothing_written(out)


def test_train_aug_for_sequence_data_is_refused(tmp_path, capsys):
    msg = one_line_error(*run_cli(["train", "--model", "s7_tiny", "--data", "listops", "--output", str(tmp_path),
                                   "--train-aug", "hflip=0.5", "--quiet"], capsys))
    assert "hflip" in msg and "sequence" in msg


# ---------------------------------------------------------------------------------------------- corrupt images


def corrupt_tree(tree, tmp_path):
    """A copy of ``tree`` with one file of garbage bytes named .png in train/c1."""
    import shutil

    root = tmp_path / "corrupt"
    shutil.copytree(tree, root)
    bad = root / "train" / "c1" / "zz_bad.png"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8).tobytes())
    return root, bad


def test_corrupt_image_found_when_the_tree_is_read(tree, tmp_path, capsys):
    root, bad = corrupt_tree(tree, tmp_path)
    out = tmp_path / "runs"
    msg = one_line_error(*run_cli(["train", "--model", "s6la_cifar_resnet20", "--data", str(root), "--epochs", "1",
                                   "--quiet", "--output", str(out)], capsys))
    assert str(bad) in msg and "remove or replace" in msg
    assert nothing_written(out)


@pytest.mark.parametrize("workers", ["0", "1"])
def test_corrupt_image_hit_mid_training(tree, tmp_path, capsys, monkeypatch, workers):
    """The probe of the tree reads a sample only: a bad file outside it is met by the training loader."""
    root, bad = corrupt_tree(tree, tmp_path)
    monkeypatch.setattr(images, "IMAGEFOLDER_SAMPLE", 2)  # files 0 and 9 of 19 (the bad one is file 12)
    read = []
    if workers == "0":  # record what the loader reads
        real = images._read_image
        monkeypatch.setattr(images, "_read_image", lambda path, mode: read.append(path) or real(path, mode))
    args = ["train", "--model", "s6la_cifar_resnet20", "--data", str(root), "--epochs", "1", "--quiet",
            "--batch-size", "19", "--output", str(tmp_path / "runs"), "--workers", workers]
    msg = one_line_error(*run_cli(args, capsys))
    assert msg == f"statelayers: error: cannot read image {bad} (not an image format PIL can decode); remove or " \
                  "replace the file"
    if workers == "0":
        assert str(bad) in read  # read by the training loader (the probe reads through _peek)


def test_unreadable_image_from_a_dataloader_worker_keeps_its_one_line_message():
    """torch re-raises a worker's exception as TYPE("Caught TYPE in DataLoader worker process N.\\nOriginal
    Traceback ..."); UnreadableImage keeps the original line."""
    from torch._utils import ExceptionWrapper

    try:
        raise UnreadableImage("cannot read image /x/y.png (truncated); remove or replace the file")
    except UnreadableImage:
        wrapper = ExceptionWrapper(sys.exc_info(), where="in DataLoader worker process 0")
    with pytest.raises(UnreadableImage) as e:
        wrapper.reraise()
    assert str(e.value) == "cannot read image /x/y.png (truncated); remove or replace the file"
    assert "Traceback" in wrapper.exc_msg  # the wrapper did carry the multi-line traceback


# ---------------------------------------------------------------------------------------------- data vs model


@pytest.mark.parametrize("data", ["listops", "scp2"])
def test_sequence_data_for_an_image_model(tmp_path, capsys, data):
    out = tmp_path / "runs"
    msg = one_line_error(*run_cli(["train", "--model", "s6la_cifar_resnet20", "--data", data, "--quiet",
                                   "--output", str(out)], capsys))
    assert "'s6la_cifar_resnet20' is an image model" in msg and f"'{data}' is sequence data" in msg
    assert nothing_written(out)


@pytest.mark.parametrize("model", ["s7_small", "gru_small", "s7_listops"])
def test_image_data_for_a_sequence_model(tmp_path, capsys, model):
    out = tmp_path / "runs"
    msg = one_line_error(*run_cli(["train", "--model", model, "--data", "digits", "--quiet", "--output", str(out)],
                                  capsys))
    assert f"'{model}' is a sequence model" in msg and "'digits' is image data" in msg
    assert nothing_written(out)


# ---------------------------------------------------------------------------------------------- numbers


@pytest.mark.parametrize("flag,value", [
    ("--lr", "nan"), ("--lr", "inf"), ("--lr", "-0.1"), ("--lr", "0"), ("--lr-base", "nan"),
    ("--weight-decay", "nan"), ("--weight-decay", "-1"), ("--momentum", "nan"), ("--momentum", "1.5"),
    ("--clip-grad", "nan"), ("--clip-grad", "-1"), ("--warmup-lr", "nan"), ("--min-lr", "inf"),
    ("--drop-path", "nan"), ("--drop-path", "1"), ("--smoothing", "nan"), ("--mixup", "nan"), ("--cutmix", "-inf"),
    ("--ema-decay", "nan"), ("--ema-decay", "2"),
])
def test_numbers_that_make_no_sense_are_refused(tmp_path, capsys, flag, value):
    out = tmp_path / "runs"
    msg = one_line_error(*run_cli(["train", *TINY, "--output", str(out), f"{flag}={value}"], capsys))
    field = flag[2:].replace("-", "_")
    assert msg.startswith(f"statelayers: error: {field} must be a finite number")
    assert msg.endswith(f"got {float(value)!r}")
    assert nothing_written(out)


def test_sensible_numbers_pass():
    from statelayers.engine import TrainConfig

    cfg = TrainConfig(model="s6la_cifar_resnet20", lr=0.05, momentum=0.0, weight_decay=0.0, clip_grad=0.0,
                      drop_path=0.0, smoothing=0.0, ema_decay=1.0, mixup=0.0, cutmix=0.0).resolved()
    assert cfg.lr == 0.05
    with pytest.raises(ValueError, match="lr must be a finite number > 0, got '0.1'"):
        TrainConfig(model="s6la_cifar_resnet20", lr="0.1").resolved()
    with pytest.raises(ValueError, match="momentum .* got True"):
        TrainConfig(model="s6la_cifar_resnet20", momentum=True).resolved()

"""`statelayers export RUN_DIR OUT_DIR` (issue 17 item 3): a trained classifier as timm's hub folder.

The folder loads offline with `timm.create_model("local-dir:...", pretrained=True)` and gives the run's own logits
(the model built and loaded the way `statelayers eval` does); its pretrained cfg makes timm's transforms give the
run's evaluation inputs pixel for pixel; it holds exactly what `timm.models.push_to_hf_hub` uploads (checked by
capturing that function's upload, not by uploading); the card's command trains the same run again (parsed back
through the CLI); and bad runs and folders are one-line errors that leave nothing behind.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import timm
import timm.data
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file
from test_imagefolder import digits_by_class, write_tree

from statelayers.checkpoint import latest_checkpoint
from statelayers.cli import _train_config, build_parser, main
from statelayers.engine import TrainConfig, train
from statelayers.engine.tasks import get_task
from statelayers.tools.export import _WHERE, HUB_FILES, export_run, train_command

FAST = dict(model="s6la_cifar_resnet20", data="digits", quiet=True, train_aug={"hflip": 0.0, "crop_pad": 1},
            epochs=2, subset=60, batch_size=20, eval_subset=40, eval_batch_size=40, ema=True, ema_decay=0.5,
            model_kwargs={"d_state": 8})


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    return train(TrainConfig(**FAST, output=str(out), name="run")).run_dir


def the_runs_model_and_data(run_dir: Path, weights: Path):
    """The model and evaluation data as `statelayers eval` builds them from the run folder."""
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    cfg = TrainConfig.from_saved(saved).resolved()
    task = get_task(cfg.task)
    data = task.build_data(cfg, eval_only=True)
    model = task.build_model(cfg, data.model_kwargs, restoring=True)
    model.load_state_dict(load_file(str(weights)))
    return model.eval(), data


def test_the_folder_loads_in_timm_and_gives_the_runs_logits(run, tmp_path):
    out = export_run(run, tmp_path / "hub")
    assert sorted(p.name for p in out.iterdir()) == sorted(HUB_FILES)
    loaded = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    ours, data = the_runs_model_and_data(run, run / "best.safetensors")
    x = torch.stack([data.eval[i][0] for i in range(16)])
    with torch.no_grad():
        assert torch.equal(loaded(x), ours(x))
    # what the data fixed travels with the weights: timm's data config is the run's preprocessing
    saved = yaml.safe_load((run / "config.yaml").read_text())
    info = saved["data_info"]
    resolved = timm.data.resolve_data_config(model=loaded)
    assert resolved["input_size"] == (1, 8, 8) and resolved["crop_pct"] == 1.0
    assert list(resolved["mean"]) == info["mean"] and list(resolved["std"]) == info["std"]
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == "s6la_cifar_resnet20" and config["num_classes"] == 10
    assert config["num_features"] == loaded.num_features
    # (timm adds global_pool)
    assert config["model_args"].items() >= {"num_classes": 10, "in_chans": 1, "d_state": 8}.items()
    assert config["label_names"] == info["classes"]
    assert config["pretrained_cfg"]["paper_ids"] == "arXiv:2502.10463"
    with torch.no_grad():  # pool_size: what forward_features gives at the exported input size
        assert list(loaded.forward_features(x).shape[-2:]) == config["pretrained_cfg"]["pool_size"]
    # the card: the weights' score (best.safetensors holds the EMA's, this run keeping one) and the command
    card = (out / "README.md").read_text()
    best = max(float(r["ema_eval_acc"]) for r in csv_rows(run))
    assert f"top-1 {100 * best:.2f} %" in card and "library_name: timm" in card
    assert train_command(saved) in card and f"local-dir:{out.resolve()}" in card


def csv_rows(run_dir: Path) -> list[dict]:
    import csv

    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("weights,file", [("last", "model.safetensors"), ("last-ema", "ema.safetensors")])
def test_last_checkpoint_weights(run, tmp_path, weights, file):
    out = export_run(run, tmp_path / weights, weights=weights)
    exported = load_file(str(out / "model.safetensors"))
    source = load_file(str(latest_checkpoint(run / "checkpoints") / file))
    assert exported.keys() == source.keys() and all(torch.equal(exported[k], source[k]) for k in source)


def test_the_folder_is_what_push_to_hf_hub_uploads(run, tmp_path, monkeypatch):
    """push_to_hf_hub of the loaded model, its hub calls captured: the same files, config.json and tensors."""
    huggingface_hub = pytest.importorskip("huggingface_hub")
    out = export_run(run, tmp_path / "hub")
    uploaded = {}

    def upload_folder(self, *, folder_path, **kw):
        uploaded.update({p.name: p.read_bytes() for p in Path(folder_path).iterdir()})

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo",
                        lambda self, repo_id, **kw: type("Url", (), {"repo_id": repo_id})())
    monkeypatch.setattr(huggingface_hub.HfApi, "file_exists", lambda self, **kw: True)  # keeps its README
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    loaded = timm.create_model(f"local-dir:{out}", pretrained=True)
    config = json.loads((out / "config.json").read_text())
    timm.models.push_to_hf_hub(loaded, "user/model", model_config={"label_names": config["label_names"]},
                               model_args=config["model_args"], safe_serialization=True)
    assert set(uploaded) | {"README.md"} == set(HUB_FILES)
    pushed = json.loads(uploaded["config.json"])
    # (a model loaded from a hub folder carries its label names in its pretrained cfg too, and saves them there)
    assert pushed["pretrained_cfg"].pop("label_names", config["label_names"]) == config["label_names"]
    assert pushed == config
    (tmp_path / "pushed.safetensors").write_bytes(uploaded["model.safetensors"])
    ours, theirs = load_file(str(out / "model.safetensors")), load_file(str(tmp_path / "pushed.safetensors"))
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


def parsed_back(command: str) -> TrainConfig:
    argv = shlex.split(command)
    argv = argv[argv.index("train"):]
    return _train_config(build_parser().parse_args(argv)).resolved()


def test_the_cards_command_trains_the_same_run(run):
    saved = yaml.safe_load((run / "config.yaml").read_text())
    again = parsed_back(train_command(saved))
    for name, value in vars(again).items():
        if name not in _WHERE:
            assert value == saved[name], name
    assert train_command(saved).startswith("statelayers train --model s6la_cifar_resnet20 --data digits")
    many = {**saved, "world_size": 4}
    assert train_command(many).startswith("torchrun --standalone --nproc_per_node=4 -m statelayers train ")


@pytest.mark.parametrize("img_size", [None, 12])
def test_imagefolder_preprocessing_travels_with_the_weights(tmp_path, capsys, img_size):
    """timm's transform from the exported cfg gives the run's evaluation tensor of a validation image (the data's
    own size used whole; or --img-size 12, resized then centre-cropped at timm's crop_pct)."""
    root = tmp_path / "tree"
    write_tree(root, digits_by_class(per_class=6), n_train=4, size=10)
    args = ["train", "--model", "cifar_resnet20", "--data", str(root), "--epochs", "1", "--max-steps", "1",
            "--batch-size", "6", "--quiet", "--output", str(tmp_path), "--name", "r"]
    assert main(args + (["--img-size", str(img_size)] if img_size else [])) == 0, capsys.readouterr().err
    assert main(["export", str(tmp_path / "r"), str(tmp_path / "hub")]) == 0, capsys.readouterr().err
    loaded = timm.create_model(f"local-dir:{tmp_path / 'hub'}", pretrained=True)
    transform = timm.data.create_transform(**timm.data.resolve_data_config(model=loaded))
    _, data = the_runs_model_and_data(tmp_path / "r", tmp_path / "r" / "best.safetensors")
    path, _ = data.eval.samples[0]
    theirs = transform(Image.open(path).convert("L"))
    assert theirs.shape == (1, img_size or 10, img_size or 10)
    torch.testing.assert_close(theirs, data.eval[0][0], rtol=0, atol=1e-6)


# -- bad input ----------------------------------------------------------------------------------------------


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


def test_an_existing_folder_is_never_replaced(run, tmp_path, capsys):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(["export", str(run), str(out)]) == 2
    assert "already exists and is not empty" in one_line(capsys)
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and (out / "notes.txt").read_text() == "mine"
    (tmp_path / "empty").mkdir()  # an empty folder is fine
    assert main(["export", str(run), str(tmp_path / "empty")]) == 0


def test_damaged_weights_are_refused_and_nothing_is_written(run, tmp_path, capsys):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    best = copy / "best.safetensors"
    data = bytearray(best.read_bytes())
    data[-20:-4] = bytes(16)
    best.write_bytes(bytes(data))
    assert main(["export", str(copy), str(tmp_path / "hub")]) == 2
    assert "damaged" in one_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy"]  # no OUT_DIR, no temporary folder


def test_runs_that_are_not_image_classifiers_and_missing_weights(run, tmp_path, capsys):
    import shutil

    assert main(["export", str(tmp_path), str(tmp_path / "hub")]) == 2
    assert "not a run folder" in one_line(capsys)
    copy = tmp_path / "seq"
    shutil.copytree(run, copy)
    saved = yaml.safe_load((copy / "config.yaml").read_text())
    (copy / "config.yaml").write_text(yaml.safe_dump({**saved, "task": "sequence"}))
    assert main(["export", str(copy), str(tmp_path / "hub")]) == 2
    assert "'sequence' run" in one_line(capsys)
    (copy / "config.yaml").write_text(yaml.safe_dump({**saved, "ema": False}))
    for f in (copy / "checkpoints").glob("*/ema.safetensors"):
        f.unlink()
    (copy / "checkpoints" / "LAST").write_text("step-99999999")
    assert main(["export", str(copy), str(tmp_path / "hub"), "--weights", "last"]) == 2
    assert "does not exist" in one_line(capsys)


def test_a_failed_write_leaves_no_folder(run, tmp_path, monkeypatch):
    def broken(*a, **kw):
        raise OSError("disk full")

    monkeypatch.setattr(timm.models, "save_for_hf", broken)
    with pytest.raises(OSError):
        export_run(run, tmp_path / "hub")
    assert list(tmp_path.iterdir()) == []

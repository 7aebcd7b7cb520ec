"""Detection / instance segmentation on S6LA / RLA / MRLA / vanilla backbones (torchvision detectors + FPN),
COCO-format data made from real images, COCO metrics through the training engine, Score-CAM / Grad-CAM
grids, and GMACs against input resolution. Small everywhere: 128-px canvases, 64-channel pyramids."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import timm
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file

pytest.importorskip("pycocotools")

import statelayers  # noqa: E402,F401
from statelayers.checkpoint import CheckpointError, atomic_write_bytes, latest_checkpoint, save_weights  # noqa: E402
from statelayers.cli import main  # noqa: E402
from statelayers.data.coco import CocoDetectionDataset, find_coco_split, make_fashion_coco  # noqa: E402
from statelayers.engine import TrainConfig, evaluate, read_metrics, train  # noqa: E402
from statelayers.models.detectors import TimmFPNBackbone, build, load_backbone_checkpoint  # noqa: E402

# pycocotools' mask decoding under numpy 2
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")

SIZE = dict(min_size=128, max_size=128, fpn_channels=64)
RCNN_FAST = dict(rpn_pre_nms_top_n_train=300, rpn_post_nms_top_n_train=100, rpn_pre_nms_top_n_test=300,
                 rpn_post_nms_top_n_test=100, box_batch_size_per_image=64, box_detections_per_img=20)
RETINA_FAST = dict(detections_per_img=20, topk_candidates=200)
FAST = {"faster_rcnn": RCNN_FAST, "mask_rcnn": RCNN_FAST, "retinanet": RETINA_FAST}


def _targets(n: int, size: int = 128, masks: bool = False):
    out = []
    for i in range(n):
        t = {"boxes": torch.tensor([[10.0, 20.0, 60.0, 70.0], [70.0, 64.0, 110.0, 120.0]]),
             "labels": torch.tensor([1 + i, 3])}
        if masks:
            m = torch.zeros(2, size, size, dtype=torch.uint8)
            m[0, 20:70, 10:60] = 1
            m[1, 64:120, 70:110] = 1
            t["masks"] = m
        out.append(t)
    return out


@pytest.fixture(scope="module")
def coco_dir(tmp_path_factory):
    return make_fashion_coco(tmp_path_factory.mktemp("coco") / "fashion_coco", 16, n_val=4, seed=0)


# ---------------------------------------------------------------------------------------------
# models


@pytest.mark.parametrize("detector,backbone", [("faster_rcnn", "s6la_resnet50"), ("retinanet", "rla_resnet50"),
                                               ("mask_rcnn", "mrla_resnet50")])
def test_each_detector_trains_and_predicts(detector, backbone):
    torch.manual_seed(0)
    model = build(detector, backbone, num_classes=5, **SIZE, **FAST[detector])
    images = [torch.rand(3, 128, 128), torch.rand(3, 120, 136)]
    model.train()
    losses = model(images, _targets(2, masks=detector == "mask_rcnn"))
    expected = {"faster_rcnn": {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"},
                "retinanet": {"classification", "bbox_regression"}}.get(detector)
    if detector == "mask_rcnn":
        expected = {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg", "loss_mask"}
    assert set(losses) == expected
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    named = dict(model.named_parameters())
    assert named["backbone.body.layer4.0.conv1.weight"].grad is not None  # trained stages get gradients
    assert not named["backbone.body.conv1.weight"].requires_grad  # stem and stage 1 are frozen (trainable_layers=3)
    assert not named["backbone.body.layer1.0.conv1.weight"].requires_grad
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2
    for o, im in zip(out, images):
        assert o["boxes"].shape[1] == 4 and len(o["boxes"]) == len(o["scores"]) == len(o["labels"]) <= 20
        if len(o["labels"]):
            assert o["labels"].min() >= 1 and o["labels"].max() <= 4
        if detector == "mask_rcnn":
            assert o["masks"].shape[1:] == (1, *im.shape[-2:])


def test_unknown_detector_and_backbone_are_clear_errors():
    with pytest.raises(ValueError, match="faster_rcnn, retinanet, mask_rcnn"):
        build("yolo", "resnet18")
    with pytest.raises(ValueError, match="unknown backbone"):
        build("faster_rcnn", "no_such_net")
    with pytest.raises(ValueError, match="trainable_layers"):
        build("faster_rcnn", "resnet18", trainable_layers=6)


@pytest.mark.parametrize("name", ["resnet50", "s6la_resnet50", "rla_resnet50", "mrla_resnet50", "s6la_resnet101"])
def test_backbone_pyramid_of_every_family(name):
    fpn = TimmFPNBackbone(name, frozen_bn=True)
    assert fpn.strides == (4, 8, 16, 32) and fpn.out_channels == 256
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fpn.body.modules())  # all frozen
    fpn.eval()
    with torch.no_grad():
        out = fpn(torch.rand(1, 3, 96, 64))
    assert list(out) == ["0", "1", "2", "3", "pool"]
    assert [tuple(v.shape) for v in out.values()] == [(1, 256, 24, 16), (1, 256, 12, 8), (1, 256, 6, 4),
                                                      (1, 256, 3, 2), (1, 256, 2, 1)]
    retina = TimmFPNBackbone(name, levels=(2, 3, 4), extra="p6p7", frozen_bn=False)
    assert list(retina.eval()(torch.rand(1, 3, 128, 128))) == ["0", "1", "2", "p6", "p7"]
    if name == "rla_resnet50":  # the head's norm and the last state norm never reach a feature: frozen
        assert set(fpn.unreachable) == {"head_norm.weight", "head_norm.bias", "layer4.2.rla_norm.weight",
                                        "layer4.2.rla_norm.bias"}
        assert not any(p.requires_grad for n, p in fpn.body.named_parameters() if n.startswith("head_norm"))


def test_backbone_features_are_timms_feature_api():
    """The pyramid reads the same maps as timm.create_model(name, features_only=True, out_indices=(1,2,3,4))."""
    torch.manual_seed(0)
    fpn = TimmFPNBackbone("s6la_resnet50", frozen_bn=False).eval()
    feats = timm.create_model("s6la_resnet50", features_only=True, out_indices=(1, 2, 3, 4)).eval()
    own = fpn.body.state_dict()
    feats.load_state_dict({k: own[k.removeprefix("model.")] for k in feats.state_dict()})
    x = torch.rand(2, 3, 96, 128)
    with torch.no_grad():
        ours = fpn.body.forward_intermediates(x, indices=[1, 2, 3, 4], intermediates_only=True)
        ref = feats(x)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b)


def test_trainable_layers_follow_the_stages():
    def trained(fpn):
        return {n for n, p in fpn.body.named_parameters() if p.requires_grad}

    names = {n for n, _ in TimmFPNBackbone("s6la_resnet18", trainable_layers=5).body.named_parameters()}
    all5 = trained(TimmFPNBackbone("s6la_resnet18", trainable_layers=5))
    assert all5 == names
    three = trained(TimmFPNBackbone("s6la_resnet18", trainable_layers=3))
    assert "layer2.0.conv1.weight" in three and "conv_out.1.weight" in three  # stage 2 and its state input
    assert "layer1.0.conv1.weight" not in three and "conv_out.0.weight" not in three and "h0" not in three
    assert trained(TimmFPNBackbone("s6la_resnet18", trainable_layers=0)) == set()


# ---------------------------------------------------------------------------------------------
# classification checkpoints into the backbone


def test_classification_checkpoint_loads_into_the_backbone(tmp_path):
    torch.manual_seed(0)
    cls = timm.create_model("s6la_resnet18", num_classes=7)
    cls.eval()
    with torch.no_grad():  # make the BatchNorm statistics non-trivial
        for m in cls.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "cls.safetensors"
    save_weights(cls, path, {"model": "s6la_resnet18"})
    model = build("faster_rcnn", "s6la_resnet18", num_classes=3, checkpoint=path, **SIZE)
    assert model.backbone.frozen_bn  # on by default with a checkpoint
    body = model.backbone.body.state_dict()
    ref = cls.state_dict()
    compared = 0
    for k, v in body.items():
        torch.testing.assert_close(v, ref[k], rtol=0, atol=0)
        compared += 1
    skipped = {k for k in ref if k not in body}
    assert all(k.startswith("fc.") or k.endswith("num_batches_tracked") for k in skipped)
    assert compared > 100
    # the backbone computes what the classifier's feature API computes
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        a = model.backbone.body.forward_intermediates(x, indices=[4], intermediates_only=True)[0]
        b = cls.forward_intermediates(x, indices=[4], intermediates_only=True)[0]
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)

    # a run folder: its best.safetensors
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(path, run / "best.safetensors")
    (run / "config.yaml").write_text(yaml.safe_dump({"model": "s6la_resnet18", "model_kwargs": {}}))
    build("retinanet", "s6la_resnet18", num_classes=3, checkpoint=run, **SIZE)
    with pytest.raises(CheckpointError, match="is a run of 's6la_resnet18', not 'resnet18'"):
        build("retinanet", "resnet18", num_classes=3, checkpoint=run, **SIZE)


def test_mismatched_checkpoints_load_nothing_and_say_why(tmp_path):
    vanilla = timm.create_model("resnet18", num_classes=7)
    path = tmp_path / "r18.safetensors"
    save_weights(vanilla, path, {"model": "resnet18"})
    body = timm.create_model("s6la_resnet18", num_classes=0)
    before = {k: v.clone() for k, v in body.state_dict().items()}
    with pytest.raises(CheckpointError, match="written for model 'resnet18', not 's6la_resnet18'"):
        load_backbone_checkpoint(body, path, "s6la_resnet18")
    with pytest.raises(CheckpointError) as e:
        load_backbone_checkpoint(body, path)  # no name check: the keys speak
    msg = str(e.value)
    assert "missing (conv_out.0.weight" in msg and "of another shape (layer1.0.conv1.weight: file (64, 64" in msg
    assert all(torch.equal(before[k], v) for k, v in body.state_dict().items())
    # a different d_state is another shape
    s6la = timm.create_model("s6la_resnet18", num_classes=7, d_state=16)
    p16 = tmp_path / "d16.safetensors"
    save_weights(s6la, p16, {"model": "s6la_resnet18"})
    with pytest.raises(CheckpointError, match="backbone_kwargs"):
        build("faster_rcnn", "s6la_resnet18", num_classes=3, checkpoint=p16)
    build("faster_rcnn", "s6la_resnet18", num_classes=3, checkpoint=p16, backbone_kwargs={"d_state": 16})
    with pytest.raises(CheckpointError, match="does not exist"):
        build("faster_rcnn", "s6la_resnet18", num_classes=3, checkpoint=tmp_path / "nothing")


# ---------------------------------------------------------------------------------------------
# data


@pytest.mark.parametrize("source", ["auto", "digits"])
def test_fashion_coco_builder_writes_valid_coco_with_exact_masks(tmp_path, source):
    from pycocotools.coco import COCO

    root = make_fashion_coco(tmp_path / source, 6, n_val=2, canvas=96, seed=1, source=source)
    for split, n in (("train", 6), ("val", 2)):
        coco = COCO(str(root / "annotations" / f"instances_{split}.json"))
        assert len(coco.imgs) == n and len(coco.cats) == 10
        assert len(coco.anns) >= n
        for image_id, info in coco.imgs.items():
            pixels = np.asarray(Image.open(root / "images" / info["file_name"]))
            assert pixels.shape == (96, 96) and (info["height"], info["width"]) == (96, 96)
            union = np.zeros(pixels.shape, dtype=np.int64)
            for a in coco.imgToAnns[image_id]:
                m = coco.annToMask(a)
                rows, cols = np.nonzero(m)
                x, y, w, h = a["bbox"]
                assert (x, y, x + w - 1, y + h - 1) == (cols.min(), rows.min(), cols.max(), rows.max())
                assert a["area"] == m.sum() and a["iscrowd"] == 0 and 1 <= a["category_id"] <= 10
                union += m
            # every object pixel is in exactly one mask, and nothing else is
            assert union.max() <= 1 and np.array_equal(union > 0, pixels > 0)


def test_dataset_targets_and_flip(coco_dir):
    split = find_coco_split(coco_dir, "train")
    plain = CocoDetectionDataset(split.ann_file, split.image_dir, with_masks=True)
    flipped = CocoDetectionDataset(split.ann_file, split.image_dir, with_masks=True, hflip=1.0)
    img, t = plain[0]
    img_f, t_f = flipped[0]
    assert img.shape == (3, 128, 128) and img.dtype == torch.float32 and 0 <= img.min() and img.max() <= 1
    assert t["boxes"].dtype == torch.float32 and t["labels"].dtype == torch.int64
    assert t["masks"].shape == (len(t["boxes"]), 128, 128)
    for box, mask in zip(t["boxes"], t["masks"]):  # x1 y1 x2 y2 around the mask
        rows, cols = torch.nonzero(mask, as_tuple=True)
        assert box.tolist() == [cols.min().item(), rows.min().item(), cols.max().item() + 1, rows.max().item() + 1]
    torch.testing.assert_close(img_f, img.flip(-1))
    assert torch.equal(t_f["masks"], t["masks"].flip(-1))
    torch.testing.assert_close(t_f["boxes"][:, [2, 0]], 128 - t["boxes"][:, [0, 2]])
    assert plain.num_classes == 11 and plain.classes[0] in ("T-shirt/top", "0")


def test_missing_layout_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="instances_"):
        find_coco_split(tmp_path, "train")


# ---------------------------------------------------------------------------------------------
# the engine: train, evaluate, resume


@pytest.fixture(scope="module")
def mask_run(coco_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    cfg = TrainConfig(model="mask_rcnn", data=str(coco_dir), task="detection", epochs=3, batch_size=2,
                      warmup_steps=4, output=str(out), name="mask", quiet=True,
                      model_kwargs=dict(backbone="s6la_resnet18", **SIZE, **RCNN_FAST))
    return train(cfg)


def test_engine_trains_a_detector_and_reports_coco_metrics(mask_run, coco_dir):
    d = mask_run.run_dir
    for f in ("config.yaml", "metrics.csv", "best.safetensors", "curves.png", "summary.yaml", "checkpoints/LAST"):
        assert (d / f).exists(), f
    assert any((d / "tb").iterdir())
    cfg = yaml.safe_load((d / "config.yaml").read_text())
    assert cfg["task"] == "detection" and cfg["recipe"] == "detection" and cfg["decay_milestones"] == [8, 11]
    assert cfg["lr_resolved"] == pytest.approx(0.02 * 2 / 16)
    rows = read_metrics(d)
    assert len(rows) == 3 and all(int(r["step"]) == 8 * (i + 1) for i, r in enumerate(rows))
    first, last = float(rows[0]["train_loss"]), float(rows[-1]["train_loss"])
    assert last < 0.8 * first, (first, last)  # 24 steps on 16 images: the loss comes down
    m = mask_run.final_metrics
    for kind in ("bbox", "segm"):
        for s in ("ap", "ap50", "ap75", "ap_s", "ap_m", "ap_l"):
            v = m[f"eval_{kind}_{s}"]
            assert 0.0 <= v <= 1.0 or v == -1.0, (kind, s, v)
            assert rows[-1][f"eval_{kind}_{s}"] != ""
    assert m["eval_acc"] == m["eval_bbox_ap"]
    summary = yaml.safe_load((d / "summary.yaml").read_text())
    assert summary["final"]["eval_segm_ap50"] == m["eval_segm_ap50"]
    # evaluating the last checkpoint reproduces the logged numbers
    last_ckpt = latest_checkpoint(d / "checkpoints") / "model.safetensors"
    out = evaluate("mask_rcnn", last_ckpt, str(coco_dir), task="detection",
                   model_kwargs=dict(backbone="s6la_resnet18", **SIZE, **RCNN_FAST))
    for k in ("eval_bbox_ap", "eval_bbox_ap50", "eval_segm_ap"):
        assert out[k] == pytest.approx(m[k], abs=1e-12), k
    assert out["images"] == 4


def test_cli_eval_prints_coco_metrics(mask_run, coco_dir, capsys):
    assert main(["eval", "--model", "mask_rcnn", "--checkpoint", str(mask_run.run_dir), "--data",
                 str(coco_dir)]) == 0  # the task is inferred from the COCO folder
    text = capsys.readouterr().out
    for k in ("eval_bbox_ap ", "eval_bbox_ap50", "eval_bbox_ap_l", "eval_segm_ap ", "images"):
        assert k in text, k


def test_resume_mid_epoch_ends_with_the_same_weights(coco_dir, tmp_path):
    args = ["train", "--task", "detection", "--data", str(coco_dir), "--model", "retinanet", "--model-kwargs",
            "backbone=s6la_resnet18", "min_size=128", "max_size=128", "fpn_channels=64", "detections_per_img=20",
            "--subset", "8", "--epochs", "2", "--batch-size", "2", "--warmup-steps", "2", "--ckpt-every", "3",
            "--decay-milestones", "1", "--output", str(tmp_path), "--name", "r", "--quiet"]
    assert main(args) == 0
    run = tmp_path / "r"
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["recipe"] == "detection_retinanet" and cfg["lr_resolved"] == pytest.approx(0.01 * 2 / 16)
    ckpts = run / "checkpoints"
    assert latest_checkpoint(ckpts).name == "step-00000008"
    final = load_file(str(ckpts / "step-00000008" / "model.safetensors"))
    # as if the run had been killed after step 6 (mid-epoch 2): resume from there
    atomic_write_bytes(ckpts / "LAST", b"step-00000006")
    shutil.rmtree(ckpts / "step-00000008")
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    again = load_file(str(latest_checkpoint(ckpts) / "model.safetensors"))
    assert final.keys() == again.keys() and all(torch.equal(final[k], again[k]) for k in final)
    assert len((run / "metrics.csv").read_text().strip().splitlines()) == 3


def test_coco_eval_of_a_subset_scores_only_its_images(coco_dir):
    from torch.utils.data import DataLoader, Subset

    from statelayers.data.coco import detection_collate
    from statelayers.engine.runtime import Dist
    from statelayers.engine.tasks.detection import coco_metrics, predictions_to_coco, run_detection_eval

    split = find_coco_split(coco_dir, "val")
    ds = CocoDetectionDataset(split.ann_file, split.image_dir)
    torch.manual_seed(0)
    model = build("faster_rcnn", "resnet18", num_classes=ds.num_classes, **SIZE, **RCNN_FAST).eval()
    cfg = TrainConfig(model="faster_rcnn", data=str(coco_dir), batch_size=2).resolved()
    part = run_detection_eval(model, DataLoader(Subset(ds, [0, 1]), batch_size=2, collate_fn=detection_collate),
                              cfg, Dist())
    with torch.no_grad():
        outs = model([ds[0][0], ds[1][0]])
    results = [r for o, i in zip(outs, ds.ids[:2]) for r in predictions_to_coco(o, i, ds.label_to_cat)]
    assert {r["category_id"] for r in results} <= set(ds.cat_ids)
    ref, text = coco_metrics(ds.coco, results, ds.ids[:2])
    assert part["eval_detections"] == len(results) > 0 and "Average Precision" in text
    for k, v in ref.items():
        assert part[k] == pytest.approx(v, abs=1e-12), k


def test_detection_config_errors(coco_dir):
    with pytest.raises(ValueError, match="mixup do not apply to task 'detection'"):
        TrainConfig(model="faster_rcnn", data=str(coco_dir), mixup=0.8).resolved()
    cfg = TrainConfig(model="retinanet", data=str(coco_dir)).resolved()
    assert cfg.task == "detection" and cfg.recipe == "detection_retinanet" and cfg.eval_batch_size == 2


def test_run_with_a_backbone_checkpoint_evaluates_after_the_checkpoint_is_gone(coco_dir, tmp_path):
    """Resume and eval rebuild the detector without reading the backbone checkpoint again (its weights are in
    the run's checkpoints), keeping the frozen BatchNorm it implied."""
    cls = timm.create_model("s6la_resnet18", num_classes=10)
    save_weights(cls, tmp_path / "cls.safetensors", {"model": "s6la_resnet18"})
    kwargs = dict(backbone="s6la_resnet18", checkpoint=str(tmp_path / "cls.safetensors"), **SIZE, **RETINA_FAST)
    r = train(TrainConfig(model="retinanet", data=str(coco_dir), epochs=1, max_steps=1, subset=4, batch_size=2,
                          model_kwargs=kwargs, output=str(tmp_path), name="bb", quiet=True))
    (tmp_path / "cls.safetensors").unlink()
    out = evaluate("retinanet", r.run_dir, str(coco_dir))  # the run folder: its config gives the model kwargs
    assert out["eval_bbox_ap"] == pytest.approx(r.final_metrics["eval_bbox_ap"], abs=1e-12)


def test_missing_pycocotools_names_the_extra(monkeypatch, tmp_path, capsys):
    from statelayers._extras import MissingDependency, require

    monkeypatch.setitem(sys.modules, "pycocotools.mask", None)  # import fails as if not installed
    with pytest.raises(MissingDependency, match=r'pip install "statelayers\[detection\]"'):
        require("pycocotools.mask")
    assert main(["make-coco-demo", str(tmp_path / "x"), "--images", "2"]) == 2
    assert 'pip install "statelayers[detection]"' in capsys.readouterr().err


@pytest.mark.slow
def test_two_processes_gather_predictions_for_coco_eval(coco_dir, tmp_path):
    """Each process evaluates its shard; rank 0 scores all predictions: the same numbers as one process."""
    # frozen BatchNorm (the paper's setting): per-process running statistics would differ between replicas
    kw = ["backbone=s6la_resnet18", "min_size=128", "max_size=128", "fpn_channels=64", "frozen_bn=true",
          *[f"{k}={v}" for k, v in RCNN_FAST.items()]]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "statelayers",
           "train", "--task", "detection", "--data", str(coco_dir), "--model", "faster_rcnn", "--model-kwargs", *kw,
           "--subset", "8", "--epochs", "1", "--batch-size", "2", "--output", str(tmp_path), "--name", "ddp",
           "--quiet"]
    res = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = yaml.safe_load((tmp_path / "ddp" / "summary.yaml").read_text())
    assert summary["world_size"] == 2 and len(set(summary["replica_checksums"])) == 1
    assert summary["final"]["eval_detections"] > 0
    last = latest_checkpoint(tmp_path / "ddp" / "checkpoints") / "model.safetensors"
    one = evaluate("faster_rcnn", last, str(coco_dir), model_kwargs=dict(
        backbone="s6la_resnet18", frozen_bn=True, **SIZE, **RCNN_FAST))
    for k in ("eval_detections", "eval_bbox_ap", "eval_bbox_ap50", "eval_bbox_ap_s"):
        assert one[k] == pytest.approx(summary["final"][k], abs=1e-12), k


# ---------------------------------------------------------------------------------------------
# visual explanations and cost against resolution


def test_cam_cli_writes_the_grid(tmp_path, capsys):
    pytest.importorskip("pytorch_grad_cam")
    from statelayers.data.images import load_digits

    # an engine-trained 1-channel model (run folder) beside a bare safetensors file
    r = train(TrainConfig(model="s6la_cifar_resnet20", data="digits", epochs=1, max_steps=2, batch_size=64,
                          output=str(tmp_path), name="s6la", quiet=True))
    vanilla = timm.create_model("cifar_resnet20")
    save_weights(vanilla, tmp_path / "vanilla.safetensors", {"model": "cifar_resnet20"})
    x, _ = load_digits()
    images = []
    for i in range(3):
        p = tmp_path / f"digit{i}.png"
        Image.fromarray(x[i].numpy()).resize((28, 28)).save(p)
        images.append(str(p))
    out = tmp_path / "cam.png"
    assert main(["cam", "--model", "cifar_resnet20,s6la_cifar_resnet20", "--checkpoint",
                 f"{tmp_path / 'vanilla.safetensors'},{r.run_dir}", "--images", *images, "--method", "scorecam",
                 "--img-size", "16", "--cell-px", "120", "--out", str(out)]) == 0
    with Image.open(out) as im:
        assert im.size == (3 * 120, 3 * 120)  # columns: input + 2 models; rows: 3 images
    assert "scorecam" in capsys.readouterr().out
    assert main(["cam", "--model", "cifar_resnet20", "--checkpoint", "a,b", "--images", images[0]]) == 2


def test_cam_target_is_the_last_stage_output(tmp_path):
    """For a vanilla ResNet the tapped last-stage features are exactly layer3[-1]'s output."""
    pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from statelayers.tools.cam import compute_cams, load_classifier

    torch.manual_seed(0)
    model = timm.create_model("cifar_resnet20")
    save_weights(model, tmp_path / "m.safetensors", {"model": "cifar_resnet20"})
    clf = load_classifier("cifar_resnet20", tmp_path / "m.safetensors")
    img = (np.random.default_rng(0).random((28, 28)) * 255).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "x.png")
    res = compute_cams([clf], [tmp_path / "x.png"], "gradcam")
    x = (torch.from_numpy(img.astype(np.float32) / 255)[None, None] - 0.5) / 0.5
    ref = GradCAM(model=clf.model, target_layers=[clf.model.layer3[-1]])(
        input_tensor=x, targets=[ClassifierOutputTarget(res.predictions[0][0])])[0]
    np.testing.assert_allclose(res.cams[0, 0], ref, atol=1e-5)


def test_profile_resolutions_is_linear_and_plotted(tmp_path, capsys):
    from statelayers.tools.resolution import profile_resolutions

    out = tmp_path / "macs.png"
    assert main(["profile", "resnet18", "--resolutions", "64,96,128,160", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "s6la_resnet18 GMACs" in text and "ratio" in text and "R² = " in text
    assert out.is_file() and Image.open(out).size[0] > 300
    prof = profile_resolutions("s6la_resnet18", [64, 96, 128, 160])
    assert prof.vanilla == "resnet18" and prof.s6la == "s6la_resnet18"
    for name, fit in prof.fits.items():
        assert fit.r2 > 0.999, name
    assert all(b > a for a, b in zip(prof.gmacs["resnet18"], prof.gmacs["s6la_resnet18"]))
    assert main(["profile", "resnet18", "--resolutions", "64"]) == 2

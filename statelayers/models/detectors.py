"""Object detection and instance segmentation with S6LA / RLA / MRLA / vanilla ResNet backbones
(the S6LA paper's Section 5.2, Tables 3, 4 and 9; App. C.2), on torchvision's detectors.

    from statelayers.models.detectors import build
    model = build("faster_rcnn", "s6la_resnet50", num_classes=81, checkpoint="runs/<imagenet run>")

Detectors: ``faster_rcnn``, ``retinanet``, ``mask_rcnn`` (FPN; `build` below). Data: COCO-format folders
(`statelayers.data.coco.find_coco_split` documents the layout), evaluated with pycocotools
(`statelayers.engine.tasks.detection`). The training engine
runs them as the task "detection"::

    statelayers make-coco-demo data/fashion_coco                       # a small real-image COCO set, offline
    statelayers train --task detection --data data/fashion_coco --model mask_rcnn \\
        --model-kwargs backbone=s6la_resnet50 checkpoint=runs/<imagenet run> min_size=800
    statelayers eval --task detection --model mask_rcnn --checkpoint runs/<detection run> --data data/fashion_coco

``--model`` is the detector; ``--model-kwargs`` go to `build` (backbone, checkpoint, min_size, max_size,
frozen_bn, trainable_layers, backbone_kwargs={d_state: 16}, and any torchvision detector argument such as
box_detections_per_img). pycocotools comes with ``pip install "statelayers[detection]"``.

The backbone is the classification model itself (``timm.create_model(name, num_classes=0)``), read through
timm's feature API (``forward_intermediates``): stage outputs C2..C5 for Faster / Mask R-CNN (P2..P5 + a
max-pooled P6, as torchvision's ``resnet_fpn_backbone``), C3..C5 for RetinaNet (P3..P5 + P6/P7 computed from
C5, as MMDetection's ``add_extra_convs='on_input'``). Because it is the classification model, a checkpoint the
training engine wrote loads with the same keys (only the classifier head is dropped).

Defaults follow the S6LA paper's MMDetection setup (App. C.2): BatchNorm frozen (statistics and affine, as
torchvision's ``FrozenBatchNorm2d``; MMDetection's ``norm_eval`` keeps the affine parameters trainable) and the
stem + first stage frozen (``trainable_layers=3``, MMDetection's ``frozen_stages=1``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn as nn

__all__ = [
    "build_from_config",
    "DETECTORS",
    "TimmFPNBackbone",
    "build",
    "freeze_batchnorm",
    "load_backbone_checkpoint",
    "resolve_checkpoint",
]

DETECTORS = ("faster_rcnn", "retinanet", "mask_rcnn")


# ---------------------------------------------------------------------------------------------
# checkpoints


def resolve_checkpoint(checkpoint: str | Path) -> tuple[Path, dict]:
    """(safetensors file, the run's config.yaml as a dict or {}) for a file or an engine run folder."""
    path = Path(checkpoint)
    config: dict = {}
    if path.is_dir():
        if (path / "config.yaml").is_file():
            import yaml

            config = yaml.safe_load((path / "config.yaml").read_text()) or {}
        path = path / "best.safetensors"
    if not path.is_file():
        from ..checkpoint import CheckpointError

        raise CheckpointError(f"backbone checkpoint {path} does not exist (give a .safetensors file or a run folder "
                              "with best.safetensors)")
    return path, config


def _classifier_prefixes(model: nn.Module) -> tuple[str, ...]:
    names = (getattr(model, "pretrained_cfg", None) or {}).get("classifier", "fc")
    names = (names,) if isinstance(names, str) else tuple(names)
    return tuple(f"{n}." for n in names)


def load_backbone_checkpoint(model: nn.Module, checkpoint: str | Path, model_name: str | None = None) -> dict:
    """Load a classification checkpoint (a .safetensors file or a run folder's best.safetensors) into
    ``model``, a classifier-less timm model (``num_classes=0``). The classifier keys of the file are dropped;
    every other key must exist in the model with the same shape and every model key must be in the file, or
    nothing is loaded and a ``CheckpointError`` names the mismatches. Returns the file's metadata."""
    from ..checkpoint import load_weights

    path, _ = resolve_checkpoint(checkpoint)
    return load_weights(
        model, path, "backbone checkpoint", drop_prefixes=_classifier_prefixes(model), expect_model=model_name,
        hint="is it the same model, with the same model kwargs (backbone_kwargs=...) and 3 input channels?",
    )


# ---------------------------------------------------------------------------------------------
# backbone


def freeze_batchnorm(module: nn.Module) -> int:
    """Replace every BatchNorm2d inside ``module`` by torchvision's FrozenBatchNorm2d with the same statistics,
    affine parameters and eps (in place). Returns how many were replaced."""
    from torchvision.ops.misc import FrozenBatchNorm2d

    count = 0
    for name, child in list(module.named_children()):
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            with torch.no_grad():
                if child.affine:
                    frozen.weight.copy_(child.weight)
                    frozen.bias.copy_(child.bias)
                if child.track_running_stats and child.running_mean is not None:
                    frozen.running_mean.copy_(child.running_mean)
                    frozen.running_var.copy_(child.running_var)
            ref = next(iter([*child.parameters(), *child.buffers()]), None)
            if ref is not None:
                frozen.to(ref.device)
            setattr(module, name, frozen)
            count += 1
        else:
            count += freeze_batchnorm(child)
    return count


def _stage_names(body: nn.Module) -> tuple[str, ...]:
    names = getattr(body, "stage_names", None)  # statelayers' StagedResNet
    if names:
        return tuple(names)
    return tuple(n for n in ("layer1", "layer2", "layer3", "layer4") if hasattr(body, n))


def _parameter_groups(body: nn.Module) -> dict[str, int]:
    """{parameter name: group}: 0 the stem (conv1, bn1, the initial state h0), s = 1..S the stage it belongs
    to (`layer{s}.*`, and entry s-1 of a per-stage ModuleList such as S6LA's / RLA's `conv_out`), -1 modules
    shared by all stages."""
    stages = _stage_names(body)
    per_stage_lists = {n for n, m in body.named_children() if isinstance(m, nn.ModuleList) and len(m) == len(stages)}
    groups = {}
    for name, _ in body.named_parameters():
        top, _, rest = name.partition(".")
        if top in stages:
            groups[name] = stages.index(top) + 1
        elif top in per_stage_lists:
            groups[name] = int(rest.split(".", 1)[0]) + 1
        elif top in ("conv1", "bn1", "h0", "stem"):
            groups[name] = 0
        else:
            groups[name] = -1
    return groups


class TimmFPNBackbone(nn.Module):
    """A timm CNN with a feature pyramid on top, usable as a torchvision detection backbone.

    ``forward(images)`` returns an ordered dict of feature maps, all with ``out_channels`` channels:
    keys "0", "1", ... for the pyramid levels (finest first) and "pool" (``extra="maxpool"``) or "p6", "p7"
    (``extra="p6p7"``), as torchvision's ``BackboneWithFPN``.

    Args:
        name: timm / statelayers model name (resnet50, s6la_resnet50, rla_resnet101, mrla_resnet50, ...).
        levels: feature indices of timm's feature API to put in the pyramid (1..4 = C2..C5 of a ResNet).
        extra: "maxpool" (P6 = max-pool of P5: Faster / Mask R-CNN) or "p6p7" (P6, P7 from C5: RetinaNet).
        checkpoint: a classification checkpoint (.safetensors, or a run folder's best.safetensors) to load.
        frozen_bn: BatchNorm2d -> FrozenBatchNorm2d everywhere in the backbone. Default (None): on when a
            checkpoint is loaded (the paper's setup), off without one: frozen statistics of an untrained
            network are mean 0 / variance 1, i.e. no normalisation, and deep ResNets then diverge.
        trainable_layers: how many of (stage S, ..., stage 1, stem) train, counted from the last (0..S+1).
        backbone_kwargs: passed to ``timm.create_model`` (e.g. d_state=16); they must be those the checkpoint
            was trained with.
    """

    def __init__(self, name: str, *, levels: Sequence[int] = (1, 2, 3, 4), out_channels: int = 256,
                 extra: str = "maxpool", checkpoint: str | Path | None = None, frozen_bn: bool | None = None,
                 trainable_layers: int = 3, backbone_kwargs: dict | None = None):
        super().__init__()
        import timm
        from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool, LastLevelP6P7

        from .. import models  # noqa: F401  (the families register with timm; the models package, not the top one)

        if not timm.is_model(name):
            raise ValueError(f"unknown backbone {name!r}; `statelayers models` lists ours, any timm CNN works too")
        if checkpoint is not None:
            _, run_config = resolve_checkpoint(checkpoint)
            if run_config.get("model") not in (None, name):
                from ..checkpoint import CheckpointError

                raise CheckpointError(f"backbone checkpoint {checkpoint} is a run of {run_config['model']!r}, "
                                      f"not {name!r}")
        body = timm.create_model(name, pretrained=False, num_classes=0, **(backbone_kwargs or {}))
        if not hasattr(body, "forward_intermediates"):
            raise ValueError(f"backbone {name!r} has no feature API (forward_intermediates)")
        if checkpoint is not None:
            load_backbone_checkpoint(body, checkpoint, name)
        self.name, self.levels = name, tuple(int(i) for i in levels)
        n_features = len(body.feature_info)
        if not self.levels or min(self.levels) < 0 or max(self.levels) >= n_features:
            raise ValueError(f"levels must be feature indices of {name} in 0..{n_features - 1}, got {levels}")
        in_chs = [body.feature_info[i]["num_chs"] for i in self.levels]
        self.strides = tuple(body.feature_info[i]["reduction"] for i in self.levels)
        self.body = body
        self._prune_unreachable()
        self.frozen_bn = checkpoint is not None if frozen_bn is None else bool(frozen_bn)
        if self.frozen_bn:
            freeze_batchnorm(body)
        self._set_trainable(trainable_layers)
        if extra == "maxpool":
            extra_block = LastLevelMaxPool()
        elif extra == "p6p7":
            extra_block = LastLevelP6P7(in_chs[-1], out_channels)  # from C5, as MMDetection's 'on_input'
        else:
            raise ValueError(f"extra must be 'maxpool' or 'p6p7', got {extra!r}")
        self.fpn = FeaturePyramidNetwork(in_chs, out_channels, extra_blocks=extra_block)
        self.out_channels = out_channels
        self.in_chans = body.in_chans if hasattr(body, "in_chans") else 3

    def _prune_unreachable(self) -> None:
        """Freeze parameters that cannot reach the pyramid's inputs (e.g. RLA's head norm and its last
        block's state norm), so that optimizers skip them and DDP does not wait for their gradients."""
        body = self.body
        was_training = body.training
        body.eval()  # no BatchNorm statistics update from this probe
        size = max(64, 2 * max(self.strides))
        x = torch.zeros(1, getattr(body, "in_chans", 3), size, size)
        named = [(n, p) for n, p in body.named_parameters() if p.requires_grad]
        with torch.enable_grad():
            feats = body.forward_intermediates(x, indices=list(self.levels), intermediates_only=True)
            total = sum(f.float().sum() for f in feats)
            grads = torch.autograd.grad(total, [p for _, p in named], allow_unused=True)
        self.unreachable = [n for (n, _), g in zip(named, grads) if g is None]
        for (_, p), g in zip(named, grads):
            if g is None:
                p.requires_grad_(False)
        body.train(was_training)

    def _set_trainable(self, trainable_layers: int) -> None:
        n_stages = len(_stage_names(self.body))
        if not 0 <= trainable_layers <= n_stages + 1:
            raise ValueError(f"trainable_layers must be in 0..{n_stages + 1} for {self.name}, got {trainable_layers}")
        first_trained = n_stages + 1 - trainable_layers  # group index: 0 stem, 1..S stages
        groups = _parameter_groups(self.body)
        for name, p in self.body.named_parameters():
            g = groups[name]
            train = trainable_layers > 0 if g == -1 else g >= first_trained
            if not train:
                p.requires_grad_(False)

    def no_weight_decay(self) -> set[str]:
        nwd = self.body.no_weight_decay() if hasattr(self.body, "no_weight_decay") else set()
        return {f"body.{n}" for n in nwd}

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        feats = self.body.forward_intermediates(x, indices=list(self.levels), intermediates_only=True)
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(feats)))


# ---------------------------------------------------------------------------------------------
# detectors


def build(detector: str, backbone: str = "resnet50", num_classes: int = 91, *,
          checkpoint: str | Path | None = None, min_size: int = 800, max_size: int = 1333,
          frozen_bn: bool | None = None, trainable_layers: int = 3, backbone_kwargs: dict | None = None,
          fpn_channels: int = 256, **detector_kwargs) -> nn.Module:
    """A torchvision detector with an FPN on a timm / statelayers backbone. Nothing is downloaded.

    Args:
        detector: "faster_rcnn", "retinanet" or "mask_rcnn".
        backbone: timm model name: resnet50, s6la_resnet50, rla_resnet50, mrla_resnet50, their -101s, ...
        num_classes: including the background class 0 (torchvision's convention; COCO: 91 with its ids,
            or categories + 1 with contiguous labels as `statelayers.data.coco` makes them).
        checkpoint: ImageNet-trained classification weights for the backbone (see `load_backbone_checkpoint`).
        min_size, max_size: images are resized so that the short side is min_size, the long at most max_size.
        frozen_bn, trainable_layers, backbone_kwargs: see `TimmFPNBackbone`.
        fpn_channels: channels of the pyramid and so of the heads (256 in the paper; less for quick runs).
        **detector_kwargs: passed to torchvision's FasterRCNN / RetinaNet / MaskRCNN (e.g. box_score_thresh,
            rpn_batch_size_per_image, detections_per_img).
    """
    from torchvision.models.detection import FasterRCNN, MaskRCNN, RetinaNet

    key = str(detector).strip().lower().replace("-", "_")
    if key not in DETECTORS:
        raise ValueError(f"unknown detector {detector!r}; choose one of {', '.join(DETECTORS)}")
    retina = key == "retinanet"
    fpn = TimmFPNBackbone(backbone, levels=(2, 3, 4) if retina else (1, 2, 3, 4), extra="p6p7" if retina
                          else "maxpool", out_channels=fpn_channels, checkpoint=checkpoint, frozen_bn=frozen_bn,
                          trainable_layers=trainable_layers, backbone_kwargs=backbone_kwargs)
    if fpn.in_chans != 3:
        raise ValueError(f"detection backbones take RGB images; {backbone} was built with {fpn.in_chans} channels")
    cfg = fpn.body.pretrained_cfg or {}
    common = dict(min_size=min_size, max_size=max_size, image_mean=list(cfg.get("mean", (0.485, 0.456, 0.406))),
                  image_std=list(cfg.get("std", (0.229, 0.224, 0.225))))
    cls = {"faster_rcnn": FasterRCNN, "retinanet": RetinaNet, "mask_rcnn": MaskRCNN}[key]
    model = cls(fpn, num_classes=num_classes, **common, **detector_kwargs)
    nwd = {f"backbone.{n}" for n in fpn.no_weight_decay()}
    model.no_weight_decay = lambda: set(nwd)  # timm's optimizer factory reads it (h0, A_log, Δ biases)
    model.detector_name, model.backbone_name = key, backbone
    return model


def build_from_config(detector: str, num_classes: int, model_kwargs: dict, *, restoring: bool = False) -> nn.Module:
    """`build` from the engine's --model / --model-kwargs. ``restoring``: the weights will be replaced by a
    detection checkpoint (resume, eval), so the backbone checkpoint is not read (it may be gone), but the
    architecture it implied (frozen BatchNorm) is kept."""
    kwargs = dict(model_kwargs)
    if restoring and kwargs.get("checkpoint") is not None:
        kwargs.pop("checkpoint")
        kwargs.setdefault("frozen_bn", True)
    return build(detector, num_classes=num_classes, **kwargs)

"""Object detection and instance segmentation with S6LA / RLA / MRLA / vanilla ResNet backbones
(the S6LA paper's Section 5.2, Tables 3, 4 and 9; App. C.2), on torchvision's detectors.

    from statelayers.detection import build
    model = build("faster_rcnn", "s6la_resnet50", num_classes=81, checkpoint="runs/<imagenet run>")

Detectors: ``faster_rcnn``, ``retinanet``, ``mask_rcnn`` (FPN; `models.build`). Data: COCO-format folders
(`data.find_coco_split` documents the layout), evaluated with pycocotools (`evaluation`). The training engine
runs them as the task "detection"::

    statelayers make-coco-demo data/fashion_coco                       # a small real-image COCO set, offline
    statelayers train --task detection --data data/fashion_coco --model mask_rcnn \\
        --model-kwargs backbone=s6la_resnet50 checkpoint=runs/<imagenet run> min_size=800
    statelayers eval --task detection --model mask_rcnn --checkpoint runs/<detection run> --data data/fashion_coco

``--model`` is the detector; ``--model-kwargs`` go to `build` (backbone, checkpoint, min_size, max_size,
frozen_bn, trainable_layers, backbone_kwargs={d_state: 16}, and any torchvision detector argument such as
box_detections_per_img). pycocotools comes with ``pip install "statelayers[detection]"``.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .data import CocoDetectionDataset, detection_collate, find_coco_split, is_coco_folder, make_fashion_coco
from .models import DETECTORS, TimmFPNBackbone, build, freeze_batchnorm, load_backbone_checkpoint

__all__ = [
    "DETECTORS",
    "CocoDetectionDataset",
    "DetectionLoss",
    "TimmFPNBackbone",
    "build",
    "build_from_config",
    "detection_collate",
    "find_coco_split",
    "freeze_batchnorm",
    "is_coco_folder",
    "load_backbone_checkpoint",
    "make_fashion_coco",
]


class DetectionLoss(nn.Module):
    """The engine's criterion for detectors: torchvision models return their losses as a dict in training
    mode; the loss is their sum. The parts of the last call are kept in ``last`` (for logging)."""

    def __init__(self):
        super().__init__()
        self.last: dict[str, torch.Tensor] = {}

    def forward(self, losses: dict[str, torch.Tensor], _ids=None) -> torch.Tensor:
        if not isinstance(losses, dict):
            raise TypeError(f"a detector in training mode returns a dict of losses, got {type(losses).__name__}")
        self.last = {k: v.detach() for k, v in losses.items()}
        return sum(losses.values())


def build_from_config(detector: str, num_classes: int, model_kwargs: dict, *, restoring: bool = False) -> nn.Module:
    """`build` from the engine's --model / --model-kwargs. ``restoring``: the weights will be replaced by a
    detection checkpoint (resume, eval), so the backbone checkpoint is not read (it may be gone), but the
    architecture it implied (frozen BatchNorm) is kept."""
    kwargs = dict(model_kwargs)
    if restoring and kwargs.get("checkpoint") is not None:
        kwargs.pop("checkpoint")
        kwargs.setdefault("frozen_bn", True)
    return build(detector, num_classes=num_classes, **kwargs)

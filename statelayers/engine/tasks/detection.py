"""Detection and instance segmentation (the S6LA paper's Section 5.2) with torchvision's detectors
(`statelayers.models.detectors`) on COCO-format folders (`statelayers.data.coco`), and their COCO evaluation
(pycocotools) on one process or many: predictions are gathered to rank 0, which scores them and sends the
numbers to every process.

Metrics, as the paper's Tables 3, 4 and 9: ``eval_bbox_ap`` (AP at IoU .50:.95), ``eval_bbox_ap50``,
``eval_bbox_ap75``, ``eval_bbox_ap_s`` / ``_m`` / ``_l`` (small < 32², medium, large > 96² px), and the same
with ``segm`` for models that predict masks. ``eval_acc`` is the box AP: the number the engine keeps the best
checkpoint by. pycocotools reports -1 where the ground truth has no object of that size.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import DataLoader

from ..._extras import require
from ..runtime import Dist, autocast_ctx
from .base import Task, TaskData, refuse_options

__all__ = ["DetectionTask", "DetectionLoss", "COCO_STATS", "coco_metrics", "predictions_to_coco",
           "run_detection_eval"]

# the first six numbers of COCOeval.stats, in order
COCO_STATS = ("ap", "ap50", "ap75", "ap_s", "ap_m", "ap_l")


def predictions_to_coco(output: dict, image_id: int, label_to_cat: dict[int, int]) -> list[dict]:
    """One image's torchvision prediction as COCO result entries (boxes as [x, y, w, h]; masks, when
    predicted, thresholded at 0.5 and RLE-encoded)."""
    boxes = output["boxes"].detach().float().cpu()
    scores = output["scores"].detach().float().cpu().tolist()
    labels = output["labels"].detach().cpu().tolist()
    xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
    rles = None
    if "masks" in output:
        mask_utils = require("pycocotools.mask", "mask evaluation")
        m = (output["masks"].detach().cpu()[:, 0] > 0.5).numpy().astype(np.uint8)
        rles = mask_utils.encode(np.asfortranarray(m.transpose(1, 2, 0))) if len(m) else []
        for r in rles:
            r["counts"] = r["counts"].decode("ascii")
    out = []
    for i, (box, score, label) in enumerate(zip(xywh, scores, labels)):
        if label not in label_to_cat:
            continue
        entry = {"image_id": int(image_id), "category_id": int(label_to_cat[label]), "bbox": box, "score": score}
        if rles is not None:
            entry["segmentation"] = rles[i]
        out.append(entry)
    return out


def _load_results(gt, results: list[dict], iou_type: str):
    """pycocotools' loadRes, which cannot take an empty list: an empty result set scores 0 where there is
    ground truth (and -1 where there is none), as it should."""
    coco_mod = require("pycocotools.coco", "COCO evaluation")
    if results:
        with contextlib.redirect_stdout(io.StringIO()):
            return gt.loadRes(results)
    dt = coco_mod.COCO()
    dt.dataset = {"images": list(gt.dataset["images"]), "categories": list(gt.dataset.get("categories", [])),
                  "annotations": []}
    with contextlib.redirect_stdout(io.StringIO()):
        dt.createIndex()
    return dt


def coco_metrics(gt, results: list[dict], image_ids: list[int] | None = None,
                 iou_types: tuple[str, ...] = ("bbox",)) -> tuple[dict, str]:
    """({"eval_bbox_ap": ..., ...}, pycocotools' printed summary) of COCO results against the ground truth
    ``gt`` (a pycocotools COCO), over ``image_ids`` (default: every image of ``gt``)."""
    cocoeval = require("pycocotools.cocoeval", "COCO evaluation")
    metrics, text = {}, []
    for iou_type in iou_types:
        # copies: loadRes writes into the entries (for boxes it replaces the segmentation by the box outline)
        drop = "segmentation" if iou_type == "bbox" else "bbox"
        res = [{k: v for k, v in r.items() if k != drop} for r in results if iou_type == "bbox" or "segmentation" in r]
        dt = _load_results(gt, res, iou_type)
        ev = cocoeval.COCOeval(gt, dt, iou_type)
        if image_ids is not None:
            ev.params.imgIds = sorted(image_ids)
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        text.append(f"{iou_type}:\n{buf.getvalue()}")
        for name, value in zip(COCO_STATS, ev.stats[: len(COCO_STATS)]):
            metrics[f"eval_{iou_type}_{name}"] = float(value)
    return metrics, "\n".join(text)


@torch.no_grad()
def run_detection_eval(model: nn.Module, loader: DataLoader, cfg, d: Dist) -> dict:
    """COCO metrics of ``model`` on the loader's dataset (a `CocoDetectionDataset`), with the engine's
    (config, Dist). Every process runs its shard; rank 0 scores; all processes return the same dict."""
    model.eval()
    ds = loader.dataset
    while not hasattr(ds, "coco") and hasattr(ds, "dataset"):  # torch Subset (the engine's eval_subset)
        ds = ds.dataset
    chunk = max(1, int(cfg.batch_size))
    results: list[dict] = []
    seen: list[int] = []  # scored images: those this loader gave, on every process
    has_masks = False
    for x, ids in loader:
        images = x["images"]
        for s in range(0, len(images), chunk):
            batch = [im.to(d.device, non_blocking=True) for im in images[s : s + chunk]]
            with autocast_ctx(cfg, d.device):
                outputs = model(batch)
            for out, image_id in zip(outputs, ids[s : s + chunk].tolist()):
                seen.append(image_id)
                has_masks = has_masks or "masks" in out
                results.extend(predictions_to_coco(out, image_id, ds.label_to_cat))
    if d.world > 1:
        gathered = [None] * d.world
        dist.all_gather_object(gathered, (results, seen, has_masks))
        results = [r for part, _, _ in gathered for r in part]
        seen = [i for _, part, _ in gathered for i in part]
        has_masks = any(m for _, _, m in gathered)
    metrics = None
    if d.main:
        metrics, _ = coco_metrics(ds.coco, results, seen, ("bbox", "segm") if has_masks else ("bbox",))
        metrics = {"eval_acc": metrics["eval_bbox_ap"], **metrics, "eval_detections": len(results)}
    if d.world > 1:
        box = [metrics]
        dist.broadcast_object_list(box, src=0)
        metrics = box[0]
    return metrics


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


class DetectionTask(Task):
    """``--model`` is the detector (faster_rcnn | retinanet | mask_rcnn); ``--model-kwargs`` go to
    `statelayers.models.detectors.build`. Batches are {"images": [...], "targets": [...]} with the image ids
    as the targets the loop sees; the detector returns its losses in training mode."""

    name = "detection"
    curve_labels = {"acc_label": "box AP", "loss_label": "sum of detector losses"}

    def default_recipe(self, model: str) -> str:
        # RetinaNet has its own learning rate in the S6LA paper
        return "detection_retinanet" if str(model).strip().lower() == "retinanet" else "detection"

    def checked_config(self, cfg):
        refuse_options(cfg, ("channels_last", "mixup", "cutmix", "repeated_aug", "smoothing"),
                       "do not apply to task 'detection'")
        # detection images are large: load at most one training batch of them per evaluation step
        return dataclasses.replace(cfg, eval_batch_size=min(cfg.eval_batch_size, cfg.batch_size))

    def build_data(self, cfg, *, eval_only: bool = False) -> TaskData:
        from ...data.coco import build_detection_datasets, detection_collate, needs_masks

        train_ds, eval_ds, info = build_detection_datasets(cfg.data, with_masks=needs_masks(cfg.model),
                                                           train_aug=cfg.train_aug, seed=cfg.seed,
                                                           subset=None if eval_only else cfg.subset)
        return TaskData(train_ds, eval_ds, info, {"num_classes": info.num_classes}, detection_collate)

    def build_model(self, cfg, data_kwargs: dict, *, restoring: bool = False) -> nn.Module:
        from ...models.detectors import build_from_config

        return build_from_config(cfg.model, data_kwargs["num_classes"], cfg.model_kwargs, restoring=restoring)

    def build_loss(self, cfg, mixup, info=None) -> nn.Module:
        return DetectionLoss()  # the sum of the loss dict a torchvision detector returns

    def evaluate(self, model: nn.Module, loader: DataLoader, cfg, d: Dist, info=None) -> dict:
        return run_detection_eval(model, loader, cfg, d)

    def epoch_summary(self, row: dict) -> str:
        return f"box_ap {row['eval_acc']:.4f}"

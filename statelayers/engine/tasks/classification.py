"""What image and sequence classification share: a timm model, cross-entropy (on Mixup / CutMix targets when
those are on), and top-1 / top-5 accuracy and loss as the evaluation."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader

from ..runtime import Dist, autocast_ctx, to_device
from .base import Task, call_model

__all__ = ["ClassificationTask"]


class ClassificationTask(Task):
    """A classifier: any timm model name (ours are registered with timm on import)."""

    def build_model(self, cfg, data_kwargs: dict, *, restoring: bool = False) -> nn.Module:
        import timm

        from ... import models  # noqa: F401  (registers the models with timm)

        if not timm.is_model(cfg.model):
            raise ValueError(f"unknown model {cfg.model!r}; `statelayers models` lists ours, any timm name works too")
        kwargs = dict(cfg.model_kwargs)
        if cfg.drop_path:
            kwargs.setdefault("drop_path_rate", cfg.drop_path)
        return timm.create_model(cfg.model, **data_kwargs, **kwargs)

    def build_mixup(self, cfg, info):
        if (cfg.mixup or 0) > 0 or (cfg.cutmix or 0) > 0:
            from timm.data import Mixup

            return Mixup(mixup_alpha=cfg.mixup or 0.0, cutmix_alpha=cfg.cutmix or 0.0,
                         label_smoothing=cfg.smoothing or 0.0, num_classes=info.num_classes)
        return None

    def build_loss(self, cfg, mixup) -> nn.Module:
        if mixup is not None:
            from timm.loss import SoftTargetCrossEntropy

            return SoftTargetCrossEntropy()
        return nn.CrossEntropyLoss(label_smoothing=cfg.smoothing or 0.0)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: DataLoader, cfg, d: Dist) -> dict:
        """Mean cross-entropy ("eval_loss"), top-1 ("eval_acc") and top-5 ("eval_top5") accuracy."""
        model.eval()
        sums = torch.zeros(4, dtype=torch.float64)  # loss sum, top-1, top-5, count
        for x, y in loader:
            x, y = to_device(x, d.device), y.to(d.device)
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast_ctx(cfg, d.device):
                logits = call_model(model, x)
            logits = logits.float()
            k = min(5, logits.shape[1])
            top = logits.topk(k, dim=1).indices
            sums += torch.tensor([
                F.cross_entropy(logits, y, reduction="sum").item(),
                (top[:, 0] == y).sum().item(),
                (top == y[:, None]).any(dim=1).sum().item(),
                len(y),
            ], dtype=torch.float64)
        if d.world > 1:
            dist.all_reduce(sums)
        loss, top1, top5, n = sums.tolist()
        return {"eval_loss": loss / max(n, 1), "eval_acc": top1 / max(n, 1), "eval_top5": top5 / max(n, 1)}

    def epoch_summary(self, row: dict) -> str:
        return f"eval_loss {row['eval_loss']:.4f}  eval_acc {row['eval_acc']:.4f}"

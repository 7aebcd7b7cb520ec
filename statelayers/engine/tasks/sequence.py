"""Sequence tasks (S7's): the named sequence datasets and `.ts` files of `statelayers.data.sequences`, padded into
batches of named tensors. What a dataset's targets are (`SeqInfo.target`) decides the loss, the metrics and the
number the run keeps its best weights by:

==================  ==============================  ========================================  ====================
targets             loss                            metrics                                   best weights by
==================  ==============================  ========================================  ====================
class (B,)          cross-entropy                   eval_loss, eval_acc, eval_top5            highest eval_acc
regression (B, D)   mean squared error              eval_mse (= eval_loss), eval_rmse,        lowest eval_mse
                                                    eval_mae, eval_r2
step_class (B, L)   cross-entropy per valid step    eval_loss, eval_acc (per step); language  highest eval_acc;
                                                    models also eval_ppl, eval_bits_per_<unit> LMs lowest eval_loss
step_regression     squared error per valid step    eval_mse (= eval_loss), eval_rmse,        lowest eval_mse
(B, L, D)           and value                       eval_mae, eval_r2
==================  ==============================  ========================================  ====================

Per-step losses and metrics are means over the valid steps only: padded steps carry `IGNORE_INDEX` (classes) or
NaN (values) in the batch's targets (`statelayers.data.sequence_base.pad_collate`), so a batch's padding never
counts, and a step-weighted mean over batches is the same however the sequences are batched. R² is
1 − SSE/SST per target value (SST about that value's mean over the evaluated steps or sequences), averaged over the
values as scikit-learn's ``r2_score`` does by default.

Per-step targets need one model output per input step (head "none", which the data sets; no token pooling), and
next-step targets (`SeqInfo.next_step`: the next observation, the next token) need a model that does not read the
future: `check_model_fits` refuses bidirectional layers on such data, since they would see the targets.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader

from ...data.sequence_base import IGNORE_INDEX
from ..recipes import get_recipe
from ..runtime import Dist, autocast_ctx, to_device
from .base import TaskData, call_model, refuse_options
from .classification import ClassificationTask

__all__ = ["SequenceLoss", "SequenceTask", "sequence_metrics"]


def _check_steps(output: torch.Tensor, target: torch.Tensor) -> None:
    if output.dim() < 3 or output.shape[:2] != target.shape[:2]:
        raise ValueError(
            f"per-step targets of shape {tuple(target.shape)} need one model output per step, got output of shape "
            f"{tuple(output.shape)}: the model must keep every step (head='none', no token pooling: stride=1)")


class SequenceLoss(nn.Module):
    """The training loss of a sequence task whose targets are not one class per sequence (`SeqInfo.target`: those
    train with the classifiers' cross-entropy): a mean over sequences, or over valid steps (and values) for per-step
    targets."""

    def __init__(self, target: str, smoothing: float = 0.0):
        super().__init__()
        self.target, self.smoothing = target, smoothing

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        output = output.float()
        if self.target == "step_class":
            _check_steps(output, target)
            total = F.cross_entropy(output.flatten(0, 1), target.flatten(), ignore_index=IGNORE_INDEX,
                                    label_smoothing=self.smoothing, reduction="sum")
            return total / (target != IGNORE_INDEX).sum().clamp_min(1)
        if self.target == "step_regression":
            _check_steps(output, target)
        output = output.reshape(target.shape)
        valid = ~torch.isnan(target)  # padded steps (and missing values) hold NaN
        err = torch.where(valid, output - target.nan_to_num(), output.new_zeros(()))
        return err.square().sum() / valid.sum().clamp_min(1)


@torch.no_grad()
def sequence_metrics(outputs_and_targets, target: str, token_unit: str = "", world: int = 1) -> dict:
    """The metrics (see the module docstring) of an iterable of (model output, targets) batches of targets that are
    not one class per sequence (those are the classifiers' `ClassificationTask.evaluate`); with ``world`` > 1 the sums
    are added over the processes first (on the CPU), so every process returns the same numbers."""
    sums, moments = None, None
    for output, y in outputs_and_targets:
        output = output.float()
        if target == "step_class":
            _check_steps(output, y)
            keep = y.flatten() != IGNORE_INDEX
            output, y = output.flatten(0, 1)[keep], y.flatten()[keep]
            batch = torch.stack([F.cross_entropy(output, y, reduction="sum").double(),
                                 (output.argmax(dim=1) == y).sum().double(),
                                 torch.tensor(float(len(y)), dtype=torch.float64, device=y.device)]).cpu()
            sums = batch if sums is None else sums + batch
            continue
        if target == "step_regression":
            _check_steps(output, y)
        y = y.reshape(y.shape[0], -1, y.shape[-1]).double()  # (B, steps, D); whole-sequence targets: 1 step
        output = output.reshape(y.shape).double()
        valid = ~torch.isnan(y)
        y0 = y.nan_to_num()
        err = torch.where(valid, output - y0, torch.zeros((), dtype=y.dtype, device=y.device))
        # per value d: count, Σerr², Σ|err|, Σy, Σy²
        batch = torch.stack([valid.sum((0, 1)).double(), err.square().sum((0, 1)), err.abs().sum((0, 1)),
                             y0.sum((0, 1)), y0.square().sum((0, 1))]).cpu()
        moments = batch if moments is None else moments + batch
    if target == "step_class":
        sums = torch.zeros(3, dtype=torch.float64) if sums is None else sums
        if world > 1:
            dist.all_reduce(sums)
        loss, top1, n = sums.tolist()
        out = {"eval_loss": loss / max(n, 1), "eval_acc": top1 / max(n, 1)}
        if token_unit:
            out["eval_ppl"] = math.exp(min(out["eval_loss"], 700.0))
            out[f"eval_bits_per_{token_unit}"] = out["eval_loss"] / math.log(2)
        return out
    if moments is None:
        raise ValueError("nothing to evaluate: the evaluation split is empty")
    if world > 1:
        dist.all_reduce(moments)
    n, sse, sae, sy, syy = moments
    total = n.sum().clamp_min(1)
    mse = float(sse.sum() / total)
    sst = syy - sy.square() / n.clamp_min(1)
    r2 = torch.where(sst > 0, 1 - sse / sst.clamp_min(1e-300), torch.full_like(sst, float("nan")))
    return {"eval_loss": mse, "eval_mse": mse, "eval_rmse": math.sqrt(mse), "eval_mae": float(sae.sum() / total),
            "eval_r2": float(r2.mean())}


class SequenceTask(ClassificationTask):
    name = "sequence"
    input_kind = "sequence"

    def default_recipe(self, model: str) -> str:
        return "s7"

    def model_mismatch(self, cfg, model_kind: str) -> str:
        return (f"model {cfg.model!r} is an image model (it takes (batch, channels, height, width) images) but data "
                f"{cfg.data!r} is sequence data (task 'sequence'); pick a sequence model (s7_tiny, s7_small, "
                "s7_base, s5_small, s6_small, gru_small; `statelayers models`) or image data (digits, fashion_mnist or "
                "an ImageFolder path)")

    def checked_config(self, cfg):
        refuse_options(cfg, ("channels_last", "mixup", "cutmix", "repeated_aug"),
                       "apply to images only, not to task 'sequence'")
        # train_aug set on top of the recipe's (a recipe made for images may carry one; it is not used)
        recipe_aug = get_recipe(cfg.recipe).get("train_aug") or {}
        extra = sorted(k for k, v in (cfg.train_aug or {}).items() if k not in recipe_aug or recipe_aug[k] != v)
        if extra:
            raise ValueError(f"train_aug {extra} applies to images only, not to task 'sequence'")
        self.check_model(cfg)
        return cfg

    def build_data(self, cfg, *, eval_only: bool = False) -> TaskData:
        from ...data.sequences import build_sequence_datasets, pad_collate

        train_ds, eval_ds, info = build_sequence_datasets(cfg.data, data_dir=cfg.data_dir, subset=None if eval_only
                                                          else cfg.subset, seed=cfg.seed, max_len=cfg.max_len)
        if info.regression and cfg.smoothing:
            raise ValueError(f"label smoothing (smoothing={cfg.smoothing}) applies to classes; data {cfg.data!r} has "
                             f"{info.target} targets: set --smoothing 0")
        return TaskData(train_ds, eval_ds, info, {"num_classes": info.num_outputs(), **info.model_kwargs()},
                        pad_collate)

    def check_model_fits(self, model: nn.Module, info) -> None:
        """Next-step targets (the next observation or token) are inputs of later steps: a model with a layer that
        reads the future would see them. Refused with one line."""
        if not getattr(info, "next_step", False):
            return
        readers = sorted({name or type(model).__name__ for name, m in model.named_modules()
                          if getattr(m, "bidirectional", False) is True})
        if readers:
            shown = ", ".join(readers[:3]) + (f" and {len(readers) - 3} more" if len(readers) > 3 else "")
            raise ValueError(f"data {info.name!r} asks for the next step at every step, but the model reads the "
                             f"future (bidirectional layers: {shown}), so it would see its targets; use "
                             "--model-kwargs bidirectional=False")

    def build_loss(self, cfg, mixup, info=None) -> nn.Module:
        target = getattr(info, "target", "class")
        if target == "class":
            return super().build_loss(cfg, mixup, info)
        return SequenceLoss(target, smoothing=cfg.smoothing or 0.0)

    def score_metric(self, info=None) -> tuple[str, bool]:
        target = getattr(info, "target", "class")
        if target in ("regression", "step_regression"):
            return "eval_mse", False
        if target == "step_class" and getattr(info, "token_unit", ""):
            return "eval_loss", False  # a language model: the held-out cross-entropy (bits per token)
        return "eval_acc", True

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: DataLoader, cfg, d: Dist, info=None) -> dict:
        target = getattr(info, "target", "class")
        if target == "class":
            return super().evaluate(model, loader, cfg, d, info)
        model.eval()

        def batches():
            for x, y in loader:
                x, y = to_device(x, d.device), y.to(d.device)
                with autocast_ctx(cfg, d.device):
                    yield call_model(model, x), y

        return sequence_metrics(batches(), target, getattr(info, "token_unit", ""), world=d.world)

    def epoch_summary(self, row: dict) -> str:
        if row.get("eval_mse") not in (None, ""):
            return f"eval_mse {row['eval_mse']:.4g}  eval_mae {row['eval_mae']:.4g}  eval_r2 {row['eval_r2']:.4f}"
        text = f"eval_loss {row['eval_loss']:.4f}  eval_acc {row['eval_acc']:.4f}"
        bits = next((k for k in row if k.startswith("eval_bits_per_")), None)
        if bits is not None and row[bits] not in (None, ""):
            text += f"  {bits[5:]} {row[bits]:.4f}"
        return text

"""What image and sequence classification share: a timm model, cross-entropy (on Mixup / CutMix targets when
those are on), and top-1 / top-5 accuracy and loss as the evaluation."""

from __future__ import annotations

import inspect
import re

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader

from ..runtime import Dist, autocast_ctx, to_device
from .base import Task, call_model, model_input_kind

__all__ = ["ClassificationTask", "accepted_model_kwargs"]

# what timm's create_model passes every entrypoint (not the user's to set)
_TIMM_BOOKKEEPING = frozenset({"pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"})


def unknown_model(name) -> ValueError:
    return ValueError(f"unknown model {name!r}; `statelayers models` lists ours, any timm name works too")


def accepted_model_kwargs(name: str, kwargs: dict) -> list[str] | None:
    """The keyword arguments model ``name`` accepts, read from the ``__init__`` signatures of its class and of the
    classes its ``**kwargs`` go on to (built on the meta device with ``kwargs``, so no memory is spent); None when
    it cannot be told (the model does not build, or passes ``**kwargs`` to something other than its base class)."""
    import timm

    try:
        with torch.device("meta"):
            net = timm.create_model(name, **kwargs)
    except Exception:
        return None
    names: set[str] = set()
    for cls in type(net).__mro__:
        if cls in (nn.Module, object):
            return None  # the last **kwargs went elsewhere (e.g. to inner layers)
        init = cls.__dict__.get("__init__")
        if init is None:
            continue
        params = list(inspect.signature(init).parameters.values())
        names |= {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            return sorted(names - {"self"} - _TIMM_BOOKKEEPING)
    return None


def _model_build_error(cfg, kwargs: dict, user: dict, e: TypeError) -> BaseException:
    """A one-line ValueError for a TypeError of timm.create_model caused by the user's settings, else ``e``."""
    found = re.search(r"unexpected keyword argument '([^']+)'", str(e))
    key = found.group(1) if found else None
    if key is not None and key in user:
        accepted = accepted_model_kwargs(cfg.model, {k: v for k, v in kwargs.items() if k not in user})
        bad = [k for k in user if accepted is not None and k not in accepted] or [key]
        text = ", ".join(repr(k) for k in bad)
        msg = f"model {cfg.model!r} takes no keyword argument{'s' if len(bad) > 1 else ''} {text} (--model-kwargs)"
        if accepted:
            msg += f"; it accepts {', '.join(accepted)}"
        return ValueError(msg)
    if key == "drop_path_rate" and "drop_path_rate" not in user and cfg.drop_path:
        return ValueError(f"model {cfg.model!r} has no stochastic depth (it takes no drop_path_rate), so "
                          f"drop_path={cfg.drop_path} does not apply to it; set --drop-path 0")
    if user:
        given = " ".join(f"{k}={v!r}" for k, v in user.items())
        first = (str(e).splitlines() or [""])[0]
        return ValueError(f"model {cfg.model!r} cannot be built with --model-kwargs {given}: {first}")
    return e


class ClassificationTask(Task):
    """A classifier: any timm model name (ours are registered with timm on import). ``input_kind`` is what the
    task's data is, "image" or "sequence", and must be what the model takes (`base.model_input_kind`)."""

    input_kind: str = "image"

    def model_mismatch(self, cfg, model_kind: str) -> str:
        """The message for a ``model_kind`` model given this task's data."""
        return f"model {cfg.model!r} is a {model_kind} model but data {cfg.data!r} is {self.input_kind} data"

    def check_model(self, cfg) -> None:
        """ValueError (one line) for a model timm does not know or whose inputs are not this task's data."""
        kind = model_input_kind(cfg.model)
        if kind is None:
            raise unknown_model(cfg.model)
        if kind != self.input_kind:
            raise ValueError(self.model_mismatch(cfg, kind))

    def checked_config(self, cfg):
        self.check_model(cfg)
        return cfg

    def build_model(self, cfg, data_kwargs: dict, *, restoring: bool = False) -> nn.Module:
        """The timm model ``cfg.model`` with ``data_kwargs`` (what the data fixes: num_classes, channels, ...), the
        user's ``model_kwargs`` and ``drop_path_rate`` from ``drop_path``. A user keyword the model does not take,
        or one that contradicts the data, is a one-line ValueError naming it."""
        import timm

        from ... import models  # noqa: F401  (registers the models with timm)

        if not timm.is_model(cfg.model):
            raise unknown_model(cfg.model)
        user = dict(cfg.model_kwargs or {})
        for key, value in data_kwargs.items():
            if key in user and user[key] != value:
                raise ValueError(f"--model-kwargs {key}={user[key]!r} does not fit the data {cfg.data!r}, which "
                                 f"gives {key}={value!r}; leave {key} out")
        kwargs = {**data_kwargs, **user}
        if cfg.drop_path:
            kwargs.setdefault("drop_path_rate", cfg.drop_path)
        try:
            return timm.create_model(cfg.model, **kwargs)
        except TypeError as e:
            error = _model_build_error(cfg, kwargs, user, e)
            if error is e:
                raise
            raise error from e

    def build_mixup(self, cfg, info):
        if (cfg.mixup or 0) > 0 or (cfg.cutmix or 0) > 0:
            from timm.data import Mixup

            return Mixup(mixup_alpha=cfg.mixup or 0.0, cutmix_alpha=cfg.cutmix or 0.0,
                         label_smoothing=cfg.smoothing or 0.0, num_classes=info.num_classes)
        return None

    def build_loss(self, cfg, mixup, info=None) -> nn.Module:
        if mixup is not None:
            from timm.loss import SoftTargetCrossEntropy

            return SoftTargetCrossEntropy()
        return nn.CrossEntropyLoss(label_smoothing=cfg.smoothing or 0.0)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: DataLoader, cfg, d: Dist, info=None) -> dict:
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

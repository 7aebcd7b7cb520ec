"""Sequence classification (S7's tasks): the named sequence datasets and `.ts` files of
`statelayers.data.sequences`, padded into batches of named tensors."""

from __future__ import annotations

from ..recipes import get_recipe
from .base import TaskData, refuse_options
from .classification import ClassificationTask

__all__ = ["SequenceTask"]


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
        return TaskData(train_ds, eval_ds, info, {"num_classes": info.num_classes, **info.model_kwargs()},
                        pad_collate)

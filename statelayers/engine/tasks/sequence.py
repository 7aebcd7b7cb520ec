"""Sequence classification (S7's tasks): the named sequence datasets and `.ts` files of
`statelayers.data.sequences`, padded into batches of named tensors."""

from __future__ import annotations

from .base import TaskData, refuse_options
from .classification import ClassificationTask

__all__ = ["SequenceTask"]


class SequenceTask(ClassificationTask):
    name = "sequence"

    def default_recipe(self, model: str) -> str:
        return "s7"

    def checked_config(self, cfg):
        refuse_options(cfg, ("channels_last", "mixup", "cutmix", "repeated_aug"),
                       "apply to images only, not to task 'sequence'")
        return cfg

    def build_data(self, cfg, *, eval_only: bool = False) -> TaskData:
        from ...data.sequences import build_sequence_datasets, pad_collate

        train_ds, eval_ds, info = build_sequence_datasets(cfg.data, data_dir=cfg.data_dir, subset=None if eval_only
                                                          else cfg.subset, seed=cfg.seed, max_len=cfg.max_len)
        return TaskData(train_ds, eval_ds, info, {"num_classes": info.num_classes, **info.model_kwargs()},
                        pad_collate)

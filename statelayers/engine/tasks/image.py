"""Image classification: the named image datasets and ImageFolder trees of `statelayers.data.images`."""

from __future__ import annotations

import dataclasses

from .base import TaskData
from .classification import ClassificationTask

__all__ = ["ImageTask"]


class ImageTask(ClassificationTask):
    name = "image"

    def default_recipe(self, model: str) -> str:
        return "small"

    def build_data(self, cfg, *, eval_only: bool = False) -> TaskData:
        from ...data.images import build_datasets

        train_ds, eval_ds, info = build_datasets(cfg.data, img_size=cfg.img_size, train_aug=cfg.train_aug,
                                                 subset=None if eval_only else cfg.subset, seed=cfg.seed)
        return TaskData(train_ds, eval_ds, info, {"num_classes": info.num_classes, "in_chans": info.in_chans}, None)

    def evaluation_config(self, cfg, run_train_aug: dict | None):
        # ImageFolder: the run's train_aug holds its evaluation resize / crop / interpolation
        return dataclasses.replace(cfg, train_aug=run_train_aug)

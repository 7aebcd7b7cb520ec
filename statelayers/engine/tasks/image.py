"""Image classification: the named image datasets and ImageFolder trees of `statelayers.data.images`.

What the model gets from ImageFolder data (the rule `model_norm` and `statelayers.data.images` implement):

* channels: 1 when every sampled training image is grayscale, else 3 (``--model-kwargs in_chans=1|3`` wins; with
  digits / Fashion-MNIST ``in_chans=3`` repeats the gray channel);
* size: the recipe's or ``--img-size`` (224 for ``resnet`` / ``deit``); where neither sets one (the ``small``
  recipe) the size of the data: the median shorter side of the sampled training images, used whole;
* normalisation: RGB data gets the mean/std of the model's own timm default configuration when it has three of
  each (ImageNet's for the ResNets, DeiT, Swin, PVTv2), what its weights and timm's transforms expect; grayscale
  data and small-image models (the CIFAR-style ResNets, whose default input is one 28 px channel) get the
  per-channel mean/std of a fixed sample of the training split (up to 512 images, every image of a small tree).
"""

from __future__ import annotations

import dataclasses

from .base import TaskData
from .classification import ClassificationTask

__all__ = ["ImageTask", "model_norm"]


def model_norm(model: str) -> tuple | str:
    """The ``norm`` `statelayers.data.images.build_datasets` gets for ``model``: its timm default (mean, std) when
    it has three values each, else "data" (statistics of the training split)."""
    import timm

    from ... import models  # noqa: F401  (registers the models with timm)

    pretrained = timm.models.get_pretrained_cfg(model) if timm.is_model(model) else None
    mean, std = getattr(pretrained, "mean", None), getattr(pretrained, "std", None)
    if mean is not None and std is not None and len(mean) == len(std) == 3:
        return tuple(mean), tuple(std)
    return "data"


class ImageTask(ClassificationTask):
    name = "image"
    input_kind = "image"

    def default_recipe(self, model: str) -> str:
        return "small"

    def model_mismatch(self, cfg, model_kind: str) -> str:
        return (f"model {cfg.model!r} is a sequence model (it takes (batch, length, channels) sequences or token "
                f"ids) but data {cfg.data!r} is image data (task 'image'); pick an image model (e.g. "
                "s6la_cifar_resnet20; `statelayers models` lists them) or sequence data (e.g. scp2, sfmnist, listops)")

    def checked_config(self, cfg):
        from ...data.images import check_train_aug

        self.check_model(cfg)
        # unknown keys and the types and ranges of the values; a recipe's keys for another kind of data (`resnet` on
        # digits) are refused when the data is built, so that such a config still resolves (its learning rate, ...)
        check_train_aug(cfg.data, cfg.train_aug, for_this_data=False)
        return cfg

    def build_data(self, cfg, *, eval_only: bool = False) -> TaskData:
        from ...data.images import build_datasets

        train_ds, eval_ds, info = build_datasets(cfg.data, img_size=cfg.img_size, train_aug=cfg.train_aug,
                                                 subset=None if eval_only else cfg.subset, seed=cfg.seed,
                                                 in_chans=(cfg.model_kwargs or {}).get("in_chans"),
                                                 norm=model_norm(cfg.model))
        return TaskData(train_ds, eval_ds, info, {"num_classes": info.num_classes, "in_chans": info.in_chans}, None)

    def evaluation_config(self, cfg, run_train_aug: dict | None):
        # ImageFolder: the run's train_aug holds its evaluation resize / crop / interpolation
        return dataclasses.replace(cfg, train_aug=run_train_aug)

"""Named training recipes. Each is a set of `TrainConfig` fields; command-line overrides win.

Learning rates are given per reference batch (`lr_base` per `lr_base_size` images) and scaled
linearly to the global batch (batch size × processes × accumulation steps), as the papers do.
"""

from __future__ import annotations

RECIPES: dict[str, dict] = {
    # S6LA paper, Appendix C.1.1: "exactly the same data augmentation and hyper-parameter settings
    # in original ResNet (He et al., 2016a)": SGD momentum 0.9, weight decay 1e-4, lr 0.1 per 256
    # images, ÷10 every 30 epochs, 100 epochs, random-resized crop 224 + horizontal flip.
    "resnet": dict(
        citation="S6LA paper App. C.1.1 (ResNet recipe of He et al. 2016)",
        opt="sgd", momentum=0.9, weight_decay=1e-4, lr_base=0.1, lr_base_size=256,
        sched="step", decay_epochs=30, decay_rate=0.1, warmup_epochs=0, epochs=100, batch_size=256,
        img_size=224, train_aug=dict(hflip=0.5, scale=(0.08, 1.0), crop_pct=0.875),
        smoothing=0.0, mixup=0.0, cutmix=0.0, drop_path=0.0, repeated_aug=False,
    ),
    # S6LA paper, Appendix C.1.1 for the transformers (DeiT's recipe): AdamW, weight decay 0.05,
    # lr 1e-3 per 1024 images, cosine, 5 warm-up epochs, 300 epochs, RandAugment, repeated
    # augmentation, label smoothing 0.1, Mixup 0.8, CutMix 1.0, random erasing 0.25, stochastic depth.
    "deit": dict(
        citation="S6LA paper App. C.1.1 (DeiT recipe of Touvron et al. 2021)",
        opt="adamw", momentum=0.9, weight_decay=0.05, lr_base=1e-3, lr_base_size=1024,
        sched="cosine", warmup_epochs=5, warmup_lr=1e-6, min_lr=1e-5, epochs=300, batch_size=1024,
        img_size=224,
        train_aug=dict(hflip=0.5, scale=(0.08, 1.0), auto_augment="rand-m9-mstd0.5-inc1", re_prob=0.25,
                       interpolation="bicubic", crop_pct=0.875),
        smoothing=0.1, mixup=0.8, cutmix=1.0, drop_path=0.1, repeated_aug=True, clip_grad=None,
    ),
    # Ours, for 28–32 px data and the CIFAR-style ResNets: the CIFAR recipe of He et al. 2016 §4.2
    # (SGD 0.9, weight decay, padded random crop + flip) with a cosine schedule and a short warm-up,
    # which converges in far fewer epochs than the original step schedule.
    "small": dict(
        citation="statelayers: CIFAR-style recipe (He et al. 2016 §4.2 augmentation, cosine schedule)",
        opt="sgd", momentum=0.9, weight_decay=5e-4, lr_base=0.1, lr_base_size=128,
        sched="cosine", warmup_epochs=1, warmup_lr=0.01, min_lr=0.0, epochs=30, batch_size=128,
        img_size=None, train_aug=dict(hflip=0.5, crop_pad=2),
        smoothing=0.0, mixup=0.0, cutmix=0.0, drop_path=0.0, repeated_aug=False,
    ),
}


def get_recipe(name: str) -> dict:
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}")
    return {k: (dict(v) if isinstance(v, dict) else v) for k, v in RECIPES[name].items()}

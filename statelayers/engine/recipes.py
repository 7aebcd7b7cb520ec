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
    # S7 (design note s7.md §6, the official code's training setup): AdamW, the SSM parameters (eigenvalues,
    # static B) in their own group at a lower learning rate without weight decay, linear warm-up then cosine
    # to zero. The official per-task rates are regular ≈ 1.5e-3–7.7e-3 at batches of 6–50 with the SSM group
    # at 1/lr_factor ≈ 0.06–0.33 of it; these are middle values for the offline tasks.
    "s7": dict(
        citation="S7 official training setup (design note s7.md §6): AdamW, SSM group lr, warm-up + cosine",
        opt="adamw", momentum=0.9, weight_decay=0.05, lr_base=2e-3, lr_base_size=32,
        sched="cosine", warmup_epochs=1, warmup_lr=1e-6, min_lr=0.0, epochs=30, batch_size=32,
        img_size=None, train_aug=None, smoothing=0.0, mixup=0.0, cutmix=0.0, drop_path=0.0,
        repeated_aug=False, clip_grad=None, ssm_lr_scale=0.25, ssm_weight_decay=0.0,
    ),
    # S6LA paper, Appendix C.2 (MMDetection's 1x schedule): SGD momentum 0.9, weight decay 1e-4, lr 0.02 per
    # 16 images, 12 epochs, x0.1 after epochs 8 and 11; MMDetection's linear warm-up over 500 iterations from
    # 0.001 x lr. Shorter side 800 (max 1333) is the detector's default (--model-kwargs min_size=...).
    "detection": dict(
        citation="S6LA paper App. C.2 (MMDetection 1x schedule)",
        opt="sgd", momentum=0.9, weight_decay=1e-4, lr_base=0.02, lr_base_size=16,
        sched="multistep", decay_milestones=[8, 11], decay_rate=0.1, warmup_epochs=0, warmup_steps=500,
        warmup_lr=2e-5, min_lr=0.0, epochs=12, batch_size=2, img_size=None, train_aug=dict(hflip=0.5),
        smoothing=0.0, mixup=0.0, cutmix=0.0, drop_path=0.0, repeated_aug=False, clip_grad=None,
    ),
    # the same for RetinaNet, whose initial learning rate the paper lowers to 0.01 (App. C.2)
    "detection_retinanet": dict(
        citation="S6LA paper App. C.2 (MMDetection 1x schedule, RetinaNet lr 0.01)",
        opt="sgd", momentum=0.9, weight_decay=1e-4, lr_base=0.01, lr_base_size=16,
        sched="multistep", decay_milestones=[8, 11], decay_rate=0.1, warmup_epochs=0, warmup_steps=500,
        warmup_lr=1e-5, min_lr=0.0, epochs=12, batch_size=2, img_size=None, train_aug=dict(hflip=0.5),
        smoothing=0.0, mixup=0.0, cutmix=0.0, drop_path=0.0, repeated_aug=False, clip_grad=None,
    ),
}


def get_recipe(name: str) -> dict:
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}")
    return {k: (dict(v) if isinstance(v, dict) else v) for k, v in RECIPES[name].items()}

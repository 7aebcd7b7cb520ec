"""statelayers: selective state-space models across depth (S6LA) and time (S7)."""

from . import models  # noqa: F401  (registers the models with timm)
from .engine import TrainConfig, evaluate, train
from .models import MRLAResNet, RLAResNet, S6LAResNet, S7Sequence, SmallResNet
from .s7 import S7, S7Block
from .scan import linear_scan, linear_scan_reference
from .ssm import SelectiveParams, mamba_dt_bias, s4d_real_a_log, ssm_step

__version__ = "0.1.0"
__all__ = [
    "TrainConfig",
    "train",
    "evaluate",
    "MRLAResNet",
    "RLAResNet",
    "S6LAResNet",
    "SmallResNet",
    "SelectiveParams",
    "mamba_dt_bias",
    "s4d_real_a_log",
    "ssm_step",
    "S7",
    "S7Block",
    "S7Sequence",
    "linear_scan",
    "linear_scan_reference",
]

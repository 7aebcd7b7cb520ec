"""statelayers: selective state-space models across depth (S6LA) and time (S7).

``import statelayers`` registers every model with timm (``timm.create_model("s6la_resnet50")``) and exports what a
user imports: the layers and their math (``statelayers.layers``), the model classes (``statelayers.models``) and
the training engine (``statelayers.engine``). Data lives in ``statelayers.data``, tools in ``statelayers.tools``.
"""

from . import _compat, models  # noqa: F401  (models: registers the models with timm)
from ._version import __version__
from .engine import RunResult, TrainConfig, evaluate, train
from .layers import (
    S7,
    S7Block,
    SelectiveParams,
    linear_scan,
    linear_scan_reference,
    mamba_dt_bias,
    s4d_real_a_log,
    ssm_step,
)
from .models import (
    GRUSequence,
    MRLAResNet,
    MRLAVisionTransformer,
    RLAResNet,
    S6LAPyramidVisionTransformerV2,
    S6LAResNet,
    S6LASwinTransformer,
    S6LAVisionTransformer,
    S7Sequence,
    SmallResNet,
)

_compat.install()

__all__ = [
    "__version__",
    # training
    "RunResult",
    "TrainConfig",
    "evaluate",
    "train",
    # layers and their math
    "S7",
    "S7Block",
    "SelectiveParams",
    "linear_scan",
    "linear_scan_reference",
    "mamba_dt_bias",
    "s4d_real_a_log",
    "ssm_step",
    # models
    "GRUSequence",
    "MRLAResNet",
    "MRLAVisionTransformer",
    "RLAResNet",
    "S6LAPyramidVisionTransformerV2",
    "S6LAResNet",
    "S6LASwinTransformer",
    "S6LAVisionTransformer",
    "S7Sequence",
    "SmallResNet",
]

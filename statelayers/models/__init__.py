"""Model families, each registered with timm on import."""

from . import (  # noqa: F401
    mrla_deit,
    mrla_resnet,
    rla_resnet,
    s6la_deit,
    s6la_pvt,
    s6la_resnet,
    s6la_swin,
    s7_seq,
    small_resnet,
)
from .mrla_deit import MRLAVisionTransformer
from .mrla_resnet import MRLAResNet
from .rla_resnet import RLAResNet
from .s6la_deit import S6LAVisionTransformer
from .s6la_pvt import S6LAPyramidVisionTransformerV2
from .s6la_resnet import S6LAResNet
from .s6la_swin import S6LASwinTransformer
from .s7_seq import GRUSequence, S7Sequence
from .small_resnet import SmallResNet

__all__ = [
    "MRLAResNet", "MRLAVisionTransformer", "RLAResNet", "S6LAResNet", "S6LAVisionTransformer", "SmallResNet",
    "S6LAPyramidVisionTransformerV2", "S6LASwinTransformer", "S7Sequence", "GRUSequence",
]

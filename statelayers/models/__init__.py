"""Model families, each registered with timm on import."""

from . import mrla_resnet, rla_resnet, s6la_resnet, small_resnet  # noqa: F401
from .mrla_resnet import MRLAResNet
from .rla_resnet import RLAResNet
from .s6la_resnet import S6LAResNet
from .small_resnet import SmallResNet

__all__ = ["MRLAResNet", "RLAResNet", "S6LAResNet", "SmallResNet"]

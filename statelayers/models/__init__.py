"""Model families, each registered with timm on import."""

from . import s6la_resnet, small_resnet  # noqa: F401
from .s6la_resnet import S6LAResNet
from .small_resnet import SmallResNet

__all__ = ["S6LAResNet", "SmallResNet"]

"""What the ViT/DeiT families share: the DeiT sizes and pretrained-cfg, timm's builder as its ViTs use it, and
`BlockLoopViT`, a timm `VisionTransformer` whose blocks run in a Python loop that threads a carry.

The S6LA DeiT (`s6la_deit.py`) carries its state through that loop; the MRLA-light baseline (`mrla_deit.py`)
carries nothing but needs the token grid at every block. Both subclass `BlockLoopViT`, so timm's patch embedding,
position embedding, blocks, norm, head, checkpoints, `dynamic_img_size` and `features_only` work as for a plain ViT.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
import torch.fx
import torch.nn as nn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, checkpoint
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

from ..checkpoint import load_into_larger_model
from ._features import feature_cfg, feature_indices
from ._inputs import check_image_input

__all__ = ["BlockLoopViT", "DEIT_ARCHS", "build_vit", "deit_cfg"]

# one call in a torch.fx graph, run on the real image when the graph runs (see `_inputs.py`)
torch.fx.wrap("check_image_input")

DEIT_ARCHS = {
    "tiny": dict(embed_dim=192, depth=12, num_heads=3),
    "small": dict(embed_dim=384, depth=12, num_heads=6),
    "base": dict(embed_dim=768, depth=12, num_heads=12),
}


def deit_cfg(**kwargs) -> dict:
    """timm pretrained-cfg of an ImageNet DeiT (no weights are published: `url` is empty). As timm's own ViT and
    DeiT cfgs: `pool_size` None, since `forward_features` returns tokens (B, 1 + H·W, D), not a feature map."""
    cfg = dict(
        url="", num_classes=1000, input_size=(3, 224, 224), pool_size=None, crop_pct=0.875,
        interpolation="bicubic", fixed_input_size=True, mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD,
        first_conv="patch_embed.proj", classifier="head", license="apache-2.0",
    )
    return {**cfg, **kwargs}


def build_vit(cls: type, variant: str, pretrained: bool = False, **kwargs) -> nn.Module:
    """`build_model_with_cfg` as timm's `_create_vision_transformer` calls it (features via the getter)."""
    defaults = dict(out_indices=kwargs.pop("out_indices", 3), feature_cls="getter")
    return build_model_with_cfg(
        cls, variant, pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=feature_cfg(defaults, kwargs.pop("feature_cfg", None)),
        **kwargs,
    )


class BlockLoopViT(VisionTransformer):
    """timm `VisionTransformer` whose blocks run in a Python loop that threads a carry.

    Subclasses define `initial_carry(x)` and `block_step(i, block, x, carry, grid, **block_kwargs)`
    → `(x, carry)`; `forward_features`, `forward_intermediates` and the pruning all go through it.
    """

    def initial_carry(self, x: torch.Tensor) -> Any:
        return None

    def block_step(self, i: int, block: nn.Module, x: torch.Tensor, carry: Any, grid: tuple[int, int], **kw):
        return self._call_block(block, x, **kw), carry

    def _call_block(self, block: nn.Module, x: torch.Tensor, **kw) -> torch.Tensor:
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint(partial(block, **kw), x)
        return block(x, **kw)

    def check_input(self, x: Any) -> None:
        pe = self.patch_embed
        strict = getattr(pe, "strict_img_size", False) and not self.dynamic_img_size
        fixed = tuple(pe.img_size) if strict else None
        check_image_input(x, pe.proj.in_channels, max(pe.patch_size), type(self).__name__, img_size=fixed)

    def token_grid(self, x: torch.Tensor) -> tuple[int, int]:
        """The patch grid of the image batch `x`. Its sides are read one by one, not as `tuple(x.shape[-2:])`:
        under torch.fx tracing the shape is a Proxy, which can be indexed but not iterated."""
        return self.patch_embed.dynamic_feat_size((x.shape[-2], x.shape[-1]))

    def embed_tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        self.check_input(x)
        grid = self.token_grid(x)
        x = self.patch_embed(x)
        x = self._pos_embed(x)
        x = self.patch_drop(x)
        x = self.norm_pre(x)
        return x, grid

    def run_blocks(
        self,
        x: torch.Tensor,
        take_indices: list[int] | None = None,
        stop_at: int | None = None,
        norm: bool = False,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, Any, list[torch.Tensor]]:
        """The token loop from the image: final tokens (before `norm`), final carry, intermediates."""
        x, grid = self.embed_tokens(x)
        carry = self.initial_carry(x)
        kw = dict(attn_mask=attn_mask, is_causal=is_causal) if attn_mask is not None or is_causal else {}
        out = []
        for i, block in enumerate(self.blocks):
            if stop_at is not None and i > stop_at:
                break
            x, carry = self.block_step(i, block, x, carry, grid, **kw)
            if take_indices is not None and i in take_indices:
                out.append(self.norm(x) if norm else x)
        return x, carry, out

    def forward_features(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False
    ) -> torch.Tensor:
        x, _, _ = self.run_blocks(x, attn_mask=attn_mask, is_causal=is_causal)
        return self.norm(x)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        return_prefix_tokens: bool = False,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
        output_dict: bool = False,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
    ):
        """timm's feature API (same arguments and outputs as `VisionTransformer.forward_intermediates`)."""
        if output_fmt not in ("NCHW", "NLC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NLC', got {output_fmt!r}")
        take_indices, max_index = feature_indices(len(self.blocks), indices)
        self.check_input(x)
        b = x.shape[0]
        hh, ww = self.token_grid(x)
        x, _, inter = self.run_blocks(
            x, take_indices, max_index if stop_early else None, norm, attn_mask=attn_mask, is_causal=is_causal
        )
        npt = self.num_prefix_tokens
        prefix = [y[:, :npt] for y in inter] if npt else None
        inter = [y[:, npt:] for y in inter]
        if output_fmt == "NCHW":
            inter = [y.reshape(b, hh, ww, -1).permute(0, 3, 1, 2).contiguous() for y in inter]
        if output_dict:
            result = {"image_intermediates": inter}
            if prefix is not None and return_prefix_tokens:
                result["image_intermediates_prefix"] = prefix
            if not intermediates_only:
                result["image_features"] = self.norm(x)
            return result
        if return_prefix_tokens and prefix is not None:
            inter = list(zip(inter, prefix))
        if intermediates_only:
            return inter
        return self.norm(x), inter

    def load_vanilla_state_dict(self, state_dict: dict[str, torch.Tensor], strict: bool = True) -> list[str]:
        """Load a vanilla timm ViT/DeiT checkpoint of the same size; the new modules keep their init.

        Every key of `state_dict` must exist in the model with the same shape (with `strict`;
        otherwise unknown keys are skipped). Returns the model's keys the checkpoint lacked.
        """
        return load_into_larger_model(self, state_dict, strict)

"""S6LA on Swin and PVTv2 (design note s6la.md §4): counts, shapes, a float64 reference of the
recurrence, warm start, ablations, gradients, timm feature API, autocast, compile/export, input
errors, aggregation."""

import math
import statistics

import pytest
import timm
import torch
import torch.nn.functional as F

import statelayers  # noqa: F401
from statelayers.models import S6LAPyramidVisionTransformerV2, S6LASwinTransformer

COUNTS = {
    "s6la_swin_tiny_patch4_window7_224": 29_645_986,
    "s6la_swin_small_patch4_window7_224": 51_853_234,
    "s6la_swin_base_patch4_window7_224": 91_372_448,
    "s6la_pvt_v2_b0": 3_868_488,
    "s6la_pvt_v2_b1": 14_615_208,
    "s6la_pvt_v2_b2": 26_351_080,
}
# a small Swin: 64 px, 4 stages of widths 16/32/64/128 at 16²/8²/4²/2² tokens
SWIN_SMALL = dict(img_size=64, window_size=4, embed_dim=16, depths=(1, 2, 2, 1), num_heads=(1, 2, 2, 4), num_classes=10)
SWIN = "s6la_swin_tiny_patch4_window7_224"
PVT = "s6la_pvt_v2_b0"


def numel(model):
    return sum(p.numel() for p in model.parameters())


def swin(**kw):
    return timm.create_model(SWIN, **{**SWIN_SMALL, **kw})


def pvt(**kw):
    return timm.create_model(PVT, **{"num_classes": 10, **kw})


def img(b=2, size=64, seed=0):
    return torch.randn(b, 3, size, size, generator=torch.Generator().manual_seed(seed))


# -- counts ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(COUNTS))
def test_exact_parameter_counts(name):
    with torch.device("meta"):
        model = timm.create_model(name)
    assert numel(model) == COUNTS[name]


@pytest.mark.parametrize("name,vanilla", [(SWIN, "swin_tiny_patch4_window7_224"), ("s6la_pvt_v2_b2", "pvt_v2_b2")])
def test_added_params_formula(name, vanilla):
    with torch.device("meta"):
        model, base = timm.create_model(name), timm.create_model(vanilla)
    n = 32
    dims = model.s6la_dims
    added = sum(len(units) * (3 * d * n + 2 * d * math.ceil(d / 8) + d) for d, units in zip(dims, model.s6la))
    added += dims[0] * n + sum(a * b for a, b in zip(dims[:-1], dims[1:]))
    assert numel(model) - numel(base) == added


def test_meta_count_equals_real_count():
    with torch.device("meta"):
        meta = numel(pvt())
    assert meta == numel(pvt())


# -- forward -----------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [swin, pvt])
def test_forward_shapes(make):
    model = make().eval()
    x = img()
    assert model(x).shape == (2, 10)
    feats, h = model.forward_state(x)
    assert h.shape == (2, model.s6la_dims[-1], 32) and h.dtype == torch.float32
    assert model.forward_head(feats, pre_logits=True).shape == (2, model.num_features)

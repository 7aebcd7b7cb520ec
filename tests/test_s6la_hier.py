"""S6LA on Swin and PVTv2 (design note s6la.md §4): counts, shapes, a float64 reference of the
recurrence, warm start, ablations, gradients, timm feature API, autocast, compile/export, input
errors, aggregation."""

import math
import statistics

import pytest
import timm
import timm.optim
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


def randomize(model, seed=0):
    """Non-trivial values everywhere (zero biases or unit LayerNorms would hide bugs)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("A_log") or ".dt_up." in name or name == "h0" or name.startswith("s6la_h0"):
                continue  # keep the SSM's valid ranges
            if name.startswith("s6la_proj."):
                p.add_(0.1 * torch.randn(p.shape, generator=g))
            elif name.startswith("s6la."):
                p.copy_(0.02 * torch.randn(p.shape, generator=g))  # the read-out is multiplicative in depth
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.add_(0.02 * torch.randn(p.shape, generator=g))
    return model


def softplus64(x):
    return torch.log1p(torch.exp(-x.abs())) + x.clamp(min=0)


def reference_pvt(m, x):
    """float64 loop written from design note §4 with only timm's blocks and the raw S6LA weights."""
    t = m.patch_embed(x)  # NHWC
    h = m.h0.expand(x.shape[0], -1, -1)
    for s, stage in enumerate(m.stages):
        if s > 0:
            h = torch.einsum("ed,bdn->ben", m.s6la_proj[s - 1].weight, h)  # P_s along the channel axis
            t = stage.downsample(t)
        b, hh, ww, c = t.shape
        t = t.reshape(b, hh * ww, c)
        for block, unit in zip(stage.blocks, m.s6la[s]):
            t = block(t, (hh, ww))
            p = unit.ssm
            cbar = t.mean(dim=1)  # (B, D): the summary token
            u = cbar / torch.sqrt((cbar * cbar).mean(-1, keepdim=True) + 1e-6)  # c̃ feeds Δ, B and the input
            delta = softplus64(u @ p.dt_down.weight.T @ p.dt_up.weight.T + p.dt_up.bias)
            bvec = u @ p.wB.weight.T  # (B, N)
            a = -torch.exp(p.A_log)
            h = torch.exp(delta[:, :, None] * a) * h + (delta * u)[:, :, None] * bvec[:, None, :]
            t = t + torch.einsum("bln,bdn->bld", t @ unit.wC.weight.T, h)
        t = stage.norm(t).reshape(b, hh, ww, -1).permute(0, 3, 1, 2)
    return m.forward_head(t), h


def test_recurrence_matches_float64_reference():
    m = randomize(pvt()).double().eval()
    x = img().double()
    with torch.no_grad():
        ref, h_ref = reference_pvt(m, x)
        out = m(x)
        _, h = m.forward_state(x)
    assert h.dtype == torch.float64
    torch.testing.assert_close(out, ref, rtol=1e-8, atol=1e-8 * ref.abs().max().item())
    torch.testing.assert_close(h, h_ref, rtol=1e-8, atol=1e-8 * h_ref.abs().max().item())


def test_identity_transition_pads_the_state():
    m = pvt()
    w = m.s6la_proj[0].weight
    assert w.shape == (64, 32)
    torch.testing.assert_close(w, torch.eye(64, 32))
    h = torch.randn(2, 32, 32)
    h1 = m.transition_state(h, 1, h)
    torch.testing.assert_close(h1[:, :32], h)
    assert h1[:, 32:].abs().sum() == 0


# -- warm start ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,vanilla,kw",
    [(SWIN, "swin_tiny_patch4_window7_224", SWIN_SMALL), (PVT, "pvt_v2_b0", dict(num_classes=10))],
)
@pytest.mark.parametrize("fuse", ["mul", "concat"])
def test_warm_start_from_vanilla_equals_vanilla(name, vanilla, kw, fuse):
    torch.manual_seed(0)
    base = randomize(timm.create_model(vanilla, **kw)).eval()
    m = timm.create_model(name, fuse=fuse, **kw)
    randomize(m, seed=1)
    missing = m.load_vanilla_state_dict(base.state_dict())
    assert missing and all(k.startswith(("s6la", "h0")) for k in missing)
    m.eval()
    x = img()
    with torch.no_grad():
        torch.testing.assert_close(m(x), base(x))
        # and the state itself is live: a non-zero read-out changes the logits
        m.readouts()[0].weight.normal_(0, 0.02)
        assert not torch.allclose(m(x), base(x))


def test_warm_start_rejects_other_shapes():
    m = pvt()
    sd = timm.create_model("pvt_v2_b1", num_classes=10).state_dict()
    with pytest.raises(ValueError, match="shape"):
        m.load_vanilla_state_dict(sd)
    with pytest.raises(ValueError, match="does not exist"):
        m.load_vanilla_state_dict({"foo.weight": torch.zeros(1)})


def test_zero_init_readout_is_identity_on_tokens():
    m = pvt(zero_init_readout=True).eval()
    base = timm.create_model("pvt_v2_b0", num_classes=10).eval()
    base.load_state_dict({k: v for k, v in m.state_dict().items() if k in base.state_dict()})
    with torch.no_grad():
        torch.testing.assert_close(m(img()), base(img()))


# -- ablations -----------------------------------------------------------------------------------


def test_transition_reset():
    m = randomize(pvt(transition="reset")).eval()
    assert m.s6la_proj is None and [tuple(p.shape) for p in m.s6la_h0] == [(64, 32), (160, 32), (256, 32)]
    assert numel(m) == numel(pvt()) - sum(a * b for a, b in zip((32, 64, 160), (64, 160, 256))) + 32 * (64 + 160 + 256)
    x = img()
    with torch.no_grad():
        # the state entering stage s is the learned h0_s, whatever left stage s-1
        h = m.transition_state(torch.randn(2, 64, 32), 2, x)
        torch.testing.assert_close(h, m.s6la_h0[1].expand(2, -1, -1))
    m.train()
    F.cross_entropy(m(x), torch.tensor([1, 2])).backward()
    assert all(p.grad.abs().sum() > 0 for p in m.s6la_h0)
    assert "s6la_h0.2" in m.no_weight_decay()


def test_selective_off_makes_delta_input_independent():
    m = pvt(selective=False).eval()
    unit = m.s6la[0][0]
    assert not hasattr(unit.ssm, "wB") and unit.ssm.dt_bias.shape == (32,)
    rows_a, rows_b = m.state_diagnostics(img(seed=1)), m.state_diagnostics(3 * img(seed=2))
    assert [r["delta_mean"] for r in rows_a] == pytest.approx([r["delta_mean"] for r in rows_b])
    assert "s6la.1.0.ssm.dt_bias" in m.no_weight_decay()
    assert m(img()).shape == (2, 10)


def test_h0_modes():
    m = pvt()
    assert m.h0.shape == (32, 32)
    assert 0.75 * math.sqrt(2 / 32) < m.h0.std().item() < 1.25 * math.sqrt(2 / 32)
    x = img()
    for mode in ("random", "zeros"):
        m = pvt(h0=mode)
        assert m.h0 is None and "h0" not in dict(m.named_parameters())
        m.eval()
        h = m.initial_state(x)
        assert h.shape == (2, 32, 32) and h.abs().sum() == 0
        m.train()
        h = m.initial_state(x)
        if mode == "random":
            assert 0.75 * math.sqrt(2 / 32) < h.std().item() < 1.25 * math.sqrt(2 / 32)
            assert not torch.equal(h, m.initial_state(x))  # re-drawn each forward
        else:
            assert h.abs().sum() == 0
    assert numel(pvt(h0="random")) == numel(pvt()) - 32 * 32
    # with "random" and reset transitions every stage starts from a fresh draw
    m = pvt(h0="random", transition="reset").train()
    assert m.s6la_h0 is None and m.transition_state(None, 2, x).std() > 0.1


def test_fuse_concat_and_d_state():
    m = pvt(fuse="concat")
    assert m.s6la[0][0].wcat.weight.shape == (32, 32) and m(img()).shape == (2, 10)
    for n in (8, 16):
        m = swin(d_state=n).eval()
        assert m.h0.shape == (16, n) and m.s6la[2][1].ssm.A_log.shape == (64, n)
        assert m.forward_state(img())[1].shape == (2, 128, n)
    with torch.device("meta"):
        assert numel(timm.create_model(PVT, d_state=16)) < COUNTS[PVT]


def test_bad_options():
    for kw, msg in [(dict(h0="x"), "h0"), (dict(transition="x"), "transition"), (dict(fuse="x"), "fuse"),
                    (dict(d_state=0), "d_state")]:
        with pytest.raises(ValueError, match=msg):
            pvt(**kw)
        with pytest.raises(ValueError, match=msg):
            swin(**kw)


# -- training ------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [swin, pvt])
def test_gradients_reach_state_parameters(make):
    m = make().train()
    F.cross_entropy(m(img()), torch.tensor([1, 2])).backward()
    names = ["h0", "s6la_proj.0.weight", "s6la_proj.2.weight"]
    for s in (0, 3):
        names += [f"s6la.{s}.0.ssm.{p}" for p in ("A_log", "dt_up.weight", "dt_up.bias", "dt_down.weight", "wB.weight")]
        names += [f"s6la.{s}.0.wC.weight"]
    for name in names:
        g = m.get_parameter(name).grad
        assert g is not None and g.abs().sum() > 0, name


@pytest.mark.parametrize("make", [swin, pvt])
def test_no_weight_decay_names_exist(make):
    m = make()
    names = m.no_weight_decay()
    params = dict(m.named_parameters())
    for n in ["h0", "s6la.0.0.ssm.A_log", "s6la.3.0.ssm.dt_up.bias"]:
        assert n in names and n in params
    assert set(names) <= set(params) | {n for n, _ in m.named_buffers()}
    groups = timm.optim.create_optimizer_v2(m, "adamw", lr=1e-3, weight_decay=0.05).param_groups
    no_wd = {id(p) for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    assert id(m.h0) in no_wd and id(m.s6la[1][0].ssm.A_log) in no_wd
    groups = timm.optim.param_groups_layer_decay(m, weight_decay=0.05, no_weight_decay_list=names)
    assert sum(len(g["params"]) for g in groups) == len(params)


@pytest.mark.parametrize("make", [swin, pvt])
def test_grad_checkpointing_matches(make):
    m = randomize(make()).train()
    m.set_grad_checkpointing(False)
    for mod in m.modules():
        if hasattr(mod, "drop_prob"):
            mod.drop_prob = 0.0
    x = img()
    ref = m(x)
    m.set_grad_checkpointing(True)
    out = m(x)
    torch.testing.assert_close(out, ref)
    out.sum().backward()
    assert m.h0.grad is not None


# -- timm integration ----------------------------------------------------------------------------


@pytest.mark.parametrize("make,dims", [(swin, (16, 32, 64, 128)), (pvt, (32, 64, 160, 256))])
def test_features_only(make, dims):
    f = make(features_only=True)
    out = f(img())
    assert [t.shape[1] for t in out] == list(dims) == f.feature_info.channels()
    assert [t.shape[-1] for t in out] == [16, 8, 4, 2]
    f = make(features_only=True, out_indices=(1,))
    assert len(f.model.s6la) == 2 and [t.shape[1] for t in f(img())] == [dims[1]]
    m = randomize(make()).eval()
    with torch.no_grad():
        final, inter = m.forward_intermediates(img())
        torch.testing.assert_close(final, m.forward_features(img()))
        assert len(inter) == 4
        early = m.forward_intermediates(img(), indices=[1], stop_early=True, intermediates_only=True)
        torch.testing.assert_close(early[0], inter[1])


@pytest.mark.parametrize("make", [swin, pvt])
def test_bf16_autocast_keeps_state_float32(make):
    m = make().train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        feats, h = m.forward_state(img())
        logits = m.forward_head(feats)
        rows = m.state_diagnostics(img())
    assert h.dtype == torch.float32 and logits.dtype == torch.bfloat16
    assert len(rows) == sum(len(u) for u in m.s6la) and all(r["rms_decay"] > 0 for r in rows)


@pytest.mark.parametrize("make", [swin, pvt])
def test_compile_and_export_match_eager(make):
    m = randomize(make()).eval()
    x = img()
    with torch.no_grad():
        ref = m(x)
        torch.testing.assert_close(torch.compile(m, backend="eager")(x), ref)
    ep = torch.export.export(m, (x,))
    torch.testing.assert_close(ep.module()(x), ref)


@pytest.mark.parametrize("make", [swin, pvt])
def test_bad_inputs_raise_value_error(make):
    m = make().eval()
    cases = [
        (torch.randn(2, 1, 64, 64), "channel"),
        (torch.randn(3, 64, 64), "4-D"),
        (torch.randint(0, 255, (2, 3, 64, 64)), "floating"),
        ([1, 2], "torch.Tensor"),
    ]
    for x, msg in cases:
        with pytest.raises(ValueError, match=msg):
            m(x)
    if make is swin:
        with pytest.raises(ValueError, match="built for 64x64"):
            m(torch.randn(1, 3, 96, 96))
        with pytest.raises(ValueError, match="divisible"):
            swin(dynamic_img_size=True)(torch.randn(1, 3, 66, 66))
        assert swin(dynamic_img_size=True).eval()(torch.randn(1, 3, 48, 80)).shape == (1, 10)
    else:
        with pytest.raises(ValueError, match="spatial reduction"):
            m(torch.randn(1, 3, 16, 16))
        assert m(torch.randn(1, 3, 48, 80)).shape == (1, 10)


# -- the layers actually enter the state ---------------------------------------------------------


@pytest.mark.parametrize("make,kw", [(swin, dict(depths=(2, 2, 6, 2), num_heads=(1, 2, 2, 4))), (pvt, {})])
def test_aggregation_after_training(make, kw):
    # Swin with the Swin-T block layout (2/2/6/2): in the first stage the input term is a small share of
    # the decayed h0 (about 0.02-0.2, also in the full Swin-T/PVTv2-B2 at init); the median is over all blocks
    torch.manual_seed(0)
    m = make(**kw)
    assert isinstance(m, (S6LASwinTransformer, S6LAPyramidVisionTransformerV2))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 3, 64, 64, generator=g)
    y = torch.randint(0, 10, (16,), generator=g)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    m.train()
    for _ in range(5):
        opt.zero_grad()
        F.cross_entropy(m(x), y).backward()
        opt.step()
    m.eval()
    rows = m.state_diagnostics(x)
    share = statistics.median(r["inject_over_decay"] for r in rows)
    assert share > 0.25, share
    with torch.no_grad():
        _, h = m.forward_state(x)
    spread = h.std(dim=0).square().mean().sqrt() / h.square().mean().sqrt()
    assert spread > 0.3, spread.item()


def test_timm_reinit_keeps_the_s6la_init():
    m = swin(zero_init_readout=True)
    m.init_weights()  # timm's generic ViT init must not clobber the S6LA init
    for units in m.s6la:
        for unit in units:
            delta = F.softplus(unit.ssm.dt_up.bias)
            assert delta.min() >= 1e-4 - 1e-7 and delta.max() <= 1.0 + 1e-6 and delta.std() > 0
            assert unit.wC.weight.abs().sum() == 0
            torch.testing.assert_close(unit.ssm.A_log[0].exp(), torch.arange(1.0, 33.0))
    torch.testing.assert_close(m.s6la_proj[1].weight, torch.eye(64, 32))


@pytest.mark.parametrize("name,vanilla", [(SWIN, "swin_tiny_patch4_window7_224"), (PVT, "pvt_v2_b0")])
def test_full_size_warm_start_equals_vanilla(name, vanilla):
    torch.manual_seed(0)
    base = timm.create_model(vanilla).eval()
    m = timm.create_model(name)
    m.load_vanilla_state_dict(base.state_dict())
    m.eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        out = m(x)
        assert out.shape == (1, 1000)
        torch.testing.assert_close(out, base(x))

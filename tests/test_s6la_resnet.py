import io
import itertools

import pytest
import timm
import torch
import torch.nn.functional as F

import statelayers  # noqa: F401
from statelayers.models import S6LAResNet
from statelayers.tools.profile import count_macs


def numel(m):
    return sum(p.numel() for p in m.parameters())


def perturb_bn(model, seed=0):
    """Give every BN non-trivial statistics and affine params (zero-init last BN would hide bugs)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model


# design note §6 counts (numel, N=32, 1000 classes) include an update after the last block. Nothing
# reads that update unless the head reads h, so it is not built: 2N²+2N = 2,112 fewer parameters.
DESIGN_COUNTS = {18: 12_290_120, 34: 22_949_704, 50: 25_834_568, 101: 45_001_864, 152: 60_804_296}
PAPER_M = {50: 25.8, 101: 45.0, 152: 60.8}
LAST_UPDATE = 2 * 32 * 32 + 2 * 32


@pytest.mark.parametrize("depth", [18, 34, 50, 101, 152])
def test_exact_parameter_counts(depth):
    m = timm.create_model(f"s6la_resnet{depth}")
    assert numel(m) == DESIGN_COUNTS[depth] - LAST_UPDATE
    if depth in PAPER_M:
        assert round(numel(m) / 1e6, 1) == PAPER_M[depth]
    # with the RLA-style head the last update is read, so it is built
    hc = timm.create_model(f"s6la_resnet{depth}", head_concat=True)
    assert numel(hc) == DESIGN_COUNTS[depth] + 32 * 1000 + 2 * 32  # fc over 2048+N, BN(N)


def test_added_parameters_follow_the_design_formula():
    n = 32
    van = timm.create_model("resnet50")
    s6 = timm.create_model("s6la_resnet50")
    widths = [b.conv1.out_channels for st in (van.layer1, van.layer2, van.layer3, van.layer4) for b in st]
    stage_chs = [256, 512, 1024, 2048]
    extra = n * sum(widths) + n * sum(stage_chs) + (len(widths) - 1) * (2 * n * n + 2 * n) + n
    assert numel(s6) - numel(van) == extra


@pytest.mark.parametrize("d_state", [16, 64])
def test_d_state_changes_counts_and_state_width(d_state):
    base = timm.create_model("s6la_cifar_resnet20", d_state=16)
    m = timm.create_model("s6la_cifar_resnet20", d_state=d_state)
    _, h = m.forward_state(torch.randn(2, 1, 28, 28))
    assert h.shape == (2, d_state, 7, 7)
    blocks = 9
    planes = [16] * 3 + [32] * 3 + [64] * 3
    stage = [16, 32, 64]

    def added(n):
        return 9 * n * sum(planes) + n * sum(stage) + (blocks - 1) * (2 * n * n + 2 * n) + n

    assert numel(m) - numel(base) == added(d_state) - added(16)


def hand_forward(model, x):
    """Independent float64 reference of the S6LA-ResNet recurrence (BasicBlock, eval mode)."""
    def bn(m, t):
        return F.batch_norm(t, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)

    x = F.relu(bn(model.bn1, F.conv2d(x, model.conv1.weight, padding=1)))
    h = model.h0.expand(x.shape[0], -1, x.shape[2], x.shape[3])
    blocks = [(s, b) for s, st in enumerate((model.layer1, model.layer2, model.layer3)) for b in st]
    for s, b in blocks:
        z = torch.cat([x, h], 1)
        o = F.relu(bn(b.bn1, F.conv2d(z, b.conv1.weight, stride=b.conv1.stride, padding=1)))
        o = bn(b.bn2, F.conv2d(o, b.conv2.weight, padding=1))
        sc = x if b.downsample is None else bn(b.downsample[1], F.conv2d(x, b.downsample[0].weight, stride=2))
        x = F.relu(o + sc)
        if h.shape[-1] != x.shape[-1]:
            h = F.avg_pool2d(h, 2, 2, ceil_mode=True, count_include_pad=False)
        if not hasattr(b, "s6la"):
            continue
        u = F.conv2d(o, model.conv_out[s].weight)
        u = u / torch.sqrt(u.pow(2).mean(dim=(1, 2, 3), keepdim=True) + 1e-6)
        zz = u.mean(dim=(2, 3))
        p = b.s6la
        delta = F.softplus(zz @ p.dt_up.weight.T + p.dt_up.bias)
        bb = zz @ p.wB.weight.T
        a = -torch.exp(p.A_log)
        h = torch.exp(delta * a)[:, :, None, None] * h + (delta * bb)[:, :, None, None] * u
    return model.fc(x.mean(dim=(2, 3))), h


def test_depth_recurrence_equals_float64_loop_over_blocks():
    torch.manual_seed(0)
    m = perturb_bn(timm.create_model("s6la_cifar_resnet20", zero_init_last=False)).double().eval()
    x = torch.randn(3, 1, 29, 27, dtype=torch.float64)  # odd sizes exercise the ceil-mode pooling
    ref_logits, ref_h = hand_forward(m, x)
    with torch.no_grad():
        feats, h = m.forward_state(x)
        logits = m.forward_head(feats)
    assert torch.allclose(logits, ref_logits, rtol=1e-5, atol=1e-6)
    assert torch.allclose(h.double(), ref_h, rtol=1e-4, atol=1e-5)  # the state itself is float32 by design
    # and the state actually depends on the input image
    assert (ref_h[0] - ref_h[1]).abs().max() > 1e-3


def test_gradients_reach_every_s6la_parameter():
    torch.manual_seed(0)
    m = timm.create_model("s6la_cifar_resnet20", zero_init_last=False)
    loss = F.cross_entropy(m(torch.randn(4, 1, 28, 28)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    names = [n for n, _ in m.named_parameters() if "s6la" in n or n.startswith(("h0", "conv_out"))]
    assert any(n == "h0" for n in names) and any("A_log" in n for n in names)
    assert any("dt_up" in n for n in names) and any("wB" in n for n in names)
    for n, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reaches {n}"


@pytest.mark.parametrize(
    "vanilla,s6la,size,chans",
    [("resnet50", "s6la_resnet50", 64, 3), ("cifar_resnet20", "s6la_cifar_resnet20", 28, 1)],
)
def test_warm_start_from_vanilla_gives_identical_logits(vanilla, s6la, size, chans):
    torch.manual_seed(0)
    van = perturb_bn(timm.create_model(vanilla, num_classes=7, in_chans=chans)).eval()
    s6 = timm.create_model(s6la, num_classes=7, in_chans=chans).eval()
    missing = s6.load_vanilla_state_dict(van.state_dict())
    assert "h0" in missing and not any(k.startswith("fc") for k in missing)
    x = torch.randn(2, chans, size + 1, size)
    with torch.no_grad():
        assert torch.allclose(s6(x), van(x), rtol=1e-4, atol=1e-5)
    # the new conv1 input slots are zero, the old ones are the vanilla weights
    w = s6.layer1[0].conv1.weight
    assert torch.equal(w[:, : van.layer1[0].conv1.in_channels], van.layer1[0].conv1.weight)
    assert w[:, van.layer1[0].conv1.in_channels :].abs().sum() == 0


def test_warm_start_rejects_a_mismatched_checkpoint():
    s6 = timm.create_model("s6la_cifar_resnet20")
    van = timm.create_model("cifar_resnet56")
    with pytest.raises(ValueError, match="does not exist"):
        s6.load_vanilla_state_dict(van.state_dict())
    van10 = timm.create_model("cifar_resnet20", num_classes=5)
    with pytest.raises(ValueError, match="fc.weight"):
        s6.load_vanilla_state_dict(van10.state_dict())


def test_h0_random_redraws_in_training_and_is_zero_in_eval():
    torch.manual_seed(0)
    m = timm.create_model("s6la_cifar_resnet20", h0="random", zero_init_last=False)
    assert m.h0 is None and "h0" not in dict(m.named_parameters())
    x = torch.randn(2, 1, 28, 28)
    m.train()
    assert not torch.allclose(m.initial_state(x), m.initial_state(x))
    m.eval()
    z = timm.create_model("s6la_cifar_resnet20", h0="zeros", zero_init_last=False).eval()
    z.load_state_dict(m.state_dict())
    with torch.no_grad():
        assert torch.equal(m(x), z(x))
        assert m.initial_state(x).abs().sum() == 0
    assert numel(m) == numel(timm.create_model("s6la_cifar_resnet20")) - 16


def test_selective_off_makes_delta_and_b_constant():
    m = timm.create_model("s6la_cifar_resnet20", selective=False, zero_init_last=False).eval()
    d1 = [r["delta_mean"] for r in m.state_diagnostics(torch.randn(2, 1, 28, 28))]
    d2 = [r["delta_mean"] for r in m.state_diagnostics(torch.randn(2, 1, 28, 28) * 5)]
    assert d1 == d2
    on = timm.create_model("s6la_cifar_resnet20", zero_init_last=False).eval()
    e1 = [r["delta_mean"] for r in on.state_diagnostics(torch.randn(2, 1, 28, 28))]
    e2 = [r["delta_mean"] for r in on.state_diagnostics(torch.randn(2, 1, 28, 28) * 5)]
    assert e1 != e2
    n, blocks = 16, 8  # updates built: 9 blocks minus the last
    assert numel(on) - numel(m) == blocks * ((2 * n * n + 2 * n) - 3 * n)


def test_x_to_h_off_carries_h0_unchanged():
    m = timm.create_model("s6la_cifar_resnet20", x_to_h=False, zero_init_last=False).eval()
    assert m.conv_out is None and not any("s6la" in n for n, _ in m.named_parameters())
    with torch.no_grad():
        _, h1 = m.forward_state(torch.randn(2, 1, 28, 28))
        _, h2 = m.forward_state(torch.randn(2, 1, 28, 28))
    assert torch.equal(h1, h2)
    assert torch.allclose(h1[0, :, 0, 0], m.h0.flatten())


def test_head_concat_reads_the_final_state():
    m = timm.create_model("s6la_cifar_resnet20", head_concat=True, zero_init_last=False).eval()
    assert m.fc.in_features == 64 + 16 and hasattr(m.layer3[-1], "s6la")
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        y = m(x)
        m.layer3[-1].s6la.wB.weight.mul_(3.0)  # changes only the last update
        assert not torch.allclose(m(x), y)


@pytest.mark.parametrize(
    "bad,match",
    [
        (torch.randn(1, 1, 64, 64), "input channel"),
        (torch.randn(3, 64, 64), "4-D"),
        (torch.randn(1, 3, 16, 16), "at least 32"),
        (torch.zeros(1, 3, 64, 64, dtype=torch.uint8), "floating-point"),
    ],
)
def test_bad_input_raises_value_error_naming_the_problem(bad, match):
    m = timm.create_model("s6la_resnet18").eval()
    with pytest.raises(ValueError, match=match):
        m(bad)


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="h0"):
        timm.create_model("s6la_cifar_resnet20", h0="learnt")
    with pytest.raises(ValueError, match="u_norm"):
        timm.create_model("s6la_cifar_resnet20", u_norm="layer")


@pytest.mark.parametrize("size", [(32, 32), (193, 225), (225, 320)])
def test_any_input_size_at_least_32(size):
    m = timm.create_model("s6la_resnet18", num_classes=5).eval()
    with torch.no_grad():
        assert m(torch.randn(1, 3, *size)).shape == (1, 5)


def test_features_only_and_forward_intermediates():
    m = timm.create_model("s6la_resnet50", features_only=True, out_indices=(1, 2, 3, 4)).eval()
    assert m.feature_info.channels() == [256, 512, 1024, 2048]
    assert m.feature_info.reduction() == [4, 8, 16, 32]
    with torch.no_grad():
        feats = m(torch.randn(1, 3, 97, 64))
    assert [f.shape[1] for f in feats] == [256, 512, 1024, 2048]
    assert [tuple(f.shape[-2:]) for f in feats] == [(25, 16), (13, 8), (7, 4), (4, 2)]
    full = timm.create_model("s6la_cifar_resnet20", zero_init_last=False).eval()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        final, inter = full.forward_intermediates(x)
        assert torch.allclose(final, full.forward_features(x))
    assert [t.shape[1] for t in inter] == [16, 16, 32, 64]


def test_channels_last_and_state_dict_round_trip():
    torch.manual_seed(0)
    m = perturb_bn(timm.create_model("s6la_cifar_resnet20", zero_init_last=False)).eval()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        ref = m(x)
        buf = io.BytesIO()
        torch.save(m.state_dict(), buf)
        buf.seek(0)
        m2 = timm.create_model("s6la_cifar_resnet20").eval()
        m2.load_state_dict(torch.load(buf, weights_only=True))
        assert torch.equal(m2(x), ref)
        m2 = m2.to(memory_format=torch.channels_last)
        x_cl = x.to(memory_format=torch.channels_last)
        assert torch.allclose(m2(x_cl), ref, rtol=1e-4, atol=1e-5)
        # the state follows the model's layout (the update and the h-part GEMM then need no layout copies)
        feats, h = m2.forward_state(x_cl)
        assert h.is_contiguous(memory_format=torch.channels_last) and not h.is_contiguous()
        assert m.forward_state(x)[1].shape == h.shape


def test_bf16_autocast_keeps_the_state_in_float32():
    torch.manual_seed(0)
    m = perturb_bn(timm.create_model("s6la_cifar_resnet20", zero_init_last=False)).eval()
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        ref = m(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            feats, h = m.forward_state(x)
            out = m.forward_head(feats)
    assert h.dtype == torch.float32 and out.dtype == torch.bfloat16
    assert (out.float() - ref).abs().max() < 0.1 * ref.abs().max()


def test_torch_compile_matches_eager():
    torch.manual_seed(0)
    m = perturb_bn(timm.create_model("s6la_cifar_resnet20", zero_init_last=False)).eval()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        ref = m(x)
        out = torch.compile(m)(x)
    assert torch.allclose(out, ref, rtol=1e-4, atol=1e-4)


def test_torch_export_matches_eager():
    torch.manual_seed(0)
    m = perturb_bn(timm.create_model("s6la_cifar_resnet20", zero_init_last=False)).eval()
    x = torch.randn(2, 1, 28, 28)
    ep = torch.export.export(m, (x,))
    with torch.no_grad():
        assert torch.allclose(ep.module()(x), m(x), rtol=1e-5, atol=1e-5)


def test_no_weight_decay_lists_the_ssm_parameters():
    m = timm.create_model("s6la_cifar_resnet20")
    nwd = m.no_weight_decay()
    params = dict(m.named_parameters())
    assert "h0" in nwd and "layer1.0.s6la.A_log" in nwd and "layer1.0.s6la.dt_up.bias" in nwd
    assert nwd <= set(params)


def test_is_a_timm_resnet_subclass():
    assert issubclass(S6LAResNet, timm.models.resnet.ResNet)


def test_grad_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    m = perturb_bn(timm.create_model("s6la_cifar_resnet20", zero_init_last=False))
    x, y = torch.randn(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])

    def grads():
        m.zero_grad()
        F.cross_entropy(m(x), y).backward()
        return {n: p.grad.clone() for n, p in m.named_parameters()}

    m.train()  # checkpointing only acts in training; batch-statistics BN is deterministic here
    ref = grads()
    m.set_grad_checkpointing(True)
    got = grads()
    assert all(torch.allclose(got[n], ref[n], rtol=1e-5, atol=1e-7) for n in ref)


@pytest.mark.parametrize("kernel,stride,bias", [(1, 1, False), (1, 1, True), (3, 2, False)])
def test_conv_on_concat_equals_the_conv_of_the_concatenation(kernel, stride, bias):
    # 1×1 stride-1 convs take the GEMM-accumulate path (in place without autograd), the others two convs
    from statelayers.models._resnet_base import conv_on_concat

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(12, 8, kernel, stride=stride, padding=kernel // 2, bias=bias).double()
    x = torch.randn(2, 9, 11, 13, dtype=torch.float64, requires_grad=True)
    h = torch.randn(2, 3, 11, 13, dtype=torch.float64, requires_grad=True)
    ref = conv(torch.cat([x, h], dim=1))
    params = (x, h, *conv.parameters())
    ref_grads = torch.autograd.grad(ref.square().sum(), params)
    for x_fmt, h_fmt in itertools.product((torch.contiguous_format, torch.channels_last), repeat=2):
        xf, hf = x.contiguous(memory_format=x_fmt), h.contiguous(memory_format=h_fmt)
        out = conv_on_concat(conv, xf, hf)
        assert torch.allclose(out, ref, rtol=1e-12, atol=1e-12)
        grads = torch.autograd.grad(out.square().sum(), params)
        for g, r in zip(grads, ref_grads):
            assert torch.allclose(g, r, rtol=1e-10, atol=1e-10)
        with torch.no_grad():
            assert torch.allclose(conv_on_concat(conv, xf, hf), ref, rtol=1e-12, atol=1e-12)


def test_conv_on_concat_pointwise_gemm_matches_the_conv_in_float32_both_layouts():
    from statelayers.models._resnet_base import conv_on_concat

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(64 + 32, 48, 1, bias=False)
    x, h = torch.randn(3, 64, 9, 7), torch.randn(3, 32, 9, 7)
    ref = conv(torch.cat([x, h], dim=1))
    for fmt in (torch.contiguous_format, torch.channels_last):
        with torch.no_grad():
            out = conv_on_concat(conv, x.contiguous(memory_format=fmt), h.contiguous(memory_format=fmt))
        assert out.is_contiguous(memory_format=fmt)  # the next conv runs in the caller's layout
        assert torch.allclose(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["s6la_resnet50", "rla_resnet50"])
def test_grad_free_forward_equals_the_autograd_forward(name):
    # without autograd the residual add reuses the branch output's memory; with it, it must not
    torch.manual_seed(0)
    m = perturb_bn(timm.create_model(name, zero_init_last=False)).double().eval()
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        ref = m(x)
    out = m(x)
    assert torch.equal(out.detach(), ref)
    out.sum().backward()  # the saved branch outputs were not modified in place


def _folded_model(fmt=torch.contiguous_format, name="s6la_resnet50", **kwargs):
    torch.manual_seed(0)
    m = timm.create_model(name, zero_init_last=False, num_classes=10, **kwargs)
    return perturb_bn(m).double().eval().to(memory_format=fmt)


@pytest.mark.parametrize(
    "fmt,name,kwargs,folds",
    [
        (torch.contiguous_format, "s6la_resnet50", {}, 15),  # every block with an update: all but the last
        (torch.channels_last, "s6la_resnet50", {}, 15),
        (torch.contiguous_format, "s6la_resnet50", {"head_concat": True}, 16),  # the last block updates too
        (torch.contiguous_format, "s6la_resnet18", {}, 0),  # BasicBlock: a 3×3 last conv is not folded
    ],
)
def test_reparameterized_inference_equals_the_plain_model(fmt, name, kwargs, folds):
    m = _folded_model(fmt, name, **kwargs)
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64).contiguous(memory_format=fmt)
    with torch.no_grad():
        ref = m(x)
        out = m.reparameterize()(x)
    assert len(m._folds) == folds
    assert torch.allclose(out, ref, rtol=1e-10, atol=1e-12)


def test_the_fold_is_skipped_with_autograd_and_refreshed_after_training():
    m = _folded_model().reparameterize()
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        m(x)
    # eval with autograd (frozen-BN fine-tuning, CAM): the plain projection runs, so its weights get gradients
    m(x).square().sum().backward()
    assert all(conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0 for conv in m.conv_out)
    # a training step changes the weights and the BN statistics the fold was computed from
    m.train()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    opt.zero_grad()
    m(x).square().sum().backward()
    opt.step()
    m.eval()
    with torch.no_grad():
        out = m(x)
        m.fold_projection = False
        ref = m(x)
    assert torch.allclose(out, ref, rtol=1e-10, atol=1e-12)


def test_the_fold_removes_three_quarters_of_the_projection_macs():
    # conv_out reads the block output (4P channels) at N×4P MACs per pixel; folded it reads the
    # Bottleneck's hidden tensor (P channels) at N×P
    m = _folded_model().float()
    plain = count_macs(m, (3, 224, 224))
    folded = count_macs(m.reparameterize(), (3, 224, 224), fake=True)
    n, planes, sizes = 32, (64, 128, 256, 512), (56, 28, 14, 7)
    updates = (3, 4, 6, 2)  # ResNet-50's blocks per stage; the last block has no update
    saved = sum(k * n * 3 * p * s * s for k, p, s in zip(updates, planes, sizes))
    assert plain - folded == saved  # reparameterize() computed the folds: the forward does not pay for them
    assert count_macs(m, (3, 224, 224)) == folded
    m.layer1[0].bn3.running_var.add_(1.0)  # stale: the next forward recomputes that block's fold...
    folded_again = count_macs(m, (3, 224, 224), fake=True)
    assert folded_again - folded == n * 256 * 64  # ...at N×4P×P MACs, not cached from a shape-only pass
    assert count_macs(m, (3, 224, 224)) == folded_again  # a real pass recomputes (and caches) it


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
def test_macs_that_s6la_adds_to_resnet50_in_closed_form(fmt):
    # widened conv1 (N→P at the block's input resolution) + conv_out (4P→N) + Δ and B projections (N→N each).
    # Counted without autograd, where the h-part is an in-place GEMM (baddbmm_/addmm_) that torch's
    # FlopCounterMode does not count by itself: this test caught that
    n, planes, res = 32, (64, 128, 256, 512), (56, 28, 14, 7)
    blocks, updates = (3, 4, 6, 3), (3, 4, 6, 2)
    # a stage's first block runs conv1 at the previous stage's resolution (timm strides in conv2)
    in_res = [[res[s - 1] if s and j == 0 else res[s] for j in range(blocks[s])] for s in range(4)]
    widen = n * sum(planes[s] * r * r for s in range(4) for r in in_res[s])
    proj = n * sum(k * 4 * p * r * r for k, p, r in zip(updates, planes, res))
    select = sum(updates) * 2 * n * n
    s6la = timm.create_model("s6la_resnet50").to(memory_format=fmt)
    vanilla = timm.create_model("resnet50").to(memory_format=fmt)
    added = count_macs(s6la, (3, 224, 224), fake=True) - count_macs(vanilla, (3, 224, 224), fake=True)
    assert added == widen + proj + select


def test_macs_of_the_no_selection_ablation_can_be_counted():
    # the constant B used to be an expand() of a parameter: under no_grad that view claims requires_grad
    # without a grad_fn, and FlopCounterMode's module tracker raised on it
    from statelayers.tools.profile import count_macs

    n, updates = 16, 8  # 9 blocks, the last one without an update
    m = timm.create_model("s6la_cifar_resnet20", selective=False)
    full = count_macs(timm.create_model("s6la_cifar_resnet20"), (1, 28, 28))
    assert full - count_macs(m, (1, 28, 28)) == updates * 2 * n * n  # only the Δ and B projections go

"""RLA-Net and MRLA-light baselines on timm ResNets (design note s6la.md §5)."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F

import statelayers  # noqa: F401  (registers the models)
from statelayers.models.mrla_resnet import MRLALightAttention, MRLAResNet, eca_kernel_size
from statelayers.models.rla_resnet import RLAResNet

CIFAR = ("rla_cifar_resnet20", "mrla_cifar_resnet20")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These tensors are tiny: intra-op threads only add OpenMP spin-waits, which on a busy
    2-core machine made this file ~10x slower (127 s against 13 s)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def randomize_norms(model: nn.Module, seed: int = 0) -> None:
    """Random BN affine and running statistics, so that zero-initialised BNs don't hide a path."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.weight.data = 0.5 + torch.rand(c, generator=g).to(m.weight)
            m.bias.data = 0.2 * torch.randn(c, generator=g).to(m.bias)
            m.running_mean.copy_(0.2 * torch.randn(c, generator=g))
            m.running_var.copy_(0.5 + torch.rand(c, generator=g))


# -- counts (design note §6), built on the meta device: no memory, no init cost ------------------


@pytest.mark.parametrize(
    "name, count",
    [
        ("rla_resnet50", 25_870_696),
        ("rla_resnet101", 45_003_176),
        ("rla_resnet152", 60_770_792),
        ("mrla_resnet50", 25_738_452),
        ("mrla_resnet101", 44_939_646),
        ("mrla_resnet152", 60_767_784),
    ],
)
def test_imagenet_param_counts(name, count):
    with torch.device("meta"):
        model = timm.create_model(name)
    assert n_params(model) == count


def test_eca_kernel_sizes():
    assert [eca_kernel_size(c) for c in (16, 32, 64, 256, 512, 1024, 2048)] == [3, 3, 3, 5, 5, 5, 7]


def test_mrla_heads():
    model = timm.create_model("mrla_resnet50")
    assert [s[0].mrla.mrla.heads for s in model.stages()] == [8, 16, 32, 64]
    small = timm.create_model("mrla_cifar_resnet20")
    assert [s[0].mrla.mrla.heads for s in small.stages()] == [1, 1, 2]


# -- shapes --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["rla_resnet50", "mrla_resnet50"])
def test_imagenet_forward_shapes(name):
    model = timm.create_model(name, num_classes=7).eval()
    extra = model.rla_channel if isinstance(model, RLAResNet) else 0
    with torch.no_grad():
        # 224 and an odd size (97 -> 49 -> 25 -> 13 -> 7 -> 4); one forward each, the 2nd split in two
        assert model(torch.randn(1, 3, 224, 224)).shape == (1, 7)
        feats = model.forward_features(torch.randn(1, 3, 97, 97))
        assert feats.shape == (1, 2048 + extra, 4, 4)
        assert model.forward_head(feats).shape == (1, 7)


@pytest.mark.parametrize("name", [f"{f}_cifar_resnet{d}" for f in ("rla", "mrla") for d in (20, 56, 110)])
def test_cifar_forward_shapes(name):
    model = timm.create_model(name, in_chans=1).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, 28, 28))
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", CIFAR)
def test_input_validation(name):
    model = timm.create_model(name, in_chans=1)
    with pytest.raises(ValueError, match="input channel"):
        model(torch.randn(1, 3, 28, 28))
    with pytest.raises(ValueError, match="4-D"):
        model(torch.randn(1, 28, 28))
    with pytest.raises(ValueError, match="at least"):
        model(torch.randn(1, 1, 4, 4))


# -- timm feature API ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["rla_resnet50", "mrla_resnet50"])
def test_imagenet_features_only(name):
    model = timm.create_model(name, features_only=True, out_indices=(1, 2, 3, 4)).eval()
    assert model.feature_info.channels() == [256, 512, 1024, 2048]
    assert model.feature_info.reduction() == [4, 8, 16, 32]
    with torch.no_grad():
        feats = model(torch.randn(1, 3, 96, 96))
    assert [tuple(f.shape) for f in feats] == [(1, 256, 24, 24), (1, 512, 12, 12), (1, 1024, 6, 6), (1, 2048, 3, 3)]


@pytest.mark.parametrize("name", CIFAR)
def test_cifar_features_only(name):
    model = timm.create_model(name, in_chans=1, features_only=True).eval()
    assert model.feature_info.channels() == [16, 16, 32, 64]
    assert model.feature_info.reduction() == [1, 1, 2, 4]
    with torch.no_grad():
        feats = model(torch.randn(2, 1, 28, 28))
    assert [tuple(f.shape[1:]) for f in feats] == [(16, 28, 28), (16, 28, 28), (32, 14, 14), (64, 7, 7)]
    # a truncated extractor computes the same maps
    part = timm.create_model(name, in_chans=1, features_only=True, out_indices=(2,)).eval()
    part.load_state_dict(model.state_dict(), strict=False)
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(part(x)[0], model(x)[2])


# -- gradients -----------------------------------------------------------------------------------


def test_rla_gradients_reach_recurrent_convs():
    torch.manual_seed(0)
    # the official RLA init (zero_init_residual=False, our default): every state parameter gets a
    # gradient at once
    model = timm.create_model("rla_cifar_resnet20", in_chans=1)
    assert model.layer1[0].bn2.weight.abs().sum() > 0
    F.cross_entropy(model(torch.randn(4, 1, 16, 16)), torch.tensor([0, 1, 2, 3])).backward()
    for conv in [*model.recurrent_conv, *model.conv_out]:
        assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0
    assert all(b.rla_norm.weight.grad.abs().sum() > 0 for b in model.blocks())


def test_rla_zero_init_last_state_path_wakes_after_one_step():
    # with timm's zero-initialised last BNs every O is 0 at init, so h stays 0 and the state path
    # gets no gradient on the first step; it must not stay dead after it
    torch.manual_seed(0)
    model = timm.create_model("rla_cifar_resnet20", in_chans=1, zero_init_last=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(4, 1, 16, 16), torch.tensor([0, 1, 2, 3])
    for _ in range(2):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    assert all(c.weight.grad.abs().sum() > 0 for c in model.recurrent_conv)


def test_mrla_gradients_reach_lambda():
    torch.manual_seed(0)
    model = timm.create_model("mrla_cifar_resnet20", in_chans=1)
    F.cross_entropy(model(torch.randn(4, 1, 16, 16)), torch.tensor([0, 1, 2, 3])).backward()
    for block in (b for s in model.stages() for b in s):
        assert block.mrla.lambda_t.grad.abs().sum() > 0
        attn = block.mrla.mrla
        assert attn.Wq.weight.grad.abs().sum() > 0 and attn.Wv.weight.grad.abs().sum() > 0


# -- behaviour -----------------------------------------------------------------------------------


def rla_reference(model: RLAResNet, x: torch.Tensor) -> torch.Tensor:
    """RLA written out block by block for a BasicBlock net (design note §5.1)."""
    x = F.relu(model.bn1(model.conv1(x)))
    h = torch.zeros(x.shape[0], model.rla_channel, *x.shape[-2:], dtype=x.dtype)
    for s, stage in enumerate([model.layer1, model.layer2, model.layer3]):
        for block in stage:
            o = block.bn2(block.conv2(F.relu(block.bn1(block.conv1(torch.cat([x, h], 1))))))
            shortcut = x if block.downsample is None else block.downsample(x)
            x = F.relu(o + shortcut)
            if block.conv1.stride[0] == 2:
                h = F.avg_pool2d(h, 2)
            h = model.recurrent_conv[s](torch.tanh(block.rla_norm(h + model.conv_out[s](o))))
    h = F.relu(model.head_norm(h))
    return model.fc(torch.cat([x.mean((2, 3)), h.mean((2, 3))], 1))


def test_rla_matches_reference_loop():
    torch.manual_seed(0)
    model = timm.create_model("rla_cifar_resnet20", in_chans=1).double().eval()
    randomize_norms(model)
    x = torch.randn(2, 1, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        ref = rla_reference(model, x)
        torch.testing.assert_close(model(x), ref)
        # the state really matters: cutting the recurrent convs changes the logits
        for conv in model.recurrent_conv:
            conv.weight.zero_()
        assert (model(x) - ref).abs().max() > 1e-3


def test_rla_vanilla_warm_start():
    torch.manual_seed(0)
    vanilla = timm.create_model("cifar_resnet20", in_chans=1).double().eval()
    randomize_norms(vanilla)
    rla = timm.create_model("rla_cifar_resnet20", in_chans=1).double().eval()
    missing = rla.load_vanilla_state_dict(vanilla.state_dict())
    assert all("rla_norm" in k or k.split(".")[0] in ("conv_out", "recurrent_conv", "head_norm") for k in missing)
    x = torch.randn(2, 1, 28, 28, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(rla(x), vanilla(x))


def test_mrla_attention_matches_reference():
    torch.manual_seed(0)
    attn = MRLALightAttention(64, heads=4).double()
    x = torch.randn(3, 64, 5, 6, dtype=torch.float64)
    k = attn.kernel_size
    y = x.mean((2, 3))[:, None]  # (B, 1, C)
    q = F.conv1d(y, attn.Wq.weight, padding=k // 2)[:, 0]
    kk = F.conv1d(y, attn.Wk.weight, padding=k // 2)[:, 0]
    v = F.conv2d(x, attn.Wv.weight, padding=1, groups=64)
    ref = torch.empty_like(x)
    for g in range(4):
        sl = slice(16 * g, 16 * (g + 1))
        gate = torch.sigmoid((q[:, sl] * kk[:, sl]).sum(1) / 16**0.5)
        ref[:, sl] = v[:, sl] * gate[:, None, None, None]
    torch.testing.assert_close(attn(x), ref)


def _silence_mrla(model: MRLAResNet) -> None:
    with torch.no_grad():
        for block in (b for s in model.stages() for b in s):
            block.mrla.lambda_t.zero_()
            block.bn_mrla.weight.zero_()


@pytest.mark.parametrize(
    "name, vanilla_name, size",
    [("mrla_cifar_resnet20", "cifar_resnet20", 28), ("mrla_resnet50", "resnet50", 64)],
)
def test_mrla_without_attention_is_vanilla(name, vanilla_name, size):
    torch.manual_seed(0)
    chans = 1 if "cifar" in name else 3
    vanilla = timm.create_model(vanilla_name, in_chans=chans).eval()
    randomize_norms(vanilla)
    model = timm.create_model(name, in_chans=chans).eval()
    result = model.load_state_dict(vanilla.state_dict(), strict=False)
    assert not result.unexpected_keys
    assert all(".mrla." in k or ".bn_mrla." in k for k in result.missing_keys)
    x = torch.randn(1, chans, size, size)
    with torch.no_grad():
        assert (model(x) - vanilla(x)).abs().max() > 1e-3  # λ ~ randn, BN_mrla γ=1: not vanilla
        _silence_mrla(model)
        torch.testing.assert_close(model(x), vanilla(x))
    if "cifar" not in name:
        return
    # train mode too (BN_mrla with γ=0 outputs β=0 whatever the batch statistics)
    model.train()
    vanilla.train()
    x = torch.randn(4, chans, size, size)
    torch.testing.assert_close(model(x), vanilla(x))


def test_mrla_compiles():
    model = timm.create_model("mrla_cifar_resnet20", in_chans=1).eval()
    compiled = torch.compile(model, backend="eager", fullgraph=True)  # fullgraph: no graph breaks
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x))


def test_grad_checkpointing_same_output():
    torch.manual_seed(0)
    for name in CIFAR:
        model = timm.create_model(name, in_chans=1)
        x = torch.randn(2, 1, 16, 16)
        torch.manual_seed(1)
        ref = model(x)
        model.set_grad_checkpointing(True)
        torch.manual_seed(1)
        out = model(x)
        torch.testing.assert_close(out, ref)
        out.sum().backward()

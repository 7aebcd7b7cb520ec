"""Models under the calls and inputs a user gives them (issue 16, item 7): half-precision casts, empty batches,
checked S7 `lengths`, padding that cannot leak NaN, and the GRU baseline's keyword arguments."""

from __future__ import annotations

import copy

import pytest
import timm
import torch

import statelayers.models  # noqa: F401  (registers the models with timm)
from statelayers.layers import padding, selective
from statelayers.layers.s7 import S7, S7Block

# -- 1. model.half() / model.bfloat16() -------------------------------------------------------------------------

# unit roundoff of each dtype (half the spacing of 1.0)
UNIT_ROUNDOFF = {torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}
# growth factor: the logits pass through O(20) layers, each rounding its output once to the dtype (relative error u)
# and accumulating in float32; errors of independent sign add like a random walk, so sqrt(20)·u ≈ 4.5u is the typical
# size, and 16u leaves room for the worse-conditioned layers (measured on these models: 1u–3u of max|logit|). A state
# kept in bfloat16 instead of float32, or a wrong cast, moves the logits by far more than that.
GROWTH = 16


def _image(model: torch.nn.Module, batch: int) -> torch.Tensor:
    cfg = model.pretrained_cfg
    c, h, w = cfg["input_size"]
    return torch.randn(batch, getattr(model, "in_chans", c), h, w, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("name", ["s6la_cifar_resnet20", "s6la_resnet18", "s6la_deit_tiny_patch16_224"])
def test_half_precision_cast_runs_like_timm(name, dtype, monkeypatch):
    """`model.half()` / `.bfloat16()` run (on the CPU, both dtypes: torch's CPU convs and matmuls take them), give
    logits in that dtype as timm's own resnet18 does after the same call, keep the SSM state in float32, and stay
    within GROWTH·u·max|logit| of the float32 model with the same weights."""
    x = _image(timm.create_model("resnet18"), 2)
    ref = timm.create_model("resnet18").eval().to(dtype)
    assert ref(x.to(dtype)).dtype == dtype  # timm's behaviour, which ours must match

    torch.manual_seed(0)
    m32 = timm.create_model(name).eval()
    x = _image(m32, 2)
    with torch.no_grad():
        y32 = m32(x)
    m = copy.deepcopy(m32)
    m = m.half() if dtype == torch.float16 else m.bfloat16()
    state_dtypes = []
    step = selective.ssm_step

    def recording_step(*args):
        terms = step(*args)
        state_dtypes.append(terms.h.dtype)
        return terms

    monkeypatch.setattr(selective, "ssm_step", recording_step)
    with torch.no_grad():
        y = m(x.to(dtype))
    assert y.dtype == dtype and y.shape == y32.shape
    assert torch.isfinite(y).all()
    if "resnet" in name:  # the ResNets' torch path updates its state through ssm_step
        assert state_dtypes
    assert all(d == torch.float32 for d in state_dtypes), state_dtypes
    err = (y.float() - y32).abs().max().item()
    bound = GROWTH * UNIT_ROUNDOFF[dtype] * y32.abs().max().item()
    assert err <= bound, f"{name} {dtype}: {err:.3g} from the float32 model > bound {bound:.3g}"


def test_half_precision_training_step_runs():
    """A training forward and backward of a bfloat16-cast S6LA ResNet gives finite gradients in bfloat16."""
    torch.manual_seed(0)
    m = timm.create_model("s6la_cifar_resnet20").bfloat16().train()
    m(_image(m, 4).bfloat16()).float().logsumexp(dim=1).mean().backward()
    grads = [p.grad for p in m.parameters() if p.grad is not None]
    assert grads and all(g.dtype == torch.bfloat16 and torch.isfinite(g).all() for g in grads)


# -- 2. an empty batch ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("name", ["s6la_cifar_resnet20", "s6la_resnet18", "s6la_resnet50"])
def test_empty_batch_like_timm_resnet(name, train):
    """Batch size 0 gives an empty (0, classes) output, as timm's resnet18 does on the same input (s6la_resnet50:
    the Bottleneck's widened 1×1 conv, which reads the state through a batched GEMM)."""
    ref = timm.create_model("resnet18").train(train)
    empty = torch.zeros(0, 3, 224, 224)
    expected = ref(empty)
    assert expected.shape == (0, ref.num_classes)
    m = timm.create_model(name).train(train)
    out = m(_image(m, 0))
    assert out.shape == (0, m.num_classes) and out.dtype == expected.dtype


# -- 3. S7 lengths are checked ----------------------------------------------------------------------------------

BAD_LENGTHS = {
    "zero": torch.tensor([8, 0]),
    "negative": torch.tensor([8, -3]),
    "longer_than_L": torch.tensor([9, 4]),
    "float": torch.tensor([8.0, 4.0]),
    "bool": torch.tensor([True, True]),
    "wrong_shape": torch.tensor([[8, 4]]),
    "wrong_batch": torch.tensor([8, 4, 2]),
}


def _s7_entries():
    torch.manual_seed(0)
    layer, block = S7(d_model=4, d_state=4), S7Block(4, 4)
    seq = timm.create_model("s7_tiny", in_chans=4, num_classes=3)
    gru = timm.create_model("gru_small", in_chans=4, num_classes=3)
    return {
        "S7": lambda x, n: layer(x, lengths=n),
        "S7Block": lambda x, n: block(x, lengths=n),
        "S7Sequence": lambda x, n: seq(x=x, lengths=n),
        "GRUSequence": lambda x, n: gru(x=x, lengths=n),
    }


@pytest.mark.parametrize("entry", ["S7", "S7Block", "S7Sequence", "GRUSequence"])
def test_s7_lengths_are_validated(entry):
    call = _s7_entries()[entry]
    x = torch.randn(2, 8, 4)
    call(x, torch.tensor([8, 1]))  # the extremes are valid
    call(x, torch.tensor([8, 4], dtype=torch.int32))
    for what, bad in BAD_LENGTHS.items():
        with pytest.raises(ValueError, match="lengths must be") as info:
            call(x, bad)
        msg = str(info.value)
        assert "\n" not in msg
        if what in ("zero", "negative", "longer_than_L"):
            assert "between 1 and the padded length 8" in msg and f"{int(bad.min())} to {int(bad.max())}" in msg, msg
        else:
            assert "integer tensor of shape (2,)" in msg, msg


def test_lengths_values_unchecked_while_compiling(monkeypatch):
    """The value check needs a device sync, so it is skipped while torch.compile traces; dtype and shape are not."""
    padding.check_lengths(torch.tensor([3]), 1, 5)
    with pytest.raises(ValueError):
        padding.check_lengths(torch.tensor([0]), 1, 5)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    padding.check_lengths(torch.tensor([0]), 1, 5)
    with pytest.raises(ValueError, match="integer tensor"):
        padding.check_lengths(torch.tensor([0.0]), 1, 5)


# -- 4. NaN in the padding does not leak ------------------------------------------------------------------------


def _padded(fill: float, tau: bool):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 15, 3, generator=g)
    t = torch.rand(3, 15, generator=g) + 0.1
    lengths = torch.tensor([15, 9, 4])
    pad = ~padding.valid_mask(lengths, 15)
    x[pad] = fill
    if tau:
        t[pad] = fill
    return x, t, lengths


@pytest.mark.parametrize("fill", [float("nan"), float("inf")], ids=["nan", "inf"])
@pytest.mark.parametrize("kw", [
    dict(),
    dict(stride=2, num_stages=2, expansion=2),
    dict(norm="batch"),
    dict(head="timepool", discretization="async"),
    dict(head="last", bidirectional=True),
    dict(head="none"),
], ids=["pool", "stride", "batchnorm", "timepool", "last_bidir", "per_step"])
def test_nan_padding_does_not_leak(kw, fill):
    """NaN / inf beyond `lengths` (in x and τ) give exactly the outputs of zeros there: logits, pooled features and
    the per-step outputs of the valid steps; in training mode too (batch norm's batch statistics)."""
    for train in (False, True):
        torch.manual_seed(0)
        m = timm.create_model("s7_tiny", in_chans=3, num_classes=4, **kw).train(train)
        x_bad, t_bad, lengths = _padded(fill, tau=True)
        x0, t0, _ = _padded(0.0, tau=True)
        torch.manual_seed(1)
        out0 = m(x=x0, tau=t0, lengths=lengths)
        torch.manual_seed(1)
        out = m(x=x_bad, tau=t_bad, lengths=lengths)
        if kw.get("head") == "none":  # per-step outputs: compare the valid steps
            valid = padding.valid_mask(lengths, out.shape[1])
            out, out0 = out[valid], out0[valid]
        assert torch.isfinite(out0).all()
        torch.testing.assert_close(out, out0, rtol=0, atol=0)


def test_nan_padding_does_not_leak_layer_block_gru():
    x_bad, _, lengths = _padded(float("nan"), tau=False)
    x0, _, _ = _padded(0.0, tau=False)
    valid = padding.valid_mask(lengths, 15)
    torch.manual_seed(0)
    for m in (S7(d_model=3, d_state=4), S7(d_model=3, d_state=4, bidirectional=True), S7Block(3, 4, norm="batch")):
        torch.testing.assert_close(m(x_bad, lengths=lengths)[valid], m(x0, lengths=lengths)[valid], rtol=0, atol=0)
    gru = timm.create_model("gru_small", in_chans=3, num_classes=4).eval()
    out = gru(x=x_bad, lengths=lengths)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, gru(x=x0, lengths=lengths), rtol=0, atol=0)


# -- 5. the GRU baseline's keyword arguments --------------------------------------------------------------------


def test_gru_refuses_unknown_arguments():
    with pytest.raises(TypeError, match="d_stat"):
        timm.create_model("gru_small", in_chans=3, d_stat=8)
    with pytest.raises(TypeError, match="d_stat"):
        statelayers.models.GRUSequence(in_chans=3, d_stat=8)
    # timm's own bookkeeping arguments are accepted, as by timm's models
    timm.create_model("gru_small", in_chans=3, pretrained_cfg_overlay=dict(num_classes=10))
    m = timm.create_model("gru_small", in_chans=3)
    x = torch.randn(2, 5, 3)
    with pytest.raises(TypeError, match="lenghts"):
        m(x=x, lenghts=torch.tensor([5, 2]))
    with pytest.raises(ValueError, match="retrieval"):
        m(x=x, tokens2=torch.zeros(2, 5, dtype=torch.long))

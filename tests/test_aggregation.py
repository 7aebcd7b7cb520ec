"""The S6LA state must carry the layer outputs, not only a decayed h0 (issue: item 10).

A short real training run on scikit-learn's digits, then two measurements on held-out images:
  * share: per state update, RMS(Δ·B·u) / RMS(exp(ΔA)·h), median over the blocks;
  * spread: std over images of the final state / its RMS — 0 when the state ignores the images.
With Mamba's Δ range and raw block outputs the state collapses into "h0, shrunk block by block"
(design note §1b; benchmarks/state_share.py measures it on Fashion-MNIST), and both numbers fall
below the margins. The defaults must stay above them.
"""

import statistics

import pytest
import timm
import torch
import torch.nn.functional as F

import statelayers  # noqa: F401
from statelayers.data.images import load_digits

MIN_SHARE = 0.25
MIN_SPREAD = 0.3


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits()
    x = (x.float().unsqueeze(1) / 255.0 - 0.5) / 0.5
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(x), generator=g)
    return x[perm[:1400]], y[perm[:1400]], x[perm[1400:]]


def trained(digits, **kwargs):
    xtr, ytr, _ = digits
    torch.manual_seed(0)
    model = timm.create_model("s6la_cifar_resnet20", **kwargs)
    model.init_state = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for _ in range(2):
        for i in range(0, len(xtr), 64):
            loss = F.cross_entropy(model(xtr[i : i + 64]), ytr[i : i + 64])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def share_and_spread(model, x):
    rows = model.state_diagnostics(x)
    share = statistics.median(r["inject_over_decay"] for r in rows)
    with torch.no_grad():
        _, h = model.forward_state(x)
    spread = (h.std(dim=0).square().mean().sqrt() / h.square().mean().sqrt()).item()
    return share, spread


@pytest.fixture(scope="module")
def default_model(digits):
    return trained(digits)


def test_layer_outputs_are_a_substantial_share_of_the_state(digits, default_model):
    share, spread = share_and_spread(default_model, digits[2][:200])
    assert share > MIN_SHARE, f"input term is only {share:.3f} of the decay term"
    assert spread > MIN_SPREAD, f"final states of different images differ by only {spread:.3f} of their RMS"


def test_the_margins_catch_a_collapsed_state(digits):
    # the configuration of design note §1b: Mamba's Δ range on raw block outputs
    collapsed = trained(digits, dt_min=1e-3, dt_max=1e-1, u_norm="none")
    share, spread = share_and_spread(collapsed, digits[2][:200])
    assert share < MIN_SHARE and spread < MIN_SPREAD
    # and with no path from the layers into h at all, the spread is exactly zero
    frozen = timm.create_model("s6la_cifar_resnet20", x_to_h=False).eval()
    with torch.no_grad():
        _, h = frozen.forward_state(digits[2][:50])
    assert h.std(dim=0).max() == 0


def test_selective_parameters_learn(digits, default_model):
    # Δ itself (per block, mean over held-out images) must move away from its initial value ...
    x = digits[2][:200]
    fresh = timm.create_model("s6la_cifar_resnet20").eval()
    fresh.load_state_dict(default_model.init_state)
    d0 = [r["delta_mean"] for r in fresh.state_diagnostics(x)]
    d1 = [r["delta_mean"] for r in default_model.state_diagnostics(x)]
    assert statistics.median(abs(b - a) / a for a, b in zip(d0, d1)) > 0.02

    # ... and the B projection must move, relative to its init, on the scale of the backbone's convs
    def moved(suffix):
        return statistics.median(
            ((p.detach() - default_model.init_state[n]).norm() / default_model.init_state[n].norm()).item()
            for n, p in default_model.named_parameters()
            if n.endswith(suffix)
        )

    assert moved(".s6la.wB.weight") > 0.2 * moved("conv2.weight")

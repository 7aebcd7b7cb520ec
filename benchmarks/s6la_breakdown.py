"""Where S6LA-ResNet-50's extra inference time goes: the same model with its parts switched off, side by side.

Variants, each a `s6la_resnet50` with one method replaced (the weights are irrelevant to the speed):

* `widen only` — `state_input` returns None: the blocks read `[x, h]` through their widened first convs, but no
  `conv_out` projection and no state update runs (h0 is carried);
* `+ conv_out` — the projections `u = conv_out(O)` run, the state is not updated;
* `full` — the model as shipped;
* `full, reparameterize()` — the model after `reparameterize()`: `u` computed from each Bottleneck's hidden
  tensor through the folded `conv_out·bn3·conv3` (4× fewer projection MACs).

Experiments (`--experiments`, added rows; each is the folded model with one change, to compare with the row
above):

* `folded, NCHW state` — the state kept in NCHW even when the model is channels_last (before the state followed
  the model's layout; only differs with `--channels-last`);
* `folded, compiled update` — the whole state update (summary, RMS, Δ, B, decay, input term) as one
  `torch.compile`d function, i.e. fused element-wise kernels (needs a C++ compiler; the first call compiles).

Interleaved rounds; in each round every model gets one settling call and one timed eval-mode forward under
no_grad. Ratios are medians over rounds of (variant time / vanilla time in the same round).

    python benchmarks/s6la_breakdown.py --threads 1            # the figures in BENCHMARKS.md
    python benchmarks/s6la_breakdown.py --threads 2 --channels-last --experiments --rounds 8
    python benchmarks/s6la_breakdown.py --smallest             # < 1 min: proves the script runs (CI)
"""

from __future__ import annotations

import argparse
import statistics
import time


def compiled_update(model):
    """`model.update_state` (selective blocks, u_norm="rms") as one torch.compile'd function."""
    import torch
    import torch.nn.functional as F

    @torch.compile(dynamic=False)
    def step(h, u, dt_weight, dt_bias, w_b, a):
        z = u.mean(dim=(2, 3))
        s = torch.rsqrt(u.square().sum(dim=(1, 2, 3)) / u[0].numel() + 1e-6)[:, None]
        z = z * s
        delta = F.softplus(z @ dt_weight.t() + dt_bias)
        b = (z @ w_b.t()) * s
        return torch.exp(delta * a)[:, :, None, None] * h + (delta * b)[:, :, None, None] * u

    def update_state(h, u, stage, index, block):
        if u is None:
            return h
        p = block.s6la
        return step(h, u, p.dt_up.weight, p.dt_up.bias, p.wB.weight, p.A)

    return update_state


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--experiments", action="store_true", help="add the experiment rows (see the docstring)")
    p.add_argument("--smallest", action="store_true", help="img 32, batch 2, 1 round")
    args = p.parse_args(argv)
    if args.smallest:
        args.img_size, args.batch_size, args.rounds = 32, 2, 1

    import timm
    import torch

    import statelayers  # noqa: F401  (registers the models)

    if args.threads:
        torch.set_num_threads(args.threads)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    x = torch.randn(args.batch_size, 3, args.img_size, args.img_size).contiguous(memory_format=fmt)

    def make(name):
        torch.manual_seed(0)
        return timm.create_model(name).eval().to(memory_format=fmt)

    widen = make("s6la_resnet50")
    widen.state_input = lambda *a: None
    conv_out = make("s6la_resnet50")
    conv_out.update_state = lambda h, u, *a: h
    models = {"resnet50 (vanilla)": make("resnet50"), "widen only": widen, "+ conv_out": conv_out,
              "full s6la_resnet50": make("s6la_resnet50"),
              "full, reparameterize()": make("s6la_resnet50").reparameterize()}
    if args.experiments:
        nchw_state = make("s6la_resnet50").reparameterize()
        nchw_state.initial_carry = nchw_state.initial_state
        compiled = make("s6la_resnet50").reparameterize()
        compiled.update_state = compiled_update(compiled)
        models |= {"folded, NCHW state": nchw_state, "folded, compiled update": compiled}

    times = {k: [] for k in models}
    with torch.no_grad():
        for _ in range(args.rounds):
            for k, m in models.items():
                m(x)
                t0 = time.perf_counter()
                m(x)
                times[k].append(time.perf_counter() - t0)
    ref = times["resnet50 (vanilla)"]
    print(f"# S6LA-R50 inference breakdown: batch {args.batch_size}, {args.img_size}², {args.rounds} rounds, "
          f"{torch.get_num_threads()} threads, {'channels_last' if args.channels_last else 'fp32'}\n")
    print("| variant | ms per call | time ratio to vanilla |\n|---|---|---|")
    for k, t in times.items():
        r = statistics.median(a / b for a, b in zip(t, ref))
        print(f"| {k} | {statistics.median(t) * 1e3:.1f} | {r:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

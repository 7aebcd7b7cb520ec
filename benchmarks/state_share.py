"""Do the layer outputs really reach the S6LA state? (issue: "the state must really aggregate")

Trains S6LA small-image ResNets on real Fashion-MNIST (a class-balanced subset, full 10k test set)
under several settings of the state-update constants, and for each prints
  * test accuracy, and accuracy with the input term Δ·B·u removed at test time ("-inject"),
    and with the state zeroed at test time ("h=0"): if "-inject" equals the full accuracy the
    layers did not matter to h;
  * the per-block ratio RMS(Δ·B·u) / RMS(exp(ΔA)·h) on test images (min / median / max);
  * how far Δ (mean over a test batch) and A_log moved from their initial values;
  * the spread of the final state across images relative to its RMS.

    python benchmarks/state_share.py --epochs 4 --train-size 12000 --seeds 0
    python benchmarks/state_share.py --model s6la_deit_tiny_patch16_224 --d-state 32 --opt adamw --lr 1e-3 \
        --model-kwargs img_size=28 patch_size=4 in_chans=1 num_classes=10 depth=6
"""

from __future__ import annotations

import argparse
import statistics
import time

import timm
import torch
import torch.nn.functional as F

import statelayers  # noqa: F401
from statelayers.data.images import load_fashion_mnist

SETTINGS = {
    "mamba dt[1e-3,1e-1], raw u": dict(dt_min=1e-3, dt_max=1e-1, u_norm="none"),
    "dt[1e-2,1], raw u": dict(dt_min=1e-2, dt_max=1.0, u_norm="none"),
    "mamba dt[1e-3,1e-1], rms u": dict(dt_min=1e-3, dt_max=1e-1, u_norm="rms"),
    "dt[1e-2,1], rms u (default)": dict(dt_min=1e-2, dt_max=1.0, u_norm="rms"),
}


def batches(x, y, bs, shuffle, gen=None):
    idx = torch.randperm(len(x), generator=gen) if shuffle else torch.arange(len(x))
    for i in range(0, len(x), bs):
        j = idx[i : i + bs]
        yield x[j], y[j]


def to_float(x):
    return (x.float().unsqueeze(1) / 255.0 - 0.5) / 0.5


def augment(x, gen):
    # random 2-px shifts and horizontal flips, on uint8 (B, 28, 28)
    x = F.pad(x, (2, 2, 2, 2))
    dx, dy = torch.randint(0, 5, (2,), generator=gen).tolist()
    x = x[:, dy : dy + 28, dx : dx + 28]
    return torch.where(torch.rand(len(x), 1, 1, generator=gen) < 0.5, x.flip(-1), x)


def set_ablation(model, value):
    """ResNets carry the switch on the model, token models on each unit."""
    units = getattr(model, "s6la", None)
    if isinstance(units, torch.nn.ModuleList):
        for u in units.modules():
            if hasattr(u, "ablation"):
                u.ablation = value
    else:
        model.state_ablation = value


@torch.no_grad()
def accuracy(model, x, y, ablation=None, zero_state=False):
    model.eval()
    set_ablation(model, ablation)
    saved = None
    if zero_state:
        saved, model.h0 = model.h0, None
    correct = 0
    for xb, yb in batches(x, y, 500, False):
        correct += (model(to_float(xb)).argmax(1) == yb).sum().item()
    set_ablation(model, None)
    if zero_state:
        model.h0 = saved
    return correct / len(x)


def delta_snapshot(model, x):
    model.eval()
    rows = model.state_diagnostics(to_float(x))
    return [r["delta_mean"] for r in rows], [r["inject_over_decay"] for r in rows]


def final_state_spread(model, x):
    """std over images of h (before the last block) / RMS of h: 0 if h ignores the images."""
    model.eval()
    with torch.no_grad():
        _, h = model.forward_state(to_float(x))
    return (h.std(dim=0).square().mean().sqrt() / h.square().mean().sqrt()).item()


def run(name, kw, args, data, seed):
    xtr, ytr, xte, yte = data
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    if "resnet" not in args.model:  # token models name the same switch after their summary token c
        kw = {("c_norm" if k == "u_norm" else k): v for k, v in kw.items()}
    model = timm.create_model(args.model, d_state=args.d_state, **args.model_kwargs, **kw)
    a_log0 = [m.A_log.detach().clone() for m in model.modules() if hasattr(m, "A_log")]
    sel0 = {n: p.detach().clone() for n, p in model.named_parameters()
            if "s6la" in n and (".dt_" in n or ".wB." in n) and p.ndim == 2 and p.requires_grad}
    conv0 = {n: p.detach().clone() for n, p in model.named_parameters()
             if n.endswith(("conv2.weight", "mlp.fc1.weight"))}
    d0, _ = delta_snapshot(model, xte[:256])
    nwd = model.no_weight_decay()
    params = [
        {"params": [p for n, p in model.named_parameters() if p.requires_grad and (n in nwd or p.ndim <= 1)],
         "weight_decay": 0.0},
        {"params": [p for n, p in model.named_parameters() if p.requires_grad and not (n in nwd or p.ndim <= 1)],
         "weight_decay": 5e-4},
    ]
    if args.opt == "adamw":
        params[1]["weight_decay"] = 0.05
        opt = torch.optim.AdamW(params, lr=args.lr)
    else:
        opt = torch.optim.SGD(params, lr=args.lr, momentum=0.9, nesterov=True)
    steps = args.epochs * ((len(xtr) + args.batch_size - 1) // args.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr, total_steps=steps, pct_start=0.15)
    t0 = time.time()
    for _ in range(args.epochs):
        model.train()
        for xb, yb in batches(xtr, ytr, args.batch_size, True, gen):
            loss = F.cross_entropy(model(to_float(augment(xb, gen))), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    train_s = time.time() - t0
    d1, ratios = delta_snapshot(model, xte[:256])
    a_move = max((m.A_log - a).abs().max().item() for m, a in zip(
        [m for m in model.modules() if hasattr(m, "A_log")], a_log0))
    d_move = statistics.median(abs(b - a) / a for a, b in zip(d0, d1))
    named = dict(model.named_parameters())

    def rel_move(start):  # median over tensors of ||W - W0|| / ||W0||
        return statistics.median(((named[n] - w).norm() / w.norm()).item() for n, w in start.items())

    res = dict(
        acc=accuracy(model, xte, yte),
        acc_no_inject=accuracy(model, xte, yte, ablation="inject"),
        acc_h0_zero=accuracy(model, xte, yte, zero_state=True),
        ratio_min=min(ratios), ratio_med=statistics.median(ratios), ratio_max=max(ratios),
        delta_rel_move=d_move, a_log_move=a_move, sel_w_move=rel_move(sel0), conv_w_move=rel_move(conv0),
        spread=final_state_spread(model, xte[:256]), train_s=train_s,
    )
    print(f"{name:32s} seed {seed}: " + "  ".join(
        f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in res.items()), flush=True)
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="s6la_cifar_resnet20")
    ap.add_argument("--d-state", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--train-size", type=int, default=12000)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--opt", choices=("sgd", "adamw"), default="sgd")
    ap.add_argument("--model-kwargs", nargs="*", default=[], metavar="KEY=VALUE",
                    help="extra timm.create_model arguments, e.g. img_size=28 patch_size=4 in_chans=1")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--settings", nargs="*", default=list(SETTINGS), help="names from: " + " | ".join(SETTINGS))
    args = ap.parse_args()
    import yaml

    args.model_kwargs = {k: yaml.safe_load(v) for k, _, v in (kv.partition("=") for kv in args.model_kwargs)}
    torch.set_num_threads(max(1, torch.get_num_threads()))
    xtr, ytr, xte, yte = load_fashion_mnist()
    per_class = args.train_size // 10
    keep = torch.cat([torch.nonzero(ytr == c).flatten()[:per_class] for c in range(10)])
    data = (xtr[keep], ytr[keep], xte, yte)
    print(f"# {args.model} {args.model_kwargs} N={args.d_state}, {args.opt} lr {args.lr}, "
          f"Fashion-MNIST {len(keep)} train / {len(xte)} test, "
          f"{args.epochs} epochs, torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name in args.settings:
        for seed in args.seeds:
            run(name, SETTINGS[name], args, data, seed)


if __name__ == "__main__":
    main()

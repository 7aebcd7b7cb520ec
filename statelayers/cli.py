"""Command-line interface: ``statelayers <command> ...`` (also ``python -m statelayers``).

Commands:
    models   list the models this package registers with timm
    profile  parameters and GMACs of a model, or the paper's Table 1 beside our counts
    train    train a model with a named recipe, on one process or many (torchrun)
    eval     evaluate a checkpoint
    demo     vanilla vs S6LA small-image ResNet on real data, side by side

Adding a command: write ``_args_<name>(parser)`` (declares its arguments) and ``cmd_<name>(args)``
(does the work, returns the exit code), and add one ``Command`` line to ``COMMANDS``. Import heavy
modules (torch, timm, the models) inside ``cmd_<name>``, so that ``statelayers --help`` and the
other commands stay fast. Put the logic in a library module and keep the command to parsing and
printing. Return 2 for a user error, after printing a message to stderr.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

PROG = "statelayers"


# ---------------------------------------------------------------------------------------------
# helpers


def _error(msg: str) -> int:
    print(f"{PROG}: error: {msg}", file=sys.stderr)
    return 2


def _statelayers_models() -> dict[str, str]:
    """{model name: family} of the timm models whose entrypoint lives in this package.

    The family is the defining module (``statelayers.models.s6la_resnet`` -> ``s6la_resnet``).
    """
    import timm
    from timm.models import model_entrypoint

    import statelayers  # noqa: F401  (registers the models)

    out = {}
    for name in timm.list_models():
        module = model_entrypoint(name).__module__
        if module == "statelayers" or module.startswith("statelayers."):
            out[name] = module.rsplit(".", 1)[-1]
    return out


def _matches(name: str, pattern: str | None) -> bool:
    """Glob if the pattern has wildcards, substring otherwise; case-insensitive."""
    import fnmatch

    if not pattern:
        return True
    name, pattern = name.lower(), pattern.lower()
    if any(c in pattern for c in "*?["):
        return fnmatch.fnmatchcase(name, pattern)
    return pattern in name


# ---------------------------------------------------------------------------------------------
# statelayers models


def _args_models(p: argparse.ArgumentParser) -> None:
    p.add_argument("--filter", metavar="PATTERN", help="substring, or glob such as 's6la_*50'")


def cmd_models(args: argparse.Namespace) -> int:
    """One line per statelayers model: name and family."""
    models = {n: f for n, f in _statelayers_models().items() if _matches(n, args.filter)}
    if not models:
        return _error(f"no statelayers model matches {args.filter!r}")
    width = max(map(len, models))
    for name, family in models.items():
        print(f"{name:<{width}}  {family}")
    return 0


# ---------------------------------------------------------------------------------------------
# statelayers profile


def _args_profile(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", metavar="MODEL", help="a statelayers or timm model name, e.g. s6la_resnet50")
    p.add_argument("--img-size", type=int, metavar="S", help="input S x S (default: the model's pretrained_cfg)")
    p.add_argument("--in-chans", type=int, metavar="C", help="input channels (default: the model's pretrained_cfg)")
    p.add_argument("--num-classes", type=int, metavar="K", help="classifier outputs (default: the model's)")
    p.add_argument(
        "--table",
        metavar="NAME",
        help="instead of MODEL: a paper table beside our counts ('resnet': Table 1; 'transformers': Table 2)",
    )
    p.add_argument("--filter", metavar="GLOB", help="with --table: only rows whose timm model matches, e.g. '*50'")
    p.add_argument("--real", action="store_true", help="count on a real forward pass instead of fake tensors")


def cmd_profile(args: argparse.Namespace) -> int:
    """Params and GMACs (= the papers' "FLOPs") of one forward pass at batch 1."""
    if args.table is not None:
        if args.model is not None or args.img_size or args.in_chans or args.num_classes:
            return _error("--table takes no MODEL, --img-size, --in-chans or --num-classes (it uses 224x224, 1000)")
        return _profile_table(args)
    if args.model is None:
        return _error("profile needs a MODEL or --table NAME")
    if args.filter is not None:
        return _error("--filter applies to --table only")

    import timm

    import statelayers  # noqa: F401
    from statelayers.profile import measure

    if not timm.is_model(args.model):
        import difflib

        close = difflib.get_close_matches(args.model, timm.list_models(), n=3)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        return _error(
            f"unknown model {args.model!r}.{hint} Run `{PROG} models` to list the statelayers models "
            "(any timm model name works too)."
        )
    m = measure(
        args.model, img_size=args.img_size, in_chans=args.in_chans, num_classes=args.num_classes, fake=not args.real
    )
    c, h, w = m.input_size
    rows = [
        ("model", m.model),
        ("input", f"1x{c}x{h}x{w}"),
        ("num_classes", str(m.num_classes)),
        ("params", f"{m.params:,} ({m.params / 1e6:.3f} M)"),
        ("GMACs", f"{m.macs / 1e9:.3f} ({m.macs:,} MACs = FlopCounterMode FLOPs / 2)"),
    ]
    for key, value in rows:
        print(f"{key:<12} {value}")
    return 0


def _profile_table(args: argparse.Namespace) -> int:
    from statelayers.profile import PAPER_TABLES, compare_to_paper, format_comparison

    if args.table not in PAPER_TABLES:
        return _error(f"unknown table {args.table!r}; available: {', '.join(sorted(PAPER_TABLES))}")
    rows = compare_to_paper(args.table, select=args.filter, fake=not args.real)
    if not rows:
        return _error(f"no row of table {args.table!r} matches {args.filter!r}")
    print(format_comparison(rows))
    return 0


# ---------------------------------------------------------------------------------------------
# statelayers train / eval / demo


def _key_values(items: list[str] | None) -> dict:
    """['d_state=16', 'h0=random'] -> {'d_state': 16, 'h0': 'random'} (values parsed as YAML)."""
    import yaml

    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"expected KEY=VALUE, got {item!r}")
        out[key.replace("-", "_")] = yaml.safe_load(value)
    return out


def _args_train(p: argparse.ArgumentParser) -> None:
    import dataclasses
    import typing

    from .engine import TrainConfig
    from .recipes import RECIPES

    hints = typing.get_type_hints(TrainConfig)
    helps = {
        "model": "a statelayers or timm model name (`statelayers models`)",
        "data": "digits | fashion_mnist | PATH to an ImageFolder tree (PATH/train, PATH/val)",
        "recipe": "named recipe: " + "; ".join(f"{k} ({v['citation']})" for k, v in RECIPES.items()),
        "resume": "a run folder to continue from its last checkpoint (its config is reused)",
        "batch_size": "images per process and micro-step",
        "lr": "absolute learning rate (default: the recipe's lr_base scaled to the global batch)",
    }
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        hint = hints[f.name]
        kind = typing.get_args(hint)[0] if typing.get_args(hint) else hint
        if f.name == "model":
            p.add_argument(flag, required=False, help=helps[f.name])
        elif kind is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=helps.get(f.name))
        elif kind is dict:
            p.add_argument(flag, nargs="*", metavar="KEY=VALUE", default=None,
                           help="e.g. d_state=16 h0=random" if f.name == "model_kwargs" else "e.g. hflip=0.0")
        else:
            p.add_argument(flag, type=kind if kind in (int, float) else str, default=None, help=helps.get(f.name))


def _train_config(args: argparse.Namespace):
    import dataclasses

    from .engine import TrainConfig

    values = {}
    for f in dataclasses.fields(TrainConfig):
        v = getattr(args, f.name, None)
        if v is None:
            continue
        values[f.name] = _key_values(v) if f.name in ("model_kwargs", "train_aug") else v
    if "model" not in values and "resume" not in values:
        raise ValueError("train needs --model (or --resume RUN_DIR)")
    values.setdefault("model", "")
    return TrainConfig(**values)


def _run_user_errors(fn) -> int:
    """Run fn(); turn the errors a user can fix into one clear line and exit code 2."""
    from .checkpoint import CheckpointError
    from .data import DatasetMissing

    try:
        return fn()
    except (ValueError, CheckpointError, DatasetMissing, FileNotFoundError) as e:
        return _error(str(e))


def cmd_train(args: argparse.Namespace) -> int:
    """Train a model with a named recipe (one process, or many under torchrun)."""

    def run() -> int:
        from .engine import train

        result = train(_train_config(args))
        print(f"run folder: {result.run_dir}  best eval_acc {result.best_acc:.4f}  "
              f"{result.images_per_s:.0f} img/s")
        return 0

    return _run_user_errors(run)


def _args_eval(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="the model the checkpoint was trained as")
    p.add_argument("--checkpoint", required=True, help="a .safetensors file, or a run folder (uses best.safetensors)")
    p.add_argument("--data", required=True, help="digits | fashion_mnist | PATH to an ImageFolder tree")
    p.add_argument("--img-size", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--amp", default="none", choices=("none", "bf16", "fp16"))
    p.add_argument("--model-kwargs", nargs="*", metavar="KEY=VALUE", default=None)


def cmd_eval(args: argparse.Namespace) -> int:
    """Top-1 / top-5 accuracy and loss of a checkpoint on a dataset's evaluation split."""

    def run() -> int:
        from .engine import evaluate

        out = evaluate(args.model, args.checkpoint, args.data, img_size=args.img_size, batch_size=args.batch_size,
                       model_kwargs=_key_values(args.model_kwargs) or None, amp=args.amp)
        for k, v in out.items():
            print(f"{k:<10} {v:.4f}" if isinstance(v, float) else f"{k:<10} {v}")
        return 0

    return _run_user_errors(run)


def _args_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=None, help="fashion_mnist (default when installed) or digits")
    p.add_argument("--epochs", type=int, default=None, help="default: 4 on Fashion-MNIST, 15 on digits")
    p.add_argument("--subset", type=int, default=None, help="training images (default: 10,000 of Fashion-MNIST)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default="runs")
    p.add_argument("--verbose", action="store_true", help="per-epoch lines and progress bars")


def cmd_demo(args: argparse.Namespace) -> int:
    """Train a vanilla and an S6LA small-image ResNet with the same recipe, budget and seed, and
    compare them side by side (params, GMACs, images/s, test accuracy) with a plot of the curves."""

    def run() -> int:
        from .demo import format_rows, run_demo

        rows, out_dir = run_demo(args.data, epochs=args.epochs, subset=args.subset, seed=args.seed,
                                 output=args.output, quiet=not args.verbose)
        print()
        print(format_rows(rows))
        print(f"\ncurves: {out_dir / 'curves.png'}   runs: {out_dir}")
        print("One seed, one short budget: a difference smaller than a few tenths of a point is noise.")
        return 0

    return _run_user_errors(run)


# ---------------------------------------------------------------------------------------------
# command table and entry point


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS: tuple[Command, ...] = (
    Command("models", "list the models statelayers registers with timm", _args_models, cmd_models),
    Command("profile", "params and GMACs of a model, or a paper table beside ours", _args_profile, cmd_profile),
    Command("train", "train a model with a named recipe (torchrun for many processes)", _args_train, cmd_train),
    Command("eval", "evaluate a checkpoint on a dataset", _args_eval, cmd_eval),
    Command("demo", "vanilla vs S6LA small ResNet, same recipe and budget, side by side", _args_demo, cmd_demo),
)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog=PROG, description="statelayers: S6LA / S7 models and tools.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for cmd in COMMANDS:
        p = sub.add_parser(cmd.name, help=cmd.help, description=(cmd.run.__doc__ or cmd.help).strip())
        cmd.add_arguments(p)
        p.set_defaults(_run=cmd.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 2 usage error). argparse itself exits with 2 on
    malformed arguments."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help(sys.stderr)
        return 2
    return args._run(args)


if __name__ == "__main__":
    sys.exit(main())

"""Command-line interface: ``statelayers <command> ...`` (also ``python -m statelayers``).

Commands:
    models   list the models this package registers with timm
    profile  parameters and GMACs of a model, or the paper's Table 1 beside our counts

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
        help="instead of MODEL: a paper table beside our counts ('resnet': paper Table 1, R50/101/152)",
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

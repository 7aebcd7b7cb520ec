"""Command-line interface: ``statelayers <command> ...`` (also ``python -m statelayers``).

Commands:
    models   list the models this package registers with timm
    profile  parameters and GMACs of a model, or the paper's Table 1 beside our counts
    train    train a model with a named recipe, on one process or many (torchrun)
    eval     evaluate a checkpoint
    demo     vanilla vs S6LA small-image ResNet on real data, side by side
    cam      Score-CAM / Grad-CAM of the last stage, several models side by side (paper Figs. 6-7)
    make-coco-demo  a small COCO-format detection set from real images, to try detection offline

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

    from . import models  # noqa: F401  (registers the models with timm)

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
    p.add_argument("--resolutions", metavar="S1,S2,...", help="GMACs of MODEL and its vanilla / S6LA counterpart "
                   "at these input sides, with a linear fit against pixels (paper Fig. 5)")
    p.add_argument("--out", metavar="PNG", help="with --resolutions: where to write the plot "
                   "(default: macs_vs_resolution_MODEL.png)")
    p.add_argument("--no-counterpart", action="store_true", help="with --resolutions: MODEL only")


def cmd_profile(args: argparse.Namespace) -> int:
    """Params and GMACs (= the papers' "FLOPs") of one forward pass at batch 1."""
    if args.resolutions is not None:
        return _profile_resolutions(args)
    if args.out is not None or args.no_counterpart:
        return _error("--out and --no-counterpart apply to --resolutions only")
    if args.table is not None:
        if args.model is not None or args.img_size or args.in_chans or args.num_classes:
            return _error("--table takes no MODEL, --img-size, --in-chans or --num-classes (it uses 224x224, 1000)")
        return _profile_table(args)
    if args.model is None:
        return _error("profile needs a MODEL or --table NAME")
    if args.filter is not None:
        return _error("--filter applies to --table only")

    import timm

    from . import models  # noqa: F401  (registers the models with timm)
    from .tools.profile import measure

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


def _profile_resolutions(args: argparse.Namespace) -> int:
    """GMACs against input resolution for MODEL and its counterpart: a table, the fits and a PNG."""
    if args.model is None or args.table is not None or args.img_size:
        return _error("--resolutions needs a MODEL and takes no --table or --img-size")
    try:
        sides = [int(v) for v in args.resolutions.replace(" ", "").split(",") if v]
    except ValueError:
        return _error(f"--resolutions takes comma-separated integers, got {args.resolutions!r}")
    from .tools.resolution import format_profile, plot_profile, profile_resolutions

    try:
        prof = profile_resolutions(args.model, sides, with_counterpart=not args.no_counterpart,
                                   in_chans=args.in_chans, fake=not args.real)
    except ValueError as e:
        return _error(str(e))
    print(format_profile(prof))
    out = plot_profile(prof, args.out or f"macs_vs_resolution_{args.model}.png")
    print(f"\nplot: {out}")
    return 0


def _profile_table(args: argparse.Namespace) -> int:
    from .tools.profile import PAPER_TABLES, compare_to_paper, format_comparison

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
    from ._extras import require

    yaml = require("yaml", "KEY=VALUE arguments")

    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"expected KEY=VALUE, got {item!r}")
        out[key.replace("-", "_")] = yaml.safe_load(value)
    return out


# The training flags are made from TrainConfig's fields, read from the source of statelayers/engine/config.py
# rather than imported: importing the engine imports torch and every model (seconds), and building the parser
# (`statelayers --help`, `statelayers train --help`) must not. A field gets the help text below, or else its
# comment in config.py; tests/test_cli_speed.py checks the fields read here against the imported TrainConfig.
RECIPE_NAMES = ("resnet", "deit", "small", "s7", "detection", "detection_retinanet")  # engine.recipes.RECIPES
TASK_NAMES = ("image", "sequence", "detection")  # engine.tasks.TASKS

_RECIPE_DEFAULT = " (default: the recipe's)"
TRAIN_HELP = {
    "model": "a statelayers or timm model name (`statelayers models`); for --task detection the detector "
             "(faster_rcnn | retinanet | mask_rcnn) with --model-kwargs backbone=NAME checkpoint=RUN_DIR ...",
    "data": "images: digits | fashion_mnist | PATH to an ImageFolder tree (PATH/train, PATH/val); "
            "sequences: acsf1 | scp2 | sfmnist | listops | events_fashion_mnist | dvs_gesture | shd | "
            "lra_listops | lra_text | lra_retrieval | eigenworms | PATH to a .ts file; "
            "detection: PATH to a COCO-format folder "
            "(PATH/annotations/instances_{train,val}.json, PATH/images/ or PATH/{train,val}2017/) (default: digits)",
    "task": f"{' | '.join(TASK_NAMES)} (default: inferred from --data)",
    "recipe": f"named recipe: {' | '.join(RECIPE_NAMES)} (default: small for images, s7 for sequences; "
              "see statelayers.engine.recipes for each one's source)",
    "data_dir": "folder of sequence data you have (dvs_gesture, shd, lra_*, eigenworms)",
    "max_len": "sequences: truncate to this many steps (default: the dataset's native lengths)",
    "output": "folder under which the run folder is made (default: runs)",
    "name": "run folder name under --output, one folder name (default: model-data-time)",
    "model_kwargs": "keyword arguments of the model, e.g. d_state=16 h0=random",
    "opt": "optimizer, a timm name such as sgd, adamw" + _RECIPE_DEFAULT,
    "momentum": "SGD momentum" + _RECIPE_DEFAULT,
    "weight_decay": "weight decay" + _RECIPE_DEFAULT,
    "lr": "absolute learning rate (default: the recipe's lr_base scaled to the global batch)",
    "lr_base": "learning rate per --lr-base-size images, scaled linearly to the global batch" + _RECIPE_DEFAULT,
    "lr_base_size": "the batch size --lr-base refers to" + _RECIPE_DEFAULT,
    "sched": "learning-rate schedule, a timm name such as cosine, step, multistep" + _RECIPE_DEFAULT,
    "decay_epochs": "sched step: epochs between learning-rate decays" + _RECIPE_DEFAULT,
    "decay_rate": "sched step / multistep: factor applied to the learning rate at each decay" + _RECIPE_DEFAULT,
    "decay_milestones": "sched multistep: epochs after which the lr is multiplied by decay_rate, e.g. 8 11",
    "warmup_epochs": "linear warm-up over this many epochs" + _RECIPE_DEFAULT,
    "warmup_lr": "learning rate at the start of the warm-up" + _RECIPE_DEFAULT,
    "warmup_steps": "linear warm-up over this many optimizer steps (instead of --warmup-epochs)",
    "min_lr": "lowest learning rate of the schedule" + _RECIPE_DEFAULT,
    "epochs": "training epochs" + _RECIPE_DEFAULT,
    "batch_size": "images per process and micro-step" + _RECIPE_DEFAULT,
    "img_size": "input side in pixels (default: the recipe's, else the data's)",
    "train_aug": "training augmentation overrides, e.g. hflip=0.0 crop_pad=0 (merged into the recipe's)",
    "smoothing": "label smoothing" + _RECIPE_DEFAULT,
    "mixup": "Mixup alpha, 0 for none" + _RECIPE_DEFAULT,
    "cutmix": "CutMix alpha, 0 for none" + _RECIPE_DEFAULT,
    "drop_path": "stochastic-depth rate" + _RECIPE_DEFAULT,
    "repeated_aug": "repeated augmentation (DeiT)" + _RECIPE_DEFAULT,
    "clip_grad": "clip the gradient norm to this value" + _RECIPE_DEFAULT,
    "ssm_lr_scale": "S7: learning-rate multiplier of the SSM parameters (eigenvalues, static B)" + _RECIPE_DEFAULT,
    "ssm_weight_decay": "S7: weight decay of the SSM parameters" + _RECIPE_DEFAULT,
    "subset": "train on a class-balanced subset of this many items (default: all)",
    "eval_subset": "evaluate on the first K items of the evaluation split, for quick runs (default: all)",
    "eval_batch_size": "items per evaluation batch (default: 500)",
    "grad_accum": "micro-batches accumulated per optimizer step (default: 1)",
    "amp": "mixed precision: none | bf16 (CPU or GPU) | fp16 (GPU) (default: none)",
    "channels_last": "channels-last memory format (default: off)",
    "compile": "torch.compile the model (default: off)",
    "ema": "keep an exponential moving average of the weights, evaluated beside them (default: off)",
    "ema_decay": "decay of the weight average (default: 0.9998)",
    "seed": "random seed of initialisation, data order and augmentation (default: 0)",
    "workers": "data-loading worker processes (default: 0)",
    "ckpt_every": "also checkpoint every N optimizer steps (default: 0, at epoch ends only)",
    "max_steps": "stop after this many optimizer steps (default: no limit)",
    "quiet": "no per-epoch lines or progress bars (default: off)",
    "resume": "a run folder to continue from its last checkpoint (its config is reused)",
}


def train_config_fields() -> list[tuple[str, str, str]]:
    """(name, kind, comment) of each TrainConfig field, in order, read from the source of engine/config.py
    (kind: the annotation's first type, e.g. 'str' for 'str | None'; comment: the field's ``#`` comment or '')."""
    import ast
    import io
    import tokenize
    from pathlib import Path

    source = (Path(__file__).parent / "engine" / "config.py").read_text(encoding="utf-8")
    comments = {tok.start[0]: tok.string.lstrip("#").strip()
                for tok in tokenize.generate_tokens(io.StringIO(source).readline) if tok.type == tokenize.COMMENT}
    cls = next(n for n in ast.parse(source).body if isinstance(n, ast.ClassDef) and n.name == "TrainConfig")
    out = []
    for node in cls.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            kind = ast.unparse(node.annotation).split("|")[0].strip()
            out.append((node.target.id, kind, comments.get(node.end_lineno, "")))
    return out


def _args_train(p: argparse.ArgumentParser) -> None:
    for name, kind, comment in train_config_fields():
        flag = "--" + name.replace("_", "-")
        text = TRAIN_HELP.get(name) or comment or None
        if name == "model":
            p.add_argument(flag, required=False, help=text)
        elif kind == "bool":
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=text)
        elif kind == "dict":
            p.add_argument(flag, nargs="*", metavar="KEY=VALUE", default=None, help=text)
        elif kind == "list":
            p.add_argument(flag, nargs="+", type=_number, default=None, help=text)
        else:
            p.add_argument(flag, type={"int": int, "float": float}.get(kind, str), default=None, help=text)


def _number(text: str) -> int | float:
    """'8' -> 8, '8.5' -> 8.5."""
    try:
        return int(text)
    except ValueError:
        return float(text)


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
    if "resume" in values:  # only the flags given count, also those equal to a default
        from .engine.loop import check_resume_changes

        check_resume_changes(values["resume"], {k: v for k, v in values.items() if k != "resume"})
    values.setdefault("model", "")
    return TrainConfig(**values)


def _run_user_errors(fn) -> int:
    """Run fn(); turn the errors a user can fix into one clear line and exit code 2."""
    from ._extras import MissingDependency
    from .checkpoint import CheckpointError
    from .data.images import DatasetMissing

    try:
        return fn()
    except (ValueError, CheckpointError, DatasetMissing, FileNotFoundError, MissingDependency,
            FloatingPointError) as e:
        return _error(_one_line(str(e)))


def _one_line(message: str) -> str:
    """The message of an error, on one line. An error raised in a DataLoader worker comes back with the worker's
    traceback in its message ("Caught X in DataLoader worker process N. Original Traceback ..."): its last line,
    the original error's own, is the message."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    if len(lines) > 1 and "DataLoader worker process" in lines[0]:
        last = lines[-1]
        kind, sep, text = last.partition(": ")
        return text if sep and kind.replace(".", "").replace("_", "").isalnum() else last
    return " ".join(lines)


def cmd_train(args: argparse.Namespace) -> int:
    """Train a model with a named recipe (one process, or many under torchrun)."""

    def run() -> int:
        from .engine import train

        result = train(_train_config(args))
        print(f"run folder: {result.run_dir}  best {result.score_name} {result.best_acc:.4f}  "
              f"{result.images_per_s:.0f} img/s")
        return 0

    return _run_user_errors(run)


def _args_eval(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None,
                   help="the model the checkpoint was trained as (default: the one the run folder or the file names)")
    p.add_argument("--checkpoint", required=True, help="a .safetensors file, or a run folder (uses best.safetensors)")
    p.add_argument("--data", default=None,
                   help="as for train: an image or a sequence dataset (default: a run folder's own; needed for a file)")
    p.add_argument("--other-data", action="store_true",
                   help="allow --data other than the data the run folder was trained on")
    p.add_argument("--task", default=None, choices=TASK_NAMES,
                   help="default: inferred from --data (detection: a COCO-format folder; prints COCO AP metrics)")
    p.add_argument("--data-dir", default=None, help="folder of sequence data (dvs_gesture, shd, lra_*, ...)")
    p.add_argument("--max-len", type=int, default=None,
                   help="sequences: truncate to this many steps (default: the dataset's native lengths)")
    p.add_argument("--img-size", type=int, default=None, help="input side in pixels (default: the model's)")
    p.add_argument("--batch-size", type=int, default=500, help="items per evaluation batch (default: 500)")
    p.add_argument("--amp", default="none", choices=("none", "bf16", "fp16"),
                   help="mixed precision: none | bf16 (CPU or GPU) | fp16 (GPU) (default: none)")
    p.add_argument("--model-kwargs", nargs="*", metavar="KEY=VALUE", default=None,
                   help="keyword arguments of the model, as it was trained, e.g. d_state=16")


def cmd_eval(args: argparse.Namespace) -> int:
    """The metrics of a checkpoint on a dataset's evaluation split: loss and top-1 / top-5 accuracy for
    classifiers, MSE / RMSE / MAE / R² for regression, per-step accuracy (and bits per token for language models)
    for per-step targets."""

    def run() -> int:
        from .engine import evaluate

        out = evaluate(args.model, args.checkpoint, args.data, img_size=args.img_size, batch_size=args.batch_size,
                       model_kwargs=_key_values(args.model_kwargs) or None, amp=args.amp, task=args.task,
                       data_dir=args.data_dir, max_len=args.max_len, other_data=args.other_data)
        for k, v in out.items():
            print(f"{k:<10} {v:.4f}" if isinstance(v, float) else f"{k:<10} {v}")
        return 0

    return _run_user_errors(run)


def _args_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=None, help="fashion_mnist (default when installed) or digits")
    p.add_argument("--epochs", type=int, default=None, help="default: 4 on Fashion-MNIST, 15 on digits")
    p.add_argument("--subset", type=int, default=None,
                   help="train on a class-balanced subset of this many images (default: 10,000 of Fashion-MNIST, "
                        "all of digits)")
    p.add_argument("--seed", type=int, default=0, help="random seed of both runs (default: 0)")
    p.add_argument("--output", default="runs", help="folder under which the demo folder is made (default: runs)")
    p.add_argument("--verbose", action="store_true", help="per-epoch lines and progress bars")


def cmd_demo(args: argparse.Namespace) -> int:
    """Train a vanilla and an S6LA small-image ResNet with the same recipe, budget and seed, and
    compare them side by side (params, GMACs, images/s, test accuracy) with a plot of the curves."""

    def run() -> int:
        from .tools.demo import format_rows, run_demo

        rows, out_dir = run_demo(args.data, epochs=args.epochs, subset=args.subset, seed=args.seed,
                                 output=args.output, quiet=not args.verbose)
        print()
        print(format_rows(rows))
        print(f"\ncurves: {out_dir / 'curves.png'}   runs: {out_dir}")
        print("One seed, one short budget: a difference smaller than a few tenths of a point is noise.")
        return 0

    return _run_user_errors(run)


# ---------------------------------------------------------------------------------------------
# statelayers export


def _args_export(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder of an image classifier (statelayers train)")
    p.add_argument("out_dir", metavar="OUT_DIR", help="the folder to write (new, or empty): config.json, "
                   "model.safetensors, README.md")
    p.add_argument("--weights", default="best", choices=("best", "last", "last-ema"),
                   help="best.safetensors (default), or the last checkpoint's model / EMA weights")
    p.add_argument("--repo-id", default=None, metavar="USER/REPO",
                   help="the Hugging Face repository the model card's example loads from (default: the folder)")


def cmd_export(args: argparse.Namespace) -> int:
    """Write a trained image classifier as timm's hub folder (what timm.models.push_to_hf_hub uploads):
    config.json, model.safetensors and a model card with the run's metrics, recipe and command.
    timm.create_model("local-dir:OUT_DIR", pretrained=True) loads it after `import statelayers`."""

    def run() -> int:
        from .tools.export import export_run

        out = export_run(args.run_dir, args.out_dir, weights=args.weights, repo_id=args.repo_id)
        print(f"wrote {out}: load it with timm.create_model(\"local-dir:{out}\", pretrained=True) "
              "after `import statelayers`")
        return 0

    return _run_user_errors(run)


# ---------------------------------------------------------------------------------------------
# statelayers generate


def _args_generate(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder of a language model (statelayers train on "
                   "fortunes, ptb or wikitext2)")
    p.add_argument("--prompt", default="The ", help="the text to continue (default: 'The ')")
    p.add_argument("--tokens", type=int, default=200, help="tokens to generate: bytes or words (default: 200)")
    p.add_argument("--temperature", type=float, default=0.8,
                   help="sampling temperature; 0 picks the most likely token (default: 0.8)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling (default: 0)")
    p.add_argument("--weights", default="best", choices=("best", "last"),
                   help="best.safetensors (default) or the last checkpoint's weights")


def cmd_generate(args: argparse.Namespace) -> int:
    """Continue a prompt with a trained language model, one token at a time through the model's streaming
    state (causal S7 / S5 / S6 models), and print the prompt and its continuation."""

    def run() -> int:
        from .tools.generate import generate_from_run

        print(generate_from_run(args.run_dir, args.prompt, args.tokens, temperature=args.temperature,
                                seed=args.seed, weights=args.weights))
        return 0

    return _run_user_errors(run)


# ---------------------------------------------------------------------------------------------
# statelayers cam / make-coco-demo


def _args_cam(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model name(s), comma-separated: one column each")
    p.add_argument("--checkpoint", required=True,
                   help="one per model, comma-separated: a .safetensors file or a run folder (best.safetensors)")
    p.add_argument("--images", nargs="+", required=True, metavar="IMAGE", help="image files: one row each")
    p.add_argument("--method", default="scorecam", choices=("scorecam", "gradcam"),
                   help="Score-CAM (masks the input by each channel) or Grad-CAM (weights by gradients) "
                        "(default: scorecam)")
    p.add_argument("--out", default="cam.png", help="PNG to write (default: cam.png)")
    p.add_argument("--img-size", type=int, default=None, help="input side (default: the run's, or the model's)")
    p.add_argument("--target-class", type=int, default=None, help="explain this class (default: the prediction)")
    p.add_argument("--batch-size", type=int, default=32, help="Score-CAM: masked inputs per forward pass")
    p.add_argument("--cell-px", type=int, default=200, help="size of one grid cell in pixels")


def cmd_cam(args: argparse.Namespace) -> int:
    """Score-CAM (or Grad-CAM) of the last stage of one or more classifiers on some images, in one PNG:
    a row per image, the input then one overlay per model (the S6LA paper's Figures 6-7)."""
    models = [m for m in args.model.split(",") if m]
    ckpts = [c for c in args.checkpoint.split(",") if c]
    if len(models) != len(ckpts):
        return _error(f"{len(models)} model(s) but {len(ckpts)} checkpoint(s): give one checkpoint per model")

    def run() -> int:
        from pathlib import Path

        from .tools.cam import compute_cams, load_classifier, render_cam_grid

        clfs = [load_classifier(m, c, img_size=args.img_size) for m, c in zip(models, ckpts)]
        result = compute_cams(clfs, args.images, args.method, batch_size=args.batch_size,
                              target_class=args.target_class)
        out = render_cam_grid(result, clfs, args.out, method=args.method, cell_px=args.cell_px,
                              image_names=[Path(p).name for p in args.images])
        for img, preds in zip(args.images, result.predictions):
            print(f"{img}: " + "  ".join(f"{m} -> class {k}" for m, k in zip(models, preds)))
        print(f"{args.method}: {out}")
        return 0

    return _run_user_errors(run)


def _args_make_coco_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("out_dir", metavar="OUT_DIR", help="folder to write (images/ and annotations/)")
    p.add_argument("--images", type=int, default=200, help="training images (default 200)")
    p.add_argument("--val-images", type=int, default=None, help="validation images (default: a quarter)")
    p.add_argument("--canvas", type=int, default=128, help="image side in pixels (default 128)")
    p.add_argument("--per-image", type=int, nargs=2, default=(1, 4), metavar=("MIN", "MAX"),
                   help="items per image (default 1 4)")
    p.add_argument("--source", default="auto", choices=("auto", "fashion_mnist", "digits"),
                   help="items: Fashion-MNIST (Debian's dataset-fashion-mnist) or scikit-learn digits; auto: "
                        "Fashion-MNIST when installed")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")


def cmd_make_coco_demo(args: argparse.Namespace) -> int:
    """Write a small COCO-format detection / instance-segmentation set made of real images (Fashion-MNIST
    items pasted onto canvases, with boxes and masks), to try `statelayers train --task detection` offline."""

    def run() -> int:
        from .data.coco import make_fashion_coco

        root = make_fashion_coco(args.out_dir, args.images, n_val=args.val_images, canvas=args.canvas,
                                 per_image=tuple(args.per_image), seed=args.seed, source=args.source)
        print(f"wrote {root}/images and {root}/annotations/instances_{{train,val}}.json")
        print(f"try: {PROG} train --task detection --data {root} --model faster_rcnn --model-kwargs "
              f"backbone=s6la_resnet18 min_size={args.canvas} max_size={args.canvas} fpn_channels=64 "
              "--epochs 6 --warmup-steps 50")
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
    Command("export", "write a trained classifier as timm's hub folder (config.json, weights, model card)",
            _args_export, cmd_export),
    Command("generate", "continue a prompt with a trained language model (streaming, token by token)",
            _args_generate, cmd_generate),
    Command("demo", "vanilla vs S6LA small ResNet, same recipe and budget, side by side", _args_demo, cmd_demo),
    Command("cam", "Score-CAM / Grad-CAM of the last stage, models side by side", _args_cam, cmd_cam),
    Command("make-coco-demo", "write a small COCO-format detection set from real images", _args_make_coco_demo,
            cmd_make_coco_demo),
)


def _installed_version() -> str:
    """The installed distribution's version, read from its metadata: importing ``statelayers._version`` would import
    the package (torch, every model) first."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("statelayers")
    except PackageNotFoundError:
        return "(not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="statelayers: S6LA / S7 models and tools.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_installed_version()}")
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

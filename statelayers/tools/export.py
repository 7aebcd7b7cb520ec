"""`statelayers export RUN_DIR OUT_DIR`: a trained image classifier as timm's hub folder, to share.

OUT_DIR gets what `timm.models.push_to_hf_hub` uploads, written by timm's own `save_for_hf`:

    config.json        architecture, num_classes, num_features, model_args, label_names, and a pretrained_cfg
                       holding the run's preprocessing (input size, mean/std, crop_pct, interpolation)
    model.safetensors  the weights (the run's best by default)
    README.md          a model card: the run's metrics, recipe and the command that trains it again

`timm.create_model("local-dir:OUT_DIR", pretrained=True)` (after `import statelayers`, which registers the
architecture) then gives the run's logits, and `timm.data.resolve_data_config(model=m)` its preprocessing. Upload the
folder as it is (`huggingface-cli upload USER/REPO OUT_DIR`) and load it with "hf-hub:USER/REPO".

Everything the export needs is in the run folder (config.yaml records what the data fixed: classes, channels, size,
normalisation), so the data need not be present. The folder appears whole: it is written under a temporary name and
renamed into place, and an existing non-empty OUT_DIR is refused, never replaced.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import shutil
import tempfile
from pathlib import Path

import torch

from ..checkpoint import TEMP_PREFIX, CheckpointError, latest_checkpoint, load_weights, verify_checkpoint
from ..engine.config import TrainConfig
from ..engine.rundir import read_config, read_metrics

__all__ = ["WEIGHTS", "export_run", "train_command"]

WEIGHTS = ("best", "last", "last-ema")
HUB_FILES = ("config.json", "model.safetensors", "README.md")

# config fields that say where and how a run was kept, not what it trained: left out of the reproducing command
_WHERE = ("output", "name", "overwrite", "resume", "quiet", "workers", "eval_batch_size", "ckpt_every")
# always written, so that the command reads on its own
_ALWAYS = ("model", "data", "recipe", "epochs", "seed")


# -- the command that trains the run again ---------------------------------------------------------------------


def _flag_value(value) -> str:
    """A value as the CLI reads it back (KEY=VALUE values are parsed as YAML)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_flag_value(v) for v in value) + "]"
    return str(value)


def train_command(saved: dict) -> str:
    """`statelayers train ...` that trains the run whose config.yaml is ``saved`` again: the model, data, recipe,
    epochs and seed, and every setting that differs from the recipe's. Under torchrun when it ran on many
    processes (``--batch-size`` is per process)."""
    base = TrainConfig(model=saved["model"], data=saved["data"], task=saved.get("task"),
                       recipe=saved.get("recipe")).resolved()
    args: list[str] = []
    for f in dataclasses.fields(TrainConfig):
        name = f.name
        if name in _WHERE or name not in saved:
            continue
        value, default = saved[name], getattr(base, name)
        if name == "task" or (name not in _ALWAYS and value == default):
            continue
        if value is None:
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + name.replace("_", "-"))
        elif isinstance(value, dict):
            default = default or {}
            items = [f"{k}={_flag_value(v)}" for k, v in value.items() if name == "model_kwargs" or default.get(k) != v]
            if items:
                args += [flag, *items]
        elif isinstance(value, list):
            args += [flag, *map(str, value)]
        else:
            args += [flag, str(value)]
    world = int(saved.get("world_size") or 1)
    head = (["torchrun", "--standalone", f"--nproc_per_node={world}", "-m", "statelayers", "train"] if world > 1
            else ["statelayers", "train"])
    return shlex.join(head + args)


# -- what the run's model is and how its inputs were made ------------------------------------------------------


def _model_args(saved: dict, run_dir: Path) -> dict:
    """The keyword arguments of `timm.create_model` that build the run's model: what the data fixed (classes,
    channels) and the user's --model-kwargs. Training-only settings (stochastic depth) stay out."""
    info = saved.get("data_info") or {}
    if "num_classes" not in info or "in_chans" not in info:
        raise CheckpointError(f"{run_dir} does not record its data (no data_info in config.yaml)")
    return {"num_classes": int(info["num_classes"]), "in_chans": int(info["in_chans"]),
            **dict(saved.get("model_kwargs") or {})}


def _data_config(saved: dict) -> dict:
    """The preprocessing of the run's evaluation, as timm's pretrained-cfg fields (`statelayers.data.images`):
    ImageFolder images are resized to img_size / crop_pct and centre-cropped; the tensor datasets (digits,
    Fashion-MNIST) are used whole, resized bilinearly where img_size differs from theirs."""
    info = saved["data_info"]
    size = int(info["img_size"])
    aug = saved.get("train_aug") or {}
    if info.get("name") == "imagefolder":
        crop_pct = aug.get("crop_pct", 1.0 if saved.get("img_size") is None else 0.875)
        interpolation = aug.get("interpolation", "bilinear")
        interpolation = "bilinear" if interpolation == "random" else interpolation
    else:
        crop_pct, interpolation = 1.0, "bilinear"
    return dict(input_size=(int(info["in_chans"]), size, size), mean=tuple(info["mean"]), std=tuple(info["std"]),
                crop_pct=float(crop_pct), crop_mode="center", interpolation=interpolation)


def _weights_file(run_dir: Path, weights: str) -> Path:
    if weights == "best":
        return run_dir / "best.safetensors"
    ckpt = latest_checkpoint(run_dir / "checkpoints")
    if ckpt is None:
        raise CheckpointError(f"{run_dir} has no checkpoint to take {weights!r} weights from")
    verify_checkpoint(ckpt)
    path = ckpt / ("ema.safetensors" if weights == "last-ema" else "model.safetensors")
    if not path.is_file():
        raise CheckpointError(f"{ckpt} has no {path.name}" + (" (the run kept no EMA: train with --ema)"
                                                            if weights == "last-ema" else ""))
    return path


def _pool_size(model: torch.nn.Module, input_size: tuple) -> tuple[int, int] | None:
    """The spatial size of `forward_features` at ``input_size`` (None for token outputs: ViTs)."""
    if model.pretrained_cfg.get("pool_size") is None:
        return None
    with torch.no_grad():
        feats = model.eval().forward_features(torch.zeros(1, *input_size))
    fmt = getattr(model, "output_fmt", "NCHW")
    return (feats.shape[1], feats.shape[2]) if fmt == "NHWC" else (feats.shape[-2], feats.shape[-1])


# -- the model card --------------------------------------------------------------------------------------------


def _pct(x) -> str:
    return "" if x in (None, "") else f"{100 * float(x):.2f}"


def _metrics_table(rows: list[dict], limit: int = 30) -> str:
    if len(rows) > limit:  # a long run: every k-th epoch and the last
        k = -(-len(rows) // limit)
        rows = rows[::k] + ([rows[-1]] if (len(rows) - 1) % k else [])
    lines = ["| epoch | step | lr | train loss | eval loss | top-1 % | top-5 % | EMA top-1 % |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        loss = r.get("eval_loss")
        lines.append(f"| {r.get('epoch')} | {r.get('step')} | {float(r.get('lr') or 0):.3g} | "
                     f"{float(r.get('train_loss') or 0):.4f} | {'' if loss in (None, '') else f'{float(loss):.4f}'} | "
                     f"{_pct(r.get('eval_acc'))} | {_pct(r.get('eval_top5'))} | {_pct(r.get('ema_eval_acc'))} |")
    return "\n".join(lines)


def _model_card(saved: dict, rows: list[dict], meta: dict, weights: str, model: torch.nn.Module, cfg: dict,
                model_args: dict, repo_hint: str) -> str:
    from .._version import __version__

    name, data, info = saved["model"], saved["data"], saved["data_info"]
    paper = model.pretrained_cfg.get("paper_ids", "")
    paper_name = model.pretrained_cfg.get("paper_name", "")
    params = sum(p.numel() for p in model.parameters())
    which = {"best": "the run's best evaluation (best.safetensors"
                     + (", the EMA weights" if saved.get("ema") else "") + ")",
             "last": "the run's last checkpoint (its model weights)",
             "last-ema": "the run's last checkpoint (its EMA weights)"}[weights]
    score = meta.get("eval_acc")
    recipe_keys = ("recipe", "opt", "lr_resolved", "momentum", "weight_decay", "sched", "epochs", "warmup_epochs",
                   "min_lr", "global_batch", "batch_size", "world_size", "grad_accum", "img_size", "train_aug",
                   "smoothing", "mixup", "cutmix", "drop_path", "clip_grad", "amp", "ema", "ema_decay", "seed",
                   "subset")
    recipe = "\n".join(f"| {k} | {saved.get(k)!s} |" for k in recipe_keys if k in saved)
    card = [
        "---",
        "library_name: timm",
        "license: apache-2.0",
        "tags:",
        "- image-classification",
        "- timm",
        "- statelayers",
        "---",
        f"# {name} trained on {data}",
        "",
        f"A `{name}` image classifier ({paper_name}, {paper}) trained with statelayers {__version__} on `{data}` "
        f"({info.get('num_classes')} classes, {info.get('train_size')} training and {info.get('eval_size')} "
        f"evaluation images). The weights are {which}, from step {meta.get('step', '?')}"
        + (f", top-1 {_pct(score)} % on the evaluation split." if score else "."),
        "",
        "## Use",
        "",
        "```python",
        "import statelayers  # registers the architecture with timm",
        "import timm",
        "",
        f'model = timm.create_model("{repo_hint}", pretrained=True).eval()',
        "config = timm.data.resolve_data_config(model=model)  # the run's input size, mean/std and crop",
        "transform = timm.data.create_transform(**config)",
        "logits = model(transform(image).unsqueeze(0))  # image: a PIL image",
        "```",
        "",
        "## Model",
        "",
        "| | |",
        "|---|---|",
        f"| architecture | `{name}` |",
        f"| model_args | `{json.dumps(model_args)}` |",
        f"| parameters | {params:,} |",
        f"| input | {cfg['input_size'][0]} x {cfg['input_size'][1]} x {cfg['input_size'][2]} |",
        f"| mean / std | {list(cfg['mean'])} / {list(cfg['std'])} |",
        f"| crop_pct / interpolation | {cfg['crop_pct']} / {cfg['interpolation']} |",
        "",
        "## Results",
        "",
        f"On the evaluation split of `{data}`, per epoch (metrics.csv of the run):",
        "",
        _metrics_table(rows),
        "",
        "## Training",
        "",
        "The command that trains it again (one seed: a difference of a few tenths of a point between seeds is "
        "noise):",
        "",
        "```bash",
        train_command(saved),
        "```",
        "",
        "| setting | value |",
        "|---|---|",
        recipe,
        "",
        "## Citation",
        "",
        f"{paper_name}. {paper}." if paper else "",
        "",
    ]
    return "\n".join(card)


# -- the export ------------------------------------------------------------------------------------------------


def _check_out_dir(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out} already exists and is not empty: export into a new folder (nothing is replaced)")
    parent = out.parent
    while not parent.exists() and parent.parent != parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{out} cannot be made: {parent} is not a writable folder")


def export_run(run_dir: str | Path, out_dir: str | Path, *, weights: str = "best",
               repo_id: str | None = None) -> Path:
    """Write timm's hub folder of the image classifier trained in ``run_dir`` to ``out_dir`` (module docstring).

    ``weights``: "best" (best.safetensors, what the run's evaluation picked), "last" or "last-ema" (the last
    checkpoint's model or EMA weights). ``repo_id``: the hub repository the card's example loads from (default:
    the local folder). Weights are verified (SHA-256) before they are exported; OUT_DIR must not hold anything."""
    import timm

    from .. import models  # noqa: F401  (registers the architectures with timm)

    run_dir, out = Path(run_dir), Path(out_dir)
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {', '.join(WEIGHTS)}, got {weights!r}")
    saved = read_config(run_dir)
    if saved.get("task") != "image":
        raise ValueError(f"{run_dir} is a {saved.get('task')!r} run: export writes timm's image-classifier folder, "
                         "for runs of task 'image'")
    _check_out_dir(out)
    path = _weights_file(run_dir, weights)
    model_args = _model_args(saved, run_dir)
    cfg = _data_config(saved)
    try:
        model = timm.create_model(saved["model"], **model_args)
    except TypeError as e:
        raise CheckpointError(f"{saved['model']} cannot be built with the run's model_args {model_args}: {e}") from e
    meta = load_weights(model, path, "weights", expect_model=saved["model"])
    model.eval()
    cfg["pool_size"] = _pool_size(model, cfg["input_size"])
    model.pretrained_cfg = model.default_cfg = {**model.pretrained_cfg, **cfg, "num_classes": model_args["num_classes"]}
    rows = read_metrics(run_dir) if (run_dir / "metrics.csv").is_file() else []
    card = _model_card(saved, rows, meta, weights, model, cfg, model_args, f"hf-hub:{repo_id}" if repo_id
                       else f"local-dir:{out.resolve()}")

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f"{TEMP_PREFIX}export-{out.name}."))
    try:
        labels = [str(c) for c in (saved["data_info"].get("classes") or [])]
        model_config = {"label_names": labels} if len(labels) == model_args["num_classes"] else {}
        timm.models.save_for_hf(model, str(tmp), model_config=model_config, model_args=model_args,
                                safe_serialization=True)
        (tmp / "README.md").write_text(card, encoding="utf-8")
        missing = [f for f in HUB_FILES if not (tmp / f).is_file()]
        if missing:
            raise RuntimeError(f"timm's save_for_hf wrote no {missing}")
        if out.is_dir():
            out.rmdir()  # empty (checked above); a rename does not replace a folder
        os.rename(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out

"""Visual explanations of classifiers, as the S6LA paper's Figures 6-7 (App. C.3): Score-CAM or Grad-CAM
(pytorch-grad-cam) of the last stage, several models side by side.

The target layer is the output of the model's last stage, the features the head pools (the paper's "end
convolutional layer"; ``layer4[-1]`` of a ResNet-50, ``layer3[-1]`` of the CIFAR-style ResNets). It is read
through timm's feature API (``forward_intermediates``), because an S6LA / RLA model does not call its blocks
as modules (the state is threaded through them), so a hook on ``layer4[-1]`` would never fire.

    statelayers cam --model resnet50,s6la_resnet50 --checkpoint runs/r50,runs/s6la50 --images a.jpg b.jpg

Score-CAM runs one forward pass per channel of the last stage (2,048 for a ResNet-50): minutes per image on
a CPU at 224 px. Grad-CAM needs one forward and one backward pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from .._extras import require

__all__ = ["CAM_METHODS", "CamResult", "LoadedClassifier", "load_classifier", "compute_cams", "render_cam_grid"]

CAM_METHODS = ("scorecam", "gradcam")


@dataclass
class LoadedClassifier:
    name: str
    model: nn.Module
    in_chans: int
    img_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: list[str] = field(default_factory=list)


def _read_run(checkpoint: Path) -> tuple[Path, dict]:
    if checkpoint.is_dir():
        import yaml

        cfg_path = checkpoint / "config.yaml"
        cfg = yaml.safe_load(cfg_path.read_text()) if cfg_path.is_file() else {}
        return checkpoint / "best.safetensors", cfg or {}
    return checkpoint, {}


def load_classifier(model_name: str, checkpoint: str | Path, *, img_size: int | None = None,
                    model_kwargs: dict | None = None) -> LoadedClassifier:
    """A timm / statelayers classifier with the weights of ``checkpoint`` (a .safetensors file or an engine run
    folder, whose best.safetensors is used), in eval mode, with its input size and normalisation: the run's
    (config.yaml) when there is one, else the model's pretrained_cfg; classes and channels are read from the
    checkpoint's tensors when there is no run config."""
    import timm
    from safetensors import safe_open

    import statelayers.models  # noqa: F401  (registers the models with timm)

    from ..checkpoint import CheckpointError, load_weights

    if not timm.is_model(model_name):
        raise ValueError(f"unknown model {model_name!r}; `statelayers models` lists ours, any timm name works too")
    path, run = _read_run(Path(checkpoint))
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if run.get("model") not in (None, model_name):
        raise CheckpointError(f"{checkpoint} is a run of {run['model']!r}, not {model_name!r}")
    info = run.get("data_info") or {}
    kwargs = dict(run.get("model_kwargs") or {})
    kwargs.update(model_kwargs or {})
    default = timm.models.get_pretrained_cfg(model_name)
    default = default.to_dict() if default is not None else {}
    if info:
        num_classes, in_chans = info["num_classes"], info["in_chans"]
    else:  # read them off the checkpoint's classifier and first conv
        try:
            with safe_open(str(path), "pt") as f:
                shapes = {k: f.get_slice(k).get_shape() for k in f.keys()}
        except Exception as e:  # safetensors raises several types for damaged files
            raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({e})") from e
        head = default.get("classifier", "fc")
        head = head if isinstance(head, str) else head[0]
        first = default.get("first_conv", "conv1")
        first = first if isinstance(first, str) else first[0]
        num_classes = shapes.get(f"{head}.weight", [default.get("num_classes", 1000)])[0]
        in_chans = shapes.get(f"{first}.weight", [0, default.get("input_size", (3,))[0]])[1]
    model = timm.create_model(model_name, pretrained=False, num_classes=num_classes, in_chans=in_chans, **kwargs)
    load_weights(model, path)
    model.eval()
    cfg = model.pretrained_cfg or default
    size = img_size or info.get("img_size") or cfg.get("input_size", (in_chans, 224, 224))[-1]
    mean = tuple(info.get("mean") or cfg.get("mean") or (0.5,) * in_chans)
    std = tuple(info.get("std") or cfg.get("std") or (0.5,) * in_chans)
    if len(mean) != in_chans:  # e.g. ImageNet mean for a 1-channel model
        mean, std = (float(np.mean(mean)),) * in_chans, (float(np.mean(std)),) * in_chans
    return LoadedClassifier(model_name, model, in_chans, int(size), mean, std, list(info.get("classes") or []))


class _LastStageTap(nn.Module):
    """The classifier, with its last-stage features passing through ``tap`` (an identity the CAM hooks)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model, self.tap = model, nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        final, _ = self.model.forward_intermediates(x, indices=1)
        if final.ndim != 4:
            raise ValueError(f"{type(self.model).__name__}'s last features have shape {tuple(final.shape)}; "
                             "CAMs here need a CNN's (batch, channels, height, width) maps")
        return self.model.forward_head(self.tap(final))


def _load_image(path: str | Path, clf: LoadedClassifier) -> tuple[torch.Tensor, np.ndarray]:
    """(normalised input (1, C, S, S), the resized image as float RGB (S, S, 3) in [0, 1] for display)."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("L" if clf.in_chans == 1 else "RGB").resize((clf.img_size, clf.img_size), Image.BILINEAR)
        arr = np.asarray(im, dtype=np.float32) / 255.0
    chw = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    x = (torch.from_numpy(chw.copy()) - torch.tensor(clf.mean)[:, None, None]) / torch.tensor(clf.std)[:, None, None]
    rgb = np.repeat(arr[..., None], 3, axis=2) if arr.ndim == 2 else arr
    return x[None].float(), rgb


@dataclass
class CamResult:
    cams: np.ndarray  # (images, models, S, S) in [0, 1] (each model at its own input size, resized to the first's)
    predictions: list[list[int]]  # [image][model] predicted class
    images: list[np.ndarray]  # the inputs as shown, RGB float (S, S, 3)


def compute_cams(classifiers: list[LoadedClassifier], images: list[str | Path], method: str = "scorecam",
                 batch_size: int = 32, target_class: int | None = None) -> CamResult:
    """Score-CAM / Grad-CAM maps of the last stage of every classifier on every image, for its predicted class
    (or ``target_class``)."""
    if method not in CAM_METHODS:
        raise ValueError(f"method must be one of {', '.join(CAM_METHODS)}, got {method!r}")
    gc = require("pytorch_grad_cam", "statelayers cam")
    targets_mod = require("pytorch_grad_cam.utils.model_targets", "statelayers cam")
    if not classifiers or not images:
        raise ValueError("need at least one model and one image")
    for p in images:
        if not Path(p).is_file():
            raise FileNotFoundError(f"image {p} does not exist")
    size = classifiers[0].img_size
    cams = np.zeros((len(images), len(classifiers), size, size), dtype=np.float32)
    preds: list[list[int]] = [[] for _ in images]
    shown: list[np.ndarray] = []
    for j, clf in enumerate(classifiers):
        tapped = _LastStageTap(clf.model).eval()
        cam = (gc.ScoreCAM if method == "scorecam" else gc.GradCAM)(model=tapped, target_layers=[tapped.tap])
        cam.batch_size = batch_size  # Score-CAM: masked copies of the input per forward pass
        try:
            for i, p in enumerate(images):
                x, rgb = _load_image(p, clf)
                with torch.no_grad():
                    pred = int(tapped(x).argmax(dim=1).item())
                cls = pred if target_class is None else int(target_class)
                grey = cam(input_tensor=x, targets=[targets_mod.ClassifierOutputTarget(cls)])[0]
                if grey.shape != (size, size):
                    grey = torch.nn.functional.interpolate(torch.from_numpy(grey)[None, None], size=(size, size),
                                                           mode="bilinear", align_corners=False)[0, 0].numpy()
                cams[i, j] = grey
                preds[i].append(pred)
                if j == 0:
                    shown.append(rgb)
        finally:
            cam.activations_and_grads.release()
    return CamResult(cams, preds, shown)


def render_cam_grid(result: CamResult, classifiers: list[LoadedClassifier], out: str | Path, *,
                    method: str = "scorecam", labels: list[str] | None = None, cell_px: int = 200,
                    image_names: list[str] | None = None) -> Path:
    """One PNG: a row per image, columns = the input and one CAM overlay per model (titles: model and
    predicted class). Exactly ``(1 + models) * cell_px`` by ``images * cell_px`` pixels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    overlay = require("pytorch_grad_cam.utils.image", "statelayers cam").show_cam_on_image
    n_img, n_mod = result.cams.shape[:2]
    dpi = 100
    fig, axes = plt.subplots(n_img, n_mod + 1, figsize=((n_mod + 1) * cell_px / dpi, n_img * cell_px / dpi),
                             dpi=dpi, squeeze=False)
    labels = labels or [c.name for c in classifiers]
    for i in range(n_img):
        rgb = result.images[i].astype(np.float32)
        axes[i, 0].imshow(rgb)
        axes[i, 0].set_title(image_names[i] if image_names else "input", fontsize=7)
        for j, clf in enumerate(classifiers):
            pred = result.predictions[i][j]
            name = clf.classes[pred] if pred < len(clf.classes) else str(pred)
            axes[i, j + 1].imshow(overlay(rgb, result.cams[i, j], use_rgb=True))
            axes[i, j + 1].set_title(f"{labels[j]}\n{method}, pred {name}", fontsize=7)
    for ax in axes.flat:
        ax.axis("off")
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.9, wspace=0.05, hspace=0.3)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)  # no bbox_inches="tight": the size stays (1 + models) x images cells
    plt.close(fig)
    return out

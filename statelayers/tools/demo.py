"""`statelayers demo`: a vanilla and an S6LA small-image ResNet, same recipe, budget and seed.

Trains both on real Fashion-MNIST when Debian's `dataset-fashion-mnist` is installed (else on
scikit-learn's digits), then prints params, GMACs, training images/s and test accuracy side by
side and writes one plot of both runs' curves. It claims nothing beyond what that run measured.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from ..engine import TrainConfig, plot_curves, read_metrics, train
from ..engine.rundir import claim_run_dir

__all__ = ["DemoRow", "DemoProgress", "format_duration", "run_demo", "default_demo_data"]

PAIR = ("cifar_resnet20", "s6la_cifar_resnet20")


@dataclass
class DemoRow:
    model: str
    params: int
    gmacs: float
    images_per_s: float
    test_acc: float
    run_dir: Path


def default_demo_data() -> str:
    from ..data.images import FASHION_MNIST_DIR

    return "fashion_mnist" if (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file() else "digits"


def run_demo(data: str | None = None, *, epochs: int | None = None, subset: int | None = None, seed: int = 0,
             output: str = "runs", models: tuple[str, ...] = PAIR, quiet: bool = True) -> tuple[list[DemoRow], Path]:
    from .profile import count_macs

    data = data or default_demo_data()
    fashion = data.replace("-", "_") == "fashion_mnist"
    # budget: a few minutes for both models on 2 CPU cores
    epochs = epochs or (4 if fashion else 15)
    subset = subset if subset is not None else (10000 if fashion else None)
    # its own folder, even when another demo starts in the same second (-1, -2, ... as a run's default name)
    out_dir = claim_run_dir(output, None, f"demo-{time.strftime('%Y%m%d-%H%M%S')}", quiet=True)
    rows, curves = [], {}
    progress = DemoProgress(total_epochs=epochs * len(models))
    for name in models:
        cfg = TrainConfig(model=name, data=data, recipe="small", epochs=epochs, subset=subset, seed=seed,
                          output=str(out_dir), name=name, quiet=quiet,
                          train_aug=None if fashion else {"hflip": 0.0, "crop_pad": 0})
        print(f"training {name} on {data} ({epochs} epochs{f', {subset} images' if subset else ''}) ...", flush=True)
        progress.start_run(name, epochs)
        result = train(cfg, on_epoch_end=progress.epoch_ended)
        import timm

        import statelayers.models  # noqa: F401  (registers the models with timm)

        info = result.final_metrics
        model = timm.create_model(name)
        size = 28 if fashion else 8
        macs = count_macs(model, (1, size, size))
        rows.append(DemoRow(name, result.params, macs / 1e9, result.images_per_s, info["eval_acc"], result.run_dir))
        curves[name] = read_metrics(result.run_dir)
    plot_curves(curves, out_dir / "curves.png", f"same recipe, budget and seed on {data}")
    return rows, out_dir


def format_duration(seconds: float) -> str:
    """65 -> '1:05', 3725 -> '1:02:05'."""
    seconds = max(0, round(seconds))
    h, rest = divmod(seconds, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


class DemoProgress:
    """One line per finished epoch of the demo's runs, with the time so far and an estimate of the time left:
    the mean time per epoch so far (all runs together) times the epochs still to run. ``epoch_ended`` is the
    engine's ``on_epoch_end`` callback."""

    def __init__(self, total_epochs: int, out=None):
        self.total_epochs, self.out = total_epochs, out
        self.started_at = time.time()
        self.done = 0  # epochs finished, all runs
        self.name, self.epochs = "", 0

    def start_run(self, name: str, epochs: int) -> None:
        self.name, self.epochs = name, epochs

    def epoch_ended(self, row: dict) -> None:
        self.done += 1
        elapsed = time.time() - self.started_at
        left = elapsed / self.done * max(self.total_epochs - self.done, 0)
        print(f"  {self.name}  epoch {int(row['epoch']) + 1}/{self.epochs}  eval_acc {float(row['eval_acc']):.4f}  "
              f"elapsed {format_duration(elapsed)}  remaining ~{format_duration(left)}", file=self.out, flush=True)


def format_rows(rows: list[DemoRow]) -> str:
    head = f"{'model':<22} {'params':>10} {'GMACs':>8} {'train img/s':>12} {'test acc':>9}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r.model:<22} {r.params:>10,} {r.gmacs:>8.4f} {r.images_per_s:>12.0f} {r.test_acc:>9.4f}")
    return "\n".join(lines)

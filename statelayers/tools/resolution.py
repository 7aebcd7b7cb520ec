"""Cost against input resolution: GMACs of a model and its S6LA counterpart at several input sizes, a linear
fit in the number of pixels, and a plot (the S6LA paper's Figure 5, App. C.1.2, which shows S6LA-PVTv2-b1
and claims the cost of S6LA is linear in the resolution).

    statelayers profile resnet50 --resolutions 224,288,352,416 --out macs_vs_resolution.png

MACs are counted as `statelayers.tools.profile.count_macs` counts them (torch's FlopCounterMode, FLOPs / 2, on fake
tensors). A convolutional network's MACs are exactly linear in the pixels when every stride divides the side
(multiples of 32 for a ResNet); attention over all tokens (PVTv2's last stage, ViTs) adds a quadratic term,
which the fit's R² shows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["LinearFit", "ResolutionProfile", "counterpart", "linear_fit", "profile_resolutions", "format_profile",
           "plot_profile"]


@dataclass(frozen=True)
class LinearFit:
    slope: float  # GMACs per megapixel
    intercept: float  # GMACs
    r2: float


@dataclass
class ResolutionProfile:
    resolutions: list[int]
    pixels: list[int]
    gmacs: dict[str, list[float]]  # model -> GMACs per resolution
    fits: dict[str, LinearFit]
    vanilla: str | None
    s6la: str | None


def counterpart(model: str) -> tuple[str | None, str | None]:
    """(vanilla, S6LA) names for ``model``: ``resnet50`` <-> ``s6la_resnet50``, ``pvt_v2_b1`` <->
    ``s6la_pvt_v2_b1``, ... The side that timm does not know is None."""
    import timm

    import statelayers.models  # noqa: F401  (registers the models with timm)

    if model.startswith("s6la_"):
        vanilla = model[len("s6la_"):]
        return (vanilla if timm.is_model(vanilla) else None), model
    s6la = f"s6la_{model}"
    return model, (s6la if timm.is_model(s6la) else None)


def linear_fit(x: Sequence[float], y: Sequence[float]) -> LinearFit:
    """Least-squares y = slope * x + intercept and its coefficient of determination R²."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 2:
        raise ValueError("a linear fit needs at least two resolutions")
    slope, intercept = np.polyfit(x, y, 1)
    resid = y - (slope * x + intercept)
    total = ((y - y.mean()) ** 2).sum()
    r2 = 1.0 - float((resid**2).sum() / total) if total > 0 else 1.0
    return LinearFit(float(slope), float(intercept), r2)


def _macs_at(model_name: str, resolutions: Sequence[int], in_chans: int | None, fake: bool) -> list[float]:
    import timm

    from .profile import count_macs

    cfg = timm.models.get_pretrained_cfg(model_name)
    fixed = cfg is not None and cfg.fixed_input_size  # e.g. ViT: position embeddings depend on the size
    kwargs = {} if in_chans is None else {"in_chans": in_chans}
    model = None if fixed else timm.create_model(model_name, pretrained=False, **kwargs)
    out = []
    for r in resolutions:
        m = model if model is not None else timm.create_model(model_name, pretrained=False, img_size=r, **kwargs)
        c = in_chans if in_chans is not None else m.pretrained_cfg.get("input_size", (3,))[0]
        out.append(count_macs(m, (c, r, r), fake=fake) / 1e9)
    return out


def profile_resolutions(model: str, resolutions: Sequence[int], *, with_counterpart: bool = True,
                        in_chans: int | None = None, fake: bool = True) -> ResolutionProfile:
    """GMACs of ``model`` (and its vanilla / S6LA counterpart) at square inputs of each side in
    ``resolutions``, with a linear fit of GMACs against megapixels per model (and of the S6LA - vanilla
    difference, keyed "S6LA extra")."""
    import timm

    import statelayers.models  # noqa: F401  (registers the models with timm)

    if not timm.is_model(model):
        raise ValueError(f"unknown model {model!r}; `statelayers models` lists ours, any timm name works too")
    res = sorted({int(r) for r in resolutions})
    if len(res) < 2 or min(res) < 8:
        raise ValueError(f"give at least two different resolutions of 8 px or more, got {list(resolutions)}")
    vanilla, s6la = counterpart(model) if with_counterpart else (None, None)
    names = [n for n in (vanilla, s6la) if n is not None] or [model]
    if model not in names:
        names = [model]
    pixels = [r * r for r in res]
    mpix = [p / 1e6 for p in pixels]
    gmacs = {n: _macs_at(n, res, in_chans, fake) for n in names}
    fits = {n: linear_fit(mpix, g) for n, g in gmacs.items()}
    if vanilla in gmacs and s6la in gmacs:
        extra = [b - a for a, b in zip(gmacs[vanilla], gmacs[s6la])]
        fits["S6LA extra"] = linear_fit(mpix, extra)
    return ResolutionProfile(res, pixels, gmacs, fits, vanilla if vanilla in gmacs else None,
                             s6la if s6la in gmacs else None)


def format_profile(p: ResolutionProfile) -> str:
    """Aligned table (resolution, pixels, GMACs per model, S6LA / vanilla, S6LA - vanilla) and the fits."""
    names = list(p.gmacs)
    both = p.vanilla is not None and p.s6la is not None
    header = ["input", "pixels", *[f"{n} GMACs" for n in names]] + (["ratio", "S6LA extra GMACs"] if both else [])
    rows = [header]
    for i, r in enumerate(p.resolutions):
        row = [f"{r}x{r}", f"{p.pixels[i]:,}", *[f"{p.gmacs[n][i]:.3f}" for n in names]]
        if both:
            a, b = p.gmacs[p.vanilla][i], p.gmacs[p.s6la][i]
            row += [f"{b / a:.4f}", f"{b - a:.3f}"]
        rows.append(row)
    widths = [max(len(row[k]) for row in rows) for k in range(len(header))]
    lines = ["  ".join(c.rjust(w) if k else c.ljust(w) for k, (c, w) in enumerate(zip(row, widths))) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("")
    lines.append("linear fit GMACs = a * megapixels + b:")
    for n, f in p.fits.items():
        lines.append(f"  {n:<24} a = {f.slope:.4f} GMACs/Mpx  b = {f.intercept:+.4f}  R² = {f.r2:.6f}")
    return "\n".join(lines)


def plot_profile(p: ResolutionProfile, out: str | Path) -> Path:
    """GMACs against megapixels, measured points and fitted lines, one colour per model (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mpix = np.asarray(p.pixels, dtype=np.float64) / 1e6
    grid = np.linspace(0, mpix.max() * 1.05, 50)
    fig, ax = plt.subplots(figsize=(6, 4.2))
    series = dict(p.gmacs)
    if p.vanilla is not None and p.s6la is not None:  # what S6LA adds, the paper's Figure 5
        series["S6LA extra"] = [b - a for a, b in zip(p.gmacs[p.vanilla], p.gmacs[p.s6la])]
    for k, (n, g) in enumerate(series.items()):
        f = p.fits[n]
        (line,) = ax.plot(mpix, g, "s" if n == "S6LA extra" else "o", label=f"{n} (R² = {f.r2:.5f})")
        ax.plot(grid, f.slope * grid + f.intercept, "--", color=line.get_color(), linewidth=1)
        if k == 0:
            for x, y, r in zip(mpix, g, p.resolutions):
                ax.annotate(f"{r}²", (x, y), textcoords="offset points", xytext=(4, -12), fontsize=7)
    ax.set(xlabel="input pixels (millions)", ylabel="GMACs", title="cost against input resolution")
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out

"""Optional dependencies, imported only where they are needed.

The layers and the models need torch, timm, safetensors and numpy only. The rest comes with extras:
``train`` (the training engine and the command line: pyyaml, tqdm, matplotlib, tensorboard, scikit-learn),
``numba`` (the fast CPU scan), ``detection`` (pycocotools; pytorch-grad-cam, imported as ``pytorch_grad_cam``,
for visual explanations) and ``seq`` (sktime, h5py: sequence datasets). A feature that needs one imports it
through `require`, which says which install command brings it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["MissingDependency", "require"]

# import name -> (PyPI name, extra that installs it); a dotted name is looked up before its parents
_PACKAGES = {
    "pycocotools": ("pycocotools", "detection"),
    "pytorch_grad_cam": ("grad-cam", "detection"),
    "matplotlib": ("matplotlib", "train"),
    "torch.utils.tensorboard": ("tensorboard", "train"),  # part of torch, but needs the tensorboard package
    "sklearn": ("scikit-learn", "train"),
    "yaml": ("pyyaml", "train"),
    "tqdm": ("tqdm", "train"),
    "numba": ("numba", "numba"),
    "h5py": ("h5py", "seq"),
    "sktime": ("sktime", "seq"),
}


class MissingDependency(ImportError):
    """An optional dependency is not installed; the message names the command that installs it."""


def _package_of(module: str) -> tuple[str, str]:
    """(PyPI name, extra) of ``module``: its own entry, else its nearest parent's, else its top-level name."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        name = ".".join(parts[:n])
        if name in _PACKAGES:
            return _PACKAGES[name]
    return parts[0], "detection"


def require(module: str, what: str = "this feature") -> ModuleType:
    """Import ``module`` (e.g. ``"pycocotools.coco"``) or raise :class:`MissingDependency`."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        pypi, extra = _package_of(module)
        raise MissingDependency(
            f"{what} needs the Python package {pypi!r}, which cannot be imported ({e}): "
            f'pip install "statelayers[{extra}]"'
        ) from e

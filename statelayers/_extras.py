"""Optional dependencies, imported only where they are needed.

Detection (pycocotools) and visual explanations (pytorch-grad-cam, imported as ``pytorch_grad_cam``) come
with the ``detection`` extra: ``pip install "statelayers[detection]"``. The rest of the package works
without them; a command that needs one says which install command brings it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["MissingDependency", "require"]

# import name -> (PyPI name, extra that installs it)
_PACKAGES = {
    "pycocotools": ("pycocotools", "detection"),
    "pytorch_grad_cam": ("grad-cam", "detection"),
}


class MissingDependency(ImportError):
    """An optional dependency is not installed; the message names the command that installs it."""


def require(module: str, what: str = "this feature") -> ModuleType:
    """Import ``module`` (e.g. ``"pycocotools.coco"``) or raise :class:`MissingDependency`."""
    top = module.split(".", 1)[0]
    try:
        return importlib.import_module(module)
    except ImportError as e:
        pypi, extra = _PACKAGES.get(top, (top, "detection"))
        raise MissingDependency(
            f"{what} needs the Python package {pypi!r}, which cannot be imported ({e}): "
            f'pip install "statelayers[{extra}]"'
        ) from e

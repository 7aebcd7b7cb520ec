"""Old import paths of public modules, kept working after the package was split into ``layers``, ``models``,
``data``, ``engine`` and ``tools``.

``import statelayers.scan`` (or ``from statelayers.scan import linear_scan``) returns the module
``statelayers.layers.scan`` itself, not a copy, so attributes, monkeypatching and ``isinstance`` behave the same
under either name. New code should use the new paths (the README's Layout table).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

# old module -> the module that holds its public names now
MOVED = {
    "statelayers.ssm": "statelayers.layers.selective",
    "statelayers.scan": "statelayers.layers.scan",
    "statelayers.s7": "statelayers.layers.s7",
    "statelayers.kernels": "statelayers.layers.kernels",
    "statelayers.seqdata": "statelayers.data.sequences",
    "statelayers.events": "statelayers.data.events",
    "statelayers.recipes": "statelayers.engine.recipes",
    "statelayers.profile": "statelayers.tools.profile",
    "statelayers.resolution": "statelayers.tools.resolution",
    "statelayers.cam": "statelayers.tools.cam",
    "statelayers.demo": "statelayers.tools.demo",
    "statelayers.detection": "statelayers.models.detectors",
    "statelayers.detection.data": "statelayers.data.coco",
    "statelayers.detection.evaluation": "statelayers.engine.tasks.detection",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old name in ``MOVED`` and loads it as the new module object."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in MOVED:
            return None
        # a package spec for old names that had submodules (statelayers.detection.data)
        is_package = any(name.startswith(fullname + ".") for name in MOVED)
        return importlib.util.spec_from_loader(fullname, self, is_package=is_package)

    def __init__(self):
        self._own: dict[str, tuple] = {}

    def create_module(self, spec):
        module = importlib.import_module(MOVED[spec.name])
        self._own[spec.name] = (module.__spec__, module.__loader__)
        return module

    def exec_module(self, module):
        # the new module is already executed; importlib has stamped the old name's spec on it: give its own back
        module.__spec__, module.__loader__ = self._own.pop(module.__spec__.name)


def install() -> None:
    if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
        sys.meta_path.append(_MovedModules())

"""The package's structure, checked from its source: no import cycles (lazy imports included), no private name
used across modules, no function written twice, and a lean install that imports and runs the models with only
torch, timm, safetensors and numpy."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import statelayers

PKG = Path(statelayers.__file__).parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _resolve(current: str, level: int, module: str | None) -> str:
    """The absolute name of ``from <level dots><module> import ...`` written in module ``current``."""
    if level == 0:
        return module or ""
    base = current.split(".") if _is_package(current) else current.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def _imports(name: str):
    """(line, imported module, imported name or None) for every import of a statelayers module in ``name``,
    at module level or inside functions."""
    tree = ast.parse(MODULES[name].read_text(), filename=str(MODULES[name]))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "statelayers":
                    yield node.lineno, alias.name, None
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(name, node.level, node.module)
            if target.split(".")[0] != "statelayers":
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in MODULES:  # `from package import submodule`
                    yield node.lineno, sub, None
                else:
                    yield node.lineno, target, alias.name


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for m in MODULES:
        for _, target, _ in _imports(m):
            if target in MODULES and target != m:
                graph[m].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_checker_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_lazy_imports_included():
    assert _cycles(_graph()) == []


def _owner(module: str) -> str:
    """The package a module belongs to (a package is its own owner)."""
    return module if _is_package(module) else module.rpartition(".")[0]


def test_no_private_name_used_across_modules():
    offences = []
    for m in MODULES:
        for line, target, imported in _imports(m):
            if target == m:
                continue
            leaf = target.rpartition(".")[2]
            if imported is not None and imported.startswith("_") and not imported.startswith("__"):
                offences.append(f"{m}:{line} imports {imported} from {target}")
            # a private module (models/_resnet_base.py) serves its own package only
            if leaf.startswith("_") and not leaf.startswith("__") and _owner(target) != _owner(m) \
                    and not _owner(m).startswith(_owner(target)):
                offences.append(f"{m}:{line} imports the private module {target}")
    assert offences == []


def test_no_function_or_class_written_twice():
    """The same function or class body defined in two modules is one helper kept in two places."""
    seen: dict[str, str] = {}
    twice = []
    for m, path in MODULES.items():
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, ast.FunctionDef | ast.ClassDef) and node.name != "_":
                body = ast.dump(ast.Module(body=node.body, type_ignores=[]))
                if len(node.body) < 2 and len(body) < 200:
                    continue  # one-liners (delegations, trivial fakes) are not helpers
                key = f"{node.name}:{body}"
                if key in seen:
                    twice.append(f"{node.name}: {seen[key]} and {m}")
                seen[key] = m
    assert twice == []


# not in a lean install (timm itself brings pyyaml and tqdm, through huggingface_hub)
LEAN_BLOCKED = ("matplotlib", "tensorboard", "sklearn", "numba", "triton", "pycocotools",
                "pytorch_grad_cam", "h5py", "sktime", "aeon", "tonic")


def test_lean_install_imports_and_runs_the_models():
    """With only the core dependencies (torch, timm, safetensors, numpy; none of the extras) the package imports,
    the models build and run, and a command that needs an extra says in one line which install brings it."""
    script = textwrap.dedent(f"""
        import sys
        for name in {LEAN_BLOCKED!r}:
            sys.modules[name] = None  # as if not installed: import raises, importlib.util.find_spec says None
        import timm, torch
        import statelayers
        from statelayers import TrainConfig, S7
        for name, shape in (("s6la_resnet18", (1, 3, 64, 64)), ("s6la_deit_tiny_patch16_224", (1, 3, 224, 224)),
                            ("s6la_cifar_resnet20", (2, 3, 32, 32)), ("s7_tiny", (2, 50, 3))):
            kw = dict(in_chans=3, num_classes=5)
            m = timm.create_model(name, **kw).eval()
            with torch.no_grad():
                assert m(torch.randn(*shape)).shape == (shape[0], 5), name
        from statelayers.cli import main
        rc = main(["train", "--model", "cifar_resnet20", "--data", "digits", "--epochs", "1"])
        assert rc == 2, rc
        print("LEAN OK")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "LEAN OK" in proc.stdout
    last = proc.stderr.strip().splitlines()[-1]  # (torch may warn before it that triton is missing)
    assert last.startswith("statelayers: error:") and "statelayers[train]" in last, proc.stderr[-2000:]


@pytest.mark.parametrize("old, new", [
    ("statelayers.ssm", "statelayers.layers.selective"),
    ("statelayers.scan", "statelayers.layers.scan"),
    ("statelayers.s7", "statelayers.layers.s7"),
    ("statelayers.seqdata", "statelayers.data.sequences"),
    ("statelayers.profile", "statelayers.tools.profile"),
    ("statelayers.detection", "statelayers.models.detectors"),
])
def test_old_import_paths_are_the_new_modules(old, new):
    import importlib

    assert importlib.import_module(old) is importlib.import_module(new)


PUBLIC_MODULES = ("statelayers", "statelayers.layers", "statelayers.models", "statelayers.data", "statelayers.engine")


def _public_callables():
    import importlib
    import inspect

    seen = set()
    for mod_name in PUBLIC_MODULES:
        mod = importlib.import_module(mod_name)
        for name in mod.__all__:
            obj = getattr(mod, name)
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            if inspect.isfunction(obj):
                yield f"{mod_name}.{name}", obj
            elif inspect.isclass(obj) and obj.__module__.startswith("statelayers"):
                for method in ("__init__", "forward", "step"):
                    fn = obj.__dict__.get(method)
                    if inspect.isfunction(fn) and fn.__module__.startswith("statelayers"):
                        yield f"{mod_name}.{name}.{method}", fn


def test_public_api_has_type_hints():
    """Every parameter and return of the functions and of the classes' __init__ / forward / step that the public
    modules export is annotated (what `py.typed` promises to a type checker)."""
    import inspect

    missing = []
    for where, fn in _public_callables():
        sig = inspect.signature(fn)
        for p in sig.parameters.values():
            if p.name in ("self", "cls") or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            if p.annotation is inspect.Parameter.empty:
                missing.append(f"{where}({p.name})")
        if fn.__name__ != "__init__" and sig.return_annotation is inspect.Signature.empty:
            missing.append(f"{where} -> ?")
    assert missing == []


# The layering the README's Layout table states: a package imports only packages of a lower rank (the foundation
# modules at the bottom, the command line at the top). models and data stand side by side and do not import each
# other.
RANKS = {"_extras": 0, "_version": 0, "_compat": 0, "checkpoint": 0, "layers": 1, "models": 2, "data": 2, "engine": 3,
         "tools": 4, "<top>": 5, "cli": 6, "__main__": 7}


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "<top>"


def test_packages_import_only_lower_layers():
    upward = []
    for m, targets in _graph().items():
        for t in targets:
            a, b = _package(m), _package(t)
            if a != b and RANKS[b] >= RANKS[a]:
                upward.append(f"{m} -> {t}")
    assert upward == []
    assert set(RANKS) >= {_package(m) for m in MODULES}  # every package has its place

"""The house rules, checked on the source: imports point down the layers, no import cycle at any level
(function-level imports included; `if TYPE_CHECKING:` imports are annotations only and not counted), no
function over 60 lines and no file over 450, nothing outside tests/ imports tests/, and the Python API
the README documents imports from its documented paths."""

from __future__ import annotations

import ast
import importlib
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# What each layer may import (besides itself). Read top-down: cli over bench over collection and exporter,
# those over the runtime and the reference model, everything over the contract.
ALLOWED = {
    "contract": set(),
    "runtime": {"contract"},
    "reference_model": {"contract"},
    "exporter": {"contract", "runtime", "reference_model"},
    "collection": {"contract", "runtime"},
    "ray": {"collection"},
    "serve": {"contract", "runtime", "collection"},
    "bench": {"contract", "runtime", "reference_model", "exporter", "collection", "serve"},
    "cli": {"contract", "runtime", "reference_model", "exporter", "collection", "bench", "serve"},
}
MAX_FUNCTION_LINES, MAX_FILE_LINES = 60, 450
DOCUMENTED = [("ijepa_deploy.runtime", ["Embedder", "EmbedConfig", "read_embeddings", "Manifest", "UserError"]),
              ("ijepa_deploy.ray", ["embed_dataset", "EmbedActor"]),
              ("ijepa_deploy.collection", ["embed_collection", "embed_dataset", "build_index", "query", "embed_to_file",
                                          "read_embeddings"]),
              ("ijepa_deploy.exporter", ["export", "ExportOptions"]),
              ("ijepa_deploy.reference_model", ["load_checkpoint", "IJepaEncoder", "get_variant"])]


def package_dirs() -> dict[str, Path]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    return {name: ROOT / folder for name, folder in config.items()}


def modules() -> dict[str, Path]:
    """Every product module by its import name (the deepest package folder that holds it names it)."""
    dirs = sorted(package_dirs().items(), key=lambda kv: -len(str(kv[1])))
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        owner = next(((name, folder) for name, folder in dirs if folder in path.parents), None)
        if owner is None or ".venv" in path.parts:
            continue
        name, folder = owner
        rel = path.relative_to(folder).with_suffix("").parts
        if any(part != p for part, p in zip(rel, rel)) or len(rel) > 1:
            continue  # a subpackage has its own package-dir entry
        out[name if rel == ("__init__",) else f"{name}.{rel[0]}"] = path
    return out


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, child.end_lineno + 1))
    return lines


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Every ijepa_deploy module `name` imports, at any level (absolute and relative). `from P import m`
    of a submodule m imports m (P, its parent package, is always initialized first anyway)."""
    tree = ast.parse(path.read_text())
    skip = _type_checking_lines(tree)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("ijepa_deploy")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            if base.startswith("ijepa_deploy"):
                out |= {f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names}
    return out


def _resolve(target: str, known: dict[str, Path]) -> str | None:
    while target and target not in known:
        target = target.rpartition(".")[0]
    return target or None


def layer(module: str) -> str:
    return module.split(".")[1]


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: {r for t in imports_of(name, path, known) if (r := _resolve(t, known)) and r != name}
            for name, path in known.items()}


def test_every_layer_imports_only_downward(graph):
    wrong = [f"{a} -> {b}" for a, targets in graph.items() for b in targets
             if layer(b) != layer(a) and layer(b) not in ALLOWED[layer(a)]]
    assert not wrong, wrong


def test_no_import_cycle_at_any_level(graph):
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, cycles


def test_no_function_or_file_is_too_long():
    sources = [p for p in ROOT.rglob("*.py") if ".venv" not in p.parts and "build" not in p.parts]
    too_long = []
    for path in sources:
        text = path.read_text()
        if text.count("\n") > MAX_FILE_LINES:
            too_long.append(f"{path.relative_to(ROOT)}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    too_long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {lines} lines")
    assert not too_long, too_long


def test_nothing_outside_tests_imports_tests():
    offenders = []
    for path in [*ROOT.rglob("*.py"), *ROOT.glob("scripts/*")]:
        if ".venv" in path.parts or "tests" in path.relative_to(ROOT).parts or not path.is_file():
            continue
        text = path.read_text(errors="replace")
        if "from tests" in text or "import tests" in text:
            offenders.append(str(path.relative_to(ROOT)))
    assert not offenders, offenders


def test_the_runtime_and_the_contract_stay_torch_free(graph):
    """What gets installed beside a C++ service: no torch, no exporter, no reference model."""
    for name, path in modules().items():
        if layer(name) in ("contract", "runtime"):
            text = path.read_text()
            assert "import torch" not in text and "from torch" not in text, name


@pytest.mark.parametrize("module,names", DOCUMENTED)
def test_documented_python_api_imports(module, names):
    imported = importlib.import_module(module)
    for name in names:
        assert getattr(imported, name) is not None, f"{module}.{name}"

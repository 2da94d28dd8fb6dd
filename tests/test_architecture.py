"""The import boundaries of the design, checked over the source (AST), so a wrong-way import fails CI.

Data flows one way: base → models → hooks → activations → sae → features → analyses → reports → entry
points (CLI) → ui → pages. A module may import its own layer or layers before it, never a later one
(imports under `if TYPE_CHECKING:` are annotations only and are not counted). Only `app.py`, `pages/` and
`saelab/ui/` import streamlit; pages import no torch and no numpy (array work is the backend's).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "base",
        (
            "saelab",
            "saelab.errors",
            "saelab.configs",
            "saelab.storage",
            "saelab.progress",
            "saelab.defaults",
            "saelab.corpus",
            "saelab.textsets",
            "saelab.embeddings",
            "saelab.trust",
            "saelab.jobs",
            "saelab.online",
            "saelab.typed_json",
        ),
    ),
    ("models", ("saelab.models",)),
    ("hooks", ("saelab.hooks", "saelab.batching", "saelab.decode")),
    ("activations", ("saelab.activations", "saelab.distributed")),  # distributed: where shards are computed
    ("sae", ("saelab.sae",)),
    ("features", ("saelab.features",)),
    (
        "analyses",
        (
            "saelab.directions",
            "saelab.steering",
            "saelab.probing",
            "saelab.circuits",
            "saelab.graphs",
            "saelab.hypotheses",
            "saelab.compare",
        ),
    ),
    ("reports", ("saelab.reports",)),
    ("entry", ("saelab.cli", "saelab.__main__", "saelab.default_sae")),
    ("ui", ("saelab.ui",)),
    ("pages", ("pages", "app")),
]
ENTRY_MODULE_NAMES = ("cli", "eval_cli", "sweep_cli")  # `saelab.<area>.cli` modules are command-line entry points


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> int | None:
    if module.startswith("saelab.") and module.rsplit(".", 1)[-1] in ENTRY_MODULE_NAMES:
        return [name for name, _ in LAYERS].index("entry")
    best, best_len = None, -1
    for rank, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = rank, len(prefix)
    return best


def _imports(tree: ast.Module, module: str) -> list[tuple[int, str]]:
    """(line, imported module) for every import outside `if TYPE_CHECKING:` blocks."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for child in node.body for n in ast.walk(child))
    out = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: resolve against this module's package
                base = module.split(".")[: -node.level] if module else []
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            out.append((node.lineno, name))
            out += [(node.lineno, f"{name}.{alias.name}") for alias in node.names]
    return out


def _sources() -> list[Path]:
    return [
        *sorted((ROOT / "saelab").rglob("*.py")),
        *sorted((ROOT / "pages").glob("*.py")),
        ROOT / "app.py",
    ]


def test_imports_point_downstream_only():
    violations = []
    for path in _sources():
        module = _module_name(path)
        own = layer_of(module)
        assert own is not None, f"{module} belongs to no layer: add it to LAYERS in {__file__}"
        for line, name in _imports(ast.parse(path.read_text(encoding="utf-8")), module):
            target = layer_of(name) if name.startswith(("saelab", "pages", "app")) else None
            if target is not None and target > own and not (name == "saelab" or name.startswith("saelab.__")):
                violations.append(f"{module}:{line} ({LAYERS[own][0]}) imports {name} ({LAYERS[target][0]})")
    assert not violations, "imports against the data flow:\n" + "\n".join(sorted(set(violations)))


def test_only_the_ui_layer_imports_streamlit_and_pages_import_no_torch_or_numpy():
    offenders = []
    for path in _sources():
        module = _module_name(path)
        ui = module == "app" or module.startswith(("pages", "saelab.ui"))
        for line, name in _imports(ast.parse(path.read_text(encoding="utf-8")), module):
            top = name.split(".")[0]
            if top == "streamlit" and not ui:
                offenders.append(f"{module}:{line} imports streamlit")
            if top in ("torch", "numpy") and (module == "app" or module.startswith("pages")):
                offenders.append(f"{module}:{line} imports {top}")
    assert not offenders, "\n".join(offenders)


def test_the_boundary_check_catches_a_wrong_way_import(tmp_path):
    """The checker itself: an analysis importing the UI is flagged (so the tests above can fail)."""
    tree = ast.parse("from saelab.ui import loader\nimport streamlit as st\n")
    found = _imports(tree, "saelab.probing.run")
    assert any(layer_of(n) == [x for x, _ in LAYERS].index("ui") for _, n in found)
    assert layer_of("saelab.probing.cli") == [x for x, _ in LAYERS].index("entry")
    assert layer_of("saelab.reports.probing") > layer_of("saelab.probing.run")

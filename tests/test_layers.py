"""The package layers, enforced: imports only go down (see ARCHITECTURE.md).

    gateway                                  the one composition root
    llm  transcription  uploads  recovery    handlers: never each other, never gateway
    storage  streams  events  devstack       streams knows nothing of the application
    config
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HANDLERS = {"config", "storage", "streams", "events"}
#: What each package may import from the project, besides itself.
ALLOWED: dict[str, set[str]] = {
    "config": set(),
    "streams": set(),
    "storage": {"config"},
    "events": {"streams"},
    "devstack": {"config", "storage"},
    "uploads": HANDLERS,
    "transcription": HANDLERS,
    "llm": HANDLERS,
    "recovery": HANDLERS,
    "gateway": {
        "config", "storage", "streams", "events", "devstack",
        "uploads", "transcription", "llm", "recovery",
    },
}


def _imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def _upward_imports(root: Path) -> list[str]:
    """Every import, at module level or inside a function, that the layer map forbids."""
    problems = []
    for package, allowed in ALLOWED.items():
        for path in sorted((root / package).rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            for line, module in _imported_modules(tree):
                top = module.split(".")[0]
                if top in ALLOWED and top != package and top not in allowed:
                    problems.append(f"{path.relative_to(root)}:{line}: {package} imports {module}")
    return sorted(problems)


def test_every_package_is_in_the_layer_map() -> None:
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    assert packages - {"tests", "bench"} == set(ALLOWED)


def test_imports_only_go_down_the_layers() -> None:
    assert _upward_imports(ROOT) == []


def test_the_check_finds_upward_and_sideways_imports_even_inside_functions(
    tmp_path: Path,
) -> None:
    (tmp_path / "streams").mkdir()
    (tmp_path / "streams" / "registry.py").write_text(
        "def groups():\n    from llm.handlers import llm_spec\n    return llm_spec\n"
    )
    (tmp_path / "llm").mkdir()
    (tmp_path / "llm" / "handlers.py").write_text(
        "import transcription.consumer\nfrom storage.permits import ClusterLimiter\n"
    )
    assert _upward_imports(tmp_path) == [
        "llm/handlers.py:1: llm imports transcription.consumer",
        "streams/registry.py:2: streams imports llm.handlers",
    ]


@pytest.mark.parametrize("module", ["gateway/appkeys.py"])
def test_app_keys_import_nothing_of_the_project_at_run_time(module: str) -> None:
    tree = ast.parse((ROOT / module).read_text())
    runtime = [
        name for node in tree.body
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for _, name in _imported_modules(node)
    ]
    assert [m for m in runtime if m.split(".")[0] in ALLOWED] == []

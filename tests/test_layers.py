"""The layers of docs/architecture.md, checked on the source: data flows one way (command line -> profile ->
client -> operation -> output), the CLI never talks to Kafka, the library never prints, exits or imports the
CLI, and no module grows past ~600 lines without saying why at its top."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "kmc"
MODULES = sorted(PACKAGE.rglob("*.py"))
CLI = [path for path in MODULES if path.parent.name == "cli"]
LIBRARY = [path for path in MODULES if path.parent.name != "cli" and path.name not in ("__main__.py", "output.py")]
MAX_LINES = 600
LONG_MODULE_REASON = "Longer than"  # a module over MAX_LINES says why in its docstring, starting so


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("path", CLI, ids=_name)
def test_the_cli_never_talks_to_kafka(path: Path) -> None:
    imports = _imports(path)
    assert not {name for name in imports if name == "kafka" or name.startswith("kafka.")}, "kafka-python in the CLI"
    assert "kmc.client.KafkaSession" not in imports, "the CLI opens no sessions: operations take clusters"


@pytest.mark.parametrize("path", LIBRARY, ids=_name)
def test_the_library_never_imports_the_cli_nor_prints(path: Path) -> None:
    imports = _imports(path)
    assert not {name for name in imports if name == "kmc.cli" or name.startswith(("kmc.cli.", "typer", "click"))}
    calls = {node.func.id for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
    assert not calls & {"print", "exit", "quit"}


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_no_module_is_long_without_a_reason(path: Path) -> None:
    lines = path.read_text().count("\n")
    if lines > MAX_LINES:
        docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
        assert LONG_MODULE_REASON in docstring, (
            f"{_name(path)} has {lines} lines: split it, or say why in its docstring ('{LONG_MODULE_REASON} ...')")

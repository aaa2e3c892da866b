"""The dependency rule: import-linter contracts hold and the domain imports only the standard library."""

import ast
import sys
from pathlib import Path

from importlinter import cli

DOMAIN = Path(__file__).resolve().parents[2] / "app" / "domain"


def _imported_modules(tree: ast.AST) -> list[str]:
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            names.append(node.module)
    return names


def test_import_contracts_are_kept() -> None:
    assert cli.lint_imports(no_cache=True) == 0


def test_domain_imports_only_stdlib_and_domain() -> None:
    offenders: list[str] = []

    for path in sorted(DOMAIN.rglob("*.py")):
        for module in _imported_modules(ast.parse(path.read_text(), filename=str(path))):
            top = module.split(".")[0]
            if top not in sys.stdlib_module_names and not module.startswith("app.domain"):
                offenders.append(f"{path.relative_to(DOMAIN.parent.parent)}: {module}")

    assert offenders == []


def test_domain_walk_finds_the_domain_modules() -> None:
    modules = {p.name for p in DOMAIN.rglob("*.py")}

    assert {"money.py", "ports.py", "errors.py"} <= modules

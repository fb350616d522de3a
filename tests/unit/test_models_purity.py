"""`models/` is the pure domain: it imports no infrastructure and none of the project's adapters; the
code a worker runs imports none of the tooling."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

MODELS = Path(__file__).resolve().parents[2] / "models"
FORBIDDEN = frozenset({
    "faust", "mode", "asyncpg", "aiokafka", "kafka", "confluent_kafka", "prometheus_client",
    "aiohttp", "agents", "tables", "ledger", "psp", "infra", "harness", "bench", "cli", "app", "settings",
})
MODULE_FILES = sorted(MODELS.glob("*.py"))


def imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) in (
                "__import__", "import_module"):
            roots.update(arg.value.split(".")[0] for arg in node.args
                         if isinstance(arg, ast.Constant) and isinstance(arg.value, str))
    return roots


def test_every_models_file_is_checked() -> None:
    names = {path.stem for path in MODULE_FILES}
    assert {"commands", "events", "types", "codec", "account", "payment", "ledger", "owner", "intake",
            "steps", "outputs"} <= names


@pytest.mark.parametrize("path", MODULE_FILES, ids=lambda path: path.name)
def test_module_imports_nothing_impure(path: Path) -> None:
    assert imported_roots(path) & FORBIDDEN == set()


def test_the_checker_sees_imports_in_every_form(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import faust.app\nfrom ledger.store import X\nif True:\n    import asyncpg as pg\n"
        "def f():\n    import psp\n    __import__('infra.broker')\nfrom . import sibling\n"
    )
    assert imported_roots(probe) == {"faust", "ledger", "asyncpg", "psp", "infra"}


def test_importing_every_model_loads_no_infrastructure() -> None:
    modules = ", ".join(f"models.{path.stem}" for path in MODULE_FILES if path.stem != "__init__")
    script = (
        f"import sys, {modules}\n"
        f"roots = {{name.split('.')[0] for name in sys.modules}}\n"
        f"print(sorted(roots & {set(FORBIDDEN)!r}))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=MODELS.parent, capture_output=True,
                            text=True, check=True)
    assert result.stdout.strip() == "[]"


ROOT = MODELS.parent
WORKER_CODE = sorted(path for folder in ("agents", "models", "tables", "ledger", "psp", "infra")
                     for path in (ROOT / folder).rglob("*.py")) + [ROOT / "app.py", ROOT / "settings.py"]


@pytest.mark.parametrize("path", WORKER_CODE, ids=lambda path: str(path.relative_to(ROOT)))
def test_the_code_a_worker_runs_imports_none_of_the_tooling(path: Path) -> None:
    # The embedded infrastructure, the driver, the campaign (harness/) and the bench stay
    # out of a worker's imports.
    assert imported_roots(path) & {"harness", "bench"} == set()

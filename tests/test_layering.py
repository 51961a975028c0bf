"""Lower layers import no higher one (the arrows ``farm-studio look`` once drew back up)."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "medrega"


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, lazy imports inside functions included."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize(
    ("files", "higher"),
    [
        ("data/*.py", "medrega.tasks"),  # tasks build on data.records; builders using tasks live in medrega.builders
        ("image_processing.py", "medrega.models"),  # tiling is image geometry: medrega.tiling
        ("models/configuration.py", "medrega.models.vision"),  # the tower counts tokens, the config only holds them
    ],
)
def test_no_import_runs_back_up(files, higher):
    for path in sorted(PACKAGE.glob(files)):
        upward = sorted(m for m in imported_modules(path) if m == higher or m.startswith(higher + "."))
        assert not upward, f"{path.relative_to(PACKAGE)} imports {upward}"

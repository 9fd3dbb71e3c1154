"""The import rule: models/ is pure Keras/NumPy/pandas, never streamlit or plotly."""

import ast
from pathlib import Path

import pytest

MODELS = Path(__file__).resolve().parents[1] / "models"
FORBIDDEN = {"streamlit", "plotly"}


def imported_roots(source: str) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("path", sorted(MODELS.rglob("*.py")), ids=lambda p: p.name)
def test_models_never_import_streamlit_or_plotly(path):
    assert not imported_roots(path.read_text()) & FORBIDDEN, f"{path} imports a UI library"


def test_the_checker_catches_nested_and_from_imports():
    source = "def f():\n    import plotly.express as px\nfrom streamlit import session_state\n"
    assert imported_roots(source) & FORBIDDEN == {"plotly", "streamlit"}

"""The import rules: who may import whom, and who may touch the session, read from the source.

- models/ is pure Keras/NumPy/pandas: never streamlit or plotly, never components/ or app.py.
- The Keras core (tree, drift, training, schedule, ...) never imports where models and data come
  from (catalogue, uploads, downloads), the session (workspace) or the workshop content.
- Sources and formats (model and data sources, export, run store) never import the session.
- Only components/state.py touches `st.session_state`; components read jobs through the Job
  protocol (no hasattr/getattr on a job) and take nothing from models.workspace but the class.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
COMPONENTS = ROOT / "components"
FORBIDDEN = {"streamlit", "plotly"}

CORE = {
    "models.drift", "models.failures", "models.freezing", "models.job", "models.keras_version",
    "models.diagnostics", "models.layer_node", "models.layer_rates", "models.lora",
    "models.advisor", "models.optimizer_mixins", "models.representation",
    "models.layers", "models.limits", "models.names", "models.plans", "models.prefix_cache",
    "models.schedule", "models.slots", "models.snapshot", "models.splits", "models.training",
    "models.training_config", "models.transfer", "models.tree", "models.validation",
}  # fmt: skip
SOURCES = {
    "models.application_entries", "models.applications", "models.bundled",
    "models.bundled_attention", "models.catalogue", "models.forgetting",
    "models.checks", "models.datasets", "models.dense_base", "models.download",
    "models.keras_datasets", "models.template", "models.upload_images", "models.upload_model",
    "models.upload_tables",
}  # fmt: skip
FORMATS = {"models.export", "models.run_store", "models.session_record"}
SESSION = {"models.executor", "models.ray_executor", "models.sessions", "models.workspace"}
WORKSHOP = {"models.lessons", "models.pitfalls", "models.presets"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def family(module: str) -> str:
    """The top module of a sub-package ("models.export.script" -> "models.export")."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "models" else module


def imported_modules(source: str, module: str = "") -> set[str]:
    """Every module a source imports (absolute names; relative imports resolved)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: -node.level]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            found.add(name)
            found.update(f"{name}.{alias.name}" for alias in node.names)
    return found


def project_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.py"))


def imports_of(path: Path) -> set[str]:
    return imported_modules(path.read_text(), module_name(path))


@pytest.mark.parametrize("path", project_files(MODELS), ids=lambda p: module_name(p))
def test_models_never_import_ui_libraries_components_or_the_app(path):
    roots = {name.split(".")[0] for name in imports_of(path)}
    assert not roots & FORBIDDEN, f"{path} imports a UI library"
    assert not roots & {"components", "app"}, f"{path} imports the dashboard"


@pytest.mark.parametrize(
    "path", [p for p in project_files(MODELS) if family(module_name(p)) in CORE], ids=module_name
)
def test_the_core_never_imports_sources_the_session_or_workshop_content(path):
    used = {family(name) for name in imports_of(path) if name.startswith("models.")}
    assert not used & (SOURCES | FORMATS | SESSION | WORKSHOP), f"{path}: {used - CORE}"


@pytest.mark.parametrize(
    "path",
    [p for p in project_files(MODELS) if family(module_name(p)) in SOURCES | FORMATS],
    ids=module_name,
)
def test_sources_and_formats_never_import_the_session(path):
    used = {family(name) for name in imports_of(path) if name.startswith("models.")}
    assert not used & SESSION, f"{path} imports the session module"


def test_every_models_module_has_a_layer():
    known = CORE | SOURCES | FORMATS | SESSION | WORKSHOP | {"models"}
    unplaced = {family(module_name(p)) for p in project_files(MODELS)} - known
    assert not unplaced, f"place these modules in a layer of this test: {sorted(unplaced)}"


def session_state_uses(source: str) -> int:
    return sum(
        isinstance(node, ast.Attribute) and node.attr == "session_state"
        for node in ast.walk(ast.parse(source))
    )


@pytest.mark.parametrize(
    "path", [ROOT / "app.py", *project_files(COMPONENTS)], ids=lambda p: p.name
)
def test_only_the_state_module_touches_the_session_state(path):
    if path == COMPONENTS / "state.py":
        assert session_state_uses(path.read_text()) > 0
    else:
        assert session_state_uses(path.read_text()) == 0, f"{path} uses st.session_state"


def job_probes(source: str) -> list[str]:
    probes = []
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("hasattr", "getattr")
            and node.args
            and "job" in ast.unparse(node.args[0])
        ):
            probes.append(ast.unparse(node))
    return probes


@pytest.mark.parametrize(
    "path", [ROOT / "app.py", *project_files(COMPONENTS)], ids=lambda p: p.name
)
def test_components_read_jobs_through_the_protocol_and_take_only_the_workspace(path):
    source = path.read_text()
    assert not job_probes(source), f"{path} probes a job: {job_probes(source)}"
    taken = {
        alias.name
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.ImportFrom) and node.module == "models.workspace"
        for alias in node.names
    }
    assert taken <= {"Workspace"}, f"{path} takes workspace internals: {taken}"


def test_the_checkers_catch_what_they_look_for():
    source = (
        "def f():\n    import plotly.express as px\nfrom streamlit import session_state\n"
        "from .tree import LayerTree\nst.session_state['x'] = 1\nhasattr(run.job, 'phases')\n"
    )
    names = imported_modules(source, "models.export.script")
    assert {"plotly.express", "streamlit", "models.export.tree"} <= names
    assert session_state_uses(source) == 1
    assert job_probes(source) == ["hasattr(run.job, 'phases')"]

"""The house has rooms, and imports run one way between them.

- No module imports, directly or through others, a module that imports it back (function-level imports count too:
  a lazy import is still a dependency).
- Between the subpackages only the directions named in ``ALLOWED`` exist: the shared root modules at the bottom,
  then ``imaging`` and ``data``, then ``inference``, then what is built on it. A new edge is a decision to make here,
  with a reason, not an accident.
- The library never imports the entry points; only the measuring scripts (``benchmark.py``, ``soak.py``,
  ``check_ood.py``) import ``bench``.
- The root of ``mura_mt/`` keeps only what everything shares; each subpackage says what it is for; ``app.py`` stays
  thin.
"""

import ast
from pathlib import Path

from tests.conftest import REPO

ROOT_MODULES = {"labels", "config", "hardware", "model", "audit", "scratch"}  # what everything shares (besides __init__)
MAX_ROOT_MODULES = 8
# room -> the rooms it may import (the root modules count as rooms of their own name)
ALLOWED = {
    "labels": set(),
    "config": set(),
    "hardware": set(),
    "audit": set(),  # the trail of patient data that the node and the web app both write
    "scratch": set(),  # the process's temporary folders, deleted when it exits
    # who may do what: the web app's login and roles, and the node's /metrics login, share one implementation
    "access": {"audit"},
    "model": {"labels", "config"},
    "imaging": set(),
    "data": {"labels", "config", "imaging"},
    "inference": {"labels", "config", "hardware", "model", "imaging", "scratch"},
    "evaluation": {"labels", "config", "hardware", "model", "imaging", "inference"},
    # training reads data, exports through inference's checkpoint format and picks epochs by evaluation's metrics
    "training": {"labels", "config", "hardware", "model", "imaging", "data", "inference", "evaluation"},
    "dicom_node": {"labels", "config", "hardware", "model", "audit", "imaging", "inference"},
    # the site's evidence reads the node's store, starts the node, scores the answers with evaluation's metrics (one
    # implementation) and lets only monitor users read /metrics
    "site": {"labels", "config", "hardware", "model", "audit", "access", "imaging", "inference", "evaluation",
             "dicom_node"},
    "web": {"labels", "config", "hardware", "model", "audit", "scratch", "access", "imaging", "inference",
            "dicom_node", "evaluation", "site"},
    # bench measures everything, the site's evidence (a year of it) and its drift reference included
    "bench": {"labels", "config", "hardware", "model", "imaging", "data", "inference", "training", "dicom_node", "site",
              "evaluation"},
    # the package's public surface, loaded lazily
    "mura_mt": {"labels", "config", "model", "imaging", "inference"},
}
ENTRY_POINTS = ("app", "scripts", "tests")
# bench holds measurements: the scripts that measure (the benchmark, the soak test, the warning check) use it; the
# app and the scripts people run for work (train, evaluate, predict, the node, ...) never do
MEASURING_SCRIPTS = ["benchmark.py", "check_ood.py", "soak.py"]


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(path: Path) -> set[str]:
    """Every absolute module name ``path`` imports, with ``from X import Y`` also read as ``X.Y``."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
        elif isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
    return names


def _imports() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in (REPO / "mura_mt").rglob("*.py")}
    # A package's __init__ is imported by its submodules implicitly; only explicit edges count here.
    return {name: {t for t in _imported(path) if t in modules and t != name} for name, path in modules.items()}


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _forbidden_edges(graph: dict[str, set[str]], allowed: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{source} -> {target}"
        for source, targets in graph.items()
        for target in targets
        if _room(source) != _room(target) and _room(target) not in allowed.get(_room(source), set())
    )


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                found.append([*stack[stack.index(target) :], target])
            elif target not in state:
                visit(target, [*stack, target])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def test_no_import_circles_in_the_library():
    graph = _imports()
    assert "mura_mt.imaging.dicom" in graph["mura_mt.imaging.io"]  # parsed
    assert "mura_mt.inference.decision" in graph["mura_mt.training.release"]
    assert _cycles(graph) == []


def test_the_circle_check_can_fail():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]


def test_imports_between_rooms_run_one_way():
    graph = _imports()
    rooms = {_room(name) for name in graph}
    assert rooms == set(ALLOWED), "a room without a rule, or a rule without a room: name it in ALLOWED"
    assert _forbidden_edges(graph, ALLOWED) == []
    # the rules the issue named, whatever ALLOWED says
    assert not ALLOWED["inference"] & {"training", "evaluation", "web", "bench", "dicom_node", "data"}
    assert "web" not in ALLOWED["dicom_node"] and "site" not in ALLOWED["dicom_node"]
    assert not any("bench" in targets for room, targets in ALLOWED.items() if room != "bench")


def test_the_direction_check_can_fail():
    graph = {"mura_mt.inference.predictor": {"mura_mt.training.loop", "mura_mt.model"}, "mura_mt.model": set()}
    assert _forbidden_edges(graph, ALLOWED) == ["mura_mt.inference.predictor -> mura_mt.training.loop"]


def test_the_library_never_imports_entry_points_and_only_measuring_scripts_import_bench():
    for path in (REPO / "mura_mt").rglob("*.py"):
        entry = sorted(t for t in _imported(path) if t.split(".")[0] in ENTRY_POINTS)
        assert entry == [], f"{path.relative_to(REPO)} imports {entry}"
    callers = [REPO / "app.py", *sorted((REPO / "scripts").glob("*.py"))]
    importers = sorted(p.name for p in callers if any(t.startswith("mura_mt.bench") for t in _imported(p)))
    assert importers == MEASURING_SCRIPTS


def test_the_root_keeps_only_what_everything_shares():
    package = REPO / "mura_mt"
    root = {p.stem for p in package.glob("*.py")} - {"__init__"}
    assert root == ROOT_MODULES and len(root) <= MAX_ROOT_MODULES
    for sub in sorted(p.parent for p in package.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse((sub / "__init__.py").read_text()))
        assert doc and len(doc.split()) >= 15, f"mura_mt/{sub.name}/__init__.py must say what lives there"


def test_app_stays_thin():
    source = (REPO / "app.py").read_text()
    assert len(source.splitlines()) < 250
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            assert node.end_lineno - node.lineno + 1 <= 80, f"app.py: {node.name} is over 80 lines"


def test_the_public_surface():
    import mura_mt
    from mura_mt import (  # noqa: F401
        BODY_PARTS,
        InvalidImageError,
        MultiTaskNet,
        Prediction,
        Predictor,
        StudyPrediction,
        load_radiograph,
    )

    assert set(mura_mt.__all__) >= {"Predictor", "Prediction", "StudyPrediction", "BODY_PARTS", "MultiTaskNet"}
    assert issubclass(InvalidImageError, ValueError) and callable(load_radiograph)


def test_the_public_surface_loads_lazily():
    """``import mura_mt`` and decoding a radiograph load no torch; the Predictor does, on first use."""
    import subprocess
    import sys

    probe = (
        "import sys, mura_mt; before = 'torch' in sys.modules; mura_mt.load_radiograph; "
        "decoding = 'torch' in sys.modules; mura_mt.Predictor; print(before, decoding, 'torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.split() == ["False", "False", "True"]

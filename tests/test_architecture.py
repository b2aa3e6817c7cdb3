"""The package map of docs/design.md, checked: which subpackage of ``pipelines`` may import which,
no import circle among modules (imports inside functions included), no module over 400 lines, and
no synthetic-world source or task name in library code."""
from __future__ import annotations

import ast
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 400

#: what each part of ``pipelines`` may import from the others (docs/design.md, "Package map")
MAY_IMPORT: dict[str, set[str]] = {
    "config": set(),
    "dates": set(),
    "errors": set(),
    "runtime": {"config"},
    "lake": {"config", "errors", "runtime"},
    "world": {"config", "lake", "runtime"},
    "night": {"config", "dates", "errors", "lake", "runtime", "tokenizer"},
    "tokenizer": {"config", "dates", "errors", "lake", "night", "runtime"},
    "features": {"config", "dates", "errors", "lake", "night", "runtime"},
    "ops": {"config", "dates", "errors", "lake", "night", "runtime", "tokenizer"},
    "evaluation": {"config", "errors", "lake", "night", "runtime", "tokenizer", "world"},
    "steps": {"config", "dates", "errors", "features", "lake", "night", "ops", "runtime", "tokenizer"},
    "deploy": {"config", "dates", "errors", "lake", "ops", "runtime", "steps", "tokenizer", "world"},
    "cli": {"config", "dates", "deploy", "errors", "evaluation", "lake", "night", "ops", "runtime", "steps",
            "tokenizer", "world"},
}
#: edges against the layering (none: the token-string view takes its token format from the caller)
EXCEPTIONS: set[tuple[str, str]] = set()


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted((ROOT / "pipelines").rglob("*.py")):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def _imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the ``pipelines`` modules it imports anywhere in its body."""
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pipelines"):
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                           for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("pipelines")]
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def _part(module: str) -> str:
    return module.split(".")[1] if "." in module else module


def test_each_part_imports_only_what_the_map_allows() -> None:
    wrong = sorted((m, t) for m, targets in _imports(_modules()).items() for t in targets
                   if _part(m) != _part(t) and _part(m) in MAY_IMPORT and _part(t) != "pipelines"
                   and _part(t) not in MAY_IMPORT[_part(m)] and (m, t) not in EXCEPTIONS)
    assert not wrong, f"imports against the package map (docs/design.md): {wrong}"
    parts = {_part(m) for m in _modules()} - {"pipelines"}
    assert parts == set(MAY_IMPORT), f"parts without a row in the map: {parts ^ set(MAY_IMPORT)}"


def test_no_import_circle() -> None:
    graph = _imports(_modules())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(v: str) -> None:     # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    assert not circles, f"import circles: {circles}"


def test_no_module_over_400_lines() -> None:
    long = {str(p.relative_to(ROOT)): n for p in [*ROOT.glob("pipelines/**/*.py"), *ROOT.glob("u2qt_core/**/*.py")]
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long


def test_no_world_names_in_library_code() -> None:
    """Library code takes sources and tasks from config; only the world and the evaluation of the
    world may name them."""
    world_sources = set(yaml.safe_load((ROOT / "conf" / "sources.yaml").read_text())["text_sources"])
    tasks = set(yaml.safe_load((ROOT / "conf" / "eval.yaml").read_text())["tasks"])
    names = world_sources | tasks
    assert {"bill", "search", "takeout"} <= names
    library = [p for p in [*ROOT.glob("u2qt_core/**/*.py"), *ROOT.glob("pipelines/**/*.py")]
               if not {"world", "evaluation"} & set(p.relative_to(ROOT).parts[1:-1])]
    found = sorted((str(p.relative_to(ROOT)), node.lineno, node.value) for p in library
                   for node in ast.walk(ast.parse(p.read_text()))
                   if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names)
    assert not found, f"world source/task names in library code: {found}"


def _defined_names(path: Path) -> set[str]:
    """The names a module defines at its top level (inside ``if`` / ``try`` blocks too), and those
    its ``__all__`` lists."""
    names: set[str] = set()

    def visit(statements) -> None:
        for node in statements:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
                if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets) and node.value:
                    # what a lazy module __getattr__ serves (pipelines.world's Spark writer)
                    names.update(c.value for c in ast.walk(node.value) if isinstance(c, ast.Constant))
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names.update((a.asname or a.name).split(".")[0] for a in node.names)
            for field in ("body", "orelse", "finalbody"):
                if isinstance(node, (ast.If, ast.Try)) and getattr(node, field, None):
                    visit(getattr(node, field))
            if isinstance(node, ast.Try):
                for handler in node.handlers:
                    visit(handler.body)

    visit(ast.parse(path.read_text()).body)
    return names


def test_every_project_import_names_something_that_exists() -> None:
    """``from pipelines.x import name`` (function-level imports included) names a module or a
    top-level definition of ``pipelines.x``, in the library, the benchmarks and the DAGs: a
    benchmark section the smoke runs skip once imported names ``daily_job`` no longer exported."""
    project = ("pipelines", "u2qt_core", "benchmarks")
    files = [p for folder in (*project, "dags") for p in (ROOT / folder).rglob("*.py")]
    missing = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in project):
                continue
            base = ROOT.joinpath(*node.module.split("."))
            source = base / "__init__.py" if base.is_dir() else base.with_suffix(".py")
            if not source.exists():
                missing.append((str(path.relative_to(ROOT)), node.lineno, node.module))
                continue
            defined = _defined_names(source)
            missing += [(str(path.relative_to(ROOT)), node.lineno, f"{node.module}.{a.name}") for a in node.names
                        if a.name != "*" and a.name not in defined
                        and not (base / f"{a.name}.py").exists() and not (base / a.name).is_dir()]
    assert not missing, f"imports of names that do not exist: {missing}"


def test_configuration_dags_and_cli_import_without_torch() -> None:
    """The settings, the DAG builder, the step registry and the CLI load without torch (3.7 CPU-s
    to import here): the DAG processor parses the DAG files often and every Airflow task process
    parses its DAG again, and `u2qt --help` or a bad argument should not wait for torch."""
    import subprocess
    import sys

    modules = ["pipelines.config.settings", "pipelines.deploy.dag_builder", "pipelines.steps", "pipelines.cli.main"]
    probe = f"import sys; {'; '.join(f'import {m}' for m in modules)}; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True)
    assert proc.stdout.strip() == "[]", proc.stdout + proc.stderr

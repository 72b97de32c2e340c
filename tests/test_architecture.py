"""The structure the docs promise (docs/architecture.md), checked so that it stays true.

Import cycles and upward imports are import-linter's job (``.importlinter``: the layers, no app in core, no cycle among
the modules of any package); the test runs it so that ``pytest`` alone catches a broken contract too.
"""

from __future__ import annotations

import ast
import configparser
import re
import subprocess
import sys
from pathlib import Path

from core.methods import METHODS

REPO = Path(__file__).resolve().parents[1]


def test_every_import_contract_holds():
    sections = configparser.ConfigParser()
    sections.read(REPO / ".importlinter")
    contracts = [name for name in sections.sections() if name.startswith("importlinter:contract:")]
    assert {"importlinter:contract:layers", "importlinter:contract:acyclic"} <= set(contracts)
    result = subprocess.run([str(Path(sys.executable).with_name("lint-imports"))], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:]
    assert f"{len(contracts)} kept, 0 broken" in result.stdout


def test_the_cli_and_the_sidebar_name_no_method_setting():
    """Flags and widgets are generated from the declarations (core.methods.options): neither layer spells one out."""
    names = {option.name for method in METHODS.values() if method.options_class
             for option in method.options_class.declarations() if "_" in option.name}
    assert {"lambda_kd", "prune_rate"} <= names  # the search below looks for real settings
    files = [*(REPO / "core" / "cli").glob("*.py"), *(REPO / "dashboard").rglob("*.py"), REPO / "core" / "launcher.py"]
    spelled = [(path.name, form) for path in files for name in sorted(names) for form in (name, name.replace("_", "-"))
               if re.search(rf"(?<![\w-]){re.escape(form)}(?![\w-])", path.read_text())]
    assert spelled == []


def test_lambda_prune_lives_in_its_declaration_and_its_use():
    sources = [*(REPO / "core").rglob("*.py"), *(REPO / "dashboard").rglob("*.py")]
    naming = sorted(str(path.relative_to(REPO)) for path in sources if re.search(r"lambda[_-]prune", path.read_text()))
    assert naming == ["core/methods/distillation.py", "core/methods/pdd.py"]  # the students' declaration and use; PDD's 0


def test_the_entry_point_only_dispatches():
    """``core/__main__.py`` holds no logic: a docstring, its imports and ``sys.exit(main())`` from core.cli."""
    tree = ast.parse((REPO / "core" / "__main__.py").read_text())
    imported = {alias.name for node in tree.body if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in tree.body if isinstance(node, ast.ImportFrom)}
    assert imported == {"sys", "core.cli"}
    docstring = ast.get_docstring(tree, clean=False)
    logic = [ast.unparse(node) for node in tree.body[1 if docstring else 0:] if not isinstance(node, ast.Import | ast.ImportFrom)]
    assert logic == ["if __name__ == '__main__':\n    sys.exit(main())"]


def _functions(folder: Path):
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                yield path.relative_to(REPO), node


def test_no_function_in_core_is_over_80_lines():
    long = [(str(path), node.name, node.end_lineno - node.lineno + 1) for path, node in _functions(REPO / "core")
            if node.end_lineno - node.lineno + 1 > 80]
    assert long == []


def test_the_training_loop_reads_in_one_short_function():
    (loop,) = [node for path, node in _functions(REPO / "core" / "training") if node.name == "_train"
               and str(path) == "core/training/engine.py"]
    assert loop.end_lineno - loop.lineno + 1 <= 60


def test_no_private_name_is_imported_across_modules():
    """``from x import _y`` hides a dependency on something its module calls its own."""
    found = []
    for path in [*(REPO / "core").rglob("*.py"), *(REPO / "dashboard").rglob("*.py"), *(REPO / "bench").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ("core", "bench"):
                found += [(str(path.relative_to(REPO)), alias.name) for alias in node.names
                          if alias.name.startswith("_") and not alias.name.startswith("__")]
    assert found == []


def test_every_cache_goes_through_the_one_helper():
    """core.io.DiskCache is the one home of a cache's key, read, recompute and atomic write: no module of core builds
    a path under cache_dir() itself (it may hand cache_dir() on, as a root)."""
    spelled = sorted(str(path.relative_to(REPO)) for path in (REPO / "core").rglob("*.py")
                     if re.search(r"cache_dir\(\)\s*/", path.read_text()) and path.name != "io.py")
    assert spelled == ["core/cli/data.py"]  # `data check`'s hash-cache folder, handed to core.data.check.HashCache
    users = sorted(str(path.relative_to(REPO)) for path in (REPO / "core").rglob("*.py")
                   if re.search(r"DiskCache\(", path.read_text()) and path.name != "io.py")
    assert users == ["core/data/check.py", "core/data/images.py", "core/deploy/runtimes.py", "core/deploy/serving.py",
                     "core/deploy/variants.py", "core/evaluation/evaluate.py", "core/evaluation/inspect.py"]


def test_every_registry_is_one_style():
    """Every name -> object registry is a core.registry.Registry (register, lookup), the model registry its own
    module."""
    import bench
    import core.checkpoint
    import core.data.datasets
    import core.models
    import core.models.dual
    import core.models.registry
    from core.registry import Registry

    registries = {"architectures": core.models.registry.ARCHITECTURES, "weights": core.models.registry.IMAGENET_WEIGHTS,
                  "heads": core.models.registry.HEAD_PREFIX, "derived": core.models.registry.DERIVED_FROM,
                  "model types": core.models.MODEL_TYPES, "dual": core.models.dual.DUAL_ARCHITECTURES,
                  "datasets": core.data.datasets.DATASETS, "methods": METHODS, "runners": core.checkpoint.RUNNERS,
                  "benchmarks": bench.BENCHMARKS}
    assert all(isinstance(registry, Registry) for registry in registries.values())
    assert {"resnet50", "efficientnet_lite0", "mesonet", "dual_resnet18"} <= set(core.models.registry.ARCHITECTURES)
    assert "ARCHITECTURES" not in vars(__import__("core.models.resnet", fromlist=["x"]))


def test_a_registry_registers_by_decorator_or_value_and_names_its_choices_on_a_miss():
    import pytest

    from core.registry import Registry

    shapes = Registry("shape")

    @shapes.register("square")
    def square():
        return 4

    assert shapes.register("triangle", 3) == 3 and shapes.lookup("square") is square and list(shapes) == ["square", "triangle"]
    with pytest.raises(ValueError, match="^unknown shape 'circle'; choose from square, triangle$"):
        shapes.lookup("circle")


def test_imports_sit_at_the_top_except_where_a_comment_says_why():
    """Inside a function only an import with its reason on the line: an optional or slow third-party package, or a
    module loaded on use (``import core`` and the CLI's command modules import the library on use, as their docstrings
    say)."""
    hidden = []
    for path in sorted((REPO / "core").rglob("*.py")):
        relative = str(path.relative_to(REPO))
        if relative == "core/__init__.py" or relative.startswith("core/cli/"):
            continue
        lines = path.read_text().splitlines()
        for function in ast.walk(ast.parse(path.read_text())):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(function):
                if isinstance(node, ast.Import | ast.ImportFrom):
                    module = (node.module or "") if isinstance(node, ast.ImportFrom) else node.names[0].name
                    if "#" not in lines[node.end_lineno - 1]:
                        hidden.append(f"{relative}:{node.lineno} {module}")
    assert hidden == []
    assert "on purpose" in (REPO / "core" / "__init__.py").read_text()
    assert "on purpose" in (REPO / "core" / "cli" / "__init__.py").read_text()

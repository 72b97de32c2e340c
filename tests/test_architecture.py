"""The structure the docs promise (docs/architecture.md), checked so that it stays true."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import grimp

from core.methods import METHODS

REPO = Path(__file__).resolve().parents[1]


def _cycles(graph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), i.e. import cycles."""
    sys.setrecursionlimit(10_000)
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(module: str) -> None:
        index[module] = low[module] = counter[0]
        counter[0] += 1
        stack.append(module)
        on_stack.add(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def test_core_has_no_import_cycle():
    assert _cycles(grimp.build_graph("core")) == []


def test_the_cycle_finder_finds_a_cycle(tmp_path, monkeypatch):
    package = tmp_path / "loop"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from loop import b\n")
    (package / "b.py").write_text("from loop import c\n")
    (package / "c.py").write_text("import loop.a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert _cycles(grimp.build_graph("loop")) == [["loop.a", "loop.b", "loop.c"]]


def test_the_layer_contract_holds():
    result = subprocess.run([str(Path(sys.executable).with_name("lint-imports"))], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "2 kept, 0 broken" in result.stdout


def test_the_cli_and_the_sidebar_name_no_method_setting():
    """Flags and widgets are generated from the declarations (core.methods.options): neither layer spells one out."""
    names = {option.name for method in METHODS.values() if method.options_class
             for option in method.options_class.declarations() if "_" in option.name}
    files = [*(REPO / "core" / "cli").glob("*.py"), *(REPO / "dashboard").rglob("*.py"), REPO / "core" / "launcher.py"]
    spelled = [(path.name, form) for path in files for name in sorted(names) for form in (name, name.replace("_", "-"))
               if re.search(rf"(?<![\w-]){re.escape(form)}(?![\w-])", path.read_text())]
    assert spelled == []


def test_lambda_prune_lives_in_its_declaration_and_its_use():
    sources = [*(REPO / "core").rglob("*.py"), *(REPO / "dashboard").rglob("*.py")]
    naming = sorted(str(path.relative_to(REPO)) for path in sources if re.search(r"lambda[_-]prune", path.read_text()))
    assert naming == ["core/methods/distillation.py", "core/methods/pdd.py"]  # the students' declaration and use; PDD's 0


def test_the_entry_point_only_dispatches():
    assert len((REPO / "core" / "__main__.py").read_text().splitlines()) <= 150

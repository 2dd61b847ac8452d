"""The console's structure: no dead messages (and, below, no import cycles)."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

from textual.message import Message

import console.messages

CONSOLE = Path(console.messages.__file__).resolve().parent


def test_every_app_message_is_posted_and_handled_somewhere():
    messages = [
        name
        for name, obj in vars(console.messages).items()
        if inspect.isclass(obj) and issubclass(obj, Message) and obj.__module__ == console.messages.__name__
    ]
    assert messages
    sources = {path: path.read_text() for path in CONSOLE.rglob("*.py") if path.name != "messages.py"}
    for name in messages:
        users = [path.name for path, text in sources.items() if f"{name}(" in text]
        handlers = [
            path.name
            for path, text in sources.items()
            if f"@on({name}" in text
            or f"on_{''.join('_' + c.lower() if c.isupper() else c for c in name).lstrip('_')}" in text
        ]
        assert users and handlers, f"{name}: posted in {users}, handled in {handlers}"


def console_imports() -> dict[str, set[str]]:
    """console module -> the console modules it imports, counting every import statement
    (module level, inside functions and under TYPE_CHECKING: each is a dependency)."""

    def name(path: Path) -> str:
        parts = ["console", *path.relative_to(CONSOLE).with_suffix("").parts]
        return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)

    modules = {name(path): path for path in CONSOLE.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - max(node.level - 1, 0)] if node.level else []
                origin = ".".join([*base, node.module] if node.module else base)
                targets = [origin, *(f"{origin}.{alias.name}" for alias in node.names)]
            else:
                continue
            graph[module].update(t for t in targets if t in modules and t != module)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(component)

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_app_screens_palette_and_widgets_have_no_import_cycle():
    graph = console_imports()
    assert "console.screens.facets" in graph["console.app"]  # the walk sees imports at all
    assert cycles(graph) == []


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]


def test_the_cli_imports_the_http_server_only_for_the_commands_that_serve():
    # Every `facets COMMAND` imports console.cli; uvicorn and server/ cost ~35-50 ms of it.
    import subprocess
    import sys

    from tests.conftest import ROOT

    code = "import console.cli, sys; print(sorted(m for m in ('server', 'uvicorn') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"

"""The house in wings (ARCHITECTURE.md): a small base, wings that import one way, no import circle.

Read from the source (ast), never by importing: an upward import added anywhere fails here with its
file and line, and so does a new top-level module past the twelve the base may hold."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "botkeeper"
TIER = {"": 0, "health": 1, "supervise": 2, "bot": 3, "alerting": 4, "web": 4, "ops": 5}
# The only imports that go upward, each named in ARCHITECTURE.md ("the imports that go upward"); all lazy.
ALLOWED_UP = {
    ("botkeeper", "botkeeper.bot.keeper"),
    ("botkeeper.__main__", "botkeeper.ops.cli"),
    ("botkeeper.config", "botkeeper.supervise.importscan"),
    ("botkeeper.config", "botkeeper.supervise.warm"),
    ("botkeeper.health.snapshot", "botkeeper.supervise.control"),
}


def modules() -> dict[str, Path]:
    out = {}
    for path in PKG.rglob("*.py"):
        parts = path.relative_to(PKG.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def imports(name: str, path: Path, known: set[str], top_level_only: bool = False):
    """(imported module, line) for every botkeeper import of one module; `from pkg import mod` counts
    as importing pkg.mod."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    nodes = tree.body if top_level_only else ast.walk(tree)
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("botkeeper"):
                continue
            for alias in node.names:
                full = f"{target}.{alias.name}"
                yield (full if full in known else target), node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("botkeeper"):
                    yield alias.name, node.lineno


def wing(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and (PKG / parts[1]).is_dir()) else ""


def test_base_holds_at_most_twelve_modules_and_the_rest_live_in_wings():
    top = sorted(p.name for p in PKG.glob("*.py"))
    assert len(top) <= 12, top
    wings = sorted(p.name for p in PKG.iterdir() if (p / "__init__.py").is_file())
    assert set(TIER) - {""} <= set(wings), wings
    for name in wings:
        doc = ast.get_docstring(ast.parse((PKG / name / "__init__.py").read_text()))
        assert doc and "import" in doc.lower(), f"botkeeper/{name}/__init__.py must say what lives there and what it may import"


def test_imports_go_one_way():
    mods = modules()
    known = set(mods)
    upward = []
    for name, path in mods.items():
        for target, line in imports(name, path, known):
            a, b = wing(name), wing(target)
            if a == b or (name, target) in ALLOWED_UP:
                continue
            if TIER[b] >= TIER[a] and not (a == "" and b == ""):
                upward.append(f"{path.relative_to(PKG.parent)}:{line} {name} -> {target}")
    assert upward == []


def test_no_import_circle_at_module_level():
    mods = modules()
    known = set(mods)
    graph = {n: {t for t, _ in imports(n, p, known, top_level_only=True) if t in known and t != n}
             for n, p in mods.items()}
    # a package's own __init__ importing its modules is how packages work, not a circle
    for n in graph:
        graph[n] = {t for t in graph[n] if not t.startswith(n + ".")}
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(n: str, trail: list[str]) -> bool:
        state[n] = 1
        for t in sorted(graph[n]):
            if state.get(t) == 1:
                cycle.extend(trail[trail.index(t):] + [n, t] if t in trail else [n, t])
                return True
            if t not in state and visit(t, trail + [n]):
                return True
        state[n] = 2
        return False

    for n in sorted(graph):
        if n not in state and visit(n, []):
            break
    assert cycle == []


def test_documented_public_names_still_import():
    import botkeeper
    from botkeeper import heartbeat, outbox  # docs/outbox.md, README
    from botkeeper.emulator import Emulator  # docs/bot.md

    assert callable(outbox.send) and callable(heartbeat.beat) and Emulator
    assert callable(botkeeper.attach)

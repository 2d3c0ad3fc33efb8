"""Whether a Python bot imports python-telegram-bot, read from its files (never run).

The fork server (WARM_STANDBY=auto) preloads python-telegram-bot: about 25 MiB that pays for
itself only in a bot that imports it. A BOT_COMMAND bot that does not (another library, a plain
asyncio loop) gains about 20 ms of interpreter start from a fork and would keep the fork server's
memory for nothing, so it gets cold starts and no fork server.

Read: the bot's script (or the module of `-m`), and the modules it imports that live next to it
(its own code), following their imports too, up to MAX_FILES files (more: "yes"). Libraries,
botkeeper included, are not followed.
What this cannot see (an import by a string, a library that imports telegram for the bot) is a
bot the fork server does not help much either way; a bot file that cannot be found or read is
answered "yes": the fork server runs as it did before this check existed.
"""

from __future__ import annotations

import ast
from importlib.machinery import PathFinder
from pathlib import Path
from typing import Iterator, Sequence

MAX_FILES = 64
MAX_FILE_BYTES = 1 << 20
PRELOADED = ("telegram",)  # the packages the fork server preloads for a BOT_COMMAND bot


def imports_telegram(argv: Sequence[str], cwd: Path) -> bool:
    """`argv` is what our interpreter runs: [script.py, ...] or ["-m", module, ...] (warm.python_argv)."""
    entry, root = _entry(argv, cwd)
    if entry is None:
        return True
    seen: set[Path] = set()
    queue = [entry]
    while queue and len(seen) < MAX_FILES:
        path = queue.pop()
        if path in seen:
            continue
        seen.add(path)
        tree = _parse(path)
        if tree is None:
            if path == entry:
                return True  # unreadable: we cannot tell
            continue
        for name in _imported(tree, path, root):
            if _is_preloaded(name):
                return True
            local = None if name.split(".", 1)[0] == "botkeeper" else _local_file(name, root)  # a library here
            if local is not None and local not in seen:
                queue.append(local)
    return bool(queue)  # files left unread (more than MAX_FILES): we cannot tell


def _entry(argv: Sequence[str], cwd: Path) -> tuple[Path | None, Path]:
    if argv and argv[0] == "-m":
        if len(argv) < 2:
            return None, cwd
        path = _local_file(argv[1], cwd)
        if path is not None and path.name == "__init__.py":  # `-m package` runs its __main__
            main = path.with_name("__main__.py")
            path = main if main.is_file() else None
        return path, cwd
    if not argv:
        return None, cwd
    script = Path(argv[0]) if Path(argv[0]).is_absolute() else cwd / argv[0]
    return (script if script.is_file() else None), script.parent


def _parse(path: Path) -> ast.AST | None:
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            return None
        return ast.parse(path.read_bytes(), filename=str(path))
    except (OSError, SyntaxError, ValueError):
        return None


def _imported(tree: ast.AST, path: Path, root: Path) -> Iterator[str]:
    """Every module name the file imports, anywhere in it (relative imports made absolute from
    `root`), and `botkeeper.attach` for `botkeeper.attach(...)`."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = _package_of(path, root, node.level)
                if package is None:
                    continue
                base = ".".join(filter(None, [package, base]))
            for alias in node.names:
                yield f"{base}.{alias.name}" if base else alias.name  # a submodule, or a name in base
            if base:
                yield base
        elif (isinstance(node, ast.Attribute) and node.attr == "attach"
              and isinstance(node.value, ast.Name) and node.value.id == "botkeeper"):
            yield "botkeeper.attach"


def _package_of(path: Path, root: Path, level: int) -> str | None:
    """The dotted package a relative import with `level` dots starts from, or None above root."""
    directory = path.parent
    for _ in range(level - 1):
        directory = directory.parent
    try:
        parts = directory.relative_to(root).parts
    except ValueError:
        return None
    return ".".join(parts)


def _is_preloaded(name: str) -> bool:
    top = name.split(".", 1)[0]
    return top in PRELOADED or name.startswith(("botkeeper.attach", "botkeeper.keeper", "botkeeper.bot"))


def _local_file(name: str, root: Path) -> Path | None:
    """The file of module `name` under `root` (the bot's own code), found without importing it."""
    locations: list[str] = [str(root)]
    spec = None
    parts = name.split(".")
    for depth in range(1, len(parts) + 1):
        try:
            spec = PathFinder.find_spec(".".join(parts[:depth]), locations)
        except (ImportError, ValueError, OSError):
            return None
        if spec is None:
            return None
        locations = list(spec.submodule_search_locations or [])
        if depth < len(parts) and not locations:
            return None  # a name inside a module, not a submodule: the module itself is the file
    origin = Path(spec.origin) if spec is not None and spec.origin else None
    if origin is None or origin.suffix != ".py" or not origin.is_file():
        return None
    return origin

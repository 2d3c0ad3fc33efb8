"""The running version: the git short sha of the bundle home, read once (never per request)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def short_sha(path: Path | str, ref: str = "HEAD") -> str | None:
    """`git rev-parse --short REF` in `path`, or None when it is not a git work tree (a pip install)."""
    try:
        res = subprocess.run(["git", "rev-parse", "--short", ref], cwd=path, capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    sha = res.stdout.strip()
    return sha if res.returncode == 0 and sha else None

"""Where consistbench keeps files it builds (converted models, corpus, indexes).

``CONSISTBENCH_CACHE`` overrides the location; otherwise ``$XDG_CACHE_HOME/consistbench`` or
``~/.cache/consistbench``. Nothing outside this directory is written by setup or by runs.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_ROOT.parent


def cache_dir() -> Path:
    """Return (and create) the cache directory."""
    env = os.environ.get("CONSISTBENCH_CACHE")
    if env:
        path = Path(env).expanduser()
    else:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        path = Path(base) / "consistbench"
    path.mkdir(parents=True, exist_ok=True)
    return path

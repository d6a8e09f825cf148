"""Where consistbench finds its shipped files and keeps the files it builds.

Shipped files: the lm-eval task folder and its data. In a checkout they sit in the repository's
top-level ``tasks/`` folder; installed, in the ``consistbench.tasks`` package. Both layouts put
``tasks/`` beside ``benchmark/``, so one relative path serves both (no import of the tasks
package: ``benchmark`` is the core and imports none of the project's other packages).

Built files (converted models, corpus, indexes, runs): ``CONSISTBENCH_CACHE`` overrides the
location; otherwise ``$XDG_CACHE_HOME/consistbench`` or ``~/.cache/consistbench``. Nothing outside
this directory is written by setup or by runs.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent
PROJECT_ROOT = PACKAGE_ROOT.parent  # the repository, or the installed ``consistbench`` package
TASKS_DIR = PROJECT_ROOT / "tasks"  # what ``lm_eval --include_path`` takes
TASK_DIR = TASKS_DIR / "consistency"
DATA_DIR = TASK_DIR / "data"


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

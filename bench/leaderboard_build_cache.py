"""Leaderboard rebuilds with the validation cache: the first build (every submission validated and
rescored, the cache empty) against the second (nothing changed: every result from the cache),
same process, same submissions.

usage: python bench/leaderboard_build_cache.py [--submissions DIR] [--only SLUG,SLUG | --all]

The submissions are copied to a temporary folder and the cache is a fresh temporary folder
(``CONSISTBENCH_LEADERBOARD_CACHE``), so the user's cache is neither used nor changed. By default
only the shipped submissions on the mini and small subsets are built (the full-test ones take
several minutes each to rescore on a CPU, BERTScore mostly); ``--all`` builds every one. Prints
both wall times, their ratio (goal: at most 0.1) and whether the two sites' ranking data agree.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
DEFAULT = ("gemma3-270m-mini-v2", "smollm2-135m-instruct-mini",
           "smollm2-135m-instruct-small", "smollm2-135m-cpu-sft-small", "smollm2-135m-cpu-merged-small")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--submissions", default=str(REPO / "leaderboard" / "submissions"))
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--only", default=",".join(DEFAULT), help="comma-separated submission folders")
    group.add_argument("--all", action="store_true", help="every submission folder")
    args = ap.parse_args()
    src = Path(args.submissions)
    slugs = (sorted(p.name for p in src.iterdir() if p.is_dir() and not p.name.startswith("."))
             if args.all else [s for s in args.only.split(",") if s])
    with tempfile.TemporaryDirectory(prefix="lb-cache-bench-") as tmp:
        tmp = Path(tmp)
        os.environ["CONSISTBENCH_LEADERBOARD_CACHE"] = str(tmp / "cache")
        from consistbench.leaderboard.site import build_site

        for slug in slugs:
            shutil.copytree(src / slug, tmp / "subs" / slug)
        times = []
        for i in (1, 2):
            t0 = time.perf_counter()
            build_site(tmp / "subs", tmp / f"site{i}")
            times.append(time.perf_counter() - t0)
        same = all((tmp / "site1" / f.relative_to(tmp / "site1")).read_bytes()
                   == (tmp / "site2" / f.relative_to(tmp / "site1")).read_bytes()
                   for f in (tmp / "site1").rglob("*") if f.is_file())
    print(f"submissions: {len(slugs)} ({', '.join(slugs)})")
    print(f"first build (cache empty): {times[0]:.2f} s; second build (all hits): {times[1]:.2f} s")
    print(f"ratio second/first: {times[1] / times[0]:.4f} (goal <= 0.1); identical sites: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())

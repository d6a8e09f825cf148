"""``consistbench merge CONFIG.yaml -o OUT_DIR``: run a merge (and/or export it for mergekit).

CONFIG is consistbench's merge YAML or a mergekit YAML (``merge_method``, ``base_model``, ...),
mapped by :mod:`~consistbench.reference_method.merge.mergekit_config`."""

from __future__ import annotations

import argparse

from consistbench.benchmark.cli import add_output_option
from consistbench.benchmark.errors import ConsistbenchError
from consistbench.reference_method.merge.catalog import registered_methods
from consistbench.reference_method.merge.engine import merge
from consistbench.reference_method.merge.mergekit_config import export_mergekit, load_merge_config


def cmd_merge(args: argparse.Namespace) -> int:
    if args.list_methods:
        for name, spec in registered_methods().items():
            extra = "" if spec.mergekit else " (no mergekit export)"
            print(f"{name:16s} {spec.summary}{extra}")
        return 0
    if not args.config:
        raise ConsistbenchError("merge: give CONFIG.yaml (and -o OUT_DIR and/or --export-mergekit)")
    if not args.output and not args.export_mergekit:
        raise ConsistbenchError("merge: give -o OUT_DIR, --export-mergekit OUT.yaml, or both")
    config, notes = load_merge_config(args.config)  # ours, or a mergekit config mapped onto ours
    for note in notes:
        print(note)
    if args.export_mergekit:
        export_mergekit(config, args.export_mergekit)
        print(f"wrote {args.export_mergekit}")
    if args.output:
        merge(config, args.output, log=None if args.quiet else print)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("merge", help="merge models (linear, task_arithmetic, ties, dare_*, consistency)",
                       description="Merge fine-tuned models as CONFIG.yaml says; see docs/MERGING.md.")
    p.add_argument("config", nargs="?", help="merge configuration YAML (consistbench's or mergekit's)")
    add_output_option(p, required=False, metavar="DIR", help="output model folder (written atomically)")
    p.add_argument("--export-mergekit", metavar="OUT.yaml", help="also write the equivalent mergekit YAML")
    p.add_argument("--list-methods", action="store_true", help="list the registered merge methods and exit")
    p.add_argument("--quiet", action="store_true", help="no progress messages")
    p.set_defaults(func=cmd_merge)

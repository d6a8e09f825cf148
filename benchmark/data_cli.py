"""``consistbench data fetch|build|build-robust|validate|audit``: the benchmark data (:mod:`consistbench.benchmark.databuild`,
:mod:`consistbench.benchmark.corpus`, :mod:`consistbench.benchmark.robustbuild`, :mod:`consistbench.benchmark.audit`)."""

from __future__ import annotations

import argparse
from collections import Counter

from consistbench.benchmark import corpus
from consistbench.benchmark.audit import audit_files
from consistbench.benchmark.cli import add_output_option
from consistbench.benchmark.databuild import build
from consistbench.benchmark.robustbuild import build_robust
from consistbench.benchmark.schema import data_checksum, load_data


def cmd_validate(args) -> int:
    rows = load_data(args.file)
    types = Counter(r.variant_type for r in rows)
    splits = Counter(r.split for r in rows)
    print(f"{args.file}: OK, {len(rows)} rows, {len({r.group_id for r in rows})} groups; "
          f"splits {dict(sorted(splits.items()))}; types {dict(sorted(types.items()))}; "
          f"checksum {data_checksum(rows)[:16]}")
    return 0


def cmd_fetch(args) -> int:
    path = corpus.fetch(args.deb, force=args.force)
    print(f"documentation ({corpus.installed_version()}) in {path}")
    return 0


def cmd_build(args) -> int:
    build(html_dir=args.html_dir, out_dir=args.output, check_only=args.check)
    return 0


def cmd_build_robust(args) -> int:
    build_robust(test_path=args.test, out_dir=args.output, seed=args.seed, templates_path=args.templates,
                 check_only=args.check)
    return 0


def add_build_robust(dsub) -> None:
    """``data build-robust``: the robust families' test rows (:mod:`consistbench.benchmark.robustbuild`)."""
    p = dsub.add_parser("build-robust", help="build the typo/surface/template test rows from the test split",
                        description="Write typo.jsonl, surface.jsonl and template.jsonl (each test group's original "
                                    "and one variant of the family, audited) with versions.json, which records the "
                                    "checksum of the test split they were built from. Rerun it whenever the test "
                                    "split changes: the robust tasks refuse rows built from another test split.")
    p.add_argument("--test", default=None, metavar="FILE",
                   help="test split to build from (default: the shipped tasks/consistency/data/test.jsonl)")
    add_output_option(p, required=False, metavar="DIR",
                      help="folder for the family files (default: the shipped tasks/consistency/data/robust)")
    p.add_argument("--seed", type=int, default=0, help="seed of the typo and surface generators and of the "
                                                       "template assignment (default 0)")
    p.add_argument("--templates", default=None, metavar="FILE",
                   help="template set (default: the shipped tasks/consistency/templates.yaml)")
    p.add_argument("--check", action="store_true", help="rebuild to a temporary place and compare with the output folder")
    p.set_defaults(func=cmd_build_robust)


def cmd_audit(args) -> int:
    ok = audit_files(args.files, max_report=args.max_report)
    return 0 if ok else 1


def register(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="the benchmark data: fetch, build, validate, audit")
    dsub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    p = dsub.add_parser("validate", help="check a data file against the schema")
    p.add_argument("file")
    p.set_defaults(func=cmd_validate)
    p = dsub.add_parser("fetch", help="download and unpack the Python 3.11 documentation (apt-get download)")
    p.add_argument("--deb", default=None, help="use this python3.11-doc .deb instead of apt-get download")
    p.add_argument("--force", action="store_true", help="unpack again even if present")
    p.set_defaults(func=cmd_fetch)
    p = dsub.add_parser("build", help="rebuild the shipped data from the documentation and the authored questions")
    p.add_argument("--html-dir", default=None, help="an unpacked html/ directory (default: fetch into the cache)")
    add_output_option(p, required=False, metavar="DIR",
                      help="folder for train/dev/test JSONL (default: the shipped data folder)")
    p.add_argument("--check", action="store_true", help="rebuild to a temporary place and compare with the shipped files")
    p.set_defaults(func=cmd_build)
    add_build_robust(dsub)
    p = dsub.add_parser("audit", help="run every quality check on data files; non-zero exit on a violation")
    p.add_argument("files", nargs="+")
    p.add_argument("--max-report", type=int, default=50, help="violations listed per rule (default 50)")
    p.set_defaults(func=cmd_audit)

"""``consistbench score``: metrics for responses generated anywhere (:mod:`consistbench.benchmark.scorer`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from consistbench.benchmark.cli import (add_bootstrap_options, add_json_option, add_score_options,
                                        bootstrap_settings_of, score_settings)
from consistbench.benchmark.fileio import write_json
from consistbench.benchmark.report import print_table
from consistbench.benchmark.scorer import score_file


def cmd_score(args) -> int:
    result = score_file(args.responses, score_settings(args), bootstrap_settings_of(args))
    print_table(result["metrics"], result["counts"], title=f"consistbench score: {Path(args.responses).name}")
    if args.json:
        write_json(args.json, result)
        print(f"wrote {args.json}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score", help="score a responses JSONL (data rows plus 'response')",
                       description="Accuracy and consistency metrics, with 95%% group-bootstrap intervals, for a "
                                   "responses JSONL: one data row per line plus its 'response'.")
    p.add_argument("responses", help="responses JSONL")
    add_json_option(p, help="write the results JSON (metrics, intervals, settings, counts, data version) to FILE")
    add_score_options(p)
    add_bootstrap_options(p)
    p.set_defaults(func=cmd_score)

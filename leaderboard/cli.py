"""``consistbench leaderboard prepare|validate|reproduce|build|schema``: the commands' arguments and
what they print; the work is done by :mod:`~consistbench.leaderboard.prepare`,
:mod:`~consistbench.leaderboard.validate`, :mod:`~consistbench.leaderboard.reproduce`,
:mod:`~consistbench.leaderboard.site` and :mod:`~consistbench.leaderboard.schema`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from consistbench.benchmark.cli import add_json_option, add_output_option, add_trust_remote_code
from consistbench.benchmark.fileio import write_json, write_text
from consistbench.leaderboard.prepare import prepare
from consistbench.leaderboard.render import coverage_text
from consistbench.leaderboard.reproduce import plan_of, reproduce
from consistbench.leaderboard.rescore import tolerance
from consistbench.leaderboard.sampling import CONFIDENCE, FORGED_SHARE, POWER, TOLERATED_SHARE
from consistbench.leaderboard.schema import metadata_json_schema_text
from consistbench.leaderboard.site import build_site
from consistbench.leaderboard.tracks import REPRODUCE, REPRODUCE_ALL_MAX_ROWS, TRACKS
from consistbench.leaderboard.validate import validate_submission


def cmd_validate(args) -> int:
    v = validate_submission(args.submission, task=args.task)
    table = Table(title=f"{v.metadata.model.name}: {v.task}, {v.n_docs} documents, {v.n_pairs} pairs")
    for col in ("metric", "reported", "rescored", "|diff|", "tolerance"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for m, value in v.metrics.items():
        table.add_row(m, f"{v.reported[m]:.6f}", f"{value:.6f}", f"{v.max_diff[m]:.1e}", f"{tolerance(m):g}")
    Console().print(table)
    if args.json:
        write_json(args.json, {"submission": str(args.submission), "valid": True, "task": v.task,
                               "data_sha256": v.data_sha256, "task_version": v.task_version, "n_docs": v.n_docs,
                               "n_pairs": v.n_pairs, "metadata": v.metadata.model_dump(mode="json"),
                               "metrics": {m: {"reported": v.reported[m], "rescored": value, "abs_diff": v.max_diff[m],
                                               "tolerance": tolerance(m)} for m, value in v.metrics.items()},
                               "verification": v.verification, "implausible": v.implausible,
                               "content_sha256": v.content_sha256,
                               "reproduction": v.reproduction.model_dump(mode="json") if v.reproduction else None})
        print(f"wrote {args.json}")
    print(f"{args.submission}: OK (data version {v.data_sha256[:16]}..., every metric rescored from the samples); "
          f"verification: {v.verification}" + (f" ({'; '.join(v.implausible)})" if v.implausible else ""))
    return 0


def cmd_reproduce(args) -> int:
    """Regenerate a submission's rows (all or a seeded sample) and compare (exit 1 when it does not reproduce)."""
    if args.plan_only:
        p = plan_of(args.submission, args.forged_share, args.power, args.tolerated_share, args.confidence, args.mode)
        print(json.dumps(p.model_dump(), indent=2))
        return 0
    rec = reproduce(args.submission, model=args.model, model_args=args.model_args, salt=args.salt or "",
                    forged_share=args.forged_share, power=args.power, tolerated_share=args.tolerated_share,
                    confidence=args.confidence, batch_size=args.batch_size, device=args.device,
                    trust_remote_code=args.trust_remote_code, mode=args.mode)
    p = rec.plan
    table = Table(title=f"{args.submission}: {rec.compared_docs} documents in {len(rec.groups)} of {p.n_groups} groups "
                        "regenerated (logged - reproduced, 95% paired group bootstrap)")
    for col in ("metric", "logged", "reproduced", "difference", "95% interval"):
        table.add_column(col, justify="left" if col == "metric" else "right")

    def f(x):
        return "-" if x is None else f"{x:.4f}"

    for m, d in rec.metrics.items():
        table.add_row(m, f(d.logged), f(d.reproduced), f(d.difference), f"[{f(d.low)}, {f(d.high)}]")
    Console().print(table)
    for mm in rec.mismatches[:5]:
        print(f"differs: {mm.id}: logged {mm.logged[:80]!r} / regenerated {mm.reproduced[:80]!r}")
    lo, hi = rec.exact_match_ci
    print(f"identical responses: {rec.exact_matches} of {rec.compared_docs} ({rec.exact_match_share:.1%}, 95% CI "
          f"{lo:.1%}-{hi:.1%}); groups that differ: {rec.mismatched_groups} (at most {p.max_mismatched_groups}); "
          f"identical prompts: {rec.identical_prompts} of {rec.compared_docs}")
    print(f"checked: {coverage_text(rec.model_dump())}; seed {rec.seed}"
          + (f" (salt {rec.salt!r})" if rec.salt else ""))
    print(f"verdict: {rec.verdict}" + (": " + "; ".join(rec.reasons) if rec.reasons else "")
          + f"; wrote {Path(args.submission) / 'reproduction.json'} ({rec.wall_seconds:.0f} s)")
    return 0 if rec.verdict == "reproduced" else 1


def cmd_build(args) -> int:
    tracks = build_site(args.submissions, args.output, task=args.task, use_cache=not args.no_cache)
    print(f"wrote {args.output}: " + "; ".join(f"{t}: {len(r)} models" for t, r in tracks.items()))
    return 0


def cmd_schema(args) -> int:
    text = metadata_json_schema_text()
    if args.output:
        write_text(args.output, text)
        print(f"wrote {args.output}")
    else:
        print(text, end="")
    return 0


def cmd_prepare(args) -> int:
    """Make a submission directory from one ``consistbench eval`` / ``lm_eval`` output folder."""
    out = Path(args.output)
    files = prepare(args.eval_dir, out, name=args.name, submitter=args.submitter, link=args.link,
                    parameters=args.parameters, precision=args.precision, revision=args.revision,
                    base_model=args.base_model, method=args.method, license=args.license,
                    submitter_link=args.submitter_link, date=args.date, notes=args.notes, task=args.task,
                    results=args.results, samples=args.samples, force=args.force)
    print(f"wrote {out} ({', '.join(files)}); check it with: consistbench leaderboard validate {out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    lb = sub.add_parser("leaderboard", help="leaderboard submissions: prepare, validate (rescore), build the site")
    lsub = lb.add_subparsers(dest="leaderboard_command", required=True, metavar="ACTION")

    p = lsub.add_parser("validate", help="check a submission directory and rescore every metric from its samples")
    p.add_argument("submission", help="directory with metadata.json, the results JSON and the samples JSONL")
    p.add_argument("--task", default=None, choices=list(TRACKS),
                   help="track the submission must be on (default: any track; the results JSON names its task)")
    add_json_option(p, help="also write the validation report (reported vs rescored, per metric) to FILE")
    p.set_defaults(func=cmd_validate)

    p = lsub.add_parser("reproduce", help="regenerate a submission's rows (all, or a seeded sample of its groups) "
                                          "with its model and compare with the logged responses; writes "
                                          "reproduction.json",
                        description="Regenerates every row (--all) or whole question groups chosen by a seed derived "
                                    "from the submission's content (plus --salt) (--sample), with the task's "
                                    "generation settings and the submission's chat-template choice, and compares every regenerated response "
                                    "with the logged one. Exit status 1 when the responses do not reproduce.")
    p.add_argument("submission", help="submission directory")
    p.add_argument("--model", default=None,
                   help="lm-eval model type (default: consistbench-hf, the exact default generation path of "
                        "consistbench eval)")
    p.add_argument("--model-args", default=None,
                   help="lm-eval model_args of the submission's model, e.g. pretrained=DIR (default: the embedded "
                        "SmolLM2); the submission's dtype= is added when not given")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--all", dest="mode", action="store_const", const="all", default=None,
                       help="regenerate every row (default on the quick and small tracks: "
                            + ", ".join(t for t, m in REPRODUCE.items() if m == "all")
                            + f"; tracks of at most {REPRODUCE_ALL_MAX_ROWS} rows)")
    which.add_argument("--sample", dest="mode", action="store_const", const="sample",
                       help="regenerate a seeded sample of whole groups (the sampling plan below; default on "
                            + ", ".join(t for t, m in REPRODUCE.items() if m == "sample") + ")")
    p.add_argument("--salt", default="", help="extra seed material the submitter cannot predict (recorded)")
    p.add_argument("--forged-share", type=float, default=FORGED_SHARE,
                   help=f"--sample: smallest share of forged responses to detect (default {FORGED_SHARE}; --all "
                        "detects any forged row with the default --tolerated-share 0)")
    p.add_argument("--power", type=float, default=POWER, help=f"probability of detecting it (default {POWER})")
    p.add_argument("--tolerated-share", type=float, default=TOLERATED_SHARE,
                   help="share of honest groups allowed not to reproduce exactly, e.g. other hardware "
                        f"(default {TOLERATED_SHARE}: greedy decoding reproduces exactly)")
    p.add_argument("--confidence", type=float, default=CONFIDENCE,
                   help=f"probability that an honest submission passes when --tolerated-share > 0 (default {CONFIDENCE})")
    p.add_argument("--batch-size", default="8", help="generation batch size (default 8)")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: CUDA when present, else CPU)")
    add_trust_remote_code(p)
    p.add_argument("--plan-only", action="store_true", help="print the plan (of --all or --sample) and stop")
    p.set_defaults(func=cmd_reproduce)

    p = lsub.add_parser("build", help="validate every submission and write the static site")
    p.add_argument("submissions", help="directory of submission directories (e.g. leaderboard/submissions)")
    add_output_option(p, metavar="DIR", help="site directory (replaced atomically)")
    p.add_argument("--task", default=None, choices=list(TRACKS), help="build only this track (default: every track)")
    p.add_argument("--no-cache", action="store_true",
                   help="rescore every submission, ignoring and not writing the cache of validation results "
                        "(an entry is reused only for identical files, data and scorer)")
    p.set_defaults(func=cmd_build)

    p = lsub.add_parser("prepare", help="make a submission directory from a consistbench eval / lm_eval output folder")
    p.add_argument("eval_dir", help="folder with results_*.json and samples_<task>_*.jsonl")
    add_output_option(p, metavar="DIR", help="new submission directory")
    p.add_argument("--name", required=True, help="model name shown on the site")
    p.add_argument("--link", help="http(s) URL of the model")
    p.add_argument("--parameters", type=int, help="parameter count (default: lm-eval's model_num_parameters)")
    p.add_argument("--precision", help="float32, bfloat16, float16, int8, int4, fp8, mixed, other "
                                       "(default: from lm-eval's model_dtype)")
    p.add_argument("--revision")
    p.add_argument("--base-model")
    p.add_argument("--method", help="how the model was made")
    p.add_argument("--license")
    p.add_argument("--submitter", required=True)
    p.add_argument("--submitter-link")
    p.add_argument("--date", help="YYYY-MM-DD (default: the results file's date)")
    p.add_argument("--notes")
    p.add_argument("--task", default=None, choices=list(TRACKS),
                   help="task of the samples file (default: the one task in the results JSON)")
    p.add_argument("--results", help="results JSON (default: the one results_*.json in EVAL_DIR)")
    p.add_argument("--samples", help="samples JSONL (default: the one samples_<task>_*.jsonl in EVAL_DIR)")
    p.add_argument("--force", action="store_true", help="replace an existing submission directory")
    p.set_defaults(func=cmd_prepare)

    p = lsub.add_parser("schema", help="print the JSON Schema of metadata.json")
    add_output_option(p, required=False, help="write it to this file instead of printing")
    p.set_defaults(func=cmd_schema)

"""``consistbench doctor``: a model's tokenizer and generation settings (:mod:`consistbench.reference_method.doctor`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from consistbench.benchmark.cli import add_json_option, add_output_option, add_trust_remote_code
from consistbench.benchmark.errors import ConsistbenchError
from consistbench.benchmark.fileio import write_json
from consistbench.reference_method import doctor


def cmd_doctor(args) -> int:
    if args.fix and not args.output:
        raise ConsistbenchError("--fix writes a corrected copy: give its folder with -o/--output")
    if args.output and not args.fix:
        raise ConsistbenchError("-o/--output is the folder of the corrected copy: add --fix")
    findings = doctor.check(args.model_dir, trust_remote_code=args.trust_remote_code)
    print(doctor.format_report(args.model_dir, findings))
    if args.json:
        write_json(args.json, [f.to_json() for f in findings])
        print(f"wrote {args.json}")
    if not args.fix:
        return 1 if any(f.severity == "error" for f in findings) else 0
    template = None
    if args.chat_template:
        try:
            template = Path(args.chat_template).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConsistbenchError(f"{args.chat_template}: cannot read the chat template ({exc})") from None
    actions, left = doctor.fix(args.model_dir, args.output, pad_token=args.pad_token, chat_template=template,
                               trust_remote_code=args.trust_remote_code)
    for a in actions:
        print(f"fixed: {a}")
    print(f"wrote {args.output}")
    print(doctor.format_report(args.output, left))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="check a model's tokenizer and generation settings; --fix writes a corrected copy",
                       description="Exit status 1 when an error is found (e.g. pad token == eos token).")
    p.add_argument("model_dir")
    p.add_argument("--fix", action="store_true", help="write a corrected copy to -o/--output (atomically)")
    add_output_option(p, required=False, metavar="DIR", help="folder of the corrected copy (with --fix)")
    p.add_argument("--pad-token", default=None, help="pad token to use when fixing (default: chosen automatically)")
    p.add_argument("--chat-template", default=None, metavar="FILE", help="Jinja chat template to install when fixing")
    add_json_option(p, help="also write the findings as JSON to FILE")
    add_trust_remote_code(p)
    p.set_defaults(func=cmd_doctor)

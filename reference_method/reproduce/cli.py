"""``consistbench ref reproduce``: the command (its flags, ``--show-preset``, ``--stages``).

The work is done by :mod:`.stages` on a :class:`~.run_folder.Run`; this module only reads the
command line.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from consistbench.benchmark.cli import add_output_option
from consistbench.benchmark.errors import ConsistbenchError
from consistbench.benchmark.paths import cache_dir
from consistbench.reference_method.reproduce.presets import PRESETS
from consistbench.reference_method.reproduce.run_folder import Run
from consistbench.reference_method.reproduce.stages import STAGES, run_stages


def default_run_dir(preset: str) -> Path:
    """``<cache>/runs/PRESET``: where a run goes without ``-o``."""
    return cache_dir() / "runs" / preset


def parse_extra(values: list[str] | None) -> dict[str, str]:
    """``--extra-model NAME=DIR`` values as {name: absolute folder}."""
    out = {}
    for v in values or []:
        name, sep, path = v.partition("=")
        if not sep or not name or not path:
            raise ConsistbenchError(f"--extra-model {v!r}: expected NAME=DIR")
        if name in out:
            raise ConsistbenchError(f"--extra-model {name}: given twice")
        out[name] = str(Path(path).expanduser().resolve())
    return out


def cmd_reproduce(args) -> int:
    preset = PRESETS[args.preset]
    if args.show_preset:
        print(json.dumps(asdict(preset), indent=2))
        return 0
    stages = tuple(STAGES)
    if args.stages:
        stages = tuple(s.strip() for s in args.stages.split(",") if s.strip())
        bad = [s for s in stages if s not in STAGES]
        if bad:
            raise ConsistbenchError(f"--stages: unknown stage {bad[0]!r} (expected {', '.join(STAGES)})")
    run = Run(preset, args.output or default_run_dir(args.preset), model=args.model,
              extra_models=parse_extra(args.extra_model), progress=args.progress, allow_missing=args.allow_missing,
              only={n.strip() for n in args.only.split(",") if n.strip()} if args.only else None)
    run_stages(run, stages)
    return 0


def register(ref_sub: argparse._SubParsersAction) -> None:
    p = ref_sub.add_parser("reproduce", help="the paper's table end to end: synth, (search), train, weights, merge, eval, table",
                           description="Resumable: a stage whose output exists is skipped; run again after a crash.")
    p.add_argument("--preset", required=True, choices=sorted(PRESETS))
    add_output_option(p, required=False, metavar="RUN_DIR",
                      help="run folder where every output goes (default: <cache>/runs/PRESET)")
    p.add_argument("--model", default=None, help="base model folder (cpu, cpu-mini: embedded SmolLM2; paper: required)")
    p.add_argument("--extra-model", action="append", metavar="NAME=DIR",
                   help="an already-trained model to evaluate and add as a row (repeatable)")
    p.add_argument("--stages", default=None, help=f"comma-separated subset of {','.join(STAGES)} (default: all)")
    p.add_argument("--only", default=None, metavar="NAMES",
                   help="train and eval only these models (comma-separated, e.g. base,merged)")
    p.add_argument("--show-preset", action="store_true", help="print the preset's settings as JSON and exit")
    p.add_argument("--progress", action="store_true", help="progress bars during training")
    p.add_argument("--allow-missing", action="store_true",
                   help="eval and table: leave out models not trained yet (a partial table) instead of failing")
    p.set_defaults(func=cmd_reproduce)

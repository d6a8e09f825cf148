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
from consistbench.reference_method.reproduce.launch import SHIPPED, Launcher
from consistbench.reference_method.reproduce.plan import dry_run
from consistbench.reference_method.reproduce.presets import FAIR, PRESETS, with_options
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


def parse_seeds(value: str | None) -> list[int] | None:
    """``--seeds 0,1,2`` as a list of ints (None when not given)."""
    if value is None:
        return None
    try:
        return [int(s) for s in value.split(",") if s.strip()]
    except ValueError:
        raise ConsistbenchError(f"--seeds {value!r}: expected comma-separated integers, e.g. 0,1,2") from None


def cmd_reproduce(args) -> int:
    preset = with_options(PRESETS[args.preset], fair=args.fair, seeds=parse_seeds(args.seeds))
    if args.show_preset:
        print(json.dumps(asdict(preset), indent=2))
        return 0
    stages = tuple(STAGES)
    if args.stages:
        stages = tuple(s.strip() for s in args.stages.split(",") if s.strip())
        bad = [s for s in stages if s not in STAGES]
        if bad:
            raise ConsistbenchError(f"--stages: unknown stage {bad[0]!r} (expected {', '.join(STAGES)})")
    launcher = Launcher.from_options(args.launcher, args.accelerate_config, num_processes=args.num_processes,
                                     num_machines=args.num_machines, machine_rank=args.machine_rank,
                                     main_process_ip=args.main_process_ip, main_process_port=args.main_process_port)
    run = Run(preset, args.output or default_run_dir(preset.name), model=args.model,
              extra_models=parse_extra(args.extra_model), progress=args.progress, allow_missing=args.allow_missing,
              only={n.strip() for n in args.only.split(",") if n.strip()} if args.only else None, launcher=launcher)
    if args.dry_run:
        dry_run(run, gpu_gib=args.gpu_memory)
        return 0
    run_stages(run, stages)
    return 0


def register(ref_sub: argparse._SubParsersAction) -> None:
    p = ref_sub.add_parser("reproduce", help="the paper's table end to end: synth, (searches), train, weights, merge, eval, table",
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
    p.add_argument("--fair", action="store_true",
                   help="the fair-test choices on top of a preset that trains every arm for the same epochs (paper, "
                        "paper-full): a dose-matched SFT row, seeds " + ",".join(map(str, FAIR["seeds"]))
                        + ", the null merges (uniform; task arithmetic, its scale on dev), the weights' distance on dev "
                        f"({', '.join(FAIR['weights_distances'])}), TOST margin {FAIR['equivalence_margin']:g}; "
                        "the run's preset is NAME+fair")
    p.add_argument("--seeds", default=None, metavar="LIST",
                   help="train the seeded arms (and merge) once per seed, e.g. 0,1,2 (the first keeps the plain names)")
    p.add_argument("--show-preset", action="store_true", help="print the preset's settings as JSON and exit")
    p.add_argument("--progress", action="store_true", help="progress bars during training")
    p.add_argument("--allow-missing", action="store_true",
                   help="eval and table: leave out models not trained yet (a partial table) instead of failing")
    p.add_argument("--dry-run", action="store_true",
                   help="print every stage, its commands, the memory per GPU (from --model's config.json alone) and "
                        "the expected GPU-hours; exit non-zero when the plan cannot fit")
    p.add_argument("--gpu-memory", type=float, default=79.0, metavar="GIB",
                   help="--dry-run: memory of one GPU in GiB (default 79: an 80 GB H100/A100)")
    g = p.add_argument_group("launcher", "where the heavy jobs (training, the weights' forward passes, evaluation) run")
    g.add_argument("--launcher", choices=("none", "accelerate"), default=None,
                   help="none: this process (default); accelerate: each job under `accelerate launch`")
    g.add_argument("--accelerate-config", default=None, metavar="NAME|FILE",
                   help=f"a shipped accelerate config ({', '.join(SHIPPED)}; default ddp) or your own YAML "
                        "(implies --launcher accelerate)")
    g.add_argument("--num-processes", type=int, default=None, help="accelerate: processes on all machines together")
    g.add_argument("--num-machines", type=int, default=None, help="accelerate: machines")
    g.add_argument("--machine-rank", type=int, default=None,
                   help="accelerate: this machine's rank (0: the main one, which runs the stages; others follow)")
    g.add_argument("--main-process-ip", default=None, help="accelerate: the main machine's address")
    g.add_argument("--main-process-port", type=int, default=None, help="accelerate: the main machine's port")
    p.set_defaults(func=cmd_reproduce)

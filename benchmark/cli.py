"""The ``consistbench`` command line: one script, one subcommand per job.

Registration, one way only: each command is a function ``register(subparsers)`` in the module
beside the code it drives (``benchmark/eval_cli.py``, ``leaderboard/cli.py``, ...), declared in
``pyproject.toml`` as an entry point of the group ``consistbench.commands`` whose name is the
command's name. :func:`build_parser` loads them all, in name order; another installed package
can add a command the same way. ``benchmark`` therefore imports none of the project's other
packages.

Conventions every command follows (``docs/CLI.md``): output with ``-o/--output``; ``--json FILE``
always writes a file; one spelling for each shared option (the helpers below define them once);
commands whose settings are dataclasses (training, preference optimisation) take every field as
a flag plus ``--config YAML`` (:func:`parse_dataclasses`, TRL's ``TrlParser``).

Bad input raises :class:`consistbench.benchmark.errors.ConsistbenchError`; :func:`main` prints it
as one line (``consistbench: error: ...``) and exits with status 2. Heavy libraries are imported
inside the handlers so that ``consistbench --help`` and light commands start fast.

Runs are offline by default: ``HF_HUB_OFFLINE=1`` unless the caller set ``HF_HUB_OFFLINE``
themselves (``HF_HUB_OFFLINE=0 consistbench ...`` allows hub model ids).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points

from consistbench.benchmark import __version__
from consistbench.benchmark.errors import ConsistbenchError
from consistbench.benchmark.intervals import N_RESAMPLES, SEED, bootstrap_settings
from consistbench.benchmark.metrics import RS_THRESHOLD, BertScoreConfig, ScoreSettings

ENTRY_POINT_GROUP = "consistbench.commands"


# ---------------------------------------------------------------------------------------------
# Options shared by several commands: defined once, spelled the same everywhere

def add_output_option(p: argparse.ArgumentParser, *, help: str, required: bool = True, default: str | None = None,
                      metavar: str = "PATH") -> None:
    """``-o/--output``: where a command writes its result (a file or a folder, as ``help`` says)."""
    p.add_argument("-o", "--output", required=required, default=default, metavar=metavar, help=help)


def add_json_option(p: argparse.ArgumentParser, *, help: str = "also write the result as JSON to FILE") -> None:
    """``--json FILE``: always a file to write, never a switch that prints."""
    p.add_argument("--json", default=None, metavar="FILE", help=help)


def add_trust_remote_code(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trust-remote-code", action="store_true",
                   help="allow model code from the model folder or hub (off by default)")


def add_score_options(p: argparse.ArgumentParser, *, allow_skip_bs: bool = True) -> None:
    """The scoring settings (RS threshold, BERTScore encoder); recorded in every result."""
    g = p.add_argument_group("scoring settings (recorded with every result)")
    g.add_argument("--rs-threshold", type=float, default=RS_THRESHOLD,
                   help=f"ROUGE-L F1 at or above which a pair counts as consistent for rs (default {RS_THRESHOLD})")
    g.add_argument("--bs-model", default=None,
                   help="bert-score model_type for bs (default: the embedded all-MiniLM-L6-v2)")
    g.add_argument("--bs-num-layers", type=int, default=None, help="bert-score num_layers (needed for a local path)")
    g.add_argument("--bs-batch-size", type=int, default=128, help="BERTScore batch size (default 128)")
    if allow_skip_bs:
        g.add_argument("--no-bs", action="store_true", help="skip BERTScore (bs) for a quick look")


def score_settings(args: argparse.Namespace):
    """The :class:`~consistbench.benchmark.metrics.ScoreSettings` of :func:`add_score_options`."""
    if not 0.0 <= args.rs_threshold <= 1.0:
        raise ConsistbenchError(f"--rs-threshold must lie in [0, 1], got {args.rs_threshold}")
    return ScoreSettings(rs_threshold=args.rs_threshold,
                         bertscore=BertScoreConfig(model_type=args.bs_model, num_layers=args.bs_num_layers,
                                                   batch_size=args.bs_batch_size),
                         compute_bs=not getattr(args, "no_bs", False))


def add_bootstrap_options(p: argparse.ArgumentParser, *, allow_off: bool = True) -> None:
    """The group bootstrap behind every interval: ``--n-resamples``, ``--bootstrap-seed``."""
    g = p.add_argument_group("confidence intervals (group bootstrap)")
    g.add_argument("--n-resamples", type=int, default=N_RESAMPLES,
                   help=f"bootstrap resamples (default {N_RESAMPLES}" + ("; 0: no intervals)" if allow_off else ")"))
    g.add_argument("--bootstrap-seed", type=int, default=SEED, help=f"bootstrap seed (default {SEED})")


def bootstrap_settings_of(args: argparse.Namespace):
    """The bootstrap settings of :func:`add_bootstrap_options` (None: intervals switched off)."""
    if args.n_resamples < 0:
        raise ConsistbenchError(f"--n-resamples must be >= 0, got {args.n_resamples}")
    return bootstrap_settings(args.n_resamples, args.bootstrap_seed)


def add_dataclass_command(sub: argparse._SubParsersAction, name: str, *, help: str, dataclass_types, func
                          ) -> argparse.ArgumentParser:
    """A command whose options are the fields of dataclasses (every field a flag, plus ``--config YAML``).

    ``dataclass_types()`` returns the dataclasses; ``func(args, parsed)`` runs the command with one
    instance of each. Building their parser imports transformers (the dataclasses extend
    ``TrainingArguments``), so it is built only when the command runs: here the command is a stub
    that passes every argument after its name, ``--help`` included, to :func:`dataclass_parser`.
    """
    p = sub.add_parser(name, help=help, add_help=False, description=help)
    p.set_defaults(func=func, passthrough=True, prog=p.prog, description=help, dataclass_types=dataclass_types)
    return p


def dataclass_parser(prog: str, dataclass_types: Sequence[type], *, description: str = ""):
    """TRL's ``TrlParser`` (an ``HfArgumentParser``) over ``dataclass_types``, with ``--config YAML``."""
    from trl import TrlParser

    parser = TrlParser(dataclass_types, prog=prog, description=description)
    parser.add_argument("--config", metavar="YAML", help="YAML file of field values (flags given here override it)")
    return parser


def parse_dataclasses(prog: str, dataclass_types: Sequence[type], argv: Sequence[str], *, description: str = ""):
    """Parse ``argv`` into instances of ``dataclass_types``.

    Values in the ``--config`` YAML file replace the fields' defaults, flags on the command line
    override the file. Invalid values (a dataclass's ``__post_init__`` raising ``ValueError``)
    become one-line errors.
    """
    parser = dataclass_parser(prog, dataclass_types, description=description)
    argv = list(argv)
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            parser.error("--config needs a YAML file")
        if not os.path.isfile(argv[i + 1]):
            raise ConsistbenchError(f"--config {argv[i + 1]}: no such file")
    try:
        parsed = parser.parse_args_and_config(argv)
    except ValueError as exc:
        raise ConsistbenchError(str(exc).strip().splitlines()[0]) from None
    # the leftover namespace holds only the help-only --config argument (TrlParser consumed the real one)
    return tuple(p for p in parsed if not isinstance(p, argparse.Namespace))


# ---------------------------------------------------------------------------------------------

def command_entry_points() -> list:
    """The installed ``consistbench.commands`` entry points, in name order."""
    eps = sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)
    if not eps:
        raise ConsistbenchError("no consistbench commands are registered: is the package installed "
                                "(`pip install -e .` or `make setup`)?")
    return eps


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="consistbench", description="Consistency benchmark for RAG generators.")
    parser.add_argument("--version", action="version", version=f"consistbench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    seen: dict[str, str] = {}
    for ep in command_entry_points():
        if ep.name in seen:  # the same distribution seen twice on sys.path: the first one wins
            continue
        seen[ep.name] = ep.value
        ep.load()(sub)
    return parser


def iter_commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """Every command of ``parser``, depth first: ``(path, subparser)`` for each leaf and group."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield path + (name,), sub
                yield from iter_commands(sub, path + (name,))


def leaf_parser(sub: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The parser that really parses a command: the subparser itself, or for a dataclass command
    (:func:`add_dataclass_command`) its ``TrlParser``."""
    if sub.get_default("passthrough"):
        return dataclass_parser(sub.get_default("prog"), sub.get_default("dataclass_types")(),
                                description=sub.get_default("description"))
    return sub


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        parser = build_parser()
        args, extra = parser.parse_known_args(argv)
        if getattr(args, "passthrough", False):
            parsed = parse_dataclasses(args.prog, args.dataclass_types(), extra, description=args.description)
            return int(args.func(args, parsed) or 0)
        if extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        return int(args.func(args) or 0)
    except ConsistbenchError as exc:
        print(f"consistbench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("consistbench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

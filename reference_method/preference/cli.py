"""``consistbench ref prefs|wrpo|mrpo``: preference data and the two preference-fusion baselines.

``ref wrpo`` and ``ref mrpo`` take every field of their config (TRL's ``DPOConfig`` plus the
method's fields and the shared LoRA/model arguments) as a flag, plus ``--config YAML``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from rich.console import Console
from rich.table import Table

from consistbench.benchmark.cli import add_dataclass_command, add_output_option, add_trust_remote_code
from consistbench.benchmark.embedded import model_or_smollm2
from consistbench.benchmark.errors import ConsistbenchError
from consistbench.reference_method.preference.data import PrefConfig, build_file
from consistbench.reference_method.preference.train import train_preference
from consistbench.reference_method.synth import default_train_file


def cmd_prefs(args) -> int:
    cfg = PrefConfig(n_samples=args.n_samples, temperature=args.temperature, top_p=args.top_p,
                     max_new_tokens=args.max_new_tokens, consistency_weight=args.consistency_weight,
                     min_margin=args.min_margin, batch_size=args.batch_size, seed=args.seed)
    stats = build_file(args.data or default_train_file(), args.output, model_or_smollm2(args.model), args.source, cfg,
                       limit=args.limit, holdout=args.holdout, trust_remote_code=args.trust_remote_code)
    table = Table(title=f"preference data: {args.output}")
    for col in ("groups", "queries", "pairs", "no margin (dropped)", "held-out refused"):
        table.add_column(col, justify="right")
    table.add_row(str(stats.groups), str(stats.queries), str(stats.pairs), str(stats.dropped_no_margin),
                  str(stats.refused_holdout))
    Console().print(table)
    print(f"wrote {args.output} and {args.output}.meta.json")
    return 0


@dataclass
class PreferenceScriptArguments:
    """What ``ref wrpo`` / ``ref mrpo`` train and where the final model goes."""

    data: str = field(metadata={"help": "Preference file from `consistbench ref prefs`."})
    output: str = field(metadata={"help": "Final model folder (written only when complete).", "aliases": ["-o"]})
    model: str | None = field(default=None, metadata={
        "help": "Policy to train, also the (main) reference (default: the embedded SmolLM2)."})
    keep_checkpoints: bool = field(default=False, metadata={"help": "Keep the checkpoint folder after success."})
    overwrite: bool = field(default=False, metadata={"help": "Replace an existing output folder."})


@dataclass
class WRPOScriptArguments(PreferenceScriptArguments):
    target_sft_dir: str | None = field(default=None, metadata={
        "help": "Where the target-SFT stage's model goes (default: <output>.target_sft)."})


@dataclass
class MRPOScriptArguments(PreferenceScriptArguments):
    reference: list[str] = field(default_factory=list, metadata={
        "help": "Extra reference model folders (one or more); the policy itself is the main reference."})


WRPO_HELP = "WRPO (Yang et al., ICLR 2025): fuse source answers into the target by preference"
MRPO_HELP = "MRPO (Le et al., 2024): DPO against several reference models"


def wrpo_dataclasses() -> tuple:
    from consistbench.reference_method.preference.wrpo_config import WRPOConfig

    return WRPOScriptArguments, WRPOConfig


def mrpo_dataclasses() -> tuple:
    from consistbench.reference_method.preference.mrpo_config import MRPOConfig

    return MRPOScriptArguments, MRPOConfig


def _train(args, parsed, method: str) -> int:
    script, config = parsed
    refs = getattr(script, "reference", [])
    if method == "mrpo" and not refs:
        raise ConsistbenchError("ref mrpo: give at least one --reference model folder")
    out = train_preference(method, model_or_smollm2(script.model), script.data, script.output, config, references=refs,
                           overwrite=script.overwrite, keep_checkpoints=script.keep_checkpoints,
                           target_sft_dir=getattr(script, "target_sft_dir", None))
    print(f"wrote {out}")
    return 0


def register(rsub: argparse._SubParsersAction) -> None:
    p = rsub.add_parser("prefs", help="preference data for consistency: target (on-policy) and source answers, scored")
    add_output_option(p, help="output JSONL (datasets-loadable; plus OUTPUT.meta.json)")
    p.add_argument("--data", default=None, help="train questions and variants (`ref synth` output; default: the train split)")
    p.add_argument("--model", default=None, help="target model (default: the embedded SmolLM2)")
    p.add_argument("--source", action="append", required=True, metavar="DIR",
                   help="source model, e.g. a specialised model of `ref train` (repeatable)")
    p.add_argument("--holdout", action="append", default=None, metavar="FILE",
                   help="data file whose passages are refused (repeatable; default: the shipped dev and test)")
    p.add_argument("--limit", type=int, default=None, help="a seeded sample of this many question groups")
    p.add_argument("--n-samples", type=int, default=3, help="sampled answers per model and query, besides the greedy one")
    p.add_argument("--temperature", type=float, default=0.7, help="sampling temperature (default 0.7)")
    p.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling p (default 0.95)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="longest answer in tokens (default 64)")
    p.add_argument("--consistency-weight", type=float, default=0.5, help="lam in the score (0: accuracy only)")
    p.add_argument("--min-margin", type=float, default=0.05, help="drop queries whose best and worst answers tie")
    p.add_argument("--batch-size", type=int, default=8, help="generation batch size (default 8)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    add_trust_remote_code(p)
    p.set_defaults(func=cmd_prefs)

    add_dataclass_command(rsub, "wrpo", help=WRPO_HELP, dataclass_types=wrpo_dataclasses,
                          func=lambda a, parsed: _train(a, parsed, "wrpo"))
    add_dataclass_command(rsub, "mrpo", help=MRPO_HELP, dataclass_types=mrpo_dataclasses,
                          func=lambda a, parsed: _train(a, parsed, "mrpo"))

"""``consistbench ref synth`` and ``consistbench ref train`` (part 1 of the reference method).

``ref train`` takes every field of its settings as a flag, plus ``--config YAML`` (TRL's
``TrlParser``): :class:`TrainScriptArguments` (what to train, where to write it),
:class:`~consistbench.reference_method.consistency_config.ConsistencyConfig` (the loss, LoRA and
every ``transformers.TrainingArguments`` field) and :class:`MiningArguments` (triplet mining).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from consistbench.benchmark.cli import add_dataclass_command, add_output_option, add_trust_remote_code
from consistbench.benchmark.embedded import model_or_smollm2
from consistbench.benchmark.variants.cli import add_paraphraser_options
from consistbench.benchmark.variants.paraphrase import make_paraphraser
from consistbench.reference_method.synth import default_train_file, synthesize_file
from consistbench.reference_method.triplets import MiningConfig

TRAIN_TYPES = ("how_to", "plural_article", "paraphrase", "all")


# ---------------------------------------------------------------------------------------------
# ref synth

def cmd_synth(args) -> int:
    types = [t.strip() for t in args.types.split(",") if t.strip()]
    paraphraser = None
    if "paraphrase" in types:
        paraphraser = make_paraphraser(args.paraphraser, model=args.paraphrase_model, base_url=args.base_url,
                                       trust_remote_code=args.trust_remote_code)
    train = args.train or default_train_file()
    stats = synthesize_file(train, args.output, holdout=args.holdout, types=types, n=args.n, seed=args.seed,
                            paraphraser=paraphraser, limit=args.limit)
    made = ", ".join(f"{k} {v}" for k, v in stats.variants.items())
    print(f"wrote {args.output}: {stats.originals} originals, {made}; {stats.refused_holdout} refused "
          f"(passage in a held-out split), {stats.duplicates} duplicates dropped")
    return 0


# ---------------------------------------------------------------------------------------------
# ref train

@dataclass
class TrainScriptArguments:
    """What ``ref train`` trains and where the final model goes."""

    variant_type: str = field(metadata={"help": "Variant type of the specialised model, or all.",
                                        "choices": list(TRAIN_TYPES)})
    data: str = field(metadata={"help": "Synthetic data from `consistbench ref synth`."})
    output: str = field(metadata={"help": "Final model folder (written only when complete).", "aliases": ["-o"]})
    model: str | None = field(default=None, metadata={"help": "Base model folder (default: the embedded SmolLM2)."})
    resume: str | None = field(default=None, metadata={
        "help": "Resume from a checkpoint: `latest` or a checkpoint folder."})
    keep_checkpoints: bool = field(default=False, metadata={"help": "Keep the checkpoint folder after success."})
    overwrite: bool = field(default=False, metadata={"help": "Replace an existing output folder."})


@dataclass
class MiningArguments:
    """Triplet mining (:class:`~consistbench.reference_method.triplets.MiningConfig`), prefixed on the command
    line so that no name clashes with ``TrainingArguments`` (``--mining-seed`` vs ``--seed``)."""

    mining_anchors: str = field(default="original", metadata={
        "help": "Anchors: each group's original question, or every query of the type.", "choices": ["original", "all"]})
    mining_positives: str = field(default="group", metadata={
        "help": "Positives: the anchor's group, or also encoder neighbours with the same answer.",
        "choices": ["group", "group+neighbours"]})
    mining_negatives: str = field(default="bottom", metadata={
        "help": "Negatives: the k least similar queries, the k most similar with another answer, or random.",
        "choices": ["bottom", "hard", "random"]})
    mining_k: int = field(default=10, metadata={"help": "Neighbourhood size for positives and negatives."})
    mining_seed: int = field(default=0, metadata={"help": "Seed that draws each triplet's negative."})
    mining_encoder: str | None = field(default=None, metadata={
        "help": "Sentence encoder of the neighbourhoods (default: the embedded all-MiniLM-L6-v2)."})

    def to_config(self):
        return MiningConfig(anchors=self.mining_anchors, positives=self.mining_positives,
                            negatives=self.mining_negatives, k=self.mining_k, seed=self.mining_seed,
                            encoder=self.mining_encoder)


TRAIN_HELP = "SFT + triplet loss: one model per variant type, or on all"


def train_dataclasses() -> tuple:
    from consistbench.reference_method.consistency_config import ConsistencyConfig

    return TrainScriptArguments, ConsistencyConfig, MiningArguments


def cmd_train(args, parsed) -> int:
    from consistbench.reference_method.train import train

    script, config, mining = parsed
    model = model_or_smollm2(script.model)
    out = train(model, script.data, script.variant_type, script.output, config, mining.to_config(),
                resume=script.resume or False, keep_checkpoints=script.keep_checkpoints, overwrite=script.overwrite)
    if (Path(out) / "consistbench_train.json").is_file():
        print(f"wrote {out}")
    return 0


def register(rsub: argparse._SubParsersAction) -> None:
    p = rsub.add_parser("synth", help="synthetic variants of the train split's questions (never dev/test passages)")
    add_output_option(p, help="output JSONL (benchmark schema + provenance columns)")
    p.add_argument("--train", default=None, help="train split (default: the shipped tasks/consistency/data/train.jsonl)")
    p.add_argument("--holdout", action="append", default=None, metavar="FILE",
                   help="data file whose passages are refused (repeatable; default: the shipped dev and test)")
    p.add_argument("--types", default="how_to,plural_article,paraphrase",
                   help="comma-separated variant types (default how_to,plural_article,paraphrase)")
    p.add_argument("--n", type=int, default=1, help="variants per question and type (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generators and of --limit's sample (default 0)")
    p.add_argument("--limit", type=int, default=None, help="use a seeded sample of this many train questions")
    add_paraphraser_options(p)
    add_trust_remote_code(p)
    p.set_defaults(func=cmd_synth)

    add_dataclass_command(rsub, "train", help=TRAIN_HELP, dataclass_types=train_dataclasses, func=cmd_train)

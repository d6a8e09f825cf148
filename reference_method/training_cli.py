"""Subcommands of the reference method, part 1: ``consistbench ref synth|train`` and ``consistbench doctor``.

``ref synth`` and ``ref train`` join the shared ``ref`` group (:func:`consistbench.reference_method.ref_group.ref_command`);
``doctor`` is a top-level command (:func:`consistbench.benchmark.cli.register`). ``reference_method/cli.py``
imports this module. Heavy libraries are imported inside the handlers.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from consistbench.benchmark.cli import register
from consistbench.benchmark.errors import ConsistbenchError
from consistbench.reference_method.ref_group import ref_command

TRAIN_TYPES = ("how_to", "plural_article", "paraphrase", "all")


# ---------------------------------------------------------------------------------------------
# ref synth

def cmd_synth(args) -> int:
    from consistbench.benchmark.variants.paraphrase import make_paraphraser
    from consistbench.reference_method.synth import default_train_file, synthesize_file

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

def _load_yaml(path: str | None) -> dict:
    if not path:
        return {}
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConsistbenchError(f"{path}: cannot read the config ({exc})") from None
    if not isinstance(data, dict):
        raise ConsistbenchError(f"{path}: expected a mapping of ConsistencyConfig fields")
    return data


# CLI option -> ConsistencyConfig field (None values are left to the config file / defaults).
_CONFIG_OPTIONS = {
    "alpha": "alpha", "margin": "margin", "distance": "distance", "pooling_layer": "pooling_layer",
    "pooling": "pooling", "max_length": "max_length", "use_lora": "use_lora", "lora_r": "lora_r",
    "lora_alpha": "lora_alpha", "lora_dropout": "lora_dropout", "lora_layers": "lora_layers", "lora_target_modules": "lora_target_modules",
    "allow_pad_eq_eos": "allow_pad_eq_eos", "trust_remote_code": "trust_remote_code",
    "learning_rate": "learning_rate", "epochs": "num_train_epochs", "batch_size": "per_device_train_batch_size",
    "grad_accum": "gradient_accumulation_steps", "max_steps": "max_steps", "save_steps": "save_steps",
    "logging_steps": "logging_steps", "seed": "seed", "warmup_steps": "warmup_steps", "bf16": "bf16",
    "use_cpu": "use_cpu", "checkpoint_dir": "output_dir",
}
_MINING_OPTIONS = {"anchors": "anchors", "positives": "positives", "negatives": "negatives", "neighbours_k": "k",
                   "mining_seed": "seed", "encoder": "encoder"}


def build_configs(args):
    from consistbench.reference_method.consistency_config import ConsistencyConfig
    from consistbench.reference_method.triplets import MiningConfig

    fields = _load_yaml(args.config)
    mining_fields = fields.pop("mining", None) or {}
    for opt, name in _CONFIG_OPTIONS.items():
        value = getattr(args, opt, None)
        if value is not None and value is not False:
            fields[name] = value
    for opt, name in _MINING_OPTIONS.items():
        value = getattr(args, opt, None)
        if value is not None:
            mining_fields[name] = value
    fields.setdefault("disable_tqdm", not args.progress)
    try:
        config = ConsistencyConfig(**fields)
        mining = MiningConfig(**mining_fields)
    except TypeError as exc:
        raise ConsistbenchError(f"unknown setting: {exc}") from None
    except ValueError as exc:
        raise ConsistbenchError(str(exc)) from None
    return config, mining


def cmd_train(args) -> int:
    from consistbench.reference_method.train import train

    if args.model is None:
        from consistbench.benchmark.embedded import convert_smollm2

        args.model = str(convert_smollm2())
    config, mining = build_configs(args)
    out = train(args.model, args.data, args.variant_type, args.output_dir, config, mining,
                resume=args.resume or False, keep_checkpoints=args.keep_checkpoints, overwrite=args.overwrite)
    if (Path(out) / "consistbench_train.json").is_file():
        print(f"wrote {out}")
    return 0


# ---------------------------------------------------------------------------------------------
# doctor

def cmd_doctor(args) -> int:
    from consistbench.reference_method import doctor

    findings = doctor.check(args.model_dir, trust_remote_code=args.trust_remote_code)
    if args.json:
        print(json.dumps([f.to_json() for f in findings], indent=2))
    else:
        print(doctor.format_report(args.model_dir, findings))
    if not args.fix:
        return 1 if any(f.severity == "error" for f in findings) else 0
    template = None
    if args.chat_template:
        try:
            template = Path(args.chat_template).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConsistbenchError(f"{args.chat_template}: cannot read the chat template ({exc})") from None
    actions, left = doctor.fix(args.model_dir, args.fix, pad_token=args.pad_token, chat_template=template,
                               trust_remote_code=args.trust_remote_code)
    for a in actions:
        print(f"fixed: {a}")
    print(f"wrote {args.fix}")
    print(doctor.format_report(args.fix, left))
    return 0


# ---------------------------------------------------------------------------------------------

@ref_command
def add_ref(rsub: argparse._SubParsersAction) -> None:
    p = rsub.add_parser("synth", help="synthetic variants of the train split's questions (never dev/test passages)")
    p.add_argument("-o", "--output", required=True, help="output JSONL (benchmark schema + provenance columns)")
    p.add_argument("--train", default=None, help="train split (default: the shipped tasks/consistency/data/train.jsonl)")
    p.add_argument("--holdout", action="append", default=None, metavar="FILE",
                   help="data file whose passages are refused (repeatable; default: the shipped dev and test)")
    p.add_argument("--types", default="how_to,plural_article,paraphrase")
    p.add_argument("--n", type=int, default=1, help="variants per question and type (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=None, help="use a seeded sample of this many train questions")
    p.add_argument("--paraphraser", default="local_lm", choices=("local_lm", "endpoint", "wordnet"))
    p.add_argument("--paraphrase-model", default=None,
                   help="local_lm: model dir (default embedded SmolLM2); endpoint: model name")
    p.add_argument("--base-url", default=None, help="endpoint: base URL of an OpenAI-compatible API")
    p.add_argument("--trust-remote-code", action="store_true")
    p.set_defaults(func=cmd_synth)

    p = rsub.add_parser("train", help="SFT + triplet loss: one model per variant type, or on all")
    p.add_argument("--variant-type", required=True, choices=TRAIN_TYPES)
    p.add_argument("--data", required=True, help="synthetic data from `consistbench ref synth`")
    p.add_argument("--output-dir", required=True, help="final model directory (written only when complete)")
    p.add_argument("--model", default=None, help="base model directory (default: the embedded SmolLM2)")
    p.add_argument("--config", default=None, help="YAML of ConsistencyConfig fields (and a 'mining:' mapping)")
    p.add_argument("--checkpoint-dir", default=None, help="default: <output-dir>.checkpoints")
    p.add_argument("--resume", nargs="?", const="latest", default=None, metavar="CHECKPOINT",
                   help="resume from the latest checkpoint (or the one given)")
    p.add_argument("--keep-checkpoints", action="store_true", help="keep the checkpoint directory after success")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    p.add_argument("--progress", action="store_true", help="show a progress bar")
    g = p.add_argument_group("loss (ConsistencyConfig)")
    g.add_argument("--alpha", type=float, default=None, help="triplet weight (default 1.0; 0 = plain SFT)")
    g.add_argument("--margin", type=float, default=None, help="triplet margin (default 0.2)")
    g.add_argument("--distance", choices=("cosine", "euclidean"), default=None)
    g.add_argument("--pooling-layer", type=int, default=None, help="hidden_states index (default -1, last layer)")
    g.add_argument("--pooling", choices=("mean", "last", "max"), default=None)
    g.add_argument("--max-length", type=int, default=None)
    g = p.add_argument_group("model")
    g.add_argument("--use-lora", action="store_true", default=None)
    g.add_argument("--lora-r", type=int, default=None)
    g.add_argument("--lora-alpha", type=int, default=None)
    g.add_argument("--lora-dropout", type=float, default=None)
    g.add_argument("--lora-target-modules", nargs="+", default=None)
    g.add_argument("--lora-layers", type=int, default=None, help="adapt only the last N layers (default: all)")
    g.add_argument("--allow-pad-eq-eos", action="store_true", default=None)
    g.add_argument("--trust-remote-code", action="store_true", default=None)
    g = p.add_argument_group("optimisation")
    g.add_argument("--learning-rate", type=float, default=None)
    g.add_argument("--epochs", type=float, default=None)
    g.add_argument("--batch-size", type=int, default=None, help="triplets per device and step")
    g.add_argument("--grad-accum", type=int, default=None)
    g.add_argument("--max-steps", type=int, default=None)
    g.add_argument("--warmup-steps", type=int, default=None)
    g.add_argument("--save-steps", type=int, default=None)
    g.add_argument("--logging-steps", type=int, default=None)
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--bf16", action="store_true", default=None)
    g.add_argument("--use-cpu", action="store_true", default=None)
    g = p.add_argument_group("triplet mining (MiningConfig)")
    g.add_argument("--anchors", choices=("original", "all"), default=None)
    g.add_argument("--positives", choices=("group", "group+neighbours"), default=None)
    g.add_argument("--negatives", choices=("bottom", "hard", "random"), default=None)
    g.add_argument("--neighbours-k", type=int, default=None)
    g.add_argument("--mining-seed", type=int, default=None)
    g.add_argument("--encoder", default=None, help="sentence encoder for mining (default: embedded MiniLM)")
    p.set_defaults(func=cmd_train)


@register
def add_doctor(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="check a model's tokenizer and generation settings; --fix writes a corrected copy")
    p.add_argument("model_dir")
    p.add_argument("--fix", default=None, metavar="OUT", help="write a corrected copy here (atomically)")
    p.add_argument("--pad-token", default=None, help="pad token to use when fixing (default: chosen automatically)")
    p.add_argument("--chat-template", default=None, metavar="FILE", help="Jinja chat template to install when fixing")
    p.add_argument("--json", action="store_true", help="print the findings as JSON")
    p.add_argument("--trust-remote-code", action="store_true")
    p.set_defaults(func=cmd_doctor)

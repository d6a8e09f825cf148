"""``consistbench ref prefs|wrpo|mrpo``: preference data and the two preference-fusion baselines."""

from __future__ import annotations

import argparse

from consistbench.benchmark.errors import ConsistbenchError
from consistbench.reference_method.ref_group import ref_command


def _default_model(path: str | None) -> str:
    if path:
        return path
    from consistbench.benchmark.embedded import convert_smollm2

    return str(convert_smollm2())


def cmd_prefs(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from consistbench.reference_method.preference.data import PrefConfig, build_file
    from consistbench.reference_method.synth import default_train_file

    cfg = PrefConfig(n_samples=args.n_samples, temperature=args.temperature, top_p=args.top_p,
                     max_new_tokens=args.max_new_tokens, consistency_weight=args.consistency_weight,
                     min_margin=args.min_margin, batch_size=args.batch_size, seed=args.seed)
    stats = build_file(args.data or default_train_file(), args.output, _default_model(args.model), args.source, cfg,
                       limit=args.limit, holdout=args.holdout, trust_remote_code=args.trust_remote_code)
    table = Table(title=f"preference data: {args.output}")
    for col in ("groups", "queries", "pairs", "no margin (dropped)", "held-out refused"):
        table.add_column(col, justify="right")
    table.add_row(str(stats.groups), str(stats.queries), str(stats.pairs), str(stats.dropped_no_margin),
                  str(stats.refused_holdout))
    Console().print(table)
    print(f"wrote {args.output} and {args.output}.meta.json")
    return 0


_COMMON = {"beta": "beta", "learning_rate": "learning_rate", "epochs": "num_train_epochs", "max_steps": "max_steps",
           "batch_size": "per_device_train_batch_size", "grad_accum": "gradient_accumulation_steps",
           "warmup_steps": "warmup_steps", "seed": "seed", "max_length": "max_length", "use_lora": "use_lora",
           "lora_r": "lora_r", "lora_alpha": "lora_alpha", "lora_dropout": "lora_dropout",
           "lora_target_modules": "lora_target_modules", "allow_pad_eq_eos": "allow_pad_eq_eos",
           "trust_remote_code": "trust_remote_code", "use_cpu": "use_cpu", "checkpoint_dir": "output_dir",
           "logging_steps": "logging_steps"}
_WRPO = {"alpha_max": "alpha_max", "alpha_warmup_ratio": "alpha_warmup_ratio",
         "target_sft_fraction": "target_sft_fraction", "target_sft_learning_rate": "target_sft_learning_rate",
         "target_sft_epochs": "target_sft_epochs"}
_MRPO = {"reference_combination": "reference_combination", "clip_epsilon": "clip_epsilon", "weighting": "weighting",
         "reference_weights": "reference_weights"}


def build_config(args, method: str):
    from consistbench.reference_method.training_cli import _load_yaml

    fields = _load_yaml(args.config)
    for opt, name in {**_COMMON, **(_WRPO if method == "wrpo" else _MRPO)}.items():
        value = getattr(args, opt, None)
        if value is not None and value is not False:
            fields[name] = value
    if method == "wrpo" and getattr(args, "target_sft", None) is False:
        fields["target_sft"] = False  # --no-target-sft
    fields.setdefault("disable_tqdm", not args.progress)
    try:
        if method == "wrpo":
            from consistbench.reference_method.preference.wrpo_config import WRPOConfig as Config
        else:
            from consistbench.reference_method.preference.mrpo_config import MRPOConfig as Config
        return Config(**fields)
    except TypeError as exc:
        raise ConsistbenchError(f"unknown setting: {exc}") from None
    except ValueError as exc:
        raise ConsistbenchError(str(exc)) from None


def _train(args, method: str) -> int:
    from consistbench.reference_method.preference.train import train_preference

    config = build_config(args, method)
    refs = getattr(args, "reference", None) or []
    out = train_preference(method, _default_model(args.model), args.data, args.output_dir, config, references=refs,
                           overwrite=args.overwrite, keep_checkpoints=args.keep_checkpoints,
                           target_sft_dir=getattr(args, "target_sft_dir", None))
    print(f"wrote {out}")
    return 0


def _add_training(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="preference file from `consistbench ref prefs`")
    p.add_argument("--output-dir", required=True, help="final model directory (written only when complete)")
    p.add_argument("--model", default=None, help="policy to train, also the (main) reference (default: embedded SmolLM2)")
    p.add_argument("--config", default=None, help="YAML of config fields")
    p.add_argument("--checkpoint-dir", default=None, help="default: <output-dir>.checkpoints")
    p.add_argument("--keep-checkpoints", action="store_true")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    p.add_argument("--progress", action="store_true", help="show a progress bar")
    g = p.add_argument_group("optimisation")
    g.add_argument("--beta", type=float, default=None)
    g.add_argument("--learning-rate", type=float, default=None)
    g.add_argument("--epochs", type=float, default=None)
    g.add_argument("--max-steps", type=int, default=None)
    g.add_argument("--batch-size", type=int, default=None, help="preference rows per device and step")
    g.add_argument("--grad-accum", type=int, default=None)
    g.add_argument("--warmup-steps", type=int, default=None)
    g.add_argument("--logging-steps", type=int, default=None)
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--max-length", type=int, default=None, help="longer rows are dropped (default 1024)")
    g.add_argument("--use-cpu", action="store_true", default=None)
    g = p.add_argument_group("model")
    g.add_argument("--use-lora", action="store_true", default=None)
    g.add_argument("--lora-r", type=int, default=None)
    g.add_argument("--lora-alpha", type=int, default=None)
    g.add_argument("--lora-dropout", type=float, default=None)
    g.add_argument("--lora-target-modules", nargs="+", default=None)
    g.add_argument("--allow-pad-eq-eos", action="store_true", default=None)
    g.add_argument("--trust-remote-code", action="store_true", default=None)


@ref_command
def add_ref(rsub: argparse._SubParsersAction) -> None:
    p = rsub.add_parser("prefs", help="preference data for consistency: target (on-policy) and source answers, scored")
    p.add_argument("-o", "--output", required=True, help="output JSONL (datasets-loadable; plus OUTPUT.meta.json)")
    p.add_argument("--data", default=None, help="train questions and variants (`ref synth` output; default: the train split)")
    p.add_argument("--model", default=None, help="target model (default: the embedded SmolLM2)")
    p.add_argument("--source", action="append", required=True, metavar="DIR",
                   help="source model, e.g. a specialised model of `ref train` (repeatable)")
    p.add_argument("--holdout", action="append", default=None, metavar="FILE",
                   help="data file whose passages are refused (repeatable; default: the shipped dev and test)")
    p.add_argument("--limit", type=int, default=None, help="a seeded sample of this many question groups")
    p.add_argument("--n-samples", type=int, default=3, help="sampled answers per model and query, besides the greedy one")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--consistency-weight", type=float, default=0.5, help="lam in the score (0: accuracy only)")
    p.add_argument("--min-margin", type=float, default=0.05, help="drop queries whose best and worst answers tie")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--trust-remote-code", action="store_true")
    p.set_defaults(func=cmd_prefs)

    p = rsub.add_parser("wrpo", help="WRPO (Yang et al., ICLR 2025): fuse source answers into the target by preference")
    _add_training(p)
    g = p.add_argument_group("WRPO")
    g.add_argument("--alpha-max", type=float, default=None, help="final fusion coefficient (default 0.1)")
    g.add_argument("--alpha-warmup-ratio", type=float, default=None, help="share of steps for the 0 -> max ramp (default 1)")
    g = p.add_argument_group("WRPO target-SFT stage (the published pipeline: SFT on the source answers, then WRPO)")
    g.add_argument("--no-target-sft", dest="target_sft", action="store_false", default=None,
                   help="skip the stage: WRPO from --model on every row")
    g.add_argument("--target-sft-fraction", type=float, default=None,
                   help="share of question groups for the SFT stage, the rest for WRPO (default 1/3, as the paper)")
    g.add_argument("--target-sft-learning-rate", type=float, default=None, help="SFT learning rate (default 2e-5)")
    g.add_argument("--target-sft-epochs", type=float, default=None, help="SFT epochs (default 1)")
    g.add_argument("--target-sft-dir", default=None, help="where the SFT model goes (default: <output-dir>.target_sft)")
    p.set_defaults(func=lambda a: _train(a, "wrpo"))

    p = rsub.add_parser("mrpo", help="MRPO (Le et al., 2024): DPO against several reference models")
    _add_training(p)
    g = p.add_argument_group("MRPO")
    g.add_argument("--reference", action="append", required=True, metavar="DIR",
                   help="extra reference model (repeatable); the model itself is the main reference")
    g.add_argument("--reference-combination", choices=("lower_bound", "log_linear"), default=None,
                   help="virtual reference: lower_bound (published MRPO, default) or log_linear")
    g.add_argument("--clip-epsilon", type=float, default=None, help="relative clip range (default 0.1)")
    g.add_argument("--weighting", choices=("adaptive", "uniform"), default=None)
    g.add_argument("--reference-weights", type=float, nargs="+", default=None, help="fixed weights, main reference first")
    p.set_defaults(func=lambda a: _train(a, "mrpo"))

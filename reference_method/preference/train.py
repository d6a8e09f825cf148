"""``consistbench ref wrpo`` / ``ref mrpo``: checks, reference log-probs, training, atomic save.

Before anything is written: the policy (and every MRPO reference) is a decoder-only causal LM
(:func:`consistbench.reference_method.train.check_architecture`), the doctor's checks pass (pad == eos refused
unless ``allow_pad_eq_eos``), the references share the policy's tokenizer (log-probabilities of
the same token ids), and the preference file is non-empty with the columns the method needs.
The final model is written to a temporary directory beside ``output_dir`` and renamed when
complete: weights (safetensors; LoRA merged), tokenizer, the benchmark's generation config,
``consistbench_train.json`` (method, settings, data checksum, references, per-step losses, wall
time) and a README model card.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from consistbench.benchmark.errors import ConsistbenchError

CARD_NAME = "consistbench_train.json"
CITATIONS = {
    "wrpo": "Yang, Wan, Zhong, Huang, Liang, Quan. Weighted-Reward Preference Optimization for Implicit Model "
            "Fusion. ICLR 2025 (arXiv 2412.03187)",
    "mrpo": "Le, Tran, Nguyen, Do, Mittal, Ogueji, Venkatesh. Multi-Reference Preference Optimization for Large "
            "Language Models. arXiv 2405.16388 (2024)",
}


def check_model(model_dir: str | Path, config, *, log: Callable[[str], None] = print) -> list:
    """Architecture and doctor checks of the policy; the doctor's findings."""
    from consistbench.reference_method import doctor
    from consistbench.reference_method.train import check_architecture

    check_architecture(model_dir, trust_remote_code=config.trust_remote_code)
    findings = doctor.check(model_dir, trust_remote_code=config.trust_remote_code)
    for f in findings:
        if f.severity == "error" and not (f.code == "pad_eq_eos" and config.allow_pad_eq_eos):
            raise ConsistbenchError(f"{model_dir}: {f.message}. Run `consistbench doctor {model_dir} --fix OUT` and "
                                    "train OUT" + (" (or pass --allow-pad-eq-eos)" if f.code == "pad_eq_eos" else ""))
        log(f"doctor: [{f.severity}] {f.code}: {f.message}")
    return findings


def check_reference(ref_dir: str | Path, tokenizer, *, trust_remote_code: bool = False) -> None:
    """A reference must be a causal LM with the policy's vocabulary."""
    from consistbench.reference_method import doctor
    from consistbench.reference_method.train import check_architecture

    config = check_architecture(ref_dir, trust_remote_code=trust_remote_code)
    ref_tok = doctor.load_tokenizer(ref_dir, trust_remote_code=trust_remote_code)
    if ref_tok.get_vocab() != tokenizer.get_vocab():
        raise ConsistbenchError(f"{ref_dir}: the reference's tokenizer differs from the policy's; MRPO compares "
                                "log-probabilities of the same token ids, so every reference needs the same vocabulary")
    if getattr(config, "vocab_size", None) is not None and config.vocab_size < len(tokenizer):
        raise ConsistbenchError(f"{ref_dir}: vocab_size {config.vocab_size} is smaller than the tokenizer's {len(tokenizer)}")


def train_preference(method: str, model_dir: str | Path, data: str | Path, output_dir: str | Path, config, *,
                     references: Sequence[str | Path] = (), overwrite: bool = False, keep_checkpoints: bool = False,
                     callbacks: Sequence | None = None, log: Callable[[str], None] = print) -> Path:
    """Train one WRPO or MRPO model from a preference file; return ``output_dir``.

    MRPO's references are ``model_dir`` (the main one) followed by ``references``.
    """
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, set_seed

    from consistbench.reference_method import doctor
    from consistbench.reference_method.preference.collator import PreferenceCollator, tokenize_rows
    from consistbench.reference_method.preference.data import PREFERENCE_COLUMNS, WRPO_COLUMNS, load_preferences
    from consistbench.reference_method.train import file_sha256

    if method not in ("wrpo", "mrpo"):
        raise ValueError(method)
    model_dir, data, output_dir = Path(model_dir), Path(data), Path(output_dir)
    if output_dir.exists() and any(output_dir.iterdir()) and not overwrite:
        raise ConsistbenchError(f"{output_dir}: already exists (pass --overwrite to replace it)")
    if method == "mrpo" and not references:
        raise ConsistbenchError("MRPO needs at least two references: the model itself and one or more --reference DIR")
    # 1. models
    findings = check_model(model_dir, config, log=log)
    tokenizer = doctor.load_tokenizer(model_dir, trust_remote_code=config.trust_remote_code)
    if tokenizer.pad_token_id is None:
        raise ConsistbenchError(f"{model_dir}: the tokenizer has no pad token")
    for ref in references:
        check_reference(ref, tokenizer, trust_remote_code=config.trust_remote_code)
    # 2. data
    rows = load_preferences(data, columns=WRPO_COLUMNS if method == "wrpo" else PREFERENCE_COLUMNS)
    completions = ("chosen", "rejected", "source") if method == "wrpo" else ("chosen", "rejected")
    columns, dropped = tokenize_rows(rows, tokenizer, completions=completions, max_length=config.max_length)
    if not columns["prompt_ids"]:
        raise ConsistbenchError(f"{data}: every row is longer than max_length={config.max_length} tokens")
    log(f"{method}: {len(columns['prompt_ids'])} preference rows"
        + (f" ({dropped} dropped: longer than {config.max_length} tokens)" if dropped else ""))
    all_refs = [model_dir, *[Path(r) for r in references]]
    if method == "mrpo":
        from consistbench.reference_method.preference.mrpo_trainer import REF_CHOSEN, REF_REJECTED, precompute_reference_logps

        started = time.perf_counter()
        chosen, rejected = precompute_reference_logps(
            columns, all_refs, pad_token_id=tokenizer.pad_token_id,
            batch_size=config.precompute_ref_batch_size or config.per_device_train_batch_size,
            trust_remote_code=config.trust_remote_code, log=log)
        columns[REF_CHOSEN], columns[REF_REJECTED] = chosen, rejected
        log(f"reference log-probs: {len(all_refs)} references in {time.perf_counter() - started:.1f} s")
    dataset = Dataset.from_dict(columns)
    # 3. training
    ckpt_dir = Path(config.output_dir) if config.checkpoint_dir_given else output_dir.with_name(output_dir.name + ".checkpoints")
    config.output_dir = str(ckpt_dir)
    set_seed(config.seed)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32,
                                                     trust_remote_code=config.trust_remote_code)
    except Exception as exc:
        raise ConsistbenchError(f"{model_dir}: cannot load the model ({type(exc).__name__}: {str(exc)[:200]})") from None
    if method == "wrpo":
        from consistbench.reference_method.preference.wrpo_trainer import WRPOTrainer as Trainer
    else:
        from consistbench.reference_method.preference.mrpo_trainer import MRPOTrainer as Trainer
    trainer = Trainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                      data_collator=PreferenceCollator(tokenizer.pad_token_id, with_source=method == "wrpo"),
                      peft_config=config.lora_config() if config.use_lora else None, callbacks=list(callbacks or []))
    started = time.perf_counter()
    result = trainer.train()
    wall = time.perf_counter() - started
    card = {
        "method": method, "citation": CITATIONS[method], "base_model": str(model_dir.resolve()),
        "references": [str(Path(r).resolve()) for r in all_refs] if method == "mrpo" else [str(model_dir.resolve())],
        "data": {"path": str(data.resolve()), "sha256": file_sha256(data), "rows": len(rows),
                 "trained_rows": len(columns["prompt_ids"]), "dropped_too_long": dropped,
                 "provenance": {k: rows[0].get(k) for k in ("target_model", "source_models", "sampling", "seed",
                                                            "score_definition") if k in rows[0]}},
        "training": config.method_settings(), "doctor": [f.to_json() for f in findings],
        "global_step": trainer.state.global_step, "train_wall_s": round(wall, 1),
        "train_runtime_s": result.metrics.get("train_runtime"),
        "loss_history": getattr(trainer, "loss_history", []), "log_history": trainer.state.log_history,
        "versions": _versions(),
    }
    if trainer.accelerator.is_main_process:
        save_model(trainer, tokenizer, output_dir, card, model_dir=model_dir)
        if not keep_checkpoints:
            shutil.rmtree(ckpt_dir, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    return output_dir


def save_model(trainer, tokenizer, output_dir: Path, card: dict, *, model_dir: Path) -> None:
    """Write the trained model (LoRA merged) to ``output_dir`` atomically."""
    from consistbench.benchmark.fileio import atomic_path
    from consistbench.reference_method import doctor

    model = trainer.accelerator.unwrap_model(trainer.model)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    base_gen = doctor.load_generation_config(model_dir)
    with atomic_path(output_dir, is_dir=True) as tmp:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        doctor.eval_generation_config(tokenizer, base_gen).save_pretrained(str(tmp))
        (tmp / CARD_NAME).write_text(json.dumps(card, indent=2, default=str) + "\n", encoding="utf-8")
        (tmp / "README.md").write_text(readme(card), encoding="utf-8")


def readme(card: dict) -> str:
    t = card["training"]
    if card["method"] == "wrpo":
        loss = (f"WRPO: -log sigmoid(beta (a r(y_source) + (1 - a) r(y_target) - r(y_rejected))), beta {t['beta']}, "
                f"a linear 0 -> {t['alpha_max']} over {t['alpha_warmup_ratio']:.0%} of the steps")
    else:
        loss = (f"MRPO: DPO (beta {t['beta']}) against a virtual reference of {len(card['references'])} models "
                f"({t.get('reference_combination', 'log_linear')}), clip epsilon {t['clip_epsilon']}, "
                f"{t['weighting']} weights")
    refs = "".join(f"  - `{r}`\n" for r in card["references"])
    return (f"# consistbench preference-fusion baseline: {card['method'].upper()}\n\n"
            f"Trained from `{card['base_model']}` with `consistbench ref {card['method']}`.\n\n"
            f"- method: {card['citation']}\n- loss: {loss}\n- reference model(s):\n{refs}"
            f"- data: `{card['data']['path']}` (sha256 {card['data']['sha256'][:16]}...), "
            f"{card['data']['trained_rows']} preference rows\n"
            f"- {'LoRA r=' + str(t['lora_r']) + ', merged' if t['use_lora'] else 'full fine-tuning'}, "
            f"lr {t['learning_rate']}, {card['global_step']} steps, {card['train_wall_s']} s\n"
            f"- generation config: the benchmark's evaluation settings (greedy, max_new_tokens 64)\n\n"
            f"Every setting is in `{CARD_NAME}`; formulas in docs/PREFERENCE.md.\n")


def _versions() -> dict:
    import importlib.metadata as md

    out = {}
    for pkg in ("consistbench", "torch", "transformers", "trl", "peft", "accelerate", "datasets"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out

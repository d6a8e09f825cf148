"""``consistbench ref wrpo`` / ``ref mrpo``: checks, reference log-probs, training, atomic save.

Before anything is written: the policy (and every MRPO reference) is a decoder-only causal LM
(:func:`consistbench.reference_method.doctor.check_architecture`), the doctor's checks pass (pad == eos refused
unless ``allow_pad_eq_eos``), the references share the policy's tokenizer (log-probabilities of
the same token ids), and the preference file is non-empty with the columns the method needs.
The final model is written to a temporary directory beside ``output_dir`` and renamed when
complete: weights (safetensors; LoRA merged), tokenizer, the benchmark's generation config,
``consistbench_train.json`` (method, settings, data checksum, references, per-step losses, wall
time) and a README model card.

WRPO runs the published target-SFT stage first (unless ``target_sft`` is off): a seeded share of
the file's question groups fine-tunes the target on their ``source_chosen`` answers with the
reference method's SFT (``ConsistencyTrainer`` with ``alpha = 0``, the same tokenization as
evaluation); that model is saved beside the output (``<output_dir>.target_sft``, with its own card)
and WRPO trains from it, on the other groups, with it as the reference policy.
"""

from __future__ import annotations

import gc
import random
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from consistbench.benchmark.errors import ConsistbenchError
from consistbench.benchmark.fileio import file_sha256
from consistbench.reference_method import doctor
from consistbench.reference_method.doctor import check_architecture
from consistbench.reference_method.collator import CompletionCollator, encode_row
from consistbench.reference_method.preference.collator import PreferenceCollator, tokenize_rows
from consistbench.reference_method.preference.data import PREFERENCE_COLUMNS, WRPO_COLUMNS, load_preferences
from consistbench.reference_method.save import CARD_NAME, library_versions, save_trained_model

CITATIONS = {
    "wrpo": "Yang, Wan, Zhong, Huang, Liang, Quan. Weighted-Reward Preference Optimization for Implicit Model "
            "Fusion. ICLR 2025 (arXiv 2412.03187)",
    "mrpo": "Le, Tran, Nguyen, Do, Mittal, Ogueji, Venkatesh. Multi-Reference Preference Optimization for Large "
            "Language Models. arXiv 2405.16388 (2024)",
}


def check_model(model_dir: str | Path, config, *, log: Callable[[str], None] = print) -> list:
    """Architecture and doctor checks of the policy; the doctor's findings."""
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
    config = check_architecture(ref_dir, trust_remote_code=trust_remote_code)
    ref_tok = doctor.load_tokenizer(ref_dir, trust_remote_code=trust_remote_code)
    if ref_tok.get_vocab() != tokenizer.get_vocab():
        raise ConsistbenchError(f"{ref_dir}: the reference's tokenizer differs from the policy's; MRPO compares "
                                "log-probabilities of the same token ids, so every reference needs the same vocabulary")
    if getattr(config, "vocab_size", None) is not None and config.vocab_size < len(tokenizer):
        raise ConsistbenchError(f"{ref_dir}: vocab_size {config.vocab_size} is smaller than the tokenizer's {len(tokenizer)}")


def split_for_target_sft(rows: Sequence[dict], fraction: float, seed: int
                         ) -> tuple[list[dict], list[dict], list[str]]:
    """(SFT rows, WRPO rows, SFT groups): a seeded ``fraction`` of the question groups
    (``group_id``; a row without one is its own group) for the target-SFT stage, the other groups
    for WRPO."""
    keys = [str(r.get("group_id") or r.get("id") or f"row {i}") for i, r in enumerate(rows)]
    groups = list(dict.fromkeys(keys))
    if len(groups) < 2:
        raise ConsistbenchError(f"the target-SFT stage needs at least two question groups (one for SFT, one for WRPO); "
                                f"the preference file has {len(groups)} (or pass --no-target-sft)")
    n_sft = min(len(groups) - 1, max(1, round(fraction * len(groups))))
    picked = set(random.Random(seed).sample(groups, n_sft))
    return ([r for r, k in zip(rows, keys) if k in picked], [r for r, k in zip(rows, keys) if k not in picked],
            [g for g in groups if g in picked])


def target_sft_items(rows: Sequence[dict], tokenizer, max_length: int) -> tuple[list[dict], int]:
    """SFT sequences (benchmark prompt -> best source answer + eos, tokenized as evaluation does)
    and how many were dropped for being longer than ``max_length``."""
    items, dropped = [], 0
    for r in rows:
        enc = encode_row(tokenizer, r["context"], r["question"], r["source_chosen"])
        if len(enc["input_ids"]) > max_length:
            dropped += 1
            continue
        items.append(enc)
    return items, dropped


def train_target_sft(model_dir: Path, items: list[dict], tokenizer, sft_dir: Path, config, *, rows: int,
                     dropped: int, data: Path, groups: Sequence[str] = (), keep_checkpoints: bool = False,
                     callbacks: Sequence | None = None,
                     log: Callable[[str], None] = print) -> dict:
    """The target-SFT stage of WRPO's pipeline: fine-tune ``model_dir`` on ``items`` with the
    reference method's trainer (cross-entropy on the answer tokens: ``alpha = 0``), save it to
    ``sft_dir`` atomically; return the stage's record for the WRPO model's card."""
    from transformers import set_seed

    from consistbench.reference_method.consistency_config import ConsistencyConfig
    from consistbench.reference_method.consistency_trainer import ConsistencyTrainer
    from consistbench.reference_method.train import load_model

    ckpt_dir = sft_dir.with_name(sft_dir.name + ".checkpoints")
    sft_config = ConsistencyConfig(
        output_dir=str(ckpt_dir), alpha=0.0, learning_rate=config.target_sft_learning_rate,
        num_train_epochs=config.target_sft_epochs, per_device_train_batch_size=config.per_device_train_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps, lr_scheduler_type="cosine", warmup_steps=0,
        seed=config.seed, max_length=config.max_length, use_lora=config.use_lora, lora_r=config.lora_r,
        lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout, lora_target_modules=config.lora_target_modules,
        lora_layers=config.lora_layers, allow_pad_eq_eos=config.allow_pad_eq_eos, trust_remote_code=config.trust_remote_code, use_cpu=config.use_cpu,
        logging_steps=config.logging_steps, save_strategy="no", report_to="none", disable_tqdm=config.disable_tqdm)
    log(f"target-SFT: {len(items)} rows (the source models' best answers)"
        + (f", {dropped} dropped: longer than {config.max_length} tokens" if dropped else ""))
    set_seed(config.seed)
    model = load_model(model_dir, sft_config)
    trainer = ConsistencyTrainer(model=model, args=sft_config, train_dataset=items,
                                 data_collator=CompletionCollator(tokenizer.pad_token_id), processing_class=tokenizer,
                                 callbacks=list(callbacks or []))
    started = time.perf_counter()
    result = trainer.train()
    wall = time.perf_counter() - started
    record = {
        "enabled": True, "model": str(sft_dir.resolve()), "fraction": config.target_sft_fraction,
        "groups": list(groups), "rows": rows, "trained_rows": len(items), "dropped_too_long": dropped, "completion": "source_chosen",
        "training": sft_config.loss_settings(),
        "global_step": trainer.state.global_step, "train_wall_s": round(wall, 1),
        "train_runtime_s": result.metrics.get("train_runtime"), "loss_history": getattr(trainer, "loss_history", []),
    }
    if trainer.accelerator.is_main_process:
        card = {"method": "target_sft", "citation": CITATIONS["wrpo"], "base_model": str(model_dir.resolve()),
                "references": [], "data": {"path": str(data.resolve()), "sha256": file_sha256(data), "rows": rows,
                                           "trained_rows": len(items), "dropped_too_long": dropped},
                "training": record["training"], "global_step": record["global_step"],
                "train_wall_s": record["train_wall_s"], "loss_history": record["loss_history"],
                "versions": library_versions("consistbench", "torch", "transformers", "peft", "accelerate")}
        save_trained_model(trainer, tokenizer, sft_dir, card, readme(card), model_dir=model_dir)
        if not keep_checkpoints:
            shutil.rmtree(ckpt_dir, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    del trainer, model
    gc.collect()
    return record


def train_preference(method: str, model_dir: str | Path, data: str | Path, output_dir: str | Path, config, *,
                     references: Sequence[str | Path] = (), overwrite: bool = False, keep_checkpoints: bool = False,
                     callbacks: Sequence | None = None, target_sft_dir: str | Path | None = None,
                     log: Callable[[str], None] = print) -> Path:
    """Train one WRPO or MRPO model from a preference file; return ``output_dir``.

    MRPO's references are ``model_dir`` (the main one) followed by ``references``. WRPO with
    ``config.target_sft`` first trains the target-SFT model into ``target_sft_dir`` (default
    ``<output_dir>.target_sft``) and runs WRPO from it.
    """
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, set_seed

    if method not in ("wrpo", "mrpo"):
        raise ValueError(method)
    model_dir, data, output_dir = Path(model_dir), Path(data), Path(output_dir)
    if output_dir.exists() and any(output_dir.iterdir()) and not overwrite:
        raise ConsistbenchError(f"{output_dir}: already exists (pass --overwrite to replace it)")
    if method == "mrpo" and not references:
        raise ConsistbenchError("MRPO needs at least two references: the model itself and one or more --reference DIR")
    target_sft = method == "wrpo" and config.target_sft
    sft_dir = Path(target_sft_dir) if target_sft_dir else output_dir.with_name(output_dir.name + ".target_sft")
    if target_sft:
        if sft_dir.resolve() in (output_dir.resolve(), model_dir.resolve()):
            raise ConsistbenchError(f"{sft_dir}: the target-SFT model needs its own directory")
        if sft_dir.exists() and any(sft_dir.iterdir()) and not overwrite:
            raise ConsistbenchError(f"{sft_dir}: already exists (the target-SFT model goes there; pass --overwrite "
                                    "to replace it)")
    # 1. models
    findings = check_model(model_dir, config, log=log)
    tokenizer = doctor.load_tokenizer(model_dir, trust_remote_code=config.trust_remote_code)
    if tokenizer.pad_token_id is None:
        raise ConsistbenchError(f"{model_dir}: the tokenizer has no pad token")
    for ref in references:
        check_reference(ref, tokenizer, trust_remote_code=config.trust_remote_code)
    # 2. data
    rows = load_preferences(data, columns=WRPO_COLUMNS if method == "wrpo" else PREFERENCE_COLUMNS)
    pref_rows, sft_rows = rows, []
    if target_sft:
        sft_rows, pref_rows, sft_groups = split_for_target_sft(rows, config.target_sft_fraction, config.seed)
        sft_items, sft_dropped = target_sft_items(sft_rows, tokenizer, config.max_length)
        if not sft_items:
            raise ConsistbenchError(f"{data}: every target-SFT row is longer than max_length={config.max_length} tokens")
    completions = ("chosen", "rejected", "source") if method == "wrpo" else ("chosen", "rejected")
    columns, dropped = tokenize_rows(pref_rows, tokenizer, completions=completions, max_length=config.max_length)
    if not columns["prompt_ids"]:
        raise ConsistbenchError(f"{data}: every row is longer than max_length={config.max_length} tokens")
    log(f"{method}: {len(columns['prompt_ids'])} preference rows"
        + (f" ({dropped} dropped: longer than {config.max_length} tokens)" if dropped else ""))
    # the target-SFT stage (WRPO's published pipeline): WRPO then starts from, and is
    # regularised towards, the SFT model
    sft_record = {"enabled": False}
    policy_dir = model_dir
    if target_sft:
        sft_record = train_target_sft(model_dir, sft_items, tokenizer, sft_dir, config, rows=len(sft_rows),
                                      dropped=sft_dropped, data=data, groups=sft_groups,
                                      keep_checkpoints=keep_checkpoints,
                                      callbacks=callbacks, log=log)
        policy_dir = sft_dir
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
        model = AutoModelForCausalLM.from_pretrained(str(policy_dir), dtype=torch.float32,
                                                     trust_remote_code=config.trust_remote_code)
    except Exception as exc:
        raise ConsistbenchError(f"{policy_dir}: cannot load the model ({type(exc).__name__}: {str(exc)[:200]})") from None
    if method == "wrpo":
        from consistbench.reference_method.preference.wrpo_trainer import WRPOTrainer as Trainer
    else:
        from consistbench.reference_method.preference.mrpo_trainer import MRPOTrainer as Trainer
    trainer = Trainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                      data_collator=PreferenceCollator(tokenizer.pad_token_id, with_source=method == "wrpo"),
                      peft_config=config.lora_config(model) if config.use_lora else None, callbacks=list(callbacks or []))
    started = time.perf_counter()
    result = trainer.train()
    wall = time.perf_counter() - started
    card = {
        "method": method, "citation": CITATIONS[method], "base_model": str(model_dir.resolve()),
        "references": [str(Path(r).resolve()) for r in all_refs] if method == "mrpo" else [str(policy_dir.resolve())],
        "data": {"path": str(data.resolve()), "sha256": file_sha256(data), "rows": len(rows),
                 "preference_rows": len(pref_rows), "trained_rows": len(columns["prompt_ids"]),
                 "dropped_too_long": dropped,
                 "provenance": {k: rows[0].get(k) for k in ("target_model", "source_models", "sampling", "seed",
                                                            "score_definition") if k in rows[0]}},
        "training": config.method_settings(), "doctor": [f.to_json() for f in findings],
        **({"target_sft": sft_record} if method == "wrpo" else {}),
        "global_step": trainer.state.global_step, "train_wall_s": round(wall, 1),
        "train_runtime_s": result.metrics.get("train_runtime"),
        "loss_history": getattr(trainer, "loss_history", []), "log_history": trainer.state.log_history,
        "versions": library_versions("consistbench", "torch", "transformers", "trl", "peft", "accelerate", "datasets"),
    }
    if trainer.accelerator.is_main_process:
        save_trained_model(trainer, tokenizer, output_dir, card, readme(card), model_dir=model_dir)
        if not keep_checkpoints:
            shutil.rmtree(ckpt_dir, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    return output_dir


def readme(card: dict) -> str:
    t = card["training"]
    if card["method"] == "target_sft":
        return (f"# consistbench WRPO pipeline, stage 1: target-SFT\n\n"
                f"Fine-tuned from `{card['base_model']}` by `consistbench ref wrpo` on the source models' best "
                f"answers (`source_chosen`), before the WRPO stage, which starts from this model and uses it as "
                f"its reference.\n\n"
                f"- pipeline: {card['citation']}\n- loss: cross-entropy on the answer tokens (the reference "
                f"method's SFT, triplet weight 0)\n"
                f"- data: `{card['data']['path']}` (sha256 {card['data']['sha256'][:16]}...), "
                f"{card['data']['trained_rows']} rows of the target-SFT part\n"
                f"- {'LoRA r=' + str(t['lora_r']) + ', merged' if t['use_lora'] else 'full fine-tuning'}, "
                f"lr {t['learning_rate']}, {t['num_train_epochs']} epoch(s), {card['global_step']} steps, "
                f"{card['train_wall_s']} s\n"
                f"- generation config: the benchmark's evaluation settings (greedy, max_new_tokens 64)\n\n"
                f"Every setting is in `{CARD_NAME}`; the pipeline in docs/PREFERENCE.md.\n")
    stage = ""
    if card["method"] == "wrpo":
        loss = (f"WRPO: -log sigmoid(beta (a r(y_source) + (1 - a) r(y_target) - r(y_rejected))), beta {t['beta']}, "
                f"a linear 0 -> {t['alpha_max']} over {t['alpha_warmup_ratio']:.0%} of the steps")
        sft = card.get("target_sft") or {}
        stage = (f"- stage 1, target-SFT on {sft['trained_rows']} source answers: `{sft['model']}` (the starting "
                 f"point and reference of this stage)\n" if sft.get("enabled") else "- no target-SFT stage\n")
    else:
        loss = (f"MRPO: DPO (beta {t['beta']}) against a virtual reference of {len(card['references'])} models "
                f"({t.get('reference_combination', 'log_linear')}), clip epsilon {t['clip_epsilon']}, "
                f"{t['weighting']} weights")
    refs = "".join(f"  - `{r}`\n" for r in card["references"])
    return (f"# consistbench preference-fusion baseline: {card['method'].upper()}\n\n"
            f"Trained from `{card['base_model']}` with `consistbench ref {card['method']}`.\n\n"
            f"- method: {card['citation']}\n{stage}- loss: {loss}\n- reference model(s):\n{refs}"
            f"- data: `{card['data']['path']}` (sha256 {card['data']['sha256'][:16]}...), "
            f"{card['data']['trained_rows']} preference rows\n"
            f"- {'LoRA r=' + str(t['lora_r']) + ', merged' if t['use_lora'] else 'full fine-tuning'}, "
            f"lr {t['learning_rate']}, {card['global_step']} steps, {card['train_wall_s']} s\n"
            f"- generation config: the benchmark's evaluation settings (greedy, max_new_tokens 64)\n\n"
            f"Every setting is in `{CARD_NAME}`; formulas in docs/PREFERENCE.md.\n")

"""``consistbench ref train``: one SFT + triplet-loss model per variant type (or on all of them).

    consistbench ref train --variant-type how_to --data synth.jsonl --output-dir runs/how_to

Steps, all checked before anything is written:

1. the model folder holds a causal LM this trainer supports (an architecture built into
   transformers, or custom code with ``--trust-remote-code``), and ``consistbench doctor``'s
   checks pass (pad == eos is refused unless ``allow_pad_eq_eos``);
2. the synthetic data (schema-validated) gives at least one triplet for the variant type
   (:mod:`consistbench.reference_method.triplets`); triplets longer than ``max_length`` are dropped, counted;
3. a checkpoint to resume from (``--resume``) is complete and readable.

Training is :class:`ConsistencyTrainer` (full fine-tuning, or LoRA with adapters merged into the
weights on save). Checkpoints go to ``<output-dir>.checkpoints`` (``--checkpoint-dir``); they hold
the run's settings, and a resume with other settings or data is refused. The final model is
written to a temporary directory and renamed onto ``--output-dir`` only when complete: weights
as safetensors, the tokenizer, a generation config equal to the benchmark's evaluation settings,
and ``consistbench_train.json`` (base model, data checksum, mining and loss settings, doctor
findings, per-step losses, wall time). Nothing is unpickled except by ``torch.load(...,
weights_only=True)`` inside ``Trainer`` when resuming (optimizer, scheduler and RNG states,
which hold tensors and plain containers only).

Under ``accelerate launch`` every process runs this function; only the main process writes the
final model, after all processes finish (see docs/REFERENCE_METHOD.md).
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from consistbench.benchmark.errors import ConsistbenchError
from consistbench.benchmark.fileio import file_sha256, write_json
from consistbench.benchmark.schema import load_data
from consistbench.reference_method import doctor
from consistbench.reference_method.doctor import check_architecture
from consistbench.reference_method.collator import CompletionCollator, encode_row
from consistbench.reference_method.save import CARD_NAME, activity_summary, library_versions, save_trained_model
from consistbench.reference_method.consistency_config import ConsistencyConfig
from consistbench.reference_method.triplets import MiningConfig, Triplet, mine_triplets, select_rows

RUN_NAME = "consistbench_run.json"
HISTORY_NAME = "loss_history.json"  # ConsistencyTrainer's history in each checkpoint (consistency_trainer.HISTORY_NAME)
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


# ---------------------------------------------------------------------------------------------
# data

@dataclass
class PreparedData:
    items: list[dict]  # {"anchor": enc, "positive": enc, "negative": enc}, or encoded rows (examples="rows")
    triplets: list[Triplet]
    rows: int
    dropped_too_long: int


def prepare_data(rows: Sequence, variant_type: str, tokenizer, *, mining: MiningConfig, max_length: int,
                 source: str = "data", examples: str = "triplets", question_only: bool = False) -> PreparedData:
    """Select the rows of ``variant_type`` and tokenize them: as mined triplets (``examples="triplets"``,
    the SFT + triplet loss), or each row once (``examples="rows"``, the paper's plain SFT baseline:
    originals and variants, a variant's target being its group's reference). ``question_only`` also
    encodes each question alone (``pooled_positions="question_only"``)."""
    selected = select_rows(rows, variant_type)
    if not any(r.variant_type != "original" for r in selected):
        raise ConsistbenchError(f"{source}: no {variant_type} variants: the synthetic set is empty for this type")
    if examples == "rows":
        encoded = [encode_row(tokenizer, r.context, r.question, r.reference, question_only=question_only)
                   for r in selected]
        items = [e for e in encoded if len(e["input_ids"]) <= max_length]
        if not items:
            raise ConsistbenchError(f"{source}: every row is longer than max_length={max_length} tokens")
        return PreparedData(items, [], len(selected), len(encoded) - len(items))
    triplets = mine_triplets(selected, mining)
    if not triplets:
        raise ConsistbenchError(f"{source}: no training triplets for variant type {variant_type} "
                                "(every anchor lacks a positive or a negative)")
    by_id = {r.id: r for r in selected}
    cache: dict[str, dict] = {}

    def enc(rid: str) -> dict:
        if rid not in cache:
            r = by_id[rid]
            cache[rid] = encode_row(tokenizer, r.context, r.question, r.reference, question_only=question_only)
        return cache[rid]

    items, kept, dropped = [], [], 0
    for t in triplets:
        item = {"anchor": enc(t.anchor), "positive": enc(t.positive), "negative": enc(t.negative)}
        if max(len(v["input_ids"]) for v in item.values()) > max_length:
            dropped += 1
            continue
        items.append(item)
        kept.append(t)
    if not items:
        raise ConsistbenchError(f"{source}: every triplet is longer than max_length={max_length} tokens")
    return PreparedData(items, kept, len(selected), dropped)


# ---------------------------------------------------------------------------------------------
# checkpoints

def latest_checkpoint(checkpoint_dir: str | Path) -> Path | None:
    checkpoint_dir = Path(checkpoint_dir)
    if not checkpoint_dir.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in checkpoint_dir.iterdir() if p.is_dir() and (m := _CHECKPOINT.match(p.name))]
    return max(found)[1] if found else None


def validate_checkpoint(path: str | Path) -> dict:
    """Read every file a resume needs; a ConsistbenchError names the first broken one."""
    import torch
    from safetensors import safe_open

    path = Path(path)

    def broken(name: str, why: str) -> ConsistbenchError:
        return ConsistbenchError(f"{path}: corrupt checkpoint ({name}: {why}); delete it to resume from an "
                                 "earlier one, or start again")

    if not path.is_dir():
        raise ConsistbenchError(f"{path}: no such checkpoint")
    try:
        state = json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
        int(state["global_step"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise broken("trainer_state.json", f"{type(exc).__name__}: {exc}") from None
    weights = sorted(path.glob("*.safetensors"))
    if not weights:
        raise broken("weights", "no *.safetensors file")
    for file in weights:
        try:
            with safe_open(str(file), "pt") as fh:
                for key in fh.keys():
                    fh.get_slice(key)
        except Exception as exc:
            raise broken(file.name, str(exc)) from None
    from transformers.trainer_pt_utils import safe_globals  # numpy RNG state: the allowlist Trainer itself uses

    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth"):
        file = path / name
        if not file.is_file():
            if name == "rng_state.pth" and list(path.glob("rng_state_*.pth")):
                continue  # a multi-process run keeps one RNG file per process
            raise broken(name, "missing")
        try:
            with safe_globals():
                torch.load(file, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise broken(name, f"{type(exc).__name__}: {str(exc)[:200]}") from None
    history = path / HISTORY_NAME
    if history.is_file():  # written by this trainer since it records activity (older checkpoints have none)
        try:
            if not isinstance(json.loads(history.read_text(encoding="utf-8")), list):
                raise ValueError("not a list")
        except (OSError, ValueError) as exc:
            raise broken(HISTORY_NAME, f"{type(exc).__name__}: {exc}") from None
    return state


# ---------------------------------------------------------------------------------------------
# training

def run_fingerprint(model_dir: Path, data_sha: str, variant_type: str, mining: MiningConfig,
                    config: ConsistencyConfig) -> dict:
    return {"base_model": str(model_dir.resolve()), "data_sha256": data_sha, "variant_type": variant_type,
            "mining": mining.to_json(), "loss": json.loads(json.dumps(config.loss_settings(), default=str))}


def load_model(model_dir: Path, config: ConsistencyConfig):
    """The base model in ``config.model_dtype`` (float32 unless set), with LoRA adapters when
    ``config.use_lora``; with gradient checkpointing, its inputs require grad (what peft needs for
    adapters inside checkpointed blocks)."""
    import torch
    from transformers import AutoModelForCausalLM

    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "auto": "auto"}[getattr(config, "model_dtype",
                                                                                             "float32")]
    try:
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype,
                                                     trust_remote_code=config.trust_remote_code)
    except Exception as exc:
        raise ConsistbenchError(f"{model_dir}: cannot load the model ({type(exc).__name__}: {str(exc)[:200]})") from None
    if config.use_lora and config.gradient_checkpointing:
        model.enable_input_require_grads()
    if config.use_lora:
        from peft import get_peft_model

        try:
            lora = config.lora_config(model)
        except ValueError as exc:
            raise ConsistbenchError(str(exc)) from None
        model = get_peft_model(model, lora)
    return model


def train(model_dir: str | Path, data: str | Path, variant_type: str, output_dir: str | Path,
          config: ConsistencyConfig, mining: MiningConfig | None = None, *, resume: bool | str = False,
          keep_checkpoints: bool = False, overwrite: bool = False, callbacks: Sequence | None = None,
          log: Callable[[str], None] = print) -> Path:
    """Train one model; return ``output_dir``. ``config.output_dir`` is the checkpoint directory
    (defaults to ``<output_dir>.checkpoints``)."""
    model_dir, data, output_dir = Path(model_dir), Path(data), Path(output_dir)
    mining = mining or MiningConfig()
    if output_dir.exists() and any(output_dir.iterdir()) and not overwrite:
        raise ConsistbenchError(f"{output_dir}: already exists (pass --overwrite to replace it)")
    # 1. the model
    model_config = check_architecture(model_dir, trust_remote_code=config.trust_remote_code)
    layers = getattr(model_config, "num_hidden_layers", None)
    if layers is not None and not -(layers + 1) <= config.pooling_layer <= layers:
        raise ConsistbenchError(f"pooling_layer {config.pooling_layer} is outside the model's hidden states "
                                f"(0..{layers}, or -1..-{layers + 1})")
    findings = doctor.check(model_dir, trust_remote_code=config.trust_remote_code)
    for f in findings:
        if f.severity == "error" and not (f.code == "pad_eq_eos" and config.allow_pad_eq_eos):
            raise ConsistbenchError(f"{model_dir}: {f.message}. Run `consistbench doctor {model_dir} --fix OUT` and "
                                    "train OUT" + (" (or pass --allow-pad-eq-eos)" if f.code == "pad_eq_eos" else ""))
    for f in findings:
        if f.severity != "error" or f.code == "pad_eq_eos":
            log(f"doctor: [{f.severity}] {f.code}: {f.message}")
    tokenizer = doctor.load_tokenizer(model_dir, trust_remote_code=config.trust_remote_code)
    if tokenizer.pad_token_id is None:
        raise ConsistbenchError(f"{model_dir}: the tokenizer has no pad token")
    # 2. the data
    rows = load_data(data)
    data_sha = file_sha256(data)
    prepared = prepare_data(rows, variant_type, tokenizer, mining=mining, max_length=config.max_length,
                            source=str(data), examples=config.examples,
                            question_only=config.pooled_positions == "question_only")
    log(f"{variant_type}: {prepared.rows} rows, {len(prepared.items)} {config.examples}"
        + (f" ({prepared.dropped_too_long} dropped: longer than {config.max_length} tokens)"
           if prepared.dropped_too_long else ""))
    # 3. checkpoints
    ckpt_dir = Path(config.output_dir) if config.checkpoint_dir_given else output_dir.with_name(output_dir.name + ".checkpoints")
    config.output_dir = str(ckpt_dir)
    fingerprint = run_fingerprint(model_dir, data_sha, variant_type, mining, config)
    resume_from = None
    if resume:
        resume_from = Path(resume) if isinstance(resume, (str, Path)) and str(resume) != "latest" \
            else latest_checkpoint(ckpt_dir)
        if resume_from is None:
            raise ConsistbenchError(f"{ckpt_dir}: no checkpoint to resume from")
        validate_checkpoint(resume_from)
        run_file = ckpt_dir / RUN_NAME
        if run_file.is_file():
            before = json.loads(run_file.read_text(encoding="utf-8"))
            if before != fingerprint:
                changed = sorted(k for k in fingerprint if before.get(k) != fingerprint[k])
                raise ConsistbenchError(f"{resume_from}: the checkpoint comes from a run with other settings "
                                        f"({', '.join(changed)}); resume with the same ones")
    elif latest_checkpoint(ckpt_dir) is not None:
        raise ConsistbenchError(f"{ckpt_dir}: holds checkpoints of an earlier run: pass --resume, or remove it")

    import torch
    from transformers import set_seed

    from consistbench.reference_method.consistency_trainer import ConsistencyTrainer

    set_seed(config.seed)
    model = load_model(model_dir, config)
    trainer = ConsistencyTrainer(model=model, args=config, train_dataset=prepared.items,
                                 data_collator=CompletionCollator(tokenizer.pad_token_id),
                                 processing_class=tokenizer, callbacks=list(callbacks or []))
    if resume_from:
        trainer.load_history(resume_from)
    if trainer.accelerator.is_main_process:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        write_json(ckpt_dir / RUN_NAME, fingerprint)
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    wall = time.perf_counter() - started
    stopped_early = trainer.state.global_step < trainer.state.max_steps
    trainer.accelerator.wait_for_everyone()
    if stopped_early:
        log(f"stopped at step {trainer.state.global_step} of {trainer.state.max_steps}: no final model written; "
            f"continue with --resume (checkpoints in {ckpt_dir})")
        return output_dir
    if trainer.accelerator.is_main_process:
        card = {
            "base_model": str(model_dir.resolve()), "variant_type": variant_type,
            "data": {"path": str(data.resolve()), "sha256": data_sha, "rows": prepared.rows,
                     "examples": config.examples, "triplets": len(prepared.triplets),
                     "training_sequences_per_epoch": len(prepared.items) * (3 if config.examples == "triplets" else 1),
                     "dropped_too_long": prepared.dropped_too_long},
            "mining": mining.to_json(), "training": config.loss_settings(),
            # how the steps were computed (same loss either way; the float rounding differs)
            "compute": {"answer_logits_only": bool(config.answer_logits_only and trainer.answer_path_used),
                        "torch_threads": torch.get_num_threads(), **config.compute_settings(),
                        **({"positions_computed": trainer.compute_stats["positions"],
                            "tokens": trainer.compute_stats["tokens"]} if trainer.compute_stats["tokens"] else {})},
            "triplet_activity": activity_summary(getattr(trainer, "loss_history", [])),
            "doctor": [f.to_json() for f in findings], "resumed_from": str(resume_from) if resume_from else None,
            "global_step": trainer.state.global_step, "train_wall_s": round(wall, 1),
            "train_runtime_s": result.metrics.get("train_runtime"),
            "loss_history": getattr(trainer, "loss_history", []),
            "versions": library_versions("consistbench", "torch", "transformers", "peft", "accelerate"),
        }
        save_trained_model(trainer, tokenizer, output_dir, card, _readme(card), model_dir=model_dir)
        if not keep_checkpoints:
            shutil.rmtree(ckpt_dir, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    return output_dir


def _readme(card: dict) -> str:
    t, d = card["training"], card["data"]
    examples = (f"{d['triplets']} triplets" if d.get("examples", "triplets") == "triplets"
                else f"{d['training_sequences_per_epoch']} rows, each once per epoch (plain SFT)")
    return (f"# consistbench reference method: SFT + triplet ({card['variant_type']})\n\n"
            f"Fine-tuned from `{card['base_model']}` with `consistbench ref train` (arXiv 2510.14915, part 1).\n\n"
            f"- data: `{d['path']}` (sha256 {d['sha256'][:16]}...), {examples}\n"
            f"- loss: CE + {t['alpha']} x triplet (margin {t['margin']}, {t['distance']} distance, "
            f"{t['pooling']} pooling of hidden_states[{t['pooling_layer']}] over the query tokens)\n"
            f"- {'LoRA r=' + str(t['lora_r']) + ', merged' if t['use_lora'] else 'full fine-tuning'}, "
            f"lr {t['learning_rate']}, {t['num_train_epochs']} epoch(s), {card['global_step']} steps\n"
            f"- generation config: the benchmark's evaluation settings (greedy, max_new_tokens 64)\n"
            + _activity_line(card.get("triplet_activity")) + "\n"
            f"Every setting is in `{CARD_NAME}`.\n")


def _activity_line(activity: dict | None) -> str:
    if not activity or not activity.get("first"):
        return ""

    def one(h: dict) -> str:
        ratio = f", gradient ratio {h['grad_ratio']:.3f}" if h.get("grad_ratio") is not None else ""
        return (f"step {h['step']}: {100 * h['active']:.0f} % of triplets active, d(A,P) {h['d_ap']:.3f}, "
                f"d(A,N) {h['d_an']:.3f}{ratio}")

    return f"- triplet term at {one(activity['first'])}; at {one(activity['last'])}\n"

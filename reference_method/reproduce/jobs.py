"""Training, the unit of work several stages share: configure one model, train it (in this process or
as ``consistbench ref train`` under the launcher), keep its LoRA adapter, rebuild it from the adapter,
count its budget.

Each is resumable like the stages: training continues from the model's last checkpoint; a LoRA
model whose folder is missing but whose adapter and card are kept (``models/NAME.adapter/``,
``models/NAME.card.json``: small files a study can commit) is rebuilt instead of trained again.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from consistbench.benchmark.errors import ConsistbenchError
from consistbench.benchmark.fileio import atomic_path, write_json, write_text
from consistbench.benchmark.schema import load_data
from consistbench.reference_method import doctor
from consistbench.reference_method.reproduce.launch import executable
from consistbench.reference_method.reproduce.presets import TRIPLET_ONLY_KEYS, arm_of, seed_of
from consistbench.reference_method.reproduce.run_folder import Run, trained
from consistbench.reference_method.save import CARD_NAME
from consistbench.reference_method.triplets import MiningConfig

ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")


def train_config(run: Run, alpha: float, extra: dict | None = None):
    """A ConsistencyConfig from the preset's ``train`` fields, ``extra`` and ``alpha``."""
    return make_config(run, config_fields(run, alpha, extra))


def make_config(run: Run, fields: dict):
    """The ConsistencyConfig of ``fields`` (one line naming a bad setting)."""
    from consistbench.reference_method.consistency_config import ConsistencyConfig

    try:
        config = ConsistencyConfig(**fields)
    except (TypeError, ValueError) as exc:
        raise ConsistbenchError(f"preset {run.preset.name}: bad training setting ({exc})") from None
    config.consistbench_fields = fields  # what `ref train --config` is given under a launcher
    return config


def config_fields(run: Run, alpha: float, extra: dict | None = None) -> dict:
    """The ConsistencyConfig fields :func:`train_config` sets (what ``ref train --config`` is given)."""
    fields = dict(run.preset.train, **(extra or {}))
    fields.update(alpha=alpha, disable_tqdm=not run.progress)
    if fields.get("pooling_layer") == "middle":
        fields["pooling_layer"] = middle_layer(run)
    return fields


def middle_layer(run: Run) -> int:
    """The base model's middle decoder layer (``pooling_layer: middle`` in a preset): an index into
    ``hidden_states``, whose 0 is the embeddings."""
    path = Path(run.preset.model or run.base_model()) / "config.json"
    cfg = json.loads(path.read_text(encoding="utf-8"))
    return int((cfg.get("text_config") or cfg)["num_hidden_layers"]) // 2


def run_config(run: Run, name: str, alpha: float, setting: dict | None = None, triplet: dict | None = None):
    """The ConsistencyConfig of one training run (:func:`run_fields`)."""
    return make_config(run, run_fields(run, name, alpha, setting, triplet))


def run_fields(run: Run, name: str, alpha: float, setting: dict | None = None, triplet: dict | None = None) -> dict:
    """The ConsistencyConfig fields of one training run: the preset's ``train``, the search's chosen
    ``setting`` and the triplet search's choice (their alpha only for SFT + triplet models; their
    triplet-term fields only for models with a triplet term), the preset's epochs, the ``sft`` rows'
    own fields, the seed. Plain values: nothing is imported or checked (the dry run needs no GPU)."""
    arm = arm_of(name)
    setting = dict(setting or {}) | {k: v for k, v in (triplet or {}).items() if k != "negatives"}
    chosen_alpha = setting.pop("alpha", None)
    if alpha > 0 and chosen_alpha is not None:
        alpha = chosen_alpha
    if alpha == 0:  # no triplet term: its margin and pooling layer change nothing, so they are not set
        for key in TRIPLET_ONLY_KEYS:
            setting.pop(key, None)
    extra = dict(setting)
    if arm in ("sft", "sft_dose"):
        extra.update(examples=run.preset.sft_examples, **run.preset.sft_train)
    if run.preset.epochs is not None:  # the same epochs for every arm, over its own data
        extra.update(num_train_epochs=float(run.preset.epochs), max_steps=-1)
    seed = seed_of(name, run.preset)
    if seed != run.preset.seeds[0]:
        extra["seed"] = seed
    return config_fields(run, alpha, extra)


def run_mining(run: Run, name: str, alpha: float, triplet: dict | None = None) -> MiningConfig:
    """Triplet mining of one run: the preset's, with the triplet search's negatives for SFT + triplet models."""
    fields = dict(run.preset.mining)
    if alpha > 0 and triplet and "negatives" in triplet:
        fields["negatives"] = triplet["negatives"]
    return MiningConfig(**fields)


def train_data(run: Run, name: str, vtype: str) -> Path:
    if arm_of(name) == "sft_dose":
        return run.dose_file
    return run.train_all_file if vtype == "all" else run.train_file


# ---------------------------------------------------------------------------------------------
# training

def checkpoints_dir(out: Path) -> Path:
    return out.with_name(out.name + ".checkpoints")


def adapter_dir(out: Path) -> Path:
    return out.with_name(out.name + ".adapter")


def card_copy(out: Path) -> Path:
    return out.with_name(out.name + ".card.json")


def card_of(out: Path) -> dict | None:
    """A trained model's card: the copy kept beside its folder, else the one inside it (None: not trained)."""
    for path in (card_copy(out), out / CARD_NAME):
        if path.is_file():
            return json.loads(path.read_text(encoding="utf-8"))
    return None


def train_argv(run: Run, out: Path, vtype: str, data: Path, config_file: Path, resume: bool) -> list[str]:
    """``consistbench ref train ...`` for one model (what runs under the launcher)."""
    argv = [executable("consistbench"), "ref", "train", "--variant-type", vtype, "--data", str(data),
            "--model", str(run.base_model()), "-o", str(out), "--config", str(config_file), "--keep-checkpoints"]
    return argv + (["--resume", "latest"] if resume else [])


def train_yaml(run: Run, out: Path) -> Path:
    """Where the settings file of the model trained into ``out`` goes (``RUN/launch/train/NAME.yaml``)."""
    rel = out.relative_to(run.dir) if out.is_relative_to(run.dir) else Path(out.name)
    return run.dir / "launch" / "train" / ("-".join(rel.parts) + ".yaml")


def write_train_yaml(run: Run, out: Path, config, mining: MiningConfig) -> Path:
    """The settings file ``ref train --config`` reads: every field the in-process run sets, and the mining."""
    fields = dict(config.consistbench_fields) | {f"mining_{k}": v for k, v in mining.to_json().items()}
    # set on the config after it was made (a checkpoint curve's saves, a brief training's steps)
    fields |= {"save_steps": config.save_steps, "max_steps": config.max_steps}
    path = train_yaml(run, out)
    write_text(path, yaml.safe_dump(json.loads(json.dumps(fields, default=str)), sort_keys=True))
    return path


def train_model(run: Run, key: str, out: Path, vtype: str, config, mining: MiningConfig | None = None,
                data: Path | None = None, *, keep_checkpoints: bool = False) -> None:
    """Train one model into ``out`` (resuming from its checkpoints when there are some), keep its LoRA
    adapter and card beside it; ``keep_checkpoints`` leaves the checkpoints (a checkpoint curve)."""
    from consistbench.reference_method import train as train_mod

    mining = mining or MiningConfig(**run.preset.mining)
    data = data or (run.train_all_file if vtype == "all" else run.train_file)
    resume = train_mod.latest_checkpoint(checkpoints_dir(out)) is not None
    run.log(f"[{key}] variant type {vtype}, alpha {config.alpha}, {config.examples}"
            + (" (resuming)" if resume else ""))
    if run.launcher.active:
        argv = train_argv(run, out, vtype, data, write_train_yaml(run, out, config, mining), resume)
        run.timed(key, lambda: run.launch(argv))
    else:
        run.timed(key, lambda: train_mod.train(run.base_model(), data, vtype, out, config, mining,
                                               resume=resume, log=run.log, keep_checkpoints=True))
    if not trained(out):
        raise ConsistbenchError(f"[{key}] stopped before the end; run again to resume")
    keep_adapter(out)
    if not keep_checkpoints:
        shutil.rmtree(checkpoints_dir(out), ignore_errors=True)


def keep_adapter(out: Path) -> None:
    """Copy a trained model's card, and its LoRA adapter from the final checkpoint, beside its folder."""
    from consistbench.reference_method import train as train_mod

    shutil.copyfile(out / CARD_NAME, card_copy(out))
    last = train_mod.latest_checkpoint(checkpoints_dir(out))
    if last is None or not all((last / f).is_file() for f in ADAPTER_FILES) or adapter_dir(out).is_dir():
        return
    with atomic_path(adapter_dir(out), is_dir=True) as tmp:
        for f in ADAPTER_FILES:
            shutil.copyfile(last / f, tmp / f)


def rebuild(run: Run, name: str, out: Path) -> bool:
    """Rebuild a LoRA model from its kept adapter and card (base + adapter, merged); False when either is missing."""
    if trained(out) or not (adapter_dir(out).is_dir() and card_copy(out).is_file()):
        return False
    card = json.loads(card_copy(out).read_text(encoding="utf-8"))
    merge_adapter(run, adapter_dir(out), out, card | {"rebuilt_from": str(adapter_dir(out))})
    run.log(f"[train {name}] rebuilt from its adapter")
    return True


def merge_adapter(run: Run, adapter: Path, out: Path, card: dict | None = None) -> Path:
    """``out``: the base with the LoRA adapter in ``adapter`` (a kept adapter, or a checkpoint) merged
    in, saved as a plain model (weights, tokenizer, the evaluation generation config, ``card``); a
    checkpoint of full fine-tuning (no adapter) is saved as it is."""
    import torch
    from transformers import AutoModelForCausalLM

    base = run.base_model()
    dtype = getattr(torch, str(run.preset.train.get("model_dtype", "float32")).replace("auto", "bfloat16"))
    if (adapter / ADAPTER_FILES[0]).is_file():
        from peft import PeftModel

        model = AutoModelForCausalLM.from_pretrained(str(base), dtype=dtype)
        model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    else:
        model = AutoModelForCausalLM.from_pretrained(str(adapter), dtype=dtype)
    tok = doctor.load_tokenizer(base)
    with atomic_path(out, is_dir=True) as tmp:
        model.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
        doctor.eval_generation_config(tok, doctor.load_generation_config(base)).save_pretrained(str(tmp))
        if card is not None:
            write_json(tmp / CARD_NAME, card)
        write_text(tmp / "README.md", f"# {out.name}\n\n`{adapter}` over `{base}` (a LoRA adapter, merged).\n")
    return out


# ---------------------------------------------------------------------------------------------
# the step-0 screen

def step0_activity(run: Run, config, mining: MiningConfig, n_triplets: int, seed: int = 0) -> dict:
    """The triplet term's activity before any update, with ``config`` and ``mining``, on a seeded draw of
    ``n_triplets`` of the all-data model's triplets (:func:`consistbench.reference_method.screen.screen_triplets`):
    ``active`` (share of triplets whose hinge is positive), ``grad_ratio`` (the triplet term's gradient norm
    over the CE's), the mean ``d_ap``/``d_an`` and every triplet's (``d_ap_each``, ``d_an_each``)."""
    from consistbench.reference_method.screen import screen_triplets

    config.output_dir = str(run.search_dir / "screen.tmp")
    batches = max(1, -(-n_triplets // config.per_device_train_batch_size))
    out = screen_triplets(run.base_model(), run.train_all_file, "all", config, mining, batches=batches, seed=seed,
                          log=run.log)
    mean = out["mean"]
    return {"active": mean["active"], "grad_ratio": mean["grad_ratio"], "d_ap": mean["d_ap"], "d_an": mean["d_an"],
            "d_ap_each": out["per_triplet"]["d_ap"], "d_an_each": out["per_triplet"]["d_an"], "triplets": out["triplets"]}


# ---------------------------------------------------------------------------------------------
# budgets

def arm_budget(run: Run, card: dict) -> dict:
    """What a trained model saw: optimizer updates, training sequences and their tokens (no padding),
    counted from its card and its training data."""
    from consistbench.reference_method import train as train_mod

    t, d = card["training"], card["data"]
    tok = doctor.load_tokenizer(run.base_model())
    prepared = train_mod.prepare_data(load_data(d["path"]), card["variant_type"], tok,
                                      mining=MiningConfig(**card["mining"]), max_length=t["max_length"],
                                      examples=d.get("examples", "triplets"))
    per_item = 3 if d.get("examples", "triplets") == "triplets" else 1
    items = len(prepared.items)
    tokens = sum(len(e["input_ids"]) for item in prepared.items
                 for e in (item.values() if per_item == 3 else [item]))
    if t.get("max_steps", -1) and t["max_steps"] > 0:
        seen = min(card["global_step"] * t["per_device_train_batch_size"] * t["gradient_accumulation_steps"]
                   * run.launcher.processes, items * float(t["num_train_epochs"]))
    else:
        seen = items * float(t["num_train_epochs"])
    return {"updates": card["global_step"], "items": round(seen), "sequences": round(seen * per_item),
            "tokens": round(tokens * seen / items), "epochs": round(seen / items, 4),
            "sequences_per_epoch": items * per_item}

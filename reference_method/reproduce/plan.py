"""``consistbench ref reproduce --dry-run``: every stage, the exact command of each job, the memory each
GPU needs, the expected GPU-hours; a plan that cannot fit is refused with one line.

It needs neither a GPU nor the model's weights: the model's ``config.json`` alone
(:mod:`.memory`), the preset, the launcher. Nothing is written, trained or evaluated. The commands
are built by the same functions the stages run them with (:mod:`.jobs`, :mod:`.evaluation`,
:mod:`.weights_jobs`); where a job runs in this process (no launcher), the line shows the
equivalent command.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from consistbench.benchmark.errors import ConsistbenchError
from consistbench.benchmark.fileio import read_jsonl
from consistbench.reference_method.consistency_weights import DEFAULT_DEV
from consistbench.reference_method.reproduce.evaluation import eval_argv, eval_model, eval_options, launched, test_samples
from consistbench.reference_method.reproduce.jobs import run_fields, train_argv, train_data, train_yaml
from consistbench.reference_method.reproduce.launch import display
from consistbench.reference_method.reproduce.memory import Shape, inference_memory, read_shape, training_memory
from consistbench.reference_method.reproduce.presets import SPECIALISED, arm_of, arm_seeds, training_runs
from consistbench.reference_method.reproduce.run_folder import Run
from consistbench.reference_method.reproduce.stages import STAGES
from consistbench.reference_method.reproduce.weights_jobs import similarities_argv
from consistbench.reference_method.synth import default_train_file

CPU = "CPU (2 cores)"
# measured training throughput, sequences per second per device, by (architecture, parameters in billions to
# 0.1, device). Nothing has run on a GPU in this project, so every GPU plan says "unknown"; a measured GPU
# figure goes here as ("LlamaForCausalLM", 8.0, "H100-80GB"): rate.
MEASURED_THROUGHPUT: dict[tuple[str, float, str], float] = {
    # the `cpu` preset's SFT + triplet step on SmolLM2-135M-Instruct (LoRA r16 on every layer, 4 triplets of
    # <= 384 tokens, padded, answer-only logits): 12 sequences per 23 s, one process on both threads
    # (docs/REPRODUCTION.md, "The cpu preset"); share_prefix (cpu-fair) is not counted as faster here
    ("LlamaForCausalLM", 0.1, CPU): 12 / 23,
}
# measured evaluation throughput, rows per second: consistbench's default backend, SmolLM2 on one thread beside
# a training (the `cpu` preset's run: 1.0-1.7 rows/s; the slower end)
MEASURED_EVAL_ROWS: dict[tuple[str, float, str], float] = {("LlamaForCausalLM", 0.1, CPU): 1.0}


def dry_run(run: Run, *, gpu_gib: float = 79.0, gpu: str = "H100-80GB", out: Callable[[str], None] = print) -> dict:
    """Print the plan; return it (the memory estimates, the stages' commands, the cost). ConsistbenchError
    when the training step of some arm, the weights stage or an evaluation needs more than ``gpu_gib`` per
    GPU (a CPU preset's plan gives the process's RAM and is not refused)."""
    model = Path(run.preset.model or run.source_model())
    shape = read_shape(model)
    layout = run.launcher.settings()
    on_cpu = bool(run.preset.train.get("use_cpu"))
    gpu = CPU if on_cpu else gpu
    mem = {kind: training_memory(shape, fields, layout, sequences_per_item=per_item)
           for kind, (fields, per_item) in _arm_kinds(run).items()}
    out(f"Dry run of preset {run.preset.name}: nothing is trained, evaluated or written; only {model / 'config.json'} "
        "is read.")
    out(f"Model: {shape.architecture}, {shape.params / 1e9:.2f} B parameters ({shape.layers} layers, hidden "
        f"{shape.hidden}, MLP {shape.intermediate}, {shape.heads} heads / {shape.kv_heads} KV heads, vocab {shape.vocab}).")
    out("Launcher: " + _launcher_line(run, layout))
    for k in range(1, layout["num_machines"]):
        argv = ["consistbench", "ref", "reproduce", "--preset", run.preset.name, "--model", str(model), "-o",
                str(run.dir), *run.launcher.with_rank(k).options()]
        out(f"  machine {k} (it follows the main one's launched jobs): $ {display(argv)}")
    out("")
    _memory_table(mem, layout, None if on_cpu else gpu_gib, out)
    train = run.preset.train
    w_dtype, e_dtype = run.preset.weights_dtype, run.preset.eval_dtype
    weights_gib = inference_memory(shape, w_dtype, int(run.preset.weights.get("batch_size", 8)), int(train.get("max_length", 1024)))
    eval_gib = inference_memory(shape, e_dtype, int(run.preset.eval_batch_size), int(train.get("max_length", 1024)) + 64)
    device = {None: "the CPU", "auto": "the GPU (auto)"}.get(run.preset.weights_device, run.preset.weights_device)
    out(f"Weights stage: forward passes in {w_dtype} on {device}: ~{weights_gib:.1f} GiB.")
    engine = eval_model(run) or "consistbench's default (fp32 transformers)"
    how = ("vllm when installed, else hf" if run.preset.eval_model == "auto" else "the canonical CPU numerics")
    where = "on the CPU" if run.eval_device() in (None, "cpu") and on_cpu else "per GPU"
    out(f"Evaluation: lm-eval model {engine} (preset eval_model {run.preset.eval_model}: {how}) in {e_dtype}: "
        f"~{eval_gib:.1f} GiB {where} (weights and KV cache).")
    out("")
    stages = stage_commands(run)
    out("Stages (in order; `$` lines are the commands of their jobs):")
    for name, what, cmds in stages:
        out(f"  {name:<15} {what}")
        for c in cmds:
            out(f"      $ {c}")
    out("")
    hours = expected_hours(run, shape, gpu)
    out(f"Expected {'CPU' if on_cpu else 'GPU'}-hours: {hours}")
    evals = expected_eval(run, shape, gpu)
    out(f"Evaluations: {evals}")
    worst = max(mem.items(), key=lambda kv: kv[1]["total"])
    plan = {"model": shape.__dict__, "launcher": layout, "memory": mem, "weights_gib": weights_gib,
            "eval_gib": eval_gib, "stages": stages, "gpu_hours": hours, "evaluations": evals}
    if on_cpu:
        out(f"Memory: the largest training step needs about {worst[1]['total']:.1f} GiB of RAM per process.")
        return plan
    if worst[1]["total"] > gpu_gib:
        raise ConsistbenchError(
            f"the plan does not fit: training {worst[0]} needs {worst[1]['total']:.1f} GiB per GPU, more than the "
            f"{gpu_gib:g} GiB of one GPU ({_advice(run, worst[1], layout)})")
    inference = max(weights_gib if run.preset.weights_device else 0.0, eval_gib)
    if inference > gpu_gib:
        raise ConsistbenchError(f"the plan does not fit: the weights stage or evaluation needs {inference:.1f} GiB "
                                f"per GPU, more than the {gpu_gib:g} GiB of one GPU (lower eval_batch_size or the weights' batch_size)")
    out(f"Fits: the largest training step needs {worst[1]['total']:.1f} of {gpu_gib:g} GiB per GPU.")
    return plan


def _arm_kinds(run: Run) -> dict[str, tuple[dict, int]]:
    """The training settings that size memory: an SFT + triplet arm (three sequences per example) and, when
    the preset trains one, an SFT arm on the rows (one)."""
    setting = run.preset.search_grid[0] if run.preset.search_grid else None
    kinds = {"SFT + triplet arms": (run_fields(run, "sft_triplet_all", run.preset.triplet_alpha, setting), 3)}
    if run.preset.sft_examples == "rows":
        kinds["SFT arms (rows)"] = (run_fields(run, "sft", run.preset.sft_alpha, setting), 1)
    return kinds


def _launcher_line(run: Run, layout: dict) -> str:
    if not run.launcher.active:
        return "one process (the default), " + ("on the CPU." if run.preset.train.get("use_cpu") else "one GPU.")
    kind = {"ddp": "DDP: the whole model in each process", "deepspeed": f"DeepSpeed ZeRO-{layout['zero_stage']}: "
            "weights, gradients and optimizer states sharded", "fsdp": "FSDP: weights, gradients and optimizer states "
            "sharded"}.get(layout["sharding"], layout["sharding"])
    return (f"accelerate ({run.launcher.config_file}), {layout['num_processes']} processes on {layout['num_machines']} "
            f"machine(s) ({layout['per_machine']} each), {kind}.")


def _memory_table(mem: dict, layout: dict, gpu_gib: float | None, out) -> None:
    parts = list(next(iter(mem.values()))["parts"])
    where = f"per GPU in GiB, GPU: {gpu_gib:g} GiB" if gpu_gib else "of the training process in GiB (CPU RAM)"
    out(f"Memory {where} (an estimate; the assumptions: docs/REFERENCE_METHOD.md, \"At the paper's scale\"):")
    out("| part | " + " | ".join(mem) + " |")
    out("|---|" + "---:|" * len(mem))
    for p in parts:
        out(f"| {p} | " + " | ".join(f"{m['parts'].get(p, 0.0):.2f}" for m in mem.values()) + " |")
    out("| **total** | " + " | ".join(f"**{m['total']:.1f}**" for m in mem.values()) + " |")
    out("| tokens per micro-batch | " + " | ".join(str(m["tokens_per_step"]) for m in mem.values()) + " |")
    out("| activations without checkpointing | " + " | ".join(f"{m['activations_without_checkpointing']:.1f}"
                                                              for m in mem.values()) + " |")
    out("| activations with checkpointing | " + " | ".join(f"{m['activations_with_checkpointing']:.1f}"
                                                           for m in mem.values()) + " |")
    out("| trainable parameters | " + " | ".join(f"{m['trainable_params'] / 1e6:.1f} M" for m in mem.values()) + " |")
    out("")


def _advice(run: Run, m: dict, layout: dict) -> str:
    train = run.preset.train
    if not train.get("gradient_checkpointing") and m["parts"]["activations"] > 8:
        return "turn on gradient_checkpointing"
    if not train.get("use_lora") and layout["sharding"] not in ("deepspeed", "fsdp"):
        return "full fine-tuning at this size needs --accelerate-config deepspeed-zero3 or fsdp"
    if str(train.get("model_dtype", "float32")) == "float32":
        return "load the weights in bf16: model_dtype bfloat16"
    return "lower per_device_train_batch_size or max_length, or shard with more processes"


def stage_commands(run: Run) -> list[tuple[str, str, list[str]]]:
    """(stage, what it does, its jobs' commands) for every stage, in order."""
    where = "under the launcher" if run.launcher.active else "in this process, as"
    dev, test = run.preset.search_task, run.preset.task
    out = []
    for stage in STAGES:
        what, cmds = "in this process", []
        if stage == "base":
            what = "in this process: the doctor's checks (a corrected copy in RUN/base when it finds an error)"
        elif stage == "synth":
            what = f"in this process: {run.preset.synth.get('paraphraser')} paraphrases and the rule variants"
        elif stage == "search":
            grid = run.preset.search_grid
            what = (f"{len(grid)} settings, each the all-data SFT + triplet model trained and scored on {dev} ({where}):"
                    if grid else "no grid in this preset: skipped")
            for i in range(len(grid)):
                cmds += [_train_cmd(run, run.search_dir / "models" / f"s{i}", "sft_triplet_all", "all"),
                         _eval_cmd(run, run.search_dir / "models" / f"s{i}", run.search_dir / "eval" / f"s{i}", dev)]
        elif stage == "triplet_search":
            ts = run.preset.triplet_search
            what = ("the step-0 screen in this process, then the survivors' brief trainings scored on "
                    f"{dev} ({where}, e.g.):" if ts else "no triplet search in this preset: skipped")
            if ts:
                model = run.search_dir / "triplet_models" / "ID"
                cmds += [_train_cmd(run, model, "sft_triplet_all", "all"),
                         _eval_cmd(run, model, run.search_dir / "triplet_eval" / "ID", dev)]
        elif stage == "train":
            runs = training_runs(run.preset)
            what = f"{len(runs)} models ({where}):"
            cmds += [_train_cmd(run, run.model_dir(n), n, v) for n, v, _ in runs]
        elif stage == "checkpoints":
            f = run.preset.eval_checkpoints
            what = (f"{run.preset.checkpoint_arm} at {', '.join(f'{x:g}' for x in f)} of its steps, scored on {dev}"
                    if f else "no checkpoint curve in this preset: skipped")
        elif stage == "weights":
            what = f"similarity matrices ({where}), then the weights in this process:"
            for s in arm_seeds("merged", run.preset):
                argv = similarities_argv(run, s, run.seed_file(run.similarities_file, s))
                cmds.append(display(run.launcher.command(argv, module=True)))
        elif stage == "merge":
            what = "in this process: the consistency merge (streamed tensor by tensor on the CPU)"
        elif stage == "temperature":
            n = max(1, len(run.preset.weights_distances)) * len(run.preset.temperatures)
            what = (f"{n} merges in this process, each scored on {dev}" if n else "no temperatures: skipped")
        elif stage == "null_merges":
            what = (", ".join(run.preset.null_merges) + f" in this process (task arithmetic's scale on {dev} among "
                    f"{run.preset.ta_scales})" if run.preset.null_merges else "no null merges in this preset: skipped")
        elif stage == "eval":
            names = [n for n in run.model_names() if n != "base"]
            what = f"{len(names) + 1} models on {test} ({where}):"
            cmds.append(_eval_cmd(run, Path(run.preset.model or run.source_model()), run.eval_dir("base"), test))
            cmds += [_eval_cmd(run, run.model_dir(n), run.eval_dir(n), test) for n in names]
        elif stage == "table":
            what = "in this process: results/results.{md,json,png}"
        out.append((stage, what, cmds))
    return out


def _train_cmd(run: Run, out: Path, name: str, vtype: str) -> str:
    argv = train_argv(run, out, vtype, train_data(run, name, vtype), train_yaml(run, out), resume=False)
    return display(run.launcher.command(argv))


def _eval_cmd(run: Run, model: Path, folder: Path, task: str) -> str:
    opts = eval_options(run, model, folder, task)
    argv = eval_argv(opts)
    return display(run.launcher.command(argv) if launched(run, opts) else argv)


def _key(shape: Shape, device: str) -> tuple[str, float, str]:
    return (shape.architecture, round(shape.params / 1e9, 1), device)


def expected_hours(run: Run, shape: Shape, gpu: str) -> str:
    """Device-hours of the training (the search's and triplet search's trainings included) from measured
    throughput; "unknown" where nothing was measured."""
    key = _key(shape, gpu)
    rate = MEASURED_THROUGHPUT.get(key)
    seqs = sum(_sequences(run, arm_of(n)) for n, _, _ in training_runs(run.preset))
    seqs += len(run.preset.search_grid) * _sequences(run, "sft_triplet_all")
    ts = run.preset.triplet_search
    if ts:  # the brief trainings of the survivors, each alpha
        per_step = 3 * int(run.preset.train.get("per_device_train_batch_size", 8)) \
            * int(run.preset.train.get("gradient_accumulation_steps", 1))
        seqs += int(ts.get("survivors", 2)) * max(1, len(ts.get("alphas", []))) * int(ts.get("brief_steps", 40)) * per_step
    volume = f"about {seqs:,} training sequences in all, searches included (an upper bound from the train split)"
    if rate is None:
        return (f"unknown: no training throughput measured for {shape.architecture} ({key[1]:g} B) on a {gpu} "
                f"(nothing in this project has run on a GPU); {volume}.")
    return f"{seqs / rate / 3600:.1f} for the training ({volume}, {rate:.2f} sequences/s measured on a {gpu})."


def expected_eval(run: Run, shape: Shape, device: str) -> str:
    """The evaluations (on the test task, and on dev for every dev choice) and their hours where the
    evaluation throughput is known."""
    p = run.preset
    test = len(run.model_names())
    dev = len(p.search_grid) + len(p.eval_checkpoints) + len(p.ta_scales) \
        + max(1, len(p.weights_distances)) * len(p.temperatures) * bool(p.temperatures)
    if p.triplet_search:
        dev += int(p.triplet_search.get("survivors", 2)) * max(1, len(p.triplet_search.get("alphas", [])))
    rows = {t: _task_rows(run, t) for t in (p.task, p.search_task)}
    said = f"{test} on {p.task} ({rows[p.task] or 'unknown'} rows each), {dev} on {p.search_task} " \
           f"({rows[p.search_task] or 'unknown'} rows each)"
    rate = MEASURED_EVAL_ROWS.get(_key(shape, device))
    if rate is None or None in rows.values():
        return f"{said}; hours unknown (no evaluation throughput measured for this model on a {device})."
    hours = (test * rows[p.task] + dev * rows[p.search_task]) / rate / 3600
    return f"{said}: about {hours:.1f} hours at {rate:g} rows/s (measured on a {device})."


def _task_rows(run: Run, task: str) -> int | None:
    """Rows of the whole-split tasks (``consistency``, or its ``eval_groups`` subset; ``consistency_dev``)."""
    if task == run.preset.task and run.preset.eval_groups:
        samples = test_samples(run, task)
        return len(samples[task]) if samples else None
    files = {"consistency": "test.jsonl", "consistency_dev": "dev.jsonl"}
    if task not in files:
        return None
    return sum(1 for line in DEFAULT_DEV.with_name(files[task]).read_text(encoding="utf-8").splitlines() if line.strip())


def _sequences(run: Run, arm: str) -> int:
    """Training sequences of one arm over its epochs: an upper bound (every train question with one variant
    of each type; a specialist one triplet per question, the all-data model one per type)."""
    n = run.preset.questions_per_type or len(read_jsonl(default_train_file()))
    epochs = float(run.preset.epochs or run.preset.train.get("num_train_epochs", 1.0))
    types = len(SPECIALISED)
    per_epoch = {"sft_triplet_all": 3 * types * n, "sft": (1 + types) * n, "sft_triplet_expanded": 3 * types * n,
                 "sft_dose": 3 * types * n}.get(arm, 3 * n)
    if run.preset.sft_examples != "rows" and arm == "sft":
        per_epoch = 3 * types * n
    return int(per_epoch * epochs)

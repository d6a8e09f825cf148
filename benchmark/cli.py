"""The ``consistbench`` command line: one script, one subcommand per job.

Bad input raises :class:`consistbench.benchmark.errors.ConsistbenchError`; ``main`` prints it as one line
(``consistbench: error: ...``) and exits with status 2. Heavy libraries are imported inside
the subcommands so that ``consistbench --help`` and light commands start fast.

Runs are offline by default: ``HF_HUB_OFFLINE=1`` unless the caller set ``HF_HUB_OFFLINE``
themselves (``HF_HUB_OFFLINE=0 consistbench ...`` allows hub model ids).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from consistbench.benchmark import __version__
from consistbench.benchmark.errors import ConsistbenchError

Handler = Callable[[argparse.Namespace], int]
_EXTENSIONS: list[Callable[[argparse._SubParsersAction], None]] = []


def register(fn: Callable[[argparse._SubParsersAction], None]):
    """Let another package (tasks, reference_method, leaderboard) add subcommands."""
    _EXTENSIONS.append(fn)
    return fn


# ---------------------------------------------------------------------------------------------
# score

def _score_settings(args):
    from consistbench.benchmark.metrics import BertScoreConfig, ScoreSettings

    return ScoreSettings(rs_threshold=args.rs_threshold,
                         bertscore=BertScoreConfig(model_type=args.bs_model, num_layers=args.bs_num_layers,
                                                   batch_size=args.bs_batch_size),
                         compute_bs=not args.no_bs)


def add_score_options(p: argparse.ArgumentParser) -> None:
    from consistbench.benchmark.metrics import RS_THRESHOLD

    p.add_argument("--rs-threshold", type=float, default=RS_THRESHOLD,
                   help=f"ROUGE-L F1 at or above which a pair counts as consistent for rs (default {RS_THRESHOLD})")
    p.add_argument("--bs-model", default=None,
                   help="bert-score model_type for bs (default: the embedded all-MiniLM-L6-v2)")
    p.add_argument("--bs-num-layers", type=int, default=None, help="bert-score num_layers (needed for a local path)")
    p.add_argument("--bs-batch-size", type=int, default=128)
    p.add_argument("--no-bs", action="store_true", help="skip BERTScore (bs) for a quick look")


def cmd_score(args) -> int:
    from consistbench.benchmark.fileio import write_json
    from consistbench.benchmark.report import print_table
    from consistbench.benchmark.scorer import score_file

    result = score_file(args.responses, _score_settings(args))
    print_table(result["metrics"], result["counts"], title=f"consistbench score: {Path(args.responses).name}")
    if args.json:
        write_json(args.json, result)
        print(f"wrote {args.json}")
    return 0


# ---------------------------------------------------------------------------------------------
# variants

def cmd_variants(args) -> int:
    from consistbench.benchmark.fileio import read_jsonl, strip_line_numbers, write_jsonl
    from consistbench.benchmark.schema import group_id_for, row_id_for
    from consistbench.benchmark.variants.generate import generate_variants
    from consistbench.benchmark.variants.paraphrase import make_paraphraser

    types = [t.strip() for t in args.types.split(",") if t.strip()]
    raw = read_jsonl(args.input)
    if not raw:
        raise ConsistbenchError(f"{args.input}: no rows")
    for obj in raw:
        if not isinstance(obj.get("question"), str) or not obj["question"].strip():
            raise ConsistbenchError(f"{args.input}:{obj['__line__']}: missing or empty field 'question'")
    rows = strip_line_numbers(raw)
    paraphraser = None
    if "paraphrase" in types:
        paraphraser = make_paraphraser(args.paraphraser, model=args.paraphrase_model, base_url=args.base_url,
                                       trust_remote_code=args.trust_remote_code)
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        task = bar.add_task("generating variants", total=len(types))
        variants = generate_variants([r["question"] for r in rows], types, n=args.n, seed=args.seed,
                                     paraphraser=paraphraser, progress=lambda kind, _: bar.advance(task))
    by_index: dict[int, list] = {}
    for v in variants:
        by_index.setdefault(v.index, []).append(v)
    out = []
    for i, row in enumerate(rows):
        gid = row.get("group_id") or row.get("id") or group_id_for(row.get("passage_id", ""), row["question"])
        base = dict(row, group_id=gid, variant_type="original")
        base.setdefault("id", row_id_for(gid, "original"))
        out.append(base)
        counts: dict[str, int] = {}
        for v in by_index.get(i, []):
            counts[v.variant_type] = counts.get(v.variant_type, 0) + 1
            out.append(dict(row, id=row_id_for(gid, v.variant_type, counts[v.variant_type]), group_id=gid,
                            variant_type=v.variant_type, question=v.question,
                            generator=v.generator | {"cosine": v.cosine}))
    write_jsonl(args.output, out)
    made = {t: sum(1 for v in variants if v.variant_type == t) for t in types}
    print(f"wrote {args.output}: {len(rows)} originals, " + ", ".join(f"{k} {v}" for k, v in made.items()))
    return 0


# ---------------------------------------------------------------------------------------------
# data

def cmd_data_validate(args) -> int:
    from collections import Counter

    from consistbench.benchmark.schema import data_checksum, load_data

    rows = load_data(args.file)
    types = Counter(r.variant_type for r in rows)
    splits = Counter(r.split for r in rows)
    print(f"{args.file}: OK, {len(rows)} rows, {len({r.group_id for r in rows})} groups; "
          f"splits {dict(sorted(splits.items()))}; types {dict(sorted(types.items()))}; "
          f"checksum {data_checksum(rows)[:16]}")
    return 0


def cmd_data_fetch(args) -> int:
    from consistbench.benchmark import corpus

    path = corpus.fetch(args.deb, force=args.force)
    print(f"documentation ({corpus.installed_version()}) in {path}")
    return 0


def cmd_data_build(args) -> int:
    from consistbench.benchmark.databuild import build

    build(html_dir=args.html_dir, out_dir=args.out_dir, check_only=args.check, authored_dir=args.authored_dir)
    return 0


def cmd_data_audit(args) -> int:
    from consistbench.benchmark.audit import audit_files

    ok = audit_files(args.files, max_report=args.max_report)
    return 0 if ok else 1


# ---------------------------------------------------------------------------------------------
# eval

def cmd_tasks_path(args) -> int:
    from consistbench.benchmark.evaluate import tasks_path

    print(tasks_path())
    return 0


def cmd_eval(args) -> int:
    from consistbench.benchmark.evaluate import EvalOptions, run_eval, task_metrics
    from consistbench.benchmark.report import print_table

    tasks = tuple(t.strip() for t in args.tasks.split(",") if t.strip())
    opts = EvalOptions(model=args.model, model_args=args.model_args, tasks=tasks, output_path=args.output_path,
                       batch_size=args.batch_size, device=args.device, seed=args.seed, limit=args.limit,
                       apply_chat_template={"auto": None, "yes": True, "no": False}[args.chat_template],
                       dedup=not args.no_dedup, trust_remote_code=args.trust_remote_code,
                       include_paths=tuple(args.include_path), gen_kwargs=args.gen_kwargs)
    out = run_eval(opts)
    if out["results"] is None:
        return 0
    for task in out["results"]["results"]:
        print_table(task_metrics(out["results"], task), title=f"{task} ({out['results']['n-samples'][task]['effective']} rows)")
    d = out["dedup"]
    if d and d["requested"]:
        print(f"generations: {d['generated']} for {d['requested']} requests (identical prompts generated once)")
    for f in out["files"]:
        print(f"wrote {f}")
    return 0


# ---------------------------------------------------------------------------------------------
# setup

def cmd_setup(args) -> int:
    """Prepare the embedded models and data that runs need, all inside the cache."""
    from consistbench.benchmark.embedded import convert_smollm2, minilm_path
    from consistbench.benchmark.wordnet import ensure_wordnet

    print(f"sentence encoder: {minilm_path()}")
    print(f"SmolLM2 (converted once from GGUF): {convert_smollm2(force=args.force)}")
    if not args.skip_wordnet:
        print(f"WordNet for the offline paraphraser: {ensure_wordnet()}")
    return 0


# ---------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="consistbench", description="Consistency benchmark for RAG generators.")
    parser.add_argument("--version", action="version", version=f"consistbench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("setup", help="convert the embedded SmolLM2 and install WordNet into the cache")
    p.add_argument("--force", action="store_true", help="convert SmolLM2 again even if present")
    p.add_argument("--skip-wordnet", action="store_true")
    p.set_defaults(func=cmd_setup)

    p = sub.add_parser("eval", help="run the lm-eval tasks on a model (default: the embedded SmolLM2)")
    p.add_argument("--model", default="hf", help="lm-eval model type: hf, vllm, local-completions, ... (default hf)")
    p.add_argument("--model-args", default=None,
                   help="lm-eval model_args, e.g. pretrained=DIR,dtype=float32 (default: the embedded SmolLM2)")
    p.add_argument("--tasks", default="consistency_mini",
                   help="comma-separated: consistency, consistency_mini, consistency_how_to, ... (default consistency_mini)")
    p.add_argument("--output-path", default="out", help="directory for results JSON, samples and report (default out/)")
    p.add_argument("--batch-size", default="8")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--limit", type=int, default=None, help="lm-eval --limit (cuts groups apart: debugging only)")
    p.add_argument("--chat-template", choices=("auto", "yes", "no"), default="auto",
                   help="wrap the prompt in the model's chat template (auto: when the tokenizer has one)")
    p.add_argument("--no-dedup", action="store_true", help="generate repeated prompts once per task")
    p.add_argument("--trust-remote-code", action="store_true", help="allow custom model code (off by default)")
    p.add_argument("--gen-kwargs", default=None,
                   help="override the tasks' generation settings, as lm-eval's --gen_kwargs (e.g. max_gen_toks=128); "
                        "results then differ from the benchmark's defaults")
    p.add_argument("--include-path", action="append", default=[],
                   help="another folder of lm-eval task YAMLs to index (repeatable)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("tasks-path", help="print the directory to pass to lm_eval --include_path")
    p.set_defaults(func=cmd_tasks_path)

    p = sub.add_parser("score", help="score a responses JSONL (data rows plus 'response')")
    p.add_argument("responses", help="responses JSONL")
    p.add_argument("--json", help="write the results JSON here")
    add_score_options(p)
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("variants", help="generate query variants for your own questions")
    p.add_argument("input", help="JSONL with a 'question' per line (other fields are copied)")
    p.add_argument("-o", "--output", required=True, help="output JSONL: originals followed by their variants")
    p.add_argument("--types", default="how_to,plural_article,paraphrase")
    p.add_argument("--n", type=int, default=1, help="variants per question and type (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--paraphraser", default="local_lm", choices=("local_lm", "endpoint", "wordnet"))
    p.add_argument("--paraphrase-model", default=None,
                   help="local_lm: model dir or hub id (default embedded SmolLM2); endpoint: model name")
    p.add_argument("--base-url", default=None, help="endpoint: base URL of an OpenAI-compatible API (…/v1)")
    p.add_argument("--trust-remote-code", action="store_true", help="allow custom model code (off by default)")
    p.set_defaults(func=cmd_variants)

    data = sub.add_parser("data", help="the benchmark data: fetch, build, validate, audit")
    dsub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    p = dsub.add_parser("validate", help="check a data file against the schema")
    p.add_argument("file")
    p.set_defaults(func=cmd_data_validate)
    p = dsub.add_parser("fetch", help="download and unpack the Python 3.11 documentation (apt-get download)")
    p.add_argument("--deb", default=None, help="use this python3.11-doc .deb instead of apt-get download")
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=cmd_data_fetch)
    p = dsub.add_parser("build", help="rebuild the shipped data from the documentation and the authored questions")
    p.add_argument("--html-dir", default=None, help="an unpacked html/ directory (default: fetch into the cache)")
    p.add_argument("--out-dir", default=None, help="where to write train/dev/test JSONL (default: the shipped data)")
    p.add_argument("--check", action="store_true", help="rebuild to a temporary place and compare with the shipped files")
    p.add_argument("--authored-dir", default=None,
                   help="read the authored *.jsonl from here (default: tasks/consistency/data/authored)")
    p.set_defaults(func=cmd_data_build)
    p = dsub.add_parser("audit", help="run every quality check on data files; non-zero exit on a violation")
    p.add_argument("files", nargs="+")
    p.add_argument("--max-report", type=int, default=50, help="violations listed per rule (default 50)")
    p.set_defaults(func=cmd_data_audit)

    for extend in _EXTENSIONS:
        extend(sub)
    return parser


def _load_extensions() -> None:
    import importlib

    for module in ("consistbench.tasks.cli", "consistbench.benchmark.retrieval.cli", "consistbench.benchmark.compare_cli", "consistbench.reference_method.cli",
                   "consistbench.leaderboard.cli"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name is None or not (module == exc.name or module.startswith(exc.name + ".")):
                raise  # a missing dependency inside an existing module is a real error


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    _load_extensions()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConsistbenchError as exc:
        print(f"consistbench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("consistbench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""``consistbench retrieval eval|build|decompose|search``: retrievers, retrieval consistency, end-to-end tasks."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.table import Table

from consistbench.benchmark.cli import (add_json_option, add_output_option, add_score_options, add_trust_remote_code,
                                        score_settings)
from consistbench.benchmark.errors import ConsistbenchError
from consistbench.benchmark.evaluate import EvalOptions, is_samples_file, run_eval
from consistbench.benchmark.fileio import write_json, write_text
from consistbench.benchmark.retrieval import RETRIEVERS, make_retriever
from consistbench.benchmark.retrieval.decompose import chart, decompose, markdown, read_samples, table
from consistbench.benchmark.retrieval.e2e import build
from consistbench.benchmark.retrieval.evaluate import data_file, evaluate, result_table, rows_table
from consistbench.benchmark.retrieval.metrics import RBO_P
from consistbench.benchmark.retrieval.passages import load_corpus
from consistbench.benchmark.schema import load_data

DEFAULT_OUT = Path("out") / "retrieval"


def _corpus(args):
    return load_corpus(args.corpus) if getattr(args, "corpus", None) else None


def _threshold(args):
    return None if args.threshold is None else float(args.threshold)


def cmd_eval(args) -> int:
    path = Path(args.data) if args.data else data_file(args.split)
    rows = load_data(path)
    retriever = make_retriever(args.retriever, _corpus(args), threshold=_threshold(args), model=args.encoder)
    result = evaluate(retriever, rows, args.k, args.rbo_p, data_path=str(path))
    console = Console()
    missing = {r.passage_id for r in rows} - set(retriever.corpus.ids)
    if missing:
        console.print(f"[yellow]warning: {len(missing)} gold passage ids are not in corpus {retriever.corpus.name!r} "
                      f"(e.g. {sorted(missing)[0]!r}); their recall is 0[/yellow]")
    console.print(result_table(result, f"retrieval consistency: {args.retriever}, k={args.k}, {path.name}"
                                       + (f", threshold {args.threshold}" if args.threshold is not None else "")))
    console.print(rows_table(result))
    out = Path(args.json) if args.json else DEFAULT_OUT / (
        f"{args.retriever}_k{args.k}_{path.stem}" + (f"_t{args.threshold}" if args.threshold is not None else "") + ".json")
    write_json(out, result)
    print(f"wrote {out}")
    return 0


def cmd_build(args) -> int:
    names = [n.strip() for n in args.retrievers.split(",") if n.strip()]
    bad = [n for n in names if n not in RETRIEVERS]
    if bad:
        raise ConsistbenchError(f"unknown retriever {bad[0]!r} (expected some of {', '.join(RETRIEVERS)})")
    if args.k < 1:
        raise ConsistbenchError(f"--k must be at least 1, got {args.k}")
    manifest = build(names, k=args.k, out_dir=args.output, data_path=args.data, threshold=_threshold(args),
                     model=args.encoder, corpus=_corpus(args))
    print(f"precomputed top-{manifest['k']} retrieval for {manifest['rows']} rows "
          f"(data {manifest['data_sha256'][:16]}..., {manifest['passages']['count']} passages) "
          f"with {', '.join(manifest['retrievers'])} into {args.output or 'the shipped data/retrieval/'}")
    return 0


def cmd_decompose(args) -> int:
    out_dir = Path(args.output)
    suffix = "_mini" if args.subset == "mini" else ""
    gold_task, e2e_task = f"consistency{suffix}", f"consistency_e2e_{args.retriever}{suffix}"
    run_info = None
    if args.gold_samples or args.retrieved_samples:
        if not (args.gold_samples and args.retrieved_samples):
            raise ConsistbenchError("give both --gold-samples and --retrieved-samples, or neither to run the model")
        gold_path, retr_path = Path(args.gold_samples), Path(args.retrieved_samples)
    else:
        run = run_eval(EvalOptions(model=args.model, model_args=args.model_args, tasks=(gold_task, e2e_task),
                                   output_path=str(out_dir / "runs"), batch_size=args.batch_size,
                                   trust_remote_code=args.trust_remote_code, limit=args.limit,
                                   settings=score_settings(args)))
        files = [Path(f) for f in run["files"]]
        gold_path = _samples_of(files, gold_task)
        retr_path = _samples_of(files, e2e_task)
        run_info = {"model": args.model, "model_args": run["results"]["config"]["model_args"],
                    "dedup": run["dedup"], "results_files": [str(f) for f in files if f.name.startswith("results_")]}
    report = decompose(read_samples(gold_path), read_samples(retr_path), score_settings(args), by=args.by)
    report.update({"gold_samples": str(gold_path), "retrieved_samples": str(retr_path), "retriever": args.retriever,
                   "subset": args.subset, "tasks": [gold_task, e2e_task], "limit": args.limit, "run": run_info})
    title = f"decomposition: {args.retriever} retrieval, {args.subset} subset" + (
        f", first {args.limit} rows" if args.limit else "")
    Console().print(table(report, title))
    stem = f"decompose_{args.retriever}_{args.subset}" + (f"_limit{args.limit}" if args.limit else "")
    write_json(out_dir / f"{stem}.json", report)
    write_text(out_dir / f"{stem}.md", markdown(report) + "\n")
    chart(report, out_dir / f"{stem}.png", title)
    print(f"wrote {out_dir / stem}.json, .md, .png")
    return 0


def _samples_of(files: list[Path], task: str) -> Path:
    # `consistency` is a prefix of `consistency_e2e_bm25`: match the whole task name
    hits = sorted(f for f in files if is_samples_file(f.name, task))
    if not hits:
        raise ConsistbenchError(f"the run wrote no samples for task {task!r}")
    return hits[-1]


def cmd_search(args) -> int:
    retriever = make_retriever(args.retriever, _corpus(args), threshold=_threshold(args), model=args.encoder)
    results = retriever.search(args.queries, args.k)
    if args.json:
        write_json(args.json, [{"query": q, "hits": [[h.passage_id, h.score] for h in hits]}
                               for q, hits in zip(args.queries, results)])
        print(f"wrote {args.json}")
    console = Console()
    for query, hits in zip(args.queries, results):
        t = Table(title=query)
        t.add_column("rank", justify="right")
        t.add_column("passage")
        t.add_column("score", justify="right")
        t.add_column("text")
        for i, h in enumerate(hits, start=1):
            t.add_row(str(i), h.passage_id, f"{h.score:.4f}", retriever.corpus.text_of(h.passage_id)[:90].replace("\n", " "))
        console.print(t)
    return 0


def _common(p: argparse.ArgumentParser, *, retriever_default: str | None = "bm25") -> None:
    p.add_argument("--retriever", default=retriever_default, choices=RETRIEVERS)
    p.add_argument("--encoder", default=None,
                   help="sentence-transformers model name or folder for dense/hybrid (default: embedded all-MiniLM-L6-v2)")
    p.add_argument("--threshold", type=float, default=None,
                   help="drop hits scoring below this (BM25 score, cosine similarity, or RRF score)")
    p.add_argument("--corpus", default=None,
                   help="JSONL of {passage_id, text} to search instead of the shipped documentation corpus")


def register(sub: argparse._SubParsersAction) -> None:
    group = sub.add_parser("retrieval", help="retrievers, retrieval consistency, end-to-end tasks, decomposition")
    rsub = group.add_subparsers(dest="retrieval_command", required=True, metavar="ACTION")

    p = rsub.add_parser("eval", help="retrieval consistency (Jaccard@k, RBO, gold recall@k) per variant type")
    _common(p)
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--split", default="test", help="train, dev or test (default test)")
    p.add_argument("--data", default=None, help="a data JSONL instead of a shipped split")
    p.add_argument("--rbo-p", type=float, default=RBO_P, help=f"RBO persistence p (default {RBO_P})")
    add_json_option(p, help=f"output JSON (default {DEFAULT_OUT}/<retriever>_k<k>_<split>.json)")
    p.set_defaults(func=cmd_eval)

    p = rsub.add_parser("build", help="precompute retrieval for the consistency_e2e_* lm-eval tasks")
    p.add_argument("--retrievers", default="bm25,dense,hybrid")
    p.add_argument("--k", type=int, default=5, help="passages kept per question (tasks use up to this many)")
    p.add_argument("--encoder", default=None, help="sentence-transformers model for dense/hybrid (default: embedded MiniLM)")
    p.add_argument("--threshold", type=float, default=None, help="drop hits scoring below this")
    p.add_argument("--data", default=None, help="test JSONL (default: the shipped test split)")
    p.add_argument("--corpus", default=None, help="JSONL of {passage_id, text} (default: the shipped corpus)")
    add_output_option(p, required=False, metavar="DIR", help="folder of the precomputed retrieval (default: the shipped data/retrieval/)")
    p.set_defaults(func=cmd_build)

    p = rsub.add_parser("decompose", help="consistency with gold vs retrieved contexts for one model, and why")
    p.add_argument("--retriever", default="hybrid", choices=("bm25", "dense", "hybrid"))
    p.add_argument("--subset", default="mini", choices=("mini", "all"),
                   help="mini: consistency_mini + consistency_e2e_<r>_mini; all: the full test split")
    p.add_argument("--model", default=None, help="lm-eval model type (default: consistbench-hf, see consistbench eval)")
    p.add_argument("--model-args", default=None, help="lm-eval model args (default: the embedded SmolLM2)")
    p.add_argument("--batch-size", default=8)
    add_trust_remote_code(p)
    p.add_argument("--limit", type=int, default=None,
                   help="only the first N rows of each task (rows are stored group by group, original first, so "
                        "N at a group boundary keeps whole groups): for a quick look on a slow machine")
    p.add_argument("--gold-samples", default=None, help="use this samples JSONL (fixed contexts) instead of running")
    p.add_argument("--retrieved-samples", default=None, help="use this samples JSONL (an e2e task) instead of running")
    p.add_argument("--by", default="rs", choices=("rs", "em"), help="what makes a pair inconsistent (default rs)")
    add_output_option(p, required=False, default=str(DEFAULT_OUT / "decompose"), metavar="DIR",
                      help=f"folder for the report JSON, Markdown and PNG (default {DEFAULT_OUT / 'decompose'})")
    add_score_options(p)
    p.set_defaults(func=cmd_decompose)

    p = rsub.add_parser("search", help="show what a retriever returns for some queries")
    _common(p)
    p.add_argument("queries", nargs="+")
    p.add_argument("--k", type=int, default=5)
    add_json_option(p, help="also write the hits per query to FILE")
    p.set_defaults(func=cmd_search)

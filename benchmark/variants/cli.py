"""``consistbench variants``: query variants of users' own questions (:mod:`consistbench.benchmark.variants`)."""

from __future__ import annotations

import argparse

from rich.progress import Progress

from consistbench.benchmark.cli import add_output_option, add_trust_remote_code
from consistbench.benchmark.errors import ConsistbenchError
from consistbench.benchmark.fileio import read_jsonl, strip_line_numbers, write_jsonl
from consistbench.benchmark.schema import group_id_for, row_id_for
from consistbench.benchmark.variants.generate import generate_variants
from consistbench.benchmark.variants.paraphrase import make_paraphraser


def cmd_variants(args) -> int:
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


def add_paraphraser_options(p: argparse.ArgumentParser) -> None:
    """Which paraphraser proposes paraphrases (shared by ``variants`` and ``ref synth``)."""
    p.add_argument("--paraphraser", default="local_lm", choices=("local_lm", "endpoint", "wordnet"),
                   help="local_lm: a local causal LM; endpoint: an OpenAI-compatible API; wordnet: offline synonyms")
    p.add_argument("--paraphrase-model", default=None,
                   help="local_lm: model dir or hub id (default embedded SmolLM2); endpoint: model name")
    p.add_argument("--base-url", default=None, help="endpoint: base URL of an OpenAI-compatible API (.../v1)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("variants", help="generate query variants for your own questions")
    p.add_argument("input", help="JSONL with a 'question' per line (other fields are copied)")
    add_output_option(p, help="output JSONL: originals followed by their variants")
    p.add_argument("--types", default="how_to,plural_article,paraphrase",
                   help="comma-separated variant types: how_to, plural_article, paraphrase, and the noise families "
                        "typo, surface (default how_to,plural_article,paraphrase)")
    p.add_argument("--n", type=int, default=1, help="variants per question and type (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generators (default 0)")
    add_paraphraser_options(p)
    add_trust_remote_code(p)
    p.set_defaults(func=cmd_variants)

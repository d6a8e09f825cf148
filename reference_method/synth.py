"""``consistbench ref synth``: synthetic training variants of the train split's questions.

For every original question of the train split, up to ``n`` variants of each requested type
from the benchmark's own generators (:func:`consistbench.benchmark.variants.generate.generate_variants`:
rule-based ``how_to`` and ``plural_article``, ``paraphrase`` from a pluggable paraphraser), each
passing the audit's filters (non-empty, differs, a real variant of its type, meaning kept).
Then:

- deduplicated: a variant equal (after :func:`consistbench.benchmark.text.normalise_question`) to another
  query of its group is dropped, whatever its type; a (question, passage) pair already in
  another group is dropped;
- held out: a train row whose passage (by id, or by its text) appears in any held-out file (the
  dev and test splits by default) is refused, so synthetic data never touches evaluation passages.

The output is a data file in the benchmark schema (``consistbench data validate`` accepts it)
and loads with ``datasets.load_dataset("json", data_files=...)``. Every row carries its
provenance in flat columns (one schema for every row): ``generator`` (``original``,
``rules:how_to``, ``rules:plural_article`` or the paraphrase backend's name), ``settings`` (the
generator's settings as a JSON string), ``seed`` and ``cosine`` (encoder similarity to the
original; 1.0 for originals).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from consistbench.benchmark.databuild import DATA_DIR
from consistbench.benchmark.errors import ConsistbenchError
from consistbench.benchmark.fileio import write_jsonl
from consistbench.benchmark.schema import check_groups, load_data, parse_row, row_id_for
from consistbench.benchmark.text import normalise_question
from consistbench.benchmark.variants import VARIANT_TYPES, generate

SYNTH_COLUMNS = ("generator", "settings", "seed", "cosine")


def default_train_file() -> Path:
    return DATA_DIR / "train.jsonl"


def default_holdout_files() -> list[Path]:
    return [DATA_DIR / "dev.jsonl", DATA_DIR / "test.jsonl"]


def normalise_passage(text: str) -> str:
    """A passage's text as held-out passages are compared (whitespace collapsed): a train passage
    equal to a dev or test passage in this form is refused (``ref synth``, ``ref prefs``)."""
    return " ".join(text.split())


def outside_holdout(rows: Sequence, holdout: tuple[set[str], set[str]]) -> list:
    """The rows whose passage is in no held-out file, by passage id or by text
    (:func:`normalise_passage`); ``holdout`` is what :func:`load_holdout` returns."""
    hold_ids, hold_texts = holdout
    return [r for r in rows if r.passage_id not in hold_ids and normalise_passage(r.context) not in hold_texts]


@dataclass
class SynthStats:
    originals: int = 0
    refused_holdout: int = 0
    variants: dict = field(default_factory=dict)
    duplicates: int = 0
    ignored_variant_rows: int = 0


def load_holdout(paths: Sequence[str | Path]) -> tuple[set[str], set[str]]:
    """Passage ids and normalised passage texts of every held-out file."""
    ids: set[str] = set()
    texts: set[str] = set()
    for path in paths:
        if not Path(path).is_file():
            raise ConsistbenchError(f"{path}: held-out file not found (synth refuses to run without the dev/test "
                                    "passages to exclude; build the data or pass --holdout)")
        for row in load_data(path):
            ids.add(row.passage_id)
            texts.add(normalise_passage(row.context))
    return ids, texts


def synthesize(rows: Sequence, *, types: Sequence[str] = VARIANT_TYPES, n: int = 1, seed: int = 0,
               paraphraser=None, holdout: tuple[set[str], set[str]] = (set(), set()), limit: int | None = None,
               encoder: str | None = None, progress: Callable[[str, int], None] | None = None
               ) -> tuple[list[dict], SynthStats]:
    """Synthetic rows (originals then their variants, group by group) and what happened to the input."""
    if n < 1:
        raise ConsistbenchError(f"n must be at least 1, got {n}")
    unknown = [t for t in types if t not in VARIANT_TYPES]
    if unknown or not types:
        raise ConsistbenchError(f"unknown variant type {unknown[0] if unknown else ''!r} "
                                f"(expected some of {', '.join(VARIANT_TYPES)})")
    stats = SynthStats()
    for row in rows:
        if row.split != "train":
            raise ConsistbenchError(f"{row.id}: split {row.split!r}; synthetic data is made from the train split only")
    originals = [r for r in rows if r.variant_type == "original"]
    stats.ignored_variant_rows = len(rows) - len(originals)
    kept = outside_holdout(originals, holdout)
    stats.refused_holdout = len(originals) - len(kept)
    if limit is not None and limit < len(kept):
        chosen = set(random.Random(seed).sample(sorted(r.group_id for r in kept), limit))
        kept = [r for r in kept if r.group_id in chosen]
    if not kept:
        raise ConsistbenchError("no train questions left to make variants of"
                                + (f" ({stats.refused_holdout} refused: passage in a held-out split)"
                                   if stats.refused_holdout else ""))
    variants = generate.generate_variants([r.question for r in kept], list(types), n=n, seed=seed, paraphraser=paraphraser,
                                 encoder=encoder, progress=progress)
    by_index: dict[int, list] = {}
    for v in variants:
        by_index.setdefault(v.index, []).append(v)
    out: list[dict] = []
    seen_pairs: set[tuple[str, str]] = set()
    stats.variants = {t: 0 for t in types}
    for i, row in enumerate(kept):
        base = row.to_json()
        key = (normalise_question(row.question), row.passage_id)
        if key in seen_pairs:
            stats.duplicates += 1
            continue
        seen_pairs.add(key)
        out.append(base | {"generator": "original", "settings": "{}", "seed": seed, "cosine": 1.0})
        seen_in_group = {normalise_question(row.question)}
        counts: dict[str, int] = {}
        for v in by_index.get(i, []):
            norm = normalise_question(v.question)
            if norm in seen_in_group or (norm, row.passage_id) in seen_pairs:
                stats.duplicates += 1
                continue
            seen_in_group.add(norm)
            seen_pairs.add((norm, row.passage_id))
            counts[v.variant_type] = counts.get(v.variant_type, 0) + 1
            stats.variants[v.variant_type] += 1
            backend = v.generator.get("backend")
            generator = backend if isinstance(backend, str) else (backend or {}).get("name", "paraphrase")
            settings = {} if isinstance(backend, str) else dict(backend or {})
            out.append(base | {"id": row_id_for(row.group_id, v.variant_type, counts[v.variant_type]),
                               "variant_type": v.variant_type, "question": v.question, "generator": generator,
                               "settings": json.dumps(settings, sort_keys=True), "seed": v.generator.get("seed", seed),
                               "cosine": float(v.cosine)})
        stats.originals += 1
    return out, stats


def synthesize_file(train: str | Path, output: str | Path, *, holdout: Sequence[str | Path] | None = None,
                    **kwargs) -> SynthStats:
    """Read ``train``, synthesise, validate the result against the schema, write ``output`` atomically."""
    if Path(output).resolve() in {Path(p).resolve() for p in [train, *(holdout or [])]}:
        raise ConsistbenchError(f"{output}: the output would overwrite an input")
    rows = load_data(train)
    held = load_holdout(default_holdout_files() if holdout is None else holdout)
    out, stats = synthesize(rows, holdout=held, **kwargs)
    parsed = [parse_row(dict(r, __line__=i), f"{output}:{i}") for i, r in enumerate(out, start=1)]
    check_groups(parsed, str(output))
    write_jsonl(output, out)
    return stats

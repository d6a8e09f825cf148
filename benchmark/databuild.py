"""Build the shipped benchmark data from the documentation and the authored questions.

Inputs
    - the Python 3.11 documentation (``consistbench data fetch``), cut into passages by
      :mod:`consistbench.benchmark.corpus`;
    - ``tasks/consistency/data/authored/*.jsonl``: hand-written items, one per line:
      ``passage_id``, ``question``, ``reference``, ``origin`` (``faq``: the FAQ's own question,
      verbatim; ``written``: ours) and, for test/dev items, the hand-written variants
      ``how_to``, ``plural_article``, ``paraphrase``.
Outputs (in ``tasks/consistency/data/``)
    ``train.jsonl``, ``dev.jsonl``, ``test.jsonl`` (schema in :mod:`consistbench.benchmark.schema`),
    ``mini_groups.txt`` (the whole test groups that make up ``consistency_mini``),
    ``versions.json`` (per-split checksums: the data version) and ``stats.json``.

Splits are assigned per *unit*, not per passage: a documentation page's top-level section
(``page > section``), or for FAQ pages the single question. Each unit goes to a split by a
salted SHA-256 of its name, so no passage and no closely related sibling passage crosses
splits, and the assignment never depends on order or on which other units exist.
"""

from __future__ import annotations

import hashlib
import json
import random
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

from consistbench.benchmark import corpus
from consistbench.benchmark.errors import ConsistbenchError, DataError
from consistbench.benchmark.fileio import read_jsonl, write_json, write_jsonl, write_text
from consistbench.benchmark.paths import DATA_DIR
from consistbench.benchmark.schema import SPLITS, data_checksum, group_id_for, row_id_for
from consistbench.benchmark.variants import VARIANT_TYPES

AUTHORED_DIR = DATA_DIR / "authored"
SPLIT_SALT = "consistbench-split-v1"
# Per-mille thresholds: FAQ questions favour test (they are the most natural questions).
SPLIT_SHARES = {"faq": (600, 700), "default": (420, 520)}  # test below the first, dev below the second
MINI_GROUPS_PER_TYPE = 20
MINI_SEED = 20261122


def unit_of(passage: corpus.Passage) -> str:
    if passage.kind == "faq":
        return passage.passage_id.split("~")[0]
    crumbs = passage.breadcrumb.split(" > ")
    return passage.doc + "|" + " > ".join(crumbs[:2])


def split_of(passage: corpus.Passage) -> str:
    h = int(hashlib.sha256(f"{SPLIT_SALT}|{unit_of(passage)}".encode()).hexdigest(), 16) % 100
    test_below, dev_below = SPLIT_SHARES["faq" if passage.kind == "faq" else "default"]
    return "test" if h * 10 < test_below else ("dev" if h * 10 < dev_below else "train")


def load_authored(directory: Path = AUTHORED_DIR) -> list[dict]:
    files = sorted(directory.glob("*.jsonl"))
    if not files:
        raise ConsistbenchError(f"{directory}: no authored *.jsonl files")
    items = []
    for path in files:
        for obj in read_jsonl(path):
            obj["__where__"] = f"{path.name}:{obj.pop('__line__')}"
            items.append(obj)
    return items


def build_rows(items: list[dict], passages: dict[str, corpus.Passage]) -> dict[str, list[dict]]:
    """Turn authored items into data rows per split (originals first, variants after)."""
    rows: dict[str, list[dict]] = {s: [] for s in SPLITS}
    seen_groups: dict[str, str] = {}
    for item in sorted(items, key=lambda it: (it.get("passage_id", ""), it.get("question", ""))):
        where = item["__where__"]
        for key in ("passage_id", "question", "reference", "origin"):
            if not isinstance(item.get(key), str) or not item[key].strip():
                raise DataError(f"{where}: missing or empty {key!r}")
        passage = passages.get(item["passage_id"])
        if passage is None:
            raise DataError(f"{where}: passage {item['passage_id']!r} is not in the corpus")
        split = split_of(passage)
        gid = group_id_for(passage.passage_id, item["question"])
        if gid in seen_groups:
            raise DataError(f"{where}: the same question on the same passage as {seen_groups[gid]}")
        seen_groups[gid] = where
        common = {"split": split, "context": passage.text, "reference": item["reference"].strip(),
                  "passage_id": passage.passage_id, "source": passage.url}
        extra = {"origin": item["origin"], "doc_kind": passage.kind}
        rows[split].append({"id": row_id_for(gid, "original"), "group_id": gid, "variant_type": "original",
                            "question": item["question"].strip(), **common, **extra})
        if split == "train":
            if any(k in item for k in VARIANT_TYPES):
                raise DataError(f"{where}: train items take no hand-written variants")
            continue
        for vtype in VARIANT_TYPES:
            text = item.get(vtype)
            if text is None:
                continue
            if not isinstance(text, str) or not text.strip():
                raise DataError(f"{where}: {vtype!r} must be a non-empty string")
            rows[split].append({"id": row_id_for(gid, vtype), "group_id": gid, "variant_type": vtype,
                                "question": text.strip(), **common, **extra})
    return rows


def choose_mini(test_rows: list[dict], per_type: int = MINI_GROUPS_PER_TYPE, seed: int = MINI_SEED) -> list[str]:
    """Whole test groups for ``consistency_mini``: enough groups that every variant type has
    ``per_type`` pairs, drawn in a seeded order (never cut by position)."""
    types_of: dict[str, set[str]] = defaultdict(set)
    for r in test_rows:
        if r["variant_type"] != "original":
            types_of[r["group_id"]].add(r["variant_type"])
    order = sorted(types_of)
    random.Random(seed).shuffle(order)
    chosen, have = [], Counter()
    for gid in order:
        if all(have[t] >= per_type for t in VARIANT_TYPES):
            break
        if any(have[t] < per_type for t in types_of[gid]):
            chosen.append(gid)
            have.update(types_of[gid])
    return sorted(chosen)


def statistics(rows: dict[str, list[dict]], mini: list[str]) -> dict:
    def quantiles(values):
        values = sorted(values)
        if not values:
            return {}
        pick = lambda q: values[min(len(values) - 1, int(q * (len(values) - 1) + 0.5))]  # noqa: E731
        return {"min": values[0], "p10": pick(0.1), "median": pick(0.5), "p90": pick(0.9), "max": values[-1]}

    out = {}
    for split, rs in rows.items():
        originals = [r for r in rs if r["variant_type"] == "original"]
        out[split] = {
            "rows": len(rs),
            "groups": len(originals),
            "variants": dict(sorted(Counter(r["variant_type"] for r in rs if r["variant_type"] != "original").items())),
            "doc_kind": dict(sorted(Counter(r["doc_kind"] for r in originals).items())),
            "origin": dict(sorted(Counter(r["origin"] for r in originals).items())),
            "passages": len({r["passage_id"] for r in rs}),
            "reference_words": quantiles([len(r["reference"].split()) for r in originals]),
            "question_words": quantiles([len(r["question"].split()) for r in originals]),
            "context_words": quantiles([len(r["context"].split()) for r in originals]),
        }
    out["mini"] = {"groups": len(mini)}
    return out


def build(html_dir: str | Path | None = None, out_dir: str | Path | None = None, check_only: bool = False) -> dict:
    """Build (or with ``check_only`` rebuild and compare) the shipped data; returns statistics."""
    html = Path(html_dir) if html_dir else corpus.fetch()
    version = corpus.installed_version(html.parents[len(corpus.HTML_SUBDIR.parts) - 1]) if not html_dir else None
    if version and version != corpus.DEB_VERSION:
        print(f"warning: documentation {version} differs from {corpus.DEB_VERSION} the data was built from")
    passages = {p.passage_id: p for p in corpus.iter_passages(html)}
    rows = build_rows(load_authored(), passages)
    mini = choose_mini(rows["test"])
    target = Path(out_dir) if out_dir else DATA_DIR
    if check_only:
        with tempfile.TemporaryDirectory() as tmp:
            _write(rows, mini, Path(tmp))
            diffs = [name for name in ("train.jsonl", "dev.jsonl", "test.jsonl", "mini_groups.txt", "versions.json")
                     if (Path(tmp) / name).read_bytes() != (target / name).read_bytes()]
        if diffs:
            raise ConsistbenchError(f"rebuilt data differs from {target}: {', '.join(diffs)}")
        print(f"rebuilt data is identical to {target}")
        return statistics(rows, mini)
    stats = _write(rows, mini, target)
    if target.resolve() == DATA_DIR.resolve():
        stamp_task_metadata(json.loads((target / "versions.json").read_text())["test"]["sha256"])
    for split in SPLITS:
        s = stats[split]
        print(f"{split}: {s['groups']} groups, {s['rows']} rows, variants {s['variants']}")
    return stats


def _validated(rows: dict[str, list[dict]]) -> dict[str, list]:
    """Parse every built row with the schema and check group rules, before anything is written."""
    from consistbench.benchmark.schema import check_groups, parse_row

    parsed = {}
    for split in SPLITS:
        objs = [dict(r, __line__=i) for i, r in enumerate(rows[split], start=1)]
        parsed[split] = [parse_row(o, f"{split}.jsonl:{o['__line__']}") for o in objs]
        check_groups(parsed[split], f"{split}.jsonl")
    check_groups([r for split in SPLITS for r in parsed[split]], "all splits")  # passages never cross splits
    return parsed


def _write(rows: dict[str, list[dict]], mini: list[str], target: Path) -> dict:
    """Write every output into a temporary directory, then move the files into ``target``."""
    import os

    parsed = _validated(rows)
    versions = {split: {"rows": len(parsed[split]), "sha256": data_checksum(parsed[split])} for split in SPLITS}
    mini_set = set(mini)
    mini_rows = [r for r in parsed["test"] if r.group_id in mini_set]
    versions["mini"] = {"rows": len(mini_rows), "sha256": data_checksum(mini_rows)}
    stats = statistics(rows, mini)
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target) as tmp:
        tmp = Path(tmp)
        for split in SPLITS:
            write_jsonl(tmp / f"{split}.jsonl", rows[split])
        write_text(tmp / "mini_groups.txt", "".join(g + "\n" for g in mini))
        write_json(tmp / "versions.json", versions)
        write_json(tmp / "stats.json", stats)
        for f in sorted(tmp.iterdir()):
            os.replace(f, target / f.name)
    return stats


TASK_TEMPLATE = DATA_DIR.parent / "_default_template_yaml"


def stamp_task_metadata(test_sha256: str, template: Path = TASK_TEMPLATE) -> None:
    """Record the test split's checksum as ``metadata.data_sha256`` in the tasks' template."""
    import re

    text = template.read_text()
    new, n = re.subn(r"(?m)^(  data_sha256: ).*$", lambda m: m.group(1) + test_sha256, text)
    if n != 1:
        raise ConsistbenchError(f"{template}: expected one 'data_sha256:' line under metadata")
    if new != text:
        write_text(template, new)


def passages_json(html_dir: Path) -> list[dict]:  # pragma: no cover - a debugging aid
    return [p.to_json() for p in corpus.iter_passages(html_dir)]


if __name__ == "__main__":  # pragma: no cover
    print(json.dumps(build(), indent=2))

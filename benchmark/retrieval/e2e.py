"""Precomputed retrieval for the end-to-end lm-eval tasks (``consistency_e2e_*``).

``consistbench retrieval build`` runs each retriever once over every test question and writes,
under ``tasks/consistency/data/retrieval/``:

- ``<retriever>.jsonl.gz``: per test row, ``{"id", "passage_ids", "scores"}`` (top ``k``, best first);
- ``passages.jsonl.gz``: the text of every passage any of them retrieved;
- ``manifest.json``: the test split's checksum (the data version), the corpus checksum, ``k``,
  each retriever's configuration and the sha256 of every file.

``tasks/consistency/utils.load`` calls :func:`apply_retrieval` for a task with a ``retriever``
keyword: the row's ``context`` becomes its top-``k`` passages joined by a blank line, best
first (with k = 1 and the gold passage on top the prompt is exactly the fixed-context prompt).
Nothing needs the corpus, the index or an encoder at evaluation time, so a plain
``lm_eval --include_path tasks`` works offline, and a data or file change is refused rather than
silently mixed (:class:`RetrievalVersionError`). Files are gzip with a zero timestamp, so a
rebuild from the same inputs gives the same bytes.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import json
from collections.abc import Sequence
from pathlib import Path

from rich.progress import Progress

from consistbench.benchmark.errors import ConsistbenchError
from consistbench.benchmark.fileio import atomic_path
from consistbench.benchmark.paths import DATA_DIR
from consistbench.benchmark.retrieval import docs_corpus, make_retriever
from consistbench.benchmark.schema import data_checksum, load_data

RETRIEVAL_DIR = DATA_DIR / "retrieval"
MANIFEST = "manifest.json"
PASSAGES = "passages.jsonl.gz"
DEFAULT_K = 5
SEPARATOR = "\n\n"


class RetrievalVersionError(ConsistbenchError):
    """Precomputed retrieval that does not belong to the data (or whose files changed)."""


def _gzip_jsonl(records) -> bytes:
    raw = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in records).encode("utf-8")
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as fh:
        fh.write(raw)
    return buf.getvalue()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def build(retrievers: Sequence[str] = ("bm25", "dense", "hybrid"), k: int = DEFAULT_K,
          out_dir: str | Path | None = None, data_path: str | Path | None = None,
          threshold: float | None = None, model: str | None = None, batch_size: int = 256,
          corpus=None, index_root=None) -> dict:
    """Retrieve for every row of the test split with each retriever; write the files atomically."""
    out_dir = Path(out_dir) if out_dir else RETRIEVAL_DIR
    data_path = Path(data_path) if data_path else DATA_DIR / "test.jsonl"
    rows = load_data(data_path)
    corpus = corpus if corpus is not None else docs_corpus()
    files: dict[str, bytes] = {}
    manifest = {"data_sha256": data_checksum(rows), "data_file": data_path.name, "rows": len(rows), "k": k,
                "corpus": {"name": corpus.name, "passages": len(corpus), "sha256": corpus.checksum},
                "separator": SEPARATOR, "retrievers": {}}
    used: set[str] = set()
    with Progress() as bar:
        for name in retrievers:
            retriever = make_retriever(name, corpus, threshold=threshold, model=model, index_root=index_root)
            task = bar.add_task(f"retrieving ({name})", total=len(rows))
            results = []
            for start in range(0, len(rows), batch_size):
                chunk = rows[start:start + batch_size]
                for row, hits in zip(chunk, retriever.search([r.question for r in chunk], k)):
                    results.append({"id": row.id, "passage_ids": [h.passage_id for h in hits],
                                    "scores": [round(h.score, 6) for h in hits]})
                    used.update(h.passage_id for h in hits)
                bar.advance(task, len(chunk))
            fname = f"{name}.jsonl.gz"
            files[fname] = _gzip_jsonl(sorted(results, key=lambda r: r["id"]))
            manifest["retrievers"][name] = {"file": fname, "sha256": _sha256(files[fname]),
                                            "config": retriever.describe()}
    files[PASSAGES] = _gzip_jsonl({"passage_id": pid, "text": corpus.text_of(pid)} for pid in sorted(used))
    manifest["passages"] = {"file": PASSAGES, "sha256": _sha256(files[PASSAGES]), "count": len(used)}
    out_dir.mkdir(parents=True, exist_ok=True)
    old = _read_manifest(out_dir) or {}
    for name, entry in old.get("retrievers", {}).items():  # keep retrievers this build did not redo
        if name not in manifest["retrievers"] and old.get("data_sha256") == manifest["data_sha256"] \
                and old.get("k") == k and (out_dir / entry["file"]).is_file():
            raise ConsistbenchError(f"{out_dir}: already holds retriever {name!r}; rebuild all of "
                                    f"{', '.join(sorted({*old['retrievers'], *retrievers}))} together")
    for fname, data in files.items():
        with atomic_path(out_dir / fname) as tmp:
            tmp.write_bytes(data)
    with atomic_path(out_dir / MANIFEST) as tmp:  # last: the manifest vouches for the files above
        tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    _load_dir.cache_clear()
    return manifest


def _read_manifest(directory: Path) -> dict | None:
    try:
        return json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _read_checked(path: Path, sha256: str) -> list[dict]:
    if not path.is_file():
        raise RetrievalVersionError(f"{path}: missing; run `consistbench retrieval build`")
    data = path.read_bytes()
    if _sha256(data) != sha256:
        raise RetrievalVersionError(f"{path}: sha256 {_sha256(data)[:16]}... differs from the manifest's "
                                    f"{sha256[:16]}...; run `consistbench retrieval build`")
    return [json.loads(line) for line in gzip.decompress(data).decode("utf-8").splitlines() if line.strip()]


@functools.lru_cache(maxsize=8)
def _load_dir(directory: str, retriever: str, data_sha256: str):
    directory = Path(directory)
    manifest = _read_manifest(directory)
    if manifest is None:
        raise RetrievalVersionError(f"{directory / MANIFEST}: missing or unreadable; run `consistbench retrieval build`")
    if manifest.get("data_sha256") != data_sha256:
        raise RetrievalVersionError(
            f"{directory}: retrieval was precomputed for test data {str(manifest.get('data_sha256'))[:16]}..., "
            f"but the test data is {data_sha256[:16]}...: run `consistbench retrieval build`")
    entry = manifest.get("retrievers", {}).get(retriever)
    if entry is None:
        raise RetrievalVersionError(f"{directory}: no precomputed retrieval for {retriever!r} "
                                    f"(have: {', '.join(sorted(manifest.get('retrievers', {}))) or 'none'})")
    ranked = {r["id"]: r["passage_ids"] for r in _read_checked(directory / entry["file"], entry["sha256"])}
    texts = {p["passage_id"]: p["text"] for p in _read_checked(directory / manifest["passages"]["file"],
                                                               manifest["passages"]["sha256"])}
    return manifest, ranked, texts


def retrieved_ids(retriever: str, data_sha256: str, directory: str | Path | None = None) -> dict[str, list[str]]:
    """Row id -> ranked passage ids (top ``manifest k``) from the precomputed files."""
    return _load_dir(str(directory or RETRIEVAL_DIR), retriever, data_sha256)[1]


def apply_retrieval(records: list[dict], retriever: str, k: int, data_sha256: str,
                    directory: str | Path | None = None) -> list[dict]:
    """Replace each record's ``context`` by its top-``k`` retrieved passages (and note which)."""
    manifest, ranked, texts = _load_dir(str(directory or RETRIEVAL_DIR), retriever, data_sha256)
    if not 1 <= int(k) <= manifest["k"]:
        raise RetrievalVersionError(f"retrieval_k={k}: the precomputed files hold the top {manifest['k']} "
                                    f"(rebuild with `consistbench retrieval build --k {k}`)")
    out = []
    for rec in records:
        ids = ranked.get(rec["id"])
        if ids is None:
            raise RetrievalVersionError(f"row {rec['id']!r} has no precomputed retrieval; run `consistbench retrieval build`")
        ids = ids[:int(k)]
        out.append({**rec, "context": SEPARATOR.join(texts[p] for p in ids), "retrieved_ids": list(ids),
                    "retriever": retriever, "gold_retrieved": rec["passage_id"] in ids})
    return out

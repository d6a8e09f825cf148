"""Consistency-aware merge weights: how close each fine-tune's layer geometry is to a sentence encoder's.

For the base model and each fine-tuned model k, every dev query is run through the model with
the benchmark's prompt (:func:`consistbench.benchmark.prompting.prompt_text`, wrapped in the chat template
when the tokenizer has one, as ``consistbench eval`` does). At each *row* of the network

- ``embed``: the output of the token embeddings,
- ``0 .. L-1``: the output of decoder layer l,
- ``final``: the output of the final norm (what ``lm_head`` reads),

the hidden states of the *query tokens* (the characters :func:`consistbench.benchmark.prompting.question_span`
gives) are pooled into one vector per query (``pooling``: ``mean`` by default, or ``last``) and
L2-normalised. The per-row cosine similarity matrix over the N queries is ``S_k^l`` (N x N). The
reference ``S_r`` is the cosine similarity of the sentence encoder's embeddings of the bare
questions (the embedded all-MiniLM-L6-v2 by default). Then

    d_k^l = distance(S_k^l, S_r)
    w_k^l = total * normalise_k(d_k^l)       smaller distance -> larger weight; sum_k w_k^l = total

``distance`` (what is compared; docs/MERGING.md says why each exists):

- ``paper`` (default): ``norm(S_k - S_r)`` over the off-diagonal entries, the paper's |S_k^l - S_r|.
  An LM's similarities share a large offset (anisotropy), so this is mostly mean(S_k) - mean(S_r).
- ``centered``: both matrices double-centred (``H S H``, ``H = I - 11'/N``: the Gram matrix of the
  mean-centred representations) and scaled to unit RMS over the off-diagonal entries, then
  ``norm`` of the difference: invariant to ``S -> a S + c`` (``a > 0``).
- ``cka``: ``1 - `` linear CKA (Kornblith et al., 2019) from the two Gram matrices,
  ``<H S_k H, H S_r H>_F / (||H S_k H||_F ||H S_r H||_F)``; 0 for identical representations.
- ``within_group``: ``norm(S_k - S_r)`` over the pairs of queries of the same dev group only.

``norm`` (``mean_abs`` default, ``frobenius``, ``max_abs``) is for ``paper``, ``centered`` and
``within_group``. Every kind that can be computed is kept per row and model in the file
(``all_distances``); the weights use ``distance``. The other options are the fields of
:class:`~consistbench.reference_method.weights_file.WeightsOptions` (meaning and defaults there
and in docs/MERGING.md); all are recorded in the file and the merged model's card.

Memory: the dev set streams in batches and forward hooks pool each batch at once; per model only
the pooled vectors (N x hidden per row) live until its ``S`` is built, then only N x N matrices.

The file this writes (format, options model, reading and checking it) is
:mod:`consistbench.reference_method.weights_file`; its heatmap, :mod:`.weights_chart`.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from consistbench.benchmark import __version__
from consistbench.benchmark.embedded import encode
from consistbench.benchmark.errors import ConsistbenchError, DataError
from consistbench.benchmark.fileio import atomic_path, read_jsonl
from consistbench.benchmark.prompting import prompt_text, question_span
from consistbench.reference_method.merge.checks import check_models
from consistbench.reference_method.merge.io import LazyModel
from consistbench.reference_method.merge.layout import assign, layout_for, model_modules, num_layers
from consistbench.reference_method.weights_chart import plot_heatmap
from consistbench.reference_method.weights_file import (
    DISTANCE_KINDS,
    FORMAT,
    FORMAT_VERSION,
    WeightsOptions,
    row_keys,
    row_label,
    save_weights,
)

DEFAULT_DEV = Path(__file__).resolve().parents[1] / "tasks" / "consistency" / "data" / "dev.jsonl"


# ---------------------------------------------------------------------------------------------
# dev queries

@dataclass(frozen=True)
class Query:
    context: str
    question: str
    group: str = ""  # the dev row's group_id (an original and its variants): the within_group distance


def load_queries(dev: str | Path | Sequence[dict], max_queries: int | None = None) -> list[Query]:
    """Dev queries (``question`` + ``context`` per row), whole groups in file order up to ``max_queries``."""
    if isinstance(dev, (str, Path)):
        where = str(dev)
        rows = read_jsonl(dev)
    else:
        where, rows = "dev rows", [dict(r, __line__=i + 1) for i, r in enumerate(dev)]
    groups: dict[str, list[Query]] = {}
    for r in rows:
        for key in ("question", "context"):
            if not isinstance(r.get(key), str) or not r[key].strip():
                raise DataError(f"{where}:{r.get('__line__', '?')}: missing or empty field {key!r}")
        gid = str(r.get("group_id") or r.get("id") or len(groups))
        groups.setdefault(gid, []).append(Query(r["context"], r["question"], gid))
    queries: list[Query] = []
    for members in groups.values():
        if max_queries and len(queries) + len(members) > max_queries:
            if not queries:
                queries = members[:max_queries]
            break
        queries.extend(members)
    if len(queries) < 2:
        raise ConsistbenchError(f"{where}: need at least 2 dev queries, got {len(queries)}")
    return queries


def queries_digest(queries: Sequence[Query]) -> str:
    h = hashlib.sha256()
    for q in queries:
        h.update(q.context.encode() + b"\0" + q.question.encode() + b"\n")
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# similarity matrices

def _render(tokenizer, q: Query, chat_template: bool) -> tuple[str, tuple[int, int], bool]:
    """Text to tokenize, the question's character span in it, and whether to add special tokens."""
    text = prompt_text(q.context, q.question)
    start, end = question_span(q.context, q.question)
    if chat_template and getattr(tokenizer, "chat_template", None):
        rendered = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                 add_generation_prompt=True)
        at = rendered.find(text)
        if at < 0:
            raise ConsistbenchError("the chat template changes the prompt text; use chat_template=False")
        return rendered, (at + start, at + end), False
    return text, (start, end), True


def _decoder_parts(model):
    """(inner model, embeddings, decoder blocks, final norm) of a causal LM, by its architecture's
    layout (:mod:`consistbench.reference_method.merge.layout`: the same table the merge assigns
    tensors by, so row l is measured at the block whose tensors get row l's weights)."""
    inner = getattr(model, getattr(model, "base_model_prefix", "model"), None) or model
    embed, layers, norm = model_modules(model)
    return inner, embed, layers, norm


def model_similarities(model_dir: str | Path, queries: Sequence[Query], options: WeightsOptions,
                       tokenizer_dir: str | Path | None = None,
                       progress: Callable[[int, int], None] | None = None,
                       threads: int | None = None, device: str | None = None,
                       dtype: str = "float32") -> dict[str, np.ndarray]:
    """Per-row cosine similarity matrices (N x N, float32) of one model over the queries.
    ``device``/``dtype``: where and in which torch dtype the model runs (default: CPU, float32).

    ``threads``: torch intra-op threads for the forward passes (default: torch's own choice).
    On a machine whose cores are busy, 1 can be twice as fast as 2 (OpenMP threads spin).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if threads:
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return model_similarities(model_dir, queries, options, tokenizer_dir, progress, device=device, dtype=dtype)
        finally:
            torch.set_num_threads(previous)

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir or model_dir))
    if not getattr(tok, "is_fast", False):
        raise ConsistbenchError(f"{tokenizer_dir or model_dir}: a fast tokenizer is needed (character offsets)")
    tok.padding_side = "right"
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=getattr(torch, dtype)).to(device or "cpu")
    model.eval()
    inner, embed, layers, norm = _decoder_parts(model)
    keys = row_keys(len(layers))
    pooled: dict[str, list[torch.Tensor]] = {k: [] for k in keys}
    state: dict = {}

    def pool(key):
        def hook(_module, _inputs, output):
            h = output[0] if isinstance(output, tuple) else output
            mask = state["mask"]                                        # (B, T) float
            if options.pooling == "mean":
                v = (h.float() * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
            else:
                v = h.float()[torch.arange(h.shape[0]), state["last"]]
            pooled[key].append(torch.nn.functional.normalize(v, dim=-1).cpu())
        return hook

    handles = [embed.register_forward_hook(pool("embed")), norm.register_forward_hook(pool("final"))]
    handles += [layer.register_forward_hook(pool(str(i))) for i, layer in enumerate(layers)]
    try:
        # batches of similar length (less padding); results are put back in query order below
        rendered_all = [_render(tok, q, options.chat_template) for q in queries]
        order = sorted(range(len(queries)), key=lambda i: len(rendered_all[i][0]))
        for start in range(0, len(queries), options.batch_size):
            rendered = [rendered_all[i] for i in order[start:start + options.batch_size]]
            enc = tok([r[0] for r in rendered], return_offsets_mapping=True, padding=True, return_tensors="pt",
                      add_special_tokens=rendered[0][2])
            offsets = enc.pop("offset_mapping")                        # (B, T, 2)
            spans = torch.tensor([r[1] for r in rendered])              # (B, 2)
            s, e = offsets[..., 0], offsets[..., 1]
            mask = (e > spans[:, :1]) & (s < spans[:, 1:]) & (e > s) & enc["attention_mask"].bool()
            if not mask.any(1).all():
                raise ConsistbenchError("a query has no tokens inside its question span")
            state["mask"] = mask.float().to(model.device)
            state["last"] = (mask.shape[1] - 1 - mask.flip(1).float().argmax(1)).to(model.device)
            with torch.inference_mode():
                inner(input_ids=enc["input_ids"].to(model.device), attention_mask=enc["attention_mask"].to(model.device),
                      use_cache=False)
            if progress:
                progress(min(start + len(rendered), len(queries)), len(queries))
    finally:
        for h in handles:
            h.remove()
    del model
    inverse = torch.empty(len(order), dtype=torch.long)
    inverse[torch.tensor(order)] = torch.arange(len(order))
    out = {}
    for k in keys:
        p = torch.cat(pooled.pop(k))[inverse]                           # (N, H), unit rows, query order
        out[k] = (p @ p.T).numpy().astype(np.float32)
    return out


def reference_similarity(queries: Sequence[Query], encoder: str | None = None) -> np.ndarray:
    """S_r: cosine similarities of the sentence encoder's embeddings of the bare questions."""
    e = np.asarray(encode([q.question.strip() for q in queries], encoder), dtype=np.float64)
    return (e @ e.T).astype(np.float32)


@dataclass
class Similarities:
    """Everything the weights are computed from: S_r, S_base and each model's S, per row."""

    reference: np.ndarray
    base: dict[str, np.ndarray]
    models: list[dict[str, np.ndarray]]
    num_layers: int
    meta: dict = field(default_factory=dict)  # "dev" (path, size, sha256) and "groups" (one id per query)

    def save(self, path: str | Path) -> Path:
        arrays = {"reference": self.reference}
        arrays |= {f"base/{k}": v for k, v in self.base.items()}
        for i, m in enumerate(self.models):
            arrays |= {f"model{i}/{k}": v for k, v in m.items()}
        arrays["meta"] = np.frombuffer(json.dumps(self.meta | {"num_layers": self.num_layers}).encode(), dtype=np.uint8)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, **arrays)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> Similarities:
        path = Path(path)
        if not path.is_file():
            raise ConsistbenchError(f"{path}: no such similarities file")
        with np.load(path) as z:
            meta = json.loads(bytes(z["meta"]).decode())
            n = meta.pop("num_layers")
            keys = row_keys(n)
            k = sum(1 for name in z.files if name.endswith("/embed")) - 1
            return cls(reference=z["reference"], base={r: z[f"base/{r}"] for r in keys},
                       models=[{r: z[f"model{i}/{r}"] for r in keys} for i in range(k)], num_layers=n, meta=meta)


def collect_similarities(base: str | Path, models: Sequence[str | Path], queries: Sequence[Query],
                         options: WeightsOptions, log: Callable[[str], None] | None = None,
                         threads: int | None = None, device: str | None = None, dtype: str = "float32") -> Similarities:
    """Run the base and every model over the queries (one model in memory at a time; ``device``/``dtype``
    as in :func:`model_similarities`)."""
    log = log or (lambda _msg: None)
    t0 = time.perf_counter()
    s_ref = reference_similarity(queries, options.encoder)
    log(f"reference S_r from the sentence encoder: {len(queries)} queries, {time.perf_counter() - t0:.1f}s")
    out: list[dict[str, np.ndarray]] = []
    for i, path in enumerate([base, *models]):
        t1 = time.perf_counter()
        out.append(model_similarities(path, queries, options, tokenizer_dir=base, threads=threads, device=device, dtype=dtype))
        log(f"{'base' if i == 0 else f'model {i}'} {Path(path).name}: {time.perf_counter() - t1:.1f}s")
    n_layers = len(out[0]) - 2
    return Similarities(reference=s_ref, base=out[0], models=out[1:], num_layers=n_layers)


# ---------------------------------------------------------------------------------------------
# distances and weights

NORMS: dict[str, Callable[[np.ndarray], float]] = {
    # x: the upper-triangle (i < j) entries of a difference of symmetric matrices
    "mean_abs": lambda x: float(np.mean(np.abs(x))),
    "frobenius": lambda x: float(np.sqrt(2.0 * np.sum(np.square(x, dtype=np.float64)))),
    "max_abs": lambda x: float(np.max(np.abs(x))),
}


def double_centre(s: np.ndarray) -> np.ndarray:
    """``H S H`` with ``H = I - 11'/N``: row, column and grand means removed (float64). For a Gram
    matrix this is the Gram matrix of the representations minus their mean."""
    s = np.asarray(s, dtype=np.float64)
    return s - s.mean(axis=0, keepdims=True) - s.mean(axis=1, keepdims=True) + s.mean()


def _standardised(s: np.ndarray, iu) -> np.ndarray:
    return (c := double_centre(s)) / np.sqrt(np.mean(np.square(c[iu])))


def linear_cka(s: np.ndarray, s_ref: np.ndarray) -> float:
    """Linear CKA of two representations from their Gram matrices (Kornblith et al., 2019)."""
    a, b = double_centre(s), double_centre(s_ref)
    return float(np.sum(a * b) / np.sqrt(np.sum(a * a) * np.sum(b * b)))


def distance(s: np.ndarray, s_ref: np.ndarray, kind: str = "paper", norm: str = "mean_abs",
             groups: Sequence[str] | None = None) -> float:
    """The distance ``kind`` between a model's similarity matrix ``s`` and the reference's (module
    docstring); ``norm`` for the entrywise kinds; ``groups`` (one id per query) for ``within_group``.
    A version-1 kind (``mean_abs``, ``frobenius``, ``max_abs``) is ``paper`` with that norm."""
    if kind in NORMS:
        kind, norm = "paper", kind
    iu = np.triu_indices(s.shape[0], k=1)
    if kind == "cka":
        return 1.0 - linear_cka(s, s_ref)
    if kind == "centered":
        with np.errstate(all="ignore"):  # a constant matrix has no spread: NaN, reported as such
            return NORMS[norm](_standardised(s, iu)[iu] - _standardised(s_ref, iu)[iu])
    if kind == "within_group":
        if groups is None or len(groups) != s.shape[0]:
            raise ConsistbenchError("the within_group distance needs the group of every dev query")
        g = np.asarray(groups)
        same = g[iu[0]] == g[iu[1]]
        if not same.any():
            raise ConsistbenchError("the within_group distance needs a dev group with at least two queries")
        iu = (iu[0][same], iu[1][same])
    elif kind != "paper":
        raise ValueError(f"unknown distance {kind!r}")
    return NORMS[norm](s[iu].astype(np.float64) - s_ref[iu].astype(np.float64))


def within_group_pairs(groups: Sequence[str] | None) -> int:
    """How many query pairs share a group (0 when the groups are unknown)."""
    return sum(n * (n - 1) // 2 for n in Counter(groups or ()).values())


def normalise(d: Sequence[float], options: WeightsOptions, base_distance: float | None = None) -> np.ndarray:
    """Weights over models from their distances at one row (smaller distance -> larger weight)."""
    d = np.asarray(d, dtype=np.float64)
    with np.errstate(all="ignore"):
        if options.normalisation == "softmax":
            tau = options.temperature
            if options.temperature_scale == "base":
                if base_distance is None:
                    raise ValueError("temperature_scale 'base' needs the base model's distance")
                tau *= base_distance
            x = -d / tau
            x = x - np.max(x)
            e = np.exp(x)
            w = e / e.sum()
        elif options.normalisation == "inverse_power":
            if np.any(d <= 0):
                raise ConsistbenchError("inverse_power normalisation needs positive distances "
                                        f"(got {d.tolist()}); use compare 'raw' or softmax")
            inv = d ** -options.power
            w = inv / inv.sum()
        else:  # pragma: no cover - pydantic restricts the value
            raise ValueError(options.normalisation)
    return options.total * w


def _distances(sims: Similarities, kind: str, norm: str) -> tuple[dict, dict]:
    """``({row: [d_k]}, {row: d_base})`` for one distance kind."""
    groups = sims.meta.get("groups")
    keys = row_keys(sims.num_layers)
    raw = {r: [distance(m[r], sims.reference, kind, norm, groups) for m in sims.models] for r in keys}
    return raw, {r: distance(sims.base[r], sims.reference, kind, norm, groups) for r in keys}


def _mean_off_diagonal(s: np.ndarray) -> float:
    n = s.shape[0]
    return float((np.sum(s, dtype=np.float64) - np.trace(s, dtype=np.float64)) / (n * (n - 1)))


def weights_from_similarities(sims: Similarities, options: WeightsOptions, labels: Sequence[str]) -> dict:
    """Distances and weights per row and model (``options.distance``), every other computable
    distance kind (``all_distances``) and the mean off-diagonal similarities (the shared offset the
    ``paper`` distance mostly measures); ConsistbenchError on any non-finite weight."""
    keys = row_keys(sims.num_layers)
    raw, base = _distances(sims, options.distance, options.norm)
    d = {r: ([x - base[r] for x in raw[r]] if options.compare == "delta" else raw[r]) for r in keys}
    w = {r: normalise(d[r], options, base[r]).tolist() for r in keys}
    for r in keys:
        for k, value in enumerate(w[r]):
            if not math.isfinite(value):
                raise ConsistbenchError(f"non-finite consistency weight ({value}) for model {labels[k]} at {row_label(r)} "
                                        f"(distances {d[r]}, base distance {base[r]}): the similarity matrices "
                                        "are degenerate; check the models for NaN weights")

    def split(m):
        return {"embed": m["embed"], "layers": [m[str(i)] for i in range(sims.num_layers)], "final": m["final"]}

    kinds = [k for k in DISTANCE_KINDS if k != "within_group" or within_group_pairs(sims.meta.get("groups"))]
    every = {options.distance: (raw, base)}
    every |= {k: _distances(sims, k, options.norm) for k in kinds if k not in every}
    mean_sim = {"reference": _mean_off_diagonal(sims.reference),
                "models": split({r: [_mean_off_diagonal(m[r]) for m in sims.models] for r in keys}),
                "base": split({r: _mean_off_diagonal(sims.base[r]) for r in keys})}
    return {"weights": split(w), "distances": split(d), "raw_distances": split(raw), "base_distances": split(base),
            "all_distances": {k: {"models": split(every[k][0]), "base": split(every[k][1])} for k in kinds},
            "mean_similarity": mean_sim}


def _known_groups(sims: Similarities, dev) -> list[str] | None:
    """The dev queries' groups of saved matrices: recorded with them, or (files saved before the
    groups were) read again from ``dev`` when its queries hash to the recorded sha256."""
    if sims.meta.get("groups"):
        return sims.meta["groups"]
    recorded = sims.meta.get("dev", {})
    try:
        queries = load_queries(dev, recorded.get("n_queries"))
    except (ConsistbenchError, OSError):
        return None
    return [q.group for q in queries] if queries_digest(queries) == recorded.get("sha256") else None


def compute_weights(base: str | Path, models: Sequence[str | Path], dev: str | Path | Sequence[dict] = DEFAULT_DEV,
                    options: WeightsOptions | None = None, *, labels: Sequence[str] | None = None,
                    similarities_out: str | Path | None = None, similarities_in: str | Path | None = None,
                    log: Callable[[str], None] | None = None, threads: int | None = None) -> dict:
    """The whole computation; returns the weights document (see :func:`write_weights`).

    ``similarities_in``: reuse matrices saved by an earlier run (``similarities_out``) instead of
    running the models, e.g. to try another distance or normalisation.
    """
    options = options or WeightsOptions()
    if not models:
        raise ConsistbenchError("no fine-tuned models given")
    labels = list(labels or _unique_labels(models))
    t0 = time.perf_counter()
    if similarities_in:
        sims = Similarities.load(similarities_in)
        if len(sims.models) != len(models):
            raise ConsistbenchError(f"{similarities_in} holds {len(sims.models)} models, {len(models)} given")
        sims.meta["groups"] = _known_groups(sims, dev)
        dev_meta = sims.meta.get("dev", {})
    else:
        ref = LazyModel(base, label=f"base ({Path(base).name})")
        others = [LazyModel(m, label=lbl) for m, lbl in zip(models, labels)]
        check_models(ref, others)
        # the merge will weigh every tensor by its layer: refuse an architecture it cannot map now
        layout = layout_for(ref.config, ref.label)
        assign(ref.tensors, layout, num_layers(ref.config, layout, ref.label), ref.label)
        queries = load_queries(dev, options.max_queries)
        dev_meta = {"path": str(Path(dev).resolve()) if isinstance(dev, (str, Path)) else None,
                    "n_queries": len(queries), "sha256": queries_digest(queries)}
        sims = collect_similarities(base, models, queries, options, log=log, threads=threads)
        sims.meta = {"dev": dev_meta, "groups": [q.group for q in queries]}
        if similarities_out:
            sims.save(similarities_out)
    if options.distance == "within_group" and not within_group_pairs(sims.meta.get("groups")):
        raise ConsistbenchError("distance within_group: no two dev queries share a group"
                                + ("" if sims.meta.get("groups") else " (the groups of these saved similarities are "
                                   "unknown: pass the dev file they were computed on)"))
    result = weights_from_similarities(sims, options, labels)
    dev_meta = {**dev_meta, "n_groups": len(set(sims.meta.get("groups") or [])) or None,
                "within_group_pairs": within_group_pairs(sims.meta.get("groups"))}
    return {
        "format": FORMAT, "version": FORMAT_VERSION, "consistbench_version": __version__,
        "base": {"path": str(Path(base).resolve()), "label": Path(base).name},
        "models": [{"path": str(Path(m).resolve()), "label": lbl} for m, lbl in zip(models, labels)],
        "dev": dev_meta, "num_layers": sims.num_layers, "rows": row_keys(sims.num_layers),
        "options": options.model_dump(), **result,
        "seconds": round(time.perf_counter() - t0, 2),
    }


def _unique_labels(models: Sequence[str | Path]) -> list[str]:
    labels = [Path(m).name for m in models]
    if len(set(labels)) != len(labels):
        labels = [f"{i}:{lbl}" for i, lbl in enumerate(labels)]
    return labels


# ---------------------------------------------------------------------------------------------
# files

def write_weights(doc: dict, path: str | Path, heatmap: str | Path | None = None) -> tuple[Path, Path | None]:
    """Write the JSON (atomically, :func:`~consistbench.reference_method.weights_file.save_weights`) and,
    unless ``heatmap`` is False-y, the heatmap PNG beside it."""
    save_weights(doc, path)
    png = None
    if heatmap:
        png = plot_heatmap(doc, heatmap)
    return Path(path), png

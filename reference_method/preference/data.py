"""``consistbench ref prefs``: preference data for consistency, from target and source samples.

For every training query (an original question and its variants, from ``ref synth`` output or
the train split), each model answers with the benchmark prompt: one greedy answer (what
evaluation generates) and ``n_samples`` sampled ones. The *target* is the model to be trained
(its answers are on-policy); the *sources* are the specialised models of part 1. Each candidate
``y`` for a query ``q`` of group ``g`` gets

    score(y) = (1 - lam) * ROUGE-L(y, reference)  +  lam * ROUGE-L(y, anchor_m(g))

where ``anchor_m(g)`` is the greedy answer of the model ``m`` that produced ``y`` to the group's
*original* question: the first term rewards accuracy, the second consistency (an answer to a
variant that agrees with the model's own answer to the original, which is what EM / RS / BS
measure). ROUGE-L is :func:`consistbench.benchmark.metrics.rouge_l` (F1, the benchmark's definition), and
``lam`` is ``consistency_weight`` (default 0.5: equal weight). For each query:

- ``chosen`` = the target's best candidate, ``rejected`` = the target's worst (the query is
  dropped when their scores differ by less than ``min_margin``: no preference to learn);
- ``source_chosen`` = the best candidate over all source models (``source_model`` says which),
  the ``y_source`` of WRPO.

Rows keep the benchmark schema's fields (``id``, ``group_id``, ``variant_type``, ``question``,
``context``, ``reference``, ...) plus ``prompt`` (the benchmark prompt text, before the chat
template), the three answers with their scores and parts, and provenance in flat columns, the
same in every row (``target_model``, ``source_models``, ``sampling`` as JSON strings, ``seed``,
``score_definition``), so ``datasets.load_dataset("json", data_files=...)`` loads the file as is.
Only train-split rows are accepted, and any row whose passage (by id or text) appears in the
dev or test split is refused, as in ``ref synth``.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from consistbench.benchmark.errors import ConsistbenchError
from consistbench.benchmark.fileio import file_sha256, read_jsonl, strip_line_numbers, write_json, write_jsonl
from consistbench.benchmark.metrics import rouge_l
from consistbench.benchmark.prompting import MAX_GEN_TOKS, STOP_SEQUENCES, prompt_text
from consistbench.benchmark.schema import load_data
from consistbench.reference_method import doctor
from consistbench.reference_method.doctor import check_architecture
from consistbench.reference_method.collator import render_prompt
from consistbench.reference_method.synth import default_holdout_files, load_holdout, outside_holdout

SCORE_DEFINITION = ("score = (1 - consistency_weight) * ROUGE-L_F1(answer, reference) + consistency_weight * "
                    "ROUGE-L_F1(answer, greedy answer of the same model to the group's original question); "
                    "rouge-score rougeL with Porter stemming (benchmark.metrics.rouge_l)")
PREFERENCE_COLUMNS = ("prompt", "context", "question", "chosen", "rejected")
WRPO_COLUMNS = PREFERENCE_COLUMNS + ("source_chosen",)


@dataclass
class PrefConfig:
    """How candidates are sampled and scored (recorded in every row)."""

    n_samples: int = 3            # sampled answers per model and query, besides the greedy one
    temperature: float = 0.7      # sampling temperature (our choice: varied but on-topic answers)
    top_p: float = 0.95
    max_new_tokens: int = MAX_GEN_TOKS  # the benchmark's generation length
    consistency_weight: float = 0.5     # lam in the score; 0 = accuracy only, 1 = consistency only
    min_margin: float = 0.05      # drop a query whose best and worst target answers score within this
    batch_size: int = 8           # prompts per generate() call
    seed: int = 0

    def __post_init__(self):
        if self.n_samples < 1:
            raise ConsistbenchError(f"n_samples must be at least 1, got {self.n_samples}")
        if not 0.0 <= self.consistency_weight <= 1.0:
            raise ConsistbenchError(f"consistency_weight must be in [0, 1], got {self.consistency_weight}")
        if self.temperature <= 0:
            raise ConsistbenchError(f"temperature must be positive, got {self.temperature}")
        if self.batch_size < 1:
            raise ConsistbenchError(f"batch_size must be at least 1, got {self.batch_size}")

    def sampling(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k not in ("consistency_weight", "min_margin")} | {
            "greedy_candidate": True, "stop_sequences": list(STOP_SEQUENCES)}


@dataclass
class PrefStats:
    queries: int = 0
    groups: int = 0
    pairs: int = 0
    dropped_no_margin: int = 0
    refused_holdout: int = 0
    generations: dict = field(default_factory=dict)


def cut_answer(text: str) -> str:
    """The answer as evaluation keeps it: cut at the first stop sequence, whitespace stripped."""
    for stop in STOP_SEQUENCES:
        idx = text.find(stop)
        if idx >= 0:
            text = text[:idx]
    return text.strip()


def _stop_on_strings_class():
    from transformers import StoppingCriteria

    class StopOnStrings(StoppingCriteria):
        """Stops a row once its decoded answer holds a benchmark stop sequence.

        Written here because transformers' ``stop_strings`` option rebuilds a table over the
        whole vocabulary on every ``generate`` call (seconds per call on CPU); decoding at most
        64 new tokens per row is far cheaper.
        """

        def __init__(self, tokenizer, width: int):
            self.tokenizer, self.width = tokenizer, width

        def __call__(self, input_ids, scores, **kwargs):
            import torch

            texts = self.tokenizer.batch_decode(input_ids[:, self.width:], skip_special_tokens=True)
            return torch.tensor([any(s in t for s in STOP_SEQUENCES) for t in texts], device=input_ids.device)

    return StopOnStrings


def StopOnStrings(tokenizer, width: int):  # noqa: N802  (a class built lazily: transformers imported on use)
    return _stop_on_strings_class()(tokenizer, width)


def generate_answers(model_dir: str | Path, queries: Sequence[tuple[str, str]], cfg: PrefConfig, *,
                     desc: str = "generating", trust_remote_code: bool = False) -> list[list[str]]:
    """For each (context, question): [greedy answer, sampled answer 1..n], prompts as in evaluation.

    Batched, left-padded ``generate`` with the benchmark's stop sequences; prompts are sorted by
    length so a batch pads little. Sampling is seeded per batch (``seed``, batch position).
    """
    import torch
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM, StoppingCriteriaList

    tok = doctor.load_tokenizer(model_dir, trust_remote_code=trust_remote_code)
    if tok.pad_token_id is None:
        raise ConsistbenchError(f"{model_dir}: the tokenizer has no pad token (run `consistbench doctor --fix`)")
    tok.padding_side = "left"
    try:
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32,
                                                     trust_remote_code=trust_remote_code).eval()
    except Exception as exc:
        raise ConsistbenchError(f"{model_dir}: cannot load the model ({type(exc).__name__}: {str(exc)[:200]})") from None
    texts = [render_prompt(tok, c, q)[0] for c, q in queries]
    bos = tok.bos_token
    # lm-eval's hf model adds the tokenizer's special tokens unless the text already starts with bos
    add_special = not (bos and all(t.startswith(bos) for t in texts))
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out: list[list[str]] = [[] for _ in texts]
    gen_kw = dict(max_new_tokens=cfg.max_new_tokens, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    bar = tqdm(total=len(texts), desc=desc, unit="prompt")
    for b, start in enumerate(range(0, len(order), cfg.batch_size)):
        idx = order[start:start + cfg.batch_size]
        enc = tok([texts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=add_special)
        width = enc["input_ids"].shape[1]
        stop = StoppingCriteriaList([StopOnStrings(tok, width)])
        with torch.no_grad():
            greedy = model.generate(**enc, do_sample=False, num_beams=1, temperature=None, top_p=None, top_k=None,
                                    stopping_criteria=stop, **gen_kw)
            torch.manual_seed(cfg.seed * 1_000_003 + b)
            sampled = model.generate(**enc, do_sample=True, temperature=cfg.temperature, top_p=cfg.top_p, top_k=0,
                                     num_return_sequences=cfg.n_samples, stopping_criteria=stop, **gen_kw)
        g_text = tok.batch_decode(greedy[:, width:], skip_special_tokens=True)
        s_text = tok.batch_decode(sampled[:, width:], skip_special_tokens=True)
        for j, i in enumerate(idx):
            out[i] = [cut_answer(g_text[j])] + [cut_answer(t) for t in s_text[j * cfg.n_samples:(j + 1) * cfg.n_samples]]
        bar.update(len(idx))
    bar.close()
    del model
    return out


def score_candidates(candidates: Sequence[str], reference: str, anchor: str, lam: float) -> list[dict]:
    """Score and its two parts for each candidate (see the module docstring)."""
    out = []
    for y in candidates:
        acc, cons = rouge_l(y, reference), rouge_l(y, anchor)
        out.append({"text": y, "rougeL": acc, "consistency": cons, "score": (1 - lam) * acc + lam * cons})
    return out


def _unique(texts: Sequence[str]) -> list[str]:
    seen, out = set(), []
    for t in texts:
        if t not in seen:
            seen.add(t)
            out.append(t)
    return out


def select_rows(rows: Sequence, *, limit: int | None, seed: int, holdout: tuple[set[str], set[str]]) -> tuple[list, int]:
    """Train rows of complete groups, held-out passages refused, a seeded sample of ``limit`` groups."""
    for r in rows:
        if r.split != "train":
            raise ConsistbenchError(f"{r.id}: split {r.split!r}; preference data is made from the train split only")
    kept = outside_holdout(rows, holdout)
    refused = len(rows) - len(kept)
    groups = sorted({r.group_id for r in kept if r.variant_type == "original"})
    if limit is not None and limit < len(groups):
        groups = sorted(random.Random(seed).sample(groups, limit))
    wanted = set(groups)
    kept = [r for r in kept if r.group_id in wanted]
    if not kept:
        raise ConsistbenchError("no train questions to make preference data from"
                                + (f" ({refused} refused: passage in a held-out split)" if refused else ""))
    return kept, refused


def build_preferences(rows: Sequence, target: str | Path, sources: Sequence[str | Path], cfg: PrefConfig, *,
                      trust_remote_code: bool = False, log: Callable[[str], None] = print
                      ) -> tuple[list[dict], PrefStats]:
    """Preference rows (module docstring) for schema rows ``rows`` (already filtered)."""
    if not sources:
        raise ConsistbenchError("at least one source model is needed (--source DIR)")
    stats = PrefStats(queries=len(rows))
    originals = {r.group_id: r for r in rows if r.variant_type == "original"}
    stats.groups = len(originals)
    queries = [(r.context, r.question) for r in rows]
    models = [("target", str(target))] + [(f"source{i}", str(s)) for i, s in enumerate(sources, start=1)]
    answers: dict[str, list[list[str]]] = {}
    for name, path in models:
        log(f"{name}: {path}")
        answers[name] = generate_answers(path, queries, cfg, desc=f"{name}: answers", trust_remote_code=trust_remote_code)
        stats.generations[name] = len(queries) * (1 + cfg.n_samples)
    index = {r.id: i for i, r in enumerate(rows)}
    anchors = {name: {gid: answers[name][index[o.id]][0] for gid, o in originals.items()} for name, _ in models}
    provenance = {
        "target_model": str(Path(target).resolve()),
        "source_models": json.dumps([str(Path(s).resolve()) for s in sources]),
        "sampling": json.dumps(cfg.sampling(), sort_keys=True),
        "consistency_weight": cfg.consistency_weight,
        "seed": cfg.seed,
        "score_definition": SCORE_DEFINITION,
    }
    lam = cfg.consistency_weight
    out = []
    for i, r in enumerate(rows):
        if r.group_id not in originals:
            raise ConsistbenchError(f"group {r.group_id!r} has variants but no original")
        target_scored = score_candidates(_unique(answers["target"][i]), r.reference, anchors["target"][r.group_id], lam)
        best = max(target_scored, key=lambda s: s["score"])
        worst = min(target_scored, key=lambda s: s["score"])
        if best["score"] - worst["score"] < cfg.min_margin:
            stats.dropped_no_margin += 1
            continue
        source_best, source_name = None, None
        for name, _ in models[1:]:
            for s in score_candidates(_unique(answers[name][i]), r.reference, anchors[name][r.group_id], lam):
                if source_best is None or s["score"] > source_best["score"]:
                    source_best, source_name = s, name
        src_path = dict(models)[source_name]
        out.append({
            "id": r.id, "group_id": r.group_id, "split": r.split, "variant_type": r.variant_type,
            "question": r.question, "context": r.context, "reference": r.reference, "passage_id": r.passage_id,
            "source": r.source, "prompt": prompt_text(r.context, r.question),
            "chosen": best["text"], "rejected": worst["text"], "source_chosen": source_best["text"],
            "source_model": str(Path(src_path).resolve()),
            "chosen_score": best["score"], "rejected_score": worst["score"], "source_score": source_best["score"],
            "chosen_rougeL": best["rougeL"], "chosen_consistency": best["consistency"],
            "rejected_rougeL": worst["rougeL"], "rejected_consistency": worst["consistency"],
            "source_rougeL": source_best["rougeL"], "source_consistency": source_best["consistency"],
            "target_anchor": anchors["target"][r.group_id], "source_anchor": anchors[source_name][r.group_id],
            "target_candidates": json.dumps(answers["target"][i], ensure_ascii=False),
            **provenance,
        })
        stats.pairs += 1
    if not out:
        raise ConsistbenchError(f"no preference pairs: in all {len(rows)} queries the target's best and worst "
                                f"answers score within min_margin={cfg.min_margin}")
    return out, stats


def build_file(data: str | Path, output: str | Path, target: str | Path, sources: Sequence[str | Path],
               cfg: PrefConfig, *, limit: int | None = None, holdout: Sequence[str | Path] | None = None,
               trust_remote_code: bool = False, log: Callable[[str], None] = print) -> PrefStats:
    """Read ``data`` (benchmark schema, train split), build preferences, write ``output`` and
    ``<output>.meta.json`` atomically."""
    output = Path(output)
    if output.resolve() in {Path(p).resolve() for p in [data, *(holdout or [])]}:
        raise ConsistbenchError(f"{output}: the output would overwrite an input")
    for path in [target, *sources]:
        check_architecture(path, trust_remote_code=trust_remote_code)
    rows = load_data(data)
    held = load_holdout(default_holdout_files() if holdout is None else holdout)
    kept, refused = select_rows(rows, limit=limit, seed=cfg.seed, holdout=held)
    out, stats = build_preferences(kept, target, sources, cfg, trust_remote_code=trust_remote_code, log=log)
    stats.refused_holdout = refused
    write_jsonl(output, out)
    meta = {"data": {"path": str(Path(data).resolve()), "sha256": file_sha256(data)},
            "target_model": str(Path(target).resolve()), "source_models": [str(Path(s).resolve()) for s in sources],
            "config": asdict(cfg), "score_definition": SCORE_DEFINITION, "stats": asdict(stats), "limit": limit}
    write_json(output.with_name(output.name + ".meta.json"), meta)
    return stats


def load_preferences(path: str | Path, *, columns: Sequence[str] = PREFERENCE_COLUMNS) -> list[dict]:
    """Rows of a preference file; a ConsistbenchError names an empty file or a missing column."""
    path = Path(path)
    if not path.is_file():
        raise ConsistbenchError(f"{path}: no such preference file")
    rows = strip_line_numbers(read_jsonl(path))
    if not rows:
        raise ConsistbenchError(f"{path}: no preference rows (empty file)")
    for i, row in enumerate(rows, start=1):
        missing = [c for c in columns if not isinstance(row.get(c), str)]
        if missing:
            raise ConsistbenchError(f"{path}:{i}: missing column {missing[0]!r} (a string); expected the output of "
                                    f"`consistbench ref prefs` with columns {', '.join(columns)}")
    return rows


def group_counts(rows: Sequence[dict]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for r in rows:
        counts[r.get("variant_type", "?")] += 1
    return dict(counts)

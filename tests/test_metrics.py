"""Metrics agree with the reference libraries and pair by group, never by position."""

import random

import numpy as np
import pytest

from consistbench.benchmark.errors import DataError
from consistbench.benchmark.metrics import (BertScoreConfig, Scored, ScoreSettings, bertscore_f1, bleu, compute_all,
                               exact_match, pair_by_group, rouge_l, rouge_l_many)
from consistbench.benchmark.scorer import to_scored
from consistbench.benchmark.schema import parse_row

TEXTS = [
    ("Use slicing: new_l = l[:]", "Sequences can be copied by slicing: new_l = l[:]"),
    ("It returns dst.", "Copy the file and return dst in the most efficient way possible."),
    ("The copies are running faster.", "A copy runs fast"),
    ("", "something"),
    ("identical text", "identical text"),
    ("Call list.sort() to sort in place; sorted() returns a new list.", "list.sort() sorts in place."),
]


def test_rouge_l_equals_rouge_score():
    from rouge_score import rouge_scorer

    ref = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    for pred, target in TEXTS:
        assert rouge_l(pred, target) == pytest.approx(ref.score(target, pred)["rougeL"].fmeasure, abs=1e-12)
    many = rouge_l_many(TEXTS)
    assert many == pytest.approx([ref.score(t, p)["rougeL"].fmeasure for p, t in TEXTS], abs=1e-12)


def test_bleu_equals_sacrebleu_corpus_bleu():
    import sacrebleu

    preds = [p for p, _ in TEXTS]
    refs = [t for _, t in TEXTS]
    assert bleu(preds, refs) == pytest.approx(sacrebleu.corpus_bleu(preds, [refs]).score / 100, abs=1e-12)
    assert 0 <= bleu(preds, refs) <= 1


def test_bertscore_equals_bert_score_library():
    from bert_score import BERTScorer

    from consistbench.benchmark.embedded import minilm_path

    pairs = [(p, t) for p, t in TEXTS if p and p != t]
    ours = bertscore_f1(pairs)
    lib = BERTScorer(model_type=str(minilm_path()), num_layers=6)
    _, _, f1 = lib.score([p for p, _ in pairs], [t for _, t in pairs])
    assert ours == pytest.approx(f1.numpy(), abs=1e-5)
    # identical strings: the library gives 1 up to rounding, we give exactly 1; one empty side gives 0
    _, _, same = lib.score(["identical text"], ["identical text"])
    assert float(same[0]) == pytest.approx(1.0, abs=1e-5)
    assert bertscore_f1([("identical text", "identical text"), ("", "x")]).tolist() == [1.0, 0.0]


def test_bertscore_records_encoder():
    desc = ScoreSettings().describe()
    assert desc["bertscore"]["num_layers"] == 6
    assert "all-MiniLM-L6-v2" in desc["bertscore"]["model_type"]
    assert desc["rs_threshold"] == 0.8
    assert BertScoreConfig(model_type="roberta-large").describe()["model_type"] == "roberta-large"


def test_exact_match_strips_surrounding_whitespace_only():
    assert exact_match("  a b\n", "a b") == 1.0
    assert exact_match("a  b", "a b") == 0.0
    assert exact_match("A b", "a b") == 0.0


def _scored(rows):
    return to_scored([parse_row(dict(r, __line__=i), f"x:{i}", require_response=True) for i, r in enumerate(rows, 1)])


def test_metric_values_on_a_worked_example(responses_rows):
    m = compute_all(_scored(responses_rows), ScoreSettings(compute_bs=False))
    # pairs: g1 how_to (same), g1 plural (different), g1 paraphrase (same after strip), g2 para, g3 how_to
    assert m["em"] == pytest.approx(2 / 5)
    assert m["em_how_to"] == pytest.approx(1 / 2)
    assert m["em_plural_article"] == 0.0
    assert m["em_paraphrase"] == pytest.approx(1 / 2)
    rs_pairs = [rouge_l("Use sorted(d.items(), key=lambda kv: kv[1]) to sort.", "Use sorted(d.items(), key=lambda kv: kv[1]).")]
    assert m["rs_how_to"] == pytest.approx((1 + (rs_pairs[0] >= 0.8)) / 2)
    for key in ("rougeL", "bleu", "rougeL_original", "bleu_paraphrase", "rs", "rs_plural_article"):
        assert 0 <= m[key] <= 1
    assert "bs" not in m


def test_rs_threshold_is_inclusive_and_configurable(responses_rows):
    scored = _scored(responses_rows)
    low = compute_all(scored, ScoreSettings(rs_threshold=0.0, compute_bs=False))
    high = compute_all(scored, ScoreSettings(rs_threshold=1.0, compute_bs=False))
    assert low["rs"] == 1.0
    assert high["rs"] == pytest.approx(2 / 5)  # only the identical pairs reach 1.0


def test_pairing_is_by_group_not_position(responses_rows):
    base = compute_all(_scored(responses_rows), ScoreSettings())
    shuffled = list(responses_rows)
    random.Random(3).shuffle(shuffled)
    again = compute_all(_scored(shuffled), ScoreSettings())
    assert again == pytest.approx(base)
    # interleaved ranks: rank 0 takes even rows, rank 1 odd rows, gathered rank by rank
    gathered = responses_rows[0::2] + responses_rows[1::2]
    assert compute_all(_scored(gathered), ScoreSettings()) == pytest.approx(base)


def test_pair_by_group_errors():
    rows = [Scored("a", "g", "how_to", "x"), Scored("b", "g", "paraphrase", "y")]
    with pytest.raises(DataError, match="group 'g' has variants but no original"):
        pair_by_group(rows)
    with pytest.raises(DataError, match="two originals"):
        pair_by_group([Scored("a", "g", "original", "x"), Scored("b", "g", "original", "y")])


def test_bs_per_type_and_overall_mean(responses_rows):
    m = compute_all(_scored(responses_rows), ScoreSettings())
    pairs = pair_by_group(_scored(responses_rows))
    f1 = bertscore_f1([(p.variant, p.original) for p in pairs])
    assert m["bs"] == pytest.approx(float(np.mean(f1)))
    assert m["bs_plural_article"] == pytest.approx(float(f1[[p.variant_type == "plural_article" for p in pairs]].mean()))
    assert m["bs"] < 1.0


def test_rs_counts_identical_responses_without_words_as_similar():
    """rouge-score gives 0.0 to two identical strings without word tokens; rs must not drop below em."""
    from consistbench.benchmark.metrics import Pair, em_values, rouge_l, rs_values

    pairs = [Pair("g1", "paraphrase", "::::", "::::"), Pair("g2", "how_to", "::::", ";;;;"),
             Pair("g3", "how_to", "Use copy.copy().", "Use copy.copy() here.")]
    assert rouge_l("::::", "::::") == 0.0  # the library's behaviour this guards against
    assert list(em_values(pairs)) == [1.0, 0.0, 0.0]
    assert list(rs_values(pairs, 0.8)) == [1.0, 0.0, 1.0]
    assert list(rs_values(pairs, 0.9)) == [1.0, 0.0, 0.0]  # F1 6/7

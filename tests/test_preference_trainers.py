"""The preference-fusion losses on a tiny random Llama: the a-schedule, WRPO's and MRPO's formulas
(MRPO against the paper and the authors' code), tokenization as in evaluation, and WRPO with a = 0
and MRPO with identical references equal to TRL's DPO."""

from __future__ import annotations

import math

import pytest
import torch

from consistbench.reference_method.preference.collator import PreferenceCollator, encode_completion, tokenize_rows
from consistbench.reference_method.preference.mrpo_trainer import clip_to_main, reference_weights, virtual_reference
from consistbench.reference_method.preference.wrpo_trainer import fusion_alpha, wrpo_loss
from tests.preference_fixtures import load, perturb, pref_rows

pytest_plugins = ["tests.preference_fixtures"]  # the tiny Llama's tokenizer, a second reference model


def trl_dpo_trainer(model, tok, tmp_path):
    """TRL's own DPOTrainer (sigmoid loss), built on a throwaway string dataset."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(output_dir=str(tmp_path / "dpo"), beta=1.0, use_cpu=True, bf16=False, report_to="none",
                     precompute_ref_log_probs=True, remove_unused_columns=False, gradient_checkpointing=False)
    ds = Dataset.from_dict({"prompt": ["Q: a"], "chosen": [" b"], "rejected": [" c"]})
    return DPOTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)


# ------------------------------------------------------------------------------------------------
# the a-schedule and the pure loss functions

def test_fusion_alpha_rises_linearly_to_max():
    values = [fusion_alpha(t, 11, 0.1) for t in range(11)]
    assert values[0] == 0.0
    assert values[-1] == pytest.approx(0.1)
    steps = [b - a for a, b in zip(values, values[1:])]
    assert all(s == pytest.approx(0.01) for s in steps)
    # half the run: reaches the maximum at step 4 of 10, then stays
    half = [fusion_alpha(t, 10, 0.2, warmup_ratio=0.5) for t in range(10)]
    assert half[4] == pytest.approx(0.2) and half[2] == pytest.approx(0.1) and half[9] == pytest.approx(0.2)
    assert fusion_alpha(0, 0, 0.3) == 0.3  # outside training: the maximum


def test_wrpo_loss_formula():
    ps, pc, pr = torch.tensor([-1.0]), torch.tensor([-2.0]), torch.tensor([-3.0])
    rs, rc, rr = torch.tensor([-1.5]), torch.tensor([-2.5]), torch.tensor([-2.0])
    loss, rewards = wrpo_loss(ps, pc, pr, rs, rc, rr, beta=0.5, alpha=0.25)
    expected = -torch.nn.functional.logsigmoid(torch.tensor(0.5 * (0.25 * 0.5 + 0.75 * 0.5 - (-1.0))))
    assert loss.item() == pytest.approx(expected.item())
    assert rewards["rejected"].item() == pytest.approx(-1.0)


def test_mrpo_clip_and_weights():
    chosen = torch.tensor([[-10.0, -30.0, -10.5]])
    rejected = torch.tensor([[-12.0, -12.0, -20.0]])
    clipped = clip_to_main(chosen, 0.1)
    assert clipped[0].tolist() == pytest.approx([-10.0, -11.0, -10.5])  # -30 clipped into [-11, -9]
    c, r, w = virtual_reference(chosen, rejected, eps=0.1, combination="log_linear")
    # clipped rejected: [-12, -12, -13.2]; gaps |c - r|: 2, 1, 2.7 -> weights in that proportion
    assert w[0].tolist() == pytest.approx([2 / 5.7, 1 / 5.7, 2.7 / 5.7])
    assert c.item() == pytest.approx((2 * -10 + 1 * -11 + 2.7 * -10.5) / 5.7)
    assert r.item() == pytest.approx((2 * -12 + 1 * -12 + 2.7 * -13.2) / 5.7)
    assert reference_weights(chosen, rejected, "uniform")[0].tolist() == pytest.approx([1 / 3] * 3)
    assert reference_weights(chosen, rejected, fixed=[2, 1, 1])[0].tolist() == pytest.approx([0.5, 0.25, 0.25])
    same = torch.tensor([[-5.0, -5.0]]), torch.tensor([[-6.0, -6.0]])
    for combination in ("lower_bound", "log_linear"):
        c, r, _ = virtual_reference(*same, eps=0.1, combination=combination)
        assert (c.item(), r.item()) == pytest.approx((-5.0, -6.0))
    with pytest.raises(ValueError):
        reference_weights(chosen, rejected, fixed=[1.0])


# Reference log-probs for the MRPO formula tests: B = 4 pairs, K = 3 references (main first),
# sequence-level values; the extra references are sometimes inside the clip range, sometimes far.
MRPO_CHOSEN = [[-40.0, -42.0, -70.0], [-25.0, -24.0, -26.5], [-60.0, -20.0, -61.0], [-12.0, -12.5, -11.0]]
MRPO_REJECTED = [[-45.0, -44.0, -41.0], [-30.0, -35.0, -28.0], [-58.0, -59.0, -90.0], [-18.0, -13.0, -19.5]]


def paper_virtual_reference(chosen_row, rejected_row, eps):
    """The published MRPO virtual reference written out with probabilities, one pair at a time:
    log(1 / sum_k a_k / pi_k) (K = 2: log(pi_1 pi_2 / (a_1 pi_2 + a_2 pi_1))), weights from the
    unclipped gaps, the extra references clipped around the main one with the per-pair range."""
    k = len(chosen_row)
    gaps = [abs(c - r) for c, r in zip(chosen_row, rejected_row)]
    shares = [g / sum(gaps) for g in gaps]
    a = [(1 - c) / (k - 1) for c in shares]
    m_w, m_l = abs(sum(chosen_row) / k), abs(sum(rejected_row) / k)
    eps_w, eps_l = eps * m_w / (m_w + m_l), eps * m_l / (m_w + m_l)

    def clipped(row, e):
        lo, hi = sorted(((1 - e) * row[0], (1 + e) * row[0]))
        return [row[0]] + [min(max(x, lo), hi) for x in row[1:]]

    out = []
    for row, e in ((chosen_row, eps_w), (rejected_row, eps_l)):
        pi = [math.exp(x) for x in clipped(row, e)]
        if k == 2:
            out.append(math.log(pi[0] * pi[1] / (a[0] * pi[1] + a[1] * pi[0])))
        else:
            out.append(math.log(1.0 / sum(ak / p for ak, p in zip(a, pi))))
    return out[0], out[1], a


def authors_two_reference_code(main_c, main_r, ext_c, ext_r, eta=0.1):
    """The MRPO authors' released trainer (thaihungle/MRPO, trainer_mref.py, adaptive alpha,
    adaptive clipping) transcribed: ``reference_*_logps`` there is the extra reference,
    ``reference_*_logps2`` the policy's initial model (the main reference)."""
    ref_c, ref_r, ref2_c, ref2_r = ext_c, ext_r, main_c, main_r
    a2, a1 = ref2_c - ref2_r, ref_c - ref_r
    alpha = torch.abs(a1) / (torch.abs(a1) + torch.abs(a2) + 1e-6)
    b1, b2 = (ref2_c + ref_c) / 2, (ref2_r + ref_r) / 2
    scale = torch.abs(b1) / (torch.abs(b1) + torch.abs(b2))
    eta1, eta2 = eta * scale, eta * (1 - scale)
    ref_c = torch.min(torch.max(ref_c, ref2_c * (1 + eta1)), ref2_c * (1 - eta1))
    c = torch.max(ref_c, ref2_c)
    v_c = ref_c + ref2_c - (c + torch.log(alpha * torch.exp(ref_c - c) + (1 - alpha) * torch.exp(ref2_c - c)))
    ref_r = torch.min(torch.max(ref_r, ref2_r * (1 + eta2)), ref2_r * (1 - eta2))
    c = torch.max(ref_r, ref2_r)
    v_r = ref_r + ref2_r - (c + torch.log(alpha * torch.exp(ref_r - c) + (1 - alpha) * torch.exp(ref2_r - c)))
    return v_c, v_r


def test_mrpo_default_is_the_published_lower_bound():
    from consistbench.reference_method.preference.mrpo_config import MRPOConfig

    assert MRPOConfig(output_dir="x", use_cpu=True).reference_combination == "lower_bound"
    chosen, rejected = torch.tensor(MRPO_CHOSEN, dtype=torch.float64), torch.tensor(MRPO_REJECTED, dtype=torch.float64)
    for k in (2, 3):
        c, r, w = virtual_reference(chosen[:, :k], rejected[:, :k], eps=0.1)  # the defaults
        for i in range(len(MRPO_CHOSEN)):
            pc, pr, a = paper_virtual_reference(MRPO_CHOSEN[i][:k], MRPO_REJECTED[i][:k], 0.1)
            assert c[i].item() == pytest.approx(pc, abs=1e-9) and r[i].item() == pytest.approx(pr, abs=1e-9)
            assert w[i].tolist() == pytest.approx(a, abs=1e-12)
        # the lower bound lies below the log-linear mixture with the same weights (harmonic <= geometric
        # mean), and the two forms differ by nats here, not by rounding
        ll_c, _, _ = virtual_reference(chosen[:, :k], rejected[:, :k], eps=0.1, combination="log_linear")
        assert (c - ll_c).abs().max().item() > 0.5
    # the DPO loss on top is unchanged: -log sigmoid(beta ((pi_w - V_w) - (pi_l - V_l)))
    c, r, _ = virtual_reference(chosen, rejected, eps=0.1)
    pol_c, pol_r = torch.tensor([-38.0, -26.0, -50.0, -11.0]), torch.tensor([-47.0, -31.0, -57.0, -20.0])
    pc, pr, _ = zip(*(paper_virtual_reference(a, b, 0.1) for a, b in zip(MRPO_CHOSEN, MRPO_REJECTED)))
    expected = [-math.log(1 / (1 + math.exp(-0.1 * ((float(x) - y) - (float(z) - u)))))
                for x, y, z, u in zip(pol_c, pc, pol_r, pr)]
    got = -torch.nn.functional.logsigmoid(0.1 * ((pol_c - c.float()) - (pol_r - r.float())))
    assert got.tolist() == pytest.approx(expected, abs=1e-5)


def test_mrpo_two_references_equal_the_authors_code():
    chosen, rejected = torch.tensor(MRPO_CHOSEN, dtype=torch.float64), torch.tensor(MRPO_REJECTED, dtype=torch.float64)
    for eps in (0.1, 0.3):
        for extra in (1, 2):  # each extra reference with the main one
            c2, r2 = chosen[:, [0, extra]], rejected[:, [0, extra]]
            ours_c, ours_r, _ = virtual_reference(c2, r2, eps=eps)
            theirs_c, theirs_r = authors_two_reference_code(c2[:, 0], r2[:, 0], c2[:, 1], r2[:, 1], eta=eps)
            # the authors add 1e-6 to alpha's denominator: differences of that order only
            torch.testing.assert_close(ours_c, theirs_c, rtol=0, atol=1e-5)
            torch.testing.assert_close(ours_r, theirs_r, rtol=0, atol=1e-5)


def test_mrpo_reference_combination_is_validated():
    from consistbench.reference_method.preference.mrpo_config import MRPOConfig

    assert MRPOConfig(output_dir="x", use_cpu=True, reference_combination="log_linear").method_settings()[
        "reference_combination"] == "log_linear"
    with pytest.raises(ValueError, match="reference_combination"):
        MRPOConfig(output_dir="x", use_cpu=True, reference_combination="geometric")


# ------------------------------------------------------------------------------------------------
# WRPO with a = 0 is DPO; MRPO with identical references is DPO

def test_tokenization_matches_evaluation_prompt(tok):
    rows = pref_rows()
    cols, dropped = tokenize_rows(rows, tok, completions=("chosen", "rejected", "source"), max_length=None)
    assert dropped == 0 and len(cols["prompt_ids"]) == len(rows)
    prompt, completion = encode_completion(tok, rows[0]["context"], rows[0]["question"], rows[0]["chosen"])
    assert cols["prompt_ids"][0] == prompt and cols["chosen_ids"][0] == completion
    assert completion[-1] == tok.eos_token_id
    text = tok.decode(prompt)
    assert rows[0]["question"] in text and text.rstrip().endswith("assistant")
    batch = PreferenceCollator(tok.pad_token_id, with_source=True)([{k: v[i] for k, v in cols.items()} for i in range(2)])
    assert batch["input_ids"].shape[0] == 6
    assert batch["completion_mask"][4].sum().item() == len(cols["source_ids"][0])
    short, dropped = tokenize_rows(rows, tok, completions=("chosen", "rejected"), max_length=20)
    assert dropped == len(rows) and not short["prompt_ids"]


@pytest.mark.slow
def test_wrpo_with_alpha_zero_equals_trl_dpo(tiny_llama_dir, tok, tmp_path):
    from datasets import Dataset

    from consistbench.reference_method.preference.wrpo_config import WRPOConfig
    from consistbench.reference_method.preference.wrpo_trainer import WRPOTrainer

    cols, _ = tokenize_rows(pref_rows(), tok, completions=("chosen", "rejected", "source"), max_length=None)
    args = WRPOConfig(output_dir=str(tmp_path / "w"), beta=1.0, alpha_max=0.0, use_cpu=True, max_steps=1)
    wrpo = WRPOTrainer(model=load(tiny_llama_dir), args=args, train_dataset=Dataset.from_dict(cols),
                       processing_class=tok, data_collator=PreferenceCollator(tok.pad_token_id, with_source=True))
    ds = wrpo.train_dataset
    assert all(c in ds.column_names for c in WRPOTrainer.REF_COLUMNS)
    dpo = trl_dpo_trainer(load(tiny_llama_dir), tok, tmp_path)
    # the policy moves away from the reference (same change in both), so rewards are not zero
    perturb(wrpo.model)
    perturb(dpo.model)
    examples = [ds[i] for i in range(len(ds))]
    w_batch = PreferenceCollator(tok.pad_token_id, with_source=True)(examples)
    d_examples = [{k: ex[k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")} for ex in examples]
    d_batch = PreferenceCollator(tok.pad_token_id)(d_examples)
    # TRL's own reference log-probs (from an unperturbed copy) equal the precomputed columns
    ref_c, ref_r = dpo.compute_ref_log_probs(trl_dpo_trainer(load(tiny_llama_dir), tok, tmp_path / "r").model,
                                             dict(d_batch))
    torch.testing.assert_close(ref_c, w_batch["ref_chosen_logps"], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(ref_r, w_batch["ref_rejected_logps"], rtol=1e-5, atol=1e-4)
    d_batch["ref_chosen_logps"], d_batch["ref_rejected_logps"] = ref_c, ref_r
    with torch.no_grad():
        w_loss = wrpo.compute_loss(wrpo.model, w_batch)
        d_loss = dpo.compute_loss(dpo.model, d_batch)
    assert abs(w_loss.item() - 0.6931) > 1e-3  # a real preference signal, not log 2
    torch.testing.assert_close(w_loss, d_loss, rtol=1e-5, atol=1e-6)
    # with a > 0 the source answers change the loss
    wrpo.args.alpha_max = 1.0
    with torch.no_grad():
        assert abs(wrpo.compute_loss(wrpo.model, w_batch).item() - d_loss.item()) > 1e-4


@pytest.mark.slow
def test_mrpo_with_identical_references_equals_trl_dpo(tiny_llama_dir, other_ref_dir, tok, tmp_path):
    from datasets import Dataset

    from consistbench.reference_method.preference.mrpo_config import MRPOConfig
    from consistbench.reference_method.preference.mrpo_trainer import (REF_CHOSEN, REF_REJECTED, MRPOTrainer,
                                                          precompute_reference_logps)

    cols, _ = tokenize_rows(pref_rows(), tok, completions=("chosen", "rejected"), max_length=None)
    same = dict(cols)
    same[REF_CHOSEN], same[REF_REJECTED] = precompute_reference_logps(
        cols, [tiny_llama_dir, tiny_llama_dir], pad_token_id=tok.pad_token_id, log=lambda s: None)
    assert all(a == b for a, b in same[REF_CHOSEN])
    args = MRPOConfig(output_dir=str(tmp_path / "m"), beta=1.0, use_cpu=True, max_steps=1)
    mrpo = MRPOTrainer(model=load(tiny_llama_dir), args=args, train_dataset=Dataset.from_dict(same),
                       processing_class=tok, data_collator=PreferenceCollator(tok.pad_token_id))
    dpo = trl_dpo_trainer(load(tiny_llama_dir), tok, tmp_path)
    perturb(mrpo.model)
    perturb(dpo.model)
    examples = [mrpo.train_dataset[i] for i in range(len(cols["prompt_ids"]))]
    m_batch = PreferenceCollator(tok.pad_token_id)(examples)
    d_batch = PreferenceCollator(tok.pad_token_id)([{k: ex[k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")}
                                                    for ex in examples])
    ref_c, ref_r = dpo.compute_ref_log_probs(trl_dpo_trainer(load(tiny_llama_dir), tok, tmp_path / "r").model,
                                             dict(d_batch))
    d_batch["ref_chosen_logps"], d_batch["ref_rejected_logps"] = ref_c, ref_r
    with torch.no_grad():
        m_loss = mrpo.compute_loss(mrpo.model, m_batch)
        d_loss = dpo.compute_loss(dpo.model, d_batch)
    assert abs(m_loss.item() - 0.6931) > 1e-3
    torch.testing.assert_close(m_loss, d_loss, rtol=1e-4, atol=1e-5)
    # the same through TRL's own loss code path (taken for any non-default DPO loss option)
    mrpo.loss_types = ["sigmoid", "sigmoid"]
    mrpo.loss_weights = [0.5, 0.5]
    with torch.no_grad():
        torch.testing.assert_close(mrpo.compute_loss(mrpo.model, m_batch), d_loss, rtol=1e-4, atol=1e-5)
    mrpo.loss_types, mrpo.loss_weights = ["sigmoid"], [1.0]
    # a different second reference gives a different virtual reference, hence another loss
    diff = dict(cols)
    diff[REF_CHOSEN], diff[REF_REJECTED] = precompute_reference_logps(
        cols, [tiny_llama_dir, other_ref_dir], pad_token_id=tok.pad_token_id, log=lambda s: None)
    assert any(a != b for a, b in diff[REF_CHOSEN])
    d_examples = [dict(ex, **{REF_CHOSEN: diff[REF_CHOSEN][i], REF_REJECTED: diff[REF_REJECTED][i]})
                  for i, ex in enumerate(examples)]
    mrpo.args.clip_epsilon = 10.0  # wide trust region: the second reference counts in full
    with torch.no_grad():
        other = mrpo.compute_loss(mrpo.model, PreferenceCollator(tok.pad_token_id)(d_examples))
    assert abs(other.item() - m_loss.item()) > 1e-4

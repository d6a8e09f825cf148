"""``consistbench leaderboard reproduce``: regenerate a seeded sample of a submission's rows.

Rescoring proves that the reported numbers follow from the logged responses; it cannot prove
that a model produced those responses. Reproduction can: it reruns the submission's model on a
seeded sample of whole question groups with the submission's own generation settings (the
task's: greedy, 64 new tokens, same stop sequences, same chat template), through the project's
evaluation path (:func:`consistbench.benchmark.evaluate.run_eval`, lm-eval's ``samples=``
selection), and compares each regenerated response with the logged one.

Sampling plan (:func:`plan_sample`; the formula is in docs/LEADERBOARD.md, "Reproduction"):
the sample is whole groups, so every metric (consistency too) can be compared. Let N be the
task's documents, G its groups, f the forged share to detect, 1 - beta the power. A forger who
replaces F_r = ceil(f N) responses touches at least F groups, the fewest groups that can hold
F_r rows (largest groups first). Drawing g of the G groups without replacement, the number of
sampled groups with a forged response is hypergeometric(G, F, g). With a tolerated honest
mismatch rate p0 per group (default 0: greedy decoding of the same model reproduces exactly),
the acceptance number c is the (confidence)-quantile of Binomial(g, p0), and g is the smallest
sample with P(K <= c | hypergeometric(G, F, g)) <= beta. With p0 = 0, c = 0 and
g = min { g : C(G - F, g) / C(G, g) <= beta }, which for large G approaches
ln(beta) / ln(1 - F/G) (29 groups for F/G = 10 %, beta = 5 %).

The seed is derived from the submission's content hash (so anyone can repeat the exact same
check) plus an optional ``--salt`` (a submitter who can predict the sample could try edits until
the sample misses the forged rows: whoever runs the check should add a salt the submitter does
not know in advance; the salt is recorded).

The record (``reproduction.json`` in the submission directory, written atomically) holds the
plan, the sampled groups, the exact-match share with its 95 % Clopper-Pearson interval, every
metric's difference (logged minus regenerated) with its 95 % paired group-bootstrap interval,
the first mismatches, and the verdict.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import random
import tempfile
import time
from pathlib import Path

from consistbench.benchmark.errors import ConsistbenchError
from consistbench.leaderboard.schema import (REPRODUCTION_FILE, MetricDifference, Mismatch, ReproductionRecord,
                                             SamplingPlan)

FORGED_SHARE = 0.10
POWER = 0.95
TOLERATED_SHARE = 0.0
CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000
SHOWN_MISMATCHES = 20


# ---------------------------------------------------------------------------------------------
# The sampling plan and the seeded sample (also used by validate to check a record)

def _group_sizes(spec) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for d in spec.docs:
        sizes[d["group_id"]] = sizes.get(d["group_id"], 0) + 1
    return sizes


def plan_sample(spec, forged_share: float = FORGED_SHARE, power: float = POWER,
                tolerated_share: float = TOLERATED_SHARE, confidence: float = CONFIDENCE) -> SamplingPlan:
    """The smallest group sample that detects ``forged_share`` forged responses with ``power``."""
    from scipy.stats import binom, hypergeom

    if not 0 < forged_share <= 1 or not 0 < power < 1 or not 0 <= tolerated_share < 1 or not 0 < confidence < 1:
        raise ConsistbenchError("sampling plan: need 0 < forged share <= 1, 0 < power < 1, "
                                "0 <= tolerated share < 1, 0 < confidence < 1")
    sizes = sorted(_group_sizes(spec).values(), reverse=True)
    n_docs, n_groups = sum(sizes), len(sizes)
    forged_rows = math.ceil(forged_share * n_docs - 1e-9)
    forged_groups, held = 0, 0
    for size in sizes:  # the forger's best hiding place: as few (large) groups as possible
        if held >= forged_rows:
            break
        held += size
        forged_groups += 1
    for g in range(1, n_groups + 1):
        c = 0 if tolerated_share == 0 else int(binom.ppf(confidence, g, tolerated_share))
        miss = float(hypergeom.cdf(c, n_groups, forged_groups, g))
        if miss <= 1 - power or g == n_groups:
            return SamplingPlan(forged_share=forged_share, power=power, tolerated_share=tolerated_share,
                                confidence=confidence, n_docs=n_docs, n_groups=n_groups, forged_groups=forged_groups,
                                sample_groups=g, max_mismatched_groups=c, detection_probability=round(1 - miss, 6))
    raise AssertionError("unreachable")


def sample_seed(content_sha256: str, salt: str = "") -> int:
    """The sample's seed: the submission's content hash, plus the salt when one is given."""
    return int(hashlib.sha256(f"{content_sha256}\n{salt}".encode()).hexdigest()[:16], 16)


def choose_groups(spec, seed: int, n: int) -> list[str]:
    """``n`` group ids drawn without replacement by ``random.Random(seed)``, sorted."""
    groups = sorted(_group_sizes(spec))
    return sorted(random.Random(seed).sample(groups, min(n, len(groups))))


def verdict_of(rec: ReproductionRecord) -> str:
    """The verdict a record's figures imply (validate recomputes it)."""
    ok = (rec.mismatched_groups <= rec.plan.max_mismatched_groups and rec.identical_prompts == rec.compared_docs
          and rec.chat_template_matches is not False and rec.compared_docs > 0)
    return "reproduced" if ok else "not reproduced"


# ---------------------------------------------------------------------------------------------
# Running it

def _with_dtype(model_args: str, recorded: str | None) -> str:
    """Add the submission's ``dtype=`` to ``model_args`` when the caller gave none."""
    if "dtype=" in model_args or not recorded:
        return model_args
    for part in recorded.split(","):
        if part.strip().startswith("dtype="):
            return f"{model_args},{part.strip()}"
    return model_args


def _clip(text: str, n: int = 400) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def _logged_samples(v, wanted: set[str]) -> dict[str, dict]:
    from consistbench.benchmark import untrusted
    from consistbench.leaderboard.validate import _read_limits

    out = {}
    for _, s in untrusted.iter_jsonl(v.directory / v.metadata.files.samples, _read_limits("samples"),
                                     what="samples file", follow_symlinks=False):
        if s["doc"]["id"] in wanted:
            out[s["doc"]["id"]] = s
    return out


def compare_responses(spec, logged: dict[str, str], reproduced: dict[str, str], seed: int) -> dict[str, MetricDifference]:
    """Every metric on the sampled groups, logged minus reproduced, with a 95 % paired group bootstrap."""
    from consistbench.benchmark import intervals as I
    from consistbench.benchmark import metrics as M

    settings = M.ScoreSettings(rs_threshold=spec.rs_threshold)
    docs = [d for d in spec.docs if d["id"] in reproduced]

    def rows(responses):
        return [M.Scored(d["id"], d["group_id"], d["variant_type"], responses[d["id"]], d["reference"]) for d in docs]

    boot = I.BootstrapSettings(n_resamples=BOOTSTRAP_RESAMPLES, seed=seed % 2**32)
    diff = I.paired_bootstrap(I.group_stats(rows(logged), settings), I.group_stats(rows(reproduced), settings), boot)

    def num(x):
        return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)

    return {m: MetricDifference(logged=num(d["a"]), reproduced=num(d["b"]), difference=num(d["difference"]),
                                low=num(d["low"]), high=num(d["high"]))
            for m, d in sorted(diff["metrics"].items()) if m in spec.metrics}


def reproduce(submission: str | Path, *, model: str | None = None, model_args: str | None = None, salt: str = "",
              forged_share: float = FORGED_SHARE, power: float = POWER, tolerated_share: float = TOLERATED_SHARE,
              confidence: float = CONFIDENCE, batch_size: int | str = 8, device: str | None = None,
              trust_remote_code: bool = False, write: bool = True) -> ReproductionRecord:
    """Validate the submission, regenerate its seeded group sample, compare, write the record."""
    from scipy.stats import binomtest

    from consistbench.benchmark import __version__, untrusted
    from consistbench.benchmark.evaluate import EvalOptions, is_samples_file, run_eval
    from consistbench.benchmark.fileio import write_json
    from consistbench.leaderboard.validate import _hash, _prompt_of, load_task, validate_submission

    t0 = time.perf_counter()
    directory = Path(submission)
    record_path = directory / REPRODUCTION_FILE
    if record_path.is_symlink():
        raise ConsistbenchError(f"{record_path}: is a symbolic link (refused)")
    v = validate_submission(directory, reproduction=False)  # an existing record is replaced
    spec = load_task(v.task, v.data_sha256)
    res = untrusted.read_json(directory / v.metadata.files.results)
    plan = plan_sample(spec, forged_share, power, tolerated_share, confidence)
    seed = sample_seed(v.content_sha256, salt)
    groups = choose_groups(spec, seed, plan.sample_groups)
    chosen = set(groups)
    indices = [i for i, d in enumerate(spec.docs) if d["group_id"] in chosen]
    wanted = {spec.docs[i]["id"] for i in indices}
    args = _with_dtype(model_args, (res.get("config") or {}).get("model_args")) if model_args else None
    chat = v.prompts.kind != "plain"
    with tempfile.TemporaryDirectory(prefix="consistbench-reproduce.") as tmp:
        run_seed = (res.get("config") or {}).get("random_seed")
        out = run_eval(EvalOptions(model=model, model_args=args, tasks=(v.task,), output_path=tmp,
                                   batch_size=batch_size, device=device, apply_chat_template=chat,
                                   trust_remote_code=trust_remote_code, samples={v.task: indices},
                                   seed=run_seed if isinstance(run_seed, int) else 1234))
        if out["results"] is None:
            raise ConsistbenchError("the reproduction ran on a non-zero rank; run it in a single process")
        files = [f for f in out["files"] if is_samples_file(f.name, v.task)]
        if len(files) != 1:
            raise ConsistbenchError(f"the reproduction run wrote {len(files)} samples files for {v.task}")
        regenerated = {s["doc"]["id"]: s for _, s in untrusted.iter_jsonl(files[0])}
        new_results = untrusted.read_json(next(f for f in out["files"] if f.name.startswith("results_")))
        used_args = (out["results"].get("config") or {}).get("model_args", args or "")
        used_model = (out["results"].get("config") or {}).get("model") or model or "default"
    if set(regenerated) != wanted:
        raise ConsistbenchError(f"the reproduction generated {len(regenerated)} documents, {len(wanted)} were asked for")
    logged_samples = _logged_samples(v, wanted)
    logged = {i: v.responses[i] for i in wanted}
    reproduced = {i: s["filtered_resps"][0] for i, s in regenerated.items()}
    order = [spec.docs[i]["id"] for i in indices]
    same = {i: logged[i] == reproduced[i] for i in order}
    mismatched_groups = len({spec.docs[i]["group_id"] for i in indices if not same[spec.docs[i]["id"]]})
    identical_prompts = sum(_prompt_of(logged_samples[i])[0] == _prompt_of(regenerated[i])[0] for i in order)
    template_match = None
    if res.get("chat_template"):
        new_template = new_results.get("chat_template") or ""
        template_match = _hash(new_template) == _hash(res["chat_template"])
    matches = sum(same.values())
    ci = binomtest(matches, len(order)).proportion_ci(confidence_level=0.95, method="exact")
    reasons = []
    if mismatched_groups > plan.max_mismatched_groups:
        reasons.append(f"{mismatched_groups} of {len(groups)} sampled groups hold a response the model does not "
                       f"regenerate (at most {plan.max_mismatched_groups} tolerated)")
    if identical_prompts != len(order):
        reasons.append(f"{len(order) - identical_prompts} regenerated prompts differ from the logged ones "
                       "(another chat template or prompt)")
    if template_match is False:
        reasons.append("the model's chat template differs from the one recorded in the results JSON")
    rec = ReproductionRecord(
        schema_version=1, submission_sha256=v.content_sha256, salt=salt, seed=seed, plan=plan, task=v.task,
        groups=groups, model=str(used_model), model_args=str(used_args), compared_docs=len(order), exact_matches=matches,
        exact_match_share=matches / len(order), exact_match_ci=[float(ci.low), float(ci.high)],
        mismatched_groups=mismatched_groups, identical_prompts=identical_prompts, chat_template_matches=template_match,
        metrics=compare_responses(spec, logged, reproduced, seed),
        mismatches=[Mismatch(id=i, logged=_clip(logged[i]), reproduced=_clip(reproduced[i]))
                    for i in order if not same[i]][:SHOWN_MISMATCHES],
        verdict="reproduced", reasons=reasons, consistbench_version=__version__,
        lm_eval_version=new_results.get("lm_eval_version"), wall_seconds=round(time.perf_counter() - t0, 1),
        date=dt.date.today())
    rec.verdict = verdict_of(rec)
    if write:
        write_json(record_path, json.loads(rec.model_dump_json()))
    return rec

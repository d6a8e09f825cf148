"""Which rows a reproduction regenerates, and what its figures must show: the sampling plan.

The sample is whole question groups, so every metric (consistency too) can be compared. Let N be
the task's documents, G its groups, f the forged share to detect, 1 - beta the power. A forger
who replaces F_r = ceil(f N) responses touches at least F groups, the fewest groups that can
hold F_r rows (largest groups first). Drawing g of the G groups without replacement, the number
of sampled groups with a forged response is hypergeometric(G, F, g). With a tolerated honest
mismatch rate p0 per group (default 0: greedy decoding of the same model reproduces exactly),
the acceptance number c is the (confidence)-quantile of Binomial(g, p0), and g is the smallest
sample with P(K <= c | hypergeometric(G, F, g)) <= beta. With p0 = 0, c = 0 and
g = min { g : C(G - F, g) / C(G, g) <= beta }, which for large G approaches
ln(beta) / ln(1 - F/G) (29 groups for F/G = 10 %, beta = 5 %). The formula is in
docs/LEADERBOARD.md, "Reproduction".

``--all`` (the default on tracks small enough, :data:`consistbench.leaderboard.tracks.REPRODUCE`)
regenerates every group instead (:func:`plan_all`): any forged response in more than c groups is
then found with certainty. Either way the record states what was checked
(:func:`coverage`): the mode, rows checked of rows total, and the forged share detected with
which probability (:func:`detection_power`, the plan's formula at the plan's sample size).

The seed is derived from the submission's content hash (so anyone can repeat the exact same
check) plus an optional salt (:func:`sample_seed`). ``consistbench leaderboard reproduce``
(:mod:`consistbench.leaderboard.reproduce`) draws the sample with these functions and
validation (:mod:`consistbench.leaderboard.checks`) recomputes them to check a record.
"""

from __future__ import annotations

import hashlib
import math
import random

from consistbench.benchmark.errors import ConsistbenchError
from consistbench.leaderboard.schema import ReproductionRecord, SamplingPlan
from consistbench.leaderboard.tracks import TaskSpec

FORGED_SHARE = 0.10
POWER = 0.95
TOLERATED_SHARE = 0.0
CONFIDENCE = 0.95


def group_sizes(spec: TaskSpec) -> dict[str, int]:
    """Documents per question group of the task, in the task's order of first appearance."""
    sizes: dict[str, int] = {}
    for d in spec.docs:
        sizes[d["group_id"]] = sizes.get(d["group_id"], 0) + 1
    return sizes


def plan_sample(spec: TaskSpec, forged_share: float = FORGED_SHARE, power: float = POWER,
                tolerated_share: float = TOLERATED_SHARE, confidence: float = CONFIDENCE) -> SamplingPlan:
    """The smallest group sample that detects ``forged_share`` forged responses with ``power``."""
    from scipy.stats import binom, hypergeom

    if not 0 < forged_share <= 1 or not 0 < power < 1 or not 0 <= tolerated_share < 1 or not 0 < confidence < 1:
        raise ConsistbenchError("sampling plan: need 0 < forged share <= 1, 0 < power < 1, "
                                "0 <= tolerated share < 1, 0 < confidence < 1")
    sizes = sorted(group_sizes(spec).values(), reverse=True)
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


def choose_groups(spec: TaskSpec, seed: int, n: int) -> list[str]:
    """``n`` group ids drawn without replacement by ``random.Random(seed)``, sorted."""
    groups = sorted(group_sizes(spec))
    return sorted(random.Random(seed).sample(groups, min(n, len(groups))))


def rows_of(spec: TaskSpec, groups: list[str]) -> list[int]:
    """The positions in the task (lm-eval's ``doc_id``) of every document of ``groups``, in order."""
    chosen = set(groups)
    return [i for i, d in enumerate(spec.docs) if d["group_id"] in chosen]


def verdict_of(rec: ReproductionRecord) -> str:
    """The verdict a record's figures imply (validation recomputes it)."""
    ok = (rec.mismatched_groups <= rec.plan.max_mismatched_groups and rec.identical_prompts == rec.compared_docs
          and rec.chat_template_matches is not False and rec.compared_docs > 0)
    return "reproduced" if ok else "not reproduced"


# ---------------------------------------------------------------------------------------------
# Every row (``reproduce --all``) and what a record says it checked

MODES = ("all", "sample")


def plan_all(spec: TaskSpec, power: float = POWER, tolerated_share: float = TOLERATED_SHARE,
             confidence: float = CONFIDENCE) -> SamplingPlan:
    """The plan of a reproduction that regenerates every group: c tolerated mismatched groups
    (the ``confidence``-quantile of Binomial(G, p0); 0 when p0 = 0), so a forgery touching more
    than c groups is detected with certainty; ``forged_share`` is the smallest share that must
    touch that many (one row when c = 0)."""
    from scipy.stats import binom

    if not 0 < power < 1 or not 0 <= tolerated_share < 1 or not 0 < confidence < 1:
        raise ConsistbenchError("reproduction plan: need 0 < power < 1, 0 <= tolerated share < 1, 0 < confidence < 1")
    sizes = sorted(group_sizes(spec).values(), reverse=True)
    n_docs, n_groups = sum(sizes), len(sizes)
    c = 0 if tolerated_share == 0 else min(int(binom.ppf(confidence, n_groups, tolerated_share)), n_groups - 1)
    forged_rows = sum(sizes[:c]) + 1  # more than the c largest groups can hold
    return SamplingPlan(forged_share=forged_rows / n_docs, power=power, tolerated_share=tolerated_share,
                        confidence=confidence, n_docs=n_docs, n_groups=n_groups, forged_groups=c + 1,
                        sample_groups=n_groups, max_mismatched_groups=c, detection_probability=1.0)


def plan_for(spec: TaskSpec, mode: str, forged_share: float = FORGED_SHARE, power: float = POWER,
             tolerated_share: float = TOLERATED_SHARE, confidence: float = CONFIDENCE) -> SamplingPlan:
    """The plan of a reproduction in ``mode`` (``"all"`` ignores ``forged_share``)."""
    if mode == "all":
        return plan_all(spec, power, tolerated_share, confidence)
    return plan_sample(spec, forged_share, power, tolerated_share, confidence)


def groups_for(spec: TaskSpec, mode: str, seed: int, plan: SamplingPlan) -> list[str]:
    """The group ids a reproduction in ``mode`` regenerates, sorted."""
    return sorted(group_sizes(spec)) if mode == "all" else choose_groups(spec, seed, plan.sample_groups)


def detection_power(plan: SamplingPlan) -> float:
    """P(more than c sampled groups hold a forged response) when the plan's forged share is
    forged in as few groups as possible: the formula :func:`plan_sample` stops on, at the plan's
    sample size (1.0 when every group is regenerated)."""
    from scipy.stats import hypergeom

    miss = float(hypergeom.cdf(plan.max_mismatched_groups, plan.n_groups, plan.forged_groups, plan.sample_groups))
    return round(1 - miss, 6)


def coverage(plan: SamplingPlan, mode: str, rows_checked: int) -> dict:
    """What a record says it checked: ``mode``, ``rows_checked`` of ``rows_total``, and the
    ``detectable_share`` of forged responses detected with probability ``power``."""
    return {"mode": mode, "rows_checked": rows_checked, "rows_total": plan.n_docs,
            "detectable_share": plan.forged_share, "power": detection_power(plan)}

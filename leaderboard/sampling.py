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

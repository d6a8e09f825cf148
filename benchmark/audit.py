"""``consistbench data audit``: every quality check on one or more data files.

Checks (rules and thresholds in :mod:`consistbench.benchmark.audit_rules`):
    schema        each file validates (:mod:`consistbench.benchmark.schema`);
    grounding     each reference answer's content words are covered by its context;
    length        each reference has an acceptable number of words;
    how_to        each how_to row is a rewrite between how-to forms with the same action phrase;
    plural_article each such row differs from its original only in number, agreement, articles;
    paraphrase    each paraphrase is lexically different (ROUGE-L) but close in meaning (encoder);
    typo, surface, template  the robust families' rules (:mod:`consistbench.benchmark.noise_rules`);
    near_duplicate no two base questions, within or across the files, are encoder-near-identical;
    passages      no passage appears in two splits, across all the files given;
    paraphrase_polarity / _sub_question / _answer_hint / _type_shift
                  each paraphrase keeps the original's question: no wh -> yes/no or either/or,
                  no added second question, no code token, number or rare word taken from the
                  reference, no how-to -> "which function" shift;
    reference_pointer / reference_foreign_name
                  each reference states an answer, with no name its passage lacks;
    near_twin_split no two originals of different splits with encoder cosine >= 0.90, and no
                  passage text in two splits (under different passage ids);
    opening_share in each split (with enough originals) no two-word opening covers more than
                  25 % of the originals.
Prints counts and distributions, lists violations by rule naming file, line and id, and
returns False (exit status 1) if there is any.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from consistbench.benchmark import audit_rules as R
from consistbench.benchmark.embedded import encode
from consistbench.benchmark.noise_rules import check_robust_variant
from consistbench.benchmark.schema import Row, load_data
from consistbench.benchmark.variants import PAIR_TYPES, ROBUST_TYPES, VARIANT_TYPES, how_to


# the rules listed (ok or FAIL) when a file holds rows of the family
ROBUST_RULES = {"typo": ("typo_edits", "typo_code_tokens"), "surface": ("surface_rule",),
                "template": ("template_verbatim", "template_unknown")}


def _quantiles(values: list[int]) -> str:
    if not values:
        return "-"
    v = sorted(values)
    q = lambda p: v[min(len(v) - 1, int(p * (len(v) - 1) + 0.5))]  # noqa: E731
    return f"min {v[0]}, p10 {q(0.1)}, median {q(0.5)}, p90 {q(0.9)}, max {v[-1]}"


def near_duplicates(rows: list[Row], threshold: float = R.NEAR_DUPLICATE_COSINE, block: int = 2048):
    """Pairs (i, j, cosine) of base questions at or above ``threshold`` (i < j), blockwise."""
    if len(rows) < 2:
        return []
    emb = encode([r.question for r in rows])
    found = []
    for start in range(0, len(rows), block):
        sims = emb[start:start + block] @ emb.T
        for a, b in zip(*np.nonzero(sims >= threshold)):
            i = start + int(a)
            if i < int(b):
                found.append((i, int(b), float(sims[a, b])))
    return found


def _variant_problems(kind: str, original: Row, variant: Row, cosine: float | None, templates: dict | None):
    """The rule of the variant's type: the paper's types in audit_rules, the robust families in noise_rules."""
    if kind in ROBUST_TYPES:
        return check_robust_variant(original, variant, templates)
    return R.check_variant(kind, original.question, variant.question, cosine=cosine)


def audit_rows(files: dict[str, list[Row]], templates: dict | None = None) -> tuple[dict[str, list[str]], dict]:
    """Run every check; return (violations by rule, statistics).

    ``templates``: the template set (id -> template) template rows are checked against
    (default: the shipped ``tasks/consistency/templates.yaml``).
    """
    problems: dict[str, list[str]] = defaultdict(list)
    all_rows = [(name, r) for name, rows in files.items() for r in rows]

    def where(name: str, row: Row) -> str:
        return f"{name}:{row.line} {row.id}"

    originals = {(name, r.group_id): r for name, r in all_rows if r.variant_type == "original"}
    for name, r in all_rows:
        if r.variant_type == "original":
            for p in R.check_reference(r.reference, r.context) + R.check_reference_content(r.reference, r.context):
                problems[p.rule].append(f"{where(name, r)}: {p.detail}")
    variants = [(name, r) for name, r in all_rows if r.variant_type != "original"]
    para = [(name, r) for name, r in variants if r.variant_type == "paraphrase"]
    cos = {}
    if para:
        texts = [originals[(n, r.group_id)].question for n, r in para] + [r.question for _, r in para]
        emb = encode(texts)
        k = len(para)
        cos = {(n, r.id): float(emb[i] @ emb[k + i]) for i, (n, r) in enumerate(para)}
    # how rare a word is in the documentation: its share of the distinct passages audited
    passage_share = R.PassageShare([r.context for _, r in all_rows if r.variant_type == "original"])
    for name, r in variants:
        orig = originals[(name, r.group_id)]
        for p in _variant_problems(r.variant_type, orig, r, cos.get((name, r.id)), templates):
            rule = p.rule if p.rule.startswith(r.variant_type) else f"{r.variant_type}:{p.rule}"
            problems[rule].append(f"{where(name, r)}: {p.detail}: {r.question!r} (original {orig.question!r})")
        extra = []
        if r.variant_type == "paraphrase":
            extra = R.check_paraphrase_meaning(orig.question, r.question, orig.reference, passage_share)
        elif r.variant_type in ("how_to", "plural_article"):
            extra = R.check_answer_hint(orig.question, r.question, orig.reference, passage_share)
            if r.variant_type == "how_to":
                extra += R.check_how_to_form(orig.question, r.question)
        for p in extra:
            problems[p.rule].append(f"{where(name, r)}: {p.detail}: {r.question!r} (original {orig.question!r})")
    _variant_set_rules(variants, originals, problems, where)
    # a group's original is one question however many files hold it (the robust files repeat them)
    base, seen_groups = [], set()
    for name, r in all_rows:
        if r.variant_type == "original" and r.group_id not in seen_groups:
            seen_groups.add(r.group_id)
            base.append((name, r))
    # one encoding pass for both thresholds (near-duplicates anywhere, near-twins across splits)
    close = near_duplicates([r for _, r in base], threshold=min(R.NEAR_DUPLICATE_COSINE, R.NEAR_TWIN_COSINE))
    for i, j, c in close:
        (n1, r1), (n2, r2) = base[i], base[j]
        if c >= R.NEAR_DUPLICATE_COSINE:
            problems["near_duplicate"].append(f"{where(n1, r1)} ~ {where(n2, r2)}: cosine {c:.3f}: {r1.question!r} / {r2.question!r}")
    for i, j, c in close:
        (n1, r1), (n2, r2) = base[i], base[j]
        if c >= R.NEAR_TWIN_COSINE and r1.split != r2.split:
            problems["near_twin_split"].append(f"{where(n1, r1)} ~ {where(n2, r2)}: cosine {c:.3f} across splits "
                                               f"{r1.split}/{r2.split}: {r1.question!r} / {r2.question!r}")
    by_text: dict[str, tuple[str, Row]] = {}
    for name, r in base:
        seen = by_text.setdefault(r.context.strip(), (name, r))
        if seen[1].split != r.split and seen[1].passage_id != r.passage_id:
            problems["near_twin_split"].append(f"{where(name, r)}: passage {r.passage_id} has the same text as "
                                               f"{seen[1].passage_id} in split {seen[1].split} ({where(*seen)})")
    for split, share in opening_shares([r for _, r in base]).items():
        top, n, total = share["top"], share["count"], share["groups"]
        if total >= R.OPENING_MIN_GROUPS and n / total > R.OPENING_MAX_SHARE:
            problems["opening_share"].append(f"split {split}: {top!r} opens {n} of {total} originals "
                                             f"({n / total:.1%} > {R.OPENING_MAX_SHARE:.0%})")
    first_split: dict[str, tuple[str, Row]] = {}
    for name, r in all_rows:
        seen = first_split.setdefault(r.passage_id, (name, r))
        if seen[1].split != r.split:
            problems["passages"].append(f"{where(name, r)}: passage {r.passage_id} also in split {seen[1].split} "
                                        f"({where(*seen)})")
    stats = {}
    for name, rows in files.items():
        origs = [r for r in rows if r.variant_type == "original"]
        stats[name] = {
            "groups": len(origs), "rows": len(rows),
            "variants": {t: n for t in PAIR_TYPES
                         if (n := sum(1 for r in rows if r.variant_type == t)) or t in VARIANT_TYPES},
            "splits": dict(Counter(r.split for r in origs)),
            "doc_kind": dict(Counter(str(r.extra.get("doc_kind", "?")) for r in origs)),
            "reference_words": _quantiles([len(r.reference.split()) for r in origs]),
            "question_words": _quantiles([len(r.question.split()) for r in origs]),
            "openings": {split: v["shares"] for split, v in opening_shares(origs, top=5).items()},
            "reference_use_share": (sum(1 for r in origs if r.reference.split()[:1] == ["Use"]) / len(origs)
                                    if origs else 0.0),
        }
    return problems, stats


def _variant_set_rules(variants, originals, problems, where) -> None:
    """The data v3 rules over sets of variants: one group's how_to and paraphrase must differ,
    no three-word opening may dominate a split's paraphrases, and a split's how_to pairs are
    mostly the core "How to X" <-> "How do I X" pair, with modal pairs a minority."""
    by_group: dict[tuple[str, str], dict[str, tuple[str, Row]]] = defaultdict(dict)
    for name, r in variants:
        by_group[(name, r.group_id)][r.variant_type] = (name, r)
    for types in by_group.values():
        if "how_to" in types and "paraphrase" in types:
            (n, h), (_, para) = types["how_to"], types["paraphrase"]
            ratio = R.near_how_to(h.question, para.question)
            if ratio >= R.NEAR_HOW_TO_RATIO:
                problems["near_how_to"].append(f"{where(n, para)}: the paraphrase {para.question!r} is close to the "
                                               f"how_to {h.question!r} (similarity {ratio:.2f} >= {R.NEAR_HOW_TO_RATIO})")
    for split, rows in sorted(_by_split(variants, "paraphrase").items()):
        if len(rows) < R.PARAPHRASE_OPENING_MIN:
            continue
        counts = Counter(R.paraphrase_opening(r.question) for _, r in rows)
        for opening_, n in counts.most_common():
            if n / len(rows) <= R.PARAPHRASE_OPENING_MAX_SHARE:
                break
            problems["paraphrase_opening_share"].append(
                f"split {split}: {opening_!r} opens {n} of {len(rows)} paraphrases "
                f"({n / len(rows):.1%} > {R.PARAPHRASE_OPENING_MAX_SHARE:.0%})")
    for split, rows in sorted(_by_split(variants, "how_to").items()):
        if len(rows) < R.HOW_TO_PAIRS_MIN:
            continue
        kinds = Counter(how_to.pair_kind(originals[(n, r.group_id)].question, r.question) for n, r in rows)
        core, modal = kinds["core"] / len(rows), kinds["modal"] / len(rows)
        if core < R.HOW_TO_CORE_MIN_SHARE or modal > R.HOW_TO_MODAL_MAX_SHARE:
            problems["how_to_pairs"].append(
                f"split {split}: of {len(rows)} how_to pairs, {core:.1%} are the core 'How to X' <-> 'How do I X' "
                f"pair (at least {R.HOW_TO_CORE_MIN_SHARE:.0%}) and {modal:.1%} modal "
                f"(at most {R.HOW_TO_MODAL_MAX_SHARE:.0%})")


def _by_split(variants, vtype: str) -> dict[str, list]:
    out: dict[str, list] = defaultdict(list)
    for name, r in variants:
        if r.variant_type == vtype:
            out[r.split].append((name, r))
    return out


def opening_shares(originals: list[Row], top: int = 1) -> dict[str, dict]:
    """Per split: the most common two-word openings of the originals with their shares."""
    by_split: dict[str, Counter] = defaultdict(Counter)
    for r in originals:
        by_split[r.split][R.opening(r.question)] += 1
    out = {}
    for split, counts in sorted(by_split.items()):
        total = sum(counts.values())
        (first, n), = counts.most_common(1)
        out[split] = {"top": first, "count": n, "groups": total,
                      "shares": {k: round(v / total, 4) for k, v in counts.most_common(top)}}
    return out


def audit_files(paths: list[str], max_report: int = 50) -> bool:
    console = Console()
    files = {str(Path(p)): load_data(p) for p in paths}  # schema errors raise with file:line
    with console.status("auditing (grounding, variant rules, near-duplicates)..."):
        problems, stats = audit_rows(files)
    table = Table(title="consistbench data audit")
    robust = [t for t in ROBUST_TYPES if any(s["variants"].get(t) for s in stats.values())]  # columns only when present
    for col in ("file", "split", "groups", "rows", *VARIANT_TYPES, *robust, "doc kinds"):
        table.add_column(col)
    for name, s in stats.items():
        table.add_row(Path(name).name, ",".join(sorted(s["splits"])), str(s["groups"]), str(s["rows"]),
                      *(str(s["variants"].get(t, 0)) for t in (*VARIANT_TYPES, *robust)),
                      ", ".join(f"{k} {v}" for k, v in sorted(s["doc_kind"].items())))
    console.print(table)
    for name, s in stats.items():
        console.print(f"{Path(name).name}: reference words {s['reference_words']}; question words {s['question_words']}")
        for split, shares in s["openings"].items():
            console.print(f"{Path(name).name}: {split} openings (limit {R.OPENING_MAX_SHARE:.0%}): "
                          + ", ".join(f"{k!r} {v:.1%}" for k, v in shares.items())
                          + f"; references opening with 'Use' {s['reference_use_share']:.1%}", markup=False, highlight=False)
    checks = ["grounding", "reference_length", "how_to_rule", "plural_article_rule", "paraphrase_lexical",
              "paraphrase_meaning", "near_duplicate", "passages", "paraphrase_polarity", "paraphrase_sub_question",
              "answer_hint", "paraphrase_type_shift", "reference_pointer", "reference_foreign_name",
              "near_twin_split", "opening_share", "how_to_form", "how_to_pairs",
              "paraphrase_template", "paraphrase_opening_share", "near_how_to"]
    checks += [rule for kind, rules in ROBUST_RULES.items() if kind in robust for rule in rules]
    for rule in sorted(set(checks) | set(problems)):
        found = problems.get(rule, [])
        console.print(f"{'FAIL' if found else 'ok  '} {rule}: {len(found)} violation(s)")
        for line in found[:max_report]:
            console.print(f"     {line}", markup=False, highlight=False)
        if len(found) > max_report:
            console.print(f"     ... and {len(found) - max_report} more")
    total = sum(len(v) for v in problems.values())
    console.print(f"audit {'passed' if not total else 'FAILED'}: {total} violation(s)")
    return total == 0

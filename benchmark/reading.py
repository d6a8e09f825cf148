"""The second reading of test and dev variants: its log format, and how the build applies it.

Data v3's test and dev variants were each read by a reader who did not write them, against the
rubric ``tasks/consistency/data/authored/RUBRIC.md``. The readings are logged, one JSON line
per variant read, in ``authored/reading-v3/``:

- ``chunk_*.jsonl``, the first reading: ``verdict`` ``ok``, ``rewrite`` (with ``new_text``) or
  ``drop``, the rubric's ``problems`` codes and a one-sentence ``reason``; lines with
  ``variant_type`` ``original`` and verdict ``note`` record a problem with an original or a
  reference (resolved by hand in ``CHANGES-v3.md``, not by the build);
- ``review_*.jsonl``, the resolution: every ``rewrite`` and ``drop`` of the first reading read by
  a second reader, who ``agree``s, ``revise``s (with ``new_text``) or ``restore``s the written
  variant;
- ``final_*.jsonl``, later readings in the first reading's format, applied last;
- ``sample-check.jsonl``, the independent check of the release: a fresh random sample of groups
  read by a reader who wrote and edited none of the data, verdict ``ok`` or ``fault`` per
  variant. It changes nothing by itself (a fault it finds is fixed by a ``final_*`` line); its
  counts are the release's measured error rates in the data card.

:func:`apply` turns the written variants of one group into the shipped ones, and refuses a log
line whose ``text`` is not the variant the reader saw at that point (a stale or mistyped
reading never applies silently). The ``how_to`` variant is not taken from the written items: it
is the rule's (:func:`consistbench.benchmark.variants.how_to.rewrite`, keyed by the group id),
then the readings apply to it as to any other variant.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from consistbench.benchmark.errors import DataError
from consistbench.benchmark.fileio import read_jsonl
from consistbench.benchmark.variants import VARIANT_TYPES, how_to

PROBLEM_CODES = ("type", "drift", "hint", "scope", "unnatural", "template", "near_how_to")
FIRST_VERDICTS = ("ok", "rewrite", "drop")
SAMPLE_VERDICTS = ("ok", "fault")
# The independent check of a fresh sample of the release (read, never applied).
SAMPLE_CHECK = "sample-check.jsonl"
REVIEW_VERDICTS = ("agree", "revise", "restore")
# Application order of the log files (by name prefix).
STAGES = ("chunk", "review", "final")
# How each note on an original or a reference was resolved (group id -> one sentence).
RESOLUTIONS = "notes-resolution.json"


@dataclass
class Reading:
    """Every reading of one data version, indexed by (group id, variant type), in order."""

    first: dict[tuple[str, str], dict] = field(default_factory=dict)
    review: dict[tuple[str, str], dict] = field(default_factory=dict)
    final: dict[tuple[str, str], dict] = field(default_factory=dict)
    notes: list[dict] = field(default_factory=list)
    resolutions: dict[str, str] = field(default_factory=dict)  # group id -> how a note was resolved
    sample: list[dict] = field(default_factory=list)  # the independent sample check, one line per variant

    def summary(self) -> dict:
        """Counts for the data card: variants read, verdicts, problems, resolutions."""
        first = list(self.first.values())
        out = {"read": len(first),
               "verdicts": dict(sorted(Counter(e["verdict"] for e in first).items())),
               "by_type": {t: dict(sorted(Counter(e["verdict"] for e in first if e["variant_type"] == t).items()))
                           for t in VARIANT_TYPES},
               "problems": dict(sorted(Counter(p for e in first for p in e.get("problems", [])).items())),
               "reviewed": len(self.review),
               "review_verdicts": dict(sorted(Counter(e["verdict"] for e in self.review.values()).items())),
               "notes": len(self.notes)}
        if self.final:
            out["final"] = {"read": len(self.final),
                            "verdicts": dict(sorted(Counter(e["verdict"] for e in self.final.values()).items()))}
        if self.sample:
            out["sample_check"] = sample_summary(self.sample)
        return out


def sample_summary(sample: list[dict]) -> dict:
    """Error rates of the independent sample check: variants judged, faults by problem and by
    type, and the two rates the release is held to (meaning drift, wrong variant type)."""
    faults = [e for e in sample if e["verdict"] == "fault"]
    n = len(sample)
    return {"judged": n, "groups": len({e["group_id"] for e in sample}),
            "groups_by_split": dict(sorted(Counter(split for split, _ in {(e.get("split", ""), e["group_id"])
                                                                             for e in sample}).items())),
            "faults": len(faults),
            "problems": dict(sorted(Counter(p for e in faults for p in e.get("problems", [])).items())),
            "faults_by_type": dict(sorted(Counter(e["variant_type"] for e in faults).items())),
            "drift_rate": sum("drift" in e.get("problems", []) for e in faults) / max(1, n),
            "type_rate": sum("type" in e.get("problems", []) for e in faults) / max(1, n)}


def _check_line(entry: dict, where: str, verdicts: tuple[str, ...]) -> None:
    for key in ("group_id", "variant_type", "verdict", "reader"):
        if not isinstance(entry.get(key), str) or not entry[key]:
            raise DataError(f"{where}: missing {key!r}")
    if entry["variant_type"] == "original":
        if entry["verdict"] != "note":
            raise DataError(f"{where}: a line on an original must have verdict 'note'")
        return
    if entry["variant_type"] not in VARIANT_TYPES:
        raise DataError(f"{where}: unknown variant_type {entry['variant_type']!r}")
    if entry["verdict"] not in verdicts:
        raise DataError(f"{where}: verdict {entry['verdict']!r} (expected one of {', '.join(verdicts)})")
    if not isinstance(entry.get("text"), str):
        raise DataError(f"{where}: missing 'text' (the variant as read)")
    problems = entry.get("problems", [])
    if not isinstance(problems, list) or any(p not in PROBLEM_CODES for p in problems):
        raise DataError(f"{where}: problems must be a list of {', '.join(PROBLEM_CODES)}")
    if entry["verdict"] in ("rewrite", "revise") and not (entry.get("new_text") or "").strip():
        raise DataError(f"{where}: a {entry['verdict']} needs new_text")


def load(directory: Path) -> Reading:
    """Read every log file of ``directory`` (empty :class:`Reading` if it does not exist)."""
    reading = Reading()
    if not directory.is_dir():
        return reading
    resolved = directory / RESOLUTIONS
    if resolved.is_file():
        reading.resolutions = json.loads(resolved.read_text(encoding="utf-8"))
    for stage in STAGES:
        target = getattr(reading, "review" if stage == "review" else ("final" if stage == "final" else "first"))
        verdicts = REVIEW_VERDICTS if stage == "review" else FIRST_VERDICTS
        for path in sorted(directory.glob(f"{stage}_*.jsonl")):
            for entry in read_jsonl(path):
                where = f"{path.name}:{entry.pop('__line__')}"
                _check_line(entry, where, verdicts)
                if entry["variant_type"] == "original":
                    reading.notes.append(entry)
                    continue
                key = (entry["group_id"], entry["variant_type"])
                if key in target:
                    raise DataError(f"{where}: {key[0]} {key[1]} was already read in this stage "
                                    f"({target[key]['__where__']})")
                entry["__where__"] = where
                target[key] = entry
    sample = directory / SAMPLE_CHECK
    if sample.is_file():
        for entry in read_jsonl(sample):
            where = f"{sample.name}:{entry.pop('__line__')}"
            _check_line(entry, where, SAMPLE_VERDICTS)
            if entry["verdict"] == "fault" and not entry.get("problems"):
                raise DataError(f"{where}: a fault must name at least one problem code")
            reading.sample.append(entry)
    return reading


def _expect(entry: dict, current: str | None) -> None:
    if entry["text"] != (current or ""):
        shown = "no variant" if current is None else repr(current)
        raise DataError(f"{entry['__where__']}: the reading saw {entry['text']!r} but the variant here is {shown} "
                        "(stale reading: read the current text again)")


def apply(group_id: str, original: str, written: dict[str, str], reading: Reading, *,
          require: bool = True) -> dict[str, str]:
    """The shipped variants of one test/dev group: the rule's ``how_to``, the written
    ``plural_article`` and ``paraphrase``, then the first reading, its review and any later
    reading, in that order. With ``require``, a variant nobody read is an error."""
    variants = {t: written[t] for t in ("plural_article", "paraphrase") if written.get(t)}
    rule = how_to.rewrite(original, group_id)
    if rule is not None and how_to.form_problem(original, rule) is None:
        variants["how_to"] = rule
    for vtype in VARIANT_TYPES:
        key = (group_id, vtype)
        first = reading.first.get(key)
        if first is None and require and vtype in variants:
            raise DataError(f"{group_id} {vtype}: {variants[vtype]!r} has no reading (every test and dev variant "
                            "is read before it ships)")
        if first is not None:
            _expect(first, variants.get(vtype))
            if first["verdict"] == "rewrite":
                variants[vtype] = first["new_text"].strip()
            elif first["verdict"] == "drop":
                variants.pop(vtype, None)
            review = reading.review.get(key)
            if review is not None:
                if first["verdict"] == "ok":
                    raise DataError(f"{review['__where__']}: reviews only resolve a rewrite or a drop")
                _expect(review, variants.get(vtype))
                if review["verdict"] == "revise":
                    variants[vtype] = review["new_text"].strip()
                elif review["verdict"] == "restore":
                    variants[vtype] = first["text"]
        final = reading.final.get(key)
        if final is not None:
            _expect(final, variants.get(vtype))
            if final["verdict"] == "rewrite":
                variants[vtype] = final["new_text"].strip()
            elif final["verdict"] == "drop":
                variants.pop(vtype, None)
    return {t: variants[t] for t in VARIANT_TYPES if t in variants}


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def history_markdown(reading: Reading, title: str = "data v3") -> str:
    """``authored/CHANGES-v3.md``: every variant the reading changed (first verdict, review,
    later reading), with the problems and reasons as logged, and the notes on originals."""
    s = reading.summary()
    lines = [f"# Changes made by the second reading ({title})", "",
             "Generated from `reading-v3/*.jsonl` by `consistbench.benchmark.reading.history_markdown`; do not "
             "edit (the logs are the record). Rubric: `RUBRIC.md`. The `how_to` variants were first made again "
             "by rule (`benchmark/variants/how_to.py`, keyed by the group id), then read like every other variant.",
             "", "## Summary", "",
             f"- variants read: {s['read']:,}; first verdicts: "
             + ", ".join(f"{k} {v:,}" for k, v in s["verdicts"].items()),
             "- by type: " + "; ".join(f"{t}: " + ", ".join(f"{k} {v:,}" for k, v in c.items())
                                       for t, c in s["by_type"].items()),
             "- problems named (a variant may have several): " + ", ".join(f"{k} {v:,}" for k, v in s["problems"].items()),
             f"- rewrites and drops reviewed by a second reader: {s['reviewed']:,} ("
             + ", ".join(f"{k} {v:,}" for k, v in s["review_verdicts"].items()) + ")",
             f"- notes on originals or references: {s['notes']}"]
    if "final" in s:
        lines.append(f"- later readings: {s['final']['read']:,} (" + ", ".join(
            f"{k} {v:,}" for k, v in s["final"]["verdicts"].items()) + ")")
    lines += ["", "## Changed variants", "",
              "| group | split | type | first reading | problems | written | first reader's text | review | shipped | reason |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for key in sorted(reading.first):
        first = reading.first[key]
        review = reading.review.get(key)
        final = reading.final.get(key)
        if first["verdict"] == "ok" and final is None:
            continue
        proposed = first.get("new_text", "") if first["verdict"] == "rewrite" else "(dropped)"
        shipped = proposed
        verdict = "-"
        if review is not None:
            verdict = review["verdict"]
            shipped = (review["new_text"] if review["verdict"] == "revise"
                       else first["text"] if review["verdict"] == "restore" else proposed)
        if final is not None:
            verdict += f"; later: {final['verdict']}"
            shipped = final.get("new_text", "") if final["verdict"] == "rewrite" else (
                "(dropped)" if final["verdict"] == "drop" else shipped)
        reasons = first.get("reason", "") + (f" Review: {review['reason']}" if review else "") + (
            f" Later: {final['reason']}" if final else "")
        lines.append(f"| {key[0]} | {first.get('split', '')} | {key[1]} | {first['verdict']} | "
                     f"{', '.join(first.get('problems', []))} | {_cell(first['text'])} | {_cell(proposed)} | "
                     f"{verdict} | {_cell(shipped)} | {_cell(reasons)} |")
    if reading.sample:
        c = s["sample_check"]
        lines += ["", "## Independent sample check", "",
                  f"A reader who wrote and edited none of the data judged {c['judged']:,} variants of "
                  f"{c['groups']:,} randomly drawn groups (" + ", ".join(f"{k} {v:,}" for k, v in c["groups_by_split"].items())
                  + f"): {c['faults']} fault(s); meaning drift {100 * c['drift_rate']:.2f} %, wrong type "
                  f"{100 * c['type_rate']:.2f} %. Each fault, and the later reading that fixed it:", "",
                  "| group | type | problems | variant | reason | fixed by |", "|---|---|---|---|---|---|"]
        for e in reading.sample:
            if e["verdict"] != "fault":
                continue
            fix = reading.final.get((e["group_id"], e["variant_type"]))
            fixed = "(not fixed)" if fix is None else (
                f"{fix['verdict']}: {fix.get('new_text', '')}" if fix["verdict"] == "rewrite" else fix["verdict"])
            lines.append(f"| {e['group_id']} | {e['variant_type']} | {', '.join(e['problems'])} | {_cell(e['text'])} | "
                         f"{_cell(e.get('reason', ''))} | {_cell(fixed)} |")
    lines += ["", "## Notes on originals and references, and how each was resolved", "",
              "| group | reader | note | resolution |", "|---|---|---|---|"]
    lines += [f"| {n['group_id']} | {n['reader']} | {_cell(n.get('reason', ''))} | "
              f"{_cell(reading.resolutions.get(n['group_id'], '(unresolved)'))} |" for n in reading.notes]
    return "\n".join(lines) + "\n"

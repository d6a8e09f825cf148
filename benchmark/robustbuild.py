"""Build the robust families' test rows (``tasks/consistency/data/robust/``) from the test split.

``consistbench data build-robust`` reads the shipped test split and writes, for each family of
:data:`consistbench.benchmark.variants.ROBUST_TYPES`:

``typo.jsonl``, ``surface.jsonl``, ``template.jsonl``
    every test group's original row (copied unchanged) followed by one variant row of the
    family: id ``<group_id>-<family>``, the same group, passage and reference, the variant's
    ``question`` (typo, surface) or ``template_id`` (template), and a ``generator`` record
    (seed, backend, the edits or transforms). A group the family cannot vary (a typo needs a
    plain word of four or more letters) has no rows in that file.
``versions.json``
    the data version: the checksum of the test split the rows were built from (the tasks
    refuse rows built from another test split), the seed, the template set's checksum, the
    nlpaug version, and each family file's rows, groups, data checksum (``sha256``,
    :func:`consistbench.benchmark.schema.data_checksum`) and byte checksum (``file_sha256``).
``stats.json``
    per family: groups, skipped groups, edits, actions, transforms, templates (the data card's
    figures).

Everything depends only on the test split, the seed, the template set and the nlpaug version,
so rerunning the command on the same inputs rewrites the same bytes (``--check`` verifies it).
Every row is audited (:func:`consistbench.benchmark.audit.audit_rows`: the schema, grounding,
the family rules of :mod:`consistbench.benchmark.noise_rules`) before anything is written; a
violation stops the build and leaves the shipped files as they were.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from pathlib import Path

from consistbench.benchmark.audit import audit_rows
from consistbench.benchmark.errors import ConsistbenchError, DataVersionError
from consistbench.benchmark.fileio import file_sha256, write_json, write_jsonl
from consistbench.benchmark.paths import DATA_DIR, TASK_DIR
from consistbench.benchmark.schema import check_groups, data_checksum, load_data, parse_row, row_id_for
from consistbench.benchmark.variants import ROBUST_TYPES, surface, template, typo

ROBUST_DIR = DATA_DIR / "robust"
TEMPLATES_FILE = TASK_DIR / "templates.yaml"
SEED = 0
OUTPUTS = (*(f"{f}.jsonl" for f in ROBUST_TYPES), "versions.json", "stats.json")


def family_rows(test_rows, seed: int = SEED, templates=None) -> tuple[dict[str, list[dict]], dict]:
    """The rows of every family (JSON objects, test-split order) and the generators' statistics."""
    templates = templates if templates is not None else template.load_templates(TEMPLATES_FILE)
    originals = [r for r in test_rows if r.variant_type == "original"]
    assigned = template.assign_templates([r.group_id for r in originals], [t.id for t in templates], seed)
    set_sha = template.templates_checksum(templates)
    out: dict[str, list[dict]] = {f: [] for f in ROBUST_TYPES}
    stats = {f: {"groups": 0, "skipped_groups": 0} for f in ROBUST_TYPES}
    actions, n_edits, transforms, combos, used = Counter(), Counter(), Counter(), Counter(), Counter()
    for orig in originals:
        base = orig.to_json()
        gid = orig.group_id
        made = {}
        t = typo.typo_variant(orig.question, seed)
        if t is not None:
            made["typo"] = {"question": t.question, "generator": t.generator()}
            actions.update(e.action for e in t.edits)
            n_edits[len(t.edits)] += 1
        s = surface.surface_variant(orig.question, seed)
        if s is not None:
            made["surface"] = {"question": s.question, "generator": s.generator()}
            transforms.update(s.transforms)
            combos[len(s.transforms)] += 1
        tid = assigned[gid]
        used[tid] += 1
        made["template"] = {"template_id": tid, "generator": {"type": "template", "seed": seed,
                                                              "backend": f"templates:{set_sha[:16]}",
                                                              "template_id": tid}}
        for family in ROBUST_TYPES:
            if family not in made:
                stats[family]["skipped_groups"] += 1
                continue
            original = dict(base, template_id=template.DEFAULT_ID) if family == "template" else dict(base)
            out[family].append(original)
            out[family].append(dict(base, id=row_id_for(gid, family), variant_type=family, **made[family]))
            stats[family]["groups"] += 1
    stats["typo"].update(actions=dict(sorted(actions.items())),
                         edits_per_variant={str(k): v for k, v in sorted(n_edits.items())})
    stats["surface"].update(transforms=dict(sorted(transforms.items())),
                            transforms_per_variant={str(k): v for k, v in sorted(combos.items())})
    stats["template"].update(templates={t.id: used[t.id] for t in templates})
    return out, stats


def _parsed(rows: dict[str, list[dict]]) -> dict[str, list]:
    parsed = {}
    for family, objs in rows.items():
        name = f"{family}.jsonl"
        parsed[name] = [parse_row(dict(o, __line__=i), f"{name}:{i}") for i, o in enumerate(objs, start=1)]
        check_groups(parsed[name], name)
    return parsed


def audit(rows: dict[str, list[dict]], templates=None) -> dict[str, list[str]]:
    """Every audit rule on the built rows (before writing); violations by rule."""
    problems, _ = audit_rows(_parsed(rows), templates=templates)
    return dict(problems)


def build_robust(test_path: str | Path | None = None, out_dir: str | Path | None = None, seed: int = SEED,
                 templates_path: str | Path | None = None, check_only: bool = False) -> dict:
    """Build (or with ``check_only`` rebuild and compare) the robust rows; returns the versions."""
    import nlpaug

    test_path = Path(test_path) if test_path else DATA_DIR / "test.jsonl"
    templates_path = Path(templates_path) if templates_path else TEMPLATES_FILE
    test = load_data(test_path)
    templates = template.load_templates(templates_path)
    rows, stats = family_rows(test, seed, templates)
    problems = audit(rows, {t.id: t for t in templates})
    if problems:
        first = next(iter(problems.items()))
        total = sum(len(v) for v in problems.values())
        raise ConsistbenchError(f"the robust rows break the audit ({total} violation(s); first, {first[0]}: "
                                f"{first[1][0]}); nothing was written")
    parsed = _parsed(rows)
    versions = {
        "source": {"file": test_path.name, "sha256": data_checksum(test),
                   "groups": sum(1 for r in test if r.variant_type == "original")},
        "seed": seed, "nlpaug": nlpaug.__version__,
        "templates": template.describe(templates, templates_path.name),
        "families": {f: {"rows": len(parsed[f"{f}.jsonl"]), "groups": stats[f]["groups"],
                         "sha256": data_checksum(parsed[f"{f}.jsonl"])} for f in ROBUST_TYPES},
    }
    target = Path(out_dir) if out_dir else ROBUST_DIR
    if check_only:
        with tempfile.TemporaryDirectory() as tmp:
            _write(rows, versions, stats, Path(tmp))
            diffs = [n for n in OUTPUTS if not (target / n).is_file()
                     or (Path(tmp) / n).read_bytes() != (target / n).read_bytes()]
        if diffs:
            raise ConsistbenchError(f"rebuilt robust rows differ from {target}: {', '.join(diffs)}")
        print(f"rebuilt robust rows are identical to {target}")
        return versions
    _write(rows, versions, stats, target)
    for f in ROBUST_TYPES:
        v = versions["families"][f]
        print(f"{f}: {v['groups']} groups, {v['rows']} rows ({stats[f]['skipped_groups']} groups without a variant)")
    print(f"built from {test_path.name} {versions['source']['sha256'][:16]}... (seed {seed}); wrote {target}")
    return versions


def _write(rows: dict[str, list[dict]], versions: dict, stats: dict, target: Path) -> None:
    """Write every output into a temporary directory, then move the files into ``target``.

    ``versions.json`` records each family file's byte checksum (``file_sha256``), which covers
    every field (a template row's ``template_id`` too), besides the rows' data checksum.
    """
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target) as tmp:
        tmp = Path(tmp)
        for family, objs in rows.items():
            write_jsonl(tmp / f"{family}.jsonl", objs)
            versions["families"][family]["file_sha256"] = file_sha256(tmp / f"{family}.jsonl")
        write_json(tmp / "versions.json", versions)
        write_json(tmp / "stats.json", stats)
        for f in sorted(tmp.iterdir()):
            os.replace(f, target / f.name)


def load_manifest(folder: Path) -> dict:
    """``versions.json`` of a robust folder (a :class:`DataVersionError` when it is missing or broken)."""
    path = folder / "versions.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        manifest["source"]["sha256"], manifest["families"]  # noqa: B018 - the keys every reader needs
    except FileNotFoundError:
        raise DataVersionError(f"{path}: missing; build the robust rows with `consistbench data build-robust`") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise DataVersionError(f"{path}: not a robust-rows manifest ({exc}); rerun `consistbench data build-robust`") from None
    return manifest

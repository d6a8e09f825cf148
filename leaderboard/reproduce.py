"""``consistbench leaderboard reproduce``: regenerate a submission's rows (all, or a seeded sample).

Rescoring proves that the reported numbers follow from the logged responses; it cannot prove
that a model produced those responses. Reproduction can: it reruns the submission's model on
every row (``mode="all"``, the default on the tracks whose regeneration fits the budget of
:data:`consistbench.leaderboard.tracks.REPRODUCE`) or on a seeded sample of whole question
groups (``mode="sample"``; :mod:`consistbench.leaderboard.sampling`: the plan, the seed and the
groups) with the submission's own generation settings (the task's: greedy, 64 new
tokens, same stop sequences, same chat template), through the project's evaluation path
(:func:`consistbench.benchmark.evaluate.run_eval`, lm-eval's ``samples=`` selection), and
compares each regenerated response with the logged one.

A submitter who can predict the sample could try edits until the sample misses the forged
rows: whoever runs the check should add a salt the submitter does not know in advance; the
salt is recorded.

The record (``reproduction.json`` in the submission directory, written atomically) holds the
mode and what it checked (rows checked of rows total, the forged share it detects with which
probability), the plan, the regenerated groups, the exact-match share with its 95 %
Clopper-Pearson interval, every metric's difference (logged minus regenerated) with its 95 %
paired group-bootstrap interval, the first mismatches (and, in the verdict's reason, the rows
that differ), and the verdict.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from consistbench.benchmark import __version__, untrusted
from consistbench.benchmark import intervals as I
from consistbench.benchmark import metrics as M
from consistbench.benchmark.errors import ConsistbenchError
from consistbench.benchmark.evaluate import EvalOptions, is_samples_file, run_eval
from consistbench.benchmark.fileio import write_json
from consistbench.leaderboard.limits import read_limits
from consistbench.leaderboard.prompts import logged_prompt, text_sha256
from consistbench.leaderboard.sampling import (CONFIDENCE, FORGED_SHARE, MODES, POWER, TOLERATED_SHARE, coverage,
                                               groups_for, plan_for, rows_of, sample_seed, verdict_of)
from consistbench.leaderboard.schema import (REPRODUCTION_FILE, MetricDifference, Mismatch, ReproductionRecord,
                                             SamplingPlan)
from consistbench.leaderboard.tracks import TaskSpec, load_task, reproduce_mode
from consistbench.leaderboard.validate import Validated, validate_submission

BOOTSTRAP_RESAMPLES = 2000
SHOWN_MISMATCHES = 20
NAMED_ROWS = 10  # rows named in the verdict's reason


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


def _logged_samples(v: Validated, wanted: set[str]) -> dict[str, dict]:
    out = {}
    for _, s in untrusted.iter_jsonl(v.directory / v.metadata.files.samples, read_limits("samples"),
                                     what="samples file", follow_symlinks=False):
        if s["doc"]["id"] in wanted:
            out[s["doc"]["id"]] = s
    return out


def compare_responses(spec: TaskSpec, logged: dict[str, str], reproduced: dict[str, str],
                      seed: int) -> dict[str, MetricDifference]:
    """Every metric on the sampled groups, logged minus reproduced, with a 95 % paired group bootstrap."""
    settings = M.ScoreSettings(rs_threshold=spec.rs_threshold)
    docs = [d for d in spec.docs if d["id"] in reproduced]
    boot = I.BootstrapSettings(n_resamples=BOOTSTRAP_RESAMPLES, seed=seed % 2**32)
    diff = I.paired_bootstrap(I.group_stats(M.scored_rows(docs, logged), settings),
                              I.group_stats(M.scored_rows(docs, reproduced), settings), boot)

    def num(x):
        return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)

    return {m: MetricDifference(logged=num(d["a"]), reproduced=num(d["b"]), difference=num(d["difference"]),
                                low=num(d["low"]), high=num(d["high"]))
            for m, d in sorted(diff["metrics"].items()) if m in spec.metrics}


@dataclass
class _Run:
    """What one regeneration produced: the new samples by document id and the run's results JSON."""

    samples: dict[str, dict]
    results: dict
    model: str
    model_args: str


def _regenerate(v: Validated, res: dict, indices: list[int], *, model: str | None, model_args: str | None,
                batch_size: int | str, device: str | None, trust_remote_code: bool, task: str | None = None) -> _Run:
    """Rerun the submission's model on the documents at ``indices`` of its task (``task``: the
    lm-eval task to run, the frozen ``*_v1``/``*_v2`` one for an entry on an earlier data
    version), with the submission's generation settings, chat-template choice and seed."""
    task = task or v.task
    args = _with_dtype(model_args, (res.get("config") or {}).get("model_args")) if model_args else None
    chat = v.prompts.kind != "plain"
    with tempfile.TemporaryDirectory(prefix="consistbench-reproduce.") as tmp:
        run_seed = (res.get("config") or {}).get("random_seed")
        out = run_eval(EvalOptions(model=model, model_args=args, tasks=(task,), output_path=tmp,
                                   batch_size=batch_size, device=device, apply_chat_template=chat,
                                   trust_remote_code=trust_remote_code, samples={task: indices},
                                   seed=run_seed if isinstance(run_seed, int) else 1234))
        if out["results"] is None:
            raise ConsistbenchError("the reproduction ran on a non-zero rank; run it in a single process")
        files = [f for f in out["files"] if is_samples_file(f.name, task)]
        if len(files) != 1:
            raise ConsistbenchError(f"the reproduction run wrote {len(files)} samples files for {task}")
        regenerated = {s["doc"]["id"]: s for _, s in untrusted.iter_jsonl(files[0])}
        new_results = untrusted.read_json(next(f for f in out["files"] if f.name.startswith("results_")))
        used_args = (out["results"].get("config") or {}).get("model_args", args or "")
        used_model = (out["results"].get("config") or {}).get("model") or model or "default"
    return _Run(samples=regenerated, results=new_results, model=str(used_model), model_args=str(used_args))


def mode_of(task: str, mode: str | None) -> str:
    """``mode``, or the track's default (:func:`consistbench.leaderboard.tracks.reproduce_mode`)."""
    mode = mode or reproduce_mode(task)
    if mode not in MODES:
        raise ConsistbenchError(f"reproduction mode {mode!r}: use one of {', '.join(MODES)}")
    return mode


def plan_of(submission: str | Path, forged_share: float = FORGED_SHARE, power: float = POWER,
            tolerated_share: float = TOLERATED_SHARE, confidence: float = CONFIDENCE,
            mode: str | None = None) -> SamplingPlan:
    """The plan :func:`reproduce` would follow for a submission (validated first)."""
    v = validate_submission(submission, reproduction=False)
    return plan_for(load_task(v.task, v.data_sha256), mode_of(v.task, mode), forged_share, power, tolerated_share,
                    confidence)


def _differing_rows(ids: list[str]) -> str:
    shown = ", ".join(ids[:NAMED_ROWS])
    return f"rows that differ: {shown}" + (f" and {len(ids) - NAMED_ROWS} more" if len(ids) > NAMED_ROWS else "")


def reproduce(submission: str | Path, *, model: str | None = None, model_args: str | None = None, salt: str = "",
              forged_share: float = FORGED_SHARE, power: float = POWER, tolerated_share: float = TOLERATED_SHARE,
              confidence: float = CONFIDENCE, batch_size: int | str = 8, device: str | None = None,
              trust_remote_code: bool = False, write: bool = True, mode: str | None = None) -> ReproductionRecord:
    """Validate the submission, regenerate its rows (``mode``: ``"all"`` or ``"sample"``, a seeded
    group sample; default: the track's, :data:`consistbench.leaderboard.tracks.REPRODUCE`),
    compare, write the record."""
    from scipy.stats import binomtest

    t0 = time.perf_counter()
    directory = Path(submission)
    record_path = directory / REPRODUCTION_FILE
    if record_path.is_symlink():
        raise ConsistbenchError(f"{record_path}: is a symbolic link (refused)")
    v = validate_submission(directory, reproduction=False)  # an existing record is replaced
    spec = load_task(v.task, v.data_sha256)
    res = untrusted.read_json(directory / v.metadata.files.results)
    # the rows to regenerate: every group, or the plan's seeded sample of whole groups
    mode = mode_of(v.task, mode)
    plan = plan_for(spec, mode, forged_share, power, tolerated_share, confidence)
    seed = sample_seed(v.content_sha256, salt)
    groups = groups_for(spec, mode, seed, plan)
    indices = rows_of(spec, groups)
    wanted = {spec.docs[i]["id"] for i in indices}
    run = _regenerate(v, res, indices, model=model, model_args=model_args, batch_size=batch_size, device=device,
                      trust_remote_code=trust_remote_code, task=spec.run_task or v.task)
    regenerated = run.samples
    if set(regenerated) != wanted:
        missing, extra = sorted(wanted - set(regenerated)), sorted(set(regenerated) - wanted)
        raise ConsistbenchError(f"the reproduction generated {len(regenerated)} documents for the {len(wanted)} asked "
                                f"for: {len(missing)} missing (e.g. {', '.join(missing[:3]) or '-'}), {len(extra)} "
                                f"not asked for (e.g. {', '.join(extra[:3]) or '-'})")
    # the comparison with the logged rows
    logged_samples = _logged_samples(v, wanted)
    logged = {i: v.responses[i] for i in wanted}
    reproduced = {i: s["filtered_resps"][0] for i, s in regenerated.items()}
    order = [spec.docs[i]["id"] for i in indices]
    same = {i: logged[i] == reproduced[i] for i in order}
    mismatched_groups = len({spec.docs[i]["group_id"] for i in indices if not same[spec.docs[i]["id"]]})
    identical_prompts = sum(logged_prompt(logged_samples[i])[0] == logged_prompt(regenerated[i])[0] for i in order)
    template_match = None
    if res.get("chat_template"):
        new_template = run.results.get("chat_template") or ""
        template_match = text_sha256(new_template) == text_sha256(res["chat_template"])
    matches = sum(same.values())
    ci = binomtest(matches, len(order)).proportion_ci(confidence_level=0.95, method="exact")
    reasons = []
    if mismatched_groups > plan.max_mismatched_groups:
        reasons.append(f"{mismatched_groups} of {len(groups)} {'' if mode == 'all' else 'sampled '}groups hold a "
                       f"response the model does not regenerate (at most {plan.max_mismatched_groups} tolerated); "
                       + _differing_rows([i for i in order if not same[i]]))
    if identical_prompts != len(order):
        reasons.append(f"{len(order) - identical_prompts} regenerated prompts differ from the logged ones "
                       "(another chat template or prompt)")
    if template_match is False:
        reasons.append("the model's chat template differs from the one recorded in the results JSON")
    rec = ReproductionRecord(
        schema_version=1, submission_sha256=v.content_sha256, salt=salt, seed=seed, plan=plan,
        **coverage(plan, mode, len(order)), task=v.task,
        groups=groups, model=run.model, model_args=run.model_args, compared_docs=len(order), exact_matches=matches,
        exact_match_share=matches / len(order), exact_match_ci=[float(ci.low), float(ci.high)],
        mismatched_groups=mismatched_groups, identical_prompts=identical_prompts, chat_template_matches=template_match,
        metrics=compare_responses(spec, logged, reproduced, seed),
        mismatches=[Mismatch(id=i, logged=_clip(logged[i]), reproduced=_clip(reproduced[i]))
                    for i in order if not same[i]][:SHOWN_MISMATCHES],
        verdict="reproduced", reasons=reasons, consistbench_version=__version__,
        lm_eval_version=run.results.get("lm_eval_version"), wall_seconds=round(time.perf_counter() - t0, 1),
        date=dt.date.today())
    rec.verdict = verdict_of(rec)
    if write:
        write_json(record_path, json.loads(rec.model_dump_json()))
    return rec

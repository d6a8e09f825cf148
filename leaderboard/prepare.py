"""``consistbench leaderboard prepare``: a submission directory from one evaluation output folder.

:func:`prepare` takes the results JSON and the track's samples file that ``consistbench eval``
or ``lm_eval --log_samples`` wrote (and the samples of the track's robust-family tasks from the
same run), copies them (samples gzip-compressed, byte-reproducibly) and writes
``metadata.json``, taking the parameter count and precision from what lm-eval recorded unless
they are given. The result is what ``consistbench leaderboard validate`` checks.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import shutil
from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError

from consistbench.benchmark.errors import ConsistbenchError, validation_message
from consistbench.benchmark.evaluate import is_samples_file
from consistbench.benchmark.fileio import atomic_path
from consistbench.benchmark.untrusted import read_json
from consistbench.leaderboard.limits import read_limits
from consistbench.leaderboard.schema import METADATA_FILE, SubmissionMetadata
from consistbench.leaderboard.tracks import robust_tasks_in

# lm-eval's config.model_dtype -> metadata.json's model.precision
PRECISION_OF_DTYPE = {"torch.float32": "float32", "torch.bfloat16": "bfloat16", "torch.float16": "float16"}


def find_one(folder: Path, pattern: str, what: str, keep: Callable[[Path], bool] | None = None) -> Path:
    """The one file of ``folder`` matching ``pattern`` (and ``keep``); refuse none or several."""
    found = sorted(p for p in folder.glob(pattern) if keep is None or keep(p))
    if not found:
        raise ConsistbenchError(f"{folder}: no {what} ({pattern})")
    if len(found) > 1:
        raise ConsistbenchError(f"{folder}: {len(found)} {what} files ({', '.join(p.name for p in found)}); "
                                "keep one run per folder or pass --results/--samples")
    return found[0]


def samples_file(folder: Path, task: str) -> Path:
    """The one samples file of ``task`` in an lm-eval output folder (not a longer task name's)."""
    return find_one(folder, f"samples_{task}_*.jsonl", f"samples JSONL of {task}",
                    keep=lambda p: is_samples_file(p.name, task))


def gzip_copy(src: Path, dst: Path) -> None:
    """Copy a samples file, gzip-compressed unless it already is."""
    if src.name.endswith(".gz"):
        shutil.copyfile(src, dst)
    else:  # mtime=0 and no file name in the header: the same samples give the same bytes
        with src.open("rb") as fin, open(dst, "wb") as raw, \
                gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as fout:
            shutil.copyfileobj(fin, fout)


def prepare(eval_dir: str | Path, output: str | Path, *, name: str, submitter: str, link: str | None = None,
            parameters: int | None = None, precision: str | None = None, revision: str | None = None,
            base_model: str | None = None, method: str | None = None, license: str | None = None,
            submitter_link: str | None = None, date: str | None = None, notes: str | None = None,
            task: str | None = None, results: str | Path | None = None, samples: str | Path | None = None,
            force: bool = False) -> list[str]:
    """Make the submission directory ``output`` (replaced atomically) from the evaluation output
    folder ``eval_dir``; the names of the files written: results, samples, robust samples, metadata.

    ``results``/``samples``: the files to take (default: the one results JSON of ``eval_dir`` and
    the one samples file of its task); ``task``: the track, when the results JSON holds several.
    """
    src = Path(eval_dir)
    results = Path(results) if results else find_one(src, "results_*.json", "results JSON")
    if not results.is_file():
        raise ConsistbenchError(f"{results}: no such file")
    res = read_json(results, read_limits("results"), what="results JSON")
    robust = robust_tasks_in(res) if isinstance(res, dict) else []
    tasks = sorted(set((res.get("results") or {}) if isinstance(res, dict) else []) - set(robust))
    task = task or (tasks[0] if len(tasks) == 1 else None)
    if task is None:
        raise ConsistbenchError(f"{results}: holds tasks {tasks}; pass --task")
    samples = Path(samples) if samples else samples_file(src, task)
    if not samples.is_file():
        raise ConsistbenchError(f"{samples}: no such file")
    params = parameters or (res.get("config") or {}).get("model_num_parameters")
    if not params:
        raise ConsistbenchError(f"{results}: lm-eval recorded no parameter count; pass --parameters")
    precision = precision or PRECISION_OF_DTYPE.get((res.get("config") or {}).get("model_dtype"), "")
    if not precision:
        raise ConsistbenchError("the precision is unknown; pass --precision")
    samples_name = samples.name if samples.name.endswith(".gz") else samples.name + ".gz"
    # the robust-family tasks of the same run ride along (their own samples files)
    robust_samples = {t: samples_file(src, t) for t in robust}
    meta = {"schema_version": 1,
            "model": {k: v for k, v in {"name": name, "link": link, "parameters": int(params),
                                        "precision": precision, "revision": revision,
                                        "base_model": base_model, "method": method,
                                        "license": license}.items() if v is not None},
            "submitter": {k: v for k, v in {"name": submitter, "link": submitter_link}.items() if v},
            "date": date or dt.datetime.fromtimestamp(results.stat().st_mtime, dt.timezone.utc).date().isoformat(),
            "files": {"results": results.name, "samples": samples_name}}
    if robust_samples:
        meta["files"]["robust_samples"] = {t: p.name + ".gz" for t, p in robust_samples.items()}
    if notes:
        meta["notes"] = notes
    try:
        SubmissionMetadata.model_validate(meta)
    except ValidationError as exc:
        raise ConsistbenchError(validation_message(exc, "metadata")) from None
    out = Path(output)
    if out.exists() and any(out.iterdir()) and not force:
        raise ConsistbenchError(f"{out}: exists and is not empty (pass --force to replace it)")
    with atomic_path(out, is_dir=True) as tmp:
        shutil.copyfile(results, tmp / results.name)
        gzip_copy(samples, tmp / samples_name)
        for t, path in robust_samples.items():
            gzip_copy(path, tmp / meta["files"]["robust_samples"][t])
        (tmp / METADATA_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        for p in tmp.iterdir():
            p.chmod(0o644)
    return [results.name, samples_name, *(meta["files"].get("robust_samples") or {}).values(), METADATA_FILE]

"""Leaderboard tests' shared submission and helpers (a pytest plugin: each
``tests/test_leaderboard_*.py`` file names it in ``pytest_plugins``, so the session fixtures are
built once for all of them).

The submission is produced once per session: ``consistbench.benchmark.evaluate.run_eval`` on a tiny random
Llama (SmolLM2's tokenizer and chat template; a wide initialisation so that it says varied
nonsense instead of nothing) over ``consistency_mini``, then ``consistbench leaderboard prepare``.
Each rejection test copies it (``sub``) and breaks one thing; ``reproduced_submission`` is a copy
with a reproduction record.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

from consistbench.benchmark.cli import main
from consistbench.benchmark.errors import ConsistbenchError
from consistbench.leaderboard import prompts as P
from consistbench.leaderboard import rescore as R
from consistbench.leaderboard import tracks as T
from consistbench.leaderboard import validate as V

REPO = Path(__file__).resolve().parents[1]
TASK = "consistency_mini"


# ---------------------------------------------------------------------------------------------
# Fixtures and helpers

@pytest.fixture(scope="session")
def chatty_llama_dir(tmp_path_factory, tiny_llama_dir) -> Path:
    """tiny_llama_dir's architecture re-initialised with std 0.3: non-empty, varied responses."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("chatty-llama")
    config = LlamaConfig.from_pretrained(tiny_llama_dir)
    config.initializer_range = 0.3
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_llama_dir).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def eval_dir(tmp_path_factory, chatty_llama_dir) -> Path:
    """A real `consistbench eval` output folder (results JSON + samples JSONL) on consistency_mini."""
    from consistbench.benchmark.evaluate import EvalOptions, run_eval

    out = tmp_path_factory.mktemp("lb-eval")
    result = run_eval(EvalOptions(model_args=f"pretrained={chatty_llama_dir},dtype=float32", tasks=(TASK,),
                                  output_path=str(out), batch_size=64))
    return result["files"][0].parent


@pytest.fixture(scope="session")
def real_submission(tmp_path_factory, eval_dir) -> Path:
    out = tmp_path_factory.mktemp("lb-subs") / "tiny-chatty"
    rc = main(["leaderboard", "prepare", str(eval_dir), "-o", str(out), "--name", "tiny chatty llama",
               "--submitter", "consistbench tests", "--link", "https://example.org/tiny", "--date", "2026-11-22"])
    assert rc == 0
    return out


@pytest.fixture
def sub(tmp_path, real_submission) -> Path:
    """A private copy of the real submission to break."""
    dst = tmp_path / "sub"
    shutil.copytree(real_submission, dst)
    return dst


def meta(sub: Path) -> dict:
    return json.loads((sub / "metadata.json").read_text())


def set_meta(sub: Path, data: dict) -> None:
    (sub / "metadata.json").write_text(json.dumps(data, indent=2))


def results_path(sub: Path) -> Path:
    return sub / meta(sub)["files"]["results"]


def read_results(sub: Path) -> dict:
    return json.loads(results_path(sub).read_text())


def write_results(sub: Path, data: dict) -> None:
    results_path(sub).write_text(json.dumps(data))


def read_samples(sub: Path) -> list[dict]:
    with gzip.open(sub / meta(sub)["files"]["samples"], "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def write_samples(sub: Path, samples: list[dict], raw_lines: list[str] | None = None) -> None:
    text = "".join(raw_lines) if raw_lines is not None else "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in samples)
    with gzip.open(sub / meta(sub)["files"]["samples"], "wt", encoding="utf-8") as fh:
        fh.write(text)


def set_responses(sub: Path, respond) -> dict[str, float]:
    """Give every document a new response (consistently everywhere in the sample) and report the
    true scores for it: a valid submission with other numbers. Returns the new metrics."""
    samples = read_samples(sub)
    spec = T.load_task(TASK)
    responses = {}
    for s in samples:
        text = respond(s["doc"])
        responses[s["doc"]["id"]] = text
        s["resps"] = [[text]]
        s["filtered_resps"] = [text]
        for m in spec.metrics:
            if isinstance(s.get(m), list):
                s[m][3] = text
    write_samples(sub, samples)
    metrics, _ = R.rescore(spec, responses)
    res = read_results(sub)
    for m in spec.metrics:
        res["results"][TASK][f"{m},none"] = metrics[m]
    write_results(sub, res)
    return metrics


def rejects(sub: Path, *needles: str, task: str | None = None) -> str:
    with pytest.raises(ConsistbenchError) as info:
        V.validate_submission(sub, task=task)
    msg = str(info.value)
    assert "\n" not in msg
    for needle in needles:
        assert needle in msg, msg
    return msg


def raw_results(sub: Path) -> str:
    return results_path(sub).read_text()


def cli_rejects(sub: Path, capsys, *needles: str) -> str:
    """`consistbench leaderboard validate` exits 2 with exactly one `consistbench: error:` line."""
    assert main(["leaderboard", "validate", str(sub)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("consistbench: error:"), err
    for needle in needles:
        assert needle in err[0], err[0]
    return err[0]


def reprompt(sub: Path, text_of, template: str | None = None) -> None:
    """Rewrite every logged prompt consistently (prompt_hash too): the user message becomes
    text_of(task prompt), rendered in the results' chat template (or ``template``)."""
    import hashlib

    from consistbench.tasks.consistency.utils import doc_to_text

    res = read_results(sub)
    if template is not None:
        res["chat_template"] = template
        res["chat_template_sha"] = hashlib.sha256(template.encode()).hexdigest()
        write_results(sub, res)
    fmt = P.prompt_format(results_path(sub), res)
    samples = read_samples(sub)
    for s in samples:
        prompt = fmt.render(text_of(doc_to_text(s["doc"])))
        s["arguments"]["gen_args_0"]["arg_0"] = prompt
        s["prompt_hash"] = hashlib.sha256(prompt.encode()).hexdigest()
    write_samples(sub, samples)


FEW_SHOT = ("Answer the question using only the context. Reply in one or two sentences.\n\nContext:\nlist.copy() "
            "returns a shallow copy.\n\nQuestion: How do I copy a list?\nAnswer: Call list.copy().\n\n")


# ---------------------------------------------------------------------------------------------
# A reproduced copy

# A small plan for tests (a few groups): half the responses forged, detected with 90% probability
TEST_PLAN = {"forged_share": 0.5, "power": 0.9}


def reproduce_sub(sub: Path, chatty_llama_dir: Path):
    from consistbench.leaderboard.reproduce import reproduce

    return reproduce(sub, model_args=f"pretrained={chatty_llama_dir}", batch_size=64, **TEST_PLAN)


@pytest.fixture(scope="session")
def reproduced_submission(tmp_path_factory, real_submission, chatty_llama_dir) -> Path:
    out = tmp_path_factory.mktemp("lb-reproduced") / "tiny-chatty"
    shutil.copytree(real_submission, out)
    reproduce_sub(out, chatty_llama_dir)
    return out

"""Leaderboard: the exact prompt check. Each logged prompt must be what lm-eval sends for its
document, plain or in the recorded chat template, rendered in a sandbox within time and memory
bounds (``consistbench.leaderboard.prompts``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from consistbench.leaderboard import limits as L
from consistbench.leaderboard import prompts as P
from consistbench.leaderboard import validate as V

# the shared submission and helpers, built once per session (a plugin, its asserts rewritten)
pytest.register_assert_rewrite("tests.leaderboard_fixtures")
pytest_plugins = ["tests.leaderboard_fixtures"]
from tests.leaderboard_fixtures import (  # noqa: E402
    FEW_SHOT, TASK, read_results, rejects, reprompt, write_results)


def test_rejects_prompts_with_few_shot_examples_the_task_does_not_have(sub):
    reprompt(sub, lambda text: FEW_SHOT + text)
    rejects(sub, "is not exactly the task's prompt in the recorded chat template", "few-shot")


def test_the_prompt_check_is_exact_for_the_recorded_chat_template(sub):
    reprompt(sub, lambda text: text)  # re-rendered by the checker's own renderer: still valid
    assert V.validate_submission(sub).task == TASK
    reprompt(sub, lambda text: text + " ")
    rejects(sub, "is not exactly")


def _set_template(sub: Path, template: str) -> None:
    import hashlib

    res = read_results(sub)
    res["chat_template"], res["chat_template_sha"] = template, hashlib.sha256(template.encode()).hexdigest()
    write_results(sub, res)


def test_a_chat_template_that_loops_is_stopped(sub, monkeypatch):
    # Jinja's sandbox bounds each range() to 100,000 items, not nested loops: 10^10 iterations
    monkeypatch.setattr(L, "RENDER_SECONDS", 0.3)
    _set_template(sub, "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}x")
    rejects(sub, "chat template takes more than 0.3 s of CPU time")


def test_a_chat_template_that_floods_memory_is_cut_short(sub):
    import tracemalloc

    # 100,000 copies of the ~1 KB user message: ~100 MB if rendered in full
    _set_template(sub, "{% for a in range(100000) %}{{ messages[0]['content'] }}{% endfor %}")
    tracemalloc.start()
    try:
        rejects(sub, "is not exactly the task's prompt in the recorded chat template")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 1024 * 1024, peak

def test_prompt_format_follows_what_lm_eval_records(tmp_path):
    """No template: the plain prompt; "" (chat APIs): the messages as JSON; a template: rendered
    with the recorded special tokens and the run's enable_thinking, as lm-eval's HF model does."""
    path = tmp_path / "results.json"
    plain = P.prompt_format(path, {"chat_template": None})
    assert plain.matches("Q?", "Q?") and not plain.matches("Example. Q?", "Q?")
    api = P.prompt_format(path, {"chat_template": ""})
    assert api.matches(json.dumps([{"role": "user", "content": "Q?"}]), "Q?")
    assert not api.matches(json.dumps([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q?"}]), "Q?")
    template = ("{{ bos_token }}{% if enable_thinking is defined and not enable_thinking %}/no_think {% endif %}"
                "{{ messages[0]['content'] }}{% if add_generation_prompt %} =>{% endif %}")
    res = {"chat_template": template, "tokenizer_bos_token": ["<s>", 1],
           "config": {"model_args": "pretrained=x,enable_thinking=False"}}
    assert P.prompt_format(path, res).render("Q?") == "<s>/no_think Q? =>"
    res["config"]["model_args"] = "pretrained=x"
    assert P.prompt_format(path, res).render("Q?") == "<s>Q? =>"

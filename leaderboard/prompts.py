"""The prompt a submission's model saw, recomputed: what lm-eval 0.4.13 sends for one document of a
zero-shot task without a description.

A logged prompt must be exactly the task's prompt for its document (:func:`prompt_parts`),
sent as plain text, as one chat message, or rendered in the chat template the results JSON
recorded (:class:`PromptFormat`, read by :func:`prompt_format`). The recorded template is
untrusted: it is rendered by transformers' own sandboxed Jinja environment, as a stream cut at
the logged prompt's length and within :data:`~consistbench.leaderboard.limits.RENDER_SECONDS`
of CPU time, so that it can neither fill memory nor loop forever.
"""

from __future__ import annotations

import contextlib
import hashlib
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from consistbench.benchmark import untrusted
from consistbench.benchmark.errors import ConsistbenchError
from consistbench.benchmark.prompting import prompt_text
from consistbench.benchmark.variants.template import render_doc
from consistbench.leaderboard import limits
from consistbench.leaderboard.limits import fail
from consistbench.leaderboard.tracks import TaskSpec


def text_sha256(text: str) -> str:
    """The SHA-256 of ``text`` in UTF-8, as lm-eval writes ``prompt_hash`` and ``chat_template_sha``."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def logged_prompt(sample: dict) -> tuple[str, Any]:
    """``(prompt, generation settings)`` of one lm-eval sample (``(None, None)`` when it has none)."""
    args = sample.get("arguments")
    if isinstance(args, dict):  # lm-eval's samples file: {"gen_args_0": {"arg_0": prompt, "arg_1": kwargs}}
        first = args.get("gen_args_0") or {}
        return first.get("arg_0"), first.get("arg_1")
    if isinstance(args, list) and args and isinstance(args[0], list) and args[0]:  # in-memory form
        return args[0][0], (args[0][1] if len(args[0]) > 1 else None)
    return None, None


def prompt_parts(spec: TaskSpec) -> Callable[[dict], tuple[str, str]]:
    """For a task, a function giving a document's ``(doc_to_text, system message)``: the track's
    tasks use the benchmark prompt; the template task renders each document under its template,
    whose preamble lm-eval sends as the ``description`` (the system message)."""
    if "doc_to_text_templated" in str(spec.config.get("doc_to_text") or ""):
        return lambda doc: (render_doc(doc), (doc.get("system") or ""))
    return lambda doc: (prompt_text(doc["context"], doc["question"]), "")


class _TooSlow(Exception):
    pass


@contextlib.contextmanager
def _cpu_deadline(seconds: float):
    """Raise :class:`_TooSlow` in the block once it used ``seconds`` of CPU time.

    SIGPROF from ``ITIMER_PROF`` counts the process's CPU time, not wall time, so a loaded machine
    does not trip it. The timer re-fires every 50 ms after the deadline: an exception raised while
    Python runs a finalizer is swallowed, the next one lands. Only in the main thread (signals are
    delivered there); elsewhere the block runs unbounded.
    """
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def _alarm(signum, frame):
        raise _TooSlow

    previous = signal.signal(signal.SIGPROF, _alarm)
    signal.setitimer(signal.ITIMER_PROF, seconds, 0.05)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)


@dataclass(frozen=True)
class PromptFormat:
    """How lm-eval turned a document's ``doc_to_text`` into the logged prompt.

    lm-eval 0.4.13 (``ConfigurableTask.fewshot_context``), zero-shot, no description, no system
    instruction, no ``gen_prefix``: the prompt is the one user message ``doc_to_text(doc)``;
    ``plain`` sends it as it is; ``chat_template`` renders ``[{"role": "user", "content": text}]``
    with the model tokenizer's chat template (``add_generation_prompt=True``, the tokenizer's
    special tokens as template variables, exactly as ``tokenizer.apply_chat_template`` does, and
    ``enable_thinking`` when the run's ``model_args`` set it, as lm-eval's HF model passes it) -
    the template is the one lm-eval logged in the results JSON (``chat_template``), so no model is
    needed; ``chat_messages`` (chat-completions APIs, logged template ``""``) logs the messages
    as a JSON string.
    """

    kind: str  # "plain" | "chat_template" | "chat_messages"
    template: str | None = None
    special_tokens: tuple[tuple[str, Any], ...] = ()  # template variables: special tokens, enable_thinking

    def describe(self) -> str:
        return {"plain": "the task's prompt as plain text", "chat_messages": "the task's prompt as one chat message",
                "chat_template": "the task's prompt in the recorded chat template"}[self.kind]

    def matches(self, prompt: str, text: str, system: str = "") -> bool:
        """Whether ``prompt`` is exactly what lm-eval sends for a document whose ``doc_to_text`` is
        ``text`` and whose task ``description`` is ``system`` (lm-eval: a system message under a chat
        template, plain text before the prompt without one)."""
        if self.kind == "plain":
            return prompt == system + text
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
        if self.kind == "chat_messages":
            try:
                logged = untrusted.loads(prompt, "prompt", untrusted.ReadLimits(depth=4))
            except ConsistbenchError:
                return False
            return logged == messages
        rendered = self.render(messages, max_chars=len(prompt) + 1)
        return rendered == prompt

    def render(self, messages: list[dict] | str, max_chars: int | None = None) -> str | None:
        """The chat template rendered for ``messages`` (a string: one user message); None when it
        grows past ``max_chars``.

        transformers' own compiled template (its sandboxed Jinja environment, filters and
        globals), rendered as a stream so that a hostile template can neither fill memory nor,
        beyond :data:`~consistbench.leaderboard.limits.RENDER_SECONDS` of CPU time (read at call
        time, so a test can lower it), loop forever.
        """
        from transformers.utils.chat_template_utils import _compile_jinja_template

        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        try:
            compiled = _compile_jinja_template(self.template)
            parts, size = [], 0
            with _cpu_deadline(limits.RENDER_SECONDS):
                for chunk in compiled.generate(messages=messages, tools=None,
                                               documents=None, add_generation_prompt=True,
                                               **dict(self.special_tokens)):
                    size += len(chunk)
                    if max_chars is not None and size > max_chars:
                        return None
                    parts.append(chunk)
        except _TooSlow:
            fail(f"the recorded chat template takes more than {limits.RENDER_SECONDS:g} s of CPU time to render one prompt")
        except Exception as exc:  # noqa: BLE001 - Jinja syntax/runtime errors, raise_exception(), ...
            msg = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            fail(f"the recorded chat template does not render ({type(exc).__name__}: {msg})")
        return "".join(parts)


def prompt_format(path: Path, res: dict) -> PromptFormat:
    """The prompt format the results JSON records, checked for what the benchmark allows."""
    if res.get("system_instruction") not in (None, ""):
        fail(f"{path}: the run added a system instruction ({str(res['system_instruction'])[:60]!r}); the "
             "benchmark's prompt has none")
    template = res.get("chat_template")
    applied = (res.get("consistbench") or {}).get("apply_chat_template") if isinstance(res.get("consistbench"), dict) else None
    if template is None:
        if applied:
            fail(f"{path}: consistbench.apply_chat_template is true but no chat_template is recorded")
        return PromptFormat("plain")
    if not isinstance(template, str):
        fail(f"{path}: chat_template must be a string or null")
    if template == "":
        return PromptFormat("chat_messages")
    if applied is False:
        fail(f"{path}: a chat_template is recorded but consistbench.apply_chat_template is false")
    if len(template) > limits.CHAT_TEMPLATE_CHARS:
        fail(f"{path}: chat_template of {len(template):,} characters is longer than the limit of "
             f"{limits.CHAT_TEMPLATE_CHARS:,}")
    sha = res.get("chat_template_sha")
    if sha is not None and sha != text_sha256(template):
        fail(f"{path}: chat_template_sha does not match the recorded chat_template (one of them was edited)")
    tokens: list[tuple[str, Any]] = []
    for name in ("bos_token", "eos_token", "pad_token"):
        value = res.get(f"tokenizer_{name}")  # lm-eval logs [token, id]
        if isinstance(value, list) and value and isinstance(value[0], str):
            tokens.append((name, value[0]))
    # lm-eval's HF model passes model_args' enable_thinking to the template (Qwen3-style templates)
    model_args = (res.get("config") or {}).get("model_args")
    if isinstance(model_args, str):
        model_args = dict(p.split("=", 1) for p in model_args.split(",") if "=" in p)
    thinking = model_args.get("enable_thinking") if isinstance(model_args, dict) else None
    if thinking is not None:
        tokens.append(("enable_thinking", str(thinking).strip().lower() in ("true", "1", "yes")))
    return PromptFormat("chat_template", template, tuple(tokens))

"""The ``template`` family: the same question and passage under another prompt template.

A serving stack wraps the question in its own prompt: other instruction wording, the passage
after the question instead of before it, a system prompt. A template variant keeps the row's
``question`` and ``context`` verbatim and changes only the prompt around them; the original is
rendered with the benchmark's default prompt (:func:`consistbench.benchmark.prompting.prompt_text`).

Template sets are YAML files (the shipped one: ``tasks/consistency/templates.yaml``)::

    templates:
      - id: question_first              # [a-z0-9_]+, unique; "default" is the benchmark's prompt
        description: the question before the passage
        template: "Question: {question}\\n\\nPassage:\\n{context}\\n\\nAnswer:"
      - id: assistant_preamble
        system: You answer questions about Python from its documentation.
        template: "{instruction}\\n\\nContext:\\n{context}\\n\\nQuestion: {question}\\nAnswer:"

``template`` is a Python format string with exactly one ``{context}`` and one ``{question}``
and optionally ``{instruction}`` (the default prompt's instruction); other braces are doubled
(``{{``). ``system`` (optional) is a system-style preamble. In the lm-eval task it becomes the
prompt's system message when a chat template is applied, and plain text before the prompt
(followed by a blank line) when none is: see :func:`system_field` and the task README.

Each group gets one template of the set (:func:`assign_templates`: groups ordered by a seeded
hash of their id, then dealt round-robin), so every template covers about the same number of
groups and the assignment never depends on row order.
"""

from __future__ import annotations

import hashlib
import json
import re
import string
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml

from consistbench.benchmark.errors import ConsistbenchError
from consistbench.benchmark.fileio import read_text
from consistbench.benchmark.prompting import INSTRUCTION, prompt_text

DEFAULT_ID = "default"  # the benchmark's own prompt (prompting.prompt_text): what originals use
_ID = re.compile(r"^[a-z0-9][a-z0-9_]{0,63}$")
_FIELDS = {"context", "question", "instruction"}
_KEYS = {"id", "template", "system", "description"}
MAX_TEMPLATES = 64
MAX_CHARS = 4000


@dataclass(frozen=True)
class PromptTemplate:
    id: str
    template: str
    system: str = ""
    description: str = ""

    def render(self, context: str, question: str) -> str:
        """The prompt (user turn) for one row: the question and passage inserted verbatim."""
        return self.template.format(context=context.strip(), question=question.strip(), instruction=INSTRUCTION)


def _check_format(where: str, text: str) -> None:
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise ConsistbenchError(f"{where}: not a format string ({exc}); write literal braces as {{{{ and }}}}") from None
    names = [name for _, name, spec, conv in parsed if name is not None]
    for _, name, spec, conv in parsed:
        if name is not None and (spec or conv):
            raise ConsistbenchError(f"{where}: field {{{name}}} takes no format spec or conversion")
    unknown = sorted(set(names) - _FIELDS)
    if unknown:
        raise ConsistbenchError(f"{where}: unknown field {{{unknown[0]}}} (allowed: {{context}}, {{question}}, "
                                "{instruction}; write literal braces as {{ and }})")
    for needed in ("context", "question"):
        if names.count(needed) != 1:
            raise ConsistbenchError(f"{where}: needs exactly one {{{needed}}}, found {names.count(needed)}")


def parse_templates(data, where: str) -> list[PromptTemplate]:
    """Validate a decoded template-set document; every error names ``where`` and the entry."""
    if not isinstance(data, dict) or not isinstance(data.get("templates"), list):
        raise ConsistbenchError(f"{where}: expected a mapping with a list 'templates'")
    entries = data["templates"]
    if not entries:
        raise ConsistbenchError(f"{where}: 'templates' is empty")
    if len(entries) > MAX_TEMPLATES:
        raise ConsistbenchError(f"{where}: {len(entries)} templates, at most {MAX_TEMPLATES}")
    out, seen = [], set()
    for i, entry in enumerate(entries, start=1):
        at = f"{where}: templates[{i}]"
        if not isinstance(entry, dict):
            raise ConsistbenchError(f"{at}: expected a mapping with 'id' and 'template'")
        extra = sorted(set(entry) - _KEYS)
        if extra:
            raise ConsistbenchError(f"{at}: unknown key {extra[0]!r} (allowed: {', '.join(sorted(_KEYS))})")
        tid, text = entry.get("id"), entry.get("template")
        if not isinstance(tid, str) or not _ID.match(tid):
            raise ConsistbenchError(f"{at}: 'id' must be lower-case letters, digits and '_' (got {tid!r})")
        if tid == DEFAULT_ID:
            raise ConsistbenchError(f"{at}: id {DEFAULT_ID!r} is reserved for the benchmark's own prompt")
        if tid in seen:
            raise ConsistbenchError(f"{at}: duplicate id {tid!r}")
        seen.add(tid)
        for key in ("template", "system", "description"):
            value = entry.get(key)
            if value is not None and (not isinstance(value, str) or len(value) > MAX_CHARS):
                raise ConsistbenchError(f"{at}: {key!r} must be a string of at most {MAX_CHARS} characters")
        if not text or not text.strip():
            raise ConsistbenchError(f"{at}: 'template' is missing or empty")
        _check_format(f"{at} ({tid})", text)
        out.append(PromptTemplate(tid, text, (entry.get("system") or "").strip(), (entry.get("description") or "").strip()))
    return out


def load_templates(path: str | Path) -> list[PromptTemplate]:
    """Read and validate a template-set YAML file (bad input: one :class:`ConsistbenchError` line)."""
    path = Path(path)
    if not path.is_file():
        raise ConsistbenchError(f"{path}: no such template file")
    try:
        data = yaml.safe_load(read_text(path, what="template file"))  # UTF-8 (a BOM is accepted)
    except yaml.YAMLError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConsistbenchError(f"{path}: not a readable YAML file ({first})") from None
    return parse_templates(data, str(path))


def templates_checksum(templates: Iterable[PromptTemplate]) -> str:
    """SHA-256 of a template set's content (ids, texts, preambles; descriptions excluded)."""
    payload = [[t.id, t.template, t.system] for t in templates]
    return hashlib.sha256(json.dumps(payload, ensure_ascii=False).encode()).hexdigest()


def assign_templates(group_ids: Iterable[str], template_ids: list[str], seed: int = 0) -> dict[str, str]:
    """One template id per group: groups sorted by a seeded hash of their id, dealt round-robin."""
    if not template_ids:
        raise ConsistbenchError("a template set needs at least one template")
    order = sorted(set(group_ids), key=lambda g: (hashlib.sha256(f"template|{seed}|{g}".encode()).hexdigest(), g))
    return {g: template_ids[i % len(template_ids)] for i, g in enumerate(order)}


def system_field(template: PromptTemplate | None) -> str:
    """The text a document carries as its system-style preamble ("" for none).

    lm-eval renders a task's ``description`` as the system message under a chat template and,
    without one, puts it in front of the prompt with nothing in between; the blank line that
    ends this field keeps the plain-text prompt readable (chat templates keep it as the end of
    the system message).
    """
    return f"{template.system}\n\n" if template is not None and template.system else ""


def render_doc(doc: dict) -> str:
    """The prompt text of a template-task document (its ``prompt_template``, or the default prompt)."""
    text = doc.get("prompt_template") or ""
    if not text:
        return prompt_text(doc["context"], doc["question"])
    return PromptTemplate(doc.get("template_id") or "?", text).render(doc["context"], doc["question"])


def describe(templates: list[PromptTemplate], source: str) -> dict:
    """What results record about a template set."""
    return {"file": source, "sha256": templates_checksum(templates), "ids": [t.id for t in templates]}

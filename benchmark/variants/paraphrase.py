"""The ``paraphrase`` variant type: pluggable paraphrasers.

Three backends behind one interface (``paraphrase(questions, n, seed) -> list[list[str]]``):

- :class:`LocalLMParaphraser`: a local transformers causal LM with a chat template (default:
  the embedded SmolLM2-135M-Instruct). Sampled with a fixed torch seed, so deterministic.
- :class:`EndpointParaphraser`: any OpenAI-compatible ``/chat/completions`` endpoint
  (vLLM, llama.cpp server, OpenAI, ...), given a base URL and a model name.
- :class:`WordNetParaphraser`: offline synonym substitution with nlpaug and WordNet 3.0.

Backends only propose; :mod:`consistbench.benchmark.variants.generate` filters every proposal with the
audit rules (differs, non-empty, lexically different, meaning kept by encoder similarity).
"""

from __future__ import annotations

import functools
import json
import os
import random
import re
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from typing import Protocol

import numpy as np

from consistbench.benchmark.embedded import convert_smollm2
from consistbench.benchmark.errors import ConsistbenchError
from consistbench.benchmark.variants.english import english_pipeline
from consistbench.benchmark.wordnet import ensure_wordnet

INSTRUCTION = (
    "Rewrite the user's question with different words and sentence structure so that it asks exactly "
    "the same thing. Keep code names, module names and numbers unchanged. Reply with the rewritten "
    "question only."
)
_CODE_TOKEN = re.compile(r"[\w.]*[_.()\[\]][\w.()\[\]]*|[a-z]+[A-Z]\w*")


class Paraphraser(Protocol):
    name: str

    def paraphrase(self, questions: list[str], n: int = 1, seed: int = 0) -> list[list[str]]: ...

    def describe(self) -> dict: ...


def clean_output(text: str) -> str:
    """First non-empty line of a model reply, without quotes or a 'Rewritten question:' label."""
    for line in text.strip().splitlines():
        line = line.strip().strip('"\u201c\u201d\'').strip()
        if line:
            line = re.sub(r"^(rewritten question|paraphrase|question|answer)\s*:\s*", "", line, flags=re.IGNORECASE)
            return line.strip().strip('"\u201c\u201d\'').strip()
    return ""


def chat_messages(question: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": INSTRUCTION}, {"role": "user", "content": question}]


@dataclass
class LocalLMParaphraser:
    """Paraphrases with a local transformers causal LM (sampling, seeded)."""

    model: str | None = None  # None: the embedded SmolLM2
    max_new_tokens: int = 48
    temperature: float = 0.8
    top_p: float = 0.95
    batch_size: int = 8
    trust_remote_code: bool = False
    name: str = "local_lm"

    def describe(self) -> dict:
        d = asdict(self)
        d["model"] = self.model or "SmolLM2-135M-Instruct (embedded)"
        return d

    @functools.cached_property
    def _loaded(self):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = self.model or str(convert_smollm2())
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=self.trust_remote_code)
        tok.padding_side = "left"
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=self.trust_remote_code)
        model.eval()
        return tok, model

    def paraphrase(self, questions: list[str], n: int = 1, seed: int = 0) -> list[list[str]]:
        import torch

        tok, model = self._loaded
        out: list[list[str]] = []
        for start in range(0, len(questions), self.batch_size):
            batch = questions[start:start + self.batch_size]
            prompts = [tok.apply_chat_template(chat_messages(q), tokenize=False, add_generation_prompt=True)
                       for q in batch]
            enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
            torch.manual_seed(seed * 1_000_003 + start)
            with torch.no_grad():
                gen = model.generate(**enc, do_sample=True, temperature=self.temperature, top_p=self.top_p,
                                     max_new_tokens=self.max_new_tokens, num_return_sequences=n,
                                     pad_token_id=tok.pad_token_id)
            texts = tok.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
            for i in range(len(batch)):
                out.append([clean_output(t) for t in texts[i * n:(i + 1) * n]])
        return out


@dataclass
class EndpointParaphraser:
    """Paraphrases through an OpenAI-compatible chat-completions endpoint."""

    base_url: str
    model: str
    api_key_env: str = "OPENAI_API_KEY"
    temperature: float = 0.8
    max_tokens: int = 64
    timeout: float = 60.0
    name: str = "endpoint"

    def describe(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "api_key_env"} | {"api_key_env": self.api_key_env}

    def _post(self, payload: dict) -> dict:
        url = self.base_url.rstrip("/") + "/chat/completions"
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        req = urllib.request.Request(url, data=json.dumps(payload).encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read().decode("utf-8"))
        except urllib.error.HTTPError as exc:
            raise ConsistbenchError(f"paraphrase endpoint {url} answered HTTP {exc.code}: "
                                    f"{exc.read().decode('utf-8', 'replace')[:200]}") from None
        except (urllib.error.URLError, TimeoutError, json.JSONDecodeError) as exc:
            raise ConsistbenchError(f"paraphrase endpoint {url} failed: {exc}") from None

    def paraphrase(self, questions: list[str], n: int = 1, seed: int = 0) -> list[list[str]]:
        out = []
        for i, q in enumerate(questions):
            texts = []
            for k in range(n):  # one request per sample: not every server implements `n`
                reply = self._post({"model": self.model, "messages": chat_messages(q), "temperature": self.temperature,
                                    "max_tokens": self.max_tokens, "seed": seed * 1_000_003 + i * 97 + k})
                try:
                    texts.append(clean_output(reply["choices"][0]["message"]["content"] or ""))
                except (KeyError, IndexError, TypeError):
                    raise ConsistbenchError(f"paraphrase endpoint returned an unexpected body: {str(reply)[:200]}") from None
            out.append(texts)
        return out


@dataclass
class WordNetParaphraser:
    """Offline synonym substitution (nlpaug ``SynonymAug`` over WordNet 3.0)."""

    aug_p: float = 0.4
    name: str = "wordnet"

    def describe(self) -> dict:
        return asdict(self)

    @functools.cached_property
    def _aug(self):
        ensure_wordnet()
        import nlpaug.augmenter.word as naw

        from spacy.lang.en.stop_words import STOP_WORDS

        aug = naw.SynonymAug(aug_src="wordnet", aug_p=self.aug_p, stopwords=sorted({w for s in STOP_WORDS | {"python"} for w in (s, s.capitalize(), s.upper())}),
                             stopwords_regex=_CODE_TOKEN.pattern, tokenizer=_tokenize, reverse_tokenizer=_detokenize)
        # nlpaug tags with NLTK's perceptron tagger, whose model cannot be installed offline; spaCy's
        # English pipeline gives the same Penn Treebank tag set, so it stands in for it.
        aug.model.pos_tag = _penn_tags
        return aug

    def paraphrase(self, questions: list[str], n: int = 1, seed: int = 0) -> list[list[str]]:
        out = []
        for i, q in enumerate(questions):
            texts = []
            for k in range(n):
                random.seed(f"{seed}|{i}|{k}|{q}")  # nlpaug samples with `random` and numpy
                np.random.seed((seed * 1_000_003 + i * 97 + k) % (2**32))
                result = self._aug.augment(q)
                texts.append(result[0] if isinstance(result, list) else result)
            out.append(texts)
        return out


_TOKENS = re.compile(r"[A-Za-z0-9_]+(?:[.'-][A-Za-z0-9_]+)*(?:\(\))?|\S")


def _tokenize(text: str) -> list[str]:
    """Words with dotted identifiers kept whole ("shutil.copyfile"), punctuation apart."""
    return _TOKENS.findall(text)


def _detokenize(tokens: list[str]) -> str:
    return re.sub(r"\s+([?.!,;:)])", r"\1", " ".join(tokens))


def _penn_tags(tokens: list[str]) -> list[tuple[str, str]]:
    from spacy.tokens import Doc

    nlp = english_pipeline()
    doc = Doc(nlp.vocab, words=list(tokens))
    for _, proc in nlp.pipeline:
        doc = proc(doc)
    return [(t.text, t.tag_) for t in doc]


BACKENDS = ("local_lm", "endpoint", "wordnet")


def make_paraphraser(backend: str, *, model: str | None = None, base_url: str | None = None,
                     trust_remote_code: bool = False) -> Paraphraser:
    if backend == "local_lm":
        return LocalLMParaphraser(model=model, trust_remote_code=trust_remote_code)
    if backend == "endpoint":
        if not base_url or not model:
            raise ConsistbenchError("the endpoint paraphraser needs --base-url and --paraphrase-model")
        return EndpointParaphraser(base_url=base_url, model=model)
    if backend == "wordnet":
        return WordNetParaphraser()
    raise ConsistbenchError(f"unknown paraphrase backend {backend!r} (expected one of {', '.join(BACKENDS)})")

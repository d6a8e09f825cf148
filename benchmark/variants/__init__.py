"""Query-variant generators and the rules that define each variant type.

Each module defines one variant type once: the rule used to *generate* variants and the
predicate used to *audit* that a given pair is a variant of that type.

The paper's linguistic types (the ``consistency`` task):

- :mod:`consistbench.benchmark.variants.how_to`: rewrites among "How do I X?", "How to X", ... forms.
- :mod:`consistbench.benchmark.variants.plural_article`: noun number and a/an/the swaps.
- :mod:`consistbench.benchmark.variants.paraphrase`: pluggable paraphrasers (local LM, HTTP endpoint, WordNet).

Beyond the paper, the robust families (the ``consistency_robust`` tasks), reported separately:

- :mod:`consistbench.benchmark.variants.typo`: one or two character edits outside code tokens;
- :mod:`consistbench.benchmark.variants.surface`: case, a dropped question mark, spaces around punctuation;
- :mod:`consistbench.benchmark.variants.template`: the same question and passage under another prompt template.

:mod:`consistbench.benchmark.variants.spans` finds the code tokens the noise generators never touch.
:mod:`consistbench.benchmark.variants.english` loads the spaCy English pipeline that ``plural_article``
and the WordNet paraphraser share.
"""

VARIANT_TYPES = ("how_to", "plural_article", "paraphrase")  # the paper's linguistic types
ALL_TYPES = ("original", *VARIANT_TYPES)
ROBUST_TYPES = ("typo", "surface", "template")  # beyond the paper: surface noise and prompt format
NOISE_TYPES = ("typo", "surface")  # made from a question alone (`consistbench variants --types typo,surface`)
PAIR_TYPES = (*VARIANT_TYPES, *ROBUST_TYPES)  # every type a row can be paired with its original as
ROW_TYPES = (*ALL_TYPES, *ROBUST_TYPES)  # every variant_type a data row may carry

"""``consistbench ref reproduce --preset cpu|cpu-mini|paper``: the paper's table, end to end.

Stages (each writes its output atomically and is skipped when that output already exists, so a
crashed or interrupted run continues where it stopped; a half-trained model resumes from its
last checkpoint):

0. ``base``    -> ``base/`` only when ``consistbench doctor`` finds an error in the base model (e.g.
   SmolLM2's pad token is its eos token): the doctor's corrected copy, with the same weights,
   becomes the base of every later stage (training, weights, merge and the base row);
1. ``synth``   -> ``synth/synth.jsonl``: synthetic variants of train questions
   (:mod:`consistbench.reference_method.synth`);
   ``select``  -> ``synth/train.jsonl``: with ``questions_per_type`` set, a seeded choice of that
   many questions per variant type among those whose longest training sequence fits
   ``max_length`` (so the count holds after the trainer's length filter); else every group that
   fits, whole (so triplets and rows drop nothing and plain SFT sees exactly the triplet models' rows). With
   ``all_data_questions`` set, also ``synth/train_all.jsonl`` for the all-data and SFT models:
   that many of the chosen questions, each with one variant, the types in equal shares (the
   same training budget as one specialised model); else those two train on the union;
   ``search``  -> ``search/search.jsonl``, ``search/chosen.json``, ``search/search.png`` (presets with a
   ``search_grid``): each setting (learning rate, steps, alpha, margin, pooling layer) trains the
   all-data SFT + triplet model and is scored on ``search_task`` (the dev split), a line per setting as
   it finishes (a rerun skips scored settings); the highest dev mean of EM and RS wins (ties: fewer
   steps), and its model becomes ``models/sft_triplet_all``;
2. ``train``   -> ``models/<name>/``: plain SFT (``alpha = 0``) on all data, SFT + triplet on all
   data (the all-data model), and one SFT + triplet model per variant type
   (:mod:`consistbench.reference_method.train`), with the search's chosen setting when there is one. The ``sft`` row is SFT on the triplet-expanded rows
   (``sft_examples="triplets"``) or the paper's SFT on the rows, each once (``"rows"``); with
   ``sft_ablation`` the triplet-expanded one is trained as well, as ``sft_triplet_expanded``;
3. ``weights`` -> ``weights/weights.json`` + heatmap: consistency weights of the specialised
   models on dev queries (:mod:`consistbench.reference_method.consistency_weights`);
4. ``merge``   -> ``models/merged/``: ``theta_base + sum_k w_k^l delta_k^l``
   (:mod:`consistbench.reference_method.merge`);
   ``temperature`` -> ``search/temperature.jsonl``, ``search/temperature_chosen.json`` (presets with
   ``temperatures``): the weights at each temperature (from the similarities the weights stage
   kept), a merged candidate each, scored on ``search_task``; the best replaces ``models/merged``;
5. ``eval``    -> ``eval/<name>/``: every model through lm-eval (:func:`consistbench.benchmark.evaluate.run_eval`);
6. ``table``   -> ``results/results.{md,json,png}``: ROUGE-L, BLEU, EM, RS, BS per model; with
   ``paired``, merged minus base, SFT and the best specialised model (``consistbench compare``'s
   paired bootstrap: difference, 95% interval, p for EM, RS and BS).

Nothing before the eval stage reads the test split: the search and the temperature are scored on
``search_task`` only, and a preset whose search task is its table's task is refused.

``--extra-model NAME=DIR`` adds already-trained models (e.g. preference-based fusion) as rows:
they are evaluated like the others. Wall time per stage is kept in ``timings.json``.

Presets (:data:`.presets.PRESETS`) hold every setting; ``run.json`` records the preset a run directory was
started with and a different one is refused (use another ``-o RUN_DIR``).

The modules, top to bottom (each imports only from those below it; "|": independent siblings):

- :mod:`.cli`: the command's flags;
- :mod:`.stages`: one function per stage and :data:`.stages.STAGES`, their order (a new stage
  goes here, or in a module of its own just below it, and into that table; its settings are new
  :class:`.presets.Preset` fields with defaults);
- :mod:`.dev_search` (scoring candidates on the dev task, the best-on-dev rule: the search and
  temperature stages) | :mod:`.charts` (the search and results pictures);
- :mod:`.table` (the results table: rows, paired comparisons, markdown) | :mod:`.jobs` (training,
  evaluating, weighing and merging as the preset says);
- :mod:`.run_folder`: the run folder (:class:`.run_folder.Run`): paths, ``run.json``, timings, records;
- :mod:`.presets`: :class:`.presets.Preset` and :data:`.presets.PRESETS`.
"""

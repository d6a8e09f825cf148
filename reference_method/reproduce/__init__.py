"""``consistbench ref reproduce --preset cpu|cpu-mini|cpu-fair|paper|paper-full``: the paper's table, end to end.

Stages (each writes its output atomically and is skipped when that output already exists, so a
crashed or interrupted run continues where it stopped; a half-trained model resumes from its
last checkpoint; a LoRA model whose folder is gone is rebuilt from its kept adapter and card):

0. ``base``    -> ``base/`` only when ``consistbench doctor`` finds an error in the base model (e.g.
   SmolLM2's pad token is its eos token): the doctor's corrected copy, with the same weights,
   becomes the base of every later stage (training, weights, merge and the base row);
1. ``synth``   -> ``synth/synth.jsonl``: synthetic variants of train questions
   (:mod:`consistbench.reference_method.synth`);
   ``select``  -> ``synth/train.jsonl``: with ``questions_per_type`` set, a seeded choice of that
   many questions per variant type among those whose longest training sequence fits
   ``max_length``; else every group that fits, whole. With ``all_data_questions`` set, also
   ``synth/train_all.jsonl`` for the all-data and SFT models;
   ``search``  -> ``search/search.jsonl``, ``chosen.json``, ``search.png`` (presets with a
   ``search_grid``): each setting (learning rate, steps, alpha, margin, pooling layer) trains the
   all-data SFT + triplet model and is scored on ``search_task`` (the dev split); the highest dev
   mean of EM and RS wins (ties: fewer steps);
   ``triplet_search`` -> ``search/triplet_screen.jsonl``, ``triplet_search.jsonl``,
   ``triplet_chosen.json`` (presets with ``triplet_search``): the triplet term's settings (pooled
   positions, pooling layer, negatives, a margin from the measured distances) screened at step 0,
   the survivors trained briefly and scored on dev; the best is used by every SFT + triplet model;
2. ``train``   -> ``models/<name>/`` (+ ``<name>.adapter/``, ``<name>.card.json``): plain SFT, SFT +
   triplet on all data, one SFT + triplet model per variant type, the triplet-expanded ablation
   (``sft_ablation``) and the dose-matched SFT (``sft_dose``: ``synth/train_dose.jsonl``), each
   seeded arm once per seed (``name@sN``), every arm for ``epochs`` over its own data;
   ``checkpoints`` -> ``search/checkpoints.jsonl``, ``checkpoints_chosen.json`` (``eval_checkpoints``):
   one arm's checkpoints scored on dev;
3. ``weights`` -> ``weights/similarities.npz``, ``weights.json`` + heatmap (``@sN`` per seed):
   consistency weights of the specialised models on dev queries (the forward passes by
   :mod:`.similarities`, under the launcher when there is one);
4. ``merge``   -> ``models/merged/``: ``theta_base + sum_k w_k^l delta_k^l``;
   ``temperature`` -> ``search/temperature.jsonl``, ``temperature_chosen.json`` (``temperatures``,
   ``weights_distances``): a merge per (distance, temperature) scored on dev; the best becomes
   ``models/merged`` and every seed's merge;
   ``null_merges`` -> ``models/uniform/``, ``models/task_arithmetic/`` (``null_merges``; the scale
   chosen on dev among ``ta_scales``, ``search/ta_chosen.json``);
5. ``eval``    -> ``eval/<name>/``: every model through lm-eval;
6. ``table``   -> ``results/results.{md,json,png}`` and ``budgets.json``: ROUGE-L, BLEU, EM, RS, BS
   per arm (seed means), each arm's updates, sequences and tokens; with ``paired``, merged minus
   base, SFT, the dose-matched SFT, the best specialised model and the null merges (paired
   bootstrap; several seeds a side; with ``equivalence_margin`` the TOST).

Nothing before the eval stage reads the test split: every choice is scored on ``search_task``
only, and a preset whose search task is its table's task is refused.

``--launcher accelerate --accelerate-config ddp|ddp-multinode|deepspeed-zero3|fsdp|FILE`` runs each
training, the weights' forward passes and each evaluation under ``accelerate launch`` (:mod:`.launch`);
``--dry-run`` prints the plan without running anything (:mod:`.plan`). ``--fair`` adds the fair-test
choices (:data:`.presets.FAIR`) to a preset and ``--seeds`` sets its seeds (:func:`.presets.with_options`).

``--extra-model NAME=DIR`` adds already-trained models (e.g. preference-based fusion) as rows:
they are evaluated like the others. Wall time per stage is kept in ``timings.json``.

Presets (:data:`.presets.PRESETS`) hold every setting; ``run.json`` records the preset a run directory was
started with and a different one is refused (use another ``-o RUN_DIR``).

The modules, top to bottom (each imports only from those below it; "|": independent siblings):

- :mod:`.cli`: the command's flags;
- :mod:`.plan`: the dry run (stages, commands, memory, GPU-hours);
- :mod:`.stages`: the data, train, eval and table stages and :data:`.stages.STAGES`, their order;
- :mod:`.merge_stages` (weights, merge, temperature, null merges) | :mod:`.search_stages` (the
  grid search, the triplet search, the checkpoint curve);
- :mod:`.dev_search` (scoring candidates on the dev task, the best-on-dev rule) | :mod:`.charts`;
- :mod:`.table` | :mod:`.jobs` (configuring, training, adapters, budgets) | :mod:`.evaluation`
  (one model on one task) | :mod:`.weights_jobs` (similarities, weights, merge configs);
- :mod:`.run_folder`: the run folder (:class:`.run_folder.Run`): paths, ``run.json``, timings, records;
- :mod:`.launch` (the launcher, the shipped accelerate configs, the several-machine job board) |
  :mod:`.memory` (the memory plan from ``config.json``) | :mod:`.similarities` (the weights'
  forward passes, one process or several);
- :mod:`.presets`: :class:`.presets.Preset` and :data:`.presets.PRESETS`.
"""

"""Preference-based fusion baselines: consistency preference data, WRPO and MRPO on TRL's DPO trainer.

- :mod:`.data` (``consistbench ref prefs``): candidate answers from the target model (on-policy)
  and from source models, scored for accuracy and consistency, turned into preference pairs;
- :mod:`.wrpo_config`, :mod:`.wrpo_trainer`: Weighted-Reward Preference Optimization (Yang et al.,
  ICLR 2025);
- :mod:`.mrpo_config`, :mod:`.mrpo_trainer`: Multi-Reference Preference Optimization (Le et al., 2024);
- :mod:`.collator`: tokenization identical to evaluation, batches of chosen / rejected / source rows;
- :mod:`.train`: checks, reference log-probabilities, training, atomic save (``ref wrpo``, ``ref mrpo``);
- :mod:`.cli`: the three subcommands.

See docs/PREFERENCE.md for the formulas and every default with its source.
"""

"""Subcommands of the reference method, loaded by ``consistbench.benchmark.cli`` (one import per module).

``consistbench.reference_method.ref_group`` owns the ``consistbench ref`` group; each module imported below
adds its actions with ``@ref_command`` (under ``ref``) or ``@benchmark.cli.register`` (top level).
Add one import line per module; keep ``ref_group`` first.
"""

import consistbench.reference_method.ref_group  # noqa: F401  (the `ref` group; import first)
import consistbench.reference_method.weights_cli  # noqa: F401  (ref weights)
import consistbench.reference_method.merge.cli  # noqa: F401
import consistbench.reference_method.training_cli  # noqa: F401  (ref synth, ref train, doctor)
import consistbench.reference_method.preference.cli  # noqa: F401  (ref prefs, ref wrpo, ref mrpo)
import consistbench.reference_method.reproduce  # noqa: F401  (ref reproduce)

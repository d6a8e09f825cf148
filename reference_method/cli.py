"""``consistbench ref ACTION``: the reference method's command group.

Each action is registered by the ``register(ref_subparsers)`` function of the module that
drives it: ``synth`` and ``train`` (:mod:`~consistbench.reference_method.training_cli`),
``weights`` (:mod:`~consistbench.reference_method.weights_cli`), ``prefs``, ``wrpo`` and ``mrpo``
(:mod:`~consistbench.reference_method.preference.cli`), ``reproduce``
(:mod:`~consistbench.reference_method.reproduce.cli`).
"""

from __future__ import annotations

import argparse

from consistbench.reference_method import training_cli, weights_cli
from consistbench.reference_method.preference import cli as preference_cli
from consistbench.reference_method.reproduce import cli as reproduce_cli


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ref", help="the reference method: synthetic data, training, consistency weights, "
                                   "preference fusion, reproduction")
    rsub = p.add_subparsers(dest="ref_command", required=True, metavar="ACTION")
    for module in (training_cli, weights_cli, preference_cli, reproduce_cli):
        module.register(rsub)

"""The ``consistbench ref`` command group, shared by every reference-method subcommand.

Any module adds an action under ``ref`` with the :func:`ref_command` decorator::

    from consistbench.reference_method.ref_group import ref_command

    @ref_command
    def add(ref_sub):              # ref_sub: the ``ref`` group's subparsers object
        p = ref_sub.add_parser("weights", help="...")
        p.set_defaults(func=cmd_weights)

The group itself is registered once with :func:`consistbench.benchmark.cli.register`; it collects the
actions of whichever modules ``reference_method/cli.py`` imported. :func:`ref_subparsers`
returns the subparsers object after the parser has been built, for code that needs it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from consistbench.benchmark.cli import register

_ACTIONS: list[Callable[[argparse._SubParsersAction], None]] = []
_SUBPARSERS: list[argparse._SubParsersAction] = []


def ref_command(fn: Callable[[argparse._SubParsersAction], None]):
    """Register a function that adds one or more actions under ``consistbench ref``."""
    _ACTIONS.append(fn)
    return fn


def ref_subparsers() -> argparse._SubParsersAction | None:
    """The ``ref`` group's subparsers object of the most recently built parser (None before)."""
    return _SUBPARSERS[-1] if _SUBPARSERS else None


@register
def _add_ref_group(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ref", help="the reference method: synthetic data, training, consistency weights, reproduction")
    ref_sub = p.add_subparsers(dest="ref_command", required=True, metavar="ACTION")
    _SUBPARSERS.append(ref_sub)
    for add in _ACTIONS:
        add(ref_sub)

"""The one exception type users see: a clear, single-line problem description.

The CLI turns it into ``consistbench: error: <message>`` and exit status 2, so every module
raises it (or a subclass) for bad input instead of letting a traceback escape.
"""


class ConsistbenchError(Exception):
    """Bad input or an unusable environment, described in one line for the user."""


class DataError(ConsistbenchError):
    """A data or responses file that breaks the schema (the message names file and line)."""


class DataVersionError(DataError):
    """The data on disk is not the version a task (or a submission) was made for."""

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


def validation_message(exc, where: str) -> str:
    """One line naming the first bad field of a pydantic ``ValidationError`` (and how many more
    there are), prefixed with ``where`` (a file, a config key): the form every configuration
    and metadata error takes."""
    errors = exc.errors()
    err = errors[0]
    loc = ".".join(str(p) for p in err.get("loc", ())) or "(top level)"
    value = err.get("input")
    shown = ""
    if value is not None and not isinstance(value, (dict, list)):
        text = repr(value)  # clipped: the input may be an untrusted file's field
        shown = f" (got {text if len(text) <= 80 else text[:77] + '...'})"
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return f"{where}: {loc}: {err.get('msg')}{shown}{more}"

"""User-facing errors.

Every failure a user can cause or fix (bad input, missing model, impossible settings) is raised as
:class:`RefusalkitError` with a one-line message that says what to do next. The CLI prints that line
and exits non-zero; anything else is a bug and keeps its traceback.
"""


class RefusalkitError(Exception):
    """An error caused by input or environment, with an actionable one-line message."""


class RunTerminated(BaseException):
    """Raised in the main thread when the process receives SIGTERM, so that a run records
    ``failed`` in its status file and releases its lock like any other interruption. A
    BaseException, as KeyboardInterrupt is: no ``except Exception`` may swallow it."""

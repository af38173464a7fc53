"""The toolkit's own error types, so that a user's mistake and a bug in the toolkit can be told apart.

`InputError` (a `ValueError`, so callers' ``except ValueError`` keeps working) is raised for anything the user can
fix: a bad value, path, file, model or setting. The command line prints it as one line ``blindspots CMD: error: ...``
and exits 2; every other exception (a bug) keeps its traceback. Subclasses keep a second base where callers catch
the older type (a missing package is also an `ImportError`, a folder in use also a `RuntimeError`).

New code raises `InputError` (``from blindspots.errors import InputError``) for every check of user input.
"""

from __future__ import annotations

__all__ = ["InputError", "UsageError", "MissingDependency", "DownloadUnavailable", "TrainingDiverged",
           "RunRefused"]


class InputError(ValueError):
    """A user input error (bad value, path, file, model or setting): one line on the command line, exit code 2."""


UsageError = InputError  # the command line's older name for the same thing


class MissingDependency(InputError, ImportError):
    """An optional package (or shipped data) that this feature needs is not installed; the message says how."""


class DownloadUnavailable(InputError, RuntimeError):
    """Pretrained weights cannot be fetched here (offline, or not cached); the message says what to pass instead."""


class TrainingDiverged(InputError, FloatingPointError):
    """Training met a non-finite loss or weights (a learning rate or budget too large for the model)."""


class RunRefused(InputError):
    """A run store refuses a folder: it holds another run, other files, damaged or foreign work, or is in use."""

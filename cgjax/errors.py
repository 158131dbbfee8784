"""Errors that cgjax reports to users.

Every error a user can cause by feeding bad input is a :class:`CgjaxError`. Its message names
what is wrong and where (the modality, the file, the sample), so that the CLI can print it as one
line and exit non-zero instead of showing a traceback.
"""


class CgjaxError(Exception):
    """Base class of every user-facing cgjax error."""


class CohortError(CgjaxError, ValueError):
    """A cohort (its files or its arrays) is malformed."""


class CheckpointError(CgjaxError):
    """A checkpoint directory is missing, half-written, or incompatible."""


class OutputError(CgjaxError):
    """An output path cannot be written: it holds something cgjax did not write (and will not
    replace), or the filesystem refuses."""


class ConfigError(CgjaxError, ValueError):
    """An option or configuration value outside its allowed range. Raised by the config and options
    dataclasses at construction, so library users get the CLI's message (which names the flag)."""

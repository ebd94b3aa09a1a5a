"""The three kinds of failure a user must be able to tell apart.

A usage error (bad option, bad file, bad gate) is the user's to fix before any
number means anything; a gate failure is the model's verdict. CI systems
treat them differently (exit 4 versus exit 1), so they never share a class.
"""

from __future__ import annotations


class SeqgateError(Exception):
    """Base class: every error the plugin raises on purpose derives from it."""


class ConfigError(SeqgateError):
    """The user's configuration, files or gates are wrong; reported as a usage error."""


class DataError(ConfigError):
    """A dataset file or record is malformed; the message names the file and line."""


class ModelError(SeqgateError):
    """The model could not be loaded or did not behave like a sequence classifier."""


class GateFailure(AssertionError):
    """One or more gates were violated: the model's verdict, reported as a test failure."""

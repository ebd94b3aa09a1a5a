"""The three kinds of failure a user must be able to tell apart.

A usage error (bad option, bad file, bad gate) is the user's to fix before any
number means anything; a gate failure is the model's verdict. CI systems
treat them differently (exit 4 versus exit 1), so they never share a class.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


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


def user_line(exc: BaseException, root: Path | None = None) -> str | None:
    """``file:line`` of the deepest frame of ``exc`` in the user's own code (not in
    this plugin, the standard library or an installed package), relative to
    ``root`` (default: the working directory) when under it: where to look, in
    a one-line error that shows no traceback. None when no frame is theirs."""
    import sysconfig
    import traceback

    skipped = [Path(__file__).resolve().parent]
    skipped += [Path(sysconfig.get_paths()[key]).resolve() for key in ("stdlib", "purelib")]
    base = (root or Path.cwd()).resolve()
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if frame.filename.startswith("<"):
            continue  # <string>, <frozen ...>: no file to open
        path = Path(frame.filename).resolve()
        if any(path.is_relative_to(s) for s in skipped) or "site-packages" in path.parts:
            continue
        shown = path.relative_to(base) if path.is_relative_to(base) else path
        return f"{shown}:{frame.lineno}"
    return None


def raised_at(exc: BaseException, root: Path | None = None) -> str:
    """`` (raised at spam/tok.py:3)`` for a one-line error about the user's code
    that raised ``exc`` (:func:`user_line`), or nothing when no frame is theirs."""
    where = user_line(exc, root)
    return f" (raised at {where})" if where else ""


def as_share(value: float) -> str:
    """The hint for a share written as a percentage (``confidence = 95``,
    ``min_recall={"spam": 90}``), for the error that refuses it."""
    if 2.0 <= value <= 100.0:  # (1.5 is more likely a slip than 1.5%)
        return f" (a share, not a percentage: {value / 100:g} for {value:g}%)"
    return ""


def counted(n: int, noun: str) -> str:
    """``1 sample``, ``2 samples``, ``1 class``, ``3 classes``: a message about one
    sample reads as one."""
    if n == 1:
        return f"{n} {noun}"
    return f"{n} {noun}{'es' if noun.endswith(('s', 'x', 'ch', 'sh')) else 's'}"


def did_you_mean(word: str, choices: Iterable[str], cutoff: float = 0.75) -> str:
    """`` (did you mean `min_recall`?)`` for a near miss, else nothing."""
    import difflib

    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=cutoff)
    return f" (did you mean `{close[0]}`?)" if close else ""


def label_list(labels: Iterable[str], most: int = 12) -> str:
    """Class names for a message: all of a few, else the first and last ones and
    how many (a message listing 150 class names was a screenful, its point lost)."""
    names = [str(name) for name in labels]
    if len(names) <= most:
        return repr(names)
    head, tail = names[: most - 2], names[-2:]
    shown = ", ".join(map(repr, head)) + ", ..., " + ", ".join(map(repr, tail))
    return f"[{shown}] ({len(names)} classes)"

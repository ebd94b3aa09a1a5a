"""Hooks that pytest-seqgate offers to conftest.py files and other plugins.

Implement them in a conftest.py with the same names; pytest finds them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import pytest

    from pytest_seqgate.batching import Batch
    from pytest_seqgate.config import Settings
    from pytest_seqgate.evaluation import Evaluation

hookspec = pluggy.HookspecMarker("pytest")


@hookspec(firstresult=True)
def pytest_seqgate_load_model(spec: str, settings: Settings) -> Any:
    """Load a model the plugin does not know; return an ``nn.Module`` or None to pass.

    Example, for a Hugging Face model saved with ``save_pretrained`` (a folder,
    which the plugin does not read itself)::

        def pytest_seqgate_load_model(spec, settings):
            path = settings.resolve("model", spec)
            if path.is_dir():
                from transformers import AutoModelForSequenceClassification
                return AutoModelForSequenceClassification.from_pretrained(path)
            return None
    """


@hookspec(firstresult=True)
def pytest_seqgate_load_dataset(spec: str, role: str, settings: Settings) -> Any:
    """Load a dataset the plugin does not know (``role`` is ``eval_data`` or ``train_data``).

    Return a ``SequenceData``, or a map-style Dataset of (sequence, label) pairs,
    or None to let the plugin load it. A set ``seqgate_streaming`` streams (a file
    the plugin reads a window at a time) is never offered: it is never loaded
    whole. Example::

        def pytest_seqgate_load_dataset(spec, role, settings):
            if spec.endswith(".parquet"):
                import pandas as pd
                frame = pd.read_parquet(settings.resolve(role, spec))
                return list(zip(frame.tokens, frame.label))
    """


@hookspec(firstresult=True)
def pytest_seqgate_forward(model: Any, batch: Batch) -> Any:
    """Call a model whose forward takes something else; return its output, or None to pass.

    ``batch`` has ``inputs`` ``[B, T]``, ``lengths`` ``[B]`` (CPU), ``padding``
    ``[B, T]`` (bool, True on padded steps), ``attention_mask`` ``[B, T]`` (int64,
    1 on real steps, built on first use), ``index`` (the rows' dataset
    positions) and ``token_type_ids`` ``[B, T]`` (a text pair's segments, 0 on
    padding; None where the set has none). Example, for a model that wants
    time-major input::

        def pytest_seqgate_forward(model, batch):
            return model(batch.inputs.t(), batch.lengths)
    """


@hookspec
def pytest_seqgate_metrics(evaluation: Evaluation) -> dict[str, float | None] | None:
    """Add named metrics; gate them with ``min_<name>`` / ``max_<name>`` marker keys.

    ``evaluation.metrics.confusion_matrix``, ``evaluation.predictions`` and
    ``evaluation.targets`` are available. A metric that is undefined on this set
    (a class with no samples) is None or NaN: a gate on it fails and says so, as
    one on a built-in metric does, and ``value()`` reads it as None. Example::

        def pytest_seqgate_metrics(evaluation):
            cm = evaluation.metrics.confusion_matrix
            spam = evaluation.labels.index("spam")
            missed = cm[spam].sum() - cm[spam, spam]
            return {"spam_miss_rate": float(missed / cm[spam].sum())}
    """


@hookspec
def pytest_seqgate_report(evaluations: list[Evaluation], config: pytest.Config) -> None:
    """Receive the finished evaluations (gates included) at the end of the session.

    Example, to post a summary to a metrics store::

        def pytest_seqgate_report(evaluations, config):
            for ev in evaluations:
                push_metric("macro_f1", ev.metrics.value("macro_f1"), tags={"model": ev.name})
    """

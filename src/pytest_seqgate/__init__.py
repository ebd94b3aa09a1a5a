"""pytest-seqgate: make the quality of a PyTorch sequence classifier a CI gate.

Only names are re-exported here; importing this package does not import
torch or pytest, so scripts and the plugin entry point stay cheap to load.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_seqgate.exceptions import ConfigError, DataError, GateFailure, ModelError, SeqgateError

__version__ = "0.1.0"

#: The JSON report's ``schema`` field; a reader checks it before trusting the rest.
REPORT_SCHEMA = "seqgate-report/1"
#: The JSON Schema (draft 2020-12) of that report, shipped with the package, so a CI
#: job can validate the files it consumes against the version that wrote them.
REPORT_SCHEMA_FILE = Path(__file__).with_name("seqgate-report-1.schema.json")
#: The report's ``metrics`` and ``per_class`` entries, by name: here, free of torch,
#: for the gates that name them at collection.
SUMMARY_METRICS = (
    "accuracy",
    "balanced_accuracy",
    "macro_precision",
    "macro_recall",
    "macro_f1",
    "weighted_f1",
    "micro_f1",
    "mcc",
    "kappa",
    "no_information_rate",
)
PER_CLASS_METRICS = ("precision", "recall", "f1")

__all__ = [
    "REPORT_SCHEMA",
    "REPORT_SCHEMA_FILE",
    "ConfigError",
    "DataError",
    "Evaluation",
    "GateFailure",
    "ModelError",
    "SeqgateError",
    "SequenceData",
    "Settings",
    "__version__",
    "evaluate",
]

if TYPE_CHECKING:
    from pytest_seqgate.config import Settings
    from pytest_seqgate.data import SequenceData
    from pytest_seqgate.evaluation import Evaluation, evaluate

_LAZY = {
    "Settings": "pytest_seqgate.config",
    "SequenceData": "pytest_seqgate.data",
    "Evaluation": "pytest_seqgate.evaluation",
    "evaluate": "pytest_seqgate.evaluation",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pytest_seqgate' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)

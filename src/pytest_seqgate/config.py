"""One typed, validated settings object built from ini keys and CLI options.

Every option is declared once, in ``OPTIONS``; the pytest glue turns that
table into ``addini``/``addoption`` calls, and :meth:`Settings.build` turns the
raw strings back into typed values. Keeping the table here (and not in
plugin.py) means the names, defaults and parsing rules cannot drift apart
between the CLI, the ini file and scripts that use the core without pytest.
"""

from __future__ import annotations

import argparse
import json
import numbers
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

from pytest_seqgate.exceptions import ConfigError, as_share, counted, did_you_mean

IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
OUTPUT_KINDS = ("auto", "logits", "probabilities")
DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
# How the small text file that Git LFS leaves in place of an unfetched file begins.
LFS_POINTER = b"version https://git-lfs.github.com/spec/"


def _near_file(path: Path, value: str) -> str:
    """`` (did you mean `data/test.jsonl`?)`` for a misspelt file name, or the
    folder that is missing: "file not found" alone leaves the user to list it."""
    import difflib

    given = Path(value)
    if not path.parent.is_dir():
        return f" (there is no folder {given.parent} either)" if given.parent.name else ""

    def likeness(other: Path) -> tuple[float, bool]:
        # Stems, not names: a shared ".jsonl" made other.jsonl look like test.jsonl.
        ratio = difflib.SequenceMatcher(None, path.stem, other.stem).ratio()
        return ratio, other.suffix == path.suffix

    try:
        scored = [(likeness(p), p.name) for p in path.parent.iterdir() if p.is_file()]
    except OSError:  # a folder it may not list: the hint is a courtesy, the error stands
        return ""
    best = max(scored, default=None)
    if best is None or best[0][0] < 0.75:
        return ""
    return f" (did you mean `{given.parent / best[1]}`?)"


@dataclass(frozen=True)
class Option:
    """One setting: its ini key is ``seqgate_<name>``, its flag ``--seqgate-<name>``."""

    name: str
    help: str
    kind: str = "str"  # str | int | float | bool | list | lines | paths
    default: Any = None

    @property
    def ini(self) -> str:
        return f"seqgate_{self.name}"

    @property
    def flag(self) -> str:
        return "--seqgate-" + self.name.replace("_", "-")

    @property
    def off_flag(self) -> str:
        """``--seqgate-no-<name>``, a bool setting's way off for one run: its own flag
        can only turn it on, and an ini's ``true`` (or a default of true, as
        ``keep_scores``) had no CLI way back."""
        return "--seqgate-no-" + self.name.replace("_", "-")

    @property
    def ini_type(self) -> str | None:
        return "linelist" if self.kind in ("list", "lines", "paths") else None


OPTIONS: tuple[Option, ...] = (
    Option(
        "model",
        "model: exported program (.pt2), TorchScript file, state dict (.pt, .safetensors; "
        "with seqgate_model_factory), or pkg.module:callable returning an nn.Module",
    ),
    Option(
        "model_factory",
        "pkg.module:callable building the architecture a state dict is loaded into",
    ),
    Option(
        "eval_data",
        "evaluation set: .jsonl, .json, .csv, .tsv (or gzipped), .parquet, a pattern of "
        "shards, .arrow, .pt, or pkg.module:callable",
    ),
    Option("train_data", "training set (same forms); enables the train/test gap and leakage"),
    Option(
        "labels", "class names in index order (ini: one per line; CLI: comma separated)", "list"
    ),
    Option(
        "columns",
        "the columns a record's fields are read from, field=column (ini: one per line; "
        "CLI: commas), e.g. text=sentence, label=category",
        "list",
    ),
    Option(
        "tokenizer",
        "pkg.module:callable mapping a text to token ids, an object with .encode(text), a "
        "tokenizer.json file, or a SentencePiece .model file",
    ),
    Option("device", "auto (default), cpu, cuda, cuda:N or mps", default="auto"),
    Option("batch_size", "sequences per batch (default 64)", "int", 64),
    Option("precision", "fp32 (default), bf16 or fp16: autocast the forward pass", default="fp32"),
    Option(
        "outputs",
        "what the model returns: auto (default), logits, or probabilities (a softmax or "
        "sigmoid layer at the end)",
        default="auto",
    ),
    Option("report", "report file(s); the suffix picks the format: .json .md .html", "paths", ()),
    Option("baseline", "a stored JSON report (or saved baseline) to compare against"),
    Option(
        "save_baseline",
        "write the report with per-sample predictions here, to compare later runs against",
    ),
    Option(
        "recall_floor",
        "recall below which a class is flagged as hidden by accuracy (default 0.5)",
        "float",
        0.5,
    ),
    Option(
        "train_sample",
        "at most this many training sequences are evaluated, seeded (default 10000)",
        "int",
        10_000,
    ),
    Option("seed", "seed for every random choice: subsampling, bootstrap (default 0)", "int", 0),
    Option(
        "confidence",
        "confidence level of the intervals in the report (default 0.95)",
        "float",
        0.95,
    ),
    Option(
        "interval",
        "interval method for rates: wilson (default) or clopper_pearson",
        default="wilson",
    ),
    Option(
        "bootstrap",
        "bootstrap resamples for F1, macro F1, balanced accuracy, MCC "
        "(default 1000; 0 turns them off)",
        "int",
        1000,
    ),
    Option(
        "gate_on",
        "what a gate compares: point (default) or lower_bound of the interval",
        default="point",
    ),
    Option(
        "min_support",
        "per-class gates fail when the class has fewer eval samples (default 0: off)",
        "int",
        0,
    ),
    Option(
        "threshold",
        "decision threshold on the positive class's probability, for binary "
        "models (default: argmax)",
        "float",
    ),
    Option(
        "near_duplicate_threshold",
        "n-gram Jaccard at or above which an eval sequence nearly copies a training one "
        "(default 0.9; 0 turns the check off)",
        "float",
        0.9,
    ),
    Option(
        "padding_check",
        "padded sequences sampled to check that padding does not change the "
        "output (default 64; 0 turns it off)",
        "int",
        64,
    ),
    Option(
        "gates",
        "gates as test items, one per line, e.g. 'recall[spam] >= 0.9' or "
        "'macro_f1 >= 0.85'; end a line with '; xfail: reason' for a known-weak class",
        "lines",
    ),
    Option("slice_by", "record keys to slice metrics by (ini: one per line; CLI: commas)", "list"),
    Option(
        "streaming",
        "read the eval and training sets (.jsonl, .json, .csv, .tsv, .parquet, .arrow) a "
        "window at a time: memory grows with the window, not the file (needs seqgate_labels)",
        "bool",
        False,
    ),
    Option(
        "keep_scores",
        "keep per-sample class probabilities (for AP, ROC AUC, curves, "
        "ECE); turn off for huge streamed sets",
        "bool",
        True,
    ),
    Option("progress", "show inference progress (default: on a TTY, off under CI=true)", "bool"),
    Option(
        "cache",
        "reuse predictions from an unchanged earlier run (kept under pytest's "
        "cache folder; xdist workers always share one run's predictions)",
        "bool",
        False,
    ),
    Option(
        "trust_checkpoints",
        "allow full unpickling of checkpoints that weights_only loading refuses (unsafe)",
        "bool",
        False,
    ),
)

OPTIONS_BY_NAME = {option.name: option for option in OPTIONS}


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, but got {text!r}")


def _parse_scalar(option: Option, text: str) -> Any:
    if option.kind == "int":
        return int(text)
    if option.kind == "float":
        return float(text)
    if option.kind == "bool":
        return _parse_bool(text)
    return text


def cli_type(option: Option) -> Callable[[str], Any]:
    """An argparse ``type=`` that quotes the bad value, so the error reads at a glance."""

    def parse(text: str) -> Any:
        try:
            value = _parse_scalar(option, text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {_KIND_NAMES[option.kind]} for {option.flag}, but got {text!r}"
            ) from None
        if option.kind == "lines":  # whole lines, commas included; the flag repeats
            return [text.strip()]
        if option.kind in ("list", "paths"):
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    return parse


# The fields seqgate reads a record by (a .jsonl line's keys, a table's columns).
RECORD_FIELDS = (
    "label",
    "text",
    "text_pair",
    "tokens",
    "features",
    "attention_mask",
    "token_type_ids",
)


def parse_columns(entries: Sequence[str] | None, setting: str) -> dict[str, str]:
    """``field=column`` entries as {field: column}. A Hugging Face dataset names its
    text ``sentence`` or ``sms``, a spreadsheet its classes ``category``: the
    mapping reads them where they are, so no file is rewritten and no loader
    written for a name."""
    fields: dict[str, str] = {}
    for entry in entries or ():
        field_name, mark, column = (part.strip() for part in entry.partition("="))
        if not mark or not field_name or not column:
            raise ConfigError(
                f"{setting}: expected field=column, like text=sentence or label=category, "
                f"but got {entry!r}"
            )
        if field_name not in RECORD_FIELDS:
            hint = (
                f" (the field comes first: {column}={field_name})"
                if column in RECORD_FIELDS
                else did_you_mean(field_name, RECORD_FIELDS, 0.6)
            )
            raise ConfigError(
                f"{setting}: {field_name!r} in {entry!r} is not a field seqgate reads; the "
                f"fields are {', '.join(RECORD_FIELDS)}{hint}"
            )
        if field_name in fields:
            raise ConfigError(
                f"{setting}: {field_name!r} is read from both {fields[field_name]!r} and "
                f"{column!r}; give it one column"
            )
        twice = [name for name, taken in fields.items() if taken == column]
        if twice:
            raise ConfigError(
                f"{setting}: the column {column!r} is read as both {twice[0]!r} and "
                f"{field_name!r}; a column gives one field"
            )
        if column != field_name:
            fields[field_name] = column
    return fields


def _split_lines(value: Sequence[str] | str, commas: bool = True) -> list[str]:
    items = [value] if isinstance(value, str) else list(value)
    out: list[str] = []
    for item in items:
        text = item.replace(",", "\n") if commas else item
        out.extend(part.strip() for part in text.splitlines())
    return [part for part in out if part]


@dataclass(frozen=True)
class Settings:
    """Everything the core needs to know, typed and checked.

    ``sources`` remembers where each value came from (``--seqgate-model`` or
    ``seqgate_model (ini)``) so that an error can say which setting to fix.
    """

    rootdir: Path = field(default_factory=Path.cwd)
    model: str | None = None
    model_factory: str | None = None
    eval_data: str | None = None
    train_data: str | None = None
    labels: tuple[str, ...] | None = None
    columns: tuple[str, ...] | None = None
    tokenizer: str | None = None
    device: str = "auto"
    batch_size: int = 64
    precision: str = "fp32"
    outputs: str = "auto"
    report: tuple[Path, ...] = ()
    baseline: str | None = None
    save_baseline: str | None = None
    recall_floor: float = 0.5
    train_sample: int = 10_000
    seed: int = 0
    confidence: float = 0.95
    interval: str = "wilson"
    bootstrap: int = 1000
    gate_on: str = "point"
    min_support: int = 0
    threshold: float | None = None
    near_duplicate_threshold: float = 0.9
    padding_check: int = 64
    slice_by: tuple[str, ...] | None = None
    gates: tuple[str, ...] | None = None
    streaming: bool = False
    keep_scores: bool = True
    progress: bool | None = None
    cache: bool = False
    trust_checkpoints: bool = False
    sources: dict[str, str] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        """A script's ``Settings(batch_size="64", labels="ham,spam")`` is read as an
        ini's text is, and checked as the plugin's settings are: a wrong value is
        one ConfigError naming it, not a TypeError deep in the inference loop."""
        object.__setattr__(self, "rootdir", Path(self.rootdir))
        for option in OPTIONS:
            value = getattr(self, option.name)
            typed = _typed(option, value, self.source(option.name))
            if typed is not value:
                object.__setattr__(self, option.name, typed)
        self.validate()

    def source(self, name: str) -> str:
        """Human name of the setting ``name``, as the user wrote it."""
        return self.sources.get(name, OPTIONS_BY_NAME[name].ini)

    @property
    def column_of(self) -> dict[str, str]:
        """``seqgate_columns`` as {field: column}: where each field a record is read
        by comes from, for the fields that do not come from their own name."""
        return parse_columns(self.columns, self.source("columns"))

    def display(self, path: Path) -> str:
        """``path`` relative to the rootdir when it is inside it: shorter in messages."""
        try:
            return str(path.relative_to(self.rootdir))
        except ValueError:
            return str(path)

    def require_binary(self, classes: int | None) -> None:
        """``seqgate_threshold`` decides between two classes; with more it means
        nothing, and the run stops before any inference (None: not known yet)."""
        if self.threshold is not None and classes not in (None, 2):
            raise ConfigError(
                f"{self.source('threshold')} applies to binary models, but this one has "
                f"{classes} classes; remove it to decide by the most probable class"
            )

    def resolve(self, name: str, value: str) -> Path:
        path = Path(value)
        return path if path.is_absolute() else self.rootdir / path

    def streams(self, name: str) -> bool:
        """Whether seqgate_streaming reads the data setting ``name`` (eval_data,
        train_data) a window at a time: a file of a format read by lines or by rows.
        A training set in another form (a .pt file, an import path) is read whole."""
        spec = getattr(self, name)
        if not self.streaming or spec is None or is_import_path(spec):
            return False
        path = self.resolve(name, spec)
        return data_suffix(path) in (".jsonl", ".json", ".csv", ".tsv") or table_set(path)

    def existing(self, name: str) -> Path:
        """The file named by setting ``name``, which must exist (files are checked when
        loaded, not here, so that loader hooks can take specs that are not files)."""
        value = getattr(self, name)
        path = self.resolve(name, value)
        if name in ("eval_data", "train_data") and data_shards(path):
            return path  # a pattern of shards, read in name order as one set
        if name == "model" and pretrained_folder(path):
            return path  # a Hugging Face save_pretrained folder
        if path.is_dir() and name in ("eval_data", "train_data"):
            if saved_dataset(path):
                return path  # a Hugging Face Dataset.save_to_disk folder
            splits = _saved_splits(path)
            if splits:
                raise ConfigError(
                    f"{self.source(name)}: {value} holds the splits {splits} of a Hugging "
                    f"Face DatasetDict (save_to_disk); name one split's folder: "
                    f"{Path(value) / splits[-1]}"
                )
        if not path.is_file():
            # A CLI path given from a subfolder is read from the rootdir, not from
            # where pytest ran: say so, or "../data/x" looks like it should exist.
            relative = ""
            if not Path(value).is_absolute():
                relative = f" (read from the rootdir, {self.rootdir})"
            pattern = is_pattern(path)
            what = (
                f"{value} is a folder, not a file"
                if path.is_dir()
                else f"file not found: {value}{_near_file(path, value)}"
            )
            load_it = ""
            files = _matches(path) if pattern else []
            data = name in ("eval_data", "train_data")
            if pattern and data and data_suffix(path) in SHARD_SUFFIXES:
                raise ConfigError(
                    f"{self.source(name)}: no file matches the pattern {value}{relative}"
                )
            if pattern:
                # Shards of another format (*.pt, *.arrow): the plugin reads one file.
                what = (
                    f"{value} is a pattern ({counted(len(files), 'file')} match it), and "
                    f"seqgate reads one file, or a pattern of .jsonl, .json, .csv, .tsv or "
                    f".parquet files (shards), not of {data_suffix(path) or 'other'} files"
                )
            elif path.is_dir():
                files = [p for p in path.iterdir() if p.is_file()]
                shardable = sorted(p for p in files if data_suffix(p) in SHARD_SUFFIXES)
                if data and shardable:
                    # The hub's layout (data/test-00000-of-00002.parquet), Spark's
                    # (part-00000.jsonl): one split's shards, named by a pattern.
                    first = shardable[0].name
                    suffix = "".join(shardable[0].suffixes[-2 if first.endswith(".gz") else -1 :])
                    shards = f"{first.split('-')[0]}-*{suffix}" if "-" in first else f"*{suffix}"
                    raise ConfigError(
                        f"{self.source(name)}: {what}{relative}; name one file in it, or one "
                        f"split's shards with a pattern: {Path(value) / shards}"
                    )
            if (path.is_dir() or pattern) and name in ("model", "eval_data", "train_data"):
                # A Hugging Face save_pretrained or save_to_disk folder, or shards: the
                # plugin reads files, and code the user writes reads the rest.
                hook = "load_model" if name == "model" else "load_dataset"
                load_it = (
                    f"; {'name the file in it, or ' if path.is_dir() else ''}load "
                    f"{'the folder' if path.is_dir() else 'the files'} in code: "
                    f"seqgate_{name} = 'pkg.module:callable', or a pytest_seqgate_{hook} hook"
                )
            raise ConfigError(f"{self.source(name)}: {what}{relative}{load_it}")
        with path.open("rb") as handle:
            start = handle.read(len(LFS_POINTER))
        if start == LFS_POINTER:
            # A checkout without LFS leaves these ~130-byte text files in place of
            # checkpoints and data sets; every reader would fail on them obscurely.
            raise ConfigError(
                f"{self.source(name)}: {value} is a Git LFS pointer, not the file it stands "
                f"for: the checkout did not fetch the LFS files; run `git lfs pull` (on GitHub "
                f"Actions, actions/checkout with `lfs: true`)"
            )
        return path

    @classmethod
    def build(
        cls,
        rootdir: Path,
        lookup: Callable[[Option], tuple[Any, str] | None],
    ) -> Settings:
        """Build settings from ``lookup(option) -> (raw value, source)`` or None.

        The lookup hides where values live (argparse namespace, ini file,
        a dict in a script); CLI-wins precedence is the lookup's business.
        """
        values: dict[str, Any] = {}
        sources: dict[str, str] = {}
        for option in OPTIONS:
            found = lookup(option)
            if found is None:
                continue
            raw, source = found
            sources[option.name] = source
            values[option.name] = _convert(option, raw, source)
        return cls(rootdir=rootdir, sources=sources, **values)

    @classmethod
    def from_dict(cls, rootdir: Path | str = ".", **raw: Any) -> Settings:
        """Settings for scripts: ``Settings.from_dict(model="m.pt", eval_data="e.jsonl")``."""
        unknown = sorted(set(raw) - set(OPTIONS_BY_NAME))
        if unknown:
            # The ini's spelling (seqgate_model) or a slip (modle): the name meant.
            meant = [
                name + did_you_mean(name.removeprefix("seqgate_"), OPTIONS_BY_NAME, 0.8)
                for name in unknown
            ]
            raise ConfigError(
                f"unknown {'setting' if len(unknown) == 1 else 'settings'} {', '.join(meant)}; "
                f"known: " + ", ".join(OPTIONS_BY_NAME)
            )

        def lookup(option: Option) -> tuple[Any, str] | None:
            if option.name not in raw or raw[option.name] is None:
                return None
            return raw[option.name], option.name

        return cls.build(Path(rootdir).resolve(), lookup)

    def validate(self) -> None:
        """Checks that need no file contents: value ranges, device strings, paths exist."""
        if not DEVICE.match(self.device):
            raise ConfigError(
                f"{self.source('device')}: expected auto, cpu, cuda, cuda:N or mps, "
                f"but got {self.device!r}"
            )
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise ConfigError(
                f"{self.source('precision')}: expected fp32, bf16 or fp16, but got "
                f"{self.precision!r}"
            )
        if self.outputs not in OUTPUT_KINDS:
            raise ConfigError(
                f"{self.source('outputs')}: expected auto, logits or probabilities, but got "
                f"{self.outputs!r}"
            )
        if self.batch_size < 1:
            raise ConfigError(
                f"{self.source('batch_size')}: expected a positive integer, "
                f"but got {self.batch_size}"
            )
        if self.train_sample < 1:
            raise ConfigError(
                f"{self.source('train_sample')}: expected a positive integer, "
                f"but got {self.train_sample}"
            )
        if self.interval not in ("wilson", "clopper_pearson"):
            raise ConfigError(
                f"{self.source('interval')}: expected wilson or clopper_pearson, "
                f"but got {self.interval!r}"
            )
        if self.gate_on not in ("point", "lower_bound"):
            raise ConfigError(
                f"{self.source('gate_on')}: expected point or lower_bound, but got {self.gate_on!r}"
            )
        if self.threshold is not None and not 0.0 < self.threshold < 1.0:
            raise ConfigError(
                f"{self.source('threshold')}: expected a probability in (0, 1), "
                f"but got {self.threshold}{as_share(self.threshold)}"
            )
        for name in ("bootstrap", "min_support"):
            if getattr(self, name) < 0:
                raise ConfigError(
                    f"{self.source(name)}: expected 0 or a positive integer, "
                    f"but got {getattr(self, name)}"
                )
        if self.padding_check < 0:
            raise ConfigError(
                f"{self.source('padding_check')}: expected 0 (off) or a positive "
                f"integer, but got {self.padding_check}"
            )
        for name in ("recall_floor", "near_duplicate_threshold"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(
                    f"{self.source(name)}: expected a number in [0, 1], but got "
                    f"{value}{as_share(value)}"
                )
        if not 0.0 < self.confidence < 1.0:
            raise ConfigError(
                f"{self.source('confidence')}: expected a number in (0, 1), "
                f"but got {self.confidence}{as_share(self.confidence)}"
            )
        if self.labels is not None and len(set(self.labels)) != len(self.labels):
            dupes = sorted({x for x in self.labels if self.labels.count(x) > 1})
            raise ConfigError(
                f"{self.source('labels')}: class names must be unique, "
                f"but {', '.join(map(repr, dupes))} {'repeats' if len(dupes) == 1 else 'repeat'}"
            )
        if self.labels is not None and len(self.labels) < 2:
            spaced = len(self.labels) == 1 and len(self.labels[0].split()) > 1
            raise ConfigError(
                f"{self.source('labels')}: a classifier needs at least two "
                f"classes, but got {list(self.labels)}"
                + (
                    f" (one name with spaces: give one class per line, or separate them "
                    f"with commas: {', '.join(self.labels[0].split())})"
                    if spaced
                    else ""
                )
            )
        parse_columns(self.columns, self.source("columns"))
        for name in ("model_factory", "tokenizer"):
            value = getattr(self, name)
            if value is None or IMPORT_PATH.match(value):
                continue
            if name == "tokenizer" and value.lower().endswith(TOKENIZER_SUFFIXES):
                continue  # a tokenizer.json (as save_pretrained writes it), a SentencePiece model
            raise ConfigError(
                f"{self.source(name)}: expected an import path like 'pkg.module:callable'"
                + (
                    ", a tokenizer.json file or a SentencePiece .model file"
                    if name == "tokenizer"
                    else ""
                )
                + f", but got {value!r}"
            )
        if self.model_factory is not None and self.model is not None and is_import_path(self.model):
            raise ConfigError(
                f"{self.source('model_factory')} is only used with a state-dict checkpoint "
                f"file, but {self.source('model')} is the import path {self.model!r}; remove "
                f"seqgate_model_factory (for one run: --seqgate-model-factory=)"
            )
        if self.save_baseline is not None and not self.save_baseline.endswith(".json"):
            raise ConfigError(
                f"{self.source('save_baseline')}: a baseline is a JSON file; "
                f"give a path ending in .json, not {self.save_baseline!r}"
            )
        # Known from the names alone: said at collection, not at each test's setup.
        # (A conftest.py's eval set clears eval_data, and is evaluated in memory.)
        if self.streaming and self.eval_data is not None and not self.streams("eval_data"):
            raise ConfigError(
                f"{self.source('streaming')}: streaming reads a .jsonl, .json, .csv or "
                f".tsv (gzipped too), .parquet or .arrow eval set (or a save_to_disk "
                f"folder) a window at a time, but "
                f"{self.source('eval_data')} is {self.eval_data!r}; convert it to .jsonl "
                f"or .parquet, or evaluate it in memory (--seqgate-no-streaming for one run)"
            )
        streamed = [n for n in ("eval_data", "train_data") if self.streams(n)]
        if streamed and self.labels is None:
            raise ConfigError(
                f"{self.source('streaming')}: a streamed "
                f"{'eval set' if streamed[0] == 'eval_data' else 'training set'} is read a "
                f"window at a time, so the class names must be known before it is: set "
                f"seqgate_labels, in the model's output order"
            )
        for path in self.report:
            why = unwritable_report(path)
            if why:
                raise ConfigError(f"{self.source('report')}: {why}")


REPORT_SUFFIXES = (".json", ".md", ".html")
_SUFFIX_ALIASES = {".htm": ".html", ".markdown": ".md"}


def unwritable_report(path: Path) -> str | None:
    """Why seqgate writes no report at ``path`` (its suffix names no format), or None."""
    if path.suffix in REPORT_SUFFIXES:
        return None
    return (
        f"the suffix picks the format and must be .json, .md or .html, but got "
        f"{str(path)!r}{_report_meant(path)}"
    )


def _report_meant(path: Path) -> str:
    """The report file a near miss meant: ``r.JSON``, ``r.htm``, or a folder."""
    suffix = path.suffix.lower()
    if suffix in REPORT_SUFFIXES or suffix in _SUFFIX_ALIASES:
        return f" (did you mean {str(path.with_suffix(_SUFFIX_ALIASES.get(suffix, suffix)))!r}?)"
    if not path.suffix:
        return f" (a folder? name a file in it: {str(path / 'seqgate.json')!r})"
    return ""


def pretrained_folder(path: Path) -> bool:
    """Whether ``path`` is a folder a Hugging Face model's ``save_pretrained`` wrote:
    its ``config.json`` and its weights."""
    return (path / "config.json").is_file() and any(
        (path / name).is_file()
        for name in (
            "model.safetensors",
            "model.safetensors.index.json",
            "pytorch_model.bin",
            "pytorch_model.bin.index.json",
        )
    )


def saved_dataset(path: Path) -> bool:
    """Whether ``path`` is a folder ``datasets.Dataset.save_to_disk`` wrote: Arrow
    files, with ``state.json`` naming them and ``dataset_info.json`` the features."""
    return (path / "state.json").is_file() and (path / "dataset_info.json").is_file()


ARROW_SUFFIXES = (".arrow", ".feather")
# The tokenizer files seqgate_tokenizer reads: the tokenizers library's, SentencePiece's.
TOKENIZER_SUFFIXES = (".json", ".model")
TABLE_SUFFIXES = (".parquet", *ARROW_SUFFIXES)


def table_set(path: Path) -> bool:
    """Whether a data setting names a set kept in Arrow's formats, read by rows
    (a .parquet file or pattern of shards, an .arrow or .feather file, a
    save_to_disk folder), not by lines."""
    return data_suffix(path) in TABLE_SUFFIXES or (path.is_dir() and saved_dataset(path))


def _saved_splits(path: Path) -> list[str]:
    """The splits of a ``DatasetDict.save_to_disk`` folder, or [] where it is none."""
    try:
        splits = json.loads((path / "dataset_dict.json").read_text(encoding="utf-8"))["splits"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [str(split) for split in splits] if isinstance(splits, list) else []


def is_pattern(path: Path) -> bool:
    """Whether a data setting is a glob pattern (``data/test-*.parquet``), not a file."""
    return any(mark in str(path) for mark in "*?[") and not path.exists()


SHARD_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet")


def data_shards(path: Path) -> list[Path] | None:
    """The files a pattern names (``data/test-*.parquet``, ``part-*.jsonl.gz``: a
    split kept in shards, as the Hugging Face hub keeps its Parquet files and
    Spark writes its output), in name order, as ``load_dataset(..., data_files=...)``
    reads them; None where ``path`` is no pattern of .jsonl, .json, .csv, .tsv or
    .parquet files, or matches none."""
    if not is_pattern(path) or data_suffix(path) not in SHARD_SUFFIXES:
        return None
    return sorted(_matches(path)) or None


def shard_name(pattern: Path, display: str, file: Path) -> str:
    """A shard's name in messages: the pattern as it is shown (``display``), its
    globbed part replaced by the file's (``data/test-*.jsonl`` names
    ``data/test-00001.jsonl``, wherever in the path the pattern's marks are)."""
    parts = pattern.parts
    globbed = len(parts) - next(i for i, part in enumerate(parts) if set(part) & set("*?["))
    return str(Path(*Path(display).parts[:-globbed], *file.parts[-globbed:]))


def _matches(pattern: Path) -> list[Path]:
    """The files a glob pattern names (``data/test-*.parquet``)."""
    anchor = Path(pattern.anchor or ".")
    try:
        return [p for p in anchor.glob(str(pattern.relative_to(anchor))) if p.is_file()]
    except (ValueError, OSError, NotImplementedError):
        return []


def data_suffix(path: Path) -> str:
    """The format a data file's name says: ``.jsonl`` for ``test.jsonl.gz`` too,
    and for ``.ndjson`` (another name of JSON lines)."""
    suffixes = [s.lower() for s in path.suffixes]
    suffix = path.suffix.lower()
    if (
        len(suffixes) >= 2
        and suffix == ".gz"
        and suffixes[-2] in (".jsonl", ".ndjson", ".json", ".csv", ".tsv")
    ):
        suffix = suffixes[-2]
    return ".jsonl" if suffix == ".ndjson" else suffix


def is_import_path(value: str) -> bool:
    """``pkg.module:callable`` rather than a file. Only Windows has drives, so only
    there is a one-letter module (``m:build``) read as a drive-relative file (``C:model.pt``)."""
    return bool(IMPORT_PATH.match(value)) and (len(value.split(":")[0]) > 1 or os.name != "nt")


def _convert(option: Option, raw: Any, source: str) -> Any:
    if option.name == "columns" and isinstance(raw, Mapping):
        # A script's columns={"text": "sentence"}: the ini's field=column entries.
        raw = [f"{field_name}={column}" for field_name, column in raw.items()]
    if option.kind in ("list", "lines", "paths"):
        # A "lines" value (a gate with an xfail reason) may hold commas; lists split on them.
        items = _split_lines(raw, commas=option.kind != "lines")
        if option.kind == "paths":
            return tuple(Path(item) for item in items)
        return tuple(items) if items else None
    if not isinstance(raw, str):
        return raw
    text = raw.strip()
    try:
        return _parse_scalar(option, text)
    except ValueError:
        raise ConfigError(
            f"{source}: expected {_KIND_NAMES[option.kind]}, but got {raw!r}"
        ) from None


def _typed(option: Option, value: Any, source: str) -> Any:
    """``value`` as the setting's type: text converted as an ini's is, a path as
    text, a list as a tuple; anything else of the wrong type a ConfigError."""
    if value is None and (option.default is None or option.kind in ("list", "lines")):
        return None
    if option.kind in ("list", "lines", "paths"):
        if isinstance(value, str):
            return _convert(option, value, source)
        if option.name == "columns" and isinstance(value, Mapping):
            return _convert(option, value, source)
        if isinstance(value, (list, tuple)):
            if option.kind == "paths":
                return tuple(Path(item) for item in value)
            return tuple(str(item) for item in value) or None
    elif option.kind == "str":
        if isinstance(value, os.PathLike):
            return os.fspath(value)
        if isinstance(value, str):
            return value
    elif isinstance(value, str):
        return _convert(option, value, source)
    elif option.kind == "bool":
        if isinstance(value, bool):
            return value
    elif not isinstance(value, bool) and isinstance(value, numbers.Real):
        # NumPy's numbers too (a batch size computed with np.ceil): plain ones here.
        if option.kind == "float":
            return value if type(value) in (int, float) else float(value)
        if float(value).is_integer():
            return value if type(value) is int else int(float(value))
    raise ConfigError(f"{source}: expected {_KIND_NAMES[option.kind]}, but got {value!r}")


_KIND_NAMES = {
    "str": "text",
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "list": "a list of names, or names separated by commas",
    "lines": "a list of lines",
    "paths": "a list of paths",
}


# The files pytest reads its configuration from, and the section each needs.
CONFIG_FILES = (
    ("pytest.ini", ""),
    (".pytest.ini", ""),
    ("pyproject.toml", "[tool.pytest"),
    ("tox.ini", "[pytest]"),
    ("setup.cfg", "[tool:pytest]"),
)


def _pytest_config_in(folder: Path) -> Path | None:
    for name, section in CONFIG_FILES:
        path = folder / name
        if not path.is_file():
            continue
        try:
            if section in path.read_text(encoding="utf-8", errors="replace"):
                return path
        except OSError:
            continue
    return None


def misspelt_ini_key(
    keys: Iterable[str], where: str, declared: Callable[[str], bool] = lambda key: False
) -> str | None:
    """Why a key of the ini file (or of ``-o``: ``where`` says which, "in pytest.ini"
    or "given with -o") that looks like one of seqgate's is not read.

    pytest only warns of a key no plugin declared, and the run goes on without
    it: a misspelt ``seqgate_modle`` becomes "no model configured" further on,
    and a misspelt gate setting (``seqgate_min_suport``) is silently not
    applied, which a quality gate must not let pass. A key under seqgate's
    prefix, or one close to a seqgate key, is a usage error naming the key, the
    file and the key meant, unless some plugin ``declared`` it. Returns the
    message, or None.
    """
    import difflib

    known = {option.ini for option in OPTIONS}
    for key in sorted(keys):
        if key in known:
            continue
        close = difflib.get_close_matches(key.lower(), known, n=1, cutoff=0.85)
        if (not key.lower().startswith("seqgate") and not close) or declared(key):
            continue
        meant = f"did you mean {close[0]}?" if close else "pytest --help lists seqgate's keys"
        return (
            f"unknown ini key {key} {where}: pytest would ignore it and run without the "
            f"setting; {meant}"
        )
    return None


def misread_option_value(
    args: Sequence[str], invocation_dir: Path, inipath: Path | None, rootpath: Path
) -> str | None:
    """Why this run read the wrong configuration, when a ``--seqgate-x PATH`` made it.

    pytest finds its configuration file before plugins add their options, so in
    ``--seqgate-eval-data /elsewhere/test.jsonl`` it takes the path for a test
    path, starts its search from the folder it shares with the invocation
    folder, and misses a configuration between the two: every ``seqgate_*``
    key of the project is then silently unread (pytest-dev/pytest#8846). The
    ``=`` form is read correctly. Returns the message, or None when no value
    outside the invocation folder skipped a configuration file.
    """
    flags = {option.flag for option in OPTIONS if option.kind != "bool"}
    here = invocation_dir.resolve()
    for flag, value in pairwise(args):
        if flag not in flags or value.startswith("-"):
            continue
        path = (here / value).resolve()
        if not path.exists() or path.is_relative_to(here):
            continue
        folder = here
        while not path.is_relative_to(folder):
            found = _pytest_config_in(folder)
            if found is not None and found == inipath:
                break  # pytest read the nearest configuration all the same
            if found is not None:
                return (
                    f"pytest took the value of `{flag} {value}` for a test path (it reads "
                    f"its own options before it knows the plugin's), so it looked for its "
                    f"configuration from {rootpath} and skipped {found}: none of that "
                    f"file's settings were read. Write the option with '=': {flag}={value}"
                )
            if folder.parent == folder:
                break  # another drive: nothing between the two
            folder = folder.parent
    return None

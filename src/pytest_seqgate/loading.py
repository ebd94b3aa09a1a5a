"""Model and dataset loaders: files and import paths, safe by default.

Every failure names the file (and line, for records) and the setting it
came from, because the person reading it is in a CI log, not a debugger.
Checkpoints are read with ``weights_only=True``: a pickle can run any code,
and an evaluation gate must never be the way a malicious file gets in.
"""

from __future__ import annotations

import array
import codecs
import contextlib
import csv
import difflib
import gzip
import importlib
import importlib.util
import io
import itertools
import json
import logging
import operator
import re
import sys
import types
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn, cast

import torch
from torch import Tensor, nn

from pytest_seqgate.config import (
    ARROW_SUFFIXES,
    Settings,
    data_shards,
    data_suffix,
    is_import_path,
    shard_name,
    table_set,
)
from pytest_seqgate.data import BATCH_OF_ONE, SequenceData, int64s, locate, tensor_shape
from pytest_seqgate.diagnostics import spelt
from pytest_seqgate.exceptions import (
    ConfigError,
    DataError,
    ModelError,
    counted,
    did_you_mean,
    label_list,
    raised_at,
    user_line,
)
from pytest_seqgate.inference import require_module

SEQUENCE_KEYS = ("tokens", "features", "text")
#: Keys of a record that hold a value per step of its sequence (not metadata).
STEP_KEYS = ("attention_mask", "token_type_ids")
#: Keys of a record that are read, not kept as metadata (besides its sequence's).
INPUT_KEYS = ("label", "text_pair", *STEP_KEYS)


class MissingTokenizer(DataError):
    """A record has text and no tokenizer is configured: :func:`load_dataset` adds
    the one a model's save_pretrained folder holds, where it holds one."""


# Field names other datasets use for the label and the sequence (Hugging Face
# datasets, Kaggle CSVs): an error names the rename when it sees one.
ALIASES = {
    "label": ("labels", "category", "class", "target", "y", "intent", "sentiment", "tag"),
    "text": ("sentence", "content", "body", "message", "review", "document", "sms", "comment"),
    "tokens": ("input_ids", "ids", "token_ids"),
}
# ... and for the keys of a .pt file's dict (saved under Hugging Face's names, say).
ALIASES["sequences"] = ("tokens", "features", "inputs", *ALIASES["tokens"])
ALIASES["labels"] = ("label", "targets", *ALIASES["label"])


def rename_advice(
    keys: Iterable[str],
    wanted: Iterable[str],
    in_code: bool = False,
    column_of: Mapping[str, str] | None = None,
) -> str:
    """What to do about a record or header that lacks the ``wanted`` fields: for a
    file, the ``seqgate_columns`` entries that read them from the columns its
    names suggest (else the rename; in code, where the set is built, the rename);
    and the mapping's own slip where it names a column that is not there."""
    keys = [key for key in keys if isinstance(key, str)]
    wanted = list(wanted)
    column_of = column_of or {}
    missed = [
        f"seqgate_columns reads {field!r} from {column!r}, which is not among them"
        f"{did_you_mean(column, keys, 0.6)}"
        for field, column in column_of.items()
        if field in wanted and column not in keys
    ]
    if missed:
        return "; ".join(missed)
    typos, usual = [], []
    for target in wanted:
        near = difflib.get_close_matches(target, keys, n=1, cutoff=0.75)  # 'lable', 'Text'
        other = [key for key in keys if key.lower() in ALIASES.get(target, ())]
        if other:
            usual.append((target, other[0]))
        elif near:
            typos.append((target, near[0]))
    if in_code or not (typos or usual):
        pairs = typos + usual
        renames = " and ".join(f"{key!r} to {target!r}" for target, key in pairs)
        if in_code:
            return f"rename {renames}" if renames else "rename the fields"
        return (
            f"name the columns to read them from with seqgate_columns "
            f"({', '.join(f'{target}=<column>' for target in wanted[:2])}), or rename them"
        )
    advice = []
    if usual:  # another dataset's names: read where they are
        mapped = ", ".join(f"{target}={key}" for target, key in usual)
        them = "it" if len(usual) == 1 else "them"
        advice.append(f"read {them} with seqgate_columns = {mapped} (or rename the columns)")
    if typos:  # a slip in the file: mend it there
        advice.append("rename " + " and ".join(f"{key!r} to {target!r}" for target, key in typos))
    return "; ".join(advice)


def renamed_keys(keys: Iterable[str], column_of: Mapping[str, str]) -> dict[str, str | None]:
    """What ``seqgate_columns`` makes of a record's keys or a table's columns: each
    mapped column to its field, and a key that is the name of a field read from
    another column to None: with ``label=label_text`` the integer ``label`` beside
    it is not read, nor, where a sequence is mapped, another sequence field (the
    ``text`` a tokenized dataset keeps beside ``input_ids``). Empty where nothing
    changes: a set of another layout (a training set already named as seqgate
    reads it) is read as it is."""
    present = set(keys)
    out: dict[str, str | None] = {
        column: field for field, column in column_of.items() if column in present
    }
    replaced = set(out.values())
    if replaced & set(SEQUENCE_KEYS):
        # The sequence named (tokens=input_ids) is the one read: a tokenized
        # dataset's 'text' beside its ids is left aside, not a second sequence.
        replaced |= set(SEQUENCE_KEYS)
    for field in replaced:
        if field is not None and field in present and field not in out:
            out[field] = None
    return out


def rename_columns(table: Any, column_of: Mapping[str, str]) -> Any:
    """A pyarrow Table with ``seqgate_columns`` applied: columns renamed, and those
    the mapping replaces dropped, before any row is read."""
    names = renamed_keys(table.column_names, column_of)
    if not names:
        return table
    table = table.drop_columns([name for name, to in names.items() if to is None])
    return table.rename_columns([names.get(name) or name for name in table.column_names])


def require_columns(
    columns: Sequence[str],
    where: str,
    in_code: bool = False,
    column_of: Mapping[str, str] | None = None,
    given: Sequence[str] | None = None,
) -> None:
    """A table's columns (a .csv header, a Parquet file's, a dataset's) need the
    label and a sequence before any row is read: one error for the whole file,
    with the mapping its names suggest. ``columns`` are the names after
    ``column_of`` (seqgate_columns) renamed them; ``given``, the file's own."""
    if "label" in columns and any(key in columns for key in SEQUENCE_KEYS):
        return
    wanted: tuple[str, ...] = ("label",) if "label" not in columns else ()
    if not any(key in columns for key in SEQUENCE_KEYS):
        wanted += ("text", "tokens")
    given = list(given if given is not None else columns)
    raise DataError(
        f"{where}: the columns must include 'label' and one of 'tokens', 'features' or "
        f"'text', but are {given}; {rename_advice(given, wanted, in_code, column_of)}"
    )


def import_object(spec: str, rootdir: Path, setting: str) -> Any:
    """Import ``pkg.module:attr`` with the rootdir on sys.path, as users expect."""
    module_name, _, attr = spec.partition(":")
    root = str(rootdir)
    if root not in sys.path:
        sys.path.insert(0, root)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any import-time failure is the user's to see, in one line
        raise ConfigError(
            f"{setting}: cannot import module {module_name!r} from {spec!r} "
            f"({type(exc).__name__}: {exc}); {_import_advice(exc, module_name, rootdir)}"
        ) from exc
    obj: Any = module
    where = module_name
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(
                f"{setting}: {where!r} has no attribute {part!r} (from {spec!r})"
                f"{_attribute_advice(obj, part)}"
            ) from None
        where = f"{where}.{part}"
    return obj


def _import_advice(exc: Exception, module_name: str, rootdir: Path) -> str:
    """What to do about a module that did not import: its path is wrong, a
    package it imports is missing, or its own code failed (where)."""
    top = module_name.split(".")[0]
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        if module_name != exc.name and not module_name.startswith(exc.name + "."):
            where = user_line(exc, rootdir)
            return (
                f"{module_name} imports {exc.name!r}{f' (at {where})' if where else ''}, which "
                f"is not installed where pytest runs: install it"
            )
        src = rootdir / "src" / top
        hint = (
            "; it is under src/: install the project (pip install -e .) or add "
            "pythonpath = src to the pytest configuration"
            if exc.name == top and (src.is_dir() or src.with_suffix(".py").is_file())
            else ""
        )
        return f"check the module path, relative to {rootdir}{hint}"
    if isinstance(exc, SyntaxError) and exc.filename:
        path = Path(exc.filename)
        shown = path.relative_to(rootdir) if path.is_relative_to(rootdir) else path
        return f"fix the syntax at {shown}:{exc.lineno}"
    where = user_line(exc, rootdir)
    return f"the module raised it as it was imported{f', at {where}' if where else ''}"


def _attribute_advice(obj: Any, wanted: str) -> str:
    """A near name; for a module, also the callables it defines (not those it
    imported, unless it defines none): what a factory or loader could be."""
    names = [n for n in dir(obj) if not n.startswith("_") and callable(getattr(obj, n, None))]
    advice = did_you_mean(wanted, names)
    if isinstance(obj, types.ModuleType) and names:
        own = [n for n in names if getattr(getattr(obj, n), "__module__", None) == obj.__name__]
        shown = own or names
        advice += f"; it defines: {', '.join(shown[:12])}{', ...' if len(shown) > 12 else ''}"
    return advice


# ---------------------------------------------------------------- models


def load_model(settings: Settings) -> nn.Module:
    """The model named by ``seqgate_model``, on the CPU, not yet in eval mode."""
    spec = settings.model
    if spec is None:
        if settings.model_factory is not None:
            # A factory alone reads like the model itself; it is the architecture
            # a checkpoint is loaded into, and there is no checkpoint.
            factory_setting = settings.source("model_factory")
            raise ConfigError(
                f"{factory_setting} names {settings.model_factory!r}, but seqgate_model is "
                f"not set: the factory builds the architecture a state-dict checkpoint is loaded "
                f"into; set seqgate_model to the checkpoint, or, where the callable returns "
                f"the trained model itself, set seqgate_model = {settings.model_factory!r} "
                f"instead"
            )
        raise ConfigError(
            "no model configured: set seqgate_model (ini) or --seqgate-model, "
            "or override the seqgate_model fixture in a conftest.py"
        )
    setting = settings.source("model")
    if is_import_path(spec):
        obj = import_object(spec, settings.rootdir, setting)
        model = obj if isinstance(obj, nn.Module) else _call(obj, setting, spec)
        return require_module(model, f"{setting}: {spec!r}")
    path = settings.existing("model")
    shown = settings.display(path)
    if path.is_dir():  # config.existing let only a save_pretrained folder through
        return load_pretrained(path, setting, shown)
    if settings.model_factory is not None:
        factory_setting = settings.source("model_factory")
        factory = import_object(settings.model_factory, settings.rootdir, factory_setting)
        module = require_module(
            _call(factory, factory_setting, settings.model_factory),
            f"{factory_setting}: {settings.model_factory!r}",
        )
        state = load_checkpoint(path, setting, settings.trust_checkpoints, shown)
        load_state_dict(module, state, f"{setting}: {shown}")
        return module
    kind = file_format(path)
    if kind == "exported":
        return load_exported_program(path, setting, settings.trust_checkpoints, shown)
    if kind == "safetensors":
        raise ModelError(
            f"{setting}: {shown} is a safetensors file, which holds weights only; set "
            f"seqgate_model_factory to the 'pkg.module:callable' that builds the architecture "
            f"they are loaded into"
        )
    if kind == "torchscript":
        try:
            with warnings.catch_warnings():
                # torch 2.10+ deprecates TorchScript; users' exported models still load.
                warnings.simplefilter("ignore", DeprecationWarning)
                return torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:
            raise ModelError(f"{setting}: cannot load TorchScript file {shown}: {exc}") from exc
    # A torch.save file: a whole pickled model loads when its unpickling is trusted
    # (load_checkpoint refuses it otherwise, saying so); weights need a factory.
    loaded = load_checkpoint(path, setting, settings.trust_checkpoints, shown)
    if isinstance(loaded, nn.Module):
        return loaded
    weights = isinstance(loaded, dict) and (
        _is_state_dict(loaded) or any(_is_state_dict(v) for v in loaded.values())
    )
    raise ModelError(
        f"{setting}: {shown} "
        + (
            "is a state-dict checkpoint: weights without the architecture"
            if weights
            else f"holds a {type(loaded).__name__}, not a model (an exported program, a "
            f"TorchScript file or a whole pickled model)"
        )
        + "; set seqgate_model_factory to the 'pkg.module:callable' that builds the "
        "architecture its weights are loaded into"
    )


@contextlib.contextmanager
def _no_progress_bar() -> Iterator[None]:
    """transformers draws a bar as it loads weights: in a CI log, above the tests'
    output, a line per load that says nothing the report does not."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        yield
        return
    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            hf_logging.enable_progress_bar()


def load_pretrained(path: Path, setting: str, shown: str) -> nn.Module:
    """A folder a Hugging Face model's ``save_pretrained`` wrote, loaded with the
    ``transformers`` package as a sequence classifier, from the folder alone:
    nothing is fetched (``local_files_only``) and no code of the hub's is run (no
    ``trust_remote_code``)."""
    try:
        from transformers import AutoModelForSequenceClassification
    except ImportError:
        raise ConfigError(
            f"{setting}: {shown} is a folder save_pretrained wrote, read with the "
            f"transformers package, which is not installed: pip install transformers, or "
            f"load the model in code (seqgate_model = 'pkg.module:callable')"
        ) from None
    try:
        with _no_progress_bar():
            model, info = AutoModelForSequenceClassification.from_pretrained(
                str(path), local_files_only=True, output_loading_info=True
            )
    except Exception as exc:
        raise ModelError(
            f"{setting}: cannot load {shown} as a sequence classifier with transformers' "
            f"AutoModelForSequenceClassification ({type(exc).__name__}: {exc}); load it in "
            f"code (seqgate_model = 'pkg.module:callable') if it needs more"
        ) from None
    missing = sorted(info.get("missing_keys") or ()) if isinstance(info, Mapping) else []
    if missing:
        # A base model's folder (AutoModel.save_pretrained) gets a classification
        # head of random weights: its every number would be noise.
        raise ModelError(
            f"{setting}: {shown} has no weights for {', '.join(missing[:4])}"
            f"{', ...' if len(missing) > 4 else ''}, which transformers would initialise at "
            f"random: the folder holds a model without its trained classifier head (a base "
            f"model's save_pretrained?); save the fine-tuned sequence classifier"
        )
    return require_module(model, f"{setting}: {shown}")


def file_format(path: Path) -> str:
    """What a model or checkpoint file is, from its first bytes and its archive's
    names: ``exported`` (a torch.export.save archive: its ``archive_format`` says
    pt2, or, as older torch versions wrote them, it holds
    ``serialized_exported_program.json``), ``torchscript`` (compiled code beside
    the data), ``safetensors`` (an 8-byte header length that fits the file, then
    a JSON object), or ``other`` (a torch.save archive or pickle, or not a model
    file at all: torch.load says which)."""
    with path.open("rb") as handle:
        start = handle.read(9)
    header = int.from_bytes(start[:8], "little")
    if len(start) == 9 and start[8:9] == b"{" and 8 + header <= path.stat().st_size:
        return "safetensors"
    if not zipfile.is_zipfile(path):
        return "other"
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            formats = [n for n in names if n.rsplit("/", 1)[-1] == "archive_format"]
            if any(n.endswith("serialized_exported_program.json") for n in names) or any(
                archive.read(n).strip() == b"pt2" for n in formats
            ):
                return "exported"
    except (zipfile.BadZipFile, OSError):
        return "other"  # a damaged archive: torch.load's error names it
    if any(name.endswith("constants.pkl") or "/code/" in name for name in names):
        return "torchscript"
    return "other"


# Graph ops whose argument at this place says whether they run as in training,
# and the layer they come from: as exported, and after run_decompositions().
TRAINING_FLAGS = {
    "aten.dropout.default": (2, "dropout"),
    "aten.feature_dropout.default": (2, "dropout"),
    "aten.alpha_dropout.default": (2, "dropout"),
    "aten.native_dropout.default": (2, "dropout"),
    "aten.batch_norm.default": (5, "batch norm"),
    "aten._native_batch_norm_legit.default": (5, "batch norm"),
    "aten._native_batch_norm_legit_functional.default": (5, "batch norm"),
}


def load_exported_program(
    path: Path, setting: str, trust: bool, shown: str | None = None
) -> nn.Module:
    """The module of a ``torch.export`` program (the successor of TorchScript,
    which torch 2.10+ deprecates).

    Two things ``torch.export.load`` does not guard are checked first. It
    unpickles in full whatever it cannot read as plain tensors (the sample
    inputs, pickled weights, opaque constants), so those are held to the
    checkpoint rule: refused unless trusted. And a program cannot be switched
    to eval mode: one captured in training mode keeps dropout and batch
    statistics in its graph, and would give numbers no one can trust.

    An archive in the layout older torch versions wrote (every file at the top,
    weights pickled) is what a user gets from a model exported a few releases
    ago; a torch that writes the newer archive may not read it at all (2.13
    fails on one from 2.2 with "Version in the saved file has incorrect
    length"), so the errors say which torch wrote what, and that re-exporting
    is the fix.
    """
    file = shown or str(path)  # as the user wrote it, in messages
    try:
        with zipfile.ZipFile(path) as archive:
            pickled = _pickled_parts(archive)
            legacy = LEGACY_EXPORT_ENTRY in archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, AttributeError) as exc:
        # A damaged archive, or a config that is not the format's JSON.
        raise ModelError(
            f"{setting}: cannot read exported program {file}: {type(exc).__name__}: {exc}"
        ) from None
    version = torch.__version__.split("+")[0]
    # The newer archive (torch.export.pt2_archive) stores weights as plain tensors;
    # a torch without it pickles them in every program it exports.
    new_writer = importlib.util.find_spec("torch.export.pt2_archive") is not None
    older = (
        f"it was saved by an older torch, in the layout with {LEGACY_EXPORT_ENTRY} at the "
        f"top of the archive, "
        if legacy and new_writer
        else ""
    )
    if pickled and not trust:
        risk = (
            "torch.export.load would unpickle in full, which can run arbitrary code from the file"
        )
        if older:
            raise ModelError(
                f"{setting}: {file} is an exported program saved by an older torch (with "
                f"{LEGACY_EXPORT_ENTRY} at the top of the archive), whose pickled weights "
                f"{risk}, and this torch ({version}) may not read that layout at all; it was "
                f"refused. Re-export the model with torch {version}, which saves plain tensors; "
                f"or, only for a file you trust, set seqgate_trust_checkpoints = true"
            )
        remedy = (
            "Export the model with plain tensor inputs and weights"
            if new_writer
            else f"torch {version} pickles the weights of every program it exports: save a "
            f"state dict and set seqgate_model_factory instead"
        )
        raise ModelError(
            f"{setting}: {file} is an exported program whose {pickled} {risk}; it was "
            f"refused. {remedy}, or, only for a file you trust, set "
            f"seqgate_trust_checkpoints = true"
        )
    try:
        with warnings.catch_warnings(), _quiet_logger("torch.export"):
            warnings.simplefilter("ignore")  # torch's notes on the archive's format
            module = torch.export.load(str(path)).module()
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        hint = (
            f"; {older}which this torch ({version}) does not read: re-export the model with "
            f"torch {version}, or save a state dict and set seqgate_model_factory"
            if older
            else ""
        )
        raise ModelError(
            f"{setting}: cannot load exported program {file}: {type(exc).__name__}: {first}{hint}"
        ) from exc
    flags = [
        (node, TRAINING_FLAGS[str(node.target)])
        for node in module.graph.nodes
        if node.op == "call_function" and str(node.target) in TRAINING_FLAGS
    ]
    training = sorted(
        {layer for node, (at, layer) in flags if len(node.args) > at and node.args[at] is True}
    )
    if training:
        raise ModelError(
            f"{setting}: {file} was exported in training mode: its {', '.join(training)} "
            f"run as in training (random dropout, batch statistics), and an exported program "
            f"cannot be put in eval mode; export model.eval() instead"
        )
    return module


# The program's entry in the archive as torch.export.save wrote it before the
# PT2 archive (which puts every file under a folder of the archive's name).
LEGACY_EXPORT_ENTRY = "serialized_exported_program.json"


@contextlib.contextmanager
def _quiet_logger(name: str) -> Iterator[None]:
    """Silence a library's logger for a call: torch.export.load logs a whole
    traceback (as a warning) before it tries an older format, which would land
    in the user's terminal above the one-line error that explains it."""
    logger = logging.getLogger(name)
    disabled = logger.disabled
    logger.disabled = True
    try:
        yield
    finally:
        logger.disabled = disabled


def _pickled_parts(archive: zipfile.ZipFile) -> str | None:
    """What of a .pt2 archive ``torch.export.load`` would unpickle in full, or None."""
    names = archive.namelist()
    configs = [n for n in names if n.endswith(("_weights_config.json", "_constants_config.json"))]
    if not any(n.endswith("_weights_config.json") for n in configs):
        return "weights (an older archive format, pickled)"
    for name in configs:
        for key, meta in json.loads(archive.read(name)).get("config", {}).items():
            part = str(meta.get("path_name", ""))
            if meta.get("use_pickle") or not part.startswith(("weight_", "tensor_")):
                return f"entry {key!r} ({name})"
    for name in names:
        if "/data/sample_inputs/" in name:
            try:
                torch.load(io.BytesIO(archive.read(name)), weights_only=True)
            except Exception:
                return f"sample inputs ({name})"
    return None


def _call(factory: Any, setting: str, spec: str) -> Any:
    if not callable(factory):
        raise ConfigError(f"{setting}: {spec!r} is a {type(factory).__name__}, not a callable")
    required = _required_parameters(factory)
    if required:
        # A factory of hyperparameters (build(vocab_size, hidden)) cannot be called
        # bare: say which, and the one-line wrapper that fixes it.
        passed = ", ".join(f"{name}=..." for name in required)
        raise ConfigError(
            f"{setting}: {spec!r} takes {', '.join(required)} without defaults, and seqgate "
            f"calls it with no arguments: give them defaults, or name a function that passes "
            f"them (def for_seqgate(): return {spec.rpartition(':')[2]}({passed}))"
        )
    try:
        return factory()
    except Exception as exc:
        raise ModelError(
            f"{setting}: calling {spec!r} raised {type(exc).__name__}: {exc}{raised_at(exc)}"
        ) from exc


def _required_parameters(factory: Any) -> list[str]:
    """The parameters a call with no arguments would miss (none when the signature
    cannot be read: a C function, some callables; the call then says for itself)."""
    import inspect

    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return []
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [
        p.name
        for p in parameters
        if p.default is inspect.Parameter.empty
        and (p.kind in positional or p.kind is inspect.Parameter.KEYWORD_ONLY)
    ]


def refuse_unsaved(path: Path, setting: str, shown: str | None = None) -> None:
    """Raise when torch.save cannot have written ``path``: not a zip archive, nor
    a pickle (the format before torch 1.6). torch.load's weights_only refusal
    of such a file reads "trust this file", the wrong advice for a truncated
    download or a JSON file named as the model."""
    file = shown or str(path)  # as the user wrote it, in messages
    if zipfile.is_zipfile(path):
        return
    with path.open("rb") as handle:
        start = handle.read(24)
    if start[:1] == b"\x80":  # pickle protocol 2 and above
        return
    if path.suffix.lower() == ".onnx" or b"\x12\x07pytorch" in start:
        # torch.onnx.export's file: a graph for ONNX Runtime, not a module to call.
        raise ModelError(
            f"{setting}: {file} is an ONNX model, and seqgate evaluates PyTorch modules: give "
            f"the model it was exported from (a state dict with seqgate_model_factory, a "
            f"TorchScript file, or torch.export's .pt2), or, to gate the ONNX model itself, a "
            f"'pkg.module:callable' returning an nn.Module whose forward runs it with "
            f"onnxruntime and returns the logits as a tensor"
        )
    if start.startswith(b"PK\x03\x04"):
        what = "is a damaged or cut-off zip archive (an interrupted download or copy?)"
    else:
        what = "is empty" if not start else f"starts with {start!r}"
    raise ModelError(
        f"{setting}: {file} is not a file torch.save wrote (a zip archive, or a pickle "
        f"before torch 1.6): it {what}; point {setting} at the saved model or checkpoint"
    )


def load_checkpoint(path: Path, setting: str, trust: bool, shown: str | None = None) -> Any:
    """``torch.load`` with ``weights_only=True``; full unpickling only when trusted."""
    file = shown or str(path)  # as the user wrote it, in messages
    kind = file_format(path)
    if kind == "exported":
        raise ModelError(
            f"{setting}: {file} is an exported program (torch.export), not a state-dict "
            f"checkpoint; remove seqgate_model_factory to load it as one (for one run: "
            f"--seqgate-model-factory=)"
        )
    if kind == "torchscript":
        raise ModelError(
            f"{setting}: {file} is a TorchScript file, not a state-dict checkpoint; "
            f"remove seqgate_model_factory to load it as TorchScript (for one run: "
            f"--seqgate-model-factory=)"
        )
    if kind == "safetensors":
        return read_safetensors(path, setting, file)
    refuse_unsaved(path, setting, file)
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        if not _needs_unpickling(exc):
            raise ModelError(
                f"{setting}: cannot read checkpoint {file}: {type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}"
            ) from exc
        if not trust:
            # torch names the first class it would have to import: a whole pickled
            # model (torch.save(model)) names the model's own class.
            found = re.search(r"GLOBAL ([\w.]+)", str(exc))
            holds = f" (it holds {found[1]}, not only tensors)" if found else ""
            raise ModelError(
                f"{setting}: {file} needs full unpickling{holds}, which can run arbitrary code "
                f"from the file; it was refused. Save a plain state dict "
                f"(torch.save(model.state_dict(), path)), or, only for a file you trust, set "
                f"seqgate_trust_checkpoints = true (or pass --seqgate-trust-checkpoints): a "
                f"whole pickled model (torch.save(model, path)) then loads as it is"
            ) from exc
    try:
        return torch.load(str(path), map_location="cpu", weights_only=False)
    except (AttributeError, ImportError) as exc:
        # Unpickling imports the classes the file names: one defined in the script
        # or notebook that saved it (__main__.Model) exists nowhere else.
        named = re.search(r"attribute '(\w+)'", str(exc))
        why = (
            f"it holds {named[1] if named else 'a class'} of __main__, the script or "
            f"notebook that saved it, and that class exists only there"
            if "__main__" in str(exc)
            else f"a class it names cannot be imported here ({type(exc).__name__}: {exc})"
        )
        raise ModelError(
            f"{setting}: cannot unpickle {file}: {why}. Save the state dict "
            f"(torch.save(model.state_dict(), path)) and set seqgate_model_factory to a "
            f"'pkg.module:callable' that builds the architecture"
        ) from None


# The safetensors format's dtype names (little-endian data, as on every machine
# torch ships for).
SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


def read_safetensors(path: Path, setting: str, shown: str | None = None) -> dict[str, Tensor]:
    """A ``.safetensors`` state dict (the Hugging Face format), read without the
    safetensors package: a JSON header of names, dtypes, shapes and byte ranges,
    then the raw bytes. Nothing in it is code, so it needs no trust."""
    file = shown or str(path)  # as the user wrote it, in messages
    data = path.read_bytes()
    size = int.from_bytes(data[:8], "little")
    base = 8 + size
    try:
        header = json.loads(data[8:base])
        header.pop("__metadata__", None)
        state = {}
        for name, entry in header.items():
            dtype = SAFETENSORS_DTYPES[entry["dtype"]]
            start, end = (base + int(offset) for offset in entry["data_offsets"])
            if not base <= start <= end <= len(data):
                raise ValueError(f"{name!r}: its bytes {start}-{end} lie outside the file")
            raw = bytearray(data[start:end])
            flat = torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
            state[name] = flat.reshape(entry["shape"])
    except KeyError as exc:
        raise ModelError(
            f"{setting}: {file}: unsupported or missing safetensors field {exc}; the "
            f"dtypes read are {', '.join(SAFETENSORS_DTYPES)}"
        ) from None
    except (ValueError, TypeError, RuntimeError, AttributeError) as exc:
        raise ModelError(f"{setting}: {file} is not a valid safetensors file: {exc}") from None
    return state


def _needs_unpickling(exc: Exception) -> bool:
    import pickle

    return isinstance(exc, pickle.UnpicklingError) or "weights_only" in str(exc)


# Where training scripts keep the weights in the dict they save: Lightning and
# most loops use "state_dict", the PyTorch tutorials "model_state_dict".
STATE_KEYS = ("state_dict", "model_state_dict", "model", "net", "module", "weights")
# What wrappers put before every name: DataParallel and DDP "module.",
# torch.compile "_orig_mod.", a LightningModule holding the model as "model.".
WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.")


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, Tensor) for v in obj.values())


def _weights_in(state: Any, path: Path | str) -> dict[str, Tensor]:
    """The state dict in what ``torch.save`` wrote: itself, or the entry of a
    training checkpoint ({"epoch": ..., "model_state_dict": ...}) that holds it."""
    if _is_state_dict(state) or state == {}:  # {}: a module without parameters
        return dict(state)
    if isinstance(state, nn.Module):  # a whole pickled model, trusted
        return dict(state.state_dict())
    if isinstance(state, dict):
        for key in STATE_KEYS:
            if _is_state_dict(state.get(key)):
                return dict(state[key])
        # A training script's own name for it ("model_state", "ema"): the one
        # entry that is a state dict. Two (a model and its EMA) would be a guess.
        held = [key for key, value in state.items() if _is_state_dict(value)]
        if len(held) == 1:
            return dict(state[held[0]])
        which = (
            f"state dicts under {', '.join(repr(k) for k in held)}: seqgate cannot tell "
            f"which is the model; save the one to gate with torch.save(checkpoint[KEY], path)"
            if held
            else f"no state dict (a mapping of names to tensors) at the top or under "
            f"{', '.join(repr(k) for k in STATE_KEYS)}; save it with "
            f"torch.save(model.state_dict(), path)"
        )
        raise ModelError(
            f"{path} holds a dict with the keys {sorted(map(str, state))[:12]} and {which}"
        )
    raise ModelError(
        f"{path} does not hold a state dict (a mapping of names to tensors) but "
        f"{type(state).__name__}; save it with torch.save(model.state_dict(), path)"
    )


def _without_wrapper_prefix(state: dict[str, Tensor], expected: Any) -> dict[str, Tensor]:
    """Names saved through a wrapper, with its prefix on every key the module lacks."""
    changed = True
    while changed:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in state) and not any(
                k.startswith(prefix) for k in expected
            ):
                state = {k[len(prefix) :]: v for k, v in state.items()}
                changed = True
    return state


def load_state_dict(module: nn.Module, state: Any, path: Path | str) -> None:
    """Load ``state`` (read from ``path``, which messages name: the option and the
    file as the user wrote it) into ``module``, or say every key that differs."""
    expected = module.state_dict()
    state = _without_wrapper_prefix(_weights_in(state, path), expected)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [
        f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append("missing keys: " + ", ".join(missing))
        if unexpected:
            parts.append("unexpected keys: " + ", ".join(unexpected))
        if mismatched:
            parts.append("shape mismatch (checkpoint vs module): " + "; ".join(mismatched))
        raise ModelError(
            f"{path} does not match the module built by seqgate_model_factory: "
            + "; ".join(parts)
            + ". Check that the factory builds the same architecture the checkpoint was "
            "saved from"
        )
    module.load_state_dict(state)


# ---------------------------------------------------------------- datasets


def _not_ids(out: list[Any]) -> str:
    """What a tokenizer's output is instead of token ids, and what to do."""
    if len(out) == 1 and (isinstance(out[0], (list, tuple)) or hasattr(out[0], "tolist")):
        return f"this is {BATCH_OF_ONE}"
    if any(isinstance(i, float) for i in out):
        return "whole numbers as int, not float"
    return "the vocabulary's indices, not the words"


def _name_of(function: Any) -> str:
    """``pkg.module:function``, or for an object (a tokenizer instance) its class,
    not a repr with an address that changes every run."""
    module, name = getattr(function, "__module__", None), getattr(function, "__qualname__", None)
    if module and name:
        return f"{module}:{name}"
    kind = type(function)
    return f"a {kind.__module__}.{kind.__qualname__} object"


def named_by_numbers(names: Iterable[str]) -> bool:
    """Classes named "1" to "5" (star ratings): a number label then may be a name
    or an index, and the two readings differ."""
    return all(name.isascii() and name.isdigit() for name in names)


def _list_label_hint(value: object) -> str:
    """Why a list is no label: a one-hot row names one class by the place of its
    1; several labels are multi-label classification, which seqgate does not gate."""
    if not isinstance(value, list):
        return ""
    if all(v in (0, 1) and type(v) in (int, float) for v in value) and sum(value) == 1:
        return f"; it is one-hot: write the index of its 1 ({value.index(1)})"
    return (
        "; several labels are multi-label classification, which seqgate does not gate: "
        "give each record the one class of its sequence"
    )


# Token ids a builder holds as Python ints before packing them (_Builder.pack):
# a few thousand records' worth, so that the list stays small.
_PACKED = 1 << 16


class _Builder:
    """Accumulates records; one ``extend`` per record, one tensor at the end."""

    def __init__(
        self,
        source: str,
        labels: tuple[str, ...] | None,
        tokenizer: Any,
        indexed: bool = False,
        column_of: Mapping[str, str] | None = None,
        first_row: int = 0,
    ) -> None:
        self.source = source
        self.indexed = indexed
        #: The row of the first record added (a streamed chunk's place in its file).
        self.first_row = first_row
        #: seqgate_columns, applied to each record's keys (a table's are renamed whole).
        self.column_of = column_of or {}
        self.labels = labels
        self.index = {name: i for i, name in enumerate(labels)} if labels else None
        self.tokenizer = tokenizer
        self.checked_tokenizer = False
        self.index_ids = False
        self.kind: str | None = None
        self.flat: list[Any] = []
        #: The token ids of the records before those in ``flat``, packed a few
        #: thousand at a time (:meth:`pack`).
        self.packed = array.array("q")
        self.packing = True
        self.lengths: list[int] = []
        self.raw_labels: list[Any] = []
        self.lines: list[int] = []
        #: The records' token type ids, aligned with ``flat``, once a record has them
        #: (0 for the steps of the records before, and of any without them).
        self.types: list[Any] | None = None
        self.metadata: dict[str, list[Any]] = {}
        #: How integer labels of classes named by numbers were read ("names" or
        #: "indexes"), once the labels said: a streamed file's later chunks read
        #: theirs the same way, whatever the labels of each chunk.
        self.numbers_read: str | None = None
        #: The files of a set read from a pattern of shards (see SequenceData.parts).
        self.parts: list[tuple[str, int]] = []

    def where(self, line: int) -> str:
        return locate(self.source, line, self.indexed, self.parts)

    def add(self, record: Any, line: int) -> None:
        tokens = record.get("tokens") if type(record) is dict and len(record) == 2 else None
        if (
            type(tokens) is list
            and tokens
            and "label" in record
            and not self.column_of
            and self.kind != "features"
        ):
            # The plainest record, {"tokens": [...], "label": ...}, passes every
            # check of checked(): added without them (1.43 to 1.00 us a record of 45 ids).
            self.kind = "tokens"
            self.append(record, "tokens", tokens, None, line)
        else:
            self.append(*self.checked(record, line), line)

    def checked(self, record: Any, line: int) -> tuple[dict[str, Any], str, list[Any], Any]:
        """``(record, key, sequence, types)``: a record read as the builder keeps it
        (its columns renamed, its text tokenized, its mask applied), or a DataError
        naming its line and what to do."""
        if not isinstance(record, dict):
            raise DataError(
                f"{self.where(line)}: expected an object with 'label' and one of "
                f"'tokens', 'features' or 'text', but got {type(record).__name__}"
            )
        given = record
        if self.column_of:
            names = renamed_keys(record, self.column_of)
            if names:
                record = {
                    names.get(k, k): v for k, v in record.items() if names.get(k, k) is not None
                }
        present = [key for key in SEQUENCE_KEYS if key in record]
        if len(present) != 1:
            keys = ", ".join(repr(k) for k in given)
            if present:
                raise DataError(
                    f"{self.where(line)}: a record needs exactly one of 'tokens', 'features' "
                    f"or 'text', but has {' and '.join(repr(k) for k in present)}"
                )
            raise DataError(
                f"{self.where(line)}: a record needs one of 'tokens', 'features' or 'text', "
                f"but has none (its keys: {keys}); "
                f"{rename_advice(given, ('text', 'tokens'), self.indexed, self.column_of)}"
            )
        if "label" not in record:
            keys = ", ".join(repr(k) for k in given)
            raise DataError(
                f"{self.where(line)}: record has no 'label' (its keys: {keys}); every record "
                f"needs its class, as a name or an index: "
                f"{rename_advice(given, ('label',), self.indexed, self.column_of)}"
            )
        key = present[0]
        kind = "features" if key == "features" else "tokens"
        if self.kind is None:
            self.kind = kind
        elif self.kind != kind:
            raise DataError(
                f"{self.where(line)}: record has {key!r} but earlier records have "
                f"{'features' if self.kind == 'features' else 'tokens/text'}; one dataset "
                f"holds one kind of sequence"
            )
        sequence = record[key]
        types = None
        if key == "text":
            # A tokenized set's ids beside its text are left aside, their segments
            # too (and a 'text_pair' beside tokens, as a 'text' beside them is).
            sequence, types = self.tokenize(sequence, line, record, record.get("text_pair"))
        if not isinstance(sequence, list):
            raise DataError(
                f"{self.where(line)}: {key!r} must be a list, but got {type(sequence).__name__}"
            )
        if key != "text" and record.get("token_type_ids") is not None:
            types = self.segments(record["token_type_ids"], sequence, key, line)
        if key != "text" and "attention_mask" in record:
            if types is not None:
                types = self.unmask(types, record["attention_mask"], "token_type_ids", line)
            sequence = self.unmask(sequence, record["attention_mask"], key, line)
        if not sequence:
            raise DataError(
                f"{self.where(line)}: empty sequence (length 0); a classifier needs at least "
                f"one step: drop the record or give it a token"
            )
        return record, key, sequence, types

    def append(
        self, record: dict[str, Any], key: str, sequence: list[Any], types: Any, line: int
    ) -> None:
        """Keep a checked record: its steps, segments, label, line and metadata."""
        if types is not None and self.types is None:
            # The records before had none.
            self.types = [0] * (len(self.packed) + len(self.flat))
        if self.types is not None:
            self.types.extend([0] * len(sequence) if types is None else types)
        self.flat.extend(sequence)
        if len(self.flat) >= _PACKED and self.packing and self.kind == "tokens":
            self.pack()
        self.lengths.append(len(sequence))
        self.raw_labels.append(record["label"])
        self.lines.append(line)
        for meta_key in record:
            if meta_key not in self.metadata and meta_key != key and meta_key not in INPUT_KEYS:
                # A key first seen now: None for the records before (built once: a
                # setdefault's default, built for every record, made loading quadratic).
                self.metadata[meta_key] = [None] * (len(self.lengths) - 1)
        for meta_key, column in self.metadata.items():
            column.append(record.get(meta_key))

    def segments(self, types: Any, sequence: list[Any], key: str, line: int) -> list[Any]:
        """A record's ``token_type_ids``: a list beside its token ids, one a step
        (the tokenizer's output for a text pair, as a Hugging Face set keeps it)."""
        if key != "tokens":
            raise DataError(
                f"{self.where(line)}: 'token_type_ids' go with 'tokens' (the ids a "
                f"tokenizer gave with them), not with {key!r}: drop them"
            )
        if not isinstance(types, list):
            raise DataError(
                f"{self.where(line)}: 'token_type_ids' must be a list of integers, one per "
                f"token, but got {type(types).__name__}"
            )
        if len(types) != len(sequence):
            raise DataError(
                f"{self.where(line)}: 'token_type_ids' has {len(types)} values but "
                f"'tokens' has {len(sequence)} steps: one per token"
            )
        return types

    def unmask(self, sequence: list[Any], mask: Any, key: str, line: int) -> list[Any]:
        """The steps ``mask`` marks 1: a record of a set tokenized with padding (a
        Hugging Face row of ``padding="max_length"``) carries its attention mask,
        as a padded .pt file may; the plugin pads each batch itself."""
        if not isinstance(mask, list) or len(mask) != len(sequence):
            raise DataError(
                f"{self.where(line)}: 'attention_mask' must be a list of 0 and 1 as long as "
                f"{key!r} ({len(sequence)} steps), but got "
                + (f"{len(mask)} values" if isinstance(mask, list) else type(mask).__name__)
            )
        if any(m not in (0, 1) for m in mask):
            raise DataError(
                f"{self.where(line)}: 'attention_mask' holds "
                f"{next(m for m in mask if m not in (0, 1))!r}: expected 1 on real steps "
                f"and 0 on padding"
            )
        return [step for step, real in zip(sequence, mask) if real]

    def tokenize(
        self, text: Any, line: int, record: Mapping[str, Any], pair: Any = None
    ) -> tuple[list[int], list[int] | None]:
        """A record's text as token ids; with a ``text_pair``, the two texts encoded
        as one sequence, as ``tokenizer(text, text_pair)`` encodes a pair (a
        tokenizer.json's ``encode(text, pair)`` too), and the segments the
        tokenizer gives with them (None where it gives none, as RoBERTa's)."""
        if self.tokenizer is None:
            # A tokenized Hugging Face dataset keeps its text beside the ids.
            ids = [k for k in record if isinstance(k, str) and k.lower() in ALIASES["tokens"]]
            tokenized = (
                f", or, since it holds token ids as {ids[0]!r}, read those: seqgate_columns = "
                f"tokens={ids[0]} (the 'text' is then left aside)"
                if ids
                else ""
            )
            raise MissingTokenizer(
                f"{self.where(line)}: record has 'text' but no tokenizer is configured; set "
                f"seqgate_tokenizer to a 'pkg.module:callable' mapping text to token ids"
                f"{tokenized}"
            )
        if not isinstance(text, str):
            raise DataError(f"{self.where(line)}: 'text' must be a string")
        if pair is not None and not isinstance(pair, str):
            raise DataError(f"{self.where(line)}: 'text_pair' must be a string")
        try:
            ids = self.tokenizer(text) if pair is None else self.tokenizer(text, pair)
        except Exception as exc:
            needs = (
                "; a record with 'text_pair' needs a tokenizer that takes two texts: a "
                "tokenizer.json, a Hugging Face tokenizer, or a callable(text, text_pair)"
                if pair is not None
                else ""
            )
            raise DataError(
                f"{self.where(line)}: the tokenizer {_name_of(self.tokenizer)} raised "
                f"{type(exc).__name__} on the text {text[:40]!r}: {exc}{raised_at(exc)}{needs}"
            ) from exc
        types = None
        if isinstance(ids, Mapping) and "input_ids" in ids:
            types = ids.get("token_type_ids")
            ids = ids["input_ids"]  # a Hugging Face tokenizer's encoding
        elif isinstance(getattr(ids, "ids", None), list):
            types = getattr(ids, "type_ids", None)
            ids = ids.ids  # the tokenizers library's Encoding
        try:
            out = list(ids.tolist() if hasattr(ids, "tolist") else ids)
        except TypeError:  # None (a text it gave up on), a single id
            raise DataError(
                f"{self.where(line)}: the tokenizer {_name_of(self.tokenizer)} returned "
                f"{repr(ids)[:80]} for the text {text[:40]!r}; it must return a list of int "
                f"token ids"
            ) from None
        if self.index_ids:
            out = list(map(operator.index, out))
        elif not self.checked_tokenizer:
            # Its first output stands for the rest: checking every id of every
            # record would cost more than the parse.
            if not all(type(i) is int for i in out):
                if not all(hasattr(i, "__index__") and not isinstance(i, bool) for i in out):
                    raise DataError(
                        f"{self.where(line)}: the tokenizer {_name_of(self.tokenizer)} returned "
                        f"{repr(out[:5])[:80]} for the text {text[:40]!r}; it must return a "
                        f"list of int token ids ({_not_ids(out)})"
                    )
                # NumPy integers, say: made Python ints, record by record from now on.
                self.index_ids = True
                out = list(map(operator.index, out))
            self.checked_tokenizer = True
        if pair is None or types is None:
            return out, None  # (one text's segments are all 0: the model's default)
        segments = list(types.tolist() if hasattr(types, "tolist") else types)
        if len(segments) != len(out):
            raise DataError(
                f"{self.where(line)}: the tokenizer {_name_of(self.tokenizer)} gave "
                f"{len(segments)} token_type_ids for the {len(out)} ids of the pair "
                f"{text[:40]!r}, {pair[:40]!r}: expected one per id"
            )
        return out, segments

    def label_index(self) -> tuple[Tensor, tuple[str, ...] | None]:
        raw = self.raw_labels
        names = self.labels
        if not set(map(type, raw)) <= {str, int}:
            # Float labels that are whole numbers (0.0 and 1.0, a BCE target's) are
            # indices; anything else cannot name a class.
            raw = [int(v) if type(v) is float and v.is_integer() else v for v in raw]
            self.raw_labels = raw
            bad = [(i, v) for i, v in enumerate(raw) if type(v) not in (str, int)]
            if bad:
                i, value = bad[0]
                boolean = isinstance(value, bool)
                shown = spelt(value) if value is None or boolean else repr(value)
                raise DataError(
                    f"{self.where(self.lines[i])}: label {shown} is neither a class name "
                    f"nor a class index (an integer)"
                    + (
                        "; a true/false label says yes or no, not which class: write the "
                        "class's name (\"spam\") or its index in the model's outputs (1)"
                        if boolean
                        else _list_label_hint(value)
                    )
                )
        if names is None:
            if all(isinstance(x, str) for x in raw):
                # Names that are numbers ("1" to "12" stars) in their numeric order:
                # sorted as text, "10" would come before "2".
                distinct = set(raw)
                numeric = named_by_numbers(distinct)
                names = tuple(sorted(distinct, key=int if numeric else None))
            elif all(isinstance(x, int) and not isinstance(x, bool) for x in raw):
                huge = next((i for i, x in enumerate(raw) if not -(2**63) <= x < 2**63), None)
                if huge is not None:
                    # No class has such an index, and int64 cannot hold it.
                    raise DataError(
                        f"{self.where(self.lines[huge])}: label {raw[huge]!r} is not a class "
                        f"index: indices run from 0 to one less than the number of classes"
                    )
                return int64s(raw), None
            else:
                raise DataError(
                    f"{self.source}: labels mix class names and indices; set seqgate_labels "
                    f"so indices and names can be matched"
                )
        index = {name: i for i, name in enumerate(names)}
        by_number = self._numbered_classes(raw, names)
        # Every label a name, or every one a number (a name, or an index in range):
        # read as the loop below reads them, without its branches per label (0.09
        # s for 300,000 labels, against 0.25); a miss is the loop's to read or blame.
        with contextlib.suppress(KeyError):
            if all(type(v) is str for v in raw):
                return int64s([index[v] for v in raw]), names
            if all(type(v) is int for v in raw):
                if by_number is not None:
                    return int64s([by_number[v] for v in raw]), names
                if min(raw) >= 0 and max(raw) < len(names):
                    return int64s(raw), names
        out = []
        for i, value in enumerate(raw):
            if isinstance(value, str) and value in index:
                out.append(index[value])
            elif by_number is not None and (
                (isinstance(value, int) and not isinstance(value, bool))
                or (isinstance(value, str) and value.isascii() and value.isdigit())
            ):
                if int(value) not in by_number:
                    self._unknown_label(i, value, names, read_as_names=True)
                out.append(by_number[int(value)])
            elif isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(names):
                out.append(value)
            elif isinstance(value, str) and value.isascii() and value.isdigit():
                if int(value) >= len(names):
                    self._unknown_label(i, value, names)
                # "1" where no class is named "1": an index written as a string (a CSV
                # field always is one; a .jsonl exported from a table often is).
                out.append(int(value))
            else:
                self._unknown_label(i, value, names)
        return int64s(out), names

    def _numbered_classes(self, raw: list[Any], names: tuple[str, ...]) -> dict[int, int] | None:
        """Class positions by number, where the number labels are class names.

        Classes named by numbers ("1" to "5" stars) make an integer label
        ambiguous: 5 is no index among 5 classes, so it names the class "5", and
        then 1 must name "1" too (read as an index, it was silently "2"). Integers
        are names when every one of them is a name and one is no index. Where all
        of them fit both readings and the two differ (1 to 4 of "1" to "5"), the
        file cannot say which it means, and a guess would shift every class.
        Sets ``numbers_read`` once the labels decide, for a stream's next chunk."""
        if not named_by_numbers(names):
            return None
        by_number = {int(name): i for i, name in enumerate(names)}
        numbers = {x for x in raw if isinstance(x, int) and not isinstance(x, bool)}
        if self.numbers_read is not None and numbers:
            return by_number if self.numbers_read == "names" else None
        if not numbers:
            # Numbers written as text (a CSV's every field) are names: "5" is the
            # class "5", and a "0" among them names none, not the first class.
            digits = any(isinstance(x, str) and x.isascii() and x.isdigit() for x in raw)
            return by_number if digits else None
        if not numbers <= set(by_number):
            self.numbers_read = "indexes"
            return None
        if not numbers <= set(range(len(names))):
            self.numbers_read = "names"
            return by_number
        differs = [i for i, x in enumerate(raw) if x in numbers and by_number[x] != x]
        if differs:
            i = differs[0]
            value = raw[i]
            raise DataError(
                f"{self.where(self.lines[i])}: label {value} is the class {str(value)!r} by "
                f"name or the class {names[value]!r} by index, and no label of "
                f"{self.source} tells which: the classes are named by numbers. Write the "
                f'labels as strings ("{value}") to mean the names, or name the classes '
                f"otherwise in seqgate_labels to mean indexes"
            )
        return None

    def _unknown_label(
        self, i: int, value: Any, names: tuple[str, ...], read_as_names: bool = False
    ) -> NoReturn:
        folded = [n for n in names if isinstance(value, str) and n.lower() == value.lower()]
        near = f": it differs from {folded[0]!r} only in case" if folded else ""
        if isinstance(value, str) and value.strip() != value and value.strip() in names:
            # ' ham ' from a CSV written with spaces after its commas.
            near = f": it differs from {value.strip()!r} only in the spaces around it"
        ints = enumerate(self.raw_labels)
        other = next((j for j, x in ints if isinstance(x, int) and str(x) not in names), None)
        if (
            named_by_numbers(names)
            and isinstance(value, int)
            and str(value) in names
            and other is not None
        ):
            # Classes named by numbers, read as indexes since some label is no name.
            raise DataError(
                f"{self.where(self.lines[i])}: label {value} names the class {str(value)!r} but "
                f"is no index below {len(names)}, and {self.where(self.lines[other])} has label "
                f"{self.raw_labels[other]}, which names no class: the classes are named by "
                f"numbers, so write every label as a class name ({names[0]} to {names[-1]}) or "
                f"every one as an index (0 to {len(names) - 1})"
            )
        nor = (
            ": the classes are named by numbers, so a number label names its class "
            "and is not read as an index"
            if read_as_names
            else f" (nor an index below {len(names)}){near}"
        )
        raise DataError(
            f"{self.where(self.lines[i])}: label {value!r} is not one of "
            f"seqgate_labels {label_list(names)}{nor}; fix the record or add the class to "
            f"seqgate_labels"
        )

    def pack(self) -> None:
        """Move the ids in ``flat`` into ``packed``, where all are ints in range.

        A list holds a pointer and an int object (32 bytes) an id, where the
        array holds 8: a set of 1,000,000 records of 45 tokens read whole
        peaked at 2,392 MiB with one list. Anything else among the ids (a bool,
        a float, NumPy's integers) stops the packing, and :meth:`build` reads
        them all as a list again, to convert or blame them.
        """
        if set(map(type, self.flat)) == {int}:
            try:
                self.packed.fromlist(self.flat)  # (unchanged where one is out of range)
            except OverflowError:
                self.packing = False
                return
            self.flat = []
        else:
            self.packing = False

    def build(self) -> SequenceData:
        if not self.lengths:
            raise DataError(f"{self.source}: the dataset is empty: it holds no records")
        labels, names = self.label_index()
        dtype = torch.float32 if self.kind == "features" else torch.int64
        if self.packed:
            self.pack()
            if self.flat:  # not all ints: the checks below read every id
                self.flat = self.packed.tolist() + self.flat
                self.packed = array.array("q")
        if self.packed:
            return self.finish(torch.frombuffer(self.packed, dtype=torch.int64), labels, names)
        types = set(map(type, self.flat)) if self.kind == "tokens" else set()
        if self.kind == "tokens" and not types <= {int}:
            # NumPy or torch integer scalars among the ids (a set built in code):
            # made Python ints in one pass; floats and bools stay to be blamed.
            integral = all(
                hasattr(x, "__index__") and not isinstance(x, (bool, float)) for x in self.flat
            )
            if integral:
                # (A float tensor has __index__ too, and refuses: then it is blamed.)
                with contextlib.suppress(TypeError, ValueError, RuntimeError):
                    self.flat = list(map(operator.index, self.flat))
                    types = {int}
        try:
            values = int64s(self.flat) if types == {int} else torch.tensor(self.flat, dtype=dtype)
        except (TypeError, ValueError, RuntimeError, OverflowError):
            values = None
        if (
            values is None
            or (self.kind == "features" and values.dim() != 2)
            or (self.kind == "tokens" and values.dim() != 1)
            # An int64 tensor takes 2.5 as 2 and true as 1 without a word: one pass
            # over the types (a quarter of the conversion's cost) rules them out.
            or (self.kind == "tokens" and types != {int})
        ):
            self.locate_bad_record(dtype)
        assert values is not None
        return self.finish(values, labels, names)

    def finish(self, values: Tensor, labels: Tensor, names: tuple[str, ...] | None) -> SequenceData:
        """The set, from its values checked, with its segments and lengths."""
        segments = None
        if self.types is not None:
            if not set(map(type, self.types)) <= {int}:
                self.blame_non_int(self.types, "token_type_ids")
            segments = int64s(self.types)
        lengths = int64s(self.lengths)
        return self.assemble(values, lengths, labels, names, segments)

    def assemble(
        self,
        values: Tensor,
        lengths: Tensor,
        labels: Tensor,
        names: tuple[str, ...] | None,
        token_type_ids: Tensor | None = None,
    ) -> SequenceData:
        """The set, from its flat values and lengths (the records', or a column's
        taken whole) and the labels :meth:`label_index` read."""
        # SequenceData checks what holds for any set (negative token ids, say), naming the line.
        return SequenceData(
            values=values,
            offsets=torch.cumsum(lengths, 0) - lengths,
            lengths=lengths,
            labels=labels,
            label_names=names,
            names_inferred=names is not None and self.labels is None,
            source=self.source,
            # A dataset's records are named by index (``source[i]``), a file's by line,
            # a streamed chunk of a set named by row by its rows.
            line_numbers=(None if self.indexed and not self.first_row else int64s(self.lines)),
            by_row=self.indexed,
            parts=tuple(self.parts),
            metadata=self.metadata,
            token_type_ids=token_type_ids,
        )

    def blame_non_int(self, flat: list[Any], key: str) -> None:
        """Slow path: name the first record whose ``key`` (``flat``: every record's
        steps end to end) holds a value that is no int."""
        start = 0
        for length, line in zip(self.lengths, self.lines):
            bad = next((x for x in flat[start : start + length] if type(x) is not int), None)
            start += length
            if bad is not None:
                raise DataError(
                    f"{self.where(line)}: {key!r} must be a list of integers, but holds {bad!r}"
                    + (f" (a list: {BATCH_OF_ONE})" if isinstance(bad, (list, tuple)) else "")
                )

    def locate_bad_record(self, dtype: torch.dtype) -> None:
        """Slow path, only after the fast conversion failed: find the record to blame."""
        if self.kind == "tokens":
            self.blame_non_int(self.flat, "tokens")
        else:
            start = 0
            width = None
            for length, line in zip(self.lengths, self.lines):
                chunk = self.flat[start : start + length]
                start += length
                ok = all(
                    isinstance(v, list) and all(isinstance(x, (int, float)) for x in v)
                    for v in chunk
                )
                widths = {len(v) for v in chunk} if ok else set()
                if not ok or len(widths) != 1 or (width is not None and widths != {width}):
                    raise DataError(
                        f"{self.where(line)}: 'features' must be a list of equal-length "
                        f"number vectors, the same width in every record"
                    )
                width = widths.pop()
        raise DataError(f"{self.source}: sequences cannot be converted to a {dtype} tensor")


def configured_tokenizer(settings: Settings) -> Callable[[str], Sequence[int]] | None:
    """The ``seqgate_tokenizer`` callable, for every way records with text arrive:
    files, a dataset import path, a load-dataset hook, a fixture's dataset."""
    if settings.tokenizer is None:
        return None
    setting = settings.source("tokenizer")
    if not is_import_path(settings.tokenizer):
        return _tokenizer_file(settings.existing("tokenizer"), setting, settings.tokenizer)
    tokenizer = import_object(settings.tokenizer, settings.rootdir, setting)
    if not callable(tokenizer):
        encode = getattr(tokenizer, "encode", None)
        if callable(encode):
            # A tokenizer object that is not called but asked to encode (the
            # tokenizers library's Tokenizer, SentencePiece, tiktoken).
            return cast("Callable[[str], Sequence[int]]", encode)
        raise ConfigError(
            f"{setting}: {settings.tokenizer!r} is {_name_of(tokenizer)}, which can neither "
            f"be called nor .encode() a text; name a function mapping a text to token ids"
        )
    return cast("Callable[[str], Sequence[int]]", tokenizer)


def _tokenizer_file(path: Path, setting: str, shown: str) -> Callable[[str], Sequence[int]]:
    """The ``encode`` of a tokenizer.json (the tokenizers library's file, which a
    Hugging Face tokenizer's save_pretrained writes beside its model): the ids a
    fast tokenizer gives, special tokens included. Padding saved in the file is
    turned off: seqgate pads each batch itself, and a set padded before it came
    would have every length wrong. A SentencePiece ``.model`` file: see
    :func:`_sentencepiece`."""
    if path.suffix.lower() == ".model":
        return _sentencepiece(path, setting, shown)
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise ConfigError(
            f"{setting}: reading {shown} needs the tokenizers package, which is not "
            f"installed: pip install tokenizers"
        ) from None
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises its own Exception for a bad file
        raise ConfigError(
            f"{setting}: {shown} is not a tokenizer.json the tokenizers library reads "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        ) from None
    tokenizer.no_padding()
    return cast("Callable[[str], Sequence[int]]", tokenizer.encode)


def _sentencepiece(path: Path, setting: str, shown: str) -> Callable[[str], Sequence[int]]:
    """The ``encode`` of a SentencePiece model (``spm.model``, ``spiece.model``): the
    ids ``sp.encode(text)`` gives, with no BOS or EOS added, as a model trained on
    them saw them (a model that needs them takes a callable that adds them)."""
    try:
        import sentencepiece
    except ImportError:
        raise ConfigError(
            f"{setting}: reading {shown} needs the sentencepiece package, which is not "
            f"installed: pip install sentencepiece"
        ) from None
    try:
        processor = sentencepiece.SentencePieceProcessor(model_file=str(path))
    except Exception as exc:  # sentencepiece raises OSError or RuntimeError for a bad file
        raise ConfigError(
            f"{setting}: {shown} is not a SentencePiece model sentencepiece reads "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        ) from None
    return cast("Callable[[str], Sequence[int]]", processor.encode)


def load_dataset(settings: Settings, role: str) -> SequenceData:
    """Load ``seqgate_eval_data`` or ``seqgate_train_data`` (``role``)."""
    if role not in ("eval_data", "train_data"):
        raise ConfigError(
            f"load_dataset(): role is 'eval_data' or 'train_data', not {role!r}"
            f"{did_you_mean(role, ('eval_data', 'train_data'), 0.5)}"
        )
    spec = getattr(settings, role)
    if spec is None:
        raise ConfigError(
            f"no {role} configured: set seqgate_{role} (ini) or "
            f"--seqgate-{role.replace('_', '-')}, or override the seqgate_{role} fixture"
        )
    tokenizer = configured_tokenizer(settings)
    try:
        return _read_dataset(settings, role, spec, tokenizer)
    except MissingTokenizer as exc:
        model = settings.resolve("model", settings.model) if settings.model else None
        if model is None or not (model / "tokenizer.json").is_file():
            raise
        shown = settings.display(model / "tokenizer.json")
        raise MissingTokenizer(
            f"{exc}; the model's folder holds its tokenizer: seqgate_tokenizer = {shown!r}"
        ) from None


def _read_dataset(
    settings: Settings,
    role: str,
    spec: str,
    tokenizer: Callable[[str], Sequence[int]] | None,
) -> SequenceData:
    setting = settings.source(role)
    column_of = settings.column_of
    if is_import_path(spec):
        obj = import_object(spec, settings.rootdir, setting)
        dataset = _call(obj, setting, spec) if callable(obj) else obj
        return from_dataset(dataset, spec, settings.labels, tokenizer, column_of=column_of)
    path = settings.existing(role)
    suffix = data_suffix(path)
    if suffix == ".jsonl":
        data = read_jsonl(path, settings.labels, tokenizer, settings.display(path), column_of)
    elif suffix == ".json":
        data = read_json(path, settings.labels, tokenizer, settings.display(path), column_of)
    elif suffix in (".csv", ".tsv"):
        data = read_csv(path, settings.labels, tokenizer, settings.display(path), column_of)
    elif suffix == ".pt":
        data = read_pt(path, settings.labels, settings.display(path))
    elif table_set(path):
        data = read_table(path, settings.labels, tokenizer, settings.display(path), column_of)
    else:
        data = None
    if data is not None:
        return data
    raise ConfigError(
        f"{setting}: cannot read {settings.display(path)}: the suffix must be .jsonl, .json, "
        f".csv, .tsv (each gzipped too: .jsonl.gz), .parquet, .arrow or .pt, or give a "
        f"'pkg.module:callable' returning a Dataset"
    )


@contextlib.contextmanager
def open_data(path: Path, name: str) -> Iterator[io.BufferedIOBase]:
    """A data file's bytes, decompressed as they are read when it ends in ``.gz``
    (an eval set committed to a repository is often gzipped). A damaged or cut-off
    archive is an error naming the file, not gzip's bare one."""
    compressed = path.suffix.lower() == ".gz"
    try:
        with gzip.open(path, "rb") if compressed else path.open("rb") as handle:
            yield handle
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise DataError(
            f"{name}: cannot decompress it ({type(exc).__name__}: {exc}): a damaged or "
            f"cut-off .gz file? Compress it again, or give it uncompressed"
        ) from None


def _text(path: Path, name: str) -> str:
    """A data file's text, its BOM dropped; bytes that are not UTF-8 name their line."""
    with open_data(path, name) as handle:
        data = handle.read()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataError(
            f"{name}:{line}: bytes that are not UTF-8 ({exc.reason} at byte {exc.start}); "
            f"re-encode the file as UTF-8"
        ) from None


def _text_lines(path: Path, name: str) -> Iterator[str]:
    """A text file's lines, read one at a time, as ``str.splitlines`` cuts them
    (each given back ending in a newline, as the csv module reads a file): the
    BOM of the first dropped; bytes that are not UTF-8 name their line."""
    with open_data(path, name) as handle:
        for number, raw in enumerate(handle, start=1):
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            for line in _decoded(raw, number, name).splitlines():
                yield line + "\n"


def fast_loads() -> Callable[[bytes], Any] | None:
    """``orjson.loads`` when the optional ``fast`` extra is installed, else None.

    orjson parses the raw line bytes, with no decode step, about twice as fast as
    the standard library (see bench/). A line it rejects is parsed again by
    ``json``, which either accepts it (NaN, integers past 64 bits) or gives the
    message the error names, so results and errors do not depend on the extra.
    """
    try:
        orjson = importlib.import_module("orjson")
    except ImportError:
        return None
    loads: Callable[[bytes], Any] = orjson.loads
    return loads


def iter_jsonl(path: Path, name: str) -> Iterator[tuple[int, Any]]:
    """(line number, record) for each non-blank line, reading one line at a time.

    A BOM on the first line is skipped; bytes that are not UTF-8 and a JSON error
    name the line (and a bad last line suggests a truncated file).
    """
    fast = fast_loads()

    def parse(raw: bytes, number: int, last: bool) -> Any:
        if fast is not None:
            try:
                return fast(raw)
            except ValueError:
                pass  # json parses it the same way, or names the error
        return _parse_line(raw, number, name, last)

    with open_data(path, name) as handle:
        pending: tuple[int, bytes] | None = None
        for number, raw in enumerate(handle, start=1):
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            if pending is not None:
                yield pending[0], parse(pending[1], pending[0], last=False)
                pending = None
            if raw.strip():
                pending = (number, raw)
        if pending is not None:
            yield pending[0], parse(pending[1], pending[0], last=True)


def _decoded(raw: bytes, number: int, name: str) -> str:
    """Line ``number`` of a file, read as UTF-8; other bytes are an error naming it."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{name}:{number}: bytes that are not UTF-8 ({exc.reason} at byte {exc.start} of "
            f"the line); re-encode the file as UTF-8"
        ) from None


def _parse_line(raw: bytes, number: int, name: str, last: bool) -> Any:
    text = _decoded(raw, number, name)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        hint = " (the last line: is the file truncated?)" if last else ""
        raise DataError(f"{name}:{number}: invalid JSON{hint}: {exc.msg}") from None


def read_jsonl(
    path: Path,
    labels: tuple[str, ...] | None = None,
    tokenizer: Callable[[str], Sequence[int]] | None = None,
    display: str | None = None,
    column_of: Mapping[str, str] | None = None,
) -> SequenceData:
    """One JSON object per line; blank lines are skipped."""
    name = display or str(path)
    return _built(_Builder(name, labels, tokenizer, column_of=column_of), path, iter_jsonl)


def read_json(
    path: Path,
    labels: tuple[str, ...] | None = None,
    tokenizer: Callable[[str], Sequence[int]] | None = None,
    display: str | None = None,
    column_of: Mapping[str, str] | None = None,
) -> SequenceData:
    """A .json file in the layouts the tools ML engineers export with write, as
    ``load_dataset("json")`` reads them: a JSON array of records (``json.dump``,
    ``df.to_json(orient="records")``), records named by index (``test.json[16]``);
    JSON lines under a .json name, named by line (``test.json:16``); an object of
    columns, as lists (``Dataset.to_dict()``) or as pandas' default
    ``df.to_json()`` writes them (``{"text": {"0": ...}}``), or pandas' other
    orients (``index``, ``split``, ``table``), rows named from 0."""
    name = display or str(path)
    if data_shards(path):  # a pattern: shards of JSON lines, as Spark writes them
        return _built(_Builder(name, labels, tokenizer, column_of=column_of), path, json_lines)
    if holds_json_array(path, name):
        # Parsed an element at a time, as streamed: the whole document parsed first
        # held every record at once (2,000,000 records: 6.4 GiB, at half the speed).
        builder = _Builder(name, labels, tokenizer, indexed=True, column_of=column_of)
        for row, record in iter_json_array(path, name):
            builder.add(record, row)
        return builder.build()
    text = _text(path, name)
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data" and text.lstrip().startswith("{"):
            return read_jsonl(path, labels, tokenizer, name, column_of)  # JSON lines
        raise DataError(
            f"{name}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}; a .json eval set is "
            f"a JSON array of records, or one record a line"
        ) from None
    records = _json_records(document, name, column_of or {})
    if records is None:  # one object, a record: a JSON lines file of one line
        return read_jsonl(path, labels, tokenizer, name, column_of)
    builder = _Builder(name, labels, tokenizer, indexed=True, column_of=column_of)
    for row, record in enumerate(records):
        builder.add(record, row)
    return builder.build()


def json_lines(path: Path, name: str) -> Iterator[tuple[int, Any]]:
    """(line, record) of a .json file read as JSON lines, as a pattern of shards
    reads it; a JSON array (read whole, by :func:`read_json`, or streamed by
    :func:`iter_json_array`) is an error naming the file, not a first line that is
    not a record."""
    if holds_json_array(path, name):
        raise DataError(
            f"{name}: holds a JSON array; a pattern of .json files reads JSON lines (one "
            f"record a line, as Spark writes them): write one record a line (.jsonl), or "
            f"give this file alone"
        )
    yield from iter_jsonl(path, name)


def holds_json_array(path: Path, name: str) -> bool:
    """Whether a .json file's first value is an array (its first 4 KiB tell)."""
    with open_data(path, name) as handle:
        start = handle.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    return start.startswith(b"[")


def streamed_json_array(path: Path, name: str, column_of: Mapping[str, str] | None) -> bool:
    """Whether a .json file to stream is one JSON array (else JSON lines). One JSON
    object of another layout (columns, pandas' orients), which :func:`read_json`
    reads whole, is an error naming it: its first line read as a record said "no
    'label'", or gave a list of labels."""
    if holds_json_array(path, name):
        return True
    with open_data(path, name) as handle:
        first = next((raw for raw in handle if raw.strip()), b"").lstrip(b"\xef\xbb\xbf")
    try:
        document = json.loads(first)
    except ValueError:  # (bytes that are not UTF-8 too) a bad line: iter_jsonl names it
        document = None
    whole = first.strip() == b"{"  # a document over several lines (indented)
    if isinstance(document, dict):
        with contextlib.suppress(DataError):  # (a bad record: the builder names it)
            whole = _json_records(document, name, column_of or {}) is not None
    if whole:
        raise DataError(
            f"{name}: holds one JSON object of records (columns, or pandas' orients), which "
            f"cannot be streamed a window at a time: write one record a line (.jsonl: "
            f"Dataset.to_json, df.to_json(orient='records', lines=True)) or an array of "
            f"records (json.dump(records, f)), or evaluate it in memory "
            f"(--seqgate-no-streaming)"
        )
    return False


_JSON_SPACE = re.compile(r"[ \t\n\r]*")
#: An error this close to the end of what was read may be a record cut by the
#: read (``1.`` of ``1.5``, ``\u00`` of an escape), not a fault of the file.
_CUT_SLACK = 16


def iter_json_array(path: Path, name: str, block: int = 1 << 20) -> Iterator[tuple[int, Any]]:
    """(index, record) of each element of a file that is one JSON array
    (``json.dump(records, f)``), parsed one element at a time from blocks of
    ``block`` bytes: memory holds a block and a record, not the file, so a
    streamed eval set may be an array as well as JSON lines. Records are named by
    index, as :func:`read_json` names them; an error names the line and column,
    as ``json.loads`` of the whole file would."""
    decode = codecs.getincrementaldecoder("utf-8")().decode
    scan = json.JSONDecoder().raw_decode
    with open_data(path, name) as handle:
        text = ""  # what was read and not yet consumed, from absolute offset `base`
        pos = base = 0
        line, line_start = 1, 0  # the line of text[0], and the offset its line starts at
        done = False
        read = 0  # bytes read, for an encoding error's place

        def more() -> bool:
            """Read the next block onto what is left; False at the end of the file
            (what is left then stays as it was)."""
            nonlocal text, pos, base, line, line_start, done, read
            if done:
                return False
            fresh = ""
            while not fresh and not done:  # (a block may end inside a character)
                raw = handle.read(block)
                try:
                    fresh = decode(raw, final=not raw)
                except UnicodeDecodeError as exc:
                    at = line + text.count("\n") + raw.count(b"\n", 0, max(exc.start, 0))
                    raise DataError(
                        f"{name}:{at}: bytes that are not UTF-8 ({exc.reason} at byte "
                        f"{read + exc.start}); re-encode the file as UTF-8"
                    ) from None
                if not base and not text and fresh.startswith("\ufeff"):  # the first
                    fresh = fresh[1:]
                read += len(raw)
                done = not raw
            if not fresh:
                return False
            consumed = text.count("\n", 0, pos)
            if consumed:
                line += consumed
                line_start = base + text.rindex("\n", 0, pos) + 1
            text, base, pos = text[pos:] + fresh, base + pos, 0
            return True

        def where(at: int) -> str:
            newlines = text.count("\n", 0, at)
            column = at - text.rindex("\n", 0, at) if newlines else base + at - line_start + 1
            return f"{name}:{line + newlines}:{column}"

        def fail(at: int, msg: str) -> NoReturn:
            raise DataError(
                f"{where(at)}: invalid JSON: {msg}; a .json eval set is a JSON array of "
                f"records, or one record a line"
            )

        def skip_space() -> bool:
            """Move past white space; False where the file ends first."""
            nonlocal pos
            while True:
                match = _JSON_SPACE.match(text, pos)
                assert match is not None  # (it matches the empty string)
                pos = match.end()
                if pos < len(text):
                    return True
                if not more():
                    return False

        if not skip_space() or text[pos] != "[":
            fail(pos, "Expecting '['")  # (holds_json_array said it starts so)
        pos += 1
        index = 0
        closing = True  # a ']' may close the array here (not after a ',')
        while True:
            if not skip_space():
                fail(pos, "Expecting value")
            if closing and text[pos] == "]":
                pos += 1
                break
            while True:
                try:
                    record, end = scan(text, pos)
                except json.JSONDecodeError as exc:
                    cut = exc.pos + _CUT_SLACK >= len(text) or exc.msg.startswith(
                        "Unterminated string"
                    )
                    if cut and more():
                        continue
                    fail(exc.pos, exc.msg)
                if end < len(text) or not more():  # (a number may go on in the next block)
                    break
            pos = end
            yield index, record
            index += 1
            if not skip_space():
                fail(pos, "Expecting ',' delimiter")
            if text[pos] == "]":
                pos += 1
                break
            if text[pos] != ",":
                fail(pos, "Expecting ',' delimiter")
            pos += 1
            closing = False
        if skip_space():
            fail(pos, "Extra data")


def _json_records(document: Any, name: str, column_of: Mapping[str, str]) -> list[Any] | None:
    """The records of a parsed .json document (see :func:`read_json`); None where
    the document is one record."""
    if isinstance(document, list):
        return document
    if not isinstance(document, dict):
        raise DataError(
            f"{name}: holds a JSON {type(document).__name__}, not records: a .json eval set "
            f"is a JSON array of records, or one record a line"
        )
    fields = {renamed_keys(document, column_of).get(key) or key for key in document}
    if "label" in fields or fields & set(SEQUENCE_KEYS):
        columns = list(document.values())
        if all(isinstance(c, dict) for c in columns) and len({tuple(c) for c in columns}) == 1:
            # pandas' default orient: each column an object keyed by the row's index.
            document = {key: list(column.values()) for key, column in document.items()}
        rows = _records_of_columns(document, name, column_of)
        return None if rows is document else list(rows)
    data = document.get("data")
    if isinstance(data, list) and isinstance(document.get("columns"), list):
        # pandas' orient="split": the column names, then each row's values.
        return [
            dict(zip(document["columns"], row)) if isinstance(row, list) else row for row in data
        ]
    if isinstance(data, list):  # orient="table", or records under "data"
        return data
    values = list(document.values())
    if values and all(isinstance(v, dict) for v in values):
        return values  # pandas' orient="index": each row an object under its index
    keys = ", ".join(repr(k) for k in list(document)[:6])
    raise DataError(
        f"{name}: holds one JSON object (its keys: {keys}), not records: a .json eval set "
        f"is a JSON array of records, one record a line, or an object of columns; write "
        f"the records themselves (json.dump(records, f)), or give a 'pkg.module:callable' "
        f"returning them"
    )


def stream_records(
    path: Path,
    labels: tuple[str, ...],
    tokenizer: Callable[[str], Sequence[int]] | None,
    display: str,
    chunk: int,
    column_of: Mapping[str, str] | None = None,
) -> Iterator[SequenceData]:
    """The records of a .jsonl, .json (JSON lines, or one JSON array), .csv or .tsv
    file (or a pattern of their shards) as consecutive SequenceData chunks of
    ``chunk`` records, read a line (an array's element) at a time: memory holds one
    chunk, not the file. An array's records are named by index, as read whole."""
    indexed = False
    if data_suffix(path) in (".jsonl", ".json"):
        records: Callable[..., Iterator[tuple[int, Any]]] = (
            iter_jsonl if data_suffix(path) == ".jsonl" else json_lines
        )
        if data_suffix(path) == ".json" and not data_shards(path):
            indexed = streamed_json_array(path, display, column_of)
            records = iter_json_array if indexed else iter_jsonl
        args: tuple[Any, ...] = ()
        renames = column_of  # a record's keys, renamed by the builder
    else:
        records, args, renames = _csv_records, (labels, column_of), None  # renamed as read
    parts: list[tuple[str, int]] = []  # the shards read so far, for every chunk
    builder = None
    read = None
    for number, record in _sharded(path, display, parts, records, *args):
        if builder is None:
            builder = _Builder(
                display, labels, tokenizer, indexed, renames, number if indexed else 0
            )
            builder.numbers_read = read
            builder.parts = parts
        builder.add(record, number)
        if len(builder.lengths) >= chunk:
            yield builder.build()
            read = builder.numbers_read
            builder = None
    if builder is not None:
        yield builder.build()


def _delimiter(text: str, column_of: Mapping[str, str]) -> str:
    """A comma; or what separates a header that holds no comma and names the
    columns when split on it: a ';' from a spreadsheet saved in a locale whose
    decimal mark is the comma, a tab from a .tsv named .csv."""
    header = text.partition("\n")[0]
    if "," not in header:
        for mark in (";", "\t"):
            names = [n.strip('"') for n in header.split(mark)]
            renames = renamed_keys(names, column_of)
            names = [renames.get(n) or n for n in names]
            if "label" in names and any(key in names for key in SEQUENCE_KEYS):
                return mark
    return ","


def read_csv(
    path: Path,
    labels: tuple[str, ...] | None = None,
    tokenizer: Callable[[str], Sequence[int]] | None = None,
    display: str | None = None,
    column_of: Mapping[str, str] | None = None,
) -> SequenceData:
    """Columns ``label`` and one of ``tokens`` (space separated ints), ``text``, ``features``
    (a JSON list of vectors); other columns are metadata. Separated by commas, or
    by semicolons or tabs where the header says so (:func:`_delimiter`)."""
    name = display or str(path)
    # (The columns are renamed as the rows are read: the builder renames nothing.)
    return _built(_Builder(name, labels, tokenizer), path, _csv_records, labels, column_of)


def _built(builder: _Builder, path: Path, records: Any, *args: Any) -> SequenceData:
    """The set of a line-based file, or of a pattern's shards: each record
    ``records(file, name, *args)`` reads, added to ``builder`` (named by it)."""
    for number, record in _sharded(path, builder.source, builder.parts, records, *args):
        builder.add(record, number)
    return builder.build()


def _sharded(
    path: Path, name: str, parts: list[tuple[str, int]], records: Any, *args: Any
) -> Iterator[tuple[int, Any]]:
    """(line, record) of each record of a file, or of a pattern's shards in name
    order (``records(file, name, *args)`` reads one file), lines counted on across
    the shards: each shard's name and the lines before it are appended to
    ``parts``, which then name a record by its shard and its line there."""
    shards = data_shards(path)
    if not shards:
        yield from records(path, name, *args)
        return
    shift = 0
    for file in shards:
        shown = shard_name(path, name, file)
        parts.append((shown, shift))
        number = 0
        for number, record in records(file, shown, *args):
            yield shift + number, record
        shift += number  # the last record's line: the next shard's lines come after


def _quoted_fields_parse(lines: Iterable[str]) -> bool:
    """Whether a .tsv file's quotes are quoting, as a CSV writer puts them (the
    whole file parses so), rather than text in unquoted fields."""
    try:
        for _row in csv.reader(lines, delimiter="\t", strict=True):
            pass
    except csv.Error:
        return False
    return True


def _csv_rows(
    path: Path, name: str, column_of: Mapping[str, str] | None
) -> tuple[Iterator[dict[Any, Any]], csv.DictReader[str], str]:
    """The rows of one CSV (or TSV) file, read a line at a time, keyed by the
    fields their columns are read as; the reader (whose ``line_num`` places
    them), and what separates the fields, for messages. A row that is not valid
    CSV is an error naming its line."""
    lines = _text_lines(path, name)
    first = next(lines, "")
    # strict: an unclosed quote is an error, not a field that swallows the records
    # after it (the csv module's default).
    tsv = data_suffix(path) == ".tsv"
    mark = "\t" if tsv else _delimiter(first, column_of or {})
    separator = {",": "a comma", ";": "a semicolon", "\t": "a tab"}[mark]
    # A .tsv as GLUE's are written, unquoted: a quote is text ('" the film'), where
    # pandas' to_csv(sep="\t") would have quoted the field (a pass of its own).
    unquoted = tsv and not _quoted_fields_parse(_text_lines(path, name))
    reader = csv.DictReader(
        itertools.chain([first], lines),
        strict=True,
        delimiter=mark,
        quoting=csv.QUOTE_NONE if unquoted else csv.QUOTE_MINIMAL,
    )
    try:
        given = reader.fieldnames or []
    except csv.Error as exc:
        raise DataError(f"{name}:1: the header is not valid CSV: {exc}") from None
    renames = renamed_keys(given, column_of or {})
    # A column the mapping replaces is read under a name no field or key has.
    columns = [
        to if to is not None else f"\0{column}"
        for column, to in ((column, renames.get(column, column)) for column in given)
    ]
    reader.fieldnames = columns
    require_columns(columns, f"{name}:1", column_of=column_of, given=given)

    def rows() -> Iterator[dict[Any, Any]]:
        read = iter(reader)
        while True:
            try:
                yield next(read)
            except StopIteration:
                return
            except csv.Error as exc:
                # line_num still counts the last good record's lines: the bad one starts after.
                raise DataError(
                    f"{name}:{reader.line_num + 1}: not valid CSV ({exc}); a field that holds "
                    f"{separator}, a quote or a line break must be quoted, with quotes doubled "
                    f"inside"
                ) from None

    return rows(), reader, separator


def count_csv_records(path: Path, name: str, column_of: Mapping[str, str] | None) -> int:
    """The records of a CSV (or TSV) file, its rows counted without being read."""
    rows, _reader, _separator = _csv_rows(path, name, column_of)
    return sum(1 for _ in rows)


def _csv_records(
    path: Path, name: str, labels: tuple[str, ...] | None, column_of: Mapping[str, str] | None
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line, record) of each row of one CSV file, its fields parsed."""
    # Classes named by numbers: a field's "0" is no index beside the names "1" to
    # "5" (the builder reads number labels against the names, and says so).
    numbered = labels is not None and named_by_numbers(labels)
    rows, reader, separator = _csv_rows(path, name, column_of)
    columns = [str(column) for column in reader.fieldnames or []]
    replaced = any(column.startswith("\0") for column in columns)
    last = reader.line_num  # the header's
    for row in rows:
        # line_num is the record's last line: a quoted field with line breaks (an
        # email, a multi-line message) ends lines below where the record starts. A
        # record one line below the last is on that line (a fifth of a row's time
        # went to counting its fields' line breaks).
        line = reader.line_num
        if line != last + 1:
            fields = [v for v in row.values() if isinstance(v, str)] + list(row.get(None) or [])
            line -= sum(v.count("\n") for v in fields)
        last = reader.line_num
        if None in row:  # more fields than the header: an unquoted comma, most likely
            raise DataError(
                f"{name}:{line}: {len(columns) + len(row[None])} fields where the header "
                f"has {len(columns)}; a field that holds {separator} must be quoted"
            )
        record: dict[str, Any] = {k: v for k, v in row.items() if v not in (None, "")}
        if replaced:  # columns seqgate_columns reads another in place of
            record = {k: v for k, v in record.items() if not k.startswith("\0")}
        if not any(key in record for key in SEQUENCE_KEYS):
            # The column is there but this row's field is empty (a blank message).
            empty = next(key for key in SEQUENCE_KEYS if key in columns)
            raise DataError(
                f"{name}:{line}: empty sequence (length 0): the {empty!r} field is empty; "
                f"drop the record or give it at least one step"
            )
        if (
            "label" in record
            and str(record["label"]).lstrip("-").isdigit()
            and (labels is None or record["label"] not in labels)
            and not numbered
        ):
            record["label"] = int(record["label"])
        try:
            for column in ("tokens", *STEP_KEYS):
                if column in record:
                    # A list column, as pandas' to_csv writes it: "[101, 2023, 102]".
                    text = str(record[column]).strip()
                    record[column] = (
                        json.loads(text) if text.startswith("[") else list(map(int, text.split()))
                    )
            if "features" in record:
                record["features"] = json.loads(record["features"])
        except (ValueError, json.JSONDecodeError):
            raise DataError(
                f"{name}:{line}: 'tokens' (and 'attention_mask', 'token_type_ids') must be "
                f"space-separated integers or a JSON list of them, and 'features' a JSON "
                f"list of vectors"
            ) from None
        yield line, record


def label_column(columns: Iterable[str], column_of: Mapping[str, str] | None) -> str:
    """The column the labels are read from: seqgate_columns' ``label=...`` where the
    set has that column, else ``label``."""
    column = (column_of or {}).get("label", "label")
    return column if column in set(columns) else "label"


def class_label_names(features: Any, column: str = "label") -> tuple[str, ...] | None:
    """The class names a Hugging Face ``ClassLabel`` column declares, in index order
    (what its integer labels mean, and the order a model trained on it by the
    Trainer has in its outputs), from ``Dataset.features`` or the ``info.features``
    a dataset's Parquet file carries in its schema metadata; None where there are
    none."""
    if not isinstance(features, Mapping):  # datasets.Features is a dict
        return None
    feature = features.get(column)
    # The file's JSON, or a datasets.ClassLabel object.
    names = (
        feature.get("names") if isinstance(feature, Mapping) else getattr(feature, "names", None)
    )
    if not isinstance(names, (list, tuple)) or not names:
        return None
    return tuple(str(name) for name in names)


def _class_labels(
    raw: list[Any], declared: tuple[str, ...], name: str, first_row: int = 0
) -> list[Any]:
    """:func:`_class_label` of a whole column, with no call per label where every
    one is an index of the names (the usual column; 0.5 s of 1.5 a million rows)."""
    if all(type(v) is int for v in raw) and (not raw or 0 <= min(raw) <= max(raw) < len(declared)):
        return [declared[v] for v in raw]
    return [_class_label(v, declared, f"{name}[{first_row + i}]") for i, v in enumerate(raw)]


def _class_label(label: Any, declared: tuple[str, ...], where: str) -> Any:
    """A ClassLabel's integer as its name: read so against seqgate_labels, which
    may order the classes otherwise. Anything else is left to the builder's checks."""
    if not isinstance(label, int) or isinstance(label, bool):
        return label
    if not 0 <= label < len(declared):
        # Hugging Face writes -1 where a split's labels are withheld (GLUE's test sets).
        hidden = (
            ": -1 marks a row without its label, as a split whose labels are withheld has "
            "(GLUE's test sets): gate on a split that has them, such as the validation split"
            if label == -1
            else ""
        )
        raise DataError(
            f"{where}: label {label} is no index of the dataset's "
            f"{counted(len(declared), 'class')} {label_list(declared)} (its ClassLabel "
            f"names){hidden}"
        )
    return declared[label]


def _token_ids(table: Any) -> tuple[Tensor, Tensor, Tensor | None] | None:
    """The ``tokens`` column's ids and lengths taken whole from Arrow's buffers, in
    one pass (a record at a time, a 1,000,000-row file took 18 s), where the column
    is what a set of token ids is: lists of integers, no null, none empty; with the
    ``attention_mask`` and ``token_type_ids`` a tokenizer gives beside them (a
    tokenized Hugging Face set's layout), taken whole too, the ids cut by the mask
    as a record's are, and the segments (None where the table has none). None sends
    any other table through the record-by-record reading, whose checks name the
    row at fault."""
    names = table.column_names
    if "tokens" not in names or {"text", "features"} & set(names):
        return None
    flat = _integer_lists(table.column("tokens"))
    if flat is None:
        return None
    values, lengths = flat
    steps: dict[str, Tensor] = {}
    for key in STEP_KEYS:
        if key in names:
            column = _integer_lists(table.column(key))
            if column is None or not torch.equal(column[1], lengths):
                return None  # (the record path names the row whose lists differ)
            steps[key] = column[0]
    types = steps.get("token_type_ids")
    mask = steps.get("attention_mask")
    if mask is not None:
        if bool(((mask != 0) & (mask != 1)).any()):
            return None
        real = mask.bool()
        if not bool(real.all()):
            rows = torch.repeat_interleave(torch.arange(lengths.numel()), lengths)
            lengths = torch.bincount(rows[real], minlength=lengths.numel())
            values = values[real]
            types = None if types is None else types[real]
    if lengths.numel() and int(lengths.min()) == 0:
        return None
    return values, lengths, types


def _integer_lists(column: Any) -> tuple[Tensor, Tensor] | None:
    """A column of lists of integers as its flat values and each list's length
    (int64), or None where it is no such column or holds a null."""
    import pyarrow as pa

    kind = column.type
    if not (pa.types.is_list(kind) or pa.types.is_large_list(kind)):
        return None
    if not pa.types.is_integer(kind.value_type) or column.null_count:
        return None
    lists = column.combine_chunks()
    ids = lists.flatten()
    if ids.null_count:
        return None
    lengths = torch.from_numpy(lists.value_lengths().to_numpy(zero_copy_only=False, writable=True))
    values = torch.from_numpy(ids.to_numpy(zero_copy_only=False, writable=True))
    return values.long(), lengths.long()


def read_table(
    path: Path,
    labels: tuple[str, ...] | None = None,
    tokenizer: Callable[[str], Sequence[int]] | None = None,
    display: str | None = None,
    column_of: Mapping[str, str] | None = None,
) -> SequenceData:
    """A set kept in Arrow's formats (see :func:`_table_files`), read whole. Columns
    are a .jsonl record's keys (``label``, one of ``tokens``, ``features``, ``text``;
    the rest metadata), read with pyarrow (the ``parquet`` extra). A file a Hugging
    Face dataset wrote keeps its ``ClassLabel`` names in the schema (a saved folder
    in ``dataset_info.json``): its integer labels are those classes, and without
    seqgate_labels their order is the dataset's, not sorted. Records are named by
    row, from 0 (``test.parquet[16]``), as ``ds[16]`` and ``df.iloc[16]`` name them,
    across the files of a pattern or a folder."""
    name = display or str(path)
    tables = []
    declared = None
    for shown, source, found in _table_files(path, name, column_of):
        tables.append(_whole(source, shown))
        declared = declared or found
    if not tables:
        raise DataError(f"{name}: the dataset is empty: it holds no records")
    table = tables[0] if len(tables) == 1 else _concat(tables)
    return from_table(table, name, labels, tokenizer, declared, column_of=column_of)


def _table_files(
    path: Path, name: str, column_of: Mapping[str, str] | None
) -> Iterator[tuple[str, Any, tuple[str, ...] | None]]:
    """Each file of a set kept in Arrow's formats, in the order its rows are read,
    as (its name for messages, the opened file, its ClassLabel names): a .parquet
    file or a pattern's shards (a ``ParquetFile``, its rows not read yet), an
    .arrow or .feather file, or the Arrow files of a ``save_to_disk`` folder (a
    memory-mapped Table). One reader for all, so that each is read whole or
    streamed alike."""
    if path.is_dir():
        yield from _saved_files(path, name, column_of)
    elif data_suffix(path) in ARROW_SUFFIXES:
        _require_pyarrow(name, "an Arrow file")
        table = _arrow_file(path, name)
        yield name, table, _declared_names(table.schema, column_of)
    else:
        yield from _parquet_files(path, name, column_of)


def _whole(source: Any, shown: str) -> Any:
    """The Table of one file :func:`_table_files` opened."""
    if not hasattr(source, "iter_batches"):
        return source  # a memory-mapped Arrow table
    try:
        return source.read()
    except Exception as exc:  # a damaged column chunk, found only when read
        raise DataError(f"{shown}: cannot read it ({type(exc).__name__}: {exc})") from None


def _parquet_files(
    path: Path, name: str, column_of: Mapping[str, str] | None
) -> Iterator[tuple[str, Any, tuple[str, ...] | None]]:
    """Each file of a Parquet set (the file, or a pattern's shards in name order) as
    (its name for messages, the opened file, its ClassLabel names). A shard whose
    columns differ from the first's is an error naming both."""
    shards = data_shards(path)
    first = None
    for file in shards or [path]:
        shown = f"{name} ({file.name})" if shards else name
        parquet, declared = open_parquet(file, shown, column_of)
        schema = parquet.schema_arrow
        if first is None:
            first = (file.name, schema)
        elif not schema.equals(first[1]):
            raise DataError(
                f"{name}: the shards' columns differ: {first[0]} has "
                f"{_columns_of(first[1])}, {file.name} has {_columns_of(schema)}; "
                f"a pattern names the shards of one split"
            )
        yield shown, parquet, declared


def _saved_files(
    path: Path, name: str, column_of: Mapping[str, str] | None
) -> Iterator[tuple[str, Any, tuple[str, ...] | None]]:
    """The Arrow files of a folder ``datasets.Dataset.save_to_disk`` wrote, read with
    pyarrow alone (no datasets package needed), in ``state.json``'s order, with
    the ClassLabel names of ``dataset_info.json``."""
    _require_pyarrow(name, "a dataset saved with save_to_disk")
    try:
        state = json.loads((path / "state.json").read_text(encoding="utf-8"))
        info = json.loads((path / "dataset_info.json").read_text(encoding="utf-8"))
        files = [path / str(entry["filename"]) for entry in state["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(
            f"{name}: its state.json or dataset_info.json is not what save_to_disk writes "
            f"({type(exc).__name__}: {exc})"
        ) from None
    features = info.get("features") if isinstance(info, Mapping) else None
    for file in files:
        shown = f"{name} ({file.name})"
        table = _arrow_file(file, shown)
        yield shown, table, class_label_names(features, label_column(table.column_names, column_of))


def _columns_of(schema: Any) -> str:
    return ", ".join(f"{field.name} ({field.type})" for field in schema)


def _concat(tables: list[Any]) -> Any:
    import pyarrow as pa

    return pa.concat_tables(tables)


def _batches(source: Any, size: int, shown: str) -> Iterator[Any]:
    """The record batches of at most ``size`` rows of one file :func:`_table_files`
    opened; a Parquet file's damaged column chunk, found only when read, is an
    error naming the file."""
    if not hasattr(source, "iter_batches"):  # a memory-mapped Arrow table
        yield from source.to_batches(max_chunksize=size)
        return
    batches = source.iter_batches(batch_size=size)
    while True:
        try:
            yield next(batches)
        except StopIteration:
            return
        except Exception as exc:
            raise DataError(f"{shown}: cannot read it ({type(exc).__name__}: {exc})") from None


def count_rows(path: Path, name: str, column_of: Mapping[str, str] | None = None) -> int:
    """The rows of a set :func:`_table_files` reads, from the files' footers and
    schemas: no row is read."""
    return sum(
        int(source.metadata.num_rows if hasattr(source, "iter_batches") else source.num_rows)
        for _shown, source, _declared in _table_files(path, name, column_of)
    )


def open_parquet(
    path: Path, name: str, column_of: Mapping[str, str] | None = None
) -> tuple[Any, tuple[str, ...] | None]:
    """A Parquet file opened (its rows not read yet), and the ClassLabel names its
    schema declares for the label column, if a Hugging Face dataset wrote it."""
    _require_pyarrow(name, "a .parquet file", "pyarrow.parquet")
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow's ArrowInvalid and OSError: not Parquet, or damaged
        raise DataError(
            f"{name}: not a readable Parquet file ({type(exc).__name__}: {exc})"
        ) from None
    return parquet, _declared_names(parquet.schema_arrow, column_of)


def _require_pyarrow(name: str, what: str, module: str = "pyarrow") -> None:
    """An error naming the file and the extra to install where pyarrow (or its
    ``module``) cannot be imported, in place of the import's traceback."""
    try:
        importlib.import_module(module)
    except ImportError:
        raise ConfigError(
            f"{name}: reading {what} needs pyarrow, which is not installed: pip install "
            f"'pytest-seqgate[parquet]' (or pyarrow), or give the set as .jsonl"
        ) from None


def _declared_names(schema: Any, column_of: Mapping[str, str] | None) -> tuple[str, ...] | None:
    """The ClassLabel names of the label column in the metadata a Hugging Face
    dataset writes into its files' Arrow schema (Parquet and Arrow alike)."""
    meta = schema.metadata or {}
    try:
        info = json.loads(meta.get(b"huggingface", b"{}")).get("info", {})
    except (ValueError, AttributeError):
        info = {}
    return class_label_names(
        info.get("features") if isinstance(info, Mapping) else None,
        label_column(schema.names, column_of),
    )


def _arrow_file(path: Path, name: str) -> Any:
    """The table of an Arrow IPC stream or file (memory-mapped, not copied): the
    stream a ``datasets`` cache or ``save_to_disk`` writes (``cache-*.arrow``,
    ``data-00000-of-00001.arrow``), or the IPC file format (Feather v2,
    ``df.to_feather``); a file of neither format, or cut off, is an error naming it."""
    import pyarrow as pa

    errors = []
    for opener in (pa.ipc.open_stream, pa.ipc.open_file):
        try:
            with pa.memory_map(str(path)) as source:
                return opener(source).read_all()
        except Exception as exc:  # not this format, cut off, or missing
            errors.append(f"{type(exc).__name__}: {exc}")
    raise DataError(f"{name}: not a readable Arrow file ({errors[-1]})")


def stream_table(
    path: Path,
    labels: tuple[str, ...],
    tokenizer: Callable[[str], Sequence[int]] | None,
    display: str,
    chunk: int,
    column_of: Mapping[str, str] | None = None,
) -> Iterator[SequenceData]:
    """The rows of a set :func:`_table_files` reads as consecutive SequenceData
    chunks of at most ``chunk`` rows, read a batch at a time: memory holds one
    chunk, not the file (an Arrow file is memory-mapped: its pages are the file's,
    not the process's). Each chunk names its records by their rows in the set, as
    read whole."""
    import pyarrow as pa

    first_row = 0
    read: str | None = None
    for shown, source, declared in _table_files(path, display, column_of):
        for batch in _batches(source, chunk, shown):
            if not batch.num_rows:
                continue
            builder = _Builder(
                display, labels or declared, tokenizer, indexed=True, first_row=first_row
            )
            builder.numbers_read = read
            data = from_table(
                pa.Table.from_batches([batch]),
                display,
                labels,
                tokenizer,
                declared,
                column_of=column_of,
                builder=builder,
            )
            read = builder.numbers_read
            first_row += len(data)
            yield data


def from_table(
    table: Any,
    name: str,
    labels: tuple[str, ...] | None,
    tokenizer: Callable[[str], Sequence[int]] | None = None,
    declared: tuple[str, ...] | None = None,
    in_code: bool = False,
    column_of: Mapping[str, str] | None = None,
    builder: _Builder | None = None,
) -> SequenceData:
    """A pyarrow Table of records (a Parquet file's, a Hugging Face dataset's) as a
    set: the ``tokens`` column taken whole where :func:`_token_ids` can, else
    record by record. ``declared``: the label column's ClassLabel names;
    ``in_code``: the table is a dataset built in code, not a file; ``column_of``:
    seqgate_columns, applied to the table's columns first; ``builder``: a streamed
    chunk's, which knows its first row and how earlier chunks read labels."""
    given = list(table.column_names)
    table = rename_columns(table, column_of or {})
    columns = list(table.column_names)
    require_columns(columns, name, in_code, column_of, given)
    if not table.num_rows:
        raise DataError(f"{name}: the dataset is empty: it holds no records")
    if builder is None:
        builder = _Builder(name, labels or declared, tokenizer, indexed=True)
    first_row = builder.first_row
    flat = _token_ids(table)
    if flat is not None:
        values, lengths, types = flat
        raw = table.column("label").to_pylist()
        if declared is not None:
            raw = _class_labels(raw, declared, name, first_row)
        builder.raw_labels = raw
        builder.lines = list(range(first_row, first_row + len(raw)))
        builder.metadata = {
            column: table.column(column).to_pylist()
            for column in columns
            if column not in ("tokens", *INPUT_KEYS)
        }
        return builder.assemble(values, lengths, *builder.label_index(), types)
    row = first_row
    for batch in table.to_batches(max_chunksize=65_536):
        for record in batch.to_pylist():
            if declared is not None:
                record["label"] = _class_label(record.get("label"), declared, f"{name}[{row}]")
            present = {k: v for k, v in record.items() if v is not None}
            if not any(key in present for key in SEQUENCE_KEYS):
                empty = next(key for key in SEQUENCE_KEYS if key in columns)
                raise DataError(
                    f"{name}[{row}]: empty sequence: the {empty!r} field is null; drop the "
                    f"record or give it at least one step"
                )
            builder.add(present, row)
            row += 1
    return builder.build()


PT_LAYOUT = (
    "a dict {'sequences': list of 1-D int64 tensors (token ids) or 2-D float tensors "
    "[steps, features], or one padded tensor [N, steps(, features)] with 'lengths' [N] or "
    "'attention_mask' [N, steps] beside it, 'labels': 1-D int tensor or list of class names}"
)
PT_CUTS = ("lengths", "attention_mask")


def _unpadded(obj: dict[str, Any], file: str) -> tuple[Any, Any]:
    """The ``sequences`` of a .pt file, each cut to its real steps when the file keeps
    them as one padded tensor with their ``lengths`` or ``attention_mask``: the way a
    tokenized set is usually saved. Any mask works, left padding too: the real
    steps are those it marks, row by row. The file's ``token_type_ids`` (a text
    pair's segments, as ``tokenizer(a, b, return_tensors="pt")`` gives them),
    cut the same way, or None."""
    sequences = obj["sequences"]
    types = obj.get("token_type_ids")
    given = [key for key in PT_CUTS if key in obj]
    if types is not None:
        padded = isinstance(sequences, Tensor) and sequences.dim() == 2
        fits = (
            isinstance(types, Tensor) and types.shape == sequences.shape
            if padded
            else isinstance(types, (list, tuple)) and len(types) == len(sequences)
        )
        if not fits or (padded and (types.is_floating_point() or types.is_complex())):
            shown = tensor_shape(types) if isinstance(types, Tensor) else type(types).__name__
            raise DataError(
                f"{file}: 'token_type_ids' must be laid out as the token ids in 'sequences' "
                f"are (an integer tensor of the same shape, or one list of segments per "
                f"sequence), but it is {shown}"
            )
    if not given:
        if isinstance(types, Tensor):
            types = list(types)
        return sequences, types
    if len(given) == 2:
        raise DataError(f"{file}: give 'lengths' or 'attention_mask', not both")
    key = given[0]
    if not isinstance(sequences, Tensor) or sequences.dim() not in (2, 3):
        raise DataError(
            f"{file}: '{key}' cuts a padded tensor of sequences [N, steps] or [N, steps, "
            f"features], but 'sequences' is {type(sequences).__name__}"
            + (f" of shape {list(sequences.shape)}" if isinstance(sequences, Tensor) else "")
            + f"; give unpadded sequences without '{key}'"
        )
    n, steps = sequences.shape[:2]
    cut = obj[key]
    if not isinstance(cut, Tensor) or cut.is_floating_point() or cut.is_complex():
        raise DataError(
            f"{file}: '{key}' must be an integer or bool tensor, not {type(cut).__name__}"
            + (f" of {cut.dtype}" if isinstance(cut, Tensor) else "")
        )
    if key == "lengths":
        if cut.shape != (n,):
            raise DataError(
                f"{file}: 'lengths' has shape {list(cut.shape)}, but 'sequences' holds {n} "
                f"sequences: expected [{n}]"
            )
        bad = torch.nonzero((cut < 1) | (cut > steps))
        if bad.numel():
            i = int(bad[0])
            raise DataError(
                f"{file}[{i}]: length {int(cut[i])} is not between 1 and the {steps} steps "
                f"of the padded sequences"
            )
        real = torch.arange(steps) < cut[:, None]
    else:
        if cut.shape != (n, steps):
            raise DataError(
                f"{file}: 'attention_mask' has shape {list(cut.shape)}, but the padded "
                f"sequences are [{n}, {steps}]: expected the same [N, steps]"
            )
        bad = torch.nonzero((cut != 0) & (cut != 1))
        if bad.numel():
            i, j = (int(x) for x in bad[0])
            raise DataError(
                f"{file}[{i}]: attention_mask holds {int(cut[i, j])} at step {j}: expected 1 "
                f"on real steps and 0 on padding"
            )
        real = cut.bool()
        empty = torch.nonzero(~real.any(1))
        if empty.numel():
            raise DataError(
                f"{file}[{int(empty[0])}]: the attention_mask marks no real step: a classifier "
                f"needs at least one; drop the record"
            )
    counts = real.sum(1).tolist()
    cut = None if types is None else list(torch.split(types[real], counts))
    return list(torch.split(sequences[real], counts)), cut


def read_pt(
    path: Path, labels: tuple[str, ...] | None = None, display: str | None = None
) -> SequenceData:
    """A ``torch.save`` file with the layout :data:`PT_LAYOUT`, read with weights_only."""
    file = display or str(path)
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DataError(
            f"{file}: cannot read with torch.load(weights_only=True): "
            f"{type(exc).__name__}; expected {PT_LAYOUT}"
        ) from exc
    if not isinstance(obj, dict) or "sequences" not in obj or "labels" not in obj:
        raise DataError(
            f"{file}: wrong layout: expected {PT_LAYOUT}, but got "
            f"{type(obj).__name__}"
            + (
                f" with keys {sorted(obj)}; "
                + rename_advice(obj, [k for k in ("sequences", "labels") if k not in obj], True)
                if isinstance(obj, dict)
                else ""
            )
        )
    raw_labels = obj["labels"]
    if isinstance(raw_labels, Tensor):
        if raw_labels.dim() == 2 and raw_labels.shape[1] == 1:
            raw_labels = raw_labels.squeeze(1)  # [N, 1], as a BCE target often is
        raw_labels = raw_labels.tolist()
    sequences, types = _unpadded(obj, file)
    items: list[Any] = list(zip(sequences, raw_labels))
    if types is not None:  # records, so that each keeps its segments
        items = [
            {"tokens": sequence, "token_type_ids": segments, "label": label}
            for (sequence, label), segments in zip(items, types)
        ]
    return from_dataset(
        items,
        display or str(path),
        labels,
        None,
        strict_len=len(sequences) == len(raw_labels),
    )


def _plain(value: Any) -> Any:
    """Tensors and NumPy values as Python lists and numbers (what a .jsonl gives)."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return value.tolist()
    if isinstance(value, (list, tuple)) and value and not isinstance(value[0], (int, float, str)):
        # NumPy scalars or nested vectors; a list of plain numbers (the common
        # case, a token list) is returned as it is, with no call per token.
        return [_plain(v) for v in value]
    return list(value) if isinstance(value, tuple) else value


def _library(obj: Any) -> str:
    """The top-level package that defines ``obj``'s class (``pandas``, ``datasets``)."""
    return type(obj).__module__.split(".")[0]


def _arrow_table(dataset: Any) -> Any:
    """A table of records as one pyarrow Table, read by column instead of a row
    at a time: a Hugging Face ``datasets.Dataset`` (its selection and order,
    whatever format it was set to; 600,000 rows a second against 38,000), or a
    pandas or polars DataFrame (whose ``df[0]`` is a column, not a row). None for
    any other dataset, or where pyarrow cannot take it: it is read row by row."""
    library = _library(dataset)
    try:
        if library == "datasets" and hasattr(dataset, "with_format"):
            table = dataset.with_format("arrow")[:]
        elif library in ("pandas", "polars") and hasattr(dataset, "columns"):
            import pyarrow as pa

            if library == "pandas":
                table = pa.Table.from_pandas(dataset, preserve_index=False)
            else:
                table = dataset.to_arrow()
        else:
            return None
    except Exception:  # no pyarrow, an older library, a column Arrow cannot type
        return None
    return table if hasattr(table, "column_names") and hasattr(table, "num_rows") else None


def _records_of_frame(dataset: Any) -> Any:
    """A DataFrame's rows as dicts (where pyarrow is not there to read it by column):
    a DataFrame indexes columns, so read as a Dataset its first "item" is a column."""
    library = _library(dataset)
    if library == "pandas" and hasattr(dataset, "to_dict"):
        # A missing value is NaN in a pandas column (None in pyarrow's reading).
        return dataset.astype(object).where(dataset.notna(), None).to_dict(orient="records")
    if library == "polars" and hasattr(dataset, "to_dicts"):
        return dataset.to_dicts()
    return dataset


def _records_of_columns(dataset: Any, source: str, column_of: Mapping[str, str]) -> Any:
    """A dict of equal-length columns with a label and a sequence among them
    (``Dataset.to_dict()``, ``df.to_dict("list")``) as its rows: the records a
    DataFrame of those columns gives. Anything else as it is."""
    if not isinstance(dataset, Mapping) or not dataset:
        return dataset
    names = renamed_keys(dataset, column_of)
    fields = {names.get(key) or key for key in dataset}
    columns = list(dataset.values())
    if (
        "label" not in fields
        or not fields & set(SEQUENCE_KEYS)
        or not all(hasattr(c, "__len__") and not isinstance(c, (str, bytes)) for c in columns)
    ):
        return dataset
    lengths = {str(key): len(column) for key, column in dataset.items()}
    if len(set(lengths.values())) != 1:
        raise DataError(
            f"{source}: a dict of columns, read as its rows, needs columns of one length, "
            f"but they have {lengths}"
        )
    keys = list(dataset)
    return [dict(zip(keys, row, strict=True)) for row in zip(*columns, strict=True)]


def from_dataset(
    dataset: Any,
    source: str,
    labels: tuple[str, ...] | None,
    tokenizer: Any = None,
    strict_len: bool = True,
    column_of: Mapping[str, str] | None = None,
) -> SequenceData:
    """Convert a map-style Dataset of (sequence, label) pairs or of records (dicts
    with the fields of a .jsonl line, or of the columns ``column_of`` names), or a
    SequenceData."""
    if isinstance(dataset, SequenceData):
        return dataset
    if not strict_len:
        raise DataError(f"{source}: 'sequences' and 'labels' have different lengths")
    features = getattr(dataset, "features", None)
    features = features if isinstance(features, Mapping) else None  # not a tensor of them
    column_of = column_of or {}
    declared = class_label_names(features, label_column(features or (), column_of))
    table = _arrow_table(dataset)
    if table is not None:
        return from_table(
            table, source, labels, tokenizer, declared, in_code=True, column_of=column_of
        )
    dataset = _records_of_columns(_records_of_frame(dataset), source, column_of)
    if (
        not hasattr(dataset, "__len__")
        or not hasattr(dataset, "__getitem__")
        or isinstance(dataset, (dict, str, bytes))
    ):
        # An IterableDataset or a generator has no length to read it by, and may
        # never end (a training stream that repeats): it is not read here.
        iterable = hasattr(dataset, "__iter__") and not isinstance(dataset, (dict, str, bytes))
        hint = (
            ": it can only be iterated (an IterableDataset or a generator, which may never "
            "end); return list(itertools.islice(it, n)) of the samples to evaluate, or a "
            "map-style Dataset"
            if iterable
            else ""
        )
        splits = (
            [
                str(key)
                for key, value in dataset.items()
                if hasattr(value, "__len__") and not isinstance(value, (str, bytes))
            ]
            if isinstance(dataset, Mapping)
            else []
        )
        if splits and len(splits) == len(dataset):
            # load_dataset("glue", "sst2") returned whole: a DatasetDict of its splits.
            hint = (
                f": a dict of splits ({', '.join(splits)}), as a DatasetDict is; return "
                f"one of them, such as dataset[{splits[-1]!r}]"
            )
        if isinstance(dataset, torch.utils.data.DataLoader):
            # Its batches are collated (padded, stacked) already, where seqgate
            # batches by length and pads itself: the samples are what it needs.
            hint = (
                ": seqgate makes its own batches (sorted by length, padded, with lengths); "
                "return the loader's dataset (`loader.dataset`) of (sequence, label) pairs "
                "or records instead"
            )
        raise DataError(
            f"{source}: expected a SequenceData, or a map-style Dataset (with __len__ and "
            f"__getitem__) or list of (sequence, label) pairs, but got "
            f"{type(dataset).__name__}{hint}"
        )
    builder = _Builder(source, labels or declared, tokenizer, indexed=True, column_of=column_of)
    label_key = label_column(features or (), column_of) if declared is not None else "label"
    for i in range(len(dataset)):
        try:
            item = dataset[i]
        except Exception as exc:
            raise DataError(
                f"{source}[{i}]: reading the item raised {type(exc).__name__}: {exc}"
                f"{raised_at(exc)}"
            ) from exc
        if isinstance(item, Mapping):
            # A row of a Hugging Face dataset, or any dict: the fields of a .jsonl
            # record, its tensors and NumPy values turned into Python ones.
            row = {k: _plain(v) for k, v in item.items()}
            if declared is not None:
                row[label_key] = _class_label(row.get(label_key), declared, f"{source}[{i}]")
            builder.add(row, i)
            continue
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise DataError(
                f"{source}[{i}]: expected a (sequence, label) pair or a record (a dict with "
                f"'label' and one of 'tokens', 'features' or 'text'), but got "
                f"{type(item).__name__}"
            )
        sequence, label = item
        # Tensors and NumPy values become Python numbers: the builder checks that
        # token ids are ints, and np.int64 is not one.
        if hasattr(label, "item") and not isinstance(label, (str, bytes)):
            try:
                label = label.item()
            except (RuntimeError, ValueError):  # more than one value: the builder says why
                label = label.tolist()
        if isinstance(sequence, str):
            record: dict[str, Any] = {"text": sequence}
        elif hasattr(sequence, "tolist") and hasattr(sequence, "ndim"):  # tensor, ndarray
            if sequence.ndim == 2 and sequence.shape[0] == 1 and "int" in str(sequence.dtype):
                # Read as one step of n-wide features, it would be evaluated as such.
                raise DataError(
                    f"{source}[{i}]: the sequence is a [1, {sequence.shape[1]}] array of "
                    f"integers, {BATCH_OF_ONE}"
                )
            key = "features" if sequence.ndim == 2 else "tokens"
            record = {key: sequence.tolist()}
        else:
            if isinstance(sequence, (Mapping, bytes)) or not hasattr(sequence, "__iter__"):
                kind = "None" if sequence is None else type(sequence).__name__
                raise DataError(
                    f"{source}[{i}]: the sequence of the (sequence, label) pair is {kind}; "
                    f"expected token ids (a list or 1-D tensor of ints), feature vectors (one "
                    f"list of floats per step) or a text"
                    + (
                        ": a dict is a record, given alone, not in a pair"
                        if isinstance(sequence, Mapping)
                        else ""
                    )
                )
            seq = _plain(list(sequence))
            key = "features" if seq and isinstance(seq[0], (list, tuple)) else "tokens"
            record = {key: [list(v) for v in seq] if key == "features" else seq}
        record["label"] = (
            label if declared is None else _class_label(label, declared, f"{source}[{i}]")
        )
        builder.add(record, i)
    return builder.build()

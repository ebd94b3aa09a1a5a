"""The prediction loop: device, eval mode, inference_mode, length-bucketed batches.

The loop copies each batch's logits into a host buffer (asynchronously from a
GPU: no host sync per batch), checks the model's outputs on the first batch
(where a wrong model fails loudly instead of producing quietly wrong
numbers), and returns the predictions in the dataset's order whatever order
the batches ran in.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import re
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from pytest_seqgate.batching import Batch, BucketedBatches, row_ranges
from pytest_seqgate.data import (
    SequenceData,
    hash_padded,
    hash_tables,
    length_terms,
    step_owners,
    tensor_shape,
)
from pytest_seqgate.exceptions import ConfigError, ModelError, counted, label_list, raised_at

ForwardHook = Callable[[nn.Module, Batch], Any]
Progress = Callable[[int, int], None]  # (sequences done, total)


@dataclass
class Predictions:
    """Dataset-ordered predictions ``[N]`` and class probabilities ``[N, C]``."""

    predictions: Tensor
    scores: Tensor
    device: str
    batch_size: int
    hashes: Tensor
    #: How the outputs were read: "logits" or "probabilities".
    outputs: str = "logits"

    def __repr__(self) -> str:
        """One line, as SequenceData's: the dataclass's printed five tensors,
        25,000 characters for 901 samples."""
        kept = f"{self.scores.shape[1]} scores each" if self.scores.shape[1] else "no scores"
        return (
            f"<Predictions of {self.predictions.numel()} samples on {self.device}, batch "
            f"{self.batch_size}, {kept} (read as {self.outputs})>"
        )


def require_module(obj: Any, where: str) -> nn.Module:
    """``obj`` if it is a torch.nn.Module; else an error saying which source gave what.

    Inference calls ``eval()``, ``to()`` and ``modules()`` on the model, so
    anything else would fail there, far from the fixture or hook that made it.
    """
    if not isinstance(obj, nn.Module):
        raise ModelError(
            f"{where} returned {type(obj).__name__}, expected a torch.nn.Module: return the "
            f"module itself (a TorchScript module is one), or wrap a plain function in an "
            f"nn.Module whose forward calls it"
        )
    return obj


def resolve_device(spec: str, setting: str = "seqgate_device") -> torch.device:
    """``auto`` picks CUDA when it is available, else the CPU."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"{setting}: {spec!r} was asked for but CUDA is not available on this machine; "
                f"use 'auto' to fall back to the CPU, or 'cpu'"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"{setting}: {spec!r} was asked for but this machine has "
                f"{torch.cuda.device_count()} CUDA device(s), cuda:0 to "
                f"cuda:{torch.cuda.device_count() - 1}; use one of them, or 'cuda'"
            )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(
            f"{setting}: 'mps' was asked for but MPS (Apple silicon) is not available on this "
            f"machine; use 'auto' or 'cpu'"
        )
    return device


def unwrapped(model: nn.Module) -> nn.Module:
    """The module whose forward a wrapper calls: ``torch.compile``'s and
    ``DataParallel``'s forwards take ``*args, **kwargs``, which names nothing."""
    while True:
        inner = getattr(model, "_orig_mod", None)  # torch.compile's OptimizedModule
        if inner is None and isinstance(
            model, (nn.DataParallel, nn.parallel.DistributedDataParallel)
        ):
            inner = model.module
        if not isinstance(inner, nn.Module):
            return model
        model = inner


# What a Hugging Face config made without class names holds: names of nothing.
_GENERIC_LABEL = re.compile(r"LABEL_\d+")


def model_labels(model: nn.Module) -> tuple[str, ...] | None:
    """The class names a model carries, in the order of its outputs: a Hugging
    Face model's ``config.id2label``. None without one, or where it holds the
    generic ``LABEL_0``, ``LABEL_1`` of a config made without names."""
    config = getattr(unwrapped(model), "config", None)
    id2label = getattr(config, "id2label", None)
    if not isinstance(id2label, dict) or not id2label:
        return None
    try:
        by_index = {int(key): str(name) for key, name in id2label.items()}
    except (TypeError, ValueError):
        return None
    names = tuple(by_index.get(i, "") for i in range(len(by_index)))
    if "" in names or len(set(names)) != len(names):
        return None
    if all(_GENERIC_LABEL.fullmatch(name) for name in names):
        return None
    return names


def model_class(model: nn.Module) -> str:
    """The model's own class, through torch.compile's and DataParallel's wrappers:
    a report naming every compiled model ``OptimizedModule`` says nothing."""
    return type(unwrapped(model)).__name__


def forward_parameters(model: nn.Module) -> list[str]:
    """Names of forward's parameters, for TorchScript modules and wrappers too."""
    forward = unwrapped(model).forward
    schema = getattr(forward, "schema", None)
    if schema is not None:
        return [arg.name for arg in schema.arguments if arg.name != "self"]
    try:
        return list(inspect.signature(forward).parameters)
    except (TypeError, ValueError):
        return []


# The names under which a forward takes the padding itself, True on the padded
# steps: nn.Transformer's and nn.MultiheadAttention's own spelling and its short form.
PADDING_MASKS = ("src_key_padding_mask", "key_padding_mask", "padding_mask")


def calling_convention(model: nn.Module) -> str:
    """``lengths`` (the RNN way), ``attention_mask`` (the Hugging Face way), the name
    of a padding mask (the ``nn.Transformer`` way, :data:`PADDING_MASKS`) or
    ``plain``."""
    names = forward_parameters(model)
    if "lengths" in names:
        return "lengths"
    if "attention_mask" in names:
        return "attention_mask"
    return next((name for name in PADDING_MASKS if name in names), "plain")


# A parameter so named most likely takes the lengths or a mask; seqgate fills
# only the names above (a ``mask`` may mark the tokens or the padding: the name
# cannot say which), so such a parameter left unset is worth naming when the
# model is found to read its padding.
_LOOKS_LIKE_PADDING = re.compile(r"len|mask|pad", re.IGNORECASE)


def unfilled_inputs(model: nn.Module) -> list[str]:
    """Parameters of forward after the first, named like lengths or a mask, that
    the calling convention leaves unset (``seq_lengths``, ``mask``, ``x_lens``)."""
    names = forward_parameters(model)[1:]
    if {"lengths", "attention_mask", *PADDING_MASKS} & set(names):
        return []  # given what it reads under a name seqgate fills
    return [name for name in names if _LOOKS_LIKE_PADDING.search(name)]


PINNED_LIMIT = 256 * 2**20

# Padded values (token ids, or the features of steps) per group of small
# batches on the CPU: 512 KiB of int64 ids, in the L2 cache. Paired against one
# pad per batch (bench's tiny model, 50,000 sequences, the pass alone): 0.83x
# at batch 32, 0.88-0.91x at 64, 1.00x at 1024, where a batch fills a group
# alone. Against groups of 32 Ki: 0.96-0.97x at batch 256, 0.98x at 128, the
# same at 32 and 1024; 128 Ki gained less, and 256 Ki ran 4-7% slower than one
# pad per batch (out of the cache). Counted in values, not steps, so that steps
# of many features (one embedding per step) make groups of one batch.
GROUP_VALUES = 1 << 16

AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, precision: str) -> Any:
    """``torch.autocast`` for bf16/fp16, a no-op context for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=AUTOCAST[precision])


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """``eval()`` for a pass, then every submodule's own mode back: a model that a
    session goes on training, or that keeps some layers frozen in eval mode
    while the rest trains, is left as it was found. (Flags are set one by one:
    ``train()`` would recurse from each module again.)"""
    modes = [(module, module.training) for module in model.modules()]
    try:
        model.eval()
    except NotImplementedError:
        # A torch.export program has no modes to switch ("Calling eval() is not
        # supported yet"): its graph is fixed, and the loader refuses one that
        # was captured in training mode. The flags are cleared all the same.
        for module, _ in modes:
            module.training = False
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


CALLS = {
    "lengths": "forward(padded, lengths=lengths)",
    "attention_mask": "forward(padded, attention_mask=mask)",
    **{name: f"forward(padded, {name}=padding)" for name in PADDING_MASKS},
    "plain": "forward(padded)",
}


def call_model(model: nn.Module, batch: Batch, convention: str, types: bool = False) -> Any:
    """The second input goes by its name, so ``forward(x, mask=None, lengths=None)``
    gets the lengths where it wants them; the first goes by place, so it may be
    called ``input_ids``, ``tokens`` or ``x``. With ``types`` (the forward takes
    ``token_type_ids``) the batch's segments go by that name too, where the set
    has them."""
    named: dict[str, Tensor] = {}
    if types and batch.token_type_ids is not None:
        named["token_type_ids"] = batch.token_type_ids
    if convention == "lengths":
        return model(batch.inputs, lengths=batch.lengths, **named)
    if convention == "attention_mask":
        return model(batch.inputs, attention_mask=batch.attention_mask, **named)
    if convention in PADDING_MASKS:
        return model(batch.inputs, **{convention: batch.padding}, **named)
    return model(batch.inputs, **named)


def logits_of(output: Any) -> Any:
    """The logits of a tensor, a tuple whose first item they are, or an object with .logits."""
    if isinstance(output, Tensor):
        return output
    if isinstance(output, (tuple, list)) and output:
        return output[0]
    logits = getattr(output, "logits", None)
    if logits is not None:
        return logits
    if isinstance(output, dict) and "logits" in output:
        return output["logits"]
    return output


def feature_dtype(model: nn.Module, data: SequenceData) -> torch.dtype | None:
    """The dtype to give a model's feature vectors, when not the data's float32.

    A model cast to bfloat16, float16 or float64 (as deployed) refuses float32
    inputs in its first Linear (``mat1 and mat2 must have the same dtype``): its
    inputs are cast to its first floating parameter's dtype, as its own serving
    code would. After the content hashes, which stay those of the data. Under
    autocast the model's weights are float32, and so is its input.
    """
    if data.kind != "features":
        return None
    dtype = weights_dtype(model)
    return None if dtype is None or dtype == data.values.dtype else dtype


def weights_dtype(model: nn.Module) -> torch.dtype | None:
    """The dtype of the model's first floating parameter: the precision its weights
    compute in (bfloat16 for a model cast for serving), None without any."""
    for parameter in model.parameters():
        if parameter.is_floating_point():
            return parameter.dtype
    return None


def weights_precision(model: nn.Module) -> str:
    """``int8`` for a quantized model (``torch.ao`` quantized layers, as dynamic
    quantization for CPU serving makes them), ``bf16`` or ``fp16`` for one cast
    to that dtype, else ``fp32``: the precision the padding check allows for."""
    if any(_defined_in(m).startswith(QUANTIZED_MODULES) for m in model.modules()):
        return "int8"
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(
        weights_dtype(model) or torch.float32, "fp32"
    )


QUANTIZED_MODULES = ("torch.ao.nn.quantized", "torch.nn.quantized")


def _defined_in(module: nn.Module) -> str:
    """Where a layer's class is defined; a TorchScript file's layers keep it in their
    type's qualified name (``__torch__.torch.ao.nn.quantized.dynamic...``)."""
    if isinstance(module, torch.jit.ScriptModule):
        return str(module._c._type().qualified_name()).removeprefix("__torch__.")
    return type(module).__module__


def check_embedding_range(model: nn.Module, data: SequenceData) -> None:
    """Token ids past the embedding tables crash deep inside the forward (and on a GPU
    poison the CUDA context): catch them here, against the largest table.

    Not the first table: models often declare a position embedding (512 rows)
    before the token one, and its size says nothing of the vocabulary. An id at
    or above every table's size fits none of them (only a model that reduces
    ids inside its forward, the hashing trick, could still take it).
    """
    if data.kind != "tokens" or data.values.numel() == 0:
        return
    sizes = [
        m.num_embeddings for m in model.modules() if isinstance(m, (nn.Embedding, nn.EmbeddingBag))
    ]
    if not sizes:
        return
    size = max(sizes)
    # One reduction per set on the happy path; the mask is built only to describe a failure.
    if data.max_value >= size:
        values = data.packed_values()
        too_big = values >= size
        if not bool(too_big.any()):
            return  # only between the sequences of a set built by hand
        first = int(torch.nonzero(too_big)[0])
        owner, _ = step_owners(data.lengths)
        record = int(owner[first])
        count = int(torch.unique(owner[too_big]).numel())
        table = f"embedding size {size}" if len(sizes) == 1 else f"largest embedding table ({size})"
        raise ModelError(
            f"{data.record(record)}: token id {int(values[first])} is at or above the "
            f"model's {table} ({counted(count, 'record')} affected); the tokenizer and "
            f"the model's vocabulary disagree"
        )


# How torch words a failed shape check of an exported program: 2.13 "Guard
# failed", 2.6 "Expected input at *args[0].shape[0] to be equal to 4, but got 7",
# 2.2 "Input l_tokens_.shape[1] is specialized at 6".
GUARD_WORDS = ("Guard failed", "Expected input at *args", "is specialized at")


def _shape_hint(exc: BaseException, lead: str = "", steps: int | None = None) -> str:
    """What the shapes of seqgate's batches ask of a model that refused one: an
    exported program (torch.export) runs only the shapes it was exported for; a
    convolution (a CNN text classifier's kernels of 3 to 5) needs at least its
    kernel's steps, where a batch is padded only to its own longest sequence."""
    text = str(exc)
    if "Kernel size can't be greater than actual input size" in text:
        short = f" ({steps} steps here)" if steps is not None else ""
        return (
            f"{lead}a convolution or pooling window is longer than the batch's sequences"
            f"{short}: seqgate pads each batch only to its longest sequence, so the model must "
            f"take sequences as short as the eval set's shortest: pad them in forward "
            f"(F.pad(x, (0, kernel - steps)) when steps < kernel), or leave them out of the "
            f"eval set"
        )
    if not any(words in text for words in GUARD_WORDS):
        return ""
    return (
        f"{lead}an exported program runs only the shapes it was exported for, and seqgate's "
        f"batches hold 1 to batch_size sequences padded to 1 to the longest length: export "
        f"with dynamic_shapes (torch.export.Dim for the batch and the steps) and an example "
        f"batch whose sizes are above 1"
    )


# A forward that takes a dict of tensors (batch["input_ids"], as a training loop
# over a Hugging Face collator hands it) indexes the padded tensor by a name.
DICT_INPUT_HINT = (
    "the forward indexes its input by a name, so it takes a dict of tensors, and seqgate "
    "passes the padded tensor: build the dict in a pytest_seqgate_forward hook, e.g. "
    "return model({'input_ids': batch.inputs, 'attention_mask': batch.attention_mask})"
)
_NAMED_INDEX = re.compile(r"\[\s*['\"][A-Za-z_]\w*['\"]\s*\]")


def _indexes_by_name(exc: BaseException) -> bool:
    """Whether the line that raised ``exc`` indexes something by a string
    (``batch["input_ids"]``): what a tensor refuses with an IndexError."""
    import traceback

    if not isinstance(exc, (IndexError, TypeError, KeyError)):
        return False
    frames = traceback.extract_tb(exc.__traceback__)
    return bool(frames) and bool(_NAMED_INDEX.search(frames[-1].line or ""))


# pack_padded_sequence wants its lengths on the CPU, so that is where seqgate
# gives them; a forward that also builds a mask from them on the GPU
# (arange(steps, device=x.device) < lengths[:, None]) meets tensors on two devices.
LENGTHS_DEVICE_HINT = (
    "seqgate passes the lengths on the CPU, as pack_padded_sequence needs them: a forward "
    "that computes with them on the model's device moves them there first "
    "(lengths.to(tokens.device))"
)


def _first_batch_hint(exc: BaseException, convention: str | None, steps: int | None) -> str:
    """Why the first call of the model failed, as far as the error tells:
    ``convention`` is how seqgate called it, None when a hook did."""
    if convention is None:
        return _shape_hint(exc, steps=steps) or "the hook raised it, or the model it called"
    if isinstance(exc, TypeError) and "argument" in str(exc):
        return (
            "the call does not fit the forward's parameters: seqgate passes lengths= when "
            "forward has a parameter named lengths, attention_mask= (1 on the tokens) or "
            "src_key_padding_mask=, key_padding_mask= or padding_mask= (True on the padding) "
            "when it has one so named, else the padded inputs alone; a pytest_seqgate_forward "
            "hook can call the model any other way"
        )
    if convention == "lengths" and "same device" in str(exc):
        return LENGTHS_DEVICE_HINT
    if _indexes_by_name(exc):
        return DICT_INPUT_HINT
    return _shape_hint(exc, steps=steps) or (
        "the model's layers may disagree with each other or with the input (for example a "
        "Linear whose in_features is not the RNN's hidden size)"
    )


def _describe(batch: Batch) -> str:
    return f"inputs {tensor_shape(batch.inputs)} with lengths[{batch.lengths.numel()}]"


def _is_oom(exc: BaseException) -> bool:
    """A device's out-of-memory error, or the CPU allocator's ("can't allocate
    memory"): either way a smaller batch may fit."""
    oom: Any = getattr(torch, "OutOfMemoryError", None) or getattr(
        torch.cuda, "OutOfMemoryError", ()
    )
    text = str(exc).lower()
    return isinstance(exc, oom) or "out of memory" in text or "can't allocate memory" in text


def _tuple_hint(output: Any, num_classes: int | None) -> str:
    """For outputs refused when the model returned a tuple: seqgate read its first
    item, and the item of the classes' width, if there is one, is named (a model
    returning ``(hidden, logits)`` was told only that it has 16 classes)."""
    if not isinstance(output, (tuple, list)) or len(output) < 2:
        return ""
    shapes = ", ".join(
        f"item {k}: {list(item.shape)}"
        if isinstance(item, Tensor)
        else f"item {k}: {type(item).__name__}"
        for k, item in enumerate(output)
    )
    widths = {1, 2} if num_classes == 2 else {num_classes}
    fitting = [
        k
        for k, item in enumerate(output)
        if k and isinstance(item, Tensor) and item.dim() >= 2 and item.shape[-1] in widths
    ]
    which = f"; item {fitting[0]} has the classes' width" if fitting else ""
    return (
        f" (the model returned a {type(output).__name__} of {len(output)}, {shapes}: seqgate "
        f"reads the first item as the logits{which}: return the logits first, or call the "
        f"model in a pytest_seqgate_forward hook that returns them)"
    )


def _validate_logits(
    logits: Any,
    batch: Batch,
    num_classes: int | None,
    data: SequenceData | None = None,
    carried: tuple[str, ...] | None = None,
) -> Tensor:
    if not isinstance(logits, Tensor):
        raise ModelError(
            f"the model returned {type(logits).__name__} for {_describe(batch)}; expected logits "
            f"[batch, classes], a tuple whose first item they are, or an object with .logits"
        )
    if not logits.is_floating_point():
        raise ModelError(
            f"the model returned {str(logits.dtype).replace('torch.', '')} outputs for "
            f"{_describe(batch)}; expected floating-point logits, not class indices: return "
            f"the scores before argmax"
        )
    rows = batch.inputs.shape[0]
    if logits.dim() == 3 and logits.shape[1] == 1:
        logits = logits[:, 0]  # [batch, 1, classes]: a step axis kept, not per-token outputs
    if logits.dim() == 3:
        raise ModelError(
            f"the model returned per-token outputs {list(logits.shape)} for {_describe(batch)}: "
            f"that is sequence labelling, not sequence classification; take the final hidden "
            f"state or pool over steps before the classifier layer"
        )
    if logits.dim() == 0 or logits.dim() > 2 or logits.shape[0] != rows:
        transposed = logits.dim() == 2 and logits.shape[1] == rows
        steps = batch.inputs.shape[1] if batch.inputs.dim() >= 2 else None
        hint = " (these are transposed: return them as [batch, classes])" if transposed else ""
        if not transposed and logits.dim() >= 1 and logits.shape[0] == steps:
            # nn.GRU, nn.LSTM and nn.TransformerEncoderLayer read [steps, batch]
            # unless built with batch_first=True: the batch's steps came back as rows.
            hint = (
                f" (one row per step, {steps}: the model reads its input as [steps, batch], "
                f"as an RNN or Transformer layer does unless built with batch_first=True; "
                f"seqgate gives [batch, steps]: build the layers with batch_first=True, or "
                f"transpose the input in forward)"
            )
        raise ModelError(
            f"the model returned logits {list(logits.shape)} for {_describe(batch)}; expected "
            f"[{rows}, classes]: one row per sequence in the batch{hint}"
        )
    width = 1 if logits.dim() == 1 else int(logits.shape[1])
    classes = 2 if width == 1 else width
    if num_classes is not None and classes != num_classes:
        returned = "1 logit per sequence (binary)" if width == 1 else f"{width} logits per sequence"
        if data is not None and data.names_inferred and data.label_names is not None:
            # No seqgate_labels: the classes are the names the records hold.
            named = (
                f"the labels of {data.source} name {counted(num_classes, 'class')}, "
                f"{label_list(data.label_names)}, and seqgate_labels is not set; set it to "
                f"the model's classes in output order, or fix the model's output layer"
            )
        elif data is not None and carried is not None and data.label_names == carried:
            # No seqgate_labels: the classes are the model config's (model_labels).
            named = (
                f"the model's config.id2label names {counted(num_classes, 'class')}, "
                f"{label_list(carried)}, taken as its classes in output order; make the "
                f"config (id2label, num_labels) fit the output layer, or set seqgate_labels "
                f"to the model's classes in output order"
            )
        else:
            named = (
                f"seqgate_labels names {counted(num_classes, 'class')}; fix seqgate_labels or the "
                f"model's output layer"
            )
        raise ModelError(f"the model returned {returned}, but {named}")
    return logits


def scores_alone(
    model: nn.Module,
    data: SequenceData,
    index: Tensor,
    device: torch.device,
    forward: ForwardHook | None = None,
    precision: str = "fp32",
    batch_size: int = 64,
    outputs: str = "logits",
) -> Tensor:
    """Class probabilities of the sequences ``index`` (in that order) with no
    padding at all: the sorted pass over just those rows, cut wherever the
    length changes, so one forward call per distinct length (and per
    ``batch_size`` rows of it). ``outputs`` is how the main pass read the model's
    outputs: the two must agree to be compared.
    """
    return predict(
        model,
        data,
        device,
        batch_size,
        None,
        forward,
        None,
        precision,
        rows=index,
        unpadded=True,
        outputs=outputs,
    ).scores


def output_kind(outputs: Tensor) -> str:
    """``probabilities`` when the model's outputs can only be read as such, else ``logits``.

    A model that ends in a sigmoid or a softmax returns probabilities, and reading
    them as logits is wrong twice over: one sigmoid output read as a logit is
    positive for every sample (so every prediction is the positive class), and a
    second softmax flattens and reorders the scores that AP, AUC and calibration
    read. Outputs that all lie in [0, 1] over a whole eval set are what such a
    layer gives and what trained logits practically never are. Their rows need
    not sum to 1: a sigmoid per class (a one-vs-rest head trained with binary
    cross-entropy) gives each class its own probability, and those are the scores
    its per-class AP and ROC AUC are defined on (torchmetrics reads values in
    [0, 1] alike). A bfloat16 softmax's rows sum to 1 only within 0.003 anyway.
    """
    if outputs.numel() == 0:
        return "logits"
    low, high = torch.aminmax(outputs)
    return "probabilities" if float(low) >= 0 and float(high) <= 1 else "logits"


def _probabilities(logits: Tensor, outputs: str = "logits") -> Tensor:
    """Softmax, or sigmoid for one logit as [1 - p, p]; probabilities as they are
    (one per sequence as [1 - p, p]).

    The softmax runs over the transposed view: with few classes, CPU softmax
    along a short contiguous row is three times slower than along a strided
    column. The result is that transposed view, ``[N, C]`` with class-major
    storage, which is also the layout the per-class sorts of the ranking
    metrics want.
    """
    if logits.shape[1] == 1:
        positive = logits if outputs == "probabilities" else torch.sigmoid(logits)
        return torch.cat([1 - positive, positive], dim=1)
    if outputs == "probabilities":
        return logits
    return torch.softmax(logits.T, dim=0).T


def predict(
    model: nn.Module,
    data: SequenceData,
    device: torch.device,
    batch_size: int = 64,
    num_classes: int | None = None,
    forward: ForwardHook | None = None,
    progress: Progress | None = None,
    precision: str = "fp32",
    rows: Tensor | None = None,
    unpadded: bool = False,
    outputs: str = "auto",
    threshold: float | None = None,
) -> Predictions:
    """Run the model once over ``data``, or over its positions ``rows``;
    predictions come back in dataset (or ``rows``) order, and each batch's
    ``index`` holds dataset positions either way. ``unpadded`` cuts batches
    wherever the length changes, so none is padded (the padding check's run).

    The loop does as little per batch as it can: collate, hash, forward, and
    copy the logits into the next rows of a buffer in run (length-sorted)
    order, which on a GPU is an asynchronous copy into pinned memory, so
    there is no host sync per batch. On the CPU, small batches are collated
    and hashed a group at a time, then cut apart. Softmax, argmax, the
    finiteness check and the reordering to dataset order are then one
    vectorized pass each.

    A CUDA out-of-memory error splits the failing batch in two and goes on at
    the smaller size, down to one sequence, before giving up.
    """
    check_embedding_range(model, data)
    cast = feature_dtype(model, data)
    model.to(device)
    convention = calling_convention(model)
    types = data.token_type_ids is not None and "token_type_ids" in forward_parameters(model)
    on_cpu = device.type == "cpu"
    pin = device.type == "cuda"
    sorted_pass = BucketedBatches(data, rows)
    n = len(sorted_pass)
    if n == 0:
        empty = torch.empty(0, dtype=torch.int64)
        return Predictions(empty, torch.empty(0, 0), str(device), batch_size, empty)
    # Splitting a batch after an OOM keeps its rows in order, so rows run in the
    # order of ``sorted_pass.run`` whatever happens: a batch's outputs go to
    # the next rows of the run-order buffers.
    queue = deque(sorted_pass.ranges(batch_size, unpadded))
    current = batch_size
    run_hashes = torch.empty(n, dtype=torch.int64)
    weights, _ = hash_tables(sorted_pass.widths[0])
    run_logits: Tensor | None = None
    checked = False
    group_start = group_stop = 0
    group = None
    group_steps = GROUP_VALUES // max(1, math.prod(data.values.shape[1:])) if on_cpu else 0
    with torch.inference_mode(), eval_mode(model):
        while queue:
            start, stop = queue.popleft()
            size = stop - start
            if size > current:
                queue.extendleft(reversed(row_ranges(start, stop, current)))
                continue
            if start < group_start or stop > group_stop:
                # On the CPU small batches are padded a group at a time (see
                # BucketedBatches.group_stop); a GPU gets each batch pinned.
                group_start = start
                group_stop = sorted_pass.group_stop(start, stop, group_steps)
                group = sorted_pass.batch(start, group_stop, pin_memory=pin)
                # Content hashes for the duplicate and leakage checks, from the padded
                # rows we already have, on the CPU: no extra pass and no device sync.
                hash_padded(group.inputs, weights, out=run_hashes[start:group_stop])
            assert group is not None
            if start == group_start and stop == group_stop:
                host_batch = group
            else:
                host_batch = sorted_pass.cut(group, group_start, start, stop)
            batch = (
                host_batch
                if on_cpu and cast is None
                else host_batch.to(device, non_blocking=pin, dtype=cast)
            )
            try:
                with autocast(device, precision):
                    output = forward(model, batch) if forward is not None else None
                    if output is None:
                        output = call_model(model, batch, convention, types)
            except Exception as exc:
                if _is_oom(exc):
                    if size == 1:
                        advice = (
                            "evaluate on a machine with more memory, or cut the longest sequences"
                            if on_cpu
                            else "evaluate on a larger device or the CPU (seqgate_device = cpu)"
                        )
                        raise ModelError(
                            f"out of memory on a single sequence of length "
                            f"{int(batch.lengths.max())} on {device}; {advice}"
                        ) from exc
                    current = max(1, size // 2)
                    queue.extendleft(reversed(row_ranges(start, stop, current)))
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                    continue
                at = raised_at(exc)
                steps = int(batch.inputs.shape[1]) if batch.inputs.dim() > 1 else None
                if checked:
                    raise ModelError(
                        f"the model's forward raised {type(exc).__name__} on "
                        f"{_describe(batch)}: {exc}{_shape_hint(exc, '; ', steps)}{at}"
                    ) from exc
                hooked = forward is not None
                how = (
                    "through the pytest_seqgate_forward hook"
                    if hooked
                    else f"as {CALLS[convention]}"
                )
                hint = _first_batch_hint(exc, None if hooked else convention, steps)
                raise ModelError(
                    f"the model's forward raised {type(exc).__name__} on the first batch, "
                    f"{_describe(batch)}, called {how}; {hint}: {exc}{at}"
                ) from exc
            logits = logits_of(output)
            # (The first batch is the longest: a per-token model's outputs show their
            # step axis there, and [batch, 1, classes] is reshaped below.)
            if not checked or not isinstance(logits, Tensor) or logits.shape[0] != size:
                try:
                    logits = _validate_logits(logits, batch, num_classes, data, model_labels(model))
                except ModelError as exc:
                    raise ModelError(f"{exc}{_tuple_hint(output, num_classes)}") from None
                checked = True
            if logits.dim() != 2:
                logits = logits.reshape(size, -1)
            if run_logits is None:
                # Pinned host rows make the per-batch device-to-host copy asynchronous;
                # past PINNED_LIMIT bytes pageable memory is kinder to the host.
                pin_out = pin and n * logits.shape[1] * 4 <= PINNED_LIMIT
                run_logits = torch.empty(
                    n, logits.shape[1], dtype=torch.float32, pin_memory=pin_out
                )
            run_logits[start:stop].copy_(logits.float(), non_blocking=pin)
            if progress is not None:
                progress(stop, n)
    assert run_logits is not None
    if pin:
        torch.cuda.current_stream(device).synchronize()
    run_hashes += length_terms(sorted_pass.lengths)
    order = sorted_pass.run
    logits = torch.empty_like(run_logits).index_copy_(0, order, run_logits)
    hashes = torch.empty_like(run_hashes).index_copy_(0, order, run_hashes)
    # The sum of all logits is finite unless one is NaN or Inf (or the sum
    # overflows, which the exact check below then clears): one 17 us reduction
    # where the row-wise check costs 0.5 to 1.2 ms on 50,000 x 4.
    nonfinite = torch.zeros(0, dtype=torch.bool)
    if not bool(torch.isfinite(run_logits.sum())):
        # -Inf is the logit of probability 0 (a class masked out before the
        # softmax), and one logit of ±Inf a sigmoid of 0 or 1; what gives no
        # probabilities is a NaN, +Inf beside other logits (the softmax's inf - inf),
        # or a row that masks every class.
        nonfinite = torch.isnan(logits).any(1)
        if logits.shape[1] > 1:
            nonfinite |= (logits == math.inf).any(1) | (logits == -math.inf).all(1)
    count = int(nonfinite.sum())
    if count:
        first = int(torch.nonzero(nonfinite)[0])
        where = data.record(first if rows is None else int(rows[first]))
        hint = ""
        if convention == "attention_mask" and forward is None:
            # nn.Transformer's padding mask is True where the padding is: handed the
            # Hugging Face mask as it is, every unpadded sequence is masked whole,
            # and attention over nothing is NaN.
            hint = (
                "; the model is given attention_mask = 1 for tokens, 0 for padding (as "
                "Hugging Face models read it): if its forward passes it on as "
                "src_key_padding_mask, where True marks padding, invert it "
                "(src_key_padding_mask=attention_mask == 0), or name the forward's parameter "
                "src_key_padding_mask: seqgate then passes that mask"
            )
        raise ModelError(
            f"the model returned NaN or Inf logits for {count} of {counted(n, 'sample')} "
            f"(first: {where}); "
            f"check for overflow in the model or a checkpoint with NaN weights{hint}"
        )
    kind = output_kind(logits) if outputs == "auto" else outputs
    if kind == "probabilities" and outputs != "auto" and output_kind(logits) != kind:
        raise ModelError(
            f"seqgate_outputs = probabilities, but the model returned values outside [0, 1] "
            f"(from {float(logits.min()):.3g} to {float(logits.max()):.3g}); they look like "
            f"logits: set seqgate_outputs = logits or auto"
        )
    scores = _probabilities(logits, kind)
    if threshold is not None and scores.shape[1] == 2:
        # seqgate_threshold: every pass (eval, train sample, streamed chunks) decides
        # alike, so the train/test gap compares one decision rule with itself.
        predictions = (scores[:, 1] >= threshold).to(torch.int64)
    elif logits.shape[1] == 1:
        cut = 0.5 if kind == "probabilities" else 0.0
        predictions = (logits[:, 0] > cut).to(torch.int64)
    else:
        predictions = logits.argmax(dim=1)
    return Predictions(predictions, scores, str(device), current, hashes, kind)

"""An on-disk cache of predictions, shared by xdist workers and re-runs.

Only tensors are stored (read back with ``weights_only=True``), keyed by a hash
of everything that decides them: the bytes of the model, data and tokenizer
files (or, for an import path, every file of the project's package it names,
else the module's source), the labels and the settings that change what the
model sees. Metrics, intervals and findings are recomputed from the cached
predictions: that is cheap, and it keeps the cache free of anything but numbers.
The one finding that is not cheap, leakage (hashing the whole training set, and
its MinHash signatures), is kept as its tensors too: it depends on the data
alone, so it is kept under a key of the data (DATA_PARTS), and on the
near-duplicate threshold its part is named by.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from pytest_seqgate.config import Settings, data_shards, is_import_path

if TYPE_CHECKING:
    from torch import Tensor

    from pytest_seqgate.data import SequenceData

# torch is imported where it is used: the xdist controller imports this module
# to remove a run's folder, in sessions that may never touch torch.

PREDICTION_SETTINGS = (
    "model",
    "model_factory",
    "eval_data",
    "train_data",
    "labels",
    "columns",
    "tokenizer",
    "device",
    "batch_size",
    "train_sample",
    "seed",
    "padding_check",
    "precision",
    "outputs",
    "threshold",
)


# What the parts that the data alone decides depend on (DATA_PARTS).
DATA_SETTINGS = (
    "eval_data",
    "train_data",
    "labels",
    "columns",
    "tokenizer",
    "train_sample",
    "seed",
)
# Parts that the data alone decides, whatever the model: the leakage checks (a
# training set hashed whole, its MinHash search) and a streamed training set's
# pass (its sample, its copies). Kept under a key of the data (cache_key's
# data_only), so that a changed model, the usual pull request, or a second model
# gated on the same sets reads them instead of searching the training set again.
DATA_PARTS = ("leakage_", "train_stream_", "eval_stream_near_")


def _file_digest(path: Path, digest: hashlib._Hash) -> None:
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)


# A package file past this size (a checkpoint kept in the package) is keyed
# by its size and modification time: reading it whole on every run would cost
# more than the cache saves.
PACKAGE_FILE_BYTES = 16 * 2**20


def _folder_digest(folder: Path, digest: hashlib._Hash) -> None:
    """Every file of a package folder, by name and content, bytecode left out."""
    for path in sorted(folder.rglob("*")):
        if "__pycache__" in path.parts or not path.is_file():
            continue
        digest.update(f"{path.relative_to(folder).as_posix()};".encode())
        stat = path.stat()
        if stat.st_size > PACKAGE_FILE_BYTES:
            digest.update(f"{stat.st_size}:{stat.st_mtime_ns};".encode())
        else:
            _file_digest(path, digest)


def _spec_digest(settings: Settings, name: str, digest: hashlib._Hash) -> None:
    value = getattr(settings, name)
    digest.update(f"{name}={value!r};".encode())
    if value is None:
        return
    if is_import_path(value):
        module = value.split(":")[0]
        root = str(settings.rootdir)
        spec = top = None
        with contextlib.suppress(ImportError, ValueError):
            import sys

            if root not in sys.path:
                sys.path.insert(0, root)
            spec = importlib.util.find_spec(module)
            top = importlib.util.find_spec(module.split(".")[0])
        folders = list(getattr(top, "submodule_search_locations", None) or [])
        if folders and all(Path(f).resolve().is_relative_to(settings.rootdir) for f in folders):
            # The project's own package: the model's layers, the tokenizer's
            # vocabulary may sit in modules and files next to the one named.
            for folder in folders:
                _folder_digest(Path(folder), digest)
        elif spec is not None and spec.origin and os.path.isfile(spec.origin):
            _file_digest(Path(spec.origin), digest)
        return
    path = settings.resolve(name, value)
    shards = data_shards(path)
    if shards:  # a pattern of shards: which files, and their bytes
        for shard in shards:
            digest.update(f"{shard.name};".encode())
            _file_digest(shard, digest)
    elif path.is_file():
        _file_digest(path, digest)
    elif path.is_dir():  # a dataset save_to_disk wrote: its Arrow files and their state
        _folder_digest(path, digest)


def data_digest(data: SequenceData) -> str:
    """The bytes of a loaded set, for a key whose spec names no file that holds them:
    an import path (``mypkg.data:eval_set``) or a loader hook may read files
    anywhere, and a changed one must not serve the old predictions."""
    digest = hashlib.sha256(repr(data.label_names).encode())
    types = () if data.token_type_ids is None else (data.token_type_ids,)
    for tensor in (data.values, data.offsets, data.lengths, data.labels, *types):
        digest.update(f"{tensor.dtype}{tuple(tensor.shape)};".encode())
        try:
            digest.update(tensor.contiguous().numpy().data)  # the buffer itself, no copy
        except (ImportError, RuntimeError, TypeError):  # torch without NumPy
            digest.update(repr(tensor.reshape(-1).tolist()).encode())
    return digest.hexdigest()


def cache_key(settings: Settings, salt: str = "", data_only: bool = False) -> str:
    """A hex key for the predictions these settings produce; ``data_only``: for
    the parts the data alone decides (DATA_PARTS), whatever the model."""
    import torch

    from pytest_seqgate import __version__

    scope = "data;" if data_only else ""
    digest = hashlib.sha256(
        f"seqgate {__version__} torch {torch.__version__};{salt};{scope}".encode()
    )
    specs = ("eval_data", "train_data", "tokenizer")
    for name in specs if data_only else ("model", "model_factory", *specs):
        _spec_digest(settings, name, digest)
    named = DATA_SETTINGS if data_only else PREDICTION_SETTINGS
    rest = {name: getattr(settings, name) for name in named}
    digest.update(json.dumps(rest, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:32]


def run_folder(run: str) -> Path:
    """Where the xdist workers of one run share their predictions: under the
    system's temporary folder, not pytest's cache, which would keep every run's
    copy (tens of MB each for a large eval set with scores) for good. The
    controller removes it when the run ends."""
    import tempfile

    return Path(tempfile.gettempdir()) / f"seqgate-run-{run}"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (flock where available, else an O_EXCL lock file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        import time

        lock = path.with_suffix(".lck")
        while True:
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                break
            except FileExistsError:
                time.sleep(0.05)
        try:
            yield
        finally:
            os.close(fd)
            lock.unlink(missing_ok=True)
        return
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class PredictionSource(Protocol):
    """What evaluate() asks for each inference: the tensors of ``part``, computed by
    ``compute`` unless they are already known (on disk, or streamed)."""

    def get_or_compute(
        self, part: str, compute: Callable[[], dict[str, Tensor]]
    ) -> dict[str, Tensor]: ...


class SessionParts:
    """The parts the data alone decides (DATA_PARTS), kept for the session under
    ``key`` in ``kept``, in front of ``inner`` (the on-disk cache, or None): models
    gated in turn on the same sets (a ``seqgate_model`` with params, which no
    on-disk key can describe) search the training set once between them."""

    def __init__(
        self,
        kept: dict[tuple[object, str], dict[str, Tensor]],
        key: object,
        inner: PredictionSource | None,
    ) -> None:
        self.kept, self.key, self.inner = kept, key, inner

    def get_or_compute(
        self, part: str, compute: Callable[[], dict[str, Tensor]]
    ) -> dict[str, Tensor]:
        def inner() -> dict[str, Tensor]:
            return compute() if self.inner is None else self.inner.get_or_compute(part, compute)

        if not part.startswith(DATA_PARTS):
            return inner()
        found = self.kept.get((self.key, part))
        if found is None:
            found = self.kept[(self.key, part)] = inner()
        return found


KEEP_KEYS = 8


class PredictionCache:
    """``get_or_compute(part, fn)``: tensors from disk, or computed once under a lock.

    Every model or data change is a new key, and a large eval set's entry is
    tens of MB, so after writing one the folder keeps the ``KEEP_KEYS`` most
    recently used keys (a key's lock file is touched on each use) and drops
    the rest: a CI cache of the folder does not grow with every commit.
    """

    def __init__(
        self, folder: Path, key: str, started: float | None = None, data_key: str | None = None
    ) -> None:
        self.folder = folder
        self.key = key
        self.data_key = data_key  # for DATA_PARTS; None: the key
        self.hits = 0
        self.misses = 0
        # The parts read from entries written before ``started`` (the session's
        # start): an earlier run's predictions, which the report says it reused.
        self.started = started
        self.earlier: set[str] = set()

    def get_or_compute(
        self, part: str, compute: Callable[[], dict[str, Tensor]]
    ) -> dict[str, Tensor]:
        import torch

        key = self.data_key if self.data_key and part.startswith(DATA_PARTS) else self.key
        path = self.folder / f"{key}-{part}.pt"
        lock = self.folder / f"{key}.lock"
        with _locked(lock):
            lock.touch()  # marks the key as used; the prune keeps the recent ones
            if path.is_file():
                try:
                    loaded = torch.load(str(path), map_location="cpu", weights_only=True)
                    self.hits += 1
                    if self.started is not None and path.stat().st_mtime < self.started:
                        self.earlier.add(part)
                    return dict(loaded)
                except Exception:  # a torn or stale file: recompute it
                    path.unlink(missing_ok=True)
            result = compute()
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            torch.save(result, str(tmp))
            os.replace(tmp, path)
            self.misses += 1
        self.prune()
        return result

    def prune(self) -> None:
        """Drop the entries of all but the ``KEEP_KEYS`` most recently used keys."""

        def used(lock: Path) -> float:
            try:
                return lock.stat().st_mtime
            except OSError:  # removed meanwhile by another process's prune
                return 0.0

        locks = sorted(self.folder.glob("*.lock"), key=used, reverse=True)
        for lock in locks[KEEP_KEYS:]:
            for entry in self.folder.glob(f"{lock.stem}-*.pt"):
                entry.unlink(missing_ok=True)
            lock.unlink(missing_ok=True)

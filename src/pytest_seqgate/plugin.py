"""The pytest glue: options, marker, fixtures, hooks. Thin by design.

pytest imports this module in every run of every project where the plugin
is installed, so it imports neither torch nor the core at module level:
the core is imported inside the hooks and fixtures that need it, and only
when a collected test uses the plugin.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import time
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from pytest_seqgate.config import OPTIONS, Option, Settings, cli_type, is_import_path
from pytest_seqgate.exceptions import ConfigError, GateFailure, SeqgateError

if TYPE_CHECKING:
    from _pytest.nodes import Node

    from pytest_seqgate.data import SequenceData
    from pytest_seqgate.evaluation import Evaluation
    from pytest_seqgate.gates import GateResult, GateSpec

MARKER = "seqgate"
T = TypeVar("T")
FIXTURES = ("seqgate", "seqgate_evaluation")


class SessionState:
    """Everything the plugin holds for one pytest session (kept in ``config.stash``)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self._settings: Settings | None = None
        self.loaded: dict[str, Any] = {}
        # What a loader hook returned: its spec names no bytes a cache key could read.
        self.hooked: set[str] = set()
        self.evaluations: dict[tuple[int, int, int], Evaluation] = {}
        self.keep_alive: list[Any] = []
        # The leakage checks of each (eval set, training set, data settings), for
        # every model gated on them (cache.SessionParts).
        self.data_parts: dict[tuple[object, str], dict[str, Any]] = {}
        self.specs: dict[str, GateSpec] = {}
        self.report_errors: list[str] = []
        # Why an evaluation this session wanted did not run (a fixture that raised,
        # a usage error): the reports say so instead of keeping the last run's.
        self.errors: list[str] = []
        self.written: list[Path] = []
        self.merged: dict[tuple[str, str, str], Evaluation] = {}
        self.failed: dict[tuple[int, int, int], Exception] = {}
        self.base_names: dict[int, str] = {}
        self.warned_uncached: set[str] = set()
        self.cache: Any = None
        # When the run began (the xdist controller's, in its workers): cache entries
        # older than this are an earlier run's.
        self.started = float(getattr(config, "workerinput", {}).get("seqgate_started", time.time()))

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = Settings.build(self.config.rootpath, self._lookup)
        return self._settings

    def _lookup(self, option: Option) -> tuple[Any, str] | None:
        cli = self.config.getoption(option.ini, None)
        if cli in ("", []):
            # ``--seqgate-model-factory=`` clears the ini's value for this run:
            # the way to gate a TorchScript file where the ini names a state dict
            # (``--seqgate-labels=``, a list, parses to []).
            return None
        if cli is not None:
            if option.kind in ("paths", "lines"):
                cli = [p for group in cli for p in group]
            return cli, option.off_flag if cli is False else option.flag
        ini = self.config.getini(option.ini)
        if ini in (None, [], ""):
            return None
        if any(line.partition("=")[0].strip() == option.ini for line in _overrides(self.config)):
            # ``-o seqgate_labels=...`` wins over the ini file, which may not hold
            # the key at all: a message naming the file would send the user there.
            return ini, f"-o {option.ini}"
        where = self.config.inipath.name if self.config.inipath else "ini"
        return ini, f"{option.ini} in {where}"

    def has_hook(self, name: str) -> bool:
        return bool(getattr(self.config.hook, name).get_hookimpls())

    def call_hook(self, name: str, **kwargs: Any) -> Any:
        """A user's loader hook; what it raises (a bucket out of reach, a missing
        file) is a usage error naming the hook and the user's line."""
        return self._usage_error_of(name, lambda: getattr(self.config.hook, name)(**kwargs))

    def _loaded(self, setting: str, load: Callable[[], T]) -> T:
        """A setting's file loaded; what no check of seqgate's foresaw (a
        library's own exception) names the setting and the file."""
        what = f"{self.settings.source(setting)}: loading {getattr(self.settings, setting)!r}"
        return self._usage_error_of(what, load)

    def _usage_error_of(self, what: str, action: Callable[[], T]) -> T:
        """Run ``action`` at collection, where an exception seqgate did not raise
        would be pytest's INTERNALERROR, its cause buried in a traceback: it is a
        usage error naming ``what`` raised it and the user's line it came from."""
        try:
            return action()
        except SeqgateError:
            raise
        except Exception as exc:
            raise ConfigError(
                f"{what} raised {type(exc).__name__} at {_user_line(exc, self.config.rootpath)}"
                f": {exc}"
            ) from exc

    # Loading is memoised so that collection-time validation and fixtures share it.
    def model(self) -> Any:
        if "model" not in self.loaded:
            settings = self.settings
            model = None
            if settings.model is not None and self.has_hook("pytest_seqgate_load_model"):
                model = self.call_hook(
                    "pytest_seqgate_load_model", spec=settings.model, settings=settings
                )
            from pytest_seqgate.inference import require_module
            from pytest_seqgate.loading import load_model

            if model is None:
                model = self._loaded("model", lambda: load_model(settings))
            else:
                self.hooked.add("model")
                model = require_module(model, f"pytest_seqgate_load_model for {settings.model!r}")
            self.loaded["model"] = model
        return self.loaded["model"]

    def dataset(self, role: str) -> SequenceData | None:
        if role not in self.loaded:
            settings = self.settings
            spec = getattr(settings, role)
            if (
                (spec is None and role == "train_data")
                or (role == "eval_data" and settings.streaming)
                or settings.streams(role)
            ):
                # A streamed set is read during the evaluation, a window at a time;
                # a missing file is said now, once, not at each gated test's setup.
                if settings.streams(role):
                    settings.existing(role)
                self.loaded[role] = None
                return None
            from pytest_seqgate.loading import configured_tokenizer, from_dataset, load_dataset

            data = None
            if spec is not None and self.has_hook("pytest_seqgate_load_dataset"):
                data = self.call_hook(
                    "pytest_seqgate_load_dataset", spec=spec, role=role, settings=settings
                )
            if data is None:
                self.loaded[role] = self._loaded(role, lambda: load_dataset(settings, role))
            else:
                self.hooked.add(role)
                try:
                    self.loaded[role] = from_dataset(
                        data,
                        spec,
                        settings.labels,
                        configured_tokenizer(settings),
                        column_of=settings.column_of,
                    )
                except ConfigError as exc:
                    # The spec names a file the user's hook read: say whose data it was.
                    raise type(exc)(
                        f"the data pytest_seqgate_load_dataset returned for {spec!r}: {exc}"
                    ) from None
        result: SequenceData | None = self.loaded[role]
        return result

    def evaluate(
        self, model: Any, eval_data: Any, train_data: Any, params: dict[str, str] | None = None
    ) -> Evaluation:
        """One inference per (model, eval set, train set) per session; a failed one
        is not retried for every test that asks (its error is raised again).
        ``params``: the fixture parameters that made a model or eval set that is
        not the configured one, to name it by."""
        key = (id(model), id(eval_data), id(train_data))
        failed = self.failed.get(key)
        if failed is not None:
            raise failed
        try:
            return self._evaluate(key, model, eval_data, train_data, params or {})
        except Exception as exc:
            self.failed[key] = exc
            # Kept alive, as evaluated objects are: a new object at a freed one's
            # address must not inherit its error.
            self.keep_alive.extend([model, eval_data, train_data])
            raise

    def _evaluate(
        self,
        key: tuple[int, int, int],
        model: Any,
        eval_data: Any,
        train_data: Any,
        params: dict[str, str],
    ) -> Evaluation:
        if key not in self.evaluations:
            import dataclasses

            from pytest_seqgate.evaluation import custom_numbers, evaluate
            from pytest_seqgate.inference import model_class, require_module
            from pytest_seqgate.loading import configured_tokenizer, from_dataset

            settings = self.settings
            # A conftest.py's own model or eval set is not the configured file:
            # the report must not name it after the file.
            name = None
            if model is not self.loaded.get("model"):
                settings = dataclasses.replace(settings, model=None, model_factory=None)
                if "seqgate_model" in params:
                    name = f"{model_class(model)}[{params['seqgate_model']}]"
            if eval_data is not None and eval_data is not self.loaded.get("eval_data"):
                settings = dataclasses.replace(settings, eval_data=None)
            require_module(model, "the seqgate_model fixture")
            tokenizer = configured_tokenizer(settings)
            eval_set = (
                None
                if eval_data is None and settings.streaming
                else from_dataset(
                    eval_data,
                    "seqgate_eval_data fixture",
                    settings.labels,
                    tokenizer,
                    column_of=settings.column_of,
                )
            )
            train_set = (
                None
                if train_data is None
                else from_dataset(
                    train_data,
                    "seqgate_train_data fixture",
                    settings.labels,
                    tokenizer,
                    column_of=settings.column_of,
                )
            )
            hook = self.config.hook
            forward = None
            if self.has_hook("pytest_seqgate_forward"):

                def forward(m: Any, b: Any) -> Any:
                    return hook.pytest_seqgate_forward(model=m, batch=b)

            custom = None
            if self.has_hook("pytest_seqgate_metrics"):

                def custom(ev: Evaluation) -> dict[str, float]:
                    merged: dict[str, float] = {}
                    # What the user's hook raises: one line at their line, no traceback.
                    for part in self.call_hook("pytest_seqgate_metrics", evaluation=ev):
                        if part is not None:
                            merged.update(custom_numbers(part))
                    return merged

            from pytest_seqgate.cache import DATA_SETTINGS, SessionParts

            cache = self.prediction_cache(model, eval_data, train_data)
            # The objects are kept alive, so their ids name them for the session.
            data_key = (
                id(eval_data),
                id(train_data),
                *(getattr(settings, n) for n in DATA_SETTINGS),
            )
            with self.worker_threads(shared=cache is not None):
                self.evaluations[key] = evaluate(
                    model,
                    eval_set,
                    settings,
                    train_set,
                    forward=forward,
                    custom_metrics=custom,
                    progress=self.progress_line(),
                    cache=SessionParts(self.data_parts, repr(data_key), cache),
                    name=name,
                )
            if settings.eval_data is None and "seqgate_eval_data" in params:
                self.evaluations[key].eval_data += f"[{params['seqgate_eval_data']}]"
            if cache is not None and cache.earlier & {"eval", "stream"}:
                self.evaluations[key].cache_note = "predictions from an earlier run's cache"
            self.keep_alive.extend([model, eval_data, train_data])
        return self.evaluations[key]

    @contextlib.contextmanager
    def worker_threads(self, shared: bool) -> Iterator[None]:
        """torch's share of the cores while this xdist worker evaluates.

        Workers that each run their own inference (objects a conftest.py built
        have no shared cache entry) run it at the same time, each with torch's
        threads for the whole machine: on 2 cores, 2 workers of 2 threads made
        the example's 0.3 s evaluation take 0.6 to 9.5 s. A worker that computes
        a shared entry runs alone (the others wait on its lock) and keeps them.
        """
        workers = int(getattr(self.config, "workerinput", {}).get("workercount", 1))
        if shared or workers <= 1:
            yield
            return
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(max(1, before // workers))
        try:
            yield
        finally:
            torch.set_num_threads(before)

    def uncached(self, why: str) -> None:
        """Where seqgate_cache is asked for and cannot keep the predictions, say why,
        once a session for each reason."""
        if not self.settings.cache or why in self.warned_uncached:
            return
        self.warned_uncached.add(why)
        import warnings

        warnings.warn(
            pytest.PytestConfigWarning(f"seqgate: {self.settings.source('cache')} {why}"),
            stacklevel=3,
        )

    def prediction_cache(self, model: Any, eval_data: Any, train_data: Any) -> Any:
        """The on-disk cache, when the objects are the configured files (a cache key
        describes files, not objects a conftest.py built) and it is wanted: always
        between the xdist workers of one run, across runs with --seqgate-cache."""
        settings = self.settings
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            # Ranks gather each other's shards: a rank holding the cache's lock while it
            # waits in the gather for a rank waiting on that lock would never return.
            self.uncached(
                "keeps nothing under torchrun, where the ranks share their shards' "
                "predictions with each other instead: each run evaluates again"
            )
            return None
        run = getattr(self.config, "workerinput", {}).get("seqgate_run")
        loaded = self.loaded
        if (
            model is not loaded.get("model")
            or eval_data is not loaded.get("eval_data")
            or train_data is not loaded.get("train_data")
        ):
            self.uncached(
                "keeps the predictions of the configured files only: a model or data set a "
                "conftest.py fixture built is evaluated again on each run (a cache key reads "
                "files, not objects built in code)"
            )
            return None
        from pytest_seqgate.cache import PredictionCache, cache_key, data_digest, run_folder

        cache = getattr(self.config, "cache", None)  # None under -p no:cacheprovider
        # Across runs only what the key can read: a hook's "registry://spam:latest"
        # may load other weights tomorrow. Within one run (xdist) it cannot.
        hooked_model = "model" in self.hooked
        folder = None
        if settings.cache and cache is not None and not hooked_model:
            folder = cache.mkdir("seqgate")
        elif run is not None:
            folder = run_folder(run)
        if hooked_model or cache is None:
            self.uncached(
                "does not keep the predictions of a model a loader hook returned: its spec "
                "names no bytes a cache key could read, so a re-run evaluates again"
                if hooked_model
                else "needs pytest's cache folder, which -p no:cacheprovider turned off: "
                "nothing is kept (drop -p no:cacheprovider to use it)"
            )
        if folder is None:
            return None
        # A data set from an import path or a hook is keyed by its loaded bytes.
        salt = ";".join(
            data_digest(data)
            for role, data in (("eval_data", eval_data), ("train_data", train_data))
            if data is not None
            and (role in self.hooked or is_import_path(getattr(settings, role) or ""))
        )
        self.cache = PredictionCache(
            folder, cache_key(settings, salt), self.started, cache_key(settings, salt, True)
        )
        return self.cache

    def progress_line(self) -> Callable[[int, int], None] | None:
        """Progress on the terminal's line, at most twice a second: only on a TTY and not
        under CI=true, unless seqgate_progress says otherwise; never on xdist workers."""
        wanted = self.settings.progress
        writer = self.config.get_terminal_writer()
        if wanted is None:
            wanted = writer.hasmarkup and os.environ.get("CI", "").lower() not in ("true", "1")
        if not wanted or hasattr(self.config, "workerinput"):
            return None
        last = [0.0]

        def show(done: int, total: int) -> None:
            now = time.monotonic()
            if done < total and now - last[0] < 0.5:
                return
            last[0] = now
            end = "\n" if done >= total else ""
            writer.write(f"\rseqgate: {done:,}/{total:,} sequences{end}", flush=True)

        return show

    def merge(self, evaluations: list[Evaluation]) -> None:
        """Fold a worker's evaluations in: the same evaluation from several workers
        keeps one copy, with every worker's gates and findings."""
        for ev in evaluations:
            # Two conftest.py models of one class on one data set share a name; their
            # confusion matrices tell them apart (the same evaluation has the same one).
            key = (ev.model, ev.eval_data, str(ev.metrics.confusion_matrix.tolist()))
            mine = self.merged.get(key)
            if mine is None:
                self.merged[key] = ev
                continue
            mine.gates.extend(ev.gates)
            seen = {(f.kind, f.message) for f in mine.findings}
            mine.findings.extend(f for f in ev.findings if (f.kind, f.message) not in seen)


STATE = pytest.StashKey[SessionState]()
# A test's gate results, to mark them when pytest reports the test as xfailed.
GATE_RESULTS = pytest.StashKey[list["GateResult"]]()
# The key of a worker's usage error in xdist's workeroutput.
USAGE_ERROR = "seqgate_usage_error"
# The key of a worker's SessionState.errors in xdist's workeroutput.
NOT_EVALUATED = "seqgate_not_evaluated"
# The name GatedSession is registered under.
GATED_SESSION = "seqgate-gated-session"
# The fixtures an evaluation is built from: one that raises means no evaluation.
EVALUATION_FIXTURES = frozenset(
    ("seqgate_model", "seqgate_eval_data", "seqgate_train_data", "seqgate_evaluation")
)


def _not_evaluated(state: SessionState, message: str) -> None:
    # One entry a problem (a usage error lists every bad marker, a line each); the
    # report is seqgate's own, so the "seqgate: " of a terminal message goes.
    for line in message.splitlines():
        line = line.removeprefix("seqgate: ")
        if line and line not in state.errors:
            state.errors.append(line)


class XdistHooks:
    """Registered only when pytest-xdist is active: the controller hands each worker
    the run's id (so workers share one prediction cache entry) and merges what they
    evaluated; only the controller writes reports."""

    def __init__(self, state: SessionState) -> None:
        import uuid

        self.state = state
        self.run = uuid.uuid4().hex
        self.usage_error: str | None = None

    @pytest.hookimpl
    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput["seqgate_run"] = self.run
        node.workerinput["seqgate_started"] = self.state.started

    @pytest.hookimpl
    def pytest_sessionfinish(self) -> None:
        import shutil

        from pytest_seqgate.cache import run_folder

        shutil.rmtree(run_folder(self.run), ignore_errors=True)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtestloop(self, session: pytest.Session) -> Generator[None, object, object]:
        """A worker's usage error, raised here as it is without xdist: ``ERROR: ...``
        and exit 4 (every worker collects the same tests, so each found it)."""
        result = yield
        if self.usage_error is not None:
            _not_evaluated(self.state, self.usage_error)
            raise pytest.UsageError(self.usage_error)
        return result

    @pytest.hookimpl
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        import pickle

        output = getattr(node, "workeroutput", {})
        if self.usage_error is None:
            self.usage_error = output.get(USAGE_ERROR)
        payload = output.get("seqgate")
        if payload:
            # Our own worker's bytes, over xdist's channel: not a user file.
            self.state.merge(pickle.loads(payload))
        for message in output.get(NOT_EVALUATED, ()):
            _not_evaluated(self.state, message)


def _user_line(exc: BaseException, root: Path) -> str:
    from pytest_seqgate.exceptions import user_line

    return user_line(exc, root) or "an unknown place"


def _state(config: pytest.Config) -> SessionState:
    return config.stash[STATE]


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from pytest_seqgate import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("seqgate", "seqgate: gate a sequence classifier's quality")
    for option in OPTIONS:
        if option.kind == "bool":
            for flag, value, text in (
                (option.flag, True, option.help),
                (option.off_flag, False, f"turn {option.ini} off for this run"),
            ):
                group.addoption(
                    flag,
                    dest=option.ini,
                    action="store_const",
                    const=value,
                    default=None,
                    help=text,
                )
        elif option.kind in ("paths", "lines"):
            group.addoption(
                option.flag,
                dest=option.ini,
                action="append",
                type=cli_type(option),
                default=None,
                metavar="PATH" if option.kind == "paths" else "LINE",
                help=option.help + " (repeatable)",
            )
        else:
            group.addoption(
                option.flag,
                dest=option.ini,
                type=cli_type(option),
                default=None,
                metavar=option.name.upper(),
                help=option.help,
            )
        parser.addini(option.ini, option.help, type=option.ini_type)  # type: ignore[arg-type]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "seqgate(**gates): check the seqgate gates after the test body, e.g. "
        "@pytest.mark.seqgate(min_recall={'spam': 0.9}, min_macro_f1=0.85)",
    )
    if not hasattr(config, "workerinput"):
        _check_option_values(config)
    state = SessionState(config)
    config.stash[STATE] = state
    if config.pluginmanager.hasplugin("xdist") and not hasattr(config, "workerinput"):
        config.pluginmanager.register(XdistHooks(state), "seqgate-xdist")


def _check_option_values(config: pytest.Config) -> None:
    """A ``--seqgate-x PATH`` outside the project made pytest miss the project's
    configuration, or a misspelt ``seqgate_*`` key in it would be ignored: a
    usage error, before anything runs on the wrong settings."""
    from pytest_seqgate.config import misread_option_value, misspelt_ini_key

    params = config.invocation_params
    args = [*shlex.split(os.environ.get("PYTEST_ADDOPTS", "")), *map(str, params.args)]
    problem = misread_option_value(args, params.dir, config.inipath, config.rootpath)
    asked = config.option.help or config.option.version  # --help lists the keys
    overridden = {line.partition("=")[0].strip() for line in _overrides(config)}
    if problem is None and not asked:
        problem = misspelt_ini_key(overridden, "given with -o", lambda k: _declared(config, k))
    if problem is None and config.inipath is not None and not asked:
        # The keys the file sets, known to pytest or not: Config.inicfg until pytest
        # 9, Config._inicfg since (where reading inicfg warns of its deprecation,
        # an error under -W error, and which holds the -o keys too): read from the
        # instance, no property touched.
        attributes = vars(config)
        keys = set(attributes.get("_inicfg") or attributes.get("inicfg") or ()) - overridden
        problem = misspelt_ini_key(
            keys, f"in {config.inipath.name}", lambda key: _declared(config, key)
        )
    if problem is not None:
        raise pytest.UsageError(f"seqgate: {problem}")


def _overrides(config: pytest.Config) -> list[str]:
    """The ``-o key=value`` lines of the run (``-o`` wins over the ini file)."""
    return list(config.getoption("override_ini", None) or ())


def _declared(config: pytest.Config, key: str) -> bool:
    """Whether some plugin declared the ini key (``getini`` refuses one none did)."""
    try:
        config.getini(key)
    except ValueError:
        return False
    return True


def _uses_plugin(item: pytest.Item) -> bool:
    if isinstance(item, GateItem) or item.get_closest_marker(MARKER) is not None:
        return True
    names = getattr(item, "fixturenames", ())
    return any(name in names for name in FIXTURES)


GATED_COLLECTOR = pytest.StashKey[bool]()
USES_EVALUATION = pytest.mark.usefixtures("seqgate_evaluation")


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: object) -> None:
    """Give a gated test function the evaluation fixture before pytest computes its
    fixtures, as if it had asked for it.

    A marker-only test asks for no fixture; added after collection, the
    evaluation was never parametrized: a conftest.py's ``seqgate_model`` with
    ``params=[...]`` (one model per checkpoint) made every marker-only test an
    error ("The requested fixture has no parameter defined for test").
    Returns None: pytest's own hook still makes the items.
    """
    # Test functions only: pytest refuses marks on fixtures, and a class's marks
    # would pass to its subclasses elsewhere.
    if not _gated_function(collector, obj):
        return
    is_test = getattr(collector, "istestfunction", None)
    if is_test is None or not is_test(obj, name):
        return
    if not any(m.name == "usefixtures" and "seqgate_evaluation" in m.args for m in _marks(obj)):
        with contextlib.suppress(AttributeError, TypeError):  # an object that takes no marks
            USES_EVALUATION(obj)


def _marks(obj: object) -> list[Any]:
    marks = getattr(obj, "pytestmark", [])
    return [m for m in (marks if isinstance(marks, list) else [marks]) if hasattr(m, "name")]


def _gated_function(collector: pytest.Collector, obj: object) -> bool:
    """A seqgate marker on the function, on a ``pytest.param`` of its
    parametrize, or on its class or module (looked up once per collector)."""
    for mark in _marks(obj):
        if mark.name == MARKER:
            return True
        values = mark.args[1] if mark.name == "parametrize" and len(mark.args) > 1 else ()
        # Only a list or tuple: iterating a generator would use up pytest's parameters.
        for value in values if isinstance(values, (list, tuple)) else ():
            marks = getattr(value, "marks", ())
            if isinstance(marks, (list, tuple)) and any(
                getattr(m, "name", None) == MARKER for m in marks
            ):
                return True
    gated = collector.stash.get(GATED_COLLECTOR, None)
    if gated is None:
        gated = collector.get_closest_marker(MARKER) is not None
        collector.stash[GATED_COLLECTOR] = gated
    return gated


def _from_here(config: pytest.Config, path: Path) -> str:
    """A written file's path as the user can open it from where pytest was run:
    paths in the settings are the rootdir's, but a run started in tests/ would
    look for ``reports/seqgate.json`` there."""
    here, path = config.invocation_params.dir, config.rootpath / path
    try:
        if here == config.rootpath:
            return str(path.relative_to(here))
        return os.path.relpath(path, here)
    except ValueError:  # outside the rootdir, or on another drive
        return str(path)


def _where(item: pytest.Item) -> str:
    path, line, _ = item.location
    return f"{path}:{(line or 0) + 1}" if line is not None else path


def _marker_levels(item: pytest.Item) -> list[tuple[Node, pytest.Mark]]:
    """The item's seqgate markers, closest first: a ``pytest.param(...,
    marks=...)``'s (pytest lists them after the function's own decorators),
    then the function's, the class's and the module's."""
    levels = list(item.iter_markers_with_node(MARKER))
    params = [m for m in getattr(getattr(item, "callspec", None), "marks", ()) if m.name == MARKER]
    if not params:
        return levels
    # By identity (pytest adds these very objects to the item's own markers): a
    # Mark's == compares its keyword values, which need not compare cleanly.
    ids = {id(m) for m in params}
    return [(item, m) for m in params] + [(n, m) for n, m in levels if id(m) not in ids]


def _marker_where(node: Node, item: pytest.Item) -> str:
    """Where a marker was put: the test's line, its class's line, or its module's
    ``pytestmark``."""
    if node is item:
        return _where(item)
    if isinstance(node, pytest.Class):
        _, line, _ = node.reportinfo()
        if line is not None:
            return f"{item.location[0]}:{line + 1}"
    return f"{item.location[0]}{_pytestmark_line(node)} (pytestmark)"


def _pytestmark_line(node: Node) -> str:
    """``:7`` for the module line that assigns ``pytestmark``, read from the
    source only on this error path; nothing where it is set some other way."""
    import linecache

    for number, text in enumerate(linecache.getlines(str(node.path)), 1):
        if re.match(r"pytestmark\s*[:=+]", text):
            return f":{number}"
    return ""


class GateCollection(pytest.Collector):
    """The parent of the ``seqgate_gates`` items: node id ``seqgate``."""

    gate_items: list[pytest.Item]

    def collect(self) -> list[pytest.Item]:
        return list(getattr(self, "gate_items", []))


class GateItem(pytest.Item):
    """One line of ``seqgate_gates``: a test item with no test file behind it."""

    def __init__(self, *, spec: GateSpec, line: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec = spec
        self.line = line

    def runtest(self) -> None:
        from pytest_seqgate.gates import check

        state = _state(self.config)
        settings = _guard(lambda: state.settings)
        unset = [
            f"seqgate_{name}" for name in ("model", "eval_data") if not getattr(settings, name)
        ]
        if unset:
            # The usual reason: a conftest.py supplies them as fixtures, which
            # serve tests, not these lines.
            pytest.fail(
                f"seqgate: seqgate_gates lines gate the configured model and eval set, and "
                f"{' and '.join(unset)} {'is' if len(unset) == 1 else 'are'} not set; a "
                f"conftest.py's seqgate_* fixtures serve the tests that use them, not these "
                f"lines: set {' and '.join(unset)}, or gate the fixtures' model in a test "
                f"with @pytest.mark.seqgate(...)",
                pytrace=False,
            )
        evaluation = _guard(
            lambda: state.evaluate(
                state.model(), state.dataset("eval_data"), state.dataset("train_data")
            )
        )
        results = _guard(lambda: check(evaluation, self.spec, self.nodeid))
        _record(self, evaluation, results)
        if not all(r.passed for r in results):
            raise GateFailure(_failure_message(self.config, results, self.nodeid))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, GateFailure):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self.config.inipath or self.path, None, f"seqgate::{self.name}: {self.line}"


def _gate_items(session: pytest.Session, state: SessionState) -> list[pytest.Item]:
    from pytest_seqgate.gates import parse_gate_line

    settings = state.settings
    labels = settings.labels
    if labels is None and settings.eval_data is not None:
        data = state.dataset("eval_data")
        labels = data.label_names if data is not None else None
    parent = GateCollection.from_parent(session, name="seqgate", nodeid="seqgate")
    items: list[pytest.Item] = []
    problems = []  # every bad line at once, as for markers
    taken: set[str] = set()
    for line in settings.gates or ():
        try:
            parsed = parse_gate_line(
                line, labels, state.has_hook("pytest_seqgate_metrics"), settings.source("gates")
            )
        except ConfigError as exc:
            problems.append(str(exc))
            continue
        item = GateItem.from_parent(
            parent, name=_unique_name(parsed.name, line, taken), spec=parsed.spec, line=line
        )
        if parsed.xfail is not None:
            item.add_marker(pytest.mark.xfail(reason=parsed.xfail, strict=False))
        items.append(item)
    if problems:
        raise ConfigError("\n".join(problems))
    parent.gate_items = items
    # Tell the terminal (and other plugins) about them, so "collected N items" counts them.
    session.config.hook.pytest_collectreport(
        report=pytest.CollectReport(parent.nodeid, "passed", None, list(items))
    )
    return items


def _unique_name(name: str, line: str, taken: set[str]) -> str:
    """The item's name: its metric, unless another line took it (``recall[spam] >=
    0.8`` and ``recall[spam] >= 0.9; xfail``), then the line itself, so that each
    item has its own node id for ``--deselect``, ``--lf`` and the report."""
    if name in taken:
        name = " ".join(line.split(";")[0].split())
        base, n = name, 1
        while name in taken:
            n += 1
            name = f"{base} #{n}"
    taken.add(name)
    return name


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    """Add the ``seqgate_gates`` items first, so -k and --deselect see them."""
    state = _state(config)
    if _only_named_tests(config):
        return
    if config.getini("seqgate_gates") or config.getoption("seqgate_gates", None):
        try:
            items.extend(_gate_items(session, state))
        except SeqgateError as exc:
            _usage_error(config, items, f"seqgate: {exc}")


def _only_named_tests(config: pytest.Config) -> bool:
    """``pytest tests/test_x.py::test_a`` (how an IDE runs one test) asks for that
    test: the ``seqgate_gates`` items, which no path names, are not added to it.
    A folder or a file given still gets them: ``pytest tests/`` in CI must not
    drop the gates in silence."""
    args = config.args if config.args_source == pytest.Config.ArgsSource.ARGS else []
    return bool(args) and all("::" in arg for arg in args)


def _usage_error(config: pytest.Config, items: list[pytest.Item], message: str) -> None:
    """Raise pytest's usage error (exit 4, ``ERROR: message``).

    On a pytest-xdist worker a usage error raised in collection crashes the
    worker, and the controller shows xdist's INTERNALERROR traceback, not the
    message: the worker hands the message over (``workeroutput``) and runs
    nothing, and the controller raises it once every worker is down.
    """
    workeroutput = getattr(config, "workeroutput", None)
    if workeroutput is None:
        _not_evaluated(_state(config), message)
        raise pytest.UsageError(message)
    workeroutput.setdefault(USAGE_ERROR, message)
    items.clear()


# pytest reads only attributes named pytest_*: the second implementation of
# the hook in this module needs another such name, and ``specname``.
@pytest.hookimpl(trylast=True, specname="pytest_collection_modifyitems")
def pytest_collection_modifyitems_selected(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    """Validate everything that needs no inference, so mistakes are usage errors (exit 4).

    Runs last, on the items -k and --deselect left: a run that deselects every
    gated test (``pytest -k test_tokenizer``) loads no model and no data.
    """
    try:
        _validate_selected(config, items)
    except pytest.UsageError as exc:
        _usage_error(config, items, str(exc))


class GatedSession:
    """Hooks that only a session selecting a gated test needs, so registered only
    in such a session: a wrapper around every fixture setup and every test
    report would cost each run of each project where the plugin is installed."""

    def __init__(self, state: SessionState) -> None:
        self.state = state

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_makereport(self, item: pytest.Item) -> Generator[None, Any, Any]:
        """Marks the failed gates of a test that pytest judged an expected failure
        (xfail), so the reports do not say the run failed when it did not.
        Outermost (tryfirst), it sees the report once pytest's xfail handling
        has set ``wasxfail``."""
        report = yield
        reason = getattr(report, "wasxfail", None)
        if reason is not None and report.skipped:
            for result in item.stash.get(GATE_RESULTS, ()):
                if not result.passed:
                    result.extra["xfail"] = reason or "xfail"
        return report

    @pytest.hookimpl(wrapper=True)
    def pytest_fixture_setup(self, fixturedef: Any) -> Generator[None, Any, Any]:
        """Notes why an evaluation fixture (ours, or a conftest.py's override)
        raised, so that the session's reports say the evaluation did not run,
        and why."""
        try:
            return (yield)
        except (pytest.skip.Exception, pytest.xfail.Exception):
            raise
        except BaseException as exc:
            failed = isinstance(exc, (Exception, pytest.fail.Exception))
            if failed and fixturedef.argname in EVALUATION_FIXTURES:
                # Ours arrive as pytest.fail("seqgate: ..."); a user's as they are.
                text = str(exc) if isinstance(exc, pytest.fail.Exception) else repr(exc)
                _not_evaluated(
                    self.state, f"{fixturedef.argname}: {text.removeprefix('seqgate: ')}"
                )
            raise


def _validate_selected(config: pytest.Config, items: list[pytest.Item]) -> None:
    state = _state(config)
    misspelt = _misspelt_markers(config, items)
    if misspelt:
        raise pytest.UsageError("\n".join(misspelt))
    users = [item for item in items if _uses_plugin(item)]
    if not users:
        return
    if not config.pluginmanager.has_plugin(GATED_SESSION):
        config.pluginmanager.register(GatedSession(state), GATED_SESSION)
    try:
        settings = state.settings
    except SeqgateError as exc:
        raise pytest.UsageError(f"seqgate: {exc}") from None
    from pytest_seqgate.gates import merge_gate_kwargs, parse_gates

    allow_custom = state.has_hook("pytest_seqgate_metrics")
    labels = settings.labels
    try:
        if config.option.collectonly:
            # Listing tests (an IDE's test discovery runs this on every save) loads no
            # model and no data: the files must exist, their contents wait for a run.
            _check_files_exist(state)
        else:
            if settings.eval_data is not None:
                data = state.dataset("eval_data")
                labels = labels or (data.label_names if data is not None else None)
                if data is not None:
                    # A misspelt key: one usage error now, not one error per test.
                    from pytest_seqgate.diagnostics import require_key

                    for key in settings.slice_by or ():
                        require_key(key, data.metadata, settings.source("slice_by"))
                state.dataset("train_data")
            if settings.model is not None:
                state.model()
            if labels is not None:
                settings.require_binary(len(labels))
            if settings.baseline is not None:
                from pytest_seqgate.baseline import read_report

                path = settings.existing("baseline")
                read_report(path, settings.source("baseline"), settings.display(path))
        _check_report_paths(settings)
        if settings.device != "auto":
            # The machine's devices are known now: a missing GPU is a usage error,
            # not one failure per test after collection.
            from pytest_seqgate.inference import resolve_device

            resolve_device(settings.device, settings.source("device"))
    except SeqgateError as exc:
        raise pytest.UsageError(f"seqgate: {exc}") from None
    # Every bad marker at once, each with its place: a run that stopped at the
    # first would make a user with three typos run it three times. (A
    # parametrized test's items share one marker: its error is said once.)
    problems: dict[str, None] = {}
    for item in users:
        # Markers of the module, class and function combine (closest first):
        # a module's `pytestmark` floor must not vanish from a test that adds
        # a gate of its own. Each is checked alone, so an error in a module's
        # marker is said once, at its place, not once per test.
        levels = _marker_levels(item)
        if not levels:
            continue
        valid = True
        for node, marker in levels:
            try:
                if marker.args:
                    raise ConfigError(
                        "the seqgate marker takes keyword gates only, e.g. "
                        "@pytest.mark.seqgate(min_macro_f1=0.8)"
                    )
                parse_gates(marker.kwargs, labels, allow_unknown_custom=allow_custom)
            except SeqgateError as exc:
                problems[f"{_marker_where(node, item)}: seqgate: {exc}"] = None
                valid = False
        if not valid:
            continue
        merged = merge_gate_kwargs([marker.kwargs for _, marker in levels])
        try:
            state.specs[item.nodeid] = parse_gates(
                merged, labels, allow_unknown_custom=allow_custom
            )
        except SeqgateError as exc:
            problems[f"{_where(item)}: seqgate: {exc}"] = None
            continue
        names = getattr(item, "fixturenames", None)
        if names is not None and "seqgate_evaluation" not in names:
            names.append("seqgate_evaluation")
    if problems:
        raise pytest.UsageError("\n".join(problems))


def _misspelt_markers(config: pytest.Config, items: list[pytest.Item]) -> list[str]:
    """Markers whose name is nearly ``seqgate`` (``seqgates``, ``seq_gate``): pytest
    only warns of an unknown marker, a line a CI log buries, and the test passes
    with its gates never checked.

    Each node's own markers are read once (a module's and a class's are shared
    by their tests), so a session that does not use the plugin pays a few
    attribute reads per test.
    """
    import difflib

    near: dict[str, bool] = {}
    seen: set[int] = set()
    problems: dict[str, None] = {}
    for item in items:
        node: Node | None = item
        while node is not None and id(node) not in seen:
            seen.add(id(node))
            for mark in node.own_markers:
                name = mark.name
                if name not in near:
                    near[name] = (
                        name != MARKER
                        and bool(difflib.get_close_matches(name.lower(), [MARKER], cutoff=0.75))
                        and name not in _registered_markers(config)
                    )
                if near[name]:
                    problems[
                        f"{_marker_where(node, item)}: seqgate: unknown marker `{name}` (did "
                        f"you mean `{MARKER}`?): pytest ignores an unknown marker, so these "
                        f"gates would never be checked"
                    ] = None
            node = node.parent
    return list(problems)


def _registered_markers(config: pytest.Config) -> set[str]:
    """Names registered in the ini's ``markers`` (a near name registered on
    purpose is no typo)."""
    lines = config.getini("markers")
    return {line.split(":")[0].split("(")[0].strip() for line in lines}


def _check_files_exist(state: SessionState) -> None:
    """The configured files exist (a loader hook may take specs that are not files)."""
    settings = state.settings
    hooks = {
        "model": "pytest_seqgate_load_model",
        "eval_data": "pytest_seqgate_load_dataset",
        "train_data": "pytest_seqgate_load_dataset",
    }
    for name, hook in hooks.items():
        value = getattr(settings, name)
        if value is not None and not is_import_path(value) and not state.has_hook(hook):
            settings.existing(name)


def _check_report_paths(settings: Settings) -> None:
    for path in settings.report:
        target = settings.resolve("report", str(path))
        folder = target.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if not folder.is_dir():
            raise ConfigError(
                f"{settings.source('report')}: cannot write {target}: {folder} "
                f"is a file, not a folder; choose another path"
            )
        if target.is_dir():
            raise ConfigError(
                f"{settings.source('report')}: cannot write {target}: it is a "
                f"folder; give a file name ending in .json, .md or .html"
            )
        if not os.access(folder, os.W_OK) or (target.exists() and not os.access(target, os.W_OK)):
            raise ConfigError(
                f"{settings.source('report')}: cannot write {target}: "
                f"permission denied; choose a writable path"
            )


def _guard(action: Callable[[], T]) -> T:
    """Run ``action``; show our own errors as one message, not a traceback through the
    plugin (and outside the ``except`` block, so no chained traceback either)."""
    try:
        return action()
    except SeqgateError as exc:
        message = str(exc)
    pytest.fail(f"seqgate: {message}", pytrace=False)


@pytest.fixture(scope="session")
def seqgate_model(request: pytest.FixtureRequest) -> Any:
    """The model under test; override in a conftest.py to build it in code (with
    scope="session": a function-scoped override is a new model, evaluated again,
    for each test)."""
    return _guard(_state(request.config).model)


@pytest.fixture(scope="session")
def seqgate_eval_data(request: pytest.FixtureRequest) -> Any:
    """The eval set; override to return a SequenceData or a Dataset of (sequence, label)."""
    return _guard(lambda: _state(request.config).dataset("eval_data"))


@pytest.fixture(scope="session")
def seqgate_train_data(request: pytest.FixtureRequest) -> Any:
    """The training set, or None; enables the train/test gap and leakage checks."""
    return _guard(lambda: _state(request.config).dataset("train_data"))


@pytest.fixture
def seqgate_evaluation(
    request: pytest.FixtureRequest,
    seqgate_model: Any,
    seqgate_eval_data: Any,
    seqgate_train_data: Any,
) -> Evaluation:
    """The evaluation of this test's model and data; inference runs once per
    (model, eval set, train set) however many tests use it. ``.value("recall",
    "spam")`` reads a number by the names a gate uses.

    Function-scoped on purpose: pytest would keep a session-scoped fixture's
    first value for every test, so the tests of a folder whose conftest.py
    overrides ``seqgate_model`` got the evaluation of the other folder's model
    (or the other way round, by test order). The session-wide cache is the
    plugin's own, keyed by the objects."""
    state = _state(request.config)
    params = _fixture_params(request.node)
    return _guard(
        lambda: state.evaluate(seqgate_model, seqgate_eval_data, seqgate_train_data, params)
    )


def _fixture_params(item: pytest.Item) -> dict[str, str]:
    """The parameters of a parametrized ``seqgate_model`` or ``seqgate_eval_data``
    (a conftest.py's ``params=``, or ``indirect`` parametrize) as pytest shows
    simple ones, so the reports tell the evaluations apart by them
    (``SpamGRU[gru.pt]``), not by the order they ran in."""
    callspec = getattr(item, "callspec", None)
    shown = {}
    for fixture in ("seqgate_model", "seqgate_eval_data"):
        if callspec is None or fixture not in callspec.params:
            continue
        value = callspec.params[fixture]
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            shown[fixture] = str(value)
        else:
            shown[fixture] = f"{fixture}{callspec.indices[fixture]}"
    return shown


class SeqgateHelper:
    """``seqgate.check(**gates)`` asserts gates inside a test body."""

    def __init__(self, evaluation: Evaluation, item: pytest.Item) -> None:
        self.evaluation = evaluation
        self._item = item

    def __repr__(self) -> str:
        # pytest prints a failed test's fixtures: one line, as the evaluation's.
        return f"<seqgate helper of {self.evaluation!r}>"

    @property
    def metrics(self) -> Any:
        return self.evaluation.metrics

    def check(self, **gates: Any) -> list[GateResult]:
        __tracebackhide__ = True
        from pytest_seqgate.gates import judge

        results = judge(self.evaluation, gates, "seqgate.check()", self._item.nodeid)
        _record(self._item, self.evaluation, results)
        if not all(r.passed for r in results):
            raise GateFailure(_failure_message(self._item.config, results, self._item.nodeid))
        return results


@pytest.fixture
def seqgate(request: pytest.FixtureRequest, seqgate_evaluation: Evaluation) -> SeqgateHelper:
    """A helper whose ``check(**gates)`` asserts gates in a test body."""
    return SeqgateHelper(seqgate_evaluation, request.node)


def _record(item: pytest.Item, evaluation: Evaluation, results: list[GateResult]) -> None:
    evaluation.gates.extend(results)
    item.stash.setdefault(GATE_RESULTS, []).extend(results)
    for r in results:
        item.user_properties.append(
            (
                f"seqgate.{r.label}",
                f"{'n/a' if r.value is None else r.value} {r.op} {r.threshold}: "
                f"{'pass' if r.passed else 'fail'}",
            )
        )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, Any, Any]:
    """Check the marker's gates after the test body. A body that failed keeps
    its own failure, but its gates are still judged and reported: a failed body
    assertion must not hide a gate that failed too."""
    try:
        result = yield
    except (Exception, pytest.fail.Exception):  # not a skip, nor an xfail() call
        with contextlib.suppress(Exception, pytest.fail.Exception):
            _judge_marker(item)
        raise
    _judge_marker(item, fail=True)
    return result


def _judge_marker(item: pytest.Item, fail: bool = False) -> None:
    state = item.config.stash.get(STATE, None)
    spec = state.specs.get(item.nodeid) if state is not None else None
    if spec is None:
        if item.get_closest_marker(MARKER) is not None:
            # Never a silent pass: gates that were not registered were not checked.
            pytest.fail(
                f"seqgate: the gates of {item.nodeid} were not registered at collection "
                f"(was the test added or changed by another plugin after collection?); "
                f"nothing was checked",
                pytrace=False,
            )
        return
    from pytest_seqgate.gates import check

    evaluation = item.funcargs["seqgate_evaluation"]  # type: ignore[attr-defined]
    results = _guard(lambda: check(evaluation, spec, item.nodeid))
    _record(item, evaluation, results)
    if fail and not all(r.passed for r in results):
        pytest.fail(_failure_message(item.config, results, item.nodeid), pytrace=False)


def _verbosity(config: pytest.Config) -> int:
    """``-q`` below 0, ``-v`` above (``Config.get_verbosity`` is pytest 8's; the
    plugin supports 7.4)."""
    return int(config.getoption("verbose", 0) or 0)


def _failure_message(config: pytest.Config, results: list[GateResult], test: str) -> str:
    from pytest_seqgate.gates import failure_message, where_the_report_is

    files = [_from_here(config, p) for p in _state(config).settings.report]
    return failure_message(results, test, where_the_report_is(_verbosity(config) < 0, files))


def _evaluations(config: pytest.Config) -> list[Evaluation]:
    """This process's evaluations and those merged from xdist workers, with gates in
    test-id order and findings in a fixed order, so the report does not depend on
    which worker ran which test."""
    state = config.stash.get(STATE, None)
    if state is None:
        return []
    # In name order: under xdist the workers' evaluations arrive in the order
    # the workers finish, and the reports must not depend on it.
    evaluations = sorted(
        [*state.evaluations.values(), *state.merged.values()],
        key=lambda ev: (ev.name, ev.eval_data, min((g.test for g in ev.gates), default="")),
    )
    # Two conftest.py models of one class on one eval set: told apart by number,
    # in the order of their first gated test.
    seen: dict[tuple[str, str], int] = {}
    for ev in evaluations:
        base = state.base_names.setdefault(id(ev), ev.name)  # this runs more than once
        n = seen[base, ev.eval_data] = seen.get((base, ev.eval_data), 0) + 1
        ev.name = base if n == 1 else f"{base} #{n}"
    severity = {"error": 0, "warning": 1}
    for ev in evaluations:
        ev.gates.sort(key=lambda g: g.test)
        # Exact copies of training sequences before near ones, whatever their counts.
        ev.findings.sort(
            key=lambda f: (
                severity.get(f.severity, 2),
                # Labels in the wrong order make every other number wrong: first.
                f.kind != "label_order",
                f.kind,
                f.data.get("match") == "near",
                # The widest intervals first: the terminal shows a few of a kind.
                -float(f.data.get("width") or 0.0),
                f.message,
            )
        )
    return evaluations


def pytest_sessionfinish(session: pytest.Session) -> None:
    evaluations = _evaluations(session.config)
    state = session.config.stash.get(STATE, None)
    errors = state.errors if state is not None else []
    if not evaluations and not errors:
        return
    from pytest_seqgate.distributed import is_main

    if not is_main():
        return  # under torchrun, rank 0 writes the reports
    assert state is not None
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        import pickle

        if evaluations:
            workeroutput["seqgate"] = pickle.dumps(evaluations)
        workeroutput[NOT_EVALUATED] = list(errors)
        return
    from pytest_seqgate.report import RENDER_BUG, write_reports

    try:
        settings = state.settings
    except SeqgateError:
        return  # the settings themselves were the error: no report path to trust
    paths = [settings.resolve("report", str(p)) for p in settings.report]
    # Each target on its own: a report folder that cannot be written must not cost
    # the other reports, the baseline or the step summary.
    state.written, failures = write_reports(paths, evaluations, errors)
    state.report_errors.extend(f"seqgate: cannot write report: {f}" for f in failures)
    if any(RENDER_BUG in f for f in failures):
        session.exitstatus = pytest.ExitCode.INTERNAL_ERROR
    if settings.save_baseline is not None and evaluations:
        from pytest_seqgate.report import save_baseline

        target = settings.resolve("save_baseline", settings.save_baseline)
        try:
            state.written.append(save_baseline(target, evaluations))
        except OSError as exc:
            state.report_errors.append(
                f"seqgate: cannot save the baseline ({settings.source('save_baseline')}): {exc}"
            )
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        from pytest_seqgate.report import render_markdown

        try:
            with open(summary, "a", encoding="utf-8") as handle:
                handle.write(render_markdown(evaluations, errors))
        except OSError as exc:
            state.report_errors.append(
                f"seqgate: cannot append the report to $GITHUB_STEP_SUMMARY ({summary}): "
                f"{exc.strerror or exc}"
            )
    if evaluations:
        session.config.hook.pytest_seqgate_report(evaluations=evaluations, config=session.config)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    evaluations = _evaluations(config)
    state = config.stash.get(STATE, None)
    if not evaluations and not (state is not None and state.errors):
        return
    from pytest_seqgate.distributed import is_main

    if not is_main():
        return
    assert state is not None
    tr = terminalreporter
    if not evaluations:
        # The errors themselves are above, at the tests they stopped.
        if state.written:
            files = ", ".join(_from_here(config, p) for p in state.written)
            tr.write_line(f"seqgate: the evaluation did not run; the report says why: {files}")
        for error in state.report_errors:
            tr.write_line(error, red=True)
        return
    from pytest_seqgate.report import render_terminal

    tr.write_sep("=", "seqgate report")
    styles: dict[str, dict[str, bool]] = {
        "red": {"red": True},
        "green": {"green": True},
        "yellow": {"yellow": True},
        "bold": {"bold": True},
        "": {},
    }
    for line, style in render_terminal(evaluations, _verbosity(config)):
        tr.write_line(line, **styles[style])
    for message in state.errors:
        tr.write_line(f"seqgate: an evaluation did not run: {message}", red=True)
    for path in state.written:
        tr.write_line(f"seqgate: report written to {_from_here(config, path)}")
    for error in state.report_errors:
        tr.write_line(error, red=True)

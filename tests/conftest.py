from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

pytest_plugins = ["pytester"]

# Hypothesis: a bounded profile for CI (the default), a long one for a deliberate
# run: pytest tests/test_fuzz.py --hypothesis-profile=long
settings.register_profile("ci", max_examples=60, deadline=None, derandomize=True)
settings.register_profile("long", max_examples=3000, deadline=None)
settings.load_profile("ci")

MODELS = '''
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence


class GRUClassifier(nn.Module):
    """Packs its input, so padding cannot change its answer."""

    def __init__(self, vocab=50, emb=8, hidden=16, classes=2):
        super().__init__()
        self.embedding = nn.Embedding(vocab, emb, padding_idx=0)
        self.gru = nn.GRU(emb, hidden, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, tokens, lengths):
        packed = pack_padded_sequence(self.embedding(tokens), lengths.cpu(), batch_first=True,
                                      enforce_sorted=False)
        _, h = self.gru(packed)
        return self.head(h[-1])


class FirstToken(nn.Module):
    """Predicts class (first token % classes): its outputs are known in advance."""

    def __init__(self, classes=2):
        super().__init__()
        self.classes = classes
        self.bias = nn.Parameter(torch.zeros(classes))

    def forward(self, tokens):
        return torch.nn.functional.one_hot(tokens[:, 0] % self.classes, self.classes).float() * 4 \\
            + self.bias


class BadHead(nn.Module):
    """Its Linear expects 8 features but the GRU gives 16."""

    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(50, 8)
        self.gru = nn.GRU(8, 16, batch_first=True)
        self.head = nn.Linear(8, 2)

    def forward(self, tokens):
        _, h = self.gru(self.embedding(tokens))
        return self.head(h[-1])


class PerToken(nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(50, 2)

    def forward(self, tokens):
        return self.embedding(tokens)


class NaNOnThree(FirstToken):
    def forward(self, tokens):
        out = super().forward(tokens)
        return torch.where((tokens[:, :1] == 3), torch.full_like(out, float("nan")), out)


class Unpacked(nn.Module):
    """A GRU without packing: padding changes its answer."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embedding = nn.Embedding(50, 8)
        self.gru = nn.GRU(8, 16, batch_first=True)
        self.head = nn.Linear(16, 2)

    def forward(self, tokens):
        _, h = self.gru(self.embedding(tokens))
        return self.head(h[-1])


class Counting(FirstToken):
    """Appends each forward call's batch size to the file named by $COUNT_FILE."""

    def forward(self, tokens):
        import os

        with open(os.environ["COUNT_FILE"], "a") as handle:
            handle.write(f"{tokens.shape[0]}\\n")
        return super().forward(tokens)


def counting():
    return Counting(2)


def build_gru():
    torch.manual_seed(0)
    return GRUClassifier()


def first_token():
    return FirstToken(2)


def first_token3():
    return FirstToken(3)
'''


def rule_records(
    n: int = 200,
    missed: dict[int, int] | None = None,
    classes: int = 2,
    names: tuple[str, ...] = ("ham", "spam"),
    seed: int = 0,
) -> list[dict]:
    """``n / classes`` records of each class; the FirstToken model gets all right except
    ``missed[c]`` records of true class c, which it predicts as the next class."""
    import random

    rng = random.Random(seed)
    missed = dict(missed or {})
    records = []
    for i in range(n):
        cls = i % classes
        shown = cls
        if missed.get(cls, 0) > 0:
            missed[cls] -= 1
            shown = (cls + 1) % classes
        length = rng.randint(1, 12)
        tokens = [shown + classes * rng.randint(1, 10)] + [
            rng.randint(1, 49) for _ in range(length - 1)
        ]
        records.append({"tokens": tokens, "label": names[cls]})
    return records


def token_set(lengths: Any, seed: int, classes: int = 2, dtype: Any = None) -> Any:
    """A SequenceData of random token ids (1 to 49) with these lengths, laid end
    to end, and random labels; every tensor of ``dtype`` (int64 by default)."""
    import torch

    from pytest_seqgate.data import SequenceData

    dtype = dtype or torch.int64
    gen = torch.Generator().manual_seed(seed)
    lengths = lengths.to(dtype)
    return SequenceData(
        torch.randint(1, 50, (int(lengths.sum()),), generator=gen, dtype=dtype),
        torch.cumsum(lengths, 0, dtype=dtype) - lengths,
        lengths,
        torch.randint(0, classes, (lengths.numel(),), generator=gen, dtype=dtype),
    )


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


class Project:
    """A small user project inside pytester's folder."""

    def __init__(self, pytester: pytest.Pytester) -> None:
        self.pytester = pytester
        self.path = pytester.path
        (self.path / "models.py").write_text(MODELS)

    def ini(self, **options: str | list[str]) -> None:
        lines = ["[pytest]"]
        for key, value in options.items():
            if isinstance(value, list):
                lines.append(f"seqgate_{key} =")
                lines.extend(f"    {v}" for v in value)
            else:
                lines.append(f"seqgate_{key} = {value}")
        (self.path / "pytest.ini").write_text("\n".join(lines) + "\n")

    def test(self, source: str, name: str = "test_gates.py") -> None:
        (self.path / name).write_text(textwrap.dedent(source))

    def gated(self, gates: str = "min_accuracy=0.5") -> None:
        """test_gates.py with one test, ``test_quality``, gated by ``gates``."""
        self.test(
            "# one gated test\n"
            f"import pytest\n\n@pytest.mark.seqgate({gates})\ndef test_quality():\n    pass\n"
        )

    def data(self, records: list[dict], name: str = "eval.jsonl") -> Path:
        return write_jsonl(self.path / name, records)

    def findings(self, kind: str | None = None, report: str = "r.json") -> list[dict]:
        """The first evaluation's findings in the JSON report (of one kind, if given)."""
        found = json.loads((self.path / report).read_text())["evaluations"][0]["findings"]
        return [f for f in found if kind is None or f["kind"] == kind]

    def run(self, *args: str) -> pytest.RunResult:
        """Run pytest on the project; every JSON report the run wrote must match the
        schema the package ships (so no test of any feature can drift from it)."""
        before = {p: p.stat().st_mtime_ns for p in self.path.rglob("*.json")}
        result = self.pytester.runpytest_subprocess("-p", "no:cacheprovider", *args)
        for path in self.path.rglob("*.json"):
            if before.get(path) != path.stat().st_mtime_ns:
                check_report(path)
        return result

    def python(self, code: str) -> None:
        """Run Python in the project folder, in a subprocess: torch stays out of this one."""
        import subprocess
        import sys

        subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=self.path, check=True)

    def script_model(self, factory: str = "build_gru", name: str = "model.pt") -> Path:
        """Save a TorchScript model built by models.<factory>() in the project."""
        self.python(f"import torch, models; torch.jit.script(models.{factory}()).save({name!r})")
        return self.path / name

    def state_dict(self, factory: str = "build_gru", name: str = "model.ckpt") -> Path:
        self.python(f"import torch, models; torch.save(models.{factory}().state_dict(), {name!r})")
        return self.path / name


@pytest.fixture
def project(pytester: pytest.Pytester) -> Project:
    return Project(pytester)


def schema_errors(document: Any) -> list[str]:
    """Where ``document`` breaks the shipped JSON Schema, one line each."""
    import jsonschema

    from pytest_seqgate import REPORT_SCHEMA_FILE

    validator = jsonschema.Draft202012Validator(json.loads(REPORT_SCHEMA_FILE.read_text()))
    return [
        f"{'/'.join(map(str, error.absolute_path)) or '(top)'}: {error.message}"
        for error in validator.iter_errors(document)
    ]


def check_report(path: Path) -> None:
    """Fail if ``path`` is a seqgate JSON report (or saved baseline) that does not
    match the schema; other JSON files (a hook's sink, a data file) pass."""
    from pytest_seqgate import REPORT_SCHEMA

    try:
        document = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        return
    if isinstance(document, dict) and document.get("schema") == REPORT_SCHEMA:
        errors = schema_errors(document)
        assert not errors, f"{path.name} does not match the report schema:\n" + "\n".join(
            errors[:10]
        )


def assert_lines(text: str, *patterns: str) -> None:
    """Each pattern (``*`` is the only wildcard) matches a line of ``text``, in order."""
    import re

    lines = text.splitlines()
    position = 0
    for pattern in patterns:
        regex = re.compile(".*".join(re.escape(part) for part in pattern.split("*")) + "$")
        for i in range(position, len(lines)):
            if regex.match(lines[i]):
                position = i + 1
                break
        else:
            raise AssertionError(f"no line matches {pattern!r} in:\n{text}")

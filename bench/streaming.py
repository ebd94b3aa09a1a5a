"""Peak memory and throughput of an evaluation, streaming on and off.

    python bench/streaming.py --n 2000000     # the README's figures (several minutes)
    python bench/streaming.py --quick         # 20,000 sequences, for CI

Each mode runs in a fresh subprocess, so its peak RSS is its own. The same records
as one JSON array (.json), and, where pyarrow is installed, as a .parquet file and
as an .arrow file (the stream a datasets cache writes), are read both ways too.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

CHILD = """
import json, resource, sys, time
sys.path.insert(0, {src!r})
import torch
from torch import nn
from pytest_seqgate.config import Settings
from pytest_seqgate.evaluation import evaluate
from pytest_seqgate.loading import load_dataset

class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embedding = nn.EmbeddingBag(30000, 16, padding_idx=0)
        self.head = nn.Linear(16, 2)
    def forward(self, tokens):
        return self.head(self.embedding(tokens))

streaming = {streaming}
train = {train!r}
stream_eval = {stream_eval}
stream_train = {stream_train}
settings = Settings.from_dict({folder!r}, eval_data={name!r}, labels="0,1", batch_size=256,
                              streaming=streaming, padding_check=0, bootstrap=0,
                              **({{"train_data": train}} if train else {{}}))
start = time.perf_counter()
# With a training set, the eval set streams only where asked (its near copies are
# then looked for by a pass of their own over its file).
data = None if stream_eval else load_dataset(settings, "eval_data")
train_set = load_dataset(settings, "train_data") if train and not stream_train else None
ev = evaluate(Tiny().eval(), data, settings, train_set)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"n": ev.n_samples, "seconds": seconds, "peak_kib": peak,
                  "accuracy": ev.metrics.value("accuracy"),
                  "train": [ev.train_sample, ev.train_gaps,
                            [f.message for f in ev.findings if f.kind == "leakage"]]}}))
"""


def write_jsonl(path: Path, n: int, seed: int = 0, copied: list[str] = ()) -> None:
    """``n`` records of lognormal lengths (median 40 tokens), then the lines ``copied``."""
    rng = random.Random(seed)
    with path.open("w") as handle:
        handle.writelines(copied)
        for i in range(n):
            length = max(1, min(200, int(rng.lognormvariate(3.7, 0.5))))
            tokens = [rng.randrange(1, 30000) for _ in range(length)]
            handle.write(json.dumps({"tokens": tokens, "label": i % 2}) + "\n")


def near_copies(jsonl: Path, every: int) -> list[str]:
    """Every ``every``-th record of ``jsonl``, a token added: a near copy (Jaccard
    at least 0.9 from 10 tokens on)."""
    with jsonl.open() as lines:
        records = [json.loads(line) for i, line in enumerate(lines) if i % every == 0]
    return [json.dumps({**r, "tokens": [*r["tokens"], 7]}) + "\n" for r in records]


def write_array(jsonl: Path, path: Path) -> None:
    """The same records as one JSON array, a record a line (``json.dump`` of a list
    writes one line; the parser reads either the same way)."""
    with jsonl.open() as lines, path.open("w") as out:
        out.write("[\n")
        for i, line in enumerate(lines):
            out.write((",\n" if i else "") + line.rstrip("\n"))
        out.write("\n]\n")


def write_parquet(jsonl: Path, path: Path) -> bool:
    """The same records as a Parquet file (False without pyarrow)."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return False
    schema = pa.schema([("tokens", pa.list_(pa.int64())), ("label", pa.int64())])
    with jsonl.open() as handle, pq.ParquetWriter(path, schema) as writer:
        while True:  # 100,000 records at a time: the parent holds no more
            records = [json.loads(line) for _, line in zip(range(100_000), handle)]
            if not records:
                return True
            columns = {key: [r[key] for r in records] for key in ("tokens", "label")}
            writer.write_table(pa.table(columns, schema=schema))


def write_arrow(parquet: Path, path: Path) -> None:
    """The same records as an Arrow stream (the file a datasets cache and
    save_to_disk write), a row group at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    source = pq.ParquetFile(parquet)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, source.schema_arrow) as out:
        for batch in source.iter_batches(batch_size=100_000):
            out.write_batch(batch)


def run(
    folder: Path,
    streaming: bool,
    name: str,
    train: str | None = None,
    stream_eval: bool = False,
    stream_train: bool = True,
) -> dict[str, Any]:
    code = CHILD.format(
        src=str(ROOT / "src"),
        streaming=streaming,
        folder=str(folder),
        name=name,
        train=train,
        stream_eval=streaming and (stream_eval or not train),
        stream_train=streaming and stream_train,
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> list[list[object]]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=2_000_000)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    return measure(20_000 if args.quick else args.n)


def measure(n: int) -> list[list[object]]:
    rows: list[list[object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        start = time.perf_counter()
        write_jsonl(folder / "eval.jsonl", n)
        size = (folder / "eval.jsonl").stat().st_size
        print(
            f"wrote {n:,} sequences ({size / 2**20:.0f} MiB) in {time.perf_counter() - start:.0f}s",
            file=sys.stderr,
        )
        write_array(folder / "eval.jsonl", folder / "eval.json")
        names = ["eval.jsonl", "eval.json"]
        if write_parquet(folder / "eval.jsonl", folder / "eval.parquet"):
            write_arrow(folder / "eval.parquet", folder / "eval.arrow")
            names += ["eval.parquet", "eval.arrow"]
        results = {
            f"{mode}, {name.split('.')[-1]}": run(folder, mode == "streaming", name)
            for name in names
            for mode in ("in memory", "streaming")
        }
        assert len({r["accuracy"] for r in results.values()}) == 1
        # A training set of the n records, beside an eval set of n / 100 others and
        # 20 of its records (exact copies, for the leakage check to find).
        with (folder / "eval.jsonl").open() as lines:
            copied = [line for i, line in zip(range(20 * 997), lines) if i % 997 == 0]
        write_jsonl(folder / "small.jsonl", max(n // 100, 1000), seed=1, copied=copied)
        trained = {
            f"training set {mode}, jsonl": run(
                folder, mode != "read whole", "small.jsonl", "eval.jsonl", "eval set" in mode
            )
            for mode in ("read whole", "streamed", "and eval set streamed")
        }
        # The same sample, gap and leaks (exact and near copies) every way.
        assert len({json.dumps(r["train"]) for r in trained.values()}) == 1
        # A large streamed eval set's near copies (n / 2 records: more than one
        # window of its search) of a training set of 0.15 n, in memory or
        # streamed; sequences/s counts the eval set's.
        with (folder / "eval.jsonl").open() as lines, (folder / "part.jsonl").open("w") as out:
            out.writelines(line for _, line in zip(range(max(n * 15 // 100, 1000)), lines))
        copies = near_copies(folder / "part.jsonl", 100)
        write_jsonl(folder / "large.jsonl", n // 2, seed=3, copied=copies)
        large = {
            f"eval set streamed, training set of {n * 15 // 100:,} {mode}, jsonl": run(
                folder, True, "large.jsonl", "part.jsonl", True, mode == "streamed"
            )
            for mode in ("in memory", "streamed")
        }
        assert len({json.dumps(r["train"]) for r in large.values()}) == 1
        for mode, r in {**results, **trained, **large}.items():
            count = r["n"] if mode in large else n
            rows.append(
                [
                    mode,
                    f"{count:,}",
                    f"{r['peak_kib'] / 1024:.0f}",
                    f"{count / r['seconds']:,.0f}",
                    f"{r['seconds']:.1f}",
                ]
            )
    return rows


# A training set's rows: the training set's records, and its records per second.
HEADERS = ["mode", "sequences", "peak RSS (MiB)", "sequences/s", "seconds"]

if __name__ == "__main__":
    from tabulate import tabulate

    print(tabulate(main(), headers=HEADERS, tablefmt="github", disable_numparse=True))

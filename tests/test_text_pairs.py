"""Text pairs: a record's ``token_type_ids``, or the segments a tokenizer gives a
``text_pair`` with its ``text``, reach a model whose forward takes them."""

from __future__ import annotations

import importlib.util
import json
import random
import textwrap
from pathlib import Path

import pytest
import torch

from pytest_seqgate.batching import collate
from pytest_seqgate.cache import data_digest
from pytest_seqgate.data import SequenceData
from pytest_seqgate.exceptions import DataError
from pytest_seqgate.loading import read_csv, read_jsonl

PAIR_MODEL = '''
import torch
from torch import nn


class PairModel(nn.Module):
    """Predicts the segment of each pair's last real token: a second text (segment 1)
    is "spam". Right on every record when given the segments; given none (every
    step segment 0, as BERT defaults them), it calls every record "ham"."""

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        last = attention_mask.sum(1) - 1
        segment = token_type_ids.gather(1, last[:, None]).squeeze(1).clamp_max(1)
        return nn.functional.one_hot(segment, 2).float()


def pair_model():
    return PairModel()
'''


def pair_records(n: int, seed: int = 0, padded: bool = True) -> list[dict]:
    """Tokenized pairs as a BERT tokenizer gives them: [CLS] a [SEP] (b [SEP]) with
    segments 0 then 1; a "spam" record has a second text. With ``padded``, some
    are padded to a fixed width with an attention mask, as ``padding=True`` gives."""
    rng = random.Random(seed)
    records = []
    for i in range(n):
        spam = i % 2
        ids = [101] + [rng.randint(1000, 1999) for _ in range(rng.randint(1, 6))] + [102]
        types = [0] * len(ids)
        if spam:
            second = [rng.randint(1000, 1999) for _ in range(rng.randint(1, 6))] + [102]
            ids, types = ids + second, types + [1] * len(second)
        mask = [1] * len(ids)
        if padded and i % 3 == 0:
            pad = 16 - len(ids)
            ids, types, mask = ids + [0] * pad, types + [0] * pad, mask + [0] * pad
        records.append(
            {
                "input_ids": ids,
                "token_type_ids": types,
                "attention_mask": mask,
                "label": ["ham", "spam"][spam],
            }
        )
    return records


TESTS = """
import pytest

@pytest.mark.seqgate(min_recall={"spam": 0.99}, min_accuracy=0.99)
def test_pairs():
    pass
"""


def test_a_pair_models_segments_reach_it_from_every_format(project):
    """The segments were kept as metadata and never given to the model: a BERT
    model of sentence pairs read every pair as one text (here: recall of spam 0).
    Now a forward that takes ``token_type_ids`` gets them, padded and cut as the
    tokens are, read whole or streamed, from .jsonl, .csv and .parquet; a model
    whose forward takes none is called as before."""
    (project.path / "pairs.py").write_text(textwrap.dedent(PAIR_MODEL))
    records = pair_records(300)
    project.data(records)
    rows = [
        {k: " ".join(map(str, v)) if isinstance(v, list) else v for k, v in r.items()}
        for r in records
    ]
    header = list(rows[0])
    (project.path / "eval.csv").write_text(
        ",".join(header) + "\n" + "".join(",".join(r[k] for k in header) + "\n" for r in rows)
    )
    project.data(pair_records(200, seed=5), name="train.jsonl")  # a sample of it, streamed too
    project.ini(
        model="pairs:pair_model",
        eval_data="eval.jsonl",
        train_data="train.jsonl",
        train_sample="50",
        labels=["ham", "spam"],
        columns="tokens=input_ids",
        report="r.json",
        batch_size="8",
    )
    project.test(TESTS)
    for data in ("eval.jsonl", "eval.csv"):
        result = project.run(f"--seqgate-eval-data={data}")
        result.assert_outcomes(passed=1)
        assert "300 samples, accuracy 1.000" in result.stdout.str()
        in_memory = json.loads((project.path / "r.json").read_text())
        assert in_memory["evaluations"][0]["metrics"]["per_class"]["spam"]["recall"] == 1.0
        assert in_memory["evaluations"][0]["train_metrics"]["accuracy"] == 1.0
        result = project.run("--seqgate-streaming", f"--seqgate-eval-data={data}")
        result.assert_outcomes(passed=1)
        assert json.loads((project.path / "r.json").read_text()) == in_memory, data
    if importlib.util.find_spec("pyarrow") is not None:  # (the extra 'parquet')
        project.python(
            f"""
            import pyarrow as pa, pyarrow.parquet as pq
            records = {records!r}
            pq.write_table(pa.table({{k: [r[k] for r in records] for k in records[0]}}),
                           "eval.parquet", row_group_size=100)
            """
        )
        for mode in ("--seqgate-no-streaming", "--seqgate-streaming"):
            project.run(mode, "--seqgate-eval-data=eval.parquet").assert_outcomes(passed=1)
    # A model that takes no token_type_ids reads the same set as before: the
    # segments are not forced on it (a TypeError would error both tests; here the
    # evaluation runs, the CLI gate passes and the marker's fails on its answers).
    result = project.run("--seqgate-model=models:first_token", "--seqgate-gates=accuracy >= 0")
    result.assert_outcomes(passed=1, failed=1)
    assert "TypeError" not in result.stdout.str()


def test_token_type_ids_are_read_beside_the_tokens_and_padded_with_zero(tmp_path: Path) -> None:
    records = pair_records(6)
    records[1].pop("token_type_ids")  # a record without them: segment 0 throughout
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    data = read_jsonl(path, ("ham", "spam"), column_of={"tokens": "input_ids"})
    assert data.token_type_ids is not None and "token_type_ids" not in data.metadata
    for i, record in enumerate(records):
        real = sum(record["attention_mask"])  # the mask cut both to the real steps
        start, length = int(data.offsets[i]), int(data.lengths[i])
        assert length == real
        expected = record.get("token_type_ids", [0] * real)[:real]
        assert data.token_type_ids[start : start + length].tolist() == expected
    batch = collate(data, torch.arange(len(data)))
    assert batch.token_type_ids is not None
    assert batch.token_type_ids.shape == batch.inputs.shape
    assert int(batch.token_type_ids[batch.padding].abs().sum()) == 0
    assert (
        batch.token_type_ids[5, : int(data.lengths[5])].tolist()
        == records[5]["token_type_ids"][: int(data.lengths[5])]
    )
    sample = data.subset(torch.tensor([5, 0]))
    assert sample.token_type_ids is not None
    assert sample.token_type_ids.tolist() == (
        records[5]["token_type_ids"] + records[0]["token_type_ids"][: int(data.lengths[0])]
    )
    # The prediction cache's key of a set built in code reads them.
    other = data.subset(torch.arange(len(data)))
    assert data_digest(other) == data_digest(data)
    assert other.token_type_ids is not None
    other.token_type_ids[0] = 1
    assert data_digest(other) != data_digest(data)
    # A set without them batches without them.
    plain = read_jsonl(path, ("ham", "spam"), column_of={"tokens": "input_ids"})
    plain.token_type_ids = None
    assert collate(plain, torch.arange(2)).token_type_ids is None
    # A CSV file's, space separated or as a JSON list.
    table = tmp_path / "p.csv"
    table.write_text('tokens,token_type_ids,label\n1 2 3,0 0 1,spam\n4 5,"[0, 0]",ham\n')
    assert read_csv(table).token_type_ids.tolist() == [0, 0, 1, 0, 0]


@pytest.mark.parametrize(
    "record, said",
    [
        (
            {"tokens": [1, 2, 3], "token_type_ids": [0, 1], "label": "ham"},
            "p.jsonl:1: 'token_type_ids' has 2 values but 'tokens' has 3 steps: one per token",
        ),
        (
            {"features": [[0.5], [1.0]], "token_type_ids": [0, 1], "label": "ham"},
            "p.jsonl:1: 'token_type_ids' go with 'tokens' (the ids a tokenizer gave with them), "
            "not with 'features': drop them",
        ),
        (
            {"tokens": [1, 2], "token_type_ids": "0 1", "label": "ham"},
            "p.jsonl:1: 'token_type_ids' must be a list of integers, one per token, but got str",
        ),
        (
            {"tokens": [1, 2], "token_type_ids": [0, "a"], "label": "ham"},
            "p.jsonl:1: 'token_type_ids' must be a list of integers, but holds 'a'",
        ),
        (
            {"tokens": [1, 2], "token_type_ids": [0, -1], "label": "ham"},
            "p.jsonl:1: this sequence (offset 0, length 2, label 0) is malformed: token type "
            "ids are segment indices, from 0",
        ),
    ],
)
def test_bad_token_type_ids_name_the_record(tmp_path: Path, record: dict, said: str) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps(record) + "\n")
    with pytest.raises(DataError) as info:
        read_jsonl(path, ("ham", "spam"), display="p.jsonl")
    assert str(info.value).startswith(said)


def test_a_set_built_in_code_gives_token_type_ids_aligned_with_its_tokens() -> None:
    values = torch.tensor([1, 2, 3, 4])
    made = SequenceData(
        values=values,
        offsets=torch.tensor([0, 2]),
        lengths=torch.tensor([2, 2]),
        labels=torch.tensor([0, 1]),
        token_type_ids=torch.tensor([0, 0, 0, 1], dtype=torch.int32),
    )
    assert made.token_type_ids is not None and made.token_type_ids.dtype == torch.int64
    with pytest.raises(DataError, match=r"token_type_ids must be integers aligned with the "):
        SequenceData(
            values=values,
            offsets=torch.tensor([0, 2]),
            lengths=torch.tensor([2, 2]),
            labels=torch.tensor([0, 1]),
            token_type_ids=torch.tensor([0, 1]),
        )


def pair_tokenizer(folder: Path) -> Path:
    """A tokenizer.json that encodes a pair as BERT's does: [CLS] a [SEP] b [SEP],
    segments 0 then 1 (a single text: [CLS] a [SEP], all 0)."""
    tokenizers = pytest.importorskip("tokenizers")
    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "hello": 4, "big": 5, "world": 6}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.post_processor = tokenizers.processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 2), ("[SEP]", 3)],
    )
    path = folder / "tokenizer.json"
    tok.save(str(path))
    return path


def test_text_pairs_are_encoded_together_with_their_segments(project):
    """A record's ``text_pair`` (GLUE's ``sentence2``, mapped with seqgate_columns)
    is encoded with its text as ``tokenizer(text, text_pair)`` encodes a pair, and
    the segments the tokenizer gives reach the model: it was metadata, and each
    record's first text was scored alone."""
    pair_tokenizer(project.path)
    (project.path / "pairs.py").write_text(textwrap.dedent(PAIR_MODEL))
    words = ["hello", "big", "world"]
    rng = random.Random(0)
    records = []
    for i in range(200):
        record = {"sentence1": " ".join(rng.choices(words, k=rng.randint(1, 5))), "idx": i}
        if i % 2:
            record["sentence2"] = " ".join(rng.choices(words, k=rng.randint(1, 5)))
        records.append({**record, "label": ["ham", "spam"][i % 2]})
    project.data(records)
    project.ini(
        model="pairs:pair_model",
        eval_data="eval.jsonl",
        labels=["ham", "spam"],
        tokenizer="tokenizer.json",
        columns=["text = sentence1", "text_pair = sentence2"],
        report="r.json",
        slice_by="idx",
    )
    project.test(TESTS)
    for mode in ("--seqgate-no-streaming", "--seqgate-streaming"):
        result = project.run(mode)
        result.assert_outcomes(passed=1)
        assert "200 samples, accuracy 1.000" in result.stdout.str(), mode


def test_a_pair_is_encoded_as_the_tokenizer_encodes_it(tmp_path: Path) -> None:
    from tokenizers import Tokenizer

    from pytest_seqgate.config import Settings
    from pytest_seqgate.loading import load_dataset

    tok = Tokenizer.from_file(str(pair_tokenizer(tmp_path)))
    records = [
        {"text": "hello big", "text_pair": "world hello", "label": "spam", "id": 1},
        {"text": "world", "label": "ham", "id": 2},
    ]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    settings = Settings.from_dict(tmp_path, eval_data="p.jsonl", tokenizer="tokenizer.json")
    data = load_dataset(settings, "eval_data")
    both = tok.encode("hello big", "world hello")
    assert data[0][0].tolist() == both.ids == [2, 4, 5, 3, 6, 4, 3]
    assert data.token_type_ids is not None
    assert data.token_type_ids.tolist() == [*both.type_ids, 0, 0, 0]
    assert set(data.metadata) == {"id"}  # the pair is read, not kept as metadata
    # A Hugging Face tokenizer's way: called with both texts, a dict of ids and segments.
    (tmp_path / "hf_like.py").write_text(
        "def tokenize(text, text_pair=None):\n"
        "    ids = [2] + [len(w) for w in text.split()] + [3]\n"
        "    types = [0] * len(ids)\n"
        "    if text_pair is not None:\n"
        "        more = [len(w) for w in text_pair.split()] + [3]\n"
        "        ids, types = ids + more, types + [1] * len(more)\n"
        "    return {'input_ids': ids, 'token_type_ids': types, 'attention_mask': [1] * len(ids)}\n"
        "def one_text(text):\n"
        "    return [len(w) for w in text.split()]\n"
    )
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        hf_like = Settings.from_dict(tmp_path, eval_data="p.jsonl", tokenizer="hf_like:tokenize")
        data = load_dataset(hf_like, "eval_data")
        assert data.token_type_ids is not None
        assert data.token_type_ids.tolist() == [0, 0, 0, 0, 1, 1, 1, 0, 0, 0]
        one = Settings.from_dict(tmp_path, eval_data="p.jsonl", tokenizer="hf_like:one_text")
        with pytest.raises(DataError) as info:
            load_dataset(one, "eval_data")
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("hf_like", None)
    assert str(info.value).startswith("p.jsonl:1: the tokenizer hf_like:one_text raised TypeError")
    assert str(info.value).endswith(
        "; a record with 'text_pair' needs a tokenizer that takes two texts: a tokenizer.json, "
        "a Hugging Face tokenizer, or a callable(text, text_pair)"
    )


BERT_PAIRS = """
import random
import torch
from transformers import BertConfig, BertForSequenceClassification


def build():
    torch.manual_seed(0)
    config = BertConfig(vocab_size=40, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, num_labels=2,
                        max_position_embeddings=64, type_vocab_size=2, pad_token_id=0)
    model = BertForSequenceClassification(config).eval()
    with torch.no_grad():  # weights large enough that its answers vary with the input
        for weight in model.parameters():
            if weight.dim() == 2:
                weight.normal_(0, 0.5)
    return model


def pairs():
    rng = random.Random(0)
    for _ in range(120):
        first = [2] + [rng.randint(5, 39) for _ in range(rng.randint(1, 8))] + [3]
        second = [rng.randint(5, 39) for _ in range(rng.randint(1, 8))] + [3]
        yield first + second, [0] * len(first) + [1] * len(second)


def alone(model, ids, types):
    # One pair alone, unpadded, as a user's own loop would score it.
    with torch.inference_mode():
        given = None if types is None else torch.tensor([types])
        return int(model(torch.tensor([ids]), token_type_ids=given).logits.argmax(1))


def records():
    # Each pair labelled with the model's answer given its segments.
    model = build()
    return [{"tokens": ids, "token_type_ids": types, "label": alone(model, ids, types)}
            for ids, types in pairs()]
"""


def test_a_bert_of_sentence_pairs_scores_as_its_own_loop_with_segments(project):
    if importlib.util.find_spec("transformers") is None:
        pytest.skip("needs transformers (not a test dependency)")
    (project.path / "bert_pairs.py").write_text(BERT_PAIRS)
    project.python(
        """
        import json, bert_pairs
        model, records = bert_pairs.build(), bert_pairs.records()
        with open("eval.jsonl", "w") as f:
            f.writelines(json.dumps(r) + "\\n" for r in records)
        blind = [bert_pairs.alone(model, r["tokens"], None) for r in records]
        json.dump(sum(p == r["label"] for p, r in zip(blind, records)), open("blind.json", "w"))
        """
    )
    project.ini(
        model="bert_pairs:build",
        eval_data="eval.jsonl",
        labels=["a", "b"],
        report="r.json",
        batch_size="16",
    )
    project.test("""
        import pytest

        @pytest.mark.seqgate(min_accuracy=0.0, fail_on_paradox=False)
        def test_runs():
            pass
    """)
    project.run().assert_outcomes(passed=1)
    # Given the segments, the plugin's batched, padded pass answers as each pair
    # alone does; without them (every segment 0) a third of the answers change.
    ev = json.loads((project.path / "r.json").read_text())["evaluations"][0]
    assert ev["metrics"]["accuracy"] == 1.0
    assert json.loads((project.path / "blind.json").read_text()) < 100


def test_a_tokenized_table_is_read_whole_as_its_records_are(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tokenized Hugging Face set's layout (input_ids, token_type_ids and an
    attention_mask beside them) was read a record at a time, 14x slower than
    its ids alone taken whole from Arrow's buffers; the three columns are now
    taken whole too, the ids and segments cut by the mask as a record's are."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    from pytest_seqgate.config import Settings
    from pytest_seqgate.loading import _Builder, load_dataset

    records = pair_records(300)  # a third padded with a mask, some left-padded below
    for record in records[1::7]:
        pad = 3
        for key in ("input_ids", "token_type_ids", "attention_mask"):
            record[key] = [0] * pad + record[key]
    columns = {k: [r[k] for r in records] for k in records[0]}
    columns["idx"] = list(range(len(records)))
    pq.write_table(pa.table(columns), tmp_path / "p.parquet", row_group_size=64)
    (tmp_path / "p.jsonl").write_text(
        "".join(json.dumps({**r, "idx": i}) + "\n" for i, r in enumerate(records))
    )
    common = {"labels": "ham,spam", "columns": "tokens=input_ids"}
    by_record = load_dataset(
        Settings.from_dict(tmp_path, eval_data="p.jsonl", **common), "eval_data"
    )

    def one_at_a_time(*args: object) -> None:
        raise AssertionError("read a record at a time")

    monkeypatch.setattr(_Builder, "add", one_at_a_time)
    whole = load_dataset(Settings.from_dict(tmp_path, eval_data="p.parquet", **common), "eval_data")
    for field in ("values", "lengths", "offsets", "labels", "token_type_ids"):
        assert torch.equal(getattr(whole, field), getattr(by_record, field)), field
    assert whole.metadata == {"idx": list(range(300))}
    assert sum(whole.lengths.tolist()) == sum(sum(r["attention_mask"]) for r in records)
    # A mask of other values, or lists of other lengths, go a record at a time,
    # whose checks name the row.
    monkeypatch.undo()
    bad = dict(columns, attention_mask=[[2] * len(m) for m in columns["attention_mask"]])
    pq.write_table(pa.table(bad), tmp_path / "b.parquet")
    with pytest.raises(DataError, match=r"^b.parquet\[0\]: 'attention_mask' holds 2"):
        load_dataset(Settings.from_dict(tmp_path, eval_data="b.parquet", **common), "eval_data")
    short = dict(columns, token_type_ids=[t[:-1] for t in columns["token_type_ids"]])
    pq.write_table(pa.table(short), tmp_path / "s.parquet")
    with pytest.raises(DataError, match=r"^s.parquet\[0\]: 'token_type_ids' has \d+ values"):
        load_dataset(Settings.from_dict(tmp_path, eval_data="s.parquet", **common), "eval_data")


def test_a_pt_file_keeps_its_token_type_ids(tmp_path: Path) -> None:
    """``tokenizer(a, b, padding=True, return_tensors="pt")`` saved with labels: the
    segments are cut by the mask as the ids are (they were dropped)."""
    from pytest_seqgate.loading import read_pt

    records = pair_records(40)
    width = max(len(r["input_ids"]) for r in records)

    def padded(key: str) -> torch.Tensor:
        return torch.tensor([r[key] + [0] * (width - len(r[key])) for r in records])

    labels = [r["label"] for r in records]
    torch.save(
        {
            "sequences": padded("input_ids"),
            "attention_mask": padded("attention_mask"),
            "token_type_ids": padded("token_type_ids"),
            "labels": labels,
        },
        tmp_path / "p.pt",
    )
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    expected = read_jsonl(path, ("ham", "spam"), column_of={"tokens": "input_ids"})
    data = read_pt(tmp_path / "p.pt", ("ham", "spam"))
    for field in ("values", "lengths", "labels", "token_type_ids"):
        assert torch.equal(getattr(data, field), getattr(expected, field)), field
    # Unpadded: one list of segments a sequence.
    real = [
        [x for x, m in zip(r[key], r["attention_mask"], strict=True) if m]
        for r in records
        for key in ("input_ids", "token_type_ids")
    ]
    torch.save(
        {
            "sequences": [torch.tensor(ids) for ids in real[0::2]],
            "token_type_ids": [torch.tensor(types) for types in real[1::2]],
            "labels": labels,
        },
        tmp_path / "u.pt",
    )
    data = read_pt(tmp_path / "u.pt", ("ham", "spam"))
    assert torch.equal(data.token_type_ids, expected.token_type_ids)
    torch.save(
        {"sequences": padded("input_ids"), "token_type_ids": padded("token_type_ids")[:, :3]}
        | {"labels": labels},
        tmp_path / "b.pt",
    )
    with pytest.raises(DataError) as info:
        read_pt(tmp_path / "b.pt", ("ham", "spam"), display="b.pt")
    assert str(info.value) == (
        "b.pt: 'token_type_ids' must be laid out as the token ids in 'sequences' are (an "
        "integer tensor of the same shape, or one list of segments per sequence), but it is "
        "int64[40, 3]"
    )

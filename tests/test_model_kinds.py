"""Beyond token GRUs: a Hugging Face BERT (attention_mask, .logits) and float features."""

from __future__ import annotations

import importlib.util
import json
import random

import pytest

HF_MODEL = """
import torch
from transformers import BertConfig, BertForSequenceClassification

WORDS = ["[PAD]", "[UNK]", "free", "win", "prize", "call", "now", "hi", "lunch", "see", "you",
         "later", "mum", "ok", "thanks"]


def build():
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(WORDS), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, num_labels=2,
                        max_position_embeddings=64, pad_token_id=0)
    model = BertForSequenceClassification(config)
    # Make it a real classifier without training: spam words push towards class 1.
    with torch.no_grad():
        emb = model.bert.embeddings.word_embeddings.weight
        emb.zero_()
        emb[2:7, 0] = 4.0
        model.bert.embeddings.position_embeddings.weight.zero_()
        model.bert.embeddings.token_type_embeddings.weight.zero_()
    return model


def encode(text):
    index = {w: i for i, w in enumerate(WORDS)}
    return [index.get(w, 1) for w in text.lower().split()]
"""


def needs_transformers() -> None:
    """Skip without transformers, found without importing it: pytester's in-process
    runs import it and drop it again, and a second import of its extensions fails."""
    if importlib.util.find_spec("transformers") is None:
        pytest.skip("needs transformers (not a test dependency)")


def test_tiny_bert_through_the_plugin(project):
    needs_transformers()
    (project.path / "hf.py").write_text(HF_MODEL)
    rng = random.Random(0)
    spam = ["free", "win", "prize", "call", "now"]
    ham = ["hi", "lunch", "see", "you", "later", "mum", "ok", "thanks"]
    records = []
    for i in range(120):
        words = spam if i % 3 == 0 else ham
        text = " ".join(rng.choice(words) for _ in range(rng.randint(2, 9)))
        records.append({"text": text, "label": "spam" if i % 3 == 0 else "ham"})
    project.data(records)
    project.ini(
        model="hf:build",
        eval_data="eval.jsonl",
        labels=["ham", "spam"],
        tokenizer="hf:encode",
        report="r.json",
    )
    project.test("""
        import pytest

        @pytest.mark.seqgate(min_accuracy=0.0, fail_on_paradox=False)
        def test_bert_runs():
            pass
    """)
    result = project.run()
    result.assert_outcomes(passed=1)
    ev = json.loads((project.path / "r.json").read_text())["evaluations"][0]
    assert ev["n_samples"] == 120
    # The attention mask is applied: padding does not change BERT's answers.
    assert not [f for f in ev["findings"] if f["kind"] == "padding_sensitivity"]


def test_a_save_pretrained_folder_is_the_model(project):
    """``seqgate_model`` names the folder ``save_pretrained`` wrote: the model is
    loaded from it with transformers, its ``id2label`` names the classes, and no
    progress bar of the loading lands in the output."""
    needs_transformers()
    (project.path / "hf.py").write_text(HF_MODEL)
    project.python(
        """
        import hf
        model = hf.build()
        model.config.id2label = {0: "ham", 1: "spam"}
        model.config.label2id = {"ham": 0, "spam": 1}
        model.save_pretrained("checkpoints/model")
        """
    )
    project.data(  # spam words (ids 2 to 6) for every third record, ham words else
        [
            {"tokens": [2 + i % 5] * 3, "label": "spam"}
            if i % 3 == 0
            else {"tokens": [7 + i % 8] * 2, "label": "ham"}
            for i in range(60)
        ]
    )
    project.ini(model="checkpoints/model", eval_data="eval.jsonl", report="r.json")
    project.test(
        """
        import pytest

        @pytest.mark.seqgate(min_accuracy=0.9)
        def test_bert_folder():
            pass
        """
    )
    result = project.run()
    result.assert_outcomes(passed=1)
    assert "Loading weights" not in result.stdout.str() + result.stderr.str()
    ev = json.loads((project.path / "r.json").read_text())["evaluations"][0]
    assert ev["labels"] == ["ham", "spam"] and ev["n_samples"] == 60


FEATURE_MODEL = """
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence


class FeatureGRU(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.gru = nn.GRU(3, 8, batch_first=True)
        self.head = nn.Linear(8, 2)

    def forward(self, x, lengths):
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, h = self.gru(packed)
        return self.head(h[-1])


def build():
    return FeatureGRU()
"""


def test_float_feature_sequences_through_a_gru(project):
    (project.path / "feat.py").write_text(FEATURE_MODEL)
    rng = random.Random(1)
    records = []
    for i in range(90):
        steps = rng.randint(1, 30)
        records.append(
            {
                "features": [[rng.gauss(0, 1) for _ in range(3)] for _ in range(steps)],
                "label": i % 2,
                "sensor": "a" if i < 45 else "b",
            }
        )
    project.data(records)
    project.ini(
        model="feat:build",
        eval_data="eval.jsonl",
        labels=["still", "moving"],
        report="r.json",
        slice_by="sensor",
    )
    project.test("""
        import pytest

        @pytest.mark.seqgate(min_accuracy=0.0, fail_on_paradox=False, slice="sensor=a")
        def test_features():
            pass
    """)
    project.run().assert_outcomes(passed=1)
    ev = json.loads((project.path / "r.json").read_text())["evaluations"][0]
    assert ev["n_samples"] == 90
    assert {s["name"] for s in ev["slices"]} >= {"sensor=a", "sensor=b"}
    assert not [f for f in ev["findings"] if f["kind"] == "padding_sensitivity"]
    assert ev["gates"][0]["reason"] == "on slice sensor=a (45 samples)"


CONFIGURED_MODEL = """
from types import SimpleNamespace

import torch
from torch import nn


class Configured(nn.Module):
    # As a Hugging Face model holds its classes: config.id2label, in output order.
    def __init__(self):
        super().__init__()
        self.config = SimpleNamespace(id2label={0: "spam", 1: "ham", 2: "eggs"})
        self.bias = nn.Parameter(torch.zeros(3))

    def forward(self, tokens):
        odd = (tokens[:, 0] % 2).float()
        return torch.stack([odd * 4, (1 - odd) * 4, odd * 0], 1) + self.bias


def build():
    return Configured()
"""


def test_a_models_config_id2label_names_its_classes_without_seqgate_labels(project):
    """Without seqgate_labels the eval set's names were sorted, ('ham', 'spam'), and
    read as this model's outputs 0 and 1, which are 'spam' and 'ham': every
    answer counted wrong. The model's config.id2label gives the order, and the
    class the eval set lacks."""
    (project.path / "configured.py").write_text(CONFIGURED_MODEL)
    records = [{"tokens": [3 + 2 * (i % 5), 4], "label": "spam"} for i in range(30)]
    records += [{"tokens": [2 + 2 * (i % 5)], "label": "ham"} for i in range(30)]
    project.data(records)
    project.ini(model="configured:build", eval_data="eval.jsonl", report="r.json")
    project.gated('min_recall={"spam": 0.9, "ham": 0.9}, min_accuracy=0.99')
    project.run().assert_outcomes(passed=1)
    ev = json.loads((project.path / "r.json").read_text())["evaluations"][0]
    assert ev["labels"] == ["spam", "ham", "eggs"]
    assert ev["confusion_matrix"] == [[30, 0, 0], [0, 30, 0], [0, 0, 0]]
    assert [f["kind"] for f in ev["findings"] if f["kind"] == "label_order"] == []

"""The prediction loop as plain Python: conventions, outputs, order, packing, OOM."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from pytest_seqgate.batching import SAMPLE_LENGTHS, Batch, padded_rows, padded_sample
from pytest_seqgate.batching import _pad as REAL_PAD
from pytest_seqgate.config import Settings
from pytest_seqgate.data import SequenceData
from pytest_seqgate.evaluation import evaluate
from pytest_seqgate.exceptions import ConfigError, ModelError
from pytest_seqgate.inference import (
    Predictions,
    calling_convention,
    predict,
    resolve_device,
    scores_alone,
)

from conftest import token_set

CPU = torch.device("cpu")


class PackedGRU(nn.Module):
    def __init__(self, features: int | None = None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embedding = nn.Embedding(100, 8) if features is None else None
        self.gru = nn.GRU(features or 8, 16, batch_first=True)
        self.head = nn.Linear(16, 3)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = self.embedding(tokens) if self.embedding is not None else tokens
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, h = self.gru(packed)
        return self.head(h[-1])


class Bag(nn.Module):
    """Embedding sum and a small MLP: Linear layers for autocast to act on, and
    no op in its forward that waits for a GPU."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embedding = nn.Embedding(100, 32, padding_idx=0)
        self.head = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 3))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.embedding(tokens).sum(1))


def random_data(n: int = 300, seed: int = 0, features: int | None = None) -> SequenceData:
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 40, (n,), generator=gen)
    seqs = [
        torch.randn(int(k), features, generator=gen)
        if features
        else torch.randint(1, 100, (int(k),), generator=gen)
        for k in lengths
    ]
    return SequenceData.from_sequences(seqs, torch.randint(0, 3, (n,), generator=gen).tolist())


def alone(model: nn.Module, data: SequenceData) -> torch.Tensor:
    out = []
    with torch.inference_mode():
        for i in range(len(data)):
            seq, _ = data[i]
            out.append(model(seq.unsqueeze(0), torch.tensor([seq.shape[0]])).argmax(1))
    return torch.cat(out)


@pytest.mark.parametrize("features", [None, 5])
def test_packed_model_gives_same_predictions_as_alone(features: int | None) -> None:
    model = PackedGRU(features).eval()
    data = random_data(features=features)
    preds = predict(model, data, CPU, batch_size=32)
    assert torch.equal(preds.predictions, alone(model, data))
    assert preds.scores.shape == (300, 3)
    assert torch.allclose(preds.scores.sum(1), torch.ones(300))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float64])
def test_feature_vectors_are_given_in_the_models_dtype(dtype: torch.dtype) -> None:
    """A feature model cast to bfloat16 for serving (or kept in float64) raised
    "mat1 and mat2 must have the same dtype" on the float32 vectors, with advice
    about its layers' sizes; it is given them in its weights' dtype. The content
    hashes stay the data's, so a baseline pairs samples across such runs."""
    data = random_data(features=5)
    model = PackedGRU(5).to(dtype).eval()
    preds = predict(model, data, CPU, batch_size=32)
    with torch.inference_mode():
        expected = torch.cat(
            [model(seq[None].to(dtype), torch.tensor([len(seq)])).argmax(1) for seq, _ in data]
        )
    assert torch.equal(preds.predictions, expected)
    assert torch.equal(preds.hashes, predict(PackedGRU(5).eval(), data, CPU).hashes)


class HFStyle(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(100, 4)
        self.head = nn.Linear(4, 2)
        self.seen_masks: list[torch.Tensor] = []

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> SimpleNamespace:
        self.seen_masks.append(attention_mask)
        pooled = (self.embedding(input_ids) * attention_mask.unsqueeze(-1)).sum(1)
        return SimpleNamespace(logits=self.head(pooled / attention_mask.sum(1, keepdim=True)))


class TupleOut(nn.Module):
    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = torch.nn.functional.one_hot(tokens[:, 0] % 2, 2).float()
        return logits, torch.zeros(1)


class OneLogit(nn.Module):
    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return (tokens[:, :1] % 2).float() * 4 - 2  # [B, 1]: positive when the first id is odd


def test_calling_conventions_and_outputs() -> None:
    assert calling_convention(PackedGRU()) == "lengths"
    assert calling_convention(HFStyle()) == "attention_mask"
    assert calling_convention(TupleOut()) == "plain"
    data = SequenceData.from_sequences([[1, 2, 3], [2], [3, 3], [4, 1, 1, 1]], [1, 0, 1, 0])
    hf = HFStyle()
    predict(hf, data, CPU, batch_size=4)
    assert hf.seen_masks[0].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 0], [1, 0, 0, 0]]
    assert predict(TupleOut(), data, CPU).predictions.tolist() == [1, 0, 1, 0]
    binary = predict(OneLogit(), data, CPU)
    assert binary.predictions.tolist() == [1, 0, 1, 0]
    assert binary.scores.shape == (4, 2)
    assert binary.scores[0, 1] == pytest.approx(torch.sigmoid(torch.tensor(2.0)).item())


class MaskNotIds(nn.Module):
    """A mask model whose first parameter is not called input_ids."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(100, 4)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.head((self.embedding(x) * attention_mask.unsqueeze(-1)).sum(1))


class LengthsThird(nn.Module):
    """``lengths`` after an optional parameter: it must arrive by name."""

    def forward(
        self,
        tokens: torch.Tensor,
        mask: torch.Tensor | None = None,
        lengths: torch.Tensor | None = None,
    ) -> torch.Tensor:
        assert mask is None and lengths is not None
        return torch.nn.functional.one_hot(lengths % 2, 2).float()


def test_second_input_goes_by_name_and_wrappers_are_seen_through() -> None:
    data = SequenceData.from_sequences([[1, 2, 3], [2], [3, 3], [4, 1, 1, 1]], [1, 0, 1, 0])
    predict(MaskNotIds(), data, CPU)
    assert predict(LengthsThird(), data, CPU).predictions.tolist() == [1, 1, 0, 0]
    for wrapped in (
        nn.DataParallel(LengthsThird()),
        torch.compile(LengthsThird(), backend="eager"),
    ):
        assert calling_convention(wrapped) == "lengths"
        assert predict(wrapped, data, CPU).predictions.tolist() == [1, 1, 0, 0]
        # Reports name the model's own class, not OptimizedModule or DataParallel.
        ev = evaluate(wrapped, data, Settings(bootstrap=0, padding_check=0))
        assert (ev.name, ev.model) == ("LengthsThird", "LengthsThird")


class TransformerMasked(nn.Module):
    """The nn.Transformer way: a padding mask True on the padded steps, under the
    name nn.TransformerEncoder gives it, and a mean over the real steps."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embedding = nn.Embedding(100, 8)
        layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.head = nn.Linear(8, 2)
        self.seen: list[torch.Tensor] = []

    def forward(self, tokens: torch.Tensor, src_key_padding_mask: torch.Tensor) -> torch.Tensor:
        self.seen.append(src_key_padding_mask)
        hidden = self.encoder(self.embedding(tokens), src_key_padding_mask=src_key_padding_mask)
        real = (~src_key_padding_mask).unsqueeze(-1).float()
        return self.head((hidden * real).sum(1) / real.sum(1))


class KeyPaddingMask(nn.Module):
    """Class 1 for a sequence its batch padded."""

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor) -> torch.Tensor:
        return nn.functional.one_hot(key_padding_mask.any(1).long(), 2).float()


class PaddingMask(nn.Module):
    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        assert padding_mask is not None and padding_mask.dtype == torch.bool
        return nn.functional.one_hot(padding_mask.any(1).long(), 2).float()


def test_a_forward_that_takes_a_padding_mask_gets_it_true_on_the_padding() -> None:
    """A PyTorch-native Transformer classifier takes `src_key_padding_mask` (or
    `key_padding_mask`, `padding_mask`): it gets the bool mask it means, and, given
    it, its answers do not depend on the padding (the padding check passes)."""
    from pytest_seqgate.config import Settings
    from pytest_seqgate.evaluation import evaluate

    data = SequenceData.from_sequences([[1, 2, 3], [2], [3, 3], [4, 1, 1, 1]], [1, 0, 1, 0])
    model = TransformerMasked()
    assert calling_convention(model) == "src_key_padding_mask"
    predict(model, data, CPU, batch_size=4)
    (mask,) = model.seen
    assert mask.dtype == torch.bool
    assert mask.tolist() == [[0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 1], [0, 1, 1, 1]]
    for other, name in ((KeyPaddingMask(), "key_padding_mask"), (PaddingMask(), "padding_mask")):
        assert calling_convention(other) == name
        assert predict(other, data, CPU, batch_size=4).predictions.tolist() == [1, 1, 1, 0]
    varied = SequenceData.from_sequences(
        [[1 + (i * 7) % 90] * (1 + i % 9) for i in range(60)], [i % 2 for i in range(60)]
    )
    ev = evaluate(TransformerMasked(), varied, Settings(batch_size=16, bootstrap=0))
    assert not ev.findings_of("padding_sensitivity")


def test_a_forward_the_call_does_not_fit_is_explained() -> None:
    class TwoInputs(nn.Module):
        def forward(self, tokens: torch.Tensor, segments: torch.Tensor) -> torch.Tensor:
            return tokens.float()

    data = SequenceData.from_sequences([[1, 2], [3]], [0, 1])
    with pytest.raises(ModelError) as info:
        predict(TwoInputs(), data, CPU)
    message = str(info.value)
    assert "called as forward(padded); the call does not fit the forward's parameters" in message
    assert "pytest_seqgate_forward hook" in message
    assert "missing 1 required positional argument: 'segments'" in message

    def hook(model: nn.Module, batch: Batch) -> torch.Tensor:
        return model(batch.inputs)  # the hook's own call, which does not fit either

    with pytest.raises(ModelError) as info:
        predict(TwoInputs(), data, CPU, forward=hook)
    assert "called through the pytest_seqgate_forward hook;" in str(info.value)
    assert "does not fit the forward's parameters" not in str(info.value)


def refusal(model: nn.Module, data: SequenceData, **kwargs: Any) -> str:
    """The message of the ModelError that predict raises for ``model`` on the CPU."""
    with pytest.raises(ModelError) as info:
        predict(model, data, CPU, **kwargs)
    return str(info.value)


# torch warns before it refuses a tensor indexed by a string.
@pytest.mark.filterwarnings("ignore:Using a non-tuple sequence for multidimensional indexing")
def test_a_forward_that_takes_a_dict_of_tensors_is_told_to_build_it_in_a_hook() -> None:
    """``forward(batch)`` reading ``batch["input_ids"]`` (a training loop's collator
    dict) got the padded tensor, and an IndexError with advice about layer sizes;
    it is told to build the dict in a pytest_seqgate_forward hook. An IndexError
    of another kind keeps the general advice."""

    class DictInput(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bag = Bag()

        def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
            return self.bag(batch["input_ids"])

    class OffByOne(nn.Module):
        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            return tokens[:, :, 0].float()  # a dimension too many

    data = random_data(20)
    assert (
        "called as forward(padded); the forward indexes its input by a name, so it takes a "
        "dict of tensors, and seqgate passes the padded tensor: build the dict in a "
        "pytest_seqgate_forward hook, e.g. return model({'input_ids': batch.inputs, "
        "'attention_mask': batch.attention_mask}): "
    ) in refusal(DictInput(), data)

    def hook(model: nn.Module, batch: Batch) -> torch.Tensor:
        return model({"input_ids": batch.inputs, "attention_mask": batch.attention_mask})

    assert predict(DictInput(), data, CPU, forward=hook).scores.shape == (20, 3)
    message = refusal(OffByOne(), data)
    assert "indexes its input by a name" not in message
    assert "the model's layers may disagree" in message


def test_a_tuple_whose_logits_are_not_first_names_the_item_that_fits() -> None:
    """A model returning ``(hidden, logits)`` was told it has 16 classes: the error
    says seqgate read the tuple's first item, and which item has the classes' width."""

    class HiddenFirst(PackedGRU):
        def forward(  # type: ignore[override]
            self, tokens: torch.Tensor, lengths: torch.Tensor
        ) -> tuple[torch.Tensor, torch.Tensor]:
            packed = pack_padded_sequence(
                self.embedding(tokens), lengths.cpu(), batch_first=True, enforce_sorted=False
            )
            _, h = self.gru(packed)
            return h[-1], self.head(h[-1])

    assert refusal(HiddenFirst(), random_data(40), batch_size=8, num_classes=3).endswith(
        "(the model returned a tuple of 2, item 0: [8, 16], item 1: [8, 3]: seqgate reads the "
        "first item as the logits; item 1 has the classes' width: return the logits first, or "
        "call the model in a pytest_seqgate_forward hook that returns them)"
    )


def test_a_class_count_that_differs_from_labels_read_off_the_data_says_so() -> None:
    """With no seqgate_labels the classes are the names the records hold: the
    error said "seqgate_labels names 3 classes" of a setting the user never made."""
    data = random_data(40)
    data.label_names, data.names_inferred, data.source = ("a", "b", "c"), True, "eval.jsonl"
    model = nn.Sequential(nn.EmbeddingBag(100, 4), nn.Linear(4, 2))
    assert refusal(model, data, num_classes=3) == (
        "the model returned 2 logits per sequence, but the labels of eval.jsonl name 3 "
        "classes, ['a', 'b', 'c'], and seqgate_labels is not set; set it to the model's "
        "classes in output order, or fix the model's output layer"
    )
    data.names_inferred = False
    assert refusal(
        nn.Sequential(nn.EmbeddingBag(100, 4), nn.Linear(4, 1)), data, num_classes=3
    ) == (
        "the model returned 1 logit per sequence (binary), but seqgate_labels names 3 classes; "
        "fix seqgate_labels or the model's output layer"
    )
    # An eval set of one class reads as one ("name 1 classes" before).
    data.label_names, data.names_inferred = ("a",), True
    data.labels = torch.zeros_like(data.labels)
    assert refusal(model, data, num_classes=1).startswith(
        "the model returned 2 logits per sequence, but the labels of eval.jsonl name 1 class, "
        "['a'], and seqgate_labels is not set"
    )


def test_a_convolution_longer_than_the_shortest_batch_is_explained() -> None:
    """A CNN text classifier (kernels of 3 to 5) meets a batch of 2-step sequences:
    seqgate pads a batch only to its own longest sequence. The error says so, with
    the steps, and the fix in the model."""

    class KimCNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embedding = nn.Embedding(50, 8, padding_idx=0)
            self.convs = nn.ModuleList([nn.Conv1d(8, 4, k) for k in (3, 4, 5)])
            self.head = nn.Linear(12, 2)

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            x = self.embedding(tokens).transpose(1, 2)
            return self.head(torch.cat([c(x).relu().amax(2) for c in self.convs], 1))

    lengths = [9] * 8 + [2] * 8  # the first batch is long enough, the last is not
    sequences = [[1 + i % 40] * n for i, n in enumerate(lengths)]
    data = SequenceData.from_sequences(sequences, [0, 1] * 8)
    assert (
        "Kernel size can't be greater than actual input size; a convolution or pooling window "
        "is longer than the batch's sequences (2 steps here): seqgate pads each batch only to "
        "its longest sequence, so the model must take sequences as short as the eval set's "
        "shortest: pad them in forward (F.pad(x, (0, kernel - steps)) when steps < kernel), "
        "or leave them out of the eval set"
    ) in refusal(KimCNN(), data, batch_size=8)


def test_lengths_used_on_the_model_device_get_the_way_to_move_them() -> None:
    """seqgate gives the lengths on the CPU (pack_padded_sequence needs them there); a
    forward that builds a mask from them on the GPU fails with tensors on two devices.
    The error says where the lengths are and how to move them. (On a CPU the mismatch
    cannot happen: the model here raises what torch raises on a GPU;
    test_gpu.py runs the real one.)"""

    class MaskFromLengths(nn.Module):
        def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
            raise RuntimeError(
                "Expected all tensors to be on the same device, but found at least two "
                "devices, cuda:0 and cpu!"
            )

    data = SequenceData.from_sequences([[1, 2], [3]], [0, 1])
    assert (
        "called as forward(padded, lengths=lengths); seqgate passes the lengths on the CPU, "
        "as pack_padded_sequence needs them: a forward that computes with them on the "
        "model's device moves them there first (lengths.to(tokens.device)): Expected all "
        "tensors to be on the same device"
    ) in refusal(MaskFromLengths(), data)


class BagScores(nn.Module):
    """Pooled embeddings of ``classes`` dimensions, ended by ``finish`` (a softmax,
    or a sigmoid per class): a model whose outputs are probabilities."""

    def __init__(self, vocab: int, classes: int, seed: int, finish: Any) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.embedding = nn.EmbeddingBag(vocab, classes, padding_idx=0)
        self.finish = finish

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.finish(self.embedding(tokens))


def short_sequences(n: int, vocab: int, generator: torch.Generator) -> list[torch.Tensor]:
    """``n`` sequences of 2 to 8 token ids below ``vocab`` (0, the padding, left out)."""
    return [
        torch.randint(1, vocab, (int(k),), generator=generator)
        for k in torch.randint(2, 9, (n,), generator=generator)
    ]


def test_probability_outputs_are_read_as_probabilities() -> None:
    """A final sigmoid read as a logit made every prediction positive (accuracy 0.5
    here), and a final softmax read as logits was softmaxed again (ECE 0.29 for
    0.05): outputs that can only be probabilities are read as such, with a
    warning, and seqgate_outputs makes it explicit either way."""
    from pytest_seqgate.inference import output_kind

    class Sigmoid(nn.Module):
        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid((tokens[:, :1] % 2).float() * 8 - 4)

    class Softmax(nn.Module):
        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            return torch.softmax(nn.functional.one_hot(tokens[:, 0] % 2, 2).float() * 3, 1)

    class Logits(nn.Module):
        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            return nn.functional.one_hot(tokens[:, 0] % 2, 2).float() * 3

    assert output_kind(torch.tensor([[0.2], [0.9]])) == "probabilities"
    assert output_kind(torch.tensor([[0.2], [1.5]])) == "logits"
    assert output_kind(torch.tensor([[0.2, 0.8], [0.5, 0.5]])) == "probabilities"
    assert output_kind(torch.tensor([[0.2, 0.7], [0.5, 0.5]])) == "probabilities"
    assert output_kind(torch.tensor([[0.2, 0.7], [-0.5, 0.5]])) == "logits"
    data = SequenceData.from_sequences(
        [[i + 1, 3] for i in range(200)], [(i + 1) % 2 for i in range(200)], ("even", "odd")
    )
    settings = Settings(device="cpu", bootstrap=0)
    reference = evaluate(Logits(), data, settings)
    for model in (Sigmoid(), Softmax()):
        ev = evaluate(model, data, settings)
        assert ev.predictions.outputs == "probabilities"
        assert ev.metrics.value("accuracy") == 1.0
        [finding] = ev.findings_of("outputs")
        assert "read as probabilities, not logits" in finding.message
        explicit = evaluate(
            model, data, Settings(device="cpu", bootstrap=0, outputs="probabilities")
        )
        assert explicit.findings_of("outputs") == []
        assert torch.equal(explicit.predictions.scores, ev.predictions.scores)
    softmax = evaluate(Softmax(), data, settings)
    assert softmax.ece == pytest.approx(reference.ece)
    as_logits = evaluate(Sigmoid(), data, Settings(device="cpu", bootstrap=0, outputs="logits"))
    assert as_logits.metrics.value("accuracy") == 0.5  # what reading them as logits gave
    with pytest.raises(ModelError, match="seqgate_outputs = probabilities, but the model"):
        evaluate(Logits(), data, Settings(device="cpu", outputs="probabilities"))
    with pytest.raises(ConfigError, match="expected auto, logits or probabilities"):
        Settings.from_dict(".", outputs="probs")


def test_a_sigmoid_per_class_is_read_as_each_class_probability() -> None:
    """A one-vs-rest head (a sigmoid per class, trained with binary cross-entropy)
    returns rows in [0, 1] that do not sum to 1. They were read as logits and
    softmaxed: the predicted class stayed, but every class's scores were bent
    (AP and ROC AUC off scikit-learn's on the model's own scores) and
    ``seqgate_outputs = probabilities`` refused them. Each column is now its
    class's own probability, and the warning says what the rows sum to."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    model = BagScores(60, 3, seed=1, finish=lambda x: torch.sigmoid(x * 3))
    generator = torch.Generator().manual_seed(2)
    sequences = short_sequences(600, 60, generator)
    with torch.inference_mode():
        own = model(nn.utils.rnn.pad_sequence(sequences, batch_first=True))
    sums = own.sum(1)
    assert float(sums.min()) < 0.9 and float(sums.max()) > 1.1  # not one distribution
    targets = torch.randint(0, 3, (600,), generator=generator)
    targets[:400] = own[:400].argmax(1)  # a model right two times in three
    data = SequenceData.from_sequences(
        [s.tolist() for s in sequences], targets.tolist(), ("a", "b", "c")
    )
    ev = evaluate(model, data, Settings(device="cpu", bootstrap=0))
    assert ev.predictions.outputs == "probabilities"
    assert torch.allclose(ev.predictions.scores, own, atol=1e-6)  # as they are, no softmax
    assert torch.equal(ev.predictions.predictions, ev.predictions.scores.argmax(1))
    for k, name in enumerate(("a", "b", "c")):
        truth = (targets == k).numpy()
        assert ev.value("roc_auc", name) == pytest.approx(roc_auc_score(truth, own[:, k]))
        assert ev.value("average_precision", name) == pytest.approx(
            average_precision_score(truth, own[:, k])
        )
    [finding] = ev.findings_of("outputs")
    low, high = finding.data["row_sums"]
    assert (low, high) == (pytest.approx(float(sums.min())), pytest.approx(float(sums.max())))
    assert f"the rows sum to {low:.3g} to {high:.3g}, as a sigmoid per class gives" in (
        finding.message
    )
    explicit = evaluate(model, data, Settings(device="cpu", bootstrap=0, outputs="probabilities"))
    assert torch.equal(explicit.predictions.scores, ev.predictions.scores)
    assert explicit.findings_of("outputs") == []


def test_probabilities_of_a_bfloat16_model_are_read_as_probabilities() -> None:
    """A model cast to bfloat16 (as deployed for inference) rounds each softmax
    output to 8 significant bits, so its rows sum to 1 only within 0.003: they
    were read as logits and softmaxed again (ECE 0.697 for the model's 0.363
    here), and ``seqgate_outputs = probabilities`` refused them as rows that do
    not sum to 1."""

    sequences = short_sequences(400, 50, torch.Generator().manual_seed(0))
    model = BagScores(50, 5, seed=0, finish=lambda x: torch.softmax(x * 4, 1)).to(torch.bfloat16)
    with torch.inference_mode():  # its own probabilities, padded with the ignored zeros
        own = model(nn.utils.rnn.pad_sequence(sequences, batch_first=True)).float()
    assert float((own.double().sum(1) - 1).abs().max()) > 1e-3  # the old tolerance
    data = SequenceData.from_sequences(
        [s.tolist() for s in sequences], own.argmax(1).tolist(), tuple("abcde")
    )
    settings = Settings(device="cpu", bootstrap=0)
    ev = evaluate(model, data, settings)
    assert ev.predictions.outputs == "probabilities"
    assert torch.equal(ev.predictions.scores, own)
    explicit = evaluate(model, data, Settings(device="cpu", bootstrap=0, outputs="probabilities"))
    assert torch.equal(explicit.predictions.scores, own)


def test_predictions_come_back_in_dataset_order() -> None:
    # Lengths force a reordering; FirstToken-like model shows each row's identity.
    class Ident(nn.Module):
        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.one_hot(tokens[:, 0], 10).float()

    seqs = [[i] * (10 - i) for i in range(10)][::-1]
    data = SequenceData.from_sequences(seqs, list(range(10)))
    got = predict(Ident(), data, CPU, batch_size=3).predictions
    assert got.tolist() == [s[0] for s in seqs]


class OOMAbove(nn.Module):
    """Runs out of memory on batches above ``limit`` rows: raises CUDA's error, or
    with ``real`` (a GPU test), asks the device's allocator for an impossible 8 PiB
    and lets it raise."""

    def __init__(self, limit: int, real: bool = False) -> None:
        super().__init__()
        self.limit = limit
        self.real = real
        self.sizes: list[int] = []

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        self.sizes.append(tokens.shape[0])
        if tokens.shape[0] > self.limit:
            if not self.real:
                # torch.OutOfMemoryError in 2.6 and 2.13; torch 2.2 has only torch.cuda's.
                oom = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
                raise oom("CUDA out of memory. Tried to allocate 2.00 GiB")
            torch.empty(1 << 50, dtype=torch.float64, device=tokens.device)
        return torch.nn.functional.one_hot(tokens[:, 0] % 2, 2).float()


@pytest.mark.parametrize("real", [False, True], ids=["cuda-error", "cpu-allocator"])
def test_oom_halves_the_batch_and_retries(real: bool) -> None:
    """CUDA's out-of-memory error, and the CPU allocator's own ("can't allocate
    memory", from asking for 8 PiB here), both halve the batch."""
    data = random_data(100)
    model = OOMAbove(limit=10, real=real)
    preds = predict(model, data, CPU, batch_size=64)
    assert preds.batch_size == 8  # 64 -> 32 -> 16 -> 8
    assert max(model.sizes[-5:]) <= 10
    assert preds.predictions.tolist() == [int(data[i][0][0]) % 2 for i in range(100)]


def test_oom_at_batch_one_is_a_clear_error() -> None:
    with pytest.raises(ModelError, match="out of memory on a single sequence of length"):
        predict(OOMAbove(limit=0), random_data(5), CPU, batch_size=4)
    with pytest.raises(ModelError, match="on cpu; evaluate on a machine with more memory"):
        predict(OOMAbove(limit=0, real=True), random_data(5), CPU, batch_size=4)


def test_token_ids_beyond_embedding_are_named() -> None:
    data = SequenceData.from_sequences([[1, 2], [3, 250], [4]], [0, 1, 0], source="e.jsonl")
    with pytest.raises(
        ModelError,
        match=r"e.jsonl\[1\]: token id 250 is at or above the model's "
        r"embedding size 100 \(1 record affected\)",
    ):
        predict(PackedGRU(), data, CPU)
    # Records are counted once however many of their ids are too large.
    data = SequenceData.from_sequences([[1], [5, 200, 300], [4], [700]], [0, 1, 0, 1])
    with pytest.raises(ModelError, match=r"\[1\]: token id 200 .* \(2 records affected\)"):
        predict(PackedGRU(), data, CPU)


def test_embedding_range_is_the_largest_table() -> None:
    """A position embedding declared before the token one is no vocabulary: ids past
    it but inside the token table run; ids past every table (an EmbeddingBag
    counts) are named."""

    class Positions(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pos = nn.Embedding(4, 8)
            self.tok = nn.EmbeddingBag(300, 8)
            self.head = nn.Linear(8, 2)

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            steps = torch.arange(tokens.shape[1]).clamp_max(3)
            return self.head(self.tok(tokens) + self.pos(steps).mean(0))

    fits = SequenceData.from_sequences([[1, 250], [299, 3, 7]], [0, 1], source="e.jsonl")
    assert predict(Positions(), fits, CPU).predictions.shape == (2,)
    past = SequenceData.from_sequences([[1, 2], [3, 300]], [0, 1], source="e.jsonl")
    with pytest.raises(
        ModelError,
        match=r"e.jsonl\[1\]: token id 300 is at or above the model's largest embedding "
        r"table \(300\) \(1 record affected\)",
    ):
        predict(Positions(), past, CPU)


def test_integer_outputs_and_wrong_batch_size() -> None:
    class Ints(nn.Module):
        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            return tokens[:, 0] % 2

    class WrongRows(nn.Module):
        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            return torch.zeros(1, 2)

    data = random_data(10)
    with pytest.raises(ModelError, match=r"returned int64 outputs.*not class indices"):
        predict(Ints(), data, CPU)
    with pytest.raises(ModelError, match=r"returned logits \[1, 2\].*expected \[10, classes\]"):
        predict(WrongRows(), data, CPU, batch_size=10)


def test_outputs_that_keep_a_step_axis_of_one_are_logits_and_per_token_ones_are_refused() -> None:
    """``[batch, 1, classes]`` (a model that kept its step axis) was refused as
    "per-token outputs, sequence labelling"; it is a classifier's output. A
    per-token model is still refused, and a transposed output says it is
    transposed."""

    class Pooled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.embedding = nn.Embedding(50, 3)

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            return self.embedding(tokens).mean(1)

    class KeepDim(Pooled):
        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            return super().forward(tokens).unsqueeze(1)

    class PerToken(Pooled):
        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            return self.embedding(tokens)

    class Transposed(Pooled):
        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            return super().forward(tokens).T

    data = token_set(torch.tensor([1] * 8 + [5] * 8), seed=0, classes=3)
    kept = predict(KeepDim(), data, CPU, batch_size=8)
    plain = predict(Pooled(), data, CPU, batch_size=8)
    assert torch.equal(kept.predictions, plain.predictions)
    assert torch.allclose(kept.scores, plain.scores)
    with pytest.raises(ModelError, match=r"per-token outputs \[8, 5, 3\].*sequence labelling"):
        predict(PerToken(), data, CPU, batch_size=8)
    with pytest.raises(
        ModelError,
        match=r"logits \[3, 8\].*\(these are transposed: return them as \[batch, classes\]\)",
    ):
        predict(Transposed(), data, CPU, batch_size=8)

    class StepsFirst(torch.nn.Module):
        """A GRU built without batch_first=True, PyTorch's default: it reads the
        [batch, steps] batch as [steps, batch], and answers one row per step."""

        def __init__(self) -> None:
            super().__init__()
            self.embedding = torch.nn.Embedding(50, 4)
            self.rnn = torch.nn.GRU(4, 6)
            self.head = torch.nn.Linear(6, 3)

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            return self.head(self.rnn(self.embedding(tokens))[1][-1])

    with pytest.raises(ModelError) as info:
        predict(StepsFirst(), data, CPU, batch_size=8)
    assert str(info.value).endswith(
        "expected [8, classes]: one row per sequence in the batch (one row per step, 5: the "
        "model reads its input as [steps, batch], as an RNN or Transformer layer does unless "
        "built with batch_first=True; seqgate gives [batch, steps]: build the layers with "
        "batch_first=True, or transpose the input in forward)"
    )


def test_device_resolution() -> None:
    assert resolve_device("cpu") == CPU
    if not torch.cuda.is_available():
        assert resolve_device("auto") == CPU
        with pytest.raises(ConfigError, match="'cuda' was asked for but CUDA is not available"):
            resolve_device("cuda")
    if not torch.backends.mps.is_available():
        with pytest.raises(
            ConfigError, match=r"MPS .* is not available on this machine; use 'auto'"
        ):
            resolve_device("mps")


def test_evaluate_end_to_end_in_a_script() -> None:
    model = PackedGRU().eval()
    data = random_data()
    ev = evaluate(model, data, Settings(batch_size=16))
    assert ev.n_samples == 300 and ev.labels == ("0", "1", "2")
    manual = torch.bincount(data.labels * 3 + alone(model, data), minlength=9).reshape(3, 3)
    assert torch.equal(ev.metrics.confusion_matrix, manual)


def test_bf16_autocast_agrees_with_fp32_and_is_recorded() -> None:
    from pytest_seqgate.report import headline, report_json

    model = Bag().eval()
    data = random_data(2000)
    fp32 = evaluate(model, data, Settings(padding_check=0, bootstrap=0, device="cpu"))
    bf16 = evaluate(
        model, data, Settings(padding_check=0, bootstrap=0, device="cpu", precision="bf16")
    )
    agree = (fp32.predictions.predictions == bf16.predictions.predictions).double().mean()
    assert agree >= 0.995
    assert report_json([bf16])["evaluations"][0]["precision"] == "bf16"
    assert ", cpu bf16 autocast, " in headline(bf16)
    assert ", cpu, " in headline(fp32)
    with pytest.raises(ConfigError, match="expected fp32, bf16 or fp16"):
        Settings.from_dict(".", precision="fp8")


def test_padded_rows_are_the_rows_the_sorted_pass_pads() -> None:
    from pytest_seqgate.batching import BucketedBatches, padded_rows

    lengths = torch.randint(1, 9, (203,), generator=torch.Generator().manual_seed(5))
    data = token_set(lengths, seed=5)
    sorted_pass = BucketedBatches(data)
    for size in (1, 7, 64, 500):
        expected = torch.zeros(203, dtype=torch.bool)
        for start, stop in sorted_pass.ranges(size):
            batch = sorted_pass.batch(start, stop)
            expected[batch.index] = batch.padding.any(1)
        assert torch.equal(padded_rows(lengths, size), expected), size


def test_nan_logits_from_an_inverted_attention_mask_say_how_to_invert_it() -> None:
    """nn.Transformer's padding mask is True on the padding, the Hugging Face mask the
    plugin gives is 1 on the tokens: passed on as it is, every unpadded sequence is
    masked whole and comes out NaN, and the error said only "check for overflow"."""

    class InvertedMask(TransformerMasked):
        """Hands the Hugging Face mask to nn.Transformer as its padding mask, as is."""

        def forward(  # type: ignore[override]
            self, tokens: torch.Tensor, attention_mask: torch.Tensor
        ) -> torch.Tensor:
            mask = attention_mask.bool()  # True on the tokens: nn.Transformer reads padding
            return self.head(self.encoder(self.embedding(tokens), src_key_padding_mask=mask)[:, 0])

    varied = SequenceData.from_sequences([[1 + i % 5] * (1 + i % 4) for i in range(12)], [0] * 12)
    with pytest.raises(ModelError) as inverted:
        predict(InvertedMask(), varied, CPU, batch_size=4)
    assert str(inverted.value).endswith(
        "if its forward passes it on as src_key_padding_mask, where True marks padding, invert "
        "it (src_key_padding_mask=attention_mask == 0), or name the forward's parameter "
        "src_key_padding_mask: seqgate then passes that mask"
    )

    class NaNs(nn.Module):
        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            return torch.full((tokens.shape[0], 2), float("nan"))

    with pytest.raises(ModelError) as plain:
        predict(NaNs(), varied, CPU)
    assert "attention_mask" not in str(plain.value)  # a model without a mask is not told


def test_a_pass_over_some_rows_keeps_dataset_positions() -> None:
    """``rows`` (torchrun shards, the padding check) runs just those rows: results
    in ``rows`` order, batches indexed by dataset position, errors naming the record."""
    data = random_data(120)
    rows = torch.randperm(120, generator=torch.Generator().manual_seed(2))[:37]
    seen: list[torch.Tensor] = []

    def hook(model: nn.Module, batch: Batch) -> torch.Tensor:
        seen.append(batch.index)
        return model(batch.inputs, batch.lengths)

    model = PackedGRU().eval()
    whole = predict(model, data, CPU, batch_size=8)
    part = predict(model, data, CPU, batch_size=8, forward=hook, rows=rows)
    assert torch.equal(torch.cat(seen).sort().values, rows.sort().values)
    assert torch.equal(part.predictions, whole.predictions[rows])
    torch.testing.assert_close(part.scores, whole.scores[rows])
    assert torch.equal(part.hashes, data.content_hashes()[rows])

    class NaNOnToken7(nn.Module):
        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            logits = torch.zeros(tokens.shape[0], 2)
            return torch.where(tokens[:, :1] == 7, float("nan"), logits)

    numbered = SequenceData.from_sequences([[i] for i in range(1, 41)], [0] * 40)
    with pytest.raises(ModelError, match=r"NaN or Inf logits for 1 of 3 .*first: <memory>\[6\]"):
        predict(NaNOnToken7(), numbered, CPU, rows=torch.tensor([30, 6, 2]))

    class Huge(nn.Module):
        """Finite logits whose sum overflows float32: not an error."""

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            return torch.full((tokens.shape[0], 2), 3e38).index_fill_(1, torch.tensor([0]), 0)

    huge = predict(Huge(), numbered, CPU)
    assert torch.equal(huge.predictions, torch.ones(40, dtype=torch.int64))

    class Masking(nn.Module):
        """Class 2 masked out with -Inf before the softmax (a class switched off),
        token 9 masking every class, token 8 giving class 0 a logit of +Inf."""

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            logits = torch.stack([tokens[:, 0] % 2, 1 - tokens[:, 0] % 2, tokens[:, 0]], 1)
            logits = logits.float().index_fill_(1, torch.tensor([2]), -math.inf)
            logits[tokens[:, 0] == 9] = -math.inf
            logits[tokens[:, 0] == 8, 0] = math.inf
            return logits

    # It was "NaN or Inf logits for 40 of 40 samples": -Inf is a probability of 0.
    masked = predict(Masking(), numbered, CPU, rows=torch.arange(10, 40))
    assert torch.equal(masked.scores[:, 2], torch.zeros(30))
    assert torch.equal(masked.predictions, torch.arange(10, 40) % 2)
    for row in (8, 7):  # every class masked; +Inf beside other logits
        with pytest.raises(ModelError, match=rf"NaN or Inf logits for 1 of 1 .*\[{row}\]"):
            predict(Masking(), numbered, CPU, rows=torch.tensor([row]))
    # One logit of +-Inf: a sigmoid of 1 or 0, not an error.
    certain = SequenceData.from_sequences([[1], [2]], [1, 0])

    class Certain(nn.Module):
        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            return torch.where(tokens % 2 == 1, math.inf, -math.inf).float()

    assert predict(Certain(), certain, CPU).scores.tolist() == [[0.0, 1.0], [1.0, 0.0]]


def test_unpadded_batches_never_pad_and_keep_the_batch_size() -> None:
    from pytest_seqgate.batching import BucketedBatches

    data = random_data(300)
    index = torch.arange(0, 300, 3)
    sorted_pass = BucketedBatches(data, index)
    ranges = sorted_pass.ranges(4, unpadded=True)
    batches = [sorted_pass.batch(a, b) for a, b in ranges]
    assert all(not b.padding.any() and b.inputs.shape[0] <= 4 for b in batches)
    assert torch.equal(torch.cat([b.index for b in batches]).sort().values, index)
    assert len({int(b.lengths[0]) for b in batches}) == len(torch.unique(data.lengths[index]))
    # Each sequence's probabilities, as if run one at a time.
    model = PackedGRU().eval()
    got = scores_alone(model, data, index, CPU, batch_size=4)
    with torch.inference_mode():
        one_by_one = torch.cat(
            [model(data[i][0].unsqueeze(0), data.lengths[i : i + 1]) for i in index.tolist()]
        ).softmax(1)
    torch.testing.assert_close(got, one_by_one, atol=1e-6, rtol=1e-5)
    assert scores_alone(model, data, index[:0], CPU).shape == (0, 0)


class Recorded:
    """Records a predict pass: counts its pads (calls of ``batching._pad``) and
    keeps the batches the model saw, whose inputs must be contiguous."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import pytest_seqgate.batching as batching

        self.pads = 0
        self.batches: list[Batch] = []

        def counting_pad(*args: object, **kwargs: object) -> Batch:
            self.pads += 1
            return REAL_PAD(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(batching, "_pad", counting_pad)

    def forward(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        assert batch.inputs.is_contiguous()
        self.batches.append(batch)
        return model(batch.inputs, lengths=batch.lengths)


@pytest.mark.parametrize("features", [None, 5])
@pytest.mark.parametrize("unpadded", [False, True])
def test_small_batches_padded_as_a_group_are_the_batches_of_one_pad_each(
    features: int | None, unpadded: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Small batches are padded a group at a time on the CPU and cut apart: the
    model must see exactly the batches one pad per batch gives (same values,
    widths, padding, lengths and rows, contiguous), and hashes must not change."""
    import pytest_seqgate.inference as inference

    data = random_data(300, features=features)
    model = PackedGRU(features).eval()

    def run(group_values: int) -> tuple[Recorded, Predictions]:
        monkeypatch.setattr(inference, "GROUP_VALUES", group_values)
        seen = Recorded(monkeypatch)
        preds = predict(model, data, CPU, batch_size=8, forward=seen.forward, unpadded=unpadded)
        return seen, preds

    group_values = inference.GROUP_VALUES
    one_each, expected = run(0)
    grouped, got = run(group_values)
    assert one_each.pads == len(one_each.batches)
    assert grouped.pads < len(grouped.batches) / 10
    assert len(grouped.batches) == len(one_each.batches)
    for a, b in zip(grouped.batches, one_each.batches):
        assert torch.equal(a.inputs, b.inputs)
        assert torch.equal(a.padding, b.padding)
        assert torch.equal(a.lengths, b.lengths) and torch.equal(a.index, b.index)
    assert torch.equal(got.scores, expected.scores)
    assert torch.equal(got.hashes, expected.hashes)
    assert torch.equal(got.hashes, data.content_hashes())


def test_steps_of_many_features_are_padded_one_batch_at_a_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A group is counted in padded values: with an embedding per step, a batch
    already holds more than a group's worth, and grouping would only copy."""
    seen = Recorded(monkeypatch)
    data = random_data(12, features=4096)
    predict(PackedGRU(4096).eval(), data, CPU, batch_size=2, forward=seen.forward)
    assert seen.pads == len(seen.batches) == 6


def test_steps_of_no_features_still_form_groups() -> None:
    """A group's size divides by the features per step: none must not crash."""

    class ByLength(nn.Module):
        def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.one_hot(lengths % 2, 2).float()

    data = SequenceData.from_sequences([torch.zeros(k, 0) for k in (3, 1, 2, 5)], [1, 1, 0, 1])
    assert predict(ByLength(), data, CPU, batch_size=2).predictions.tolist() == [1, 1, 0, 1]


def test_an_out_of_memory_split_inside_a_group_keeps_every_row() -> None:
    data = random_data(100)
    model = OOMAbove(limit=3)
    preds = predict(model, data, CPU, batch_size=8)
    assert preds.batch_size == 2 and max(model.sizes[-5:]) <= 3
    assert preds.predictions.tolist() == [int(data[i][0][0]) % 2 for i in range(100)]
    assert torch.equal(preds.hashes, data.content_hashes())


class MeanOverPadding(nn.Module):
    """Averages every position, padding included: its answer depends on the batch."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.EmbeddingBag(50, 8, mode="mean")
        self.head = nn.Linear(8, 2)
        self.calls = 0

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.head(self.embedding(tokens))


def test_padding_check_samples_the_sequences_the_pass_padded() -> None:
    # 5,000 sequences of lengths 11 and 10, batch 64: the length-sorted pass
    # pads only the 60 sequences of length 10 in the one mixed batch, 1.2% of
    # the set. The check must look at those, not at a random 64 of all.
    torch.manual_seed(0)
    data = token_set(torch.tensor([11, 10] * 2500), seed=1)
    ev = evaluate(MeanOverPadding().eval(), data, Settings(batch_size=64, bootstrap=0))
    [finding] = ev.findings_of("padding_sensitivity")
    # (A random 64 of the 5,000 held 0 to 2 padded sequences, none for 2 of 8 seeds.)
    assert finding.data["sampled"] == 60 and finding.data["count"] > 40


def test_padding_check_sample_keeps_to_a_few_lengths() -> None:
    # Lengths 5 to 59: a sample spread over them ran one forward call per
    # sequence. It keeps to SAMPLE_LENGTHS lengths, each one call unpadded.
    lengths = torch.randint(5, 60, (3000,), generator=torch.Generator().manual_seed(4))
    data = token_set(lengths, seed=4)
    sample = padded_sample(lengths, 64, 64, torch.Generator().manual_seed(0))
    assert sample.numel() == 64 and torch.equal(sample, sample.unique())
    assert bool(padded_rows(lengths, 64)[sample].all())
    assert lengths[sample].unique().numel() == SAMPLE_LENGTHS
    again = padded_sample(lengths, 64, 64, torch.Generator().manual_seed(0))
    other = padded_sample(lengths, 64, 64, torch.Generator().manual_seed(1))
    assert torch.equal(again, sample) and not torch.equal(other, sample)  # seeded
    model = MeanOverPadding().eval()
    ev = evaluate(model, data, Settings(batch_size=64, bootstrap=0))
    assert ev.findings_of("padding_sensitivity")[0].data["sampled"] == 64
    # ceil(3000 / 64) batches, then one call per length; a finding re-runs the 8 rows
    # that changed most (at most one call per length again) to rule out a model that
    # answers differently every run.
    assert 47 + SAMPLE_LENGTHS < model.calls <= 47 + 2 * SAMPLE_LENGTHS


def test_padding_check_fills_from_further_lengths_when_the_first_are_rare() -> None:
    # One padded sequence of each of 100 lengths: the sample takes 64 of them.
    lengths = torch.cat([torch.arange(100, 200), torch.tensor([5])])
    sample = padded_sample(lengths, 1000, 64, torch.Generator().manual_seed(0))
    assert sample.numel() == 64 and lengths[sample].unique().numel() == 64
    assert padded_sample(lengths, 1000, 500, torch.Generator()).numel() == 100


def test_padding_finding_gives_the_fix_for_the_layers_the_model_has() -> None:
    """An EmbeddingBag averages the padding in unless it has padding_idx: the
    finding says so, and with padding_idx=0 (seqgate pads with 0) it is gone."""
    from pytest_seqgate.diagnostics import PADDING_REMEDY, padding_remedy

    class Pooled(nn.Module):
        def __init__(self, padding_idx: int | None) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.bag = nn.EmbeddingBag(100, 8, padding_idx=padding_idx)
            self.head = nn.Linear(8, 3)

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            return self.head(self.bag(tokens))

    data = token_set(torch.randint(2, 30, (400,), generator=torch.Generator().manual_seed(3)), 3)
    [finding] = evaluate(Pooled(None).eval(), data, Settings(bootstrap=0)).findings_of(
        "padding_sensitivity"
    )
    assert finding.message.endswith(
        "Give the nn.EmbeddingBag padding_idx=0 (seqgate pads with 0), so that it pools "
        "the real tokens only"
    )
    assert not evaluate(Pooled(0).eval(), data, Settings(bootstrap=0)).findings_of(
        "padding_sensitivity"
    )
    assert padding_remedy(PackedGRU(), "lengths") == (
        "Pack the RNN's input (pack_padded_sequence with the lengths) and read each sequence "
        "at its last real step (h_n, or the output at lengths - 1), not at the padded end"
    )
    assert padding_remedy(PackedGRU()) == (
        "Pack the RNN's input (pack_padded_sequence with the lengths: a forward parameter "
        "named lengths gets them)"
    )
    encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 2, batch_first=True), 1)
    assert padding_remedy(encoder).startswith("Pass the padding to attention")
    # Given the mask and still reading the padding: it pools over it, and the advice
    # to mask attention (which it does) would send the user the wrong way.
    assert padding_remedy(encoder, "src_key_padding_mask") == (
        "Pool the attention's outputs over the real steps only (the src_key_padding_mask the "
        "forward is given marks them): a mean or sum over every position reads the padding"
    )

    class MeanOverAll(TransformerMasked):
        def forward(self, tokens: torch.Tensor, src_key_padding_mask: torch.Tensor) -> torch.Tensor:
            masked = self.encoder(self.embedding(tokens), src_key_padding_mask=src_key_padding_mask)
            return self.head(masked.mean(1))

    [finding] = evaluate(MeanOverAll(), data, Settings(bootstrap=0)).findings_of(
        "padding_sensitivity"
    )
    assert finding.message.endswith("a mean or sum over every position reads the padding")
    # A CNN text classifier: windows over the padding give the bias, which a max over
    # time picks up; the fix is to mask those steps, not to pack.
    conv = nn.Sequential(nn.Embedding(10, 4), nn.Conv1d(4, 4, 3))
    assert padding_remedy(conv) == (
        "Set the convolution's outputs at the padded steps to -inf before the max over time "
        "(or leave them out of a mean): a forward parameter named lengths gets the real lengths"
    )
    assert padding_remedy(conv, "lengths").endswith("(or leave them out of a mean)")
    plain = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 2))  # no layer to blame
    assert padding_remedy(plain) == (
        f"{PADDING_REMEDY}, and pool over the real steps only (divide by the lengths)"
    )


def test_padding_finding_names_a_lengths_parameter_left_unset() -> None:
    """A GRU that packs under ``forward(x, seq_lengths=None)`` is right in itself:
    seqgate fills only ``lengths``, so it ran over the padding. The finding says
    which parameter was left unset and how to name it, not to pack what already
    packs; a model its hook calls gets the layers' advice, not the rename."""

    class OtherName(PackedGRU):
        def forward(  # type: ignore[override]
            self, tokens: torch.Tensor, seq_lengths: torch.Tensor | None = None
        ) -> torch.Tensor:
            if seq_lengths is None:
                _, h = self.gru(self.embedding(tokens))
                return self.head(h[-1])
            return super().forward(tokens, seq_lengths)

    data = token_set(torch.randint(2, 30, (300,), generator=torch.Generator().manual_seed(5)), 2)
    [finding] = evaluate(OtherName(), data, Settings(bootstrap=0)).findings_of(
        "padding_sensitivity"
    )
    assert finding.message.endswith(
        "The forward's seq_lengths was left unset: seqgate fills a parameter named lengths "
        "(the lengths), attention_mask (1 on the tokens) or src_key_padding_mask, "
        "key_padding_mask, padding_mask (True on the padding), and no other; rename it so, "
        "or call the model in a pytest_seqgate_forward hook"
    )

    def hook(model: nn.Module, batch: Batch) -> torch.Tensor:
        return model(batch.inputs)  # the hook's own choice: no lengths

    [hooked] = evaluate(OtherName(), data, Settings(bootstrap=0), forward=hook).findings_of(
        "padding_sensitivity"
    )
    assert hooked.message.endswith("a forward parameter named lengths gets them)")
    # Given the lengths under the name seqgate fills, the same model reads no padding.

    class Renamed(OtherName):
        def forward(  # type: ignore[override]
            self, tokens: torch.Tensor, lengths: torch.Tensor | None = None
        ) -> torch.Tensor:
            return super().forward(tokens, lengths)

    assert not evaluate(Renamed(), data, Settings(bootstrap=0)).findings_of("padding_sensitivity")


def test_a_model_that_samples_at_inference_is_not_blamed_on_its_padding() -> None:
    """Dropout called with ``training=True`` gives another answer every run: the
    padding check blamed the padding (and told a packed GRU to pack). The rows
    that changed, run alone once more, show the model itself changes; the finding
    says so and fails the gates (``fail_on_nondeterminism``), and a deterministic
    model that reads its padding still gets the padding finding."""
    from pytest_seqgate.gates import check, parse_gates

    class AlwaysDropout(PackedGRU):
        def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
            return nn.functional.dropout(super().forward(tokens, lengths), 0.5, training=True)

    data = token_set(torch.randint(2, 30, (300,), generator=torch.Generator().manual_seed(5)), 3)
    ev = evaluate(AlwaysDropout(), data, Settings(bootstrap=0))
    assert ev.findings_of("padding_sensitivity") == []
    [finding] = ev.findings_of("nondeterministic")
    assert finding.data["run_twice"] == 8 and finding.data["count"] >= 1
    assert finding.data["first"] != finding.data["second"]
    assert "changes between two runs of the same sequence" in finding.message
    assert finding.message.endswith("F.dropout(x, training=self.training))")

    def failed(gates: dict[str, bool]) -> list[str]:
        return [r.metric for r in check(ev, parse_gates(gates), "t") if not r.passed]

    assert "nondeterministic" in failed({})
    assert "nondeterministic" not in failed({"fail_on_nondeterminism": False})
    steady = evaluate(PackedGRU(), data, Settings(bootstrap=0))
    assert not steady.findings_of("nondeterministic") + steady.findings_of("padding_sensitivity")


def test_a_padding_example_of_many_classes_shows_the_classes_that_moved() -> None:
    """150 classes made each probability row of the padding finding a paragraph,
    the change lost in it: beyond 4 classes it shows the predicted ones and those
    that moved most, and how many it leaves out."""
    from pytest_seqgate.diagnostics import padding_sensitivity

    labels = tuple(f"c{k}" for k in range(10))
    batched = torch.full((1, 10), 0.05)
    batched[0, 3] = 0.55
    alone = batched.clone()
    alone[0, 3], alone[0, 7] = 0.25, 0.35
    data = token_set(torch.tensor([4]), 10)
    [finding] = padding_sensitivity(batched, alone, torch.tensor([0]), data, labels)
    assert (
        "gives {c3: 0.550, c7: 0.050, 8 other classes} in its padded batch but "
        "{c3: 0.250, c7: 0.350, 8 other classes} alone"
    ) in finding.message


def test_padding_tolerance_follows_the_precision() -> None:
    """Under autocast, products of other batch shapes round differently (by up to
    2^-8 of a logit in bf16): the check allows for it there, not in fp32. A model
    that moves its probabilities by under 0.01 with its padding shows the line."""
    from pytest_seqgate.diagnostics import PADDING_TOLERANCE

    class Slight(nn.Module):
        def __init__(self, moves: float = 0.1) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.bag = nn.EmbeddingBag(100, 8, padding_idx=0)
            self.head = nn.Linear(8, 3)
            self.moves = moves

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            share = (tokens == 0).float().mean(1, keepdim=True)
            return self.head(self.bag(tokens)) + self.moves * share * torch.tensor([1.0, 0.0, 0.0])

    data = random_data(600)
    [strict] = evaluate(Slight().eval(), data, Settings(bootstrap=0)).findings_of(
        "padding_sensitivity"
    )
    moved = max(abs(a - b) for a, b in zip(strict.data["batched"], strict.data["alone"]))
    assert strict.data["tolerance"] == PADDING_TOLERANCE["fp32"] < moved < PADDING_TOLERANCE["bf16"]
    lenient = evaluate(Slight().eval(), data, Settings(bootstrap=0, precision="bf16"))
    assert not lenient.findings_of("padding_sensitivity")
    # A model cast to bfloat16 rounds as bf16 autocast does, under any setting; one
    # that reads its padding moves its probabilities by tenths, and still shows.
    cast = evaluate(Slight().to(torch.bfloat16).eval(), data, Settings(bootstrap=0))
    assert not cast.findings_of("padding_sensitivity")
    [reads] = evaluate(
        Slight(moves=3.0).to(torch.bfloat16).eval(), data, Settings(bootstrap=0)
    ).findings_of("padding_sensitivity")
    assert reads.data["tolerance"] == PADDING_TOLERANCE["bf16"]


@pytest.mark.filterwarnings("ignore:.*quantiz:DeprecationWarning", "ignore:.*quantiz:UserWarning")
@pytest.mark.filterwarnings("ignore:.*torch.jit.script:DeprecationWarning")
def test_a_quantized_model_is_not_called_padding_sensitive_for_its_rounding() -> None:
    """Dynamic quantization (int8 CPU serving) scales activations by each batch's
    range, so a packed GRU's probabilities moved by 0.003 between its batch and a
    run alone: a padding_sensitivity error failed every gated test, telling a model
    that packs to pack. Its tolerance is int8's, in eager mode and TorchScript; a
    quantized model that reads its padding still shows."""
    from pytest_seqgate.diagnostics import PADDING_TOLERANCE

    quantize = getattr(getattr(torch.ao, "quantization", None), "quantize_dynamic", None)
    if quantize is None:
        pytest.skip("this torch has no torch.ao.quantization.quantize_dynamic")
    data = random_data(600)
    packed = quantize(PackedGRU().eval(), {nn.GRU, nn.Linear}, dtype=torch.qint8)
    for model in (packed, torch.jit.script(packed)):
        ev = evaluate(model, data, Settings(bootstrap=0))
        assert not ev.findings_of("padding_sensitivity")
    torch.manual_seed(0)
    mean = nn.Sequential(nn.EmbeddingBag(100, 8, mode="mean"), nn.Linear(8, 3))  # padding too
    reads = quantize(mean.eval(), {nn.Linear}, dtype=torch.qint8)
    [finding] = evaluate(reads, data, Settings(bootstrap=0)).findings_of("padding_sensitivity")
    assert finding.data["tolerance"] == PADDING_TOLERANCE["int8"]


def test_padding_check_runs_nothing_when_nothing_was_padded() -> None:
    data = token_set(torch.full((300,), 6), seed=2)
    model = MeanOverPadding().eval()
    ev = evaluate(model, data, Settings(batch_size=64, bootstrap=0))
    assert not ev.findings_of("padding_sensitivity")
    assert model.calls == 5  # the five batches of the pass, and no re-run alone


def test_evaluate_puts_the_model_back_on_the_device_it_came_on(monkeypatch) -> None:
    """A session's model that the evaluation moved (to the GPU, under auto) goes
    back where it was, as its train/eval modes do, also when the pass fails. A
    CPU-only machine has one device: the home device is faked as ``meta``, where
    a module can be moved without a GPU."""
    import pytest_seqgate.evaluation as evaluation_module

    real = evaluation_module._home_device
    calls: list[object] = []

    def home_is_meta(model: object) -> torch.device | None:
        calls.append(model)
        return torch.device("meta") if len(calls) == 1 else real(model)

    monkeypatch.setattr(evaluation_module, "_home_device", home_is_meta)
    model = Bag()
    evaluate(model, random_data(60, seed=1), Settings(device="cpu", bootstrap=0))
    assert {p.device.type for p in model.parameters()} == {"meta"}
    # A pass that raises puts it back too.
    calls.clear()
    broken = Bag()
    broken.head = nn.Linear(3, 2)  # does not take the embedding's 32 features
    with pytest.raises(ModelError):
        evaluate(broken, random_data(60, seed=1), Settings(device="cpu", bootstrap=0))
    assert {p.device.type for p in broken.parameters()} == {"meta"}
    # A module with no tensors at all has no home to go back to.
    assert real(nn.Identity()) is None and real(Bag()) == torch.device("cpu")


def test_evaluate_leaves_the_global_random_state_alone() -> None:
    """Every random choice (the train sample, the padding check's sample, the
    bootstrap, MinHash) draws from its own seeded generator: the tests after a
    gate see the random stream they would have seen without it."""
    data = random_data(300, seed=4)
    model = Bag()
    before = torch.get_rng_state()
    evaluate(model, data, Settings(device="cpu", bootstrap=200), train_data=data)
    assert torch.equal(torch.get_rng_state(), before)


def test_the_pass_runs_in_eval_mode_and_leaves_each_layer_as_it_was() -> None:
    class Dropping(Bag):
        def __init__(self) -> None:
            super().__init__()
            self.drop = nn.Dropout(0.5)
            self.seen: list[bool] = []

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            self.seen.append(self.training or self.drop.training)
            return self.head(self.drop(self.embedding(tokens).sum(1)))

    model = Dropping()
    model.train()
    model.head.eval()  # a frozen part of a model in training
    data = random_data(200, seed=3)
    first = predict(model, data, torch.device("cpu"), 32)
    assert not any(model.seen)  # dropout off: every batch ran in eval mode
    assert model.training and model.drop.training and not model.head.training
    assert torch.equal(predict(model, data, torch.device("cpu"), 32).scores, first.scores)


class FirstTokenScore(nn.Module):
    """P(class 1) = sigmoid((first token - 25) / 5), as two logits or as one."""

    def __init__(self, one_logit: bool = False) -> None:
        super().__init__()
        self.one_logit = one_logit
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        z = (tokens[:, 0].float() - 25) / 5 + self.bias
        return z.unsqueeze(1) if self.one_logit else torch.stack([torch.zeros_like(z), z], 1)


def _scored_records(n: int, seed: int) -> list[dict]:
    gen = torch.Generator().manual_seed(seed)
    first = torch.randint(1, 50, (n,), generator=gen).tolist()
    labels = torch.randint(0, 2, (n,), generator=gen).tolist()
    return [{"tokens": [f, 7, 8], "label": ["ham", "spam"][y]} for f, y in zip(first, labels)]


@pytest.mark.parametrize("one_logit", [False, True], ids=["two logits", "one logit"])
def test_the_decision_threshold_applies_to_every_pass(tmp_path, one_logit: bool) -> None:
    """seqgate_threshold decides the eval set, the training sample and a streamed
    set alike: the train pass used argmax, so the train/test gap compared two
    decision rules, and a streamed run without scores crashed on it."""
    import json

    from pytest_seqgate.metrics import confusion_matrix

    model = FirstTokenScore(one_logit)
    for name, seed in (("eval.jsonl", 1), ("train.jsonl", 2)):
        rows = _scored_records(400, seed)
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in rows))

    def expected(name: str, threshold: float | None) -> torch.Tensor:
        rows = [json.loads(line) for line in (tmp_path / name).read_text().splitlines()]
        p = torch.sigmoid((torch.tensor([r["tokens"][0] for r in rows]).float() - 25) / 5)
        preds = (p > 0.5) if threshold is None else (p >= threshold)
        truth = torch.tensor([["ham", "spam"].index(r["label"]) for r in rows])
        return confusion_matrix(truth, preds.long(), 2)

    from pytest_seqgate.loading import load_dataset

    for threshold in (None, 0.3, 0.8):
        settings = Settings.from_dict(
            tmp_path,
            eval_data="eval.jsonl",
            train_data="train.jsonl",
            labels="ham,spam",
            threshold=threshold,
            padding_check=0,
            bootstrap=0,
            train_sample=400,
            near_duplicate_threshold=0,
        )
        eval_set, train_set = (
            load_dataset(settings, "eval_data"),
            load_dataset(settings, "train_data"),
        )
        ev = evaluate(model, eval_set, settings, train_data=train_set)
        assert torch.equal(ev.metrics.confusion_matrix, expected("eval.jsonl", threshold))
        # The reports say which rule decided: another threshold, other numbers.
        from pytest_seqgate.report import headline, render_json

        assert ("spam at P(spam) >= " in headline(ev)) is (threshold is not None)
        assert threshold is None or f"spam at P(spam) >= {threshold:g}, cpu" in headline(ev)
        entry = json.loads(render_json([ev]))["evaluations"][0]
        assert entry["decision_threshold"] == threshold
        assert ev.train_metrics is not None
        assert torch.equal(ev.train_metrics.confusion_matrix, expected("train.jsonl", threshold))
        streamed = Settings.from_dict(
            tmp_path,
            eval_data="eval.jsonl",
            labels="ham,spam",
            threshold=threshold,
            streaming=True,
            keep_scores=False,
            padding_check=0,
            bootstrap=0,
        )
        ev = evaluate(model, None, streamed)
        assert torch.equal(ev.metrics.confusion_matrix, expected("eval.jsonl", threshold))


def test_a_threshold_on_a_model_of_three_classes_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="applies to binary models, but this one has 3 classes"):
        evaluate(Bag(), random_data(60), Settings(threshold=0.4, padding_check=0))

    class Unreachable(Bag):
        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            raise AssertionError("no inference when the labels say 3 classes")

    # With the class count known from the labels, before any inference.
    settings = Settings(threshold=0.4, padding_check=0, labels=("a", "b", "c"))
    with pytest.raises(ConfigError, match="3 classes; remove it to decide by the most probable"):
        evaluate(Unreachable(), random_data(60), settings)

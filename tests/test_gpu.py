"""The CUDA path: device choice, parity with the CPU, autocast, host syncs, OOM.

Every test here needs a CUDA device and skips without one (CI has none; the
rest of the suite covers the same code on the CPU). On a GPU machine,
``bash bench/gpu.sh`` runs them together with the GPU benchmark.
"""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Callable

import pytest
import torch
from torch import nn

from pytest_seqgate.config import Settings
from pytest_seqgate.data import SequenceData
from pytest_seqgate.evaluation import evaluate
from pytest_seqgate.exceptions import ConfigError
from pytest_seqgate.inference import predict, resolve_device
from pytest_seqgate.report import report_json
from test_inference import Bag, OOMAbove, PackedGRU, random_data

from conftest import Project, rule_records

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="needs a CUDA device (torch.cuda.is_available() is False); "
    "the CPU suite covers everything else, bash bench/gpu.sh runs these on a GPU machine",
)

CPU = torch.device("cpu")
GPU = torch.device("cuda")


class MaskedEncoder(nn.Module):
    """A small Transformer encoder that masks its padding (the attention_mask convention)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embedding = nn.Embedding(100, 32, padding_idx=0)
        layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(32, 3)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(self.embedding(input_ids), src_key_padding_mask=attention_mask == 0)
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return self.head((hidden * mask).sum(1) / mask.sum(1))


def _confident(scores: torch.Tensor, margin: float) -> torch.Tensor:
    """Rows whose two best classes are more than ``margin`` apart."""
    top = scores.topk(2, dim=1).values
    return (top[:, 0] - top[:, 1]) > margin


def test_auto_picks_cuda_and_the_report_says_so() -> None:
    assert resolve_device("auto").type == "cuda"
    ev = evaluate(PackedGRU().eval(), random_data(200), Settings(device="auto", bootstrap=0))
    assert ev.device.startswith("cuda")
    assert not ev.device_note  # the "no CUDA device" note is for the CPU fallback
    assert report_json([ev])["evaluations"][0]["device"].startswith("cuda")


def test_a_model_evaluated_on_the_gpu_goes_back_to_the_cpu() -> None:
    """Under auto a CPU model runs on the GPU, then goes back: the user's next
    test may feed it CPU tensors."""
    model = PackedGRU().eval()
    ev = evaluate(model, random_data(200), Settings(device="auto", bootstrap=0))
    assert ev.device.startswith("cuda")
    assert {p.device.type for p in model.parameters()} == {"cpu"}


def test_a_device_index_past_the_last_gpu_is_a_config_error() -> None:
    past = torch.cuda.device_count()
    with pytest.raises(ConfigError, match=rf"'cuda:{past}' was asked for but this machine has"):
        resolve_device(f"cuda:{past}")


@pytest.mark.parametrize(
    ("build", "features"),
    [(PackedGRU, None), (lambda: PackedGRU(5), 5), (MaskedEncoder, None)],
    ids=["packed-gru-tokens", "packed-gru-features", "masked-transformer"],
)
def test_gpu_predictions_match_the_cpu(
    build: Callable[[], nn.Module], features: int | None
) -> None:
    data = random_data(600, features=features)
    model = build().eval()
    on_cpu = predict(model, data, CPU, batch_size=32)
    on_gpu = predict(copy.deepcopy(model), data, GPU, batch_size=32)
    # Results come back to the host, in dataset order, with the same content hashes.
    assert on_gpu.predictions.device.type == "cpu" and on_gpu.scores.device.type == "cpu"
    assert on_gpu.device.startswith("cuda")
    assert torch.equal(on_gpu.hashes, on_cpu.hashes)
    # cuDNN may run the GRU in TF32, and the encoder takes fused kernels: close,
    # not bit-equal. Within ``tolerance`` per class, a row whose two best classes
    # are 2 x tolerance apart keeps its class (453 to 527 of these 600 rows).
    tolerance = 1e-2
    torch.testing.assert_close(on_gpu.scores, on_cpu.scores, atol=tolerance, rtol=0)
    sure = _confident(on_cpu.scores, 2 * tolerance)
    assert int(sure.sum()) > 400
    assert torch.equal(on_gpu.predictions[sure], on_cpu.predictions[sure])


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_autocast_runs_in_low_precision_and_agrees_with_fp32(precision: str) -> None:
    model = Bag().eval()
    seen: list[torch.dtype] = []
    model.head[0].register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    data = random_data(3000)
    base = Settings(device="cuda", padding_check=0, bootstrap=0)
    fp32 = evaluate(model, data, base)
    assert set(seen) == {torch.float32}
    seen.clear()
    low = evaluate(
        model, data, Settings(device="cuda", padding_check=0, bootstrap=0, precision=precision)
    )
    assert set(seen) == {torch.bfloat16 if precision == "bf16" else torch.float16}
    agree = (fp32.predictions.predictions == low.predictions.predictions).double().mean()
    assert agree >= 0.995
    assert low.predictions.scores.dtype == torch.float32  # logits are cast back before softmax
    assert report_json([low])["evaluations"][0]["precision"] == precision


def test_at_most_one_host_sync_per_batch() -> None:
    model = Bag().eval()
    data = random_data(1000)
    batches = 20
    predict(model, data, GPU, batch_size=1000 // batches)  # warm-up: weights on the device
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            got = predict(model, data, GPU, batch_size=1000 // batches)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    assert len(syncs) <= batches, [str(w.message) for w in syncs[:3]]
    assert torch.equal(got.predictions, predict(model, data, CPU, batch_size=50).predictions)


def test_a_real_cuda_oom_halves_the_batch() -> None:
    data = random_data(100)
    got = predict(OOMAbove(limit=10, real=True), data, GPU, batch_size=64)
    assert got.batch_size == 8  # 64 -> 32 -> 16 -> 8
    assert got.predictions.tolist() == [int(data[i][0][0]) % 2 for i in range(100)]


def test_plugin_runs_on_cuda_through_pytest(project: Project) -> None:
    project.data(rule_records(200))
    project.ini(
        model="models:first_token",
        eval_data="eval.jsonl",
        labels=["ham", "spam"],
        device="cuda",
        precision="bf16",
        report="report.json",
    )
    project.test(
        """
        import pytest

        @pytest.mark.seqgate(min_recall={"spam": 0.99})
        def test_quality():
            pass
        """
    )
    result = project.run()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*200 samples*, cuda bf16 autocast, *gates 1/1 passed*"])
    ev = json.loads((project.path / "report.json").read_text())["evaluations"][0]
    assert ev["device"].startswith("cuda") and ev["precision"] == "bf16"


def test_feature_vectors_stay_float32_on_the_way_to_the_gpu() -> None:
    # Pinned, non-blocking copies must not change what the model sees.
    data = SequenceData.from_sequences(
        [torch.randn(k, 4, generator=torch.Generator().manual_seed(k)) for k in range(1, 40)],
        [k % 3 for k in range(1, 40)],
    )
    seen: list[tuple[torch.dtype, str]] = []

    class Probe(nn.Module):
        def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
            seen.append((x.dtype, x.device.type))
            return x.sum(1)[:, :3]

    got = predict(Probe(), data, GPU, batch_size=8)
    want = predict(Probe(), data, CPU, batch_size=8)
    assert set(seen) == {(torch.float32, "cuda"), (torch.float32, "cpu")}
    torch.testing.assert_close(got.scores, want.scores)


def test_a_model_cast_to_bfloat16_runs_on_the_gpu_without_a_false_padding_finding() -> None:
    """A model cast to bfloat16 for serving: its feature inputs are cast to its
    dtype, and cuBLAS products of other batch shapes, which round differently in
    bf16, do not read as padding sensitivity (the bf16 tolerance applies)."""
    data = random_data(600, features=5)
    ev = evaluate(
        PackedGRU(5).to(torch.bfloat16).eval(), data, Settings(device="cuda", bootstrap=0)
    )
    on_cpu = evaluate(
        PackedGRU(5).to(torch.bfloat16).eval(), data, Settings(device="cpu", bootstrap=0)
    )
    sure = _confident(on_cpu.predictions.scores, 0.04)
    assert torch.equal(ev.predictions.predictions[sure], on_cpu.predictions.predictions[sure])
    encoder = evaluate(
        MaskedEncoder().to(torch.bfloat16).eval(), random_data(600), Settings(device="cuda")
    )
    assert not encoder.findings_of("padding_sensitivity")


def test_a_mask_built_from_the_lengths_on_the_gpu_is_told_to_move_them() -> None:
    """The lengths come on the CPU (pack_padded_sequence needs them there): a model
    that builds its mask from them on the GPU is told how to move them."""
    from pytest_seqgate.exceptions import ModelError

    class MaskFromLengths(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embedding = nn.Embedding(100, 3)

        def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
            steps = torch.arange(tokens.shape[1], device=tokens.device)
            mask = (steps[None] < lengths[:, None]).unsqueeze(-1)
            return (self.embedding(tokens) * mask).sum(1)

    with pytest.raises(ModelError, match=r"moves them there first \(lengths.to\(tokens.device"):
        evaluate(MaskFromLengths(), random_data(50), Settings(device="cuda"))

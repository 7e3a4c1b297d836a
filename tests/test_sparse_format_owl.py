"""The sparse-bitmask saved format (exact round trip, smaller files) and OWL's layerwise schedule."""

from __future__ import annotations

import json

import pytest
import torch

from core.io.saving import save_model
from core.models.formats import MANIFEST, model_format
from core.models.loading import load_model
from core.models.model_info import folder_weight_bytes
from core.techniques.prune.magnitude import magnitude_mask
from core.techniques.prune.owl import outlier_ratio, owl_layer_sparsities, schedule_for_blocks
from core.techniques.prune.sparse_format import (
    FORMAT,
    compress_weight,
    decompress_weight,
    mark_sparse,
    sparse_bytes_estimate,
)


def _prune_half(model) -> None:
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Linear) and name != "lm_head":
                module.weight.mul_(magnitude_mask(module.weight, 0.5))


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_codec_round_trip_is_exact(dtype):
    torch.manual_seed(0)
    weight = torch.randn(7, 13).to(dtype)
    weight[weight.abs() < 0.6] = 0
    weight[3] = 0  # an all-zero row
    parts = compress_weight(weight)
    assert parts["bitmask"].dtype == torch.uint8 and list(parts["bitmask"].shape) == [7, 2]
    assert parts["compressed"].dtype == dtype and parts["compressed"].numel() == int(torch.count_nonzero(weight))
    assert parts["row_offsets"].tolist()[:2] == [0, int(torch.count_nonzero(weight[0]))]
    assert torch.equal(decompress_weight(parts), weight)


def test_sparse_save_reloads_identical_logits_and_is_smaller(tmp_path, tiny_llama, tiny_tokenizer):
    _prune_half(tiny_llama)
    ids = torch.randint(0, len(tiny_tokenizer), (1, 12))
    before = _logits(tiny_llama, ids)

    dense_dir = save_model(tiny_llama, tiny_tokenizer, tmp_path / "dense")
    estimate = sparse_bytes_estimate(tiny_llama)
    mark_sparse(tiny_llama)
    sparse_dir = save_model(tiny_llama, tiny_tokenizer, tmp_path / "sparse")

    manifest = json.loads((sparse_dir / MANIFEST).read_text())
    assert manifest["format"] == FORMAT and manifest["plain_transformers"] is False
    assert manifest["sparsity_config"]["global_sparsity"] > 0.3
    config = json.loads((sparse_dir / "config.json").read_text())
    assert "quantization_config" not in config
    from transformers import AutoModelForCausalLM

    with pytest.raises(OSError):  # refused loudly, never loaded with random Linear weights
        AutoModelForCausalLM.from_pretrained(sparse_dir)

    dense_bytes, sparse_bytes = folder_weight_bytes(dense_dir), folder_weight_bytes(sparse_dir)
    assert sparse_bytes < 0.8 * dense_bytes
    assert estimate["sparse_layers"] == 14  # 7 Linears in each of 2 blocks; lm_head stays dense
    assert abs(estimate["sparse_bytes"] - sparse_bytes) < 0.05 * sparse_bytes

    reloaded = load_model(str(sparse_dir))
    assert torch.equal(_logits(reloaded.model, ids), before)
    assert model_format(reloaded.model)["format"] == FORMAT  # saving it again keeps the format
    again = save_model(reloaded.model, reloaded.tokenizer, tmp_path / "again")
    assert torch.equal(_logits(load_model(str(again)).model, ids), before)


def test_tied_embeddings_round_trip(tmp_path, tiny_tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(1)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tiny_tokenizer), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                         tie_word_embeddings=True)).eval()
    _prune_half(model)
    ids = torch.randint(0, len(tiny_tokenizer), (1, 8))
    before = _logits(model, ids)
    mark_sparse(model)
    folder = save_model(model, tiny_tokenizer, tmp_path / "tied")
    reloaded = load_model(str(folder)).model
    assert reloaded.lm_head.weight.data_ptr() == reloaded.model.embed_tokens.weight.data_ptr()
    assert torch.equal(_logits(reloaded, ids), before)


def test_dense_model_estimate_keeps_dense_layers(tiny_llama):
    estimate = sparse_bytes_estimate(tiny_llama)  # nothing pruned: the bitmask would only add bytes
    assert estimate["sparse_layers"] == 0 and estimate["sparse_bytes"] == estimate["dense_bytes"]


# ------------------------------------------------------------------ OWL
def test_owl_mean_equals_target_and_bounds_hold():
    ratios = [0.010, 0.030, 0.002, 0.020, 0.015, 0.004]
    for target, lam in [(0.5, 0.08), (0.7, 0.1), (0.05, 0.08), (0.95, 0.2)]:
        sparsities = owl_layer_sparsities(ratios, target, lam)
        assert sum(sparsities) / len(sparsities) == pytest.approx(target, abs=1e-12)
        assert all(target - lam - 1e-12 <= s <= target + lam + 1e-12 for s in sparsities)
        assert all(0.0 <= s <= 0.99 for s in sparsities)


def test_owl_more_outliers_means_less_sparsity():
    ratios = [0.010, 0.030, 0.002, 0.020]
    sparsities = owl_layer_sparsities(ratios, 0.5, 0.08)
    order_by_ratio = sorted(range(4), key=lambda i: ratios[i])
    order_by_sparsity = sorted(range(4), key=lambda i: -sparsities[i])
    assert order_by_ratio == order_by_sparsity
    # the reference normalisation: the spread is exactly 2λ when no shrinking is needed
    symmetric = owl_layer_sparsities([0.0, 0.01, 0.02, 0.03], 0.5, 0.08)
    assert symmetric == pytest.approx([0.58, 0.5 + 0.08 / 3, 0.5 - 0.08 / 3, 0.42])


def test_owl_skewed_ratios_are_shrunk_into_bounds_keeping_mean():
    sparsities = owl_layer_sparsities([0.0, 0.0, 0.0, 1.0], 0.5, 0.1)  # reference would give 0.5 - 0.15
    assert min(sparsities) == pytest.approx(0.4) and sum(sparsities) / 4 == pytest.approx(0.5)


def test_owl_uniform_cases():
    assert owl_layer_sparsities([0.2, 0.2, 0.2], 0.6, 0.08) == [0.6, 0.6, 0.6]
    assert owl_layer_sparsities([0.1, 0.3], 0.6, 0.0) == [0.6, 0.6]
    assert schedule_for_blocks([0.1, 0.3], 0.5, "uniform") == [0.5, 0.5]
    assert owl_layer_sparsities([], 0.5) == []
    with pytest.raises(ValueError):
        schedule_for_blocks([0.1], 0.5, "cosine")


def test_outlier_ratio_counts_scores_above_m_times_mean():
    weight = torch.ones(2, 10)
    norms = torch.ones(10)
    assert outlier_ratio(weight, norms) == 0.0
    norms[0] = 100.0  # column 0 scores 100; mean = (100 + 9) / 10 = 10.9; 100 > 5 × 10.9
    assert outlier_ratio(weight, norms, m=5) == pytest.approx(2 / 20)
    assert outlier_ratio(weight, norms, m=10) == 0.0
    pooled = outlier_ratio([weight, torch.ones(3, 10)], [norms, torch.ones(10)], m=5)
    assert 0 < pooled < 2 / 20  # pooled over the block: the quiet layer dilutes the mean and count


def test_pruning_step_saves_sparse_when_asked(tmp_path, tiny_llama_dir):
    """save_format: sparse makes the run's output folder really smaller, and it reloads identically."""
    from core.engine.recipe import load_recipe
    from core.engine.runner import run_recipe
    from core.models.loading import load_model
    from tests.conftest import SAMPLE_TEXT
    from tests.helpers import collect, write_recipe

    text = tmp_path / "text.txt"
    text.write_text(SAMPLE_TEXT * 2)
    sizes = {}
    for save_format in ("dense", "sparse"):
        recipe = load_recipe(write_recipe(tmp_path / f"{save_format}.yaml", tiny_llama_dir, text))
        recipe.steps[0].config.save_format = save_format
        _, report = collect(run_recipe(recipe, tmp_path / save_format))
        sizes[save_format] = report["after"]["bytes_on_disk"]
        assert report["steps"][0]["metrics"]["sparse_bytes"] < report["steps"][0]["metrics"]["dense_bytes"]
    assert sizes["sparse"] < 0.8 * sizes["dense"]
    dense, sparse = load_model(str(tmp_path / "dense")).model, load_model(str(tmp_path / "sparse")).model
    ids = torch.tensor([[3, 4, 5, 6]])
    assert torch.equal(dense(ids).logits, sparse(ids).logits)

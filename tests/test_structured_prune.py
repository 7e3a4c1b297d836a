"""Structured pruning (MLP neurons, attention heads, whole layers): real shape changes plain transformers reloads."""

import pytest
import torch

from core.engine.params import config_from_dict
from core.engine.recipe import DataSpec, Recipe, load_recipe
from core.engine.runner import RunContext, run_recipe
from core.errors import RecipeError
from core.events import LayerStat, drain
from core.techniques.prune.structured import (
    AttentionPruneConfig,
    LayerDropConfig,
    MLPPruneConfig,
    apply_attention_prune,
    apply_layer_drop,
    apply_mlp_prune,
    kept_width,
    kv_group_scores,
    neuron_scores,
    top_neurons,
)
from tests.conftest import SAMPLE_TEXT
from tests.helpers import collect, saved_perplexity, write_recipe


@pytest.fixture
def ctx(tiny_tokenizer, tmp_path):
    text = tmp_path / "calibration.txt"
    text.write_text(SAMPLE_TEXT + "\n\n" + SAMPLE_TEXT.upper())
    recipe = Recipe(data=DataSpec(calibration=str(text), sequence_length=16, calibration_windows=4))
    return RunContext(recipe, tiny_tokenizer, "cpu")



def _ids(tokenizer):
    return torch.tensor([tokenizer(SAMPLE_TEXT[:200])["input_ids"][:24]])


def _reload_logits_match(model, tokenizer, folder):
    from transformers import AutoModelForCausalLM

    ids = _ids(tokenizer)
    model.save_pretrained(folder)
    reloaded = AutoModelForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        assert torch.equal(model(ids).logits, reloaded(ids).logits)
    return reloaded


# ------------------------------------------------------------------------------------ pure math
def test_kept_width_rounds_and_rejects_no_op():
    assert kept_width(128, 0.25, 8) == 96
    assert kept_width(128, 0.3, 8) == 88  # 89.6 -> 88
    assert kept_width(128, 0.99, 8) == 8  # never zero neurons
    with pytest.raises(RecipeError, match="removes nothing"):
        kept_width(128, 0.01, 8)


def test_neuron_scores_and_top_neurons():
    down = torch.tensor([[1.0, 0.0, 3.0], [0.0, 2.0, 4.0]])  # column norms 1, 2, 5
    scores = neuron_scores(torch.tensor([10.0, 1.0, 1.0]), down)
    assert scores.tolist() == pytest.approx([10.0, 2.0, 5.0])
    assert top_neurons(scores, 2).tolist() == [0, 2]


@pytest.mark.parametrize("values,match", [({"reduction": 1.0}, "reduction"), ({"reduction": 0}, "reduction"),
                                          ({"multiple_of": 0}, "multiple_of")])
def test_mlp_config_rejects_nonsense(values, match):
    with pytest.raises(RecipeError, match=match):
        config_from_dict(MLPPruneConfig, values)


def test_layer_drop_config_rejects_zero():
    with pytest.raises(RecipeError, match="layers_to_drop"):
        config_from_dict(LayerDropConfig, {"layers_to_drop": 0})


# ---------------------------------------------------------------------------------- MLP pruning
def test_mlp_prune_shapes_and_reload(tiny_llama, tiny_tokenizer, ctx, tmp_path):
    before = tiny_llama.num_parameters()
    report = drain(apply_mlp_prune(tiny_llama, MLPPruneConfig(reduction=0.25), ctx))
    assert tiny_llama.config.intermediate_size == 96
    for layer in tiny_llama.model.layers:
        mlp = layer.mlp
        assert mlp.gate_proj.weight.shape == (96, 64) and mlp.up_proj.weight.shape == (96, 64)
        assert mlp.down_proj.weight.shape == (64, 96) and mlp.down_proj.in_features == 96
        assert mlp.gate_proj.out_features == 96
    removed = 2 * 3 * 32 * 64
    assert tiny_llama.num_parameters() == before - removed
    assert report.metrics["parameters_after"] == before - removed and report.notes
    reloaded = _reload_logits_match(tiny_llama, tiny_tokenizer, tmp_path / "pruned")
    assert reloaded.config.intermediate_size == 96


def test_mlp_prune_removes_dead_neurons_first(tiny_llama, ctx):
    dead = torch.arange(0, 128, 4)  # 32 neurons whose input to down_proj is always zero
    originals = []
    for layer in tiny_llama.model.layers:
        with torch.no_grad():
            layer.mlp.up_proj.weight[dead] = 0
        originals.append(layer.mlp.gate_proj.weight.detach().clone())
    events, report = collect(apply_mlp_prune(tiny_llama, MLPPruneConfig(reduction=0.25), ctx))
    alive = torch.tensor([k for k in range(128) if k not in set(dead.tolist())])
    for layer, original in zip(tiny_llama.model.layers, originals, strict=True):
        assert torch.equal(layer.mlp.gate_proj.weight, original[alive])
    stats = [e for e in events if isinstance(e, LayerStat)]
    assert len(stats) == 2 and all(s.value == 0.0 for s in stats)
    assert all(row["removed_importance"] == 0.0 for row in report.layers)


# ---------------------------------------------------------------------------------- layer drop
def test_layer_drop_reload_and_generate(tiny_llama, tiny_tokenizer, ctx, tmp_path):
    before = tiny_llama.num_parameters()
    block_params = sum(p.numel() for p in tiny_llama.model.layers[0].parameters())
    events, report = collect(apply_layer_drop(tiny_llama, LayerDropConfig(layers_to_drop=1), ctx))
    stats = [e for e in events if isinstance(e, LayerStat) and e.name == "block_influence"]
    assert [s.layer for s in stats] == ["model.layers.0", "model.layers.1"]
    assert all(0.0 <= s.value <= 2.0 for s in stats)
    dropped = min(range(2), key=lambda i: stats[i].value)
    assert [row["dropped"] for row in report.layers] == [i == dropped for i in range(2)]
    assert tiny_llama.config.num_hidden_layers == 1 and len(tiny_llama.model.layers) == 1
    assert tiny_llama.model.layers[0].self_attn.layer_idx == 0
    assert tiny_llama.num_parameters() == before - block_params
    reloaded = _reload_logits_match(tiny_llama, tiny_tokenizer, tmp_path / "dropped")
    assert reloaded.config.num_hidden_layers == 1
    ids = _ids(tiny_tokenizer)
    for model in (tiny_llama, reloaded):
        out = model.generate(ids, max_new_tokens=5, do_sample=False, pad_token_id=tiny_tokenizer.pad_token_id)
        assert out.shape == (1, ids.shape[1] + 5)


def test_layer_drop_renumbers_layer_idx_and_layer_types(tiny_llama, ctx):
    tiny_llama.config.layer_types = ["full_attention", "sliding_attention"]
    tiny_llama.model.layers[1].self_attn.layer_idx = 1
    from core.techniques.prune.structured import drop_blocks

    assert drop_blocks(tiny_llama, [0]) == [1]
    assert tiny_llama.config.layer_types == ["sliding_attention"]
    assert tiny_llama.model.layers[0].self_attn.layer_idx == 0


def test_layer_drop_cannot_remove_every_layer(tiny_llama, ctx):
    with pytest.raises(RecipeError, match="would remove every layer"):
        drain(apply_layer_drop(tiny_llama, LayerDropConfig(layers_to_drop=2), ctx))
    assert len(tiny_llama.model.layers) == 2


# ---------------------------------------------------------------------------------- attention heads
def test_kv_group_scores_sum_query_heads_of_each_group():
    o_weight = torch.ones(2, 8)  # 4 query heads of size 2, 2 kv groups -> columns 0-3 and 4-7
    norms = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 2.0])
    assert kv_group_scores(norms, o_weight, 2).tolist() == pytest.approx([4 * 2**0.5, 2 * 2**0.5])


def test_attention_prune_shapes_reload_generate(tiny_llama, tiny_tokenizer, ctx, tmp_path):
    before = tiny_llama.num_parameters()
    report = drain(apply_attention_prune(tiny_llama, AttentionPruneConfig(kv_heads_to_remove=1), ctx))
    config = tiny_llama.config
    assert (config.num_attention_heads, config.num_key_value_heads, config.head_dim) == (2, 1, 16)
    for layer in tiny_llama.model.layers:
        attention = layer.self_attn
        assert attention.q_proj.weight.shape == (32, 64) and attention.k_proj.weight.shape == (16, 64)
        assert attention.v_proj.weight.shape == (16, 64) and attention.o_proj.weight.shape == (64, 32)
    assert tiny_llama.num_parameters() == before - 2 * 64 * (32 + 16 + 16 + 32)
    assert report.metrics["parameters_after"] == tiny_llama.num_parameters() and report.notes
    reloaded = _reload_logits_match(tiny_llama, tiny_tokenizer, tmp_path / "heads")
    assert reloaded.config.num_key_value_heads == 1
    ids = _ids(tiny_tokenizer)
    out = reloaded.generate(ids, max_new_tokens=5, do_sample=False, pad_token_id=tiny_tokenizer.pad_token_id)
    assert out.shape == (1, ids.shape[1] + 5)


def test_attention_prune_removes_dead_group_first(tiny_llama, ctx):
    originals = []
    for layer in tiny_llama.model.layers:
        with torch.no_grad():
            layer.self_attn.v_proj.weight[:16] = 0  # kv group 0 outputs zeros: query heads 0-1 are dead
        originals.append(layer.self_attn.q_proj.weight.detach().clone())
    events, report = collect(apply_attention_prune(tiny_llama, AttentionPruneConfig(kv_heads_to_remove=1), ctx))
    for layer, original in zip(tiny_llama.model.layers, originals, strict=True):
        assert torch.equal(layer.self_attn.q_proj.weight, original[32:])
    assert [row["kv_heads_kept"] for row in report.layers] == [[1], [1]]
    assert all(row["removed_importance"] == 0.0 for row in report.layers)


def test_attention_prune_cannot_remove_every_head(tiny_llama, ctx):
    with pytest.raises(RecipeError, match="would remove every attention head"):
        drain(apply_attention_prune(tiny_llama, AttentionPruneConfig(kv_heads_to_remove=2), ctx))
    with pytest.raises(RecipeError, match="kv_heads_to_remove"):
        config_from_dict(AttentionPruneConfig, {"kv_heads_to_remove": 0})


# ---------------------------------------------------------------------------------- end to end
@pytest.mark.parametrize("technique,params", [("mlp_prune", {"reduction": 0.25}), ("layer_drop", {}),
                                              ("attention_prune", {})])
def test_structured_end_to_end(tmp_path, tiny_llama_dir, text_file, tiny_tokenizer, technique, params):
    from transformers import AutoModelForCausalLM

    path = write_recipe(tmp_path / "recipe.yaml", tiny_llama_dir, text_file,
                        steps=[{"technique": technique, "params": params}])
    events, report = collect(run_recipe(load_recipe(path), tmp_path / "out"))
    step = report["steps"][0]
    assert step["metrics"]["parameters_after"] < step["metrics"]["parameters_before"]
    assert report["after"]["parameters"] == step["metrics"]["parameters_after"]
    assert report["after"]["perplexity"]["perplexity"] == pytest.approx(saved_perplexity(tmp_path / "out", text_file),
                                                                        rel=1e-4)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    if technique == "mlp_prune":
        assert model.config.intermediate_size == 96
        assert len([e for e in events if isinstance(e, LayerStat)]) == 2
    elif technique == "layer_drop":
        assert model.config.num_hidden_layers == 1
    else:
        assert (model.config.num_attention_heads, model.config.num_key_value_heads) == (2, 1)
    assert model.num_parameters() == step["metrics"]["parameters_after"]
    with torch.no_grad():
        assert torch.isfinite(model(_ids(tiny_tokenizer)).logits).all()


def test_layer_drop_end_to_end_rejects_dropping_all(tmp_path, tiny_llama_dir, text_file):
    path = write_recipe(tmp_path / "recipe.yaml", tiny_llama_dir, text_file,
                        steps=[{"technique": "layer_drop", "params": {"layers_to_drop": 2}}])
    with pytest.raises(RecipeError, match="would remove every layer"):
        collect(run_recipe(load_recipe(path), tmp_path / "out"))
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------- other architectures (biases, layer types)
@pytest.mark.parametrize("architecture", ["qwen2", "qwen3"])
def test_all_structured_steps_on_other_architectures(architecture, tiny_tokenizer, ctx, tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    config = AutoConfig.for_model(architecture, vocab_size=len(tiny_tokenizer), hidden_size=64,
                                  intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                                  num_key_value_heads=2, head_dim=16, max_position_embeddings=256,
                                  tie_word_embeddings=True, use_sliding_window=False,
                                  layer_types=["full_attention"] * 3)
    model = AutoModelForCausalLM.from_config(config).eval()
    drain(apply_mlp_prune(model, MLPPruneConfig(reduction=0.5), ctx))
    drain(apply_attention_prune(model, AttentionPruneConfig(), ctx))
    drain(apply_layer_drop(model, LayerDropConfig(layers_to_drop=1), ctx))
    assert (model.config.intermediate_size, model.config.num_key_value_heads, model.config.num_hidden_layers,
            len(model.config.layer_types)) == (64, 1, 2, 2)
    reloaded = _reload_logits_match(model, tiny_tokenizer, tmp_path / architecture)
    ids = _ids(tiny_tokenizer)
    out = reloaded.generate(ids, max_new_tokens=5, do_sample=False, pad_token_id=tiny_tokenizer.pad_token_id)
    assert out.shape == (1, ids.shape[1] + 5)


# ------------------------------------------------------------- explicit surgery (no calibration)
def _logits(model, tokenizer):
    with torch.no_grad():
        return model(_ids(tokenizer)).logits


def test_keep_mlp_neurons_removing_silent_neurons_keeps_logits(tiny_llama, tiny_tokenizer, tmp_path):
    from core.techniques.prune.structured import keep_mlp_neurons

    keep = [torch.arange(0, 128, 2), torch.arange(1, 128, 2)]  # different neurons per layer, same width
    for layer, kept in zip(tiny_llama.model.layers, keep, strict=True):
        silent = torch.ones(128, dtype=torch.bool)
        silent[kept] = False
        with torch.no_grad():
            layer.mlp.down_proj.weight[:, silent] = 0  # the neurons we remove contribute nothing
    expected = _logits(tiny_llama, tiny_tokenizer)
    assert keep_mlp_neurons(tiny_llama, keep) == 64
    assert tiny_llama.model.layers[1].mlp.up_proj.weight.shape == (64, 64)
    torch.testing.assert_close(_logits(tiny_llama, tiny_tokenizer), expected, rtol=1e-5, atol=1e-5)
    _reload_logits_match(tiny_llama, tiny_tokenizer, tmp_path / "narrow")


def test_keep_kv_groups_removing_silent_group_keeps_logits(tiny_llama, tiny_tokenizer, tmp_path):
    from core.techniques.prune.structured import keep_kv_groups

    head_dim = 16  # hidden 64 / 4 heads; 2 query heads per key/value group
    for layer in tiny_llama.model.layers:
        with torch.no_grad():
            layer.self_attn.o_proj.weight[:, 0:2 * head_dim] = 0  # group 0's query heads contribute nothing
    expected = _logits(tiny_llama, tiny_tokenizer)
    assert keep_kv_groups(tiny_llama, [[1], [1]]) == (2, 1)
    assert tiny_llama.config.num_key_value_heads == 1 and tiny_llama.config.head_dim == head_dim
    assert tiny_llama.model.layers[0].self_attn.k_proj.weight.shape == (head_dim, 64)
    torch.testing.assert_close(_logits(tiny_llama, tiny_tokenizer), expected, rtol=1e-5, atol=1e-5)
    _reload_logits_match(tiny_llama, tiny_tokenizer, tmp_path / "fewer_heads")


@pytest.mark.parametrize("call, match", [
    (lambda m: __import__("core.techniques.prune.structured", fromlist=["x"]).keep_mlp_neurons(
        m, [range(64), range(32)]), "same number"),
    (lambda m: __import__("core.techniques.prune.structured", fromlist=["x"]).keep_mlp_neurons(
        m, [range(64)]), "2 layers"),
    (lambda m: __import__("core.techniques.prune.structured", fromlist=["x"]).keep_mlp_neurons(
        m, [[0, 200], [0, 1]]), "must lie in"),
    (lambda m: __import__("core.techniques.prune.structured", fromlist=["x"]).keep_kv_groups(
        m, [[0, 0], [0, 1]]), "listed twice"),
    (lambda m: __import__("core.techniques.prune.structured", fromlist=["x"]).keep_kv_groups(
        m, [[], []]), "at least one"),
    (lambda m: __import__("core.techniques.prune.structured", fromlist=["x"]).drop_blocks(m, [0, 1]),
     "every one"),
    (lambda m: __import__("core.techniques.prune.structured", fromlist=["x"]).drop_blocks(m, [5]), "must lie in"),
])
def test_explicit_surgery_rejects_bad_choices(tiny_llama, call, match):
    shapes = {n: tuple(p.shape) for n, p in tiny_llama.named_parameters()}
    with pytest.raises(ValueError, match=match):
        call(tiny_llama)
    assert {n: tuple(p.shape) for n, p in tiny_llama.named_parameters()} == shapes  # nothing half-done


def test_decode_read_bound_counts_every_matrix_once_and_one_embedding_row(tiny_llama):
    """bench_structured's bound: every Linear (lm_head too) is read per token, the embedding only one row."""
    from bench.bench_structured import values_read_per_token
    from core.techniques.prune.structured import keep_mlp_neurons

    config = tiny_llama.config
    layer = 2 * 64 * 64 + 2 * 64 * 32 + 3 * 64 * 128 + 2 * 64  # q, o; k, v (2 kv heads of 16); MLP; two norms
    dense = values_read_per_token(tiny_llama, context_tokens=10)
    assert dense["weights"] == 2 * layer + 64 + config.vocab_size * 64 + 64  # + final norm, lm_head, one row
    assert dense["kv_cache"] == 2 * 2 * 2 * 16 * 10
    keep_mlp_neurons(tiny_llama, [range(96)] * 2)
    assert dense["weights"] - values_read_per_token(tiny_llama, 10)["weights"] == 2 * 3 * 64 * 32

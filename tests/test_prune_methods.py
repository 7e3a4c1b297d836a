"""Wanda and SparseGPT: mask math on small layers, error compensation, and the handlers end to end."""

import pytest
import torch
from torch import nn

from core.engine.params import config_from_dict
from core.engine.recipe import load_recipe
from core.engine.runner import run_recipe
from core.errors import DataError, RecipeError
from core.events import LayerStat
from core.techniques.prune.magnitude import magnitude_mask
from core.techniques.prune.masks import nm_mask, parse_pattern, row_topk_mask
from core.techniques.prune.sparsegpt import SparseGPTConfig, sparsegpt_prune
from core.techniques.prune.wanda import WandaConfig, wanda_mask, wanda_scores
from tests.helpers import collect, run_step, saved_perplexity, write_recipe


def _calibration(in_features, tokens=512, seed=0):
    """Random inputs [in, tokens] with uneven feature scales and correlated features, like real activations."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(in_features, tokens, generator=g) * torch.rand(in_features, 1, generator=g) * 3
    return x + torch.randn(1, tokens, generator=g)


def _hessian(x):
    return 2.0 / x.shape[1] * x @ x.T


def _output_error(weight, pruned, x):
    return float(((weight - pruned) @ x).pow(2).sum() / x.shape[1])


def _groups_ok(weight, n, m):
    nonzero = (weight != 0).reshape(weight.shape[0], -1, m).sum(-1)
    return bool((nonzero == n).all())


# ----------------------------------------------------------------------------------------- masks
def test_nm_mask_keeps_n_highest_in_every_group():
    scores = torch.tensor([[1.0, 4.0, 3.0, 2.0, 8.0, 5.0, 6.0, 7.0]])
    assert nm_mask(scores, 2, 4).tolist() == [[False, True, True, False, True, False, False, True]]
    mask = nm_mask(torch.rand(6, 32), 4, 8)
    assert (mask.reshape(6, 4, 8).sum(-1) == 4).all()


def test_nm_mask_rejects_width_not_multiple_of_m():
    with pytest.raises(RecipeError, match="not a multiple of 4"):
        nm_mask(torch.rand(3, 10), 2, 4)


def test_row_topk_mask_same_count_per_row():
    scores = torch.rand(6, 8)
    mask = row_topk_mask(scores, 0.25)
    assert (mask.sum(1) == 6).all()
    for row in range(6):
        assert scores[row][mask[row]].min() >= scores[row][~mask[row]].max()


def test_parse_pattern():
    assert parse_pattern("unstructured") == (0, 0) and parse_pattern("2:4") == (2, 4)
    for bad in ("3:2", "x", "0:4"):
        with pytest.raises(RecipeError):
            parse_pattern(bad)


# ----------------------------------------------------------------------------------------- Wanda
def test_wanda_mask_per_row_and_prefers_large_scores():
    layer = nn.Linear(8, 6)
    norms = torch.rand(8) + 0.1
    mask = wanda_mask(layer.weight, norms, 0.5)
    assert mask.shape == (6, 8) and (mask.sum(1) == 4).all()  # exactly (1 - s) kept in every row
    scores = wanda_scores(layer.weight, norms)
    assert torch.allclose(scores, layer.weight.detach().abs() * norms)
    for row in range(6):
        assert scores[row][mask[row]].min() >= scores[row][~mask[row]].max()


def test_wanda_uses_activations_not_only_magnitude():
    weight = torch.tensor([[1.0, 2.0]])
    assert wanda_mask(weight, torch.tensor([10.0, 1.0]), 0.5).tolist() == [[True, False]]
    assert magnitude_mask(weight, 0.5).tolist() == [[False, True]]


def test_wanda_nm_mask():
    weight = torch.randn(64, 32)
    mask = wanda_mask(weight, torch.rand(32), 0.9, 2, 4)  # sparsity ignored for N:M
    assert _groups_ok(weight * mask, 2, 4)


# ------------------------------------------------------------------------------------- SparseGPT
@pytest.mark.parametrize("rows,columns,block", [(6, 8, 128), (64, 32, 128), (64, 256, 64)])
def test_sparsegpt_beats_wanda_and_magnitude_unstructured(rows, columns, block):
    torch.manual_seed(rows + columns)
    weight, x = torch.randn(rows, columns), _calibration(columns)
    pruned, error = sparsegpt_prune(weight, _hessian(x), 0.5, block_size=block)
    assert int((pruned == 0).sum()) == rows * columns // 2
    assert error == pytest.approx(_output_error(weight, pruned, x), rel=1e-3)
    wanda = weight * wanda_mask(weight, x.norm(dim=1), 0.5)
    magnitude = weight * magnitude_mask(weight, 0.5)
    assert error < _output_error(weight, wanda, x) and error < _output_error(weight, magnitude, x)


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8)])
def test_sparsegpt_nm_pattern_and_error(n, m):
    torch.manual_seed(1)
    weight, x = torch.randn(64, 32), _calibration(32)
    pruned, error = sparsegpt_prune(weight, _hessian(x), 0.0, n, m)
    assert _groups_ok(pruned, n, m)
    wanda = weight * wanda_mask(weight, x.norm(dim=1), 0.0, n, m)
    magnitude = weight * nm_mask(weight.abs(), n, m)
    assert error < _output_error(weight, wanda, x) and error < _output_error(weight, magnitude, x)


def test_sparsegpt_dead_inputs_and_dtype():
    weight, x = torch.randn(8, 16), _calibration(16)
    x[3] = 0  # an input that never fires: H_33 = 0
    pruned, _ = sparsegpt_prune(weight.to(torch.bfloat16), _hessian(x), 0.25)
    assert pruned.dtype == torch.bfloat16 and (pruned[:, 3] == 0).all()


def test_sparsegpt_rejects_misaligned_nm():
    with pytest.raises(RecipeError, match="multiple of 4"):
        sparsegpt_prune(torch.randn(4, 10), torch.eye(10), 0.5, 2, 4)


# ------------------------------------------------------------------------------------ configs
@pytest.mark.parametrize("cls", [WandaConfig, SparseGPTConfig])
def test_configs_reject_nonsense(cls):
    with pytest.raises(RecipeError, match="sparsity"):
        config_from_dict(cls, {"sparsity": 1.2})
    with pytest.raises(RecipeError, match="pattern"):
        config_from_dict(cls, {"pattern": "3:2"})
    with pytest.raises(RecipeError, match="targets"):
        config_from_dict(cls, {"targets": []})
    assert config_from_dict(cls, {"pattern": "4:8"}).pattern == "4:8"


def test_sparsegpt_block_size_must_fit_pattern():
    with pytest.raises(RecipeError, match="block_size"):
        config_from_dict(SparseGPTConfig, {"pattern": "4:8", "block_size": 12})


# ------------------------------------------------------------------------------ end to end
@pytest.mark.parametrize("technique,params,expected", [
    ("wanda_prune", {"sparsity": 0.5}, 0.5),
    ("wanda_prune", {"sparsity": 0.3, "targets": ["*mlp*"]}, 0.3),
    ("wanda_prune", {"pattern": "2:4"}, 0.5),
    ("sparsegpt_prune", {"sparsity": 0.5}, 0.5),
    ("sparsegpt_prune", {"pattern": "4:8", "block_size": 32}, 0.5),
])
def test_handlers_end_to_end(tmp_path, tiny_llama_dir, text_file, technique, params, expected):
    events, report = run_step(tmp_path, tiny_llama_dir, text_file, technique, params)
    stats = [e for e in events if isinstance(e, LayerStat) and e.name == "sparsity"]
    targets = 6 if params.get("targets") else 14  # 2 blocks x (3 mlp | 7) Linears; never lm_head
    assert len(stats) == targets and len({s.layer for s in stats}) == targets
    assert all(s.value == pytest.approx(expected, abs=0.02) for s in stats)
    assert not any("lm_head" in s.layer for s in stats)
    step = report["steps"][0]
    assert step["metrics"]["sparsity"] == pytest.approx(expected, abs=0.01) and step["notes"]
    if technique == "sparsegpt_prune":
        assert step["metrics"]["reconstruction_error"] > 0
    # the reported number is the saved model's, measured the standard way
    assert report["after"]["perplexity"]["perplexity"] == pytest.approx(saved_perplexity(tmp_path / "out", text_file),
                                                                        rel=1e-4)


def test_too_short_calibration_data_is_a_data_error(tmp_path, tiny_llama_dir, text_file):
    short = tmp_path / "short.txt"
    short.write_text("only a few words")
    path = write_recipe(tmp_path / "recipe.yaml", tiny_llama_dir, text_file,
                        data={"calibration": str(short)},
                        steps=[{"technique": "sparsegpt_prune", "params": {}}])
    with pytest.raises(DataError, match="too short"):
        collect(run_recipe(load_recipe(path), tmp_path / "out"))
    assert not (tmp_path / "out").exists()

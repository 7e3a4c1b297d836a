"""Low-rank factorization: the math on small layers, rank allocation, the technique end to end, reload."""

import pytest
import torch
from torch import nn

from core.engine.params import config_from_dict
from core.errors import RecipeError
from core.events import LayerStat
from core.models.loading import load_model
from core.techniques.lowrank.allocate import allocate_ranks, layer_params
from core.techniques.lowrank.factorized import (
    FactorizedLinear,
    break_even_rank,
    output_covariance,
    rom_factors,
    svd_factors,
    whitened_svd_factors,
)
from core.techniques.lowrank.format import merge_to_dense
from core.techniques.lowrank.svd import SVDLowRankConfig
from tests.helpers import run_step


def _correlated_inputs(features=16, tokens=400, seed=0):
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(features, features, generator=g)
    return (mix @ torch.randn(features, tokens, generator=g)) * torch.rand(features, 1, generator=g) * 3


def _out_err(w, down, up, x):
    return float(((w - up @ down) @ x).norm())


# ------------------------------------------------------------------------------------ math
def test_plain_svd_error_is_the_tail_singular_values():
    w = torch.randn(24, 16, generator=torch.Generator().manual_seed(1))
    s = torch.linalg.svdvals(w)
    for k in (1, 5, 12):
        down, up = svd_factors(w, k)
        assert down.shape == (k, 16) and up.shape == (24, k)
        assert float((w - up @ down).norm()) == pytest.approx(float(s[k:].pow(2).sum().sqrt()), rel=1e-4)


@pytest.mark.parametrize("k", [2, 5, 10])
def test_data_aware_factors_beat_plain_svd_on_outputs(k):
    w = torch.randn(24, 16, generator=torch.Generator().manual_seed(2))
    x = _correlated_inputs()
    h = 2.0 / x.shape[1] * x @ x.T
    plain = _out_err(w, *svd_factors(w, k), x)
    whitened = _out_err(w, *whitened_svd_factors(w, h, k, damp=1e-6), x)
    rom = _out_err(w, *rom_factors(w, output_covariance(w, h), k), x)
    assert whitened < plain and rom < plain
    assert whitened == pytest.approx(rom, rel=1e-3)  # both are the best rank-k approximation of W X


def test_factorized_linear_matches_factors_and_keeps_bias():
    linear = nn.Linear(16, 24)
    down, up = svd_factors(linear.weight.detach(), 16)  # full rank: exact
    module = FactorizedLinear.from_factors(linear, down, up)
    x = torch.randn(3, 16)
    assert torch.allclose(module(x), linear(x), atol=1e-5)
    assert module.factorization_info()["params"] == 16 * 40


# ------------------------------------------------------------------------------ allocation
SHAPES = {"a": (64, 64), "b": (128, 64), "c": (64, 128), "d": (32, 64)}


def _reduction(ranks):
    before = sum(m * n for m, n in SHAPES.values())
    return 1 - sum(layer_params(ranks[k], *SHAPES[k]) for k in SHAPES) / before


@pytest.mark.parametrize("target", [0.1, 0.2, 0.4])
def test_allocations_meet_the_target_and_never_pass_break_even(target):
    g = torch.Generator().manual_seed(0)
    spectra = {k: torch.sort(torch.rand(min(s), generator=g) ** (i + 1), descending=True).values
               for i, (k, s) in enumerate(SHAPES.items())}
    sensitivity = {"a": 1.0, "b": 0.1, "c": 0.5, "d": 2.0}
    for method in ("uniform", "energy", "sensitivity"):
        ranks = allocate_ranks(SHAPES, target, method, spectra=spectra, sensitivity=sensitivity)
        assert _reduction(ranks) >= target - 0.02, method
        assert _reduction(ranks) <= target + 0.08, method
        assert all(r is None or 1 <= r < break_even_rank(*SHAPES[k]) for k, r in ranks.items())
    sens = allocate_ranks(SHAPES, target, "sensitivity", sensitivity=sensitivity)
    uni = allocate_ranks(SHAPES, target, "uniform")
    assert (sens["d"] or 99) >= uni["d"] and sens["b"] <= uni["b"]  # the sensitive layer keeps more


@pytest.mark.parametrize("params,match", [
    ({"rank": 0}, "rank"), ({"target_reduction": 1.0}, "target_reduction"),
    ({"target_reduction": 0}, "target_reduction"), ({"target_reduction": 1.5}, "target_reduction"),
    ({"method": "magic"}, "method"), ({"allocation": "random"}, "allocation"),
])
def test_invalid_settings_are_rejected_up_front(params, match):
    with pytest.raises(RecipeError, match=match):
        config_from_dict(SVDLowRankConfig, params)


# ------------------------------------------------------------------------------ end to end
def _decoder_linear_params(model):
    return sum(m.weight.numel() for n, m in model.named_modules() if isinstance(m, nn.Linear) and "lm_head" not in n)


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


@pytest.mark.parametrize("params", [
    {"method": "plain", "target_reduction": 0.2},
    {"method": "activation_aware", "target_reduction": 0.2},
    {"method": "rom", "target_reduction": 0.2},
    {"method": "activation_aware", "target_reduction": 0.4, "allocation": "energy"},
    {"method": "plain", "target_reduction": 0.3, "allocation": "sensitivity"},
])
def test_svd_lowrank_end_to_end_and_reload(tmp_path, tiny_llama_dir, text_file, params):
    original = load_model(str(tiny_llama_dir)).model
    events, report = run_step(tmp_path, tiny_llama_dir, text_file, "svd_lowrank", params)
    ranks = [e for e in events if isinstance(e, LayerStat) and e.name == "rank"]
    assert len(ranks) == 14 and not any("lm_head" in e.layer for e in ranks)
    step = report["steps"][0]
    target = params["target_reduction"]
    assert step["metrics"]["reduction"] == pytest.approx(target, abs=0.06)
    assert all(r["seconds"] >= 0 for r in step["layers"])
    reloaded = load_model(str(tmp_path / "out")).model
    assert any(isinstance(m, FactorizedLinear) for m in reloaded.modules())
    drop = 1 - _decoder_linear_params(reloaded) / _decoder_linear_params(original)
    assert drop == pytest.approx(target, abs=0.06)
    # in-memory vs reloaded logits are compared in test_lowrank_format; here: reloads are deterministic
    # and the dense merge computes the same function
    ids = torch.arange(1, 20).unsqueeze(0)
    again = load_model(str(tmp_path / "out")).model
    assert torch.equal(_logits(reloaded, ids), _logits(again, ids))
    expected = _logits(reloaded, ids)
    merge_to_dense(reloaded)
    assert not any(isinstance(m, FactorizedLinear) for m in reloaded.modules())
    assert torch.allclose(_logits(reloaded, ids), expected, atol=1e-4)

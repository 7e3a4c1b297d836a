"""Our importance matrix (core.engine.imatrix) against independent computations.

* On a tiny random Llama: a plain forward of the whole model with a hook on every Linear, Σ x² per input
  channel and the token count — what llama-imatrix sums — under llama.cpp's tensor names.
* On the bundled model (needs llama.cpp's llama-imatrix, built by `make data`): llama.cpp's own importance
  matrix of our F16 export, on the same text and chunks, equals ours within float tolerance.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.engine.gguf_job import imatrix_windows, iter_imatrix_file
from core.engine.imatrix import iter_importance_matrix
from core.io.imatrix_gguf import read_imatrix
from core.io.llama_cpp_tools import drain_tool, missing_reason, run_tool
from tests.helpers import collect

LLAMA_NAMES = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
               "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
               "mlp.down_proj": "ffn_down"}


def _hooked_sum_squares(model, windows: torch.Tensor) -> dict[str, tuple[np.ndarray, int]]:
    """Σ x² and token count per Linear of the decoder layers, from hooks on one ordinary forward per window."""
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    handles = []
    for layer_index, layer in enumerate(model.model.layers):
        for hf_name, short in LLAMA_NAMES.items():
            key = f"blk.{layer_index}.{short}.weight"

            def hook(_module, args, key=key):
                x = args[0].reshape(-1, args[0].shape[-1]).double()
                sums[key] = sums.get(key, 0) + (x * x).sum(0)
                counts[key] = counts.get(key, 0) + x.shape[0]

            handles.append(layer.get_submodule(hf_name).register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            for row in windows:
                model(row.unsqueeze(0))
    finally:
        for handle in handles:
            handle.remove()
    return {key: (sums[key].numpy(), counts[key]) for key in sums}


def test_importance_matrix_is_the_sum_of_squared_inputs_of_every_linear(tiny_llama):
    torch.manual_seed(1)
    windows = torch.randint(0, tiny_llama.config.vocab_size, (3, 24))
    before = {k: v.clone() for k, v in tiny_llama.state_dict().items()}
    _, found = collect(iter_importance_matrix(tiny_llama, windows))
    reference = _hooked_sum_squares(tiny_llama, windows)
    assert set(found) == set(reference)  # every block Linear, llama.cpp's names, no output head
    for key, (sums, count) in reference.items():
        assert found[key].count == count == 3 * 24
        np.testing.assert_allclose(found[key].sum2, sums, rtol=1e-5, err_msg=key)
    # the mean square differs between inputs: the test would see channels swapped or layers mixed up
    assert not np.allclose(found["blk.0.attn_q.weight"].sum2, found["blk.1.attn_q.weight"].sum2)
    assert all(torch.equal(before[k], v) for k, v in tiny_llama.state_dict().items())  # the model is unchanged


# -- llama.cpp's own imatrix on the bundled model --------------------------------------------------------------

L, CHUNKS = 128, 6


@pytest.fixture(scope="module")
def smollm(session_cache):
    import os

    from core import paths
    from core.models.loading import load_model

    os.environ[paths.CACHE_ENV] = str(session_cache)
    return load_model("bundled:smollm2-135m")


@pytest.mark.slow
@pytest.mark.skipif(missing_reason("llama-imatrix") is not None, reason=str(missing_reason("llama-imatrix")))
def test_our_importance_matrix_equals_llama_imatrix(smollm, tmp_path):
    from core.data.samples import datasets_ready
    from core.data.texts import load_texts
    from core.io.export import _pre_tokenizer
    from core.io.gguf_export import export_gguf

    if not datasets_ready():
        pytest.skip("bundled datasets missing: run `make data`")
    text = tmp_path / "calibration.txt"
    text.write_text("\n\n".join(load_texts("bundled:wiki-calibration")[:6]) + "\n")
    model_file = tmp_path / "model-f16.gguf"
    export_gguf(smollm.model, smollm.tokenizer, model_file, "F16", pre=_pre_tokenizer("bundled:smollm2-135m"))
    theirs_file = tmp_path / "theirs.imatrix.gguf"
    drain_tool(run_tool("llama-imatrix", ["-m", str(model_file), "-f", str(text), "-c", str(L), "-b", str(L),
                                          "--chunks", str(CHUNKS), "-t", "2", "-o", str(theirs_file),
                                          "--no-ppl"], doing="llama.cpp's importance matrix"))
    theirs = read_imatrix(theirs_file)
    ours_file = tmp_path / "ours.imatrix.gguf"
    collect(iter_imatrix_file(smollm.model, smollm.tokenizer, ours_file, load_texts(str(text)), dataset=str(text),
                              sequence_length=L, windows=CHUNKS))
    ours = read_imatrix(ours_file)  # read back: the file llama-quantize gets, in llama.cpp's format
    assert set(ours) == set(theirs) and len(ours) == 30 * 7
    assert imatrix_windows(load_texts(str(text)), smollm.tokenizer, L, CHUNKS).shape == (CHUNKS, L)
    worst = 0.0
    for name, entry in theirs.items():
        assert ours[name].count == entry.count == CHUNKS * L, name
        mine, ref = ours[name].mean_square(), entry.mean_square()
        # llama.cpp runs F16 weights: per-channel values agree to a fraction of a percent of the layer's scale
        worst = max(worst, float(np.abs(mine - ref).max() / ref.max()))
        np.testing.assert_allclose(mine, ref, rtol=0.03, atol=2e-3 * ref.max(), err_msg=name)
    assert worst < 0.01, worst

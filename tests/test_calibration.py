"""The block-by-block calibration engine on a tiny Llama: statistics, hooks, propagation."""

import torch

from core.engine.calibration import HessianStats, InputNormStats, find_blocks, run_blockwise
from core.events import drain


def _windows(model, count=3, length=12):
    generator = torch.Generator().manual_seed(0)
    return torch.randint(2, model.config.vocab_size, (count, length), generator=generator)


def test_find_blocks_on_llama_and_bert(tiny_llama, tiny_bert):
    assert find_blocks(tiny_llama)[0] == "model.layers"
    assert find_blocks(tiny_bert)[0] == "bert.encoder.layer"


def test_statistics_match_direct_computation(tiny_llama):
    """Hooked running statistics equal those computed from the real inputs of each Linear."""
    windows = _windows(tiny_llama)
    target = "model.layers.1.mlp.down_proj"
    seen = []
    handle = tiny_llama.get_submodule(target).register_forward_pre_hook(lambda m, a: seen.append(a[0].detach()))
    with torch.no_grad():
        for row in windows:
            tiny_llama(row.unsqueeze(0), use_cache=False)
    handle.remove()
    x = torch.cat([s.reshape(-1, s.shape[-1]) for s in seen]).double()

    norm_stats, hessian_stats = {}, {}

    def both(linear):
        return _Both(linear)

    def collect(block):
        for name, stats in block.stats.items():
            norm_stats[name], hessian_stats[name] = stats.norm, stats.hessian
        yield from ()

    drain(run_blockwise(tiny_llama, windows, make_stats=both, compress_block=collect))
    assert torch.allclose(norm_stats[target].norms(), x.pow(2).sum(0).sqrt(), rtol=1e-6)
    expected_h = (2 / x.shape[0]) * (x.T @ x)
    assert torch.allclose(hessian_stats[target].hessian.double(), expected_h, rtol=1e-4, atol=1e-6)
    assert hessian_stats[target].tokens == windows.numel()
    assert len(norm_stats) == 14


def test_layers_reading_one_input_share_one_statistics_object(tiny_llama):
    """q/k/v (and gate/up) read the same tensor: one Hessian is accumulated for them, and it is right."""
    windows = _windows(tiny_llama)
    seen = []
    handle = tiny_llama.get_submodule("model.layers.0.self_attn.k_proj").register_forward_pre_hook(
        lambda m, a: seen.append(a[0].detach()))
    with torch.no_grad():
        for row in windows:
            tiny_llama(row.unsqueeze(0), use_cache=False)
    handle.remove()
    x = torch.cat([s.reshape(-1, s.shape[-1]) for s in seen]).double()
    blocks = []

    def collect(block):
        blocks.append(dict(block.stats))
        yield from ()

    drain(run_blockwise(tiny_llama, windows, make_stats=HessianStats, compress_block=collect))
    first = blocks[0]
    attention = [first[f"model.layers.0.self_attn.{p}_proj"] for p in "qkv"]
    assert attention[0] is attention[1] is attention[2]
    assert first["model.layers.0.mlp.gate_proj"] is first["model.layers.0.mlp.up_proj"]
    distinct = {id(stats) for stats in first.values()}
    assert len(distinct) == 4  # q/k/v, o, gate/up, down
    assert attention[0].tokens == windows.numel()  # counted once, not three times
    assert torch.allclose(attention[0].hessian.double(), (2 / x.shape[0]) * (x.T @ x), rtol=1e-4, atol=1e-6)


class _Both:
    def __init__(self, linear):
        self.norm, self.hessian = InputNormStats(linear), HessianStats(linear)

    def add(self, x):
        self.norm.add(x)
        self.hessian.add(x)


def test_unchanged_blocks_leave_logits_unchanged(tiny_llama):
    windows = _windows(tiny_llama)
    before = tiny_llama(windows).logits

    def nothing(block):
        yield from ()

    drain(run_blockwise(tiny_llama, windows, make_stats=InputNormStats, compress_block=nothing))
    assert torch.equal(tiny_llama(windows).logits, before)
    assert not tiny_llama.model.layers[0]._forward_pre_hooks  # hooks removed


def test_later_blocks_see_compressed_outputs(tiny_llama):
    """Zeroing block 0's MLP output changes what block 1's Linears are calibrated on."""
    windows = _windows(tiny_llama)
    norms = {}

    def zero_first(block):
        if block.index == 0:
            with torch.no_grad():
                block.linears["model.layers.0.mlp.down_proj"].weight.zero_()
        for name, stats in block.stats.items():
            norms[name] = stats.norms().clone()
        yield from ()

    drain(run_blockwise(tiny_llama, windows, make_stats=InputNormStats, compress_block=zero_first))
    reference = {}
    handle = tiny_llama.model.layers[1].self_attn.q_proj.register_forward_pre_hook(
        lambda m, a: reference.setdefault("x", []).append(a[0]))
    with torch.no_grad():
        for row in windows:
            tiny_llama(row.unsqueeze(0), use_cache=False)
    handle.remove()
    x = torch.cat([t.reshape(-1, t.shape[-1]) for t in reference["x"]]).double()
    assert torch.allclose(norms["model.layers.1.self_attn.q_proj"], x.pow(2).sum(0).sqrt(), rtol=1e-6)


def test_hessian_from_upper_panels_equals_the_full_product():
    """Columns not divisible by the panel count, several batches: H = (2/n) XᵀX exactly (float32)."""
    generator = torch.Generator().manual_seed(1)
    stats = HessianStats(torch.nn.Linear(10, 3))
    batches = [torch.randn(2, 7, 10, generator=generator) for _ in range(3)]
    for batch in batches:
        stats.add(batch)
    x = torch.cat([b.reshape(-1, 10) for b in batches]).double()
    assert torch.allclose(stats.hessian.double(), (2 / x.shape[0]) * (x.T @ x), rtol=1e-5, atol=1e-6)
    assert torch.equal(stats.hessian, stats.hessian.T)
    assert stats.tokens == 42

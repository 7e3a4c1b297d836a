"""Swapping a Linear out of a memory-mapped model gives its weight file's resident pages back, and only those."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

from core.models.memory import release_file_pages, tensor_is_file_backed
from core.models.module_swap import replace_module

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise and /proc/self are Linux's")


def _rss_file_kb() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("RssFile:"):
            return int(line.split()[1])
    return 0


@pytest.fixture
def mapped_model(tmp_path):
    """A Llama with 8 MB MLP weights, saved and loaded back through safetensors' memory map."""
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=320, hidden_size=1024, intermediate_size=2048, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2)).save_pretrained(tmp_path / "m")
    return AutoModelForCausalLM.from_pretrained(tmp_path / "m").eval()


def _copy_of(linear: nn.Linear) -> nn.Linear:
    new = nn.Linear(linear.in_features, linear.out_features, bias=False)
    new.weight.data = linear.weight.detach().clone()
    return new


@linux_only
def test_replacing_a_mapped_linear_drops_its_pages_and_changes_nothing_else(mapped_model):
    ids = torch.randint(0, 320, (1, 8))
    with torch.no_grad():
        reference = mapped_model(ids).logits
    old = mapped_model.model.layers[0].mlp.up_proj
    assert tensor_is_file_backed(old.weight)
    float(old.weight.detach().sum())  # read every page, as a calibration pass does
    before = _rss_file_kb()
    released = replace_module(mapped_model, "model.layers.0.mlp.up_proj", _copy_of(old))
    assert released > 0.99 * old.weight.numel() * 4 - 2 * 4096
    assert _rss_file_kb() < before - 0.5 * released / 1024  # the resident file pages really went
    with torch.no_grad():
        assert torch.equal(mapped_model(ids).logits, reference)


@linux_only
def test_pages_a_live_tensor_still_uses_are_kept(mapped_model):
    layer = mapped_model.model.layers[0].mlp
    old = layer.down_proj
    layer.kept = nn.Linear(2, 2)
    layer.kept.weight = old.weight  # the same tensor lives on elsewhere in the model
    assert replace_module(mapped_model, "model.layers.0.mlp.down_proj", _copy_of(old)) == 0


def test_tensors_in_ordinary_memory_are_left_alone():
    model = nn.Sequential(nn.Linear(512, 512), nn.Linear(512, 512))
    assert not tensor_is_file_backed(model[0].weight)
    assert replace_module(model, "0", nn.Linear(512, 512)) == 0
    assert release_file_pages([torch.zeros(0)], model) == 0

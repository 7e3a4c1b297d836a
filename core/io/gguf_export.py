"""GGUF export of Llama- and Qwen2-architecture models, for llama.cpp, Ollama and LM Studio.

:func:`export_gguf` writes one ``.gguf`` file with the ``gguf`` package: llama.* (or qwen2.*) architecture
metadata, a GPT-2-style byte-level BPE tokenizer (tokens, token types, merges, special ids, taken
from the Hugging Face tokenizer's ``tokenizer.json``) and the weights under llama.cpp's tensor
names.  Like llama.cpp's ``convert_hf_to_gguf.py``, the rows of ``attn_q`` / ``attn_k`` are
permuted from Hugging Face's rotary layout (halves) back to the interleaved layout llama.cpp
expects; transformers undoes the same permutation when it reads a GGUF.  Qwen2 keeps Hugging Face's
layout (llama.cpp runs it with NEOX-style rotary embeddings, as ``convert_hf_to_gguf.py`` writes it) and
adds its q/k/v biases (``blk.N.attn_q.bias`` …, F32).

Types: norms stay F32; every 2-D weight (embeddings and output head included) is written as the
chosen type, F16, Q8_0 or Q4_0 (``gguf.quants``), as llama.cpp's ``llama-quantize`` does for these
types, with llama.cpp's exception for a tied head: a ``token_embd`` that is also the output head (no
``output.weight``) is written Q8_0 in a Q4_0 file, as ``llama-quantize`` gives the output tensor 6 to 8 bits
(Q8_0 when the width is not a multiple of 256, else Q6_K, which this writer does not make);
``quantize_embedding=False`` keeps ``token_embd`` in F16, like its ``--token-embedding-type f16``.  A tensor whose rows are
not a multiple of the 32-value block falls back to F16.  Layers that arrive already quantized (packed layers with a
``dequantized_weight()``: GPTQ or quantization-aware training on llama.cpp's Q4_0 / Q8_0 grid) are
written block by block from their own codes and float16 scales (:mod:`gguf_blocks`), so any scale survives
bit for bit (llama.cpp's quantizer would derive each scale again from the values); a layer whose codes or
scales the chosen type cannot hold (checked per tensor) would be rounded a second time and is refused.  The file is written to a temporary name and renamed when
complete.  :func:`read_gguf_summary` reads a file back with ``gguf.GGUFReader``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.errors import StudioError, is_disk_full, write_error
from core.io.gguf_blocks import blocks_fit, pack_blocks
from core.io.output_rules import GGUF_MARK_KEY
from core.partials import journaled, ordinary_permissions, partial_path

QUANTS = ("F16", "Q8_0", "Q4_0")
LAYER_TENSORS = {  # Hugging Face name inside model.layers.N -> llama.cpp name inside blk.N
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
}


def permute_rotary(weight: np.ndarray, heads: int) -> np.ndarray:
    """Reorder q/k projection rows from Hugging Face's rotary halves to llama.cpp's interleaved pairs."""
    return (weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:])
            .swapaxes(1, 2).reshape(weight.shape))


ARCHITECTURES = ("llama", "qwen2")  # model_type = llama.cpp's architecture name
QWEN2_BIASES = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")


def _check_model(model: Any) -> Any:
    config = model.config
    if getattr(config, "model_type", None) not in ARCHITECTURES:
        raise StudioError(f"GGUF export supports Llama-architecture (and Qwen2) models; this one is "
                          f"{getattr(config, 'model_type', 'unknown')!r}. Save it as a transformers folder instead.")
    if config.model_type == "llama" and (getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False)):
        raise StudioError("GGUF export does not write bias tensors; this Llama model has attention or MLP biases")
    if config.model_type == "qwen2" and getattr(config, "use_sliding_window", False):
        raise StudioError("GGUF export does not write Qwen2's sliding-window attention; this model uses it")
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    if rope.get("rope_type", rope.get("type", "default")) not in ("default", None):
        raise StudioError(f"GGUF export supports plain rotary embeddings; this model uses {rope.get('rope_type')!r}")
    for name, module in model.named_modules():
        if name.endswith(("proj", "lm_head")) and not isinstance(module, torch.nn.Linear) and not _on_blocks(module):
            raise StudioError(f"{name} is a {type(module).__name__}, not a float Linear: export to GGUF from the "
                              "float (or pruned) model; GGUF applies its own quantization")
    return config


def _on_blocks(module: Any) -> bool:
    """A packed layer stored as symmetric 4- or 8-bit codes in groups of 32, the shape of llama.cpp's Q4_0 / Q8_0
    blocks (whether its values are exactly those blocks' is checked when it is written)."""
    return (hasattr(module, "dequantized_weight") and hasattr(module, "weight_packed")
            and getattr(module, "group_size", None) == 32 and getattr(module, "symmetric", False)
            and getattr(module, "bits", None) in (4, 8) and type(module).__name__ == "PackedLinear")


def _gridded_weights(model: Any) -> dict[str, torch.Tensor]:
    """Weights already on a quantization grid (packed layers, e.g. quantization-aware training on llama.cpp's
    Q4_0 / Q8_0 blocks), dequantized, by state-dict name."""
    return {f"{name}.weight": _block_values(module) for name, module in model.named_modules() if _on_blocks(module)}


def _gridded_blocks(model: Any, config: Any) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(codes int8 [rows, columns], scales float32 [rows, blocks]) of every packed layer on blocks of 32, by
    llama.cpp tensor name, rows in llama.cpp's order (q/k rotary rows permuted like the weights)."""
    heads = {"attn_q": config.num_attention_heads,
             "attn_k": config.num_key_value_heads or config.num_attention_heads}
    out = {}
    for name, module in model.named_modules():
        if not _on_blocks(module):
            continue
        codes = module.codes().detach().cpu().to(torch.int8).numpy()
        scales = module.weight_scale.detach().cpu().to(torch.float32).numpy()
        gguf_name = _gguf_name(f"{name}.weight")
        kind = gguf_name.split(".")[-2]
        if config.model_type == "llama" and kind in heads:  # a block's row moves with its row: permute both alike
            codes, scales = permute_rotary(codes, heads[kind]), permute_rotary(scales, heads[kind])
        out[gguf_name] = (codes, scales)
    return out


def _block_values(module: Any) -> torch.Tensor:
    """code · scale in float32 (exact: a float16 scale times a code of at most 8 bits): a layer reloaded in
    bfloat16 would compute ``dequantized_weight()`` in bfloat16, rounding the products llama.cpp stores exactly."""
    codes = module.codes().to(torch.float32)
    rows, columns = codes.shape
    scale = module.weight_scale.to(torch.float32)
    return (codes.reshape(rows, scale.shape[1], -1) * scale.unsqueeze(-1)).reshape(rows, columns)


def _gridded_tensor(name: str, codes: np.ndarray, scales: np.ndarray, quant: str) -> np.ndarray:
    """A packed layer's own codes and scales as ``quant`` blocks; refused if the type cannot hold them exactly
    (codes beyond its range, scales that are not float16 values): that would be a second rounding."""
    if not blocks_fit(codes, scales, quant):
        raise StudioError(f"{name} is already quantized on a grid that {quant} does not reproduce (its codes or "
                          f"scales do not fit {quant}'s blocks; rounding again would be a second rounding): export a "
                          f"float result, or quantize with GPTQ or quantization-aware training on the "
                          f"{quant.lower()} grid")
    return pack_blocks(codes, scales, quant)


def _rope_theta(config: Any) -> float:
    rope = getattr(config, "rope_parameters", None) or {}
    return float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0)))


def _write_tokenizer(writer: Any, tokenizer: Any, vocab_rows: int, pre: str) -> None:
    import gguf

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise StudioError("GGUF export needs a fast (tokenizer.json) tokenizer")
    data = json.loads(backend.to_str())
    model = data.get("model", {})
    if model.get("type") != "BPE":
        raise StudioError(f"GGUF export writes byte-level BPE tokenizers; this one is {model.get('type')!r}")
    vocab = dict(model.get("vocab", {}))
    special = {t["id"] for t in data.get("added_tokens", []) if t.get("special")}
    for token in data.get("added_tokens", []):
        vocab[token["content"]] = token["id"]
    by_id = {index: token for token, index in vocab.items()}
    if by_id and max(by_id) >= vocab_rows:
        raise StudioError(f"the tokenizer has ids up to {max(by_id)} but the model only {vocab_rows} embeddings")
    tokens, types = [], []
    for index in range(vocab_rows):
        if index in by_id:
            tokens.append(by_id[index])
            types.append(gguf.TokenType.CONTROL if index in special else gguf.TokenType.NORMAL)
        else:  # embedding rows beyond the tokenizer (padding), as convert_hf_to_gguf.py writes them
            tokens.append(f"[PAD{index}]")
            types.append(gguf.TokenType.UNUSED)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for key, add in (("bos_token_id", writer.add_bos_token_id), ("eos_token_id", writer.add_eos_token_id),
                     ("pad_token_id", writer.add_pad_token_id), ("unk_token_id", writer.add_unk_token_id)):
        value = getattr(tokenizer, key, None)
        if isinstance(value, int):
            add(value)
    writer.add_add_bos_token(bool(getattr(tokenizer, "add_bos_token", False)))
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, str):
        writer.add_chat_template(template)


def _tensors(model: Any, config: Any) -> list[tuple[str, np.ndarray, bool]]:
    """(llama.cpp name, float32 array, is a 2-D weight to quantize) in llama.cpp's order."""
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads or config.num_attention_heads
    state = {k: v.detach().to(torch.float32).cpu().numpy() for k, v in model.state_dict().items()}
    state.update({k: v.detach().to(torch.float32).cpu().numpy() for k, v in _gridded_weights(model).items()})
    llama = config.model_type == "llama"
    out = [("token_embd.weight", state["model.embed_tokens.weight"], True)]
    for n in range(config.num_hidden_layers):
        for hf_name, gguf_name in LAYER_TENSORS.items():
            array = state[f"model.layers.{n}.{hf_name}.weight"]
            if llama and gguf_name == "attn_q":
                array = permute_rotary(array, heads)
            elif llama and gguf_name == "attn_k":
                array = permute_rotary(array, kv_heads)
            out.append((f"blk.{n}.{gguf_name}.weight", array, array.ndim == 2))
            bias = state.get(f"model.layers.{n}.{hf_name}.bias")
            if not llama and hf_name in QWEN2_BIASES and bias is not None:
                out.append((f"blk.{n}.{gguf_name}.bias", bias, False))
    out.append(("output_norm.weight", state["model.norm.weight"], False))
    head = model.get_output_embeddings()
    if head is not None and head.weight.data_ptr() != model.get_input_embeddings().weight.data_ptr():
        out.append(("output.weight", state["lm_head.weight"], True))
    return out


def _gguf_name(state_name: str) -> str:
    """llama.cpp's name of a decoder layer's weight (``model.layers.3.mlp.up_proj.weight`` -> ``blk.3.ffn_up.weight``)."""
    parts = state_name.split(".")
    if state_name.startswith("model.layers.") and ".".join(parts[3:5]) in LAYER_TENSORS:
        return f"blk.{parts[2]}.{LAYER_TENSORS['.'.join(parts[3:5])]}.weight"
    return "output.weight" if state_name == "lm_head.weight" else state_name


def export_gguf(model: Any, tokenizer: Any, path: str | Path, quant: str = "Q8_0", *, pre: str = "gpt-2",
                name: str | None = None, quantize_embedding: bool = True) -> dict[str, Any]:
    """Write ``model`` + ``tokenizer`` as a GGUF file at ``path`` with 2-D weights in ``quant``
    (the token embedding too, unless ``quantize_embedding`` is False: then it is F16).

    ``pre`` is llama.cpp's pre-tokenizer name (``tokenizer.ggml.pre``): "gpt-2" for plain
    byte-level BPE, "smollm" for SmolLM2, "llama-bpe" for Llama 3.  Returns what was written:
    path, bytes, tensor count and tensor types.
    """
    import gguf

    if quant not in QUANTS:
        raise StudioError(f"unknown GGUF type {quant!r}; choose one of {', '.join(QUANTS)}")
    config = _check_model(model)
    path = Path(path)
    if path.suffix.lower() != ".gguf":
        raise StudioError(f"{path.name}: a GGUF file name must end in .gguf")
    if not path.parent.is_dir():
        raise StudioError(f"the folder {path.parent} does not exist; create it or choose another place")
    qtype = getattr(gguf.GGMLQuantizationType, quant)
    file_type = {"F16": gguf.LlamaFileType.MOSTLY_F16, "Q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
                 "Q4_0": gguf.LlamaFileType.MOSTLY_Q4_0}[quant]
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    with journaled(partial_path(path)) as partial:
        try:
            writer = gguf.GGUFWriter(str(partial), config.model_type)
            types = _write_file(writer, model, tokenizer, config, quant, pre, name, file_type, qtype, block,
                                quantize_embedding)
            ordinary_permissions(partial)
            os.replace(partial, path)
        except Exception as exc:  # a full disk reaches us as OSError or as numpy's own error
            if isinstance(exc, OSError) or is_disk_full(exc):
                raise write_error(exc, path, "writing the GGUF file") from exc
            raise
        finally:
            partial.unlink(missing_ok=True)
    return {"path": str(path), "bytes": path.stat().st_size, "tensors": len(types), "quant": quant,
            "types": types}


def _write_file(writer: Any, model: Any, tokenizer: Any, config: Any, quant: str, pre: str, name: str | None,
                file_type: Any, qtype: Any, block: int, quantize_embedding: bool = True) -> dict[str, str]:
    """Write the header, metadata, tokenizer and tensors; return each tensor's type."""
    import gguf

    try:
        writer.add_string(GGUF_MARK_KEY, "1")  # lets a later export replace this file, and only such files
        heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        writer.add_name(name or getattr(config, "_name_or_path", "") or "model")
        writer.add_context_length(config.max_position_embeddings)
        writer.add_embedding_length(config.hidden_size)
        writer.add_block_count(config.num_hidden_layers)
        writer.add_feed_forward_length(config.intermediate_size)
        writer.add_head_count(heads)
        writer.add_head_count_kv(config.num_key_value_heads or heads)
        writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
        writer.add_rope_freq_base(_rope_theta(config))
        writer.add_rope_dimension_count(head_dim)
        if head_dim != config.hidden_size // heads:
            writer.add_key_length(head_dim)
            writer.add_value_length(head_dim)
        vocab_rows = model.get_input_embeddings().weight.shape[0]
        writer.add_vocab_size(vocab_rows)
        writer.add_file_type(file_type)
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        _write_tokenizer(writer, tokenizer, vocab_rows, pre)
        types: dict[str, str] = {}
        gridded = _gridded_blocks(model, config)
        tensors = _tensors(model, config)
        tied = not any(tensor_name == "output.weight" for tensor_name, _, _ in tensors)
        for tensor_name, array, is_weight in tensors:
            if tensor_name == "token_embd.weight" and tied and quant == "Q4_0" and quantize_embedding \
                    and not array.shape[-1] % block:  # also the output head: llama.cpp gives it 8 bits
                q8 = gguf.GGMLQuantizationType.Q8_0
                writer.add_tensor(tensor_name, gguf.quants.quantize(array, q8), raw_dtype=q8)
                types[tensor_name] = "Q8_0"
                continue
            if tensor_name in gridded:
                if quant == "F16" or array.shape[-1] % block:
                    raise StudioError(f"{tensor_name} is already quantized: export it as Q4_0 or Q8_0 (the grid it "
                                      "was trained on), not F16")
                writer.add_tensor(tensor_name, _gridded_tensor(tensor_name, *gridded[tensor_name], quant),
                                  raw_dtype=qtype)
                types[tensor_name] = quant
                continue
            if not is_weight:
                writer.add_tensor(tensor_name, array.astype(np.float32))
                types[tensor_name] = "F32"
            elif quant == "F16" or array.shape[-1] % block or (tensor_name == "token_embd.weight"
                                                                 and not quantize_embedding):
                writer.add_tensor(tensor_name, array.astype(np.float16))
                types[tensor_name] = "F16"
            else:
                writer.add_tensor(tensor_name, gguf.quants.quantize(array, qtype), raw_dtype=qtype)
                types[tensor_name] = quant
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    return types


def read_gguf_summary(path: str | Path) -> dict[str, Any]:
    """Read a GGUF file back with ``gguf.GGUFReader``: architecture, tensor names, shapes (in
    PyTorch order, rows first) and types, and the tokenizer's token count."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    field = reader.get_field("general.architecture")
    tokens = reader.get_field("tokenizer.ggml.tokens")
    return {"architecture": field.contents() if field else None,
            "tokens": len(tokens.data) if tokens else 0,
            "tensors": {t.name: {"shape": [int(s) for s in reversed(t.shape)], "type": t.tensor_type.name}
                        for t in reader.tensors}}

import torch


def test_tiny_models_run(tiny_llama, tiny_bert, tiny_tokenizer):
    ids = tiny_tokenizer("The quick brown fox", return_tensors="pt").input_ids
    assert tiny_llama(ids).logits.shape == (1, ids.shape[1], len(tiny_tokenizer))
    assert tiny_bert(ids).logits.shape == (1, 2)
    assert torch.isfinite(tiny_llama(ids).logits).all()

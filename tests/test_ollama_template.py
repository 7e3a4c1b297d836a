"""The Ollama TEMPLATE of a Modelfile: written from a Hugging Face chat template only where it is exact."""

from __future__ import annotations

from core.io.ollama_template import ollama_template, stop_words

CHATML = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
          "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
          "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
GEMMA = ("{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
         "{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
         "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
         "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
         "{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
         "{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}")
LLAMA2 = ("{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
          "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
          "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
          "{% if loop.index0 == 0 and system_message != false %}"
          "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
          "{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}"
          "{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
          "{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}")


def test_chatml_becomes_the_go_template_that_writes_the_same_turns():
    template, why = ollama_template(CHATML, "<|im_start|>", "<|im_end|>")
    assert template == (
        "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ else }}<|im_start|>system\n"
        "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n{{ end }}"
        "{{ range $i, $_ := .Messages }}{{ $last := eq (len (slice $.Messages $i)) 1 }}"
        "{{ if eq .Role \"user\" }}<|im_start|>user\n{{ .Content }}<|im_end|>\n"
        "{{ if $last }}<|im_start|>assistant\n{{ end }}"
        "{{ else if eq .Role \"assistant\" }}<|im_start|>assistant\n{{ .Content }}<|im_end|>\n{{ end }}{{ end }}")
    assert "checked to write the same text on 4 conversations" in why
    assert stop_words(CHATML, "<|im_start|>", "<|im_end|>", ["<|im_start|>", "<|im_end|>"]) == ["<|im_end|>"]


def test_gemma_without_a_system_role_and_bos_added_by_the_tokenizer():
    template, why = ollama_template(GEMMA, "<bos>", "<eos>", adds_bos=True)
    assert template is not None and not template.startswith("<bos>")  # llama.cpp adds it; not written twice
    assert ".System" not in template and "no system role" in why
    assert "<start_of_turn>model\n{{ .Content }}<end_of_turn>\n" in template
    assert stop_words(GEMMA, "<bos>", "<eos>", ["<bos>", "<start_of_turn>", "<end_of_turn>"]) == [
        "<eos>", "<end_of_turn>"]


def test_a_system_message_folded_into_the_first_turn_gets_no_template_and_a_reason():
    template, why = ollama_template(LLAMA2, "<s>", "</s>")
    assert template is None and "system message changes how the user message is written" in why
    assert ollama_template(None)[0] is None and "no chat template" in ollama_template(None)[1]


def test_a_template_that_rewrites_the_content_fails_the_check_and_gets_no_template():
    # the marker words come through unchanged (they are upper case already), so the pieces are found; only the
    # check on real conversations shows that Ollama would send the content differently
    shouting = CHATML.replace("message['content']", "message['content'] | upper")
    template, why = ollama_template(shouting, "<|im_start|>", "<|im_end|>")
    assert template is None and "would not write what the Jinja template writes" in why

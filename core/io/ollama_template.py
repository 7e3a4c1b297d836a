"""A Hugging Face chat template (Jinja) turned into an Ollama ``TEMPLATE`` (Go template), only where that is exact.

Ollama does not run Jinja.  Most chat templates are, underneath, a fixed text before and after each message's
content (ChatML: ``<|im_start|>user\\n`` … ``<|im_end|>\\n``), a text that opens the assistant's turn, and
sometimes a default system message.  :func:`ollama_template` finds those pieces by rendering the Jinja
template (sandboxed, as transformers renders it) on conversations whose contents are marker words, writes
the Go template from them, and then checks it: the Go template's output, worked out here for several
conversations (with and without a system message, one and several turns), must equal the Jinja rendering
character for character.  When a template does something else (a system message folded into the first
user turn, content rewritten, tools), there is no TEMPLATE and the returned reason says why, so nobody runs
a model with a prompt format that silently differs from the one it was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass

SYSTEM, USER1, ASSISTANT1, USER2 = "SYSTEMTEXTQZ", "USERTEXTQZ1", "ASSISTANTTEXTQZ1", "USERTEXTQZ2"


class _TemplateError(Exception):
    pass


@dataclass(frozen=True)
class ChatPieces:
    """The fixed texts around each message, as the Jinja template writes them."""

    head: str  # before the first message when there is no system message (BOS, a default system message)
    system_before: str | None  # before / after a system message's content (None: the template has no system role)
    system_after: str | None
    user_before: str
    user_after: str
    assistant_before: str
    assistant_after: str
    generation: str  # what opens the assistant's turn (add_generation_prompt)


def _renderer(source: str, bos: str, eos: str):
    from jinja2.exceptions import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)  # as transformers renders it
    env.globals["raise_exception"] = raise_exception
    template = env.from_string(source)

    def render(messages: list[dict[str, str]], generation: bool) -> str:
        try:
            return template.render(messages=messages, add_generation_prompt=generation, bos_token=bos,
                                   eos_token=eos)
        except Exception as exc:  # the template refuses this conversation (e.g. no system role)
            raise _TemplateError(str(exc)) from exc

    return render


def _split(text: str, marker: str) -> tuple[str, str]:
    if text.count(marker) != 1:
        raise _TemplateError(f"a message's content is not written exactly once ({marker})")
    before, after = text.split(marker)
    return before, after


def _after_prefix(text: str, prefix: str) -> str:
    if not text.startswith(prefix):
        raise _TemplateError("a longer conversation does not extend the shorter one")
    return text[len(prefix):]


def chat_pieces(source: str, bos: str = "", eos: str = "") -> ChatPieces:
    """The fixed texts of a per-message chat template; raises _TemplateError when it is not one."""
    render = _renderer(source, bos, eos)
    u, a, u2 = ({"role": "user", "content": USER1}, {"role": "assistant", "content": ASSISTANT1},
                {"role": "user", "content": USER2})
    only_user = render([u], False)
    generation = _after_prefix(render([u], True), only_user)
    user_assistant = render([u, a], False)
    assistant_before, assistant_after = _split(_after_prefix(user_assistant, only_user), ASSISTANT1)
    user_before, user_after = _split(_after_prefix(render([u, a, u2], False), user_assistant), USER2)
    user_block = f"{user_before}{USER1}{user_after}"
    if not only_user.endswith(user_block):
        raise _TemplateError("the first user message is written differently from the later ones")
    head = only_user[: -len(user_block)]
    try:
        with_system = render([{"role": "system", "content": SYSTEM}, u], False)
    except _TemplateError:
        system_before = system_after = None
    else:
        if not with_system.endswith(user_block):
            raise _TemplateError("a system message changes how the user message is written")
        system_before, system_after = _split(with_system[: -len(user_block)], SYSTEM)
    return ChatPieces(head, system_before, system_after, user_before, user_after, assistant_before,
                      assistant_after, generation)


def _as_go(pieces: ChatPieces, system: str | None, messages: list[dict[str, str]]) -> str:
    """What the Go template of :func:`go_template` writes for this conversation (Ollama's .System/.Messages)."""
    text = (pieces.system_before + system + pieces.system_after) if system and pieces.system_before is not None \
        else pieces.head
    for i, message in enumerate(messages):
        if message["role"] == "user":
            text += pieces.user_before + message["content"] + pieces.user_after
            if i == len(messages) - 1:
                text += pieces.generation
        else:
            text += pieces.assistant_before + message["content"] + pieces.assistant_after
    return text


def go_template(pieces: ChatPieces) -> str:
    """The Ollama TEMPLATE (Go text/template) that writes these pieces; on one line, so no whitespace is trimmed."""
    texts = [pieces.head, pieces.system_before or "", pieces.system_after or "", pieces.user_before,
             pieces.user_after, pieces.assistant_before, pieces.assistant_after, pieces.generation]
    if any("{{" in t or "}}" in t or '"""' in t for t in texts):
        raise _TemplateError("its fixed texts hold '{{', '}}' or '\"\"\"', which a Modelfile TEMPLATE cannot")
    if pieces.system_before is not None:
        opening = (f"{{{{ if .System }}}}{pieces.system_before}{{{{ .System }}}}{pieces.system_after}"
                   f"{{{{ else }}}}{pieces.head}{{{{ end }}}}")
    else:
        opening = pieces.head
    return (f"{opening}{{{{ range $i, $_ := .Messages }}}}{{{{ $last := eq (len (slice $.Messages $i)) 1 }}}}"
            f"{{{{ if eq .Role \"user\" }}}}{pieces.user_before}{{{{ .Content }}}}{pieces.user_after}"
            f"{{{{ if $last }}}}{pieces.generation}{{{{ end }}}}"
            f"{{{{ else if eq .Role \"assistant\" }}}}{pieces.assistant_before}{{{{ .Content }}}}"
            f"{pieces.assistant_after}{{{{ end }}}}{{{{ end }}}}")


def _checked(source: str, pieces: ChatPieces, bos: str, eos: str) -> int:
    """Compare the Go template's output with the Jinja rendering on several conversations; return how many."""
    render = _renderer(source, bos, eos)
    user = [{"role": "user", "content": "What is 2+2?"}]
    turns = [*user, {"role": "assistant", "content": "4."}, {"role": "user", "content": "And 3+3?"}]
    system = "You answer in one word."
    cases: list[tuple[str | None, list[dict[str, str]]]] = [(None, user), (None, turns)]
    if pieces.system_before is not None:
        cases += [(system, user), (system, turns)]
    for system_text, messages in cases:
        full = ([{"role": "system", "content": system_text}] if system_text else []) + messages
        if render(full, True) != _as_go(pieces, system_text, messages):
            raise _TemplateError("the Go template would not write what the Jinja template writes")
    return len(cases)


def ollama_template(source: str | None, bos: str = "", eos: str = "",
                    adds_bos: bool = False) -> tuple[str | None, str]:
    """(Ollama TEMPLATE or None, one line saying what was done or why there is none).

    ``adds_bos``: the tokenizer puts BOS in front by itself (llama.cpp and Ollama do it too), so a BOS the
    Jinja template writes at the very start (its ``bos_token`` variable) is left out of the TEMPLATE rather
    than doubled.
    """
    if not source:
        return None, "the tokenizer has no chat template, so Ollama sends the prompt as it is"
    try:
        pieces = chat_pieces(source, bos, eos)
        checked = _checked(source, pieces, bos, eos)
    except _TemplateError as exc:
        return None, (f"the tokenizer's chat template could not be turned into an exact Ollama template ({exc}); "
                      "write a TEMPLATE by hand if you chat with this model")
    if adds_bos and bos and "bos_token" in source:  # the template writes the BOS variable itself
        strip = lambda text: text[len(bos):] if text and text.startswith(bos) else text  # noqa: E731
        pieces = ChatPieces(strip(pieces.head), strip(pieces.system_before), pieces.system_after,
                            pieces.user_before, pieces.user_after, pieces.assistant_before,
                            pieces.assistant_after, pieces.generation)
    try:
        template = go_template(pieces)
    except _TemplateError as exc:
        return None, f"the tokenizer's chat template could not be written as an Ollama template ({exc})"
    no_system = "; it has no system role, so a SYSTEM message is not used" if pieces.system_before is None else ""
    return template, (f"converted from the tokenizer's chat template and checked to write the same text on "
                      f"{checked} conversations{no_system}")


def stop_words(pieces_source: str | None, bos: str, eos: str, control_tokens: list[str]) -> list[str]:
    """Ollama's stop words: the end-of-text token, and each control token that ends an assistant message."""
    stops = [eos] if eos else []
    if pieces_source:
        try:
            after = chat_pieces(pieces_source, bos, eos).assistant_after
        except _TemplateError:
            after = ""
        stops += [token for token in control_tokens if token and token in after]
    return list(dict.fromkeys(stops))


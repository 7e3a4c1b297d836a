"""The files written next to exported GGUFs: an Ollama Modelfile per file and a README model card.

Everything a card says is read from where it is true: the GGUF type, chat template and special tokens from
the written GGUF itself (``gguf.GGUFReader``), the sizes from the files, the source model, recipe and steps from
the result's ``report.json``, the calibration text of the importance matrix from the imatrix GGUF.

Cards are written atomically (a hidden partial renamed into place) and carry :data:`CARD_MARK`; an existing
file without it was not written by this app and is never replaced (:func:`check_card_file`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.io.atomic import atomic_file
from core.io.gguf_types import GGUF_TYPE_INFO, needs_quantizer
from core.io.ollama_template import ollama_template, stop_words
from core.io.output_rules import OutputError, resolved

CARD_MARK = "written by LLM Compression Studio"
README_NAME = "README.md"
EXAMPLE_PROMPT = "Explain in two sentences why the sky is blue."


@dataclass
class GgufFacts:
    """What a written GGUF says about itself."""

    path: Path
    quant: str  # llama.cpp's file type without MOSTLY_ (Q4_K_M)
    bytes: int
    chat_template: str | None = None
    bos: str = ""
    eos: str = ""
    adds_bos: bool = False
    control_tokens: list[str] = field(default_factory=list)


def _value(reader: Any, key: str) -> Any:
    found = reader.get_field(key)
    return found.contents() if found is not None else None


def read_gguf_facts(path: str | Path) -> GgufFacts:
    """The file type, chat template, BOS/EOS and control tokens of the GGUF at ``path``."""
    import gguf

    path = Path(path)
    reader = gguf.GGUFReader(str(path))
    file_type = _value(reader, "general.file_type")
    quant = gguf.LlamaFileType(int(file_type)).name.removeprefix("MOSTLY_") if file_type is not None else "?"
    quant = {"ALL_F32": "F32"}.get(quant, quant)
    tokens = _value(reader, "tokenizer.ggml.tokens") or []
    types = _value(reader, "tokenizer.ggml.token_type") or []

    def token(key: str) -> str:
        index = _value(reader, key)
        return tokens[int(index)] if index is not None and 0 <= int(index) < len(tokens) else ""

    control = [t for t, kind in zip(tokens, types, strict=False) if int(kind) == int(gguf.TokenType.CONTROL)]
    return GgufFacts(path, quant, path.stat().st_size, _value(reader, "tokenizer.chat_template"),
                     token("tokenizer.ggml.bos_token_id"), token("tokenizer.ggml.eos_token_id"),
                     bool(_value(reader, "tokenizer.ggml.add_bos_token")), control)


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def modelfile_text(facts: GgufFacts) -> str:
    """An Ollama Modelfile for one GGUF: FROM it, its chat TEMPLATE where exact, its stop words."""
    template, why = ollama_template(facts.chat_template, facts.bos, facts.eos, facts.adds_bos)
    lines = [f"# Ollama Modelfile for {facts.path.name} ({facts.quant}), {CARD_MARK}.",
             f"# Make the model:  ollama create {ollama_name(facts.path)} -f {modelfile_path(facts.path).name}",
             f"FROM ./{facts.path.name}", ""]
    if template is not None:
        lines += [f"# TEMPLATE: {why}.", f'TEMPLATE """{template}"""']
    else:
        lines += [f"# No TEMPLATE: {why}."]
    for stop in stop_words(facts.chat_template, facts.bos, facts.eos, facts.control_tokens):
        lines.append(f"PARAMETER stop {_quoted(stop)}")
    return "\n".join(lines) + "\n"


def modelfile_path(gguf_path: Path) -> Path:
    """``model-Q4_K_M.gguf`` -> ``model-Q4_K_M.Modelfile`` (one per file: a Modelfile has one FROM)."""
    return gguf_path.with_suffix(".Modelfile")


def ollama_name(gguf_path: Path) -> str:
    """A name Ollama accepts (lower case, no spaces) for the model made from ``gguf_path``."""
    name = "".join(c if c.isalnum() or c in "-_." else "-" for c in gguf_path.stem.lower())
    return name.strip("-.") or "model"


def llama_cli_command(gguf_path: Path, prompt: str = EXAMPLE_PROMPT) -> str:
    """The llama.cpp command that runs ``gguf_path`` on a prompt."""
    return f'llama-cli -m {_shell(str(gguf_path))} -p {_quoted(prompt)} -n 128'


def _shell(text: str) -> str:
    import shlex

    return shlex.quote(text)


def _bytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n < 1e9 else f"{n / 1e9:.2f} GB"


def readme_text(files: list[GgufFacts], source: dict[str, Any], *, imatrix: dict[str, Any] | None = None,
                perplexity: dict[str, float] | None = None, perplexity_how: str | None = None) -> str:
    """The model card of the exported files.

    ``source``: ``{"name", "folder"}`` plus, for a run's result, its ``report`` (report.json: source model,
    recipe name, steps with their summaries, before/after measurements).  ``imatrix``: the importance matrix's
    ``datasets``, ``chunks`` and ``chunk_size``, when one was used.  ``perplexity``: type -> llama.cpp's
    perplexity of that file, where measured (``perplexity_how``: on what text).
    """
    report = source.get("report") or {}
    name = source.get("name") or "model"
    lines = [f"<!-- {CARD_MARK}: the GGUF export's model card; the app replaces this file only while it carries "
             "this line -->", f"# {name} — GGUF", "",
             f"GGUF files of **{name}** for llama.cpp, Ollama and LM Studio, written by LLM Compression Studio.", "",
             "## Source", ""]
    if report:
        after = report.get("after") or {}
        lines += [f"- Original model: `{report.get('source', '?')}` ({after.get('architecture', '?')}, "
                  f"{after.get('parameters', 0) / 1e6:.1f}M parameters)",
                  f"- Compressed by the recipe **{report.get('recipe', '?')}** (run {report.get('created', '?')}), "
                  f"result folder `{source.get('folder', '?')}`", "", "## What was done to it", ""]
        steps = [s for s in report.get("steps") or [] if s.get("enabled", True)]
        for i, step in enumerate(steps, 1):
            lines.append(f"{i}. **{step.get('technique')}** ({step.get('family', '')}): {step.get('summary', '')}")
        if not steps:
            lines.append("No compression step: the model as loaded.")
        before_ppl = ((report.get("before") or {}).get("perplexity") or {}).get("perplexity")
        after_ppl = (after.get("perplexity") or {}).get("perplexity")
        if before_ppl and after_ppl:
            method = (after.get("perplexity") or {}).get("convention", "")
            lines += ["", f"Perplexity measured by the run ({method} convention): {before_ppl:.2f} before, "
                          f"{after_ppl:.2f} after."]
    else:
        lines += [f"- Model: `{source.get('folder') or name}`, exported as loaded (no compression step).", ""]
    ours = [f.quant for f in files if not needs_quantizer(f.quant, imatrix is not None and f.quant != "F16")]
    theirs = [f.quant for f in files if f.quant not in ours]
    how = []
    if ours:
        how.append(f"{', '.join(ours)} written by the app's own GGUF writer")
    if theirs:
        weighed = ""
        if imatrix:
            weighed = (f", weighing rounding errors by an importance matrix computed once on "
                       f"{', '.join(imatrix.get('datasets') or ['the calibration text'])} "
                       f"({imatrix.get('chunks')} chunks of {imatrix.get('chunk_size')} tokens)")
        how.append(f"{', '.join(theirs)} rounded by llama.cpp's `llama-quantize` from the app's F16 export{weighed}")
    lines += ["", f"Then GGUF: {'; '.join(how)}.", "", "## Files", "",
              "| Type | File | Size | Perplexity (llama.cpp) | What it is |", "|---|---|---|---|---|"]
    for facts in files:
        measured = (perplexity or {}).get(facts.quant)
        lines.append(f"| {facts.quant} | `{facts.path.name}` | {_bytes(facts.bytes)} | "
                     f"{f'{measured:.2f}' if measured else 'not measured'} | "
                     f"{GGUF_TYPE_INFO.get(facts.quant, ('',))[0]} |")
    if perplexity_how:
        lines += ["", f"Perplexity measured by llama.cpp's `llama-perplexity` on {perplexity_how} "
                      "(the second half of each chunk scored; lower is better)."]
    lines += ["", "## Run it", ""]
    for facts in files:
        lines += [f"**{facts.quant}** with llama.cpp, then with Ollama:", "", "```sh",
                  llama_cli_command(Path(facts.path.name)),
                  f"ollama create {ollama_name(facts.path)} -f {modelfile_path(facts.path).name}",
                  f"ollama run {ollama_name(facts.path)}", "```", ""]
    return "\n".join(lines)


def is_app_card(path: Path) -> bool:
    """Whether the text file ``path`` was written by this app (its first line carries :data:`CARD_MARK`)."""
    try:
        with path.open(encoding="utf-8") as handle:
            return CARD_MARK in handle.readline()
    except (OSError, UnicodeDecodeError):
        return False


def check_card_file(path: str | Path, overwrite: bool) -> Path:
    """A card may be written at ``path`` if nothing is there, or (with ``overwrite``) a card this app wrote."""
    target = resolved(path)
    if target.is_dir():
        raise OutputError(f"{target} is a folder, so the {target.name} card cannot be written next to the GGUF: "
                          "choose another folder")
    if target.exists():
        if not is_app_card(target):
            raise OutputError(f"{target} was not written by this app, so it is never replaced: export into "
                              "another folder, or leave the Modelfile and README out")
        if not overwrite:
            raise OutputError(f"{target} already exists: allow replacing it, or export into another folder")
    return target


def write_card(path: Path, text: str, overwrite: bool) -> Path:
    """Write ``text`` at ``path`` atomically, under the rules of :func:`check_card_file` (checked again here)."""
    target = check_card_file(path, overwrite)
    with atomic_file(target, "writing the card") as partial:
        partial.write_text(text, encoding="utf-8")
        check_card_file(target, overwrite)  # nothing foreign appeared meanwhile
    return target

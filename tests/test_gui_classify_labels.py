"""Issue 19 in the app (offscreen, no model): the Pipeline's data box lists the labels found in the chosen
labelled data, with counts and warnings; the Compare page shows per-class scores of teacher and student."""

from __future__ import annotations

import csv
import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402

from core.data.samples import datasets_ready  # noqa: E402
from core.data.texts import label_counts, label_warnings  # noqa: E402
from core.engine.recipe import DataSpec, EvalSpec  # noqa: E402
from gui.screens.pipeline.data_box import DataBox  # noqa: E402


def _csv(path, counts: dict[str, int], column="label"):
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", column])
        for label, count in counts.items():
            writer.writerows([(f"example {i} of {label}", label) for i in range(count)])
        writer.writerow(["", "sport"])  # no text: not an example
    return path


def test_label_counts_in_label_order_and_warnings(tmp_path):
    path = _csv(tmp_path / "news.csv", {"tech": 30, "business": 40, "sport": 8})
    assert list(label_counts(str(path)).items()) == [("business", 40), ("sport", 8), ("tech", 30)]
    warnings = label_warnings(label_counts(str(path)))
    assert len(warnings) == 1 and "sport (8)" in warnings[0] and "under 10" in warnings[0]
    dominated = label_warnings({"ham": 90, "spam": 10})
    assert len(dominated) == 1 and "'ham' is 90%" in dominated[0]
    assert label_warnings({"ham": 80, "spam": 20}) == []  # 80% is not more than 80%


def test_data_box_shows_the_labels_of_the_chosen_data(qtbot, tmp_path):
    box = DataBox()
    qtbot.addWidget(box)
    news = _csv(tmp_path / "news.csv", {"tech": 30, "business": 40, "sport": 8})
    box.set_specs(DataSpec(labelled=str(news)), EvalSpec())
    text = box.labels_found.text()
    assert "3 labels found (78 examples): business 40, sport 8, tech 30." in text
    assert "Very few examples" in text and "sport (8)" in text
    box.labelled.set_value(str(_csv(tmp_path / "five.csv", {c: 20 for c in "abcde"})))  # the user picks a file
    assert box.labels_found.text() == "5 labels found (100 examples): a 20, b 20, c 20, d 20, e 20."
    stars = _csv(tmp_path / "stars.csv", {"1": 12, "5": 12}, column="stars")
    box.labelled.set_value(str(stars))
    assert "no column 'label'" in box.labels_found.text()
    box.data_form.set_value("label_column", "stars")  # as if typed in the form
    assert box.labels_found.text().startswith("2 labels found (24 examples): 1 12, 5 12.")


@pytest.mark.skipif(not datasets_ready(), reason="bundled datasets missing: run `make data`")
def test_data_box_shows_the_bundled_reviews_labels(qtbot):
    box = DataBox()
    qtbot.addWidget(box)
    counts = label_counts("bundled:rotten-tomatoes")
    assert list(counts) == ["fresh", "rotten"] and sum(counts.values()) > 10_000
    assert box.labels_found.text().startswith(f"2 labels found ({sum(counts.values()):,} examples): "
                                              f"fresh {counts['fresh']:,}, rotten {counts['rotten']:,}.")

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

pytest_plugins = ["tests.gui_fixtures"]  # the dialogs and window fixtures
TIMEOUT_MS = 600_000  # a real MiniLM run on two shared cores
needs_data = pytest.mark.skipif(not datasets_ready(), reason="bundled datasets missing: run `make data`")


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


# ----------------------------------------------------------------------------------- Compare
NAMES = ["animals", "chemistry", "countries"]
TRUE = [0] * 10 + [1] * 10 + [2] * 10


def _classifier_report(distilled: bool = True) -> dict:
    from core.eval.metrics import classification_metrics

    original = classification_metrics(TRUE, [0] * 30, NAMES)  # an untrained head: always 'animals'
    teacher = classification_metrics(TRUE, TRUE, NAMES)  # perfect
    student = classification_metrics(TRUE, [0] * 10 + [1] * 10 + [2] * 6 + [1] * 4, NAMES)  # 4 countries → chemistry
    size = {"parameters": 1000, "nonzero_parameters": 1000, "bytes_on_disk": 4_000_000, "bytes_in_memory": 4_000_000}
    steps = [{"technique": "train_classifier", "metrics": {"test_accuracy": 1.0}}]
    if distilled:
        steps.append({"technique": "distill_classifier",
                      "metrics": {"test_accuracy": student["accuracy"], "teacher_test_per_class": teacher["per_class"],
                                  "teacher_test_confusion_matrix": teacher["confusion_matrix"]}})
    return {"recipe": "classes", "source": "bundled:minilm-l6", "task": "sequence-classification",
            "before": {**size, "classification": original}, "after": {**size, "classification": student},
            "comparison": {}, "steps": steps}


def _saved(tmp_path, report):
    import json

    from core.eval.compare import read_output_folder

    folder = tmp_path / "result"
    folder.mkdir()
    (folder / "report.json").write_text(json.dumps(report))
    (folder / "recipe.yaml").write_text("name: classes\n")
    return read_output_folder(folder)


def _cell(table, row, header):
    headers = [" ".join(table.horizontalHeaderItem(c).text().split()) for c in range(table.columnCount())]
    return table.item(row, headers.index(header)).text()


def test_compare_shows_each_class_for_teacher_and_student(qtbot, tmp_path):
    from gui.screens.compare.panel import ComparePanel

    panel = ComparePanel()
    qtbot.addWidget(panel)
    panel.resize(1280, 900)
    panel.set_run(_saved(tmp_path, _classifier_report()))
    section = panel.classes
    assert not section.isHidden()
    table = section.table
    assert [table.item(r, 0).text() for r in range(table.rowCount())] == NAMES
    # countries: the teacher is perfect; the student finds 6 of 10 (recall 0.6), all right (precision 1)
    assert _cell(table, 2, "Teacher F1") == "1.000" and _cell(table, 2, "Student recall") == "0.600"
    assert _cell(table, 2, "Student precision") == "1.000" and _cell(table, 2, "Student F1") == "0.750"
    assert _cell(table, 2, "F1 change") == "−0.250"
    # chemistry: 10 right and 4 countries called chemistry: precision 10/14, F1 = 2·(10/14)/(1 + 10/14) = 0.833
    assert _cell(table, 1, "Student precision") == "0.714" and _cell(table, 1, "Student F1") == "0.833"
    assert _cell(table, 0, "F1 change") == "+0.000" and _cell(table, 0, "Test examples") == "10"
    assert section.sentence.text().count("worse") == 1
    assert "2 classes got worse" in section.sentence.text()
    assert "countries (F1 1.00 → 0.75)" in section.sentence.text()  # the largest fall first
    assert section.sentence.text().index("countries") < section.sentence.text().index("chemistry")
    student = section.student_confusion
    assert student.item(2, 3).text() == "6" and student.item(2, 2).text() == "4"  # countries: 4 called chemistry
    assert section.teacher_confusion.item(2, 3).text() == "10"
    panel.scroll.ensureWidgetVisible(section)
    assert not panel.grab().isNull()


def test_compare_without_a_distillation_step_compares_with_the_original(qtbot, tmp_path):
    from gui.screens.compare.panel import ComparePanel

    panel = ComparePanel()
    qtbot.addWidget(panel)
    panel.set_run(_saved(tmp_path, _classifier_report(distilled=False)))
    table = panel.classes.table
    assert table.horizontalHeaderItem(2).text() == "Original\nprecision"
    assert _cell(table, 0, "Original recall") == "1.000" and _cell(table, 1, "Original F1") == "0.000"
    assert "No class got worse" in panel.classes.sentence.text()


def test_compare_hides_the_class_section_for_a_language_model(qtbot, tmp_path):
    from gui.screens.compare.panel import ComparePanel

    panel = ComparePanel()
    qtbot.addWidget(panel)
    report = _classifier_report()
    for side in ("before", "after"):
        del report[side]["classification"]
    report["task"] = "causal-lm"
    panel.set_run(_saved(tmp_path, report))
    assert panel.classes.isHidden()


def test_compare_at_1024_gives_class_names_room_and_stacks_the_matrices(qtbot, tmp_path):
    """At 1024×700 the class names were cut to "anim…" by wide one-line headers, and the five-class
    confusion matrices side by side hid their last columns behind a scroll bar."""
    from PySide6.QtWidgets import QBoxLayout

    from gui.screens.compare.panel import ComparePanel

    panel = ComparePanel()
    qtbot.addWidget(panel)
    panel.resize(1024 - 130, 700)  # the page's share of a 1024-px window beside the step list
    panel.set_run(_saved(tmp_path, _classifier_report()))
    panel.show()
    qtbot.waitExposed(panel)
    section, table = panel.classes, panel.classes.table
    names = [table.item(r, 0).text() for r in range(table.rowCount())]
    widest = max(table.fontMetrics().horizontalAdvance(name) for name in names)
    assert table.columnWidth(0) > widest + 8
    assert section.matrices.direction() == QBoxLayout.Direction.TopToBottom
    matrix = section.student_confusion
    assert not matrix.horizontalScrollBar().isVisible()
    panel.resize(1600, 1000)
    qtbot.wait(50)
    assert section.matrices.direction() == QBoxLayout.Direction.LeftToRight


@pytest.mark.slow
@needs_data
def test_a_five_class_csv_goes_through_the_classifier_preset_in_the_app(qtbot, window, dialogs, tmp_path):
    """Issue 19's first click, as a person makes it: pick "Distil a small classifier", choose a CSV of five
    topics under Labelled, run.  No code: the saved folder loads in plain transformers with the label
    names, and Compare shows every class for the fine-tuned teacher and the student."""
    from transformers import AutoModelForSequenceClassification

    from tests.test_classify_any_classes import TOPICS, _write_csv, wiki_topics

    rows, _ = wiki_topics(5, per_class=8, held_out=0)
    data = _write_csv(tmp_path / "my-topics.csv", rows)
    panel = window.pipeline_panel
    bar = panel.recipe_bar
    index = next(i for i in range(1, bar.presets.count()) if "classifier" in bar.presets.itemText(i))
    bar.presets.activated.emit(index)
    model = window.model_panel
    assert window.model_context().source == "bundled:minilm-l6"
    with qtbot.waitSignal(model.model_loaded, timeout=TIMEOUT_MS):
        model.load()
    qtbot.waitUntil(lambda: not model.is_busy())
    panel.data_box.labelled.set_value(str(data))
    assert panel.data_box.labels_found.text().startswith("5 labels found (40 examples): animals 8, chemistry 8,")
    bar.output.setText(str(tmp_path / "out"))
    run = window.run_panel
    with qtbot.waitSignal(run.run_finished, timeout=TIMEOUT_MS):
        assert window.run_pipeline() is not None
    qtbot.waitUntil(lambda: not run.is_busy())
    assert not dialogs, [d.text() for d in dialogs]
    names = sorted(TOPICS)
    loaded = AutoModelForSequenceClassification.from_pretrained(run.output_dir)
    assert loaded.config.id2label == dict(enumerate(names)) and loaded.config.num_hidden_layers == 4
    section = window.compare_panel.classes
    assert not section.isHidden()
    assert [section.table.item(r, 0).text() for r in range(section.table.rowCount())] == names
    assert section.table.horizontalHeaderItem(2).text() == "Teacher\nprecision"  # the fine-tuned teacher

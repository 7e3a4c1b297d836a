"""Compare and Export pages on their own (no model): what they show for a report, tooltips, refusals."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import json  # noqa: E402

import pytest  # noqa: E402
from PySide6.QtWidgets import QMessageBox  # noqa: E402

from core.eval.compare import read_output_folder  # noqa: E402
from gui.screens.compare.panel import ComparePanel  # noqa: E402
from gui.screens.compare.playground import tokens_html  # noqa: E402
from gui.screens.export.panel import ExportPanel  # noqa: E402

REPORT = {"recipe": "half", "source": "bundled:smollm2-135m", "task": "causal-lm",
          "before": {"parameters": 1000, "nonzero_parameters": 1000, "bytes_on_disk": 4_000_000,
                     "bytes_in_memory": 4_000_000, "perplexity": {"perplexity": 20.0}},
          "after": {"parameters": 1000, "nonzero_parameters": 500, "bytes_on_disk": 2_000_000,
                    "bytes_in_memory": 4_000_000, "perplexity": {"perplexity": 25.0}},
          "comparison": {"kl_per_token": 0.25}, "steps": []}


@pytest.fixture
def dialogs(monkeypatch):
    shown: list[QMessageBox] = []
    monkeypatch.setattr(QMessageBox, "exec", lambda box: shown.append(box) or int(QMessageBox.StandardButton.Ok))
    return shown


def _saved(tmp_path, report):
    folder = tmp_path / "result"
    folder.mkdir()
    (folder / "report.json").write_text(json.dumps(report))
    (folder / "recipe.yaml").write_text("name: half\n")
    return read_output_folder(folder)


def test_table_ratios_and_not_measured_rows(qtbot, tmp_path):
    panel = ComparePanel()
    qtbot.addWidget(panel)
    panel.set_run(_saved(tmp_path, REPORT))
    table = panel.table
    assert table.text_at("Non-zero parameters", 3) == "0.5×"
    assert table.text_at("Size on disk", 1) == "4 MB" and table.text_at("Size on disk", 2) == "2 MB"
    assert table.text_at("Perplexity", 3) == "1.25×"
    speed = table.text_at("Decode speed", 1)
    assert speed.startswith("not measured") and "Measure speed" in speed and table.columnSpan(4, 1) == 3 and "Lower is better" in table.item(0, 0).toolTip()
    assert list(panel.charts.ratio_bars.opts["width"]) == pytest.approx([1.0, 0.5, 0.5, 1.0, 1.25])
    assert "half" in panel.title.text() and panel.playground.generate_button.isEnabled()


def test_classifier_result_has_no_playground(qtbot, tmp_path):
    panel = ComparePanel()
    qtbot.addWidget(panel)
    panel.set_run(_saved(tmp_path, {**REPORT, "task": "sequence-classification"}))
    assert not panel.playground.generate_button.isEnabled() and "classifier" in panel.playground.status.text()
    assert panel.playground.generate() is None
    assert panel.table.text_at("Accuracy", 1).startswith("not measured")


def test_divergent_tokens_are_highlighted():
    html = tokens_html(["The", " cat", "<b>"], [True, False, False], 1)
    assert html.count("<span") == 2 and "underline" in html and "&lt;b&gt;" in html
    assert "<span" not in tokens_html(["a", "b"], [True, True], None)


def test_every_control_explains_itself(qtbot):
    from PySide6.QtWidgets import (
        QAbstractButton,
        QAbstractSpinBox,
        QComboBox,
        QLineEdit,
        QTableView,
        QTextBrowser,
    )

    for page in (ComparePanel(), ExportPanel()):
        qtbot.addWidget(page)
        controls = [w for kind in (QAbstractButton, QAbstractSpinBox, QComboBox, QLineEdit, QTextBrowser)
                    for w in page.findChildren(kind)
                    if not isinstance(w.parent(), QAbstractSpinBox | QTableView)]  # their own inner parts
        assert len(controls) >= 5
        assert all(w.toolTip() for w in controls), [type(w).__name__ for w in controls if not w.toolTip()]


def test_export_refuses_folders_that_are_not_results(qtbot, dialogs, tmp_path):
    panel = ExportPanel()
    qtbot.addWidget(panel)
    assert not panel.copy_button.isEnabled() and not panel.gguf_button.isEnabled()
    assert panel.open_folder(tmp_path) is None
    assert "not the output of a run" in dialogs[-1].text() and panel.run is None

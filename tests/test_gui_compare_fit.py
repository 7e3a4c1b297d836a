"""Compare shows every number at small and common window sizes (issue 16, problem 5).

The table's Student and ratio columns stay inside the page (a long "not measured" note wraps instead of
widening the Teacher column), and both charts draw inside their own widgets (a long chart title used to
widen the ratio chart's plot past its widget, cutting off its bars and ticks at 1024 px).
"""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import json  # noqa: E402

import pytest  # noqa: E402

from core.eval.compare import read_output_folder  # noqa: E402
from gui.main_window import STEPS, MainWindow  # noqa: E402

# A Wanda 50% run from the bundled 4-bit GGUF as the run recorded it (sizes in bytes), speed not measured.
REPORT = {"recipe": "Wanda 50% first try", "source": "bundled:smollm2-135m", "task": "causal-lm",
          "before": {"parameters": 134_515_008, "nonzero_parameters": 134_189_880, "bytes_on_disk": 98_362_432,
                     "bytes_as_16bit": 269_030_016, "stored_format": "4-bit GGUF Q4_1", "stored_bits": 4,
                     "bytes_in_memory": 538_060_288, "perplexity": {"perplexity": 17.08}},
          "after": {"parameters": 134_515_008, "nonzero_parameters": 81_139_203, "bytes_on_disk": 269_060_552,
                    "bytes_in_memory": 538_060_288, "perplexity": {"perplexity": 37.31}},
          "comparison": {"kl_per_token": 0.84}, "steps": []}


@pytest.fixture
def compare_page(qtbot, tmp_path):
    folder = tmp_path / "result"
    folder.mkdir()
    (folder / "report.json").write_text(json.dumps(REPORT))
    (folder / "recipe.yaml").write_text("name: Wanda 50% first try\n")
    window = MainWindow()
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    window.nav.setCurrentRow(STEPS.index("Compare"))
    window.compare_panel.set_run(read_output_folder(folder))
    return window


@pytest.mark.parametrize("size", [(1024, 700), (1280, 820), (1600, 1000)])
def test_every_column_and_chart_fits(compare_page, qtbot, size):
    window = compare_page
    window.resize(*size)
    qtbot.wait(50)
    panel = window.compare_panel
    table = panel.table
    visible = table.viewport().width()
    for column in range(table.columnCount()):
        right = table.columnViewportPosition(column) + table.columnWidth(column)
        assert right <= visible, f"column {column} ends at {right} px of {visible} at {size}"
    assert table.horizontalScrollBar().maximum() == 0
    page_right = panel.scroll.viewport().mapTo(window, panel.scroll.viewport().rect().topRight()).x()
    for plot in (panel.charts.size_plot, panel.charts.ratio_plot):
        item = plot.getPlotItem()
        drawn = item.mapRectToScene(item.boundingRect())  # the plot's layout: title, axes and view box
        assert drawn.right() <= plot.width() + 1, f"{plot.getPlotItem().titleLabel.text} spills at {size}"
        widget_right = plot.mapTo(window, plot.rect().topRight()).x()
        assert widget_right <= page_right + 1, f"chart cut off by the page at {size}"
    ratio_labels = [label for _, label in panel.charts.ratio_plot.getAxis("left")._tickLevels[0]]
    assert "16-bit" in ratio_labels  # the like-for-like size has its bar and its name

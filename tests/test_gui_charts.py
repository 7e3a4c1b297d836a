"""Charts that do not exaggerate (issue 16, item 9), with made-up numbers and no model.

Perplexity on the Run page is drawn as the change from the original in percent, on an axis of at
least ±5% around no change; an absolute quality axis never goes below 0; the Loss chart is hidden
for a pipeline that does not train; tick labels are rounded to a few significant figures.
"""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from types import SimpleNamespace  # noqa: E402

import pytest  # noqa: E402

from core.engine.recipe import Recipe, Step  # noqa: E402
from core.events import Metric  # noqa: E402
from gui.screens.history.plot import HistoryPlot  # noqa: E402
from gui.screens.history.style import QUALITIES  # noqa: E402
from gui.screens.run.panel import RunPanel  # noqa: E402
from gui.widgets.axes import tick_text  # noqa: E402
from gui.widgets.plots import LivePlots  # noqa: E402

PERPLEXITY, KL = QUALITIES[0], QUALITIES[-1]


def _plots(qtbot) -> LivePlots:
    plots = LivePlots()
    qtbot.addWidget(plots)
    plots.resize(900, 600)
    plots.show()
    plots.reset(1)
    return plots


def _y_range(plot) -> tuple[float, float]:
    low, high = plot.getViewBox().viewRange()[1]
    return low, high


def test_run_quality_chart_shows_perplexity_as_percent_change_on_a_sensible_axis(qtbot):
    plots = _plots(qtbot)
    plots.add_event(Metric("perplexity/before", 18.007))
    plots.add_event(Metric("perplexity/after", 18.023))
    plots.redraw()
    item = plots.quality["perplexity"][1]
    assert list(item.yData) == pytest.approx([0.0, 100 * (18.023 / 18.007 - 1)])  # 0 and +0.09 %
    low, high = _y_range(plots.quality_plot)
    assert low <= -5 and high >= 5  # the axis starts at "no change" and is not zoomed onto 0.09 %
    assert high < 10 and low > -10
    assert plots.quality_plot.getAxis("left").labelText == "change (%)"
    title = plots.quality_plot.plotItem.titleLabel.text
    assert "18.01" in title and "18.02" in title and "+0.09%" in title  # the measured numbers stay readable


def test_run_quality_axis_does_not_dip_below_a_perplexity_of_zero(qtbot):
    """A broken result (17 -> 1,900) once pulled the axis to -20 perplexity."""
    plots = _plots(qtbot)
    plots.add_event(Metric("perplexity/before", 17.08))
    plots.add_event(Metric("perplexity/after", 1900.0))
    plots.redraw()
    low, high = _y_range(plots.quality_plot)
    assert low >= -100  # -100 % is a perplexity of 0
    assert high >= 100 * (1900 / 17.08 - 1)


def test_accuracy_is_drawn_in_percent_on_a_full_axis(qtbot):
    plots = _plots(qtbot)
    plots.add_event(Metric("accuracy/before", 0.91))
    plots.add_event(Metric("accuracy/after", 0.90))
    plots.redraw()
    assert list(plots.quality["accuracy"][1].yData) == pytest.approx([91.0, 90.0])
    low, high = _y_range(plots.quality_plot)
    assert low == pytest.approx(0, abs=1) and high == pytest.approx(100, abs=6)


def _record(run_id: int, size_mb: float, **metrics: float):
    values = {"bytes_on_disk_after": size_mb * 1e6, **metrics}
    return SimpleNamespace(id=run_id, status="done", metric=values.get, metrics=values, recipe_name=f"run {run_id}",
                           source="bundled:smollm2-135m")


def _history(qtbot, records, quality) -> HistoryPlot:
    plot = HistoryPlot()
    qtbot.addWidget(plot)
    plot.resize(560, 330)
    plot.show()
    plot.set_runs(records, quality)
    plot.widget.grab()  # lays the axes out, as on screen
    return plot


@pytest.mark.parametrize(("quality", "values"), [(KL, (0.0, 0.5)), (PERPLEXITY, (1.2, 11.0)), (KL, (0.0,))])
def test_history_quality_axis_never_goes_below_zero(qtbot, quality, values):
    plot = _history(qtbot, [_record(i, 100 + 20 * i, **{quality.key: v}) for i, v in enumerate(values)], quality)
    low, high = _y_range(plot.widget)
    assert low >= 0 and high >= max(values)


def _drawn_ticks(axis) -> list[str]:
    low, high = axis.range
    length = axis.geometry().height() if axis.orientation in ("left", "right") else axis.geometry().width()
    return [text for spacing, values in axis.tickValues(low, high, length)
            for text in axis.tickStrings(values, axis.scale, spacing)]


def test_history_ticks_are_rounded_when_runs_share_one_value(qtbot):
    """Two runs with the same perplexity zoomed the axis onto 1e-11 and labelled it '18.00699999956'."""
    plot = _history(qtbot, [_record(1, 98.36, perplexity_after=18.007), _record(2, 98.36, perplexity_after=18.007)],
                    PERPLEXITY)
    low, high = _y_range(plot.widget)
    assert high - low >= 0.05 * 18.007  # not zoomed onto rounding noise
    for axis in ("left", "bottom"):
        ticks = _drawn_ticks(plot.widget.getAxis(axis))
        assert ticks and all(len(t.replace(",", "")) <= 6 for t in ticks), ticks


def test_log_axis_ticks_are_plain_numbers(qtbot):
    plot = _history(qtbot, [_record(1, 100, perplexity_after=15.0), _record(2, 120, perplexity_after=220.0)],
                    PERPLEXITY)
    assert plot.log_y
    ticks = _drawn_ticks(plot.widget.getAxis("left"))
    assert "20" in ticks and "100" in ticks and not any("·" in t or "e" in t for t in ticks), ticks


def test_tick_text_rounds_to_significant_figures():
    assert tick_text(18.00699999956, 1e-11) == "18.007"
    assert tick_text(0.30000000000000004, 0.1) == "0.3"
    assert tick_text(-0.0, 0.5) == "0.0" and tick_text(-0.00001, 0.5) == "0.0"
    assert tick_text(134.0, 0.2) == "134.0"  # the same decimals as its neighbours (134.2, 133.8)
    assert tick_text(2500.0, 500.0) == "2,500"
    assert tick_text(0.00125, 0.00025) == "0.00125"


# -- the Loss chart only for pipelines that train --------------------------------------------------------
def _recipe(*techniques: str) -> Recipe:
    from core.engine.registry import get_technique

    return Recipe(name="charts", steps=[Step(t, get_technique(t).config_cls()) for t in techniques])


@pytest.fixture
def run_panel(qtbot, monkeypatch):
    import gui.screens.run.panel as run_panel_module

    handle = SimpleNamespace(is_running=lambda: False, cancel=lambda: None)
    monkeypatch.setattr(run_panel_module, "start_job", lambda *args, **kwargs: handle)  # nothing runs
    panel = RunPanel()
    qtbot.addWidget(panel)
    panel.resize(1024, 700)
    panel.show()
    return panel


def test_loss_chart_is_hidden_for_a_pipeline_that_does_not_train(run_panel, tmp_path):
    run_panel.start(_recipe("magnitude_prune"), tmp_path / "out", "cpu")
    assert run_panel.plots.loss_plot.isHidden()
    for plot in (run_panel.plots.size_plot, run_panel.plots.quality_plot, run_panel.plots.layer_plot):
        assert not plot.isHidden()


@pytest.mark.parametrize("training", ["distill_causal_lm", "qat", "train_classifier", "distill_classifier"])
def test_loss_chart_is_shown_for_a_pipeline_with_a_training_step(run_panel, tmp_path, training):
    """Distillation and quantization-aware training (a quantization step that trains) both report a loss."""
    run_panel.start(_recipe("rtn_quantize", training), tmp_path / "out", "cpu")
    assert not run_panel.plots.loss_plot.isHidden()


def test_the_charts_share_the_height_in_two_equal_rows(run_panel, qtbot, tmp_path):
    """The Loss chart is not squeezed into a strip above the others (a plot's size hint follows its last size, so
    the row that grew first used to keep the space)."""
    run_panel.start(_recipe("rtn_quantize", "qat"), tmp_path / "out", "cpu")
    plots = run_panel.plots
    qtbot.waitUntil(lambda: plots.quality_plot.height() > 0)
    assert plots.loss_plot.height() == plots.size_plot.height()
    assert plots.loss_plot.height() >= 0.85 * plots.quality_plot.height(), (plots.loss_plot.height(),
                                                                            plots.quality_plot.height())

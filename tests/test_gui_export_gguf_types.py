"""The Export page's GGUF types (issue 22): every type with a plain line and its estimated size, and a K-quant with
our importance matrix exported through llama.cpp's quantizer from the page."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402

from core.eval.compare import read_output_folder  # noqa: E402
from core.io.gguf_types import GGUF_TYPE_INFO  # noqa: E402
from core.io.llama_cpp_tools import missing_reason  # noqa: E402
from gui.screens.export.panel import ExportPanel  # noqa: E402
from gui.widgets.formatting import format_bytes  # noqa: E402
from tests.helpers import collect, write_recipe  # noqa: E402

pytest_plugins = ["tests.gui_fixtures"]  # the dialogs fixture
TIMEOUT_MS = 120_000


@pytest.fixture
def result(tmp_path, tiny_llama_dir, text_file):
    from core.engine.recipe import load_recipe
    from core.engine.runner import run_recipe

    out = tmp_path / "out"
    collect(run_recipe(load_recipe(write_recipe(tmp_path / "recipe.yaml", tiny_llama_dir, text_file)), out))
    return read_output_folder(out)


def test_every_type_is_listed_with_a_plain_line_and_its_estimated_size(qtbot, result):
    panel = ExportPanel()
    qtbot.addWidget(panel)
    panel.set_run(result)
    qtbot.waitUntil(lambda: panel.info is not None, timeout=TIMEOUT_MS)
    items = {name: panel.gguf.item_text(name) for name in panel.gguf.type_names()}
    assert list(items) == list(GGUF_TYPE_INFO)
    assert {"Q2_K", "Q3_K_M", "Q4_K_S", "Q4_K_M", "Q5_K_M", "Q6_K", "IQ4_XS", "F16", "Q8_0", "Q4_0"} <= set(items)
    assert "the usual choice" in items["Q4_K_M"]
    parameters = result.report["after"]["parameters"]
    # the estimate is the result's parameters at the type's bits per weight: F16 is two bytes a weight
    assert items["F16"].endswith(f"(about {format_bytes(parameters * 2)})"), items["F16"]
    assert items["Q4_K_M"].endswith(f"(about {format_bytes(int(parameters * 4.9 / 8))})"), items["Q4_K_M"]
    assert panel.gguf.checked() == (["Q8_0"] if missing_reason("llama-quantize") else ["Q4_K_M"])
    panel.gguf.set_checked(["F16"])
    assert not panel.gguf_imatrix.isEnabled()  # nothing to weigh when nothing is rounded
    panel.gguf.set_checked(["F16", "Q8_0"])
    assert panel.gguf_imatrix.isEnabled() == (missing_reason("llama-quantize") is None)
    panel.gguf.set_checked([])
    assert not panel.gguf_button.isEnabled()  # nothing ticked, nothing to export


@pytest.mark.skipif(missing_reason("llama-quantize") is not None, reason=str(missing_reason("llama-quantize")))
def test_export_page_writes_q4_k_m_with_our_importance_matrix(qtbot, dialogs, result, tmp_path):
    from core.io.gguf_export import read_gguf_summary

    panel = ExportPanel()
    qtbot.addWidget(panel)
    panel.set_run(result)
    qtbot.waitUntil(lambda: panel.info is not None, timeout=TIMEOUT_MS)
    panel.gguf.set_checked(["Q4_K_M"])
    assert panel.gguf_imatrix.isEnabled()
    panel.gguf_imatrix.setChecked(True)
    job = panel.export_gguf(tmp_path / "tiny-Q4_K_M.gguf")
    qtbot.waitUntil(lambda: not job.is_running(), timeout=TIMEOUT_MS)
    assert not dialogs, [d.text() for d in dialogs]
    summary = read_gguf_summary(tmp_path / "tiny-Q4_K_M.gguf")
    assert summary["architecture"] == "llama" and "done" in panel.status.text()
    assert panel.gguf.command.text().startswith(f"llama-cli -m {tmp_path / 'tiny-Q4_K_M.gguf'} -p ")
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]

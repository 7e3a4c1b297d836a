"""The Export page writes several GGUF types in one go (issue 22, item 7): a queue with per-file and overall
progress, one importance matrix for all, Cancel keeping the finished files only, and the llama.cpp command line
of the result to copy."""

from __future__ import annotations

import os
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402
from PySide6.QtGui import QGuiApplication  # noqa: E402

import core.engine.gguf_job as gguf_job  # noqa: E402
import core.io.gguf_quantize as gguf_quantize  # noqa: E402
from core.eval.compare import read_output_folder  # noqa: E402
from core.events import Progress  # noqa: E402
from core.io.llama_cpp_tools import missing_reason  # noqa: E402
from gui.screens.export.panel import ExportPanel  # noqa: E402
from tests.helpers import collect, write_recipe  # noqa: E402

pytest_plugins = ["tests.gui_fixtures"]  # the dialogs fixture
TIMEOUT_MS = 180_000
pytestmark = pytest.mark.skipif(missing_reason("llama-quantize") is not None,
                                reason=str(missing_reason("llama-quantize")))


def file_type(path) -> str:
    import gguf

    return gguf.LlamaFileType(int(gguf.GGUFReader(str(path)).get_field("general.file_type").contents())).name


@pytest.fixture
def panel(qtbot, tmp_path, tiny_llama_dir, text_file):
    from core.engine.recipe import load_recipe
    from core.engine.runner import run_recipe

    out = tmp_path / "tiny-result"
    collect(run_recipe(load_recipe(write_recipe(tmp_path / "recipe.yaml", tiny_llama_dir, text_file)), out))
    page = ExportPanel()
    qtbot.addWidget(page)
    page.resize(1024, 700)
    page.show()
    page.set_run(read_output_folder(out))
    qtbot.waitUntil(lambda: page.info is not None, timeout=TIMEOUT_MS)
    yield page
    if page.job is not None and page.job.is_running():
        page.job.cancel()
        qtbot.waitUntil(lambda: not page.job.is_running(), timeout=TIMEOUT_MS)


def test_two_ticked_types_are_written_one_after_another_from_one_importance_matrix(qtbot, dialogs, panel, tmp_path,
                                                                                   monkeypatch):
    calls = []
    real = gguf_job.iter_imatrix_file

    def counted(*args, **kwargs):
        calls.append(1)
        return (yield from real(*args, **kwargs))

    monkeypatch.setattr(gguf_job, "iter_imatrix_file", counted)
    target = tmp_path / "gguf"
    target.mkdir()
    panel.gguf.set_checked(["Q5_K_M", "Q4_K_M"])
    panel.gguf_imatrix.setChecked(True)
    assert panel.gguf.command.text() == ""  # nothing exported yet
    job = panel.export_gguf(target / "tiny.gguf")
    assert panel.gguf.queue_progress.isVisible() and panel.gguf.file_progress.isVisible()
    assert not panel.progress.isVisible()  # the queue's two bars replace the single one
    qtbot.waitUntil(lambda: not job.is_running(), timeout=TIMEOUT_MS)
    assert not dialogs, [d.text() for d in dialogs]
    assert calls == [1]  # one importance matrix for both types
    q5, q4 = target / "tiny-Q5_K_M.gguf", target / "tiny-Q4_K_M.gguf"
    assert file_type(q5) == "MOSTLY_Q5_K_M" and file_type(q4) == "MOSTLY_Q4_K_M"
    assert (panel.gguf.queue_progress.value(), panel.gguf.queue_progress.maximum()) == (2, 2)
    assert not panel.gguf.queue_progress.isVisible()  # hidden again once done
    assert "tiny-Q5_K_M.gguf" in panel.status.text() and "tiny-Q4_K_M.gguf" in panel.status.text()
    assert (target / "README.md").is_file() and (target / "tiny-Q4_K_M.Modelfile").is_file()
    # the first file's command line, to copy
    assert panel.gguf.command.text().startswith(f"llama-cli -m {q5} -p ")
    panel.gguf.copy_button.click()
    assert QGuiApplication.clipboard().text() == panel.gguf.command.text()


def test_cancel_mid_queue_keeps_the_finished_file_and_leaves_nothing_of_the_next(qtbot, dialogs, panel, tmp_path,
                                                                                 monkeypatch):
    real = gguf_quantize.iter_quantize_file

    def slow_second(source, path, quant, **kwargs):  # the second file takes long enough to be cancelled
        if quant == "Q4_K_M":
            for _ in range(600):
                time.sleep(0.05)
                yield Progress("quantizing", 0, 1)
        return (yield from real(source, path, quant, **kwargs))

    monkeypatch.setattr(gguf_quantize, "iter_quantize_file", slow_second)
    target = tmp_path / "gguf"
    target.mkdir()
    panel.gguf.set_checked(["Q4_K_M", "Q5_K_M"])
    assert panel.gguf.checked() == ["Q5_K_M", "Q4_K_M"]  # the list's order: best quality first
    panel.gguf.cards.setChecked(False)
    job = panel.export_gguf(target / "tiny.gguf")
    qtbot.waitUntil(lambda: panel.gguf.file_progress.format().startswith("Q4_K_M"), timeout=TIMEOUT_MS)
    assert panel.gguf.queue_progress.value() == 1
    panel.cancel_button.click()
    qtbot.waitUntil(lambda: not job.is_running(), timeout=TIMEOUT_MS)
    assert sorted(p.name for p in target.iterdir()) == ["tiny-Q5_K_M.gguf"]  # no partial of the second
    assert file_type(target / "tiny-Q5_K_M.gguf") == "MOSTLY_Q5_K_M"
    assert "cancelled" in panel.status.text() and "tiny-Q5_K_M.gguf" in panel.status.text()
    assert panel.gguf.command.text().startswith(f"llama-cli -m {target / 'tiny-Q5_K_M.gguf'}")
    assert not dialogs

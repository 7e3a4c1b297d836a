"""Issue 16, item 1: sizes with an honest baseline.

The bundled model is a 4-bit GGUF file (98.4 MB); a result from it is saved as bfloat16 (269 MB), so against
the file every result looked bigger than the original, and History called a result "best" without the original
on its plot.  These tests check: the Model page shows the file and the 16-bit size (computed here independently);
Compare's sentence compares a bfloat16 result with the 16-bit size; History draws the original and calls best only
results measurably smaller than it, with measured quality, that nothing dominates.
"""

from __future__ import annotations

import copy
import json
import os
import struct

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import gguf  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from core.eval.compare import size_note  # noqa: E402
from core.eval.pareto import best_trade_offs  # noqa: E402
from core.eval.size_baseline import original_size, original_size_of_metrics  # noqa: E402
from core.history.store import History  # noqa: E402
from core.history.summary import summarize_report  # noqa: E402
from core.io.save_dtype import cast_floating_weights  # noqa: E402
from core.models.gguf_header import gguf_file_type, gguf_storage, storage_of  # noqa: E402
from core.models.model_info import bytes_as_16bit, human_bytes, inspect_model  # noqa: E402
from gui.screens.history.panel import HistoryPanel  # noqa: E402
from gui.screens.history.table import COLUMNS  # noqa: E402

# The bundled SmolLM2-135M: its Q4_1 GGUF file, and its 134,515,008 weights × 2 bytes (measured below).
GGUF_BYTES, AS_16BIT = 98_362_432, 269_030_016


def _safetensors_tensor_bytes(path) -> int:
    """Bytes of the tensors in a .safetensors file: its size less the 8-byte length and the JSON header."""
    with open(path, "rb") as handle:
        header = struct.unpack("<Q", handle.read(8))[0]
    return path.stat().st_size - 8 - header


# -- the 16-bit size and the GGUF's format -------------------------------------------------------------------
def test_bytes_as_16bit_is_what_a_bfloat16_save_writes(tiny_llama, tmp_path):
    model = copy.deepcopy(tiny_llama)
    expected = bytes_as_16bit(model)
    assert model.dtype == torch.float32  # loaded as float32: the 16-bit size is half of the memory
    assert expected == sum(p.numel() * 2 for p in model.parameters())  # Llama: every saved tensor is a parameter
    cast_floating_weights(model, torch.bfloat16)
    model.save_pretrained(tmp_path)
    assert _safetensors_tensor_bytes(tmp_path / "model.safetensors") == expected


def test_bytes_as_16bit_keeps_packed_tensors_at_their_own_size():
    class Packed(torch.nn.Module):  # a quantized layer: int8 values and float32 scales, kept as they are
        def __init__(self):
            super().__init__()
            self.register_buffer("qweight", torch.zeros(8, 6, dtype=torch.int8))
            self.register_buffer("scales", torch.ones(8))
            self.register_buffer("cache", torch.ones(100), persistent=False)  # never saved

    model = torch.nn.Sequential(torch.nn.Linear(6, 8), Packed())
    assert bytes_as_16bit(model) == (8 * 6 + 8) * 2 + 8 * 6 * 1 + 8 * 4


def _write_gguf(path, file_type: int | None) -> None:
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("test")
    writer.add_array("general.languages", ["en", "fr", "de"])  # arrays of strings before the file type
    writer.add_array("test.numbers", [1, 2, 3])
    if file_type is not None:
        writer.add_file_type(file_type)
    writer.add_token_list([f"t{i}" for i in range(50)])
    writer.add_tensor("w", torch.zeros(4, 32).numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_gguf_file_type_is_read_from_the_header(tmp_path):
    from core.models.bundled import bundled_model_file

    bundled = bundled_model_file("smollm2-135m")
    full = gguf.GGUFReader(bundled).get_field(gguf.Keys.General.FILE_TYPE).contents()  # the library's full parse
    assert gguf_file_type(bundled) == full == gguf.LlamaFileType.MOSTLY_Q4_1
    assert gguf_storage(bundled).words == "4-bit GGUF Q4_1" and gguf_storage(bundled).quantized
    for file_type, words in ((gguf.LlamaFileType.MOSTLY_Q8_0, "8-bit GGUF Q8_0"),
                             (gguf.LlamaFileType.MOSTLY_F16, "16-bit GGUF F16"),
                             (gguf.LlamaFileType.MOSTLY_Q4_K_M, "4-bit GGUF Q4_K_M")):
        path = tmp_path / f"{int(file_type)}.gguf"
        _write_gguf(path, int(file_type))
        assert gguf_file_type(path) == int(file_type) and gguf_storage(path).words == words
    _write_gguf(tmp_path / "none.gguf", None)
    assert gguf_file_type(tmp_path / "none.gguf") is None  # not written: nothing is guessed
    (tmp_path / "short.gguf").write_bytes(b"GGUF\x03\x00\x00\x00")
    assert gguf_file_type(tmp_path / "short.gguf") is None and gguf_file_type(tmp_path / "missing.gguf") is None
    assert storage_of(1).bits == 16 and storage_of(0).bits == 32 and not storage_of(0).quantized


@pytest.mark.slow
def test_model_page_shows_the_gguf_file_and_its_size_as_a_16_bit_model(qtbot, tmp_path):
    from core.models.loading import load_model
    from gui.screens.model.summary import ModelSummaryBox

    loaded = load_model("bundled:smollm2-135m")
    summary = inspect_model(loaded.model, loaded.source_path, with_layers=False)
    box = ModelSummaryBox()
    qtbot.addWidget(box)
    box.show_summary(summary, loaded.kind)
    sixteen = sum(p.numel() * 2 for p in loaded.model.parameters())  # every weight × 2 bytes, the tied head once
    assert sixteen == AS_16BIT and loaded.source_path.stat().st_size == GGUF_BYTES
    # What a bfloat16 save of this model really writes: the same bytes of tensors.
    cast_floating_weights(loaded.model, torch.bfloat16)
    loaded.model.save_pretrained(tmp_path)
    assert _safetensors_tensor_bytes(tmp_path / "model.safetensors") == sixteen
    assert box.values["disk"].text() == "98.4 MB (bundled .gguf, stored as 4-bit GGUF Q4_1)"
    assert box.values["sixteen"].text() == (f"{human_bytes(sixteen)} (a result is saved as bfloat16 by default: "
                                            "compared with this size)")
    assert human_bytes(sixteen) == "269.0 MB"
    assert "× 2 bytes" in box.values["sixteen"].toolTip()


# -- Compare's sentence ----------------------------------------------------------------------------------------
BEFORE = {"bytes_on_disk": GGUF_BYTES, "bytes_as_16bit": AS_16BIT, "stored_format": "4-bit GGUF Q4_1",
          "stored_bits": 4, "on_disk_is": "the source weights as stored (SmolLM2-135M-Instruct.Q4_1.gguf, bundled)"}


def _report(after_bytes: int, steps: list[dict], dtype: str = "bfloat16") -> dict:
    return {"before": BEFORE, "after": {"bytes_on_disk": after_bytes}, "steps": steps,
            "output": {"dtype": dtype, "why": "auto"}}


def test_a_bfloat16_result_from_a_4_bit_gguf_is_compared_with_the_16_bit_size():
    wanda = _report(269_060_552, [{"technique": "wanda_prune", "family": "pruning"}])  # a real bfloat16 save's size
    assert size_note(wanda) == (
        "The original file is 4-bit GGUF Q4_1 (98.4 MB); as a 16-bit model it is 269.0 MB. Your result (bfloat16, "
        "269.1 MB) is compared with the 16-bit size: same size. To get a small file again, export it as GGUF Q4_0 "
        "on the Export page.")
    assert "larger" not in size_note(wanda) and "quantization step" not in size_note(wanda)
    eight_bit = _report(169_600_000, [{"technique": "rtn_quantize", "family": "quantization"}])
    note = size_note(eight_bit)
    assert "Your result (bfloat16 with quantized layers, 169.6 MB) is compared with the 16-bit size: 37% smaller." \
        in note and note.endswith("export it as GGUF Q4_0 on the Export page.")
    small = size_note(_report(60_000_000, [{"technique": "gptq_quantize", "family": "quantization"}]))
    assert "78% smaller" in small and small.endswith("It is smaller than the original file too.")
    float32 = size_note(_report(538_100_000, [], dtype="float32"))
    assert "Your result (float32, 538.1 MB) is compared with the 16-bit size: 2.0× as large." in float32


def test_other_sources_are_compared_with_their_files():
    folder = {"bytes_on_disk": 269_060_552, "bytes_as_16bit": AS_16BIT, "on_disk_is": "the weight files"}
    report = {"before": folder, "after": {"bytes_on_disk": 269_060_552}, "output": {"dtype": "bfloat16"}}
    assert size_note(report) is None  # same size as the file it came from: nothing to explain
    assert original_size(folder).compared() == 269_060_552
    f32_gguf = {**BEFORE, "bytes_on_disk": 538_500_000, "stored_format": "32-bit GGUF F32", "stored_bits": 32}
    assert original_size(f32_gguf).compared() == 538_500_000  # a float32 GGUF is no smaller than 16-bit
    assert original_size(BEFORE).compared() == AS_16BIT
    assert original_size(BEFORE).compared(result_is_gguf=True) == GGUF_BYTES  # a GGUF export against the file


# -- History: the original's point and what is best -----------------------------------------------------------
def test_best_trade_offs_are_measured_against_the_original():
    original = (269.0, 17.0)
    points = [(269.1, 18.0),  # 0: bfloat16 pruned: same size as the original, worse: never best
              (169.6, 17.4),  # 1: 8-bit: smaller, a little worse: best
              (120.0, 25.0),  # 2: smaller, worse: best (nothing smaller and better)
              (130.0, 30.0),  # 3: dominated by 2
              (300.0, 16.0),  # 4: better than the original but larger: never best
              (100.0, None),  # 5: no measured quality: never best
              (90.0, 40.0)]   # 6: on the front, but its original was not measured: never best
    originals = [original] * 6 + [(None, None)]
    assert best_trade_offs(points, originals) == [2, 1]
    # Accuracy (higher is better): a result as good as the original but not smaller is not best either.
    assert best_trade_offs([(50.0, 0.5), (40.0, 0.45)], [(50.0, 0.5)] * 2, higher_is_better=True) == [1]
    # A result smaller than its original by less than half a percent is the same size.
    assert best_trade_offs([(268.0, 17.5)], [original], same_size=0.005) == []
    assert best_trade_offs([(268.0, 17.5)], [original]) == [0]


def _record(history: History, tmp_path, name: str, after: dict, before: dict | None = None,
            source: str = "bundled:smollm2-135m") -> int:
    from core.engine.recipe import Recipe

    recipe = Recipe(name=name)
    recipe.model.source = source
    run_id = history.start_run(recipe, tmp_path / name, device="cpu", origin="test")
    report = {"before": before or {**BEFORE, "perplexity": {"perplexity": 17.0}}, "after": after,
              "comparison": {}, "steps": [{"technique": "wanda_prune"}], "seconds": 1.0}
    history.finish_run(run_id, "done", metrics=summarize_report(report))
    return run_id


def _history_panel(qtbot) -> HistoryPanel:
    widget = HistoryPanel()
    qtbot.addWidget(widget)
    widget.resize(1100, 750)
    widget.show()
    qtbot.waitExposed(widget)
    return widget


def test_history_draws_the_original_and_marks_best_only_against_it(qtbot, tmp_path):
    history = History(recover=False)
    same = _record(history, tmp_path, "wanda bf16", {"bytes_on_disk": 269_060_552, "perplexity": {"perplexity": 18.0}})
    eight = _record(history, tmp_path, "8-bit", {"bytes_on_disk": 169_600_000, "perplexity": {"perplexity": 17.4}})
    worse = _record(history, tmp_path, "worse", {"bytes_on_disk": 180_000_000, "perplexity": {"perplexity": 19.0}})
    unmeasured = _record(history, tmp_path, "no ppl", {"bytes_on_disk": 100_000_000})
    larger = _record(history, tmp_path, "f32", {"bytes_on_disk": 538_100_000, "perplexity": {"perplexity": 16.9}})
    widget = _history_panel(qtbot)
    plot = widget.plot
    assert widget.quality_box.currentData().key == "perplexity_after"
    # The original: one diamond at its size as a 16-bit model (MB) and its perplexity measured before the runs.
    assert plot.original.data["x"].tolist() == [pytest.approx(AS_16BIT / 1e6)]
    assert plot.original.data["y"].tolist() == [pytest.approx(17.0)]
    assert "original" in [label.toPlainText() for label in plot.labels]
    assert "4-bit GGUF Q4_1, 98.4 MB" in plot.note.text() and "269.0 MB as a 16-bit model" in plot.note.text()
    assert "269.0 MB as a 16-bit model" in plot._original_tip(0, 0, 0)
    # Best: only the 8-bit result (smaller than the original, nothing smaller and better).
    assert plot.front_ids == [eight]
    best = {int(widget.table.item(row, 0).text()): widget.table.item(row, COLUMNS.index("Best")).text()
            for row in range(widget.table.rowCount())}
    assert best == {same: "", eight: "★", worse: "", unmeasured: "", larger: ""}
    assert "Not smaller than its original" in plot._tip(0, 0, same)
    assert "Not smaller than its original" in plot._tip(0, 0, larger)
    assert "Not smaller" not in plot._tip(0, 0, eight)


def test_summary_keeps_the_original_sizes_and_old_records_compare_with_the_file():
    metrics = summarize_report({"before": BEFORE, "after": {"bytes_on_disk": 1}, "steps": []})
    assert {k: metrics[k] for k in ("bytes_on_disk_before", "bytes_as_16bit_before", "stored_format_before",
                                    "stored_bits_before")} == {"bytes_on_disk_before": GGUF_BYTES,
                                                               "bytes_as_16bit_before": AS_16BIT,
                                                               "stored_format_before": "4-bit GGUF Q4_1",
                                                               "stored_bits_before": 4}
    assert original_size_of_metrics(metrics).compared() == AS_16BIT
    # A record written before the 16-bit size was measured has only the file: it is compared with that.
    assert original_size_of_metrics({"bytes_on_disk_before": GGUF_BYTES}).compared() == GGUF_BYTES


# -- end to end: a real run from the bundled GGUF -------------------------------------------------------------
@pytest.mark.slow
def test_a_run_from_the_bundled_gguf_records_and_compares_the_16_bit_size(qtbot, tmp_path):
    from core.engine.recipe import Recipe, Step
    from core.engine.registry import get_technique
    from core.eval.compare import read_output_folder
    from core.events import drain
    from core.history.store import recorded_run
    from gui.screens.compare.panel import ComparePanel

    recipe = Recipe(name="prune bundled", steps=[Step("magnitude_prune",
                                                      get_technique("magnitude_prune").config_cls(sparsity=0.3))])
    recipe.model.source = "bundled:smollm2-135m"
    recipe.data.sequence_length = 64
    recipe.evaluation.max_windows = 2
    recipe.evaluation.kl_to_teacher = False
    out = tmp_path / "out"
    report = drain(recorded_run(recipe, out, origin="test"))
    before = json.loads((out / "report.json").read_text())["before"]
    assert before["bytes_as_16bit"] == AS_16BIT and before["stored_format"] == "4-bit GGUF Q4_1"
    assert report["output"]["dtype"] == "bfloat16"
    assert abs(report["after"]["bytes_on_disk"] - AS_16BIT) < 100_000  # the bfloat16 file: tensors + header
    note = size_note(read_output_folder(out).report)
    assert "Your result (bfloat16, 269.1 MB) is compared with the 16-bit size: same size." in note, note
    panel = ComparePanel()
    qtbot.addWidget(panel)
    panel.show_folder(out)
    assert "same size" in panel.title.text() and "larger on disk" not in panel.title.text()
    widget = _history_panel(qtbot)
    plot = widget.plot
    assert plot.original.data["x"].tolist() == [pytest.approx(AS_16BIT / 1e6)]
    assert plot.original.data["y"].tolist() == [pytest.approx(before["perplexity"]["perplexity"])]
    assert plot.front_ids == []  # the same size as the original, and worse: not a best trade-off


def test_compare_table_has_a_like_for_like_row_for_a_4bit_gguf_source():
    from core.eval.compare import compare_rows

    before = {"bytes_on_disk": 98_362_432, "bytes_as_16bit": 269_030_016, "stored_format": "4-bit GGUF Q4_1",
              "stored_bits": 4, "parameters": 134_515_008}
    after = {"bytes_on_disk": 269_060_552, "parameters": 134_515_008}
    rows = {row.label: row for row in compare_rows({"before": before, "after": after})}
    assert rows["Size on disk"].ratio == pytest.approx(2.735, abs=1e-3)  # the file, as it is
    assert rows["Size as a 16-bit model"].ratio == pytest.approx(1.0, abs=1e-3)  # same format: same size
    assert "4-bit GGUF Q4_1" in rows["Size as a 16-bit model"].explanation
    plain = {row.label for row in compare_rows({"before": {"bytes_on_disk": 4e6}, "after": {"bytes_on_disk": 2e6}})}
    assert "Size as a 16-bit model" not in plain  # a safetensors source: its file is the like-for-like size

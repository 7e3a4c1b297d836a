"""A self-contained HTML report of a run, to send to a colleague (no Qt: the CLI writes it too).

One file, no external resources: the plain quality verdict (:func:`core.eval.verdict.report_verdict`), the
comparison table (:func:`core.eval.compare.compare_rows`), the
zero-shot task accuracy when the run scored tasks (:func:`core.eval.compare.task_rows`), bar
charts drawn here as inline SVG, the steps with their own summaries, sample answers when the run
generated some, the environment and the recipe.  The app may add its own plot images (PNG bytes),
which are embedded as data URIs.
"""

from __future__ import annotations

import base64
from html import escape
from pathlib import Path
from typing import Any

from core.eval.compare import (
    CompareRow,
    SavedRun,
    compare_rows,
    format_accuracy,
    format_points,
    format_ratio,
    format_value,
    read_output_folder,
    task_rows,
    task_summary,
)
from core.eval.verdict import Verdict, report_verdict
from core.io.export import write_text_atomic

TEACHER_COLOUR, STUDENT_COLOUR = "#7f7f7f", "#1f77b4"
_STYLE = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:980px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em} h2{margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;width:100%;margin:.6em 0} th,td{border:1px solid #ddd;padding:.35em .6em;
text-align:left;vertical-align:top} td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
th{background:#f4f4f4} .muted{color:#777} pre{background:#f6f6f6;padding:.8em;overflow:auto;font-size:.9em}
.charts{display:flex;flex-wrap:wrap;gap:1.5em} figure{margin:0} figcaption{font-size:.9em;color:#555}
img.plot{max-width:100%;border:1px solid #ddd}
p.verdict{font-size:1.15em} .level-better,.level-nearly-unchanged{color:#2ca02c} .level-noticeably-worse{color:#e67e22}
.level-broken{color:#d62728} .level-not-measured{color:#8c8c8c} details{margin:.4em 0} pre.rules{white-space:pre-wrap}
"""

GENERATOR_META = "<meta name='generator' content='LLM Compression Studio'>"


def _svg_text(x: float, y: float, text: str, anchor: str = "start", size: int = 12, fill: str = "#333") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" fill="{fill}" '
            f'font-family="sans-serif">{escape(text)}</text>')


def svg_pair_bars(rows: list[CompareRow], title: str, width: int = 440) -> str:
    """Horizontal bars, teacher and student per measure, each measure scaled to its own maximum."""
    measured = [r for r in rows if r.measured]
    if not measured:
        return ""
    label_w, bar_h, gap, top = 150, 14, 14, 34
    height = top + len(measured) * (2 * bar_h + gap) + 24
    span = width - label_w - 90
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="{escape(title)}">', _svg_text(0, 16, title, size=14, fill="#111")]
    y = top
    for row in measured:
        top_value = max(abs(row.teacher), abs(row.student)) or 1.0
        parts.append(_svg_text(label_w - 8, y + bar_h + 4, row.label, anchor="end"))
        for value, colour in ((row.teacher, TEACHER_COLOUR), (row.student, STUDENT_COLOUR)):
            length = span * abs(value) / top_value
            parts.append(f'<rect x="{label_w}" y="{y}" width="{length:.1f}" height="{bar_h}" fill="{colour}"/>')
            parts.append(_svg_text(label_w + length + 4, y + bar_h - 3, format_value(value, row.unit), size=11))
            y += bar_h
        y += gap
    legend_y = height - 8
    parts += [f'<rect x="{label_w}" y="{legend_y - 10}" width="10" height="10" fill="{TEACHER_COLOUR}"/>',
              _svg_text(label_w + 14, legend_y, "teacher (original)", size=11),
              f'<rect x="{label_w + 130}" y="{legend_y - 10}" width="10" height="10" fill="{STUDENT_COLOUR}"/>',
              _svg_text(label_w + 144, legend_y, "student (result)", size=11), "</svg>"]
    return "".join(parts)


def svg_ratio_bars(rows: list[CompareRow], title: str, width: int = 440) -> str:
    """One bar per measure: student / teacher, with a line at 1 (the same as the teacher)."""
    rated = [r for r in rows if r.ratio is not None]
    if not rated:
        return ""
    label_w, bar_h, gap, top = 150, 16, 8, 34
    height = top + len(rated) * (bar_h + gap) + 16
    top_ratio = max(1.0, *(r.ratio for r in rated)) * 1.1
    span = width - label_w - 60
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="{escape(title)}">', _svg_text(0, 16, title, size=14, fill="#111")]
    y = top
    for row in rated:
        length = span * max(row.ratio, 0.0) / top_ratio
        parts.append(_svg_text(label_w - 8, y + bar_h - 3, row.label, anchor="end"))
        parts.append(f'<rect x="{label_w}" y="{y}" width="{length:.1f}" height="{bar_h}" fill="{STUDENT_COLOUR}"/>')
        parts.append(_svg_text(label_w + length + 4, y + bar_h - 3, format_ratio(row.ratio), size=11))
        y += bar_h + gap
    one = label_w + span / top_ratio
    parts += [f'<line x1="{one:.1f}" y1="{top - 6}" x2="{one:.1f}" y2="{y}" stroke="#d62728" '
              'stroke-dasharray="4 3"/>', _svg_text(one, top - 8, "1× = same as teacher", "middle", 10, "#d62728"),
              "</svg>"]
    return "".join(parts)


def _table(rows: list[CompareRow]) -> str:
    body = ["<table><tr><th>Measure</th><th>Teacher (original)</th><th>Student (result)</th>"
            "<th>Student / teacher</th><th>What it measures</th></tr>"]
    for row in rows:
        if row.measured:
            cells = (f'<td class="num">{escape(format_value(row.teacher, row.unit))}</td>'
                     f'<td class="num">{escape(format_value(row.student, row.unit))}</td>'
                     f'<td class="num">{escape(format_ratio(row.ratio))}</td>')
        else:
            cells = f'<td colspan="3" class="muted">{escape(row.missing)}</td>'
        better = f" ({row.better} is better)" if row.better else ""
        body.append(f"<tr><td>{escape(row.label)}</td>{cells}<td>{escape(row.explanation + better)}</td></tr>")
    return "".join(body) + "</table>"


def _tasks(report: dict[str, Any]) -> str:
    """The task accuracy section: the sentence, then one row per task ('' when the run scored none)."""
    rows = task_rows(report)
    if not rows:
        return ""
    summary = task_summary(rows)
    body = ["<h2>Task accuracy</h2>",
            f"<p>{escape(summary.sentence)}</p>" if summary else "",
            "<p class='muted'>Zero-shot multiple-choice questions, scored as lm-evaluation-harness scores them; "
            "each figure is the task's headline accuracy ± one standard error (in percentage points).</p>",
            "<table><tr><th>Task</th><th>Questions</th><th>Original</th><th>Result</th><th>Change</th>"
            "<th>Guessing scores</th></tr>"]
    for row in rows:
        what = f"<br><span class='muted'>{escape(row.what)}</span>" if row.what else ""
        chance = f"{row.chance:.0%}" if row.chance is not None else "—"
        body.append(f"<tr><td>{escape(row.title)}{what}</td><td>{escape(row.questions)}</td>"
                    f"<td class='num'>{escape(format_accuracy(row.teacher, row.teacher_stderr))}</td>"
                    f"<td class='num'>{escape(format_accuracy(row.student, row.student_stderr))}</td>"
                    f"<td class='num'>{escape(format_points(row.change))}</td><td class='num'>{chance}</td></tr>")
    return "".join(body) + "</table>"


def _verdict(verdict: Verdict) -> str:
    """The plain verdict, what it was based on, and the thresholds (as its tooltip and, folded, as text)."""
    level = verdict.level
    return (f"<p class='verdict' title='{escape(verdict.thresholds)}'><b>Quality: "
            f"<span class='level-{level.replace(' ', '-')}'>{escape(level)}</span></b> — {escape(verdict.reason)}</p>"
            f"<p class='muted'>{escape(verdict.basis)}</p>"
            f"<details><summary>How the verdict is decided</summary><pre class='rules'>{escape(verdict.thresholds)}"
            "</pre></details>")


def _steps(report: dict[str, Any]) -> str:
    steps = report.get("steps") or []
    if not steps:
        return "<p class='muted'>No steps recorded.</p>"
    body = ["<table><tr><th>#</th><th>Technique</th><th>What it did</th><th>Time</th></tr>"]
    for step in steps:
        seconds = step.get("seconds")
        took = f"{seconds:.1f} s" if isinstance(seconds, int | float) else "—"
        body.append(f"<tr><td>{int(step.get('index', 0)) + 1}</td><td>{escape(str(step.get('technique', '')))}</td>"
                    f"<td>{escape(str(step.get('summary', '')))}</td><td class='num'>{took}</td></tr>")
    return "".join(body) + "</table>"


def _samples(report: dict[str, Any]) -> str:
    before = (report.get("before") or {}).get("samples") or []
    after = (report.get("after") or {}).get("samples") or []
    if not before and not after:
        return ""
    body = ["<h2>Sample answers (greedy)</h2><table><tr><th>Prompt</th><th>Teacher</th><th>Student</th></tr>"]
    for index in range(max(len(before), len(after))):
        teacher = before[index] if index < len(before) else {}
        student = after[index] if index < len(after) else {}
        prompt = teacher.get("prompt") or student.get("prompt") or ""
        body.append(f"<tr><td>{escape(prompt)}</td><td>{escape(teacher.get('completion', '—'))}</td>"
                    f"<td>{escape(student.get('completion', '—'))}</td></tr>")
    return "".join(body) + "</table>"


def build_report_html(run: SavedRun, images: dict[str, bytes] | None = None) -> str:
    """The report of ``run`` as one HTML document; ``images`` maps captions to PNG bytes to embed."""
    report = run.report
    rows = compare_rows(report)
    size_rows = [r for r in rows if r.key in ("parameters", "nonzero_parameters", "disk_mb", "memory_mb")]
    quality_rows = [r for r in rows if r.key not in {x.key for x in size_rows} and r.key != "kl_to_teacher"]
    charts = [svg_pair_bars(size_rows, "Size: teacher and student"),
              svg_pair_bars(quality_rows, "Quality and speed: teacher and student"),
              svg_ratio_bars(rows, "Student as a share of the teacher")]
    figures = "".join(f"<figure>{c}</figure>" for c in charts if c)
    for caption, png in (images or {}).items():
        data = base64.b64encode(png).decode("ascii")
        figures += (f'<figure><img class="plot" alt="{escape(caption)}" src="data:image/png;base64,{data}"/>'
                    f"<figcaption>{escape(caption)}</figcaption></figure>")
    environment = report.get("environment") or {}
    env_text = ", ".join(f"{k} {v}" for k, v in environment.items())
    seconds = report.get("seconds")
    took = f" in {seconds:.0f} s" if isinstance(seconds, int | float) else ""
    title = f"Compression report: {report.get('recipe', run.folder.name)}"
    return "".join([
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>{GENERATOR_META}<title>{escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        f"<p>Teacher (the original): <b>{escape(run.teacher_source)}</b> ({escape(run.task)}).<br>"
        f"Student (the result): <b>{escape(str(run.folder))}</b>, made {escape(str(report.get('created', '')))}"
        f"{took}.</p>",
        "<p class='muted'>Every number below was measured by the run (none is estimated); a measure the run "
        "did not take says so. Timings depend on the machine and what else it was doing.</p>",
        "<h2>Teacher and student</h2>", _verdict(report_verdict(report)), _table(rows),
        f"<div class='charts'>{figures}</div>" if figures else "",
        _tasks(report),
        "<h2>Steps</h2>", _steps(report), _samples(report),
        "<h2>Environment</h2>", f"<p>{escape(env_text) or 'not recorded'}</p>",
        "<h2>Recipe</h2><p>Run it again with <code>compression-studio-cli run recipe.yaml -o OUTPUT</code>.</p>",
        f"<pre>{escape(run.recipe_yaml)}</pre>",
        "</body></html>",
    ])


def is_app_report(path: Path) -> bool:
    """Whether ``path`` is an HTML report this app wrote (its head names this app as the generator)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return GENERATOR_META in handle.read(4096)
    except OSError:
        return False


def write_report(folder: str | Path, destination: str | Path, images: dict[str, bytes] | None = None) -> Path:
    """Write the HTML report of the run saved in ``folder`` to ``destination`` (atomically).

    An existing file is replaced only if it is a report this app wrote."""
    return write_text_atomic(destination, build_report_html(read_output_folder(folder), images),
                             replaceable=is_app_report)

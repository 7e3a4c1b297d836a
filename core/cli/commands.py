"""Command line: ``compression-studio-cli inspect|eval|run|report|export-gguf|techniques|setup-data``.

Uses exactly the same core jobs as the app; their events become progress bars and log lines.
A problem with the input prints one line starting with ``error:`` and exits with status 2;
Ctrl-C cancels cleanly (nothing half-written) and exits with 130.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from core.data.conventions import CONVENTIONS
from core.errors import StudioError

# Each command imports the engine inside its function: importing the runner loads torch and transformers
# (1.5 s measured here, against 0.06 s for this module), which `history`, `report`, `--help` and a mistyped
# flag never need.
EXIT_USAGE, EXIT_CANCELLED = 2, 130
GGUF_TYPE_CHOICES = ["F16", "Q8_0", "Q4_0", "Q2_K", "Q3_K_M", "Q4_K_S", "Q4_K_M", "Q5_K_M", "Q6_K", "IQ4_XS"]


class EventPrinter:
    """Renders a job's events on the terminal: one progress bar per stage, logs above it."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self._bar = None
        self._stage = None

    def consume(self, job) -> Any:
        from core.events import Log, Progress

        try:
            while True:
                try:
                    event = next(job)
                except StopIteration as stop:
                    return stop.value
                if isinstance(event, Progress):
                    self._progress(event)
                elif isinstance(event, Log) and (not self.quiet or event.level == "warning"):
                    # -q hides progress and notes, never a warning (e.g. that a run is not being recorded)
                    self._write(("warning: " if event.level == "warning" else "") + event.message)
        finally:
            job.close()  # on Ctrl-C or an error: runs the job's clean-up (no half-written output)
            self._close()

    def _progress(self, event) -> None:
        if self.quiet:
            return
        from tqdm import tqdm

        if event.stage != self._stage:
            self._close()
            self._stage = event.stage
            byte_units = event.stage.startswith("Downloading")
            self._bar = tqdm(total=event.total or None, desc=event.stage, leave=False, file=sys.stderr,
                             unit="B" if byte_units else "it", unit_scale=byte_units, dynamic_ncols=True)
        self._bar.total = event.total or None
        self._bar.n = event.done
        self._bar.refresh()

    def _write(self, text: str) -> None:
        from tqdm import tqdm

        tqdm.write(text, file=sys.stderr)

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        self._bar, self._stage = None, None


def _cmd_inspect(args) -> int:
    from core.models.loading import iter_load_model
    from core.models.model_info import human_bytes, inspect_model

    loaded = EventPrinter(args.quiet).consume(iter_load_model(args.source, args.task, args.trust_remote_code))
    summary = inspect_model(loaded.model, loaded.source_path)
    if args.json:
        print(json.dumps(summary.to_dict(with_layers=not args.no_layers), indent=2))
        return 0
    print(f"Model        {args.source}  ({summary.architecture}, {summary.model_type})")
    print(f"Layers       {summary.num_layers} decoder/encoder layers, hidden size {summary.hidden_size}, "
          f"vocabulary {summary.vocab_size}")
    print(f"Parameters   {summary.parameters:,} ({summary.nonzero_parameters:,} non-zero, "
          f"{summary.sparsity:.2%} zeros)")
    print(f"On disk      {human_bytes(summary.bytes_on_disk)} (source weights: {loaded.source_path})")
    print(f"In memory    {human_bytes(summary.bytes_in_memory)} as {summary.dtype} "
          f"({summary.bits_per_weight:.2f} bits per weight)")
    if not args.no_layers:
        print()
        print(f"{'layer':<48} {'kind':<14} {'shape':<14} {'dtype':<9} {'params':>11} {'sparsity':>9} {'bits':>6}")
        for row in summary.layers:
            shape = "×".join(str(d) for d in row.shape)
            print(f"{row.name:<48} {row.kind:<14} {shape:<14} {row.dtype:<9} {row.params:>11,} "
                  f"{row.sparsity:>8.2%} {row.bits:>6.2f}")
    return 0


def _check_eval_bounds(args) -> None:
    """``eval`` takes the same ranges as a recipe's sequence_length and max_windows."""
    from core.engine.params import check_value, param_specs
    from core.engine.recipe import DataSpec, EvalSpec

    specs = {s.name: s for cls in (DataSpec, EvalSpec) for s in param_specs(cls)}
    for name in ("sequence_length", "max_windows"):  # named as the flag is typed: --max-windows
        check_value(replace(specs[name], name=name.replace("_", "-")), getattr(args, name), "--")


def _cmd_eval(args) -> int:
    from core.data.perplexity_windows import perplexity_windows
    from core.data.task_rows import check_task_names, load_task
    from core.data.texts import load_texts
    from core.eval.perplexity import iter_perplexity
    from core.eval.task_accuracy import iter_tasks
    from core.models.loading import iter_load_model

    _check_eval_bounds(args)
    tasks = [t.strip() for t in (args.tasks or "").split(",") if t.strip()]
    check_task_names(tasks)
    json_path = _eval_json_path(args.json)
    # bad data is reported before the model loads
    texts = load_texts(args.data, args.text_column) if not args.no_perplexity else None
    for task in tasks:
        load_task(task)
    printer = EventPrinter(args.quiet)
    loaded = printer.consume(iter_load_model(args.source, "causal-lm", args.trust_remote_code))
    result: dict[str, Any] = {"written_by": EVAL_JSON_MARK, "model": args.source}
    if texts is not None:
        windows = perplexity_windows(texts, loaded.tokenizer, args.sequence_length, args.max_windows or None,
                                     args.convention)
        result["perplexity"] = printer.consume(iter_perplexity(loaded.model, windows)).to_dict()
    if args.speed:
        from core.eval.speed import iter_measure_speed

        result["speed"] = printer.consume(iter_measure_speed(loaded.model, loaded.tokenizer)).to_dict()
    if tasks:
        scores = printer.consume(iter_tasks(loaded.model, loaded.tokenizer, tasks, args.limit or None, args.seed))
        result["tasks"] = {name: score.to_dict() for name, score in scores.items()}
    if json_path == "-":
        print(json.dumps(result, indent=2))
        return 0
    if json_path is not None:
        from core.io.export import write_text_atomic

        write_text_atomic(json_path, json.dumps(result, indent=2) + "\n", replaceable=_written_by_eval)
    _print_eval(args, result)
    if json_path is not None:
        print(f"Wrote        {json_path}")
    return 0


EVAL_JSON_MARK = "compression-studio-cli eval"


def _eval_json_path(value: str | None) -> str | Path | None:
    """Where ``--json`` writes: None, "-" (standard output) or a file this command may replace."""
    if value in (None, "-"):
        return value
    path = Path(value).expanduser()
    if path.is_dir() or not path.parent.is_dir():
        raise StudioError(f"--json {value}: give a file name in an existing folder, such as scores.json.")
    if path.exists() and not _written_by_eval(path):
        raise StudioError(f"--json {value} exists and was not written by `eval`, so it is never replaced; "
                          "choose another file name.")
    return path


def _written_by_eval(path: Path) -> bool:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("written_by") == EVAL_JSON_MARK
    except (OSError, ValueError, AttributeError):
        return False


def _print_eval(args, result: dict[str, Any]) -> None:
    if "perplexity" in result:
        ppl = result["perplexity"]
        print(f"Perplexity   {ppl['perplexity']:.3f}  ({ppl['windows']} windows of {args.sequence_length} tokens, "
              f"{ppl['tokens']:,} predicted tokens, {ppl['seconds']:.1f} s) on {args.data}")
        print(f"Method       {ppl['method']}")
    if "speed" in result:
        speed = result["speed"]
        print(f"Speed        prefill {speed['prefill_ms']:.1f} ms for {speed['prompt_tokens']} tokens, "
              f"decode {speed['decode_tokens_per_s']:.1f} tokens/s (median of {speed['repeats']})")
    if "tasks" in result:
        print(f"{'Task':<16} {'questions':>14} {'acc':>15} {'acc_norm':>15}  headline  seconds")
        for score in result["tasks"].values():
            asked = f"{score['n']} of {score['rows_total']}"
            print(f"{score['title']:<16} {asked:>14} {_pct(score['acc'], score['acc_stderr']):>15} "
                  f"{_pct(score['acc_norm'], score['acc_norm_stderr']):>15}  {score['headline']:<8}  "
                  f"{score['seconds']:7.1f}")
        print("Method       zero-shot, scored as lm-evaluation-harness 0.4 scores multiple choice; ± is the standard "
              "error" + (f" ({args.limit} questions per task, drawn with seed {args.seed})" if args.limit else ""))


def _pct(value: float, stderr: float | None) -> str:
    return f"{value:.1%} ± {stderr:.1%}" if stderr is not None else f"{value:.1%}"


def _cmd_run(args) -> int:
    from core.engine import distributed
    from core.engine.recipe import load_recipe
    from core.engine.runner import run_recipe
    from core.history.store import recorded_run
    from core.models.devices import resolve_device

    recipe = load_recipe(args.recipe)
    if args.model:
        recipe.model.source = args.model
    # Under torchrun / accelerate launch (WORLD_SIZE > 1): join the other processes; rank 0 alone prints,
    # records the run in the history and writes the result.
    device = distributed.init_from_environment(resolve_device(args.device))
    try:
        options = {"overwrite": args.overwrite, "device": device, "resume": args.resume, "recipe_file": args.recipe}
        if not distributed.is_main():
            EventPrinter(quiet=True).consume(run_recipe(recipe, args.output, **options))
            return 0
        report = EventPrinter(args.quiet).consume(  # recorded in the run history (the app's History page)
            recorded_run(recipe, args.output, origin="cli", **options))
    finally:
        distributed.shutdown()
    before, after = report["before"], report["after"]
    print(f"Saved        {args.output}")
    for label, data in (("Before", before), ("After", after)):
        ppl = data.get("perplexity", {}).get("perplexity")
        ppl_text = f", perplexity {ppl:.3f}" if ppl is not None else ""
        print(f"{label:<12} {data['nonzero_parameters']:,} non-zero of {data['parameters']:,} parameters, "
              f"{data['bytes_on_disk'] / 1e6:.1f} MB on disk{ppl_text}")
        print(f"{'':<12} (on disk: {data['on_disk_is']})")
    if report.get("comparison"):
        print(f"KL to original {report['comparison']['kl_per_token']:.4f} nats/token, "
              f"top-1 agreement {report['comparison']['top1_agreement']:.1%}")
    return 0


def _cmd_history(args) -> int:
    from core.cli.history import cmd_history

    return cmd_history(args)


def _cmd_report(args) -> int:
    from pathlib import Path

    from core.io.report_html import write_report

    destination = Path(args.output) if args.output else Path(args.folder) / "report.html"
    print(f"Wrote        {write_report(args.folder, destination)}")
    return 0


def _cmd_export_gguf(args) -> int:
    """One GGUF per type of --type (comma-separated), one importance matrix for all, Modelfiles and a README card."""
    from core.engine.gguf_job import ImatrixSettings
    from core.engine.gguf_queue import PerplexitySettings, iter_gguf_queue

    settings = ImatrixSettings(args.calibration, args.imatrix_windows, args.imatrix_length)
    measure = PerplexitySettings(args.perplexity, args.perplexity_context) if args.perplexity else None
    done = EventPrinter(args.quiet).consume(iter_gguf_queue(
        args.folder, args.output, args.type, imatrix=args.imatrix, settings=settings, save_imatrix=args.save_imatrix,
        overwrite=args.overwrite, keep_embedding=args.keep_embedding, cards=not args.no_cards, measure=measure))
    for written in done["files"]:
        ppl = f", llama.cpp perplexity {written['perplexity']:.2f}" if "perplexity" in written else ""
        print(f"Wrote        {written['path']} ({written['bytes'] / 1e6:.1f} MB, {written['quant']}"
              f"{', with our importance matrix' if written.get('imatrix') else ''}{ppl})")
    for card in done["cards"]:
        print(f"Wrote        {card}")
    return 0


def _gguf_types(text: str) -> list[str]:
    from core.engine.gguf_queue import parse_types

    try:
        return parse_types(text)
    except StudioError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _cmd_techniques(args) -> int:
    from core.engine.params import param_specs
    from core.engine.registry import techniques

    for name, info in sorted(techniques().items(), key=lambda kv: (kv[1].family, kv[0])):
        print(f"{name}  [{info.family}]  {info.title}: {info.summary}")
        for spec in param_specs(info.config_cls):
            print(f"    {spec.name} = {spec.default!r}  ({spec.range_text()}) {spec.help}")
    return 0


def _cmd_setup_data(args) -> int:
    from core.data.samples import setup_bundled_data
    from core.data.task_setup import setup_task_data

    EventPrinter(args.quiet).consume(setup_bundled_data(force=args.force))
    EventPrinter(args.quiet).consume(setup_task_data(force=args.force))
    return 0


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad command line like every other failure: one ``error:`` line, exit 2."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="compression-studio-cli", description=__doc__.splitlines()[0])
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars or log lines")
    sub = parser.add_subparsers(dest="command", required=True)

    def model_args(p):
        p.add_argument("source", help="hub id (owner/name), local folder, .gguf file, or bundled:smollm2-135m")
        p.add_argument("--trust-remote-code", action="store_true",
                       help="run Python code shipped with this model (only for authors you trust)")

    p = sub.add_parser("inspect", help="summary and per-layer table of a model")
    model_args(p)
    p.add_argument("--task", default="causal-lm", choices=["causal-lm", "sequence-classification"])
    p.add_argument("--no-layers", action="store_true", help="summary only")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_inspect)

    p = sub.add_parser("eval", help="perplexity, task accuracy (and optionally speed) of a causal LM")
    model_args(p)
    p.add_argument("--data", default="bundled:wiki-evaluation", help="text file/folder or bundled dataset")
    p.add_argument("--text-column", default="text")
    p.add_argument("--sequence-length", type=int, default=512)
    p.add_argument("--max-windows", type=int, default=40, help="0 = all windows")
    p.add_argument("--convention", default="transformers", choices=CONVENTIONS,
                   help="how the text is cut into scored windows, to compare with numbers published with "
                        "transformers' perplexity guide (and GPTQ/SparseGPT/Wanda papers), lm-eval's rolling "
                        "log-likelihood, or llama.cpp's llama-perplexity (default: %(default)s)")
    p.add_argument("--speed", action="store_true", help="also measure prefill latency and decode tokens/s")
    p.add_argument("--no-perplexity", action="store_true", help="skip perplexity (e.g. with --tasks)")
    p.add_argument("--tasks", default="", help="comma-separated zero-shot tasks scored as lm-eval scores them: "
                   "arc_easy, arc_challenge, piqa, hellaswag, boolq, or your own .jsonl (question, choices, answer)")
    p.add_argument("--limit", type=int, default=0, help="questions per task, a seeded random subset (0 = all)")
    p.add_argument("--seed", type=int, default=0, help="which random subset --limit draws (default: %(default)s)")
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="OUT.json",
                   help="write the results as JSON to OUT.json (or print them, without a file name)")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("run", help="run a recipe and write the compressed model")
    p.add_argument("recipe", help="recipe file (.yaml or .json)")
    p.add_argument("-o", "--output", required=True, help="output folder (must not exist, or use --overwrite)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing output folder, if it is an earlier result of this app")
    p.add_argument("--model", help="use this model instead of the recipe's")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--resume", action="store_true",
                   help="continue training steps (distillation) from the checkpoint a cancelled run left")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("report", help="write an HTML report (tables and charts) of a run's output folder")
    p.add_argument("folder", help="the output folder of a run (holds report.json and recipe.yaml)")
    p.add_argument("-o", "--output", help="HTML file to write (default: FOLDER/report.html)")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("export-gguf", help="write a run's output folder as one GGUF file (llama.cpp, Ollama)")
    p.add_argument("folder", help="the output folder of a run, or any model source the app loads (Llama architecture)")
    p.add_argument("-o", "--output", required=True, help="the .gguf file to write (its name ends in .gguf); with "
                   "several types, each is written as NAME-TYPE.gguf next to it")
    p.add_argument("--overwrite", action="store_true",
                   help="replace GGUF files, Modelfiles and a README this app exported before")
    p.add_argument("--type", default=["Q8_0"], type=_gguf_types, metavar="TYPE[,TYPE…]",
                   help="number format of the weights, one or several separated by commas: "
                        f"{', '.join(GGUF_TYPE_CHOICES)} (K- and i-quants are made by llama.cpp's llama-quantize)")
    p.add_argument("--perplexity", type=int, default=0, metavar="CHUNKS",
                   help="also measure each file's perplexity with llama.cpp's llama-perplexity on CHUNKS chunks of the "
                        "result's evaluation text (shown in the README card)")
    p.add_argument("--perplexity-context", type=int, default=512, help="tokens per chunk (default: %(default)s)")
    p.add_argument("--no-cards", action="store_true",
                   help="write only the .gguf files, not an Ollama Modelfile per file and a README card next to them")
    p.add_argument("--imatrix", action="store_true",
                   help="weigh rounding by an importance matrix computed on the calibration text (llama.cpp's imatrix), "
                        "once for all the types")
    p.add_argument("--calibration", help="text for the importance matrix (default: the result's recipe's calibration)")
    p.add_argument("--imatrix-windows", type=int, help="chunks of calibration text (default: the recipe's)")
    p.add_argument("--imatrix-length", type=int, help="tokens per chunk (default: the recipe's sequence length)")
    p.add_argument("--save-imatrix", help="also keep the importance matrix in this .gguf (for llama.cpp's tools)")
    p.add_argument("--keep-embedding", action="store_true",
                   help="write the token embedding in F16 instead of --type (by default it is quantized too, "
                        "as llama.cpp does)")
    p.set_defaults(func=_cmd_export_gguf)

    p = sub.add_parser("history", help="list every recorded run (status, size, quality, output folder)")
    p.add_argument("--json", action="store_true", help="every stored field, as JSON")
    p.set_defaults(func=_cmd_history)

    p = sub.add_parser("techniques", help="list the techniques and their parameters")
    p.set_defaults(func=_cmd_techniques)

    p = sub.add_parser("setup-data", help="fetch the bundled sample texts and task questions into the app's data folder")
    p.add_argument("--force", action="store_true", help="fetch again even if present")
    p.set_defaults(func=_cmd_setup_data)
    return parser


def _one_line(text: str) -> str:
    return " ".join(text.split())


def main(argv: list[str] | None = None) -> int:
    """Run one command; every failure ends as one ``error:`` line on stderr and exit status 2."""
    args = build_parser().parse_args(argv)
    from core.partials import sweep_leftovers

    sweep_leftovers()  # what a killed earlier process left half-written
    try:
        return args.func(args)
    except StudioError as exc:
        print(f"error: {_one_line(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("cancelled: nothing was written", file=sys.stderr)
        return EXIT_CANCELLED
    except OSError as exc:  # the disk, permissions, a vanished file: the environment, not the input
        from core.errors import write_error

        print(f"error: {_one_line(str(write_error(exc, exc.filename or 'a file', 'the command')))}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # a bug: still one line, with the traceback kept in a file to report it
        print(f"error: {_one_line(unexpected_failure(exc))}", file=sys.stderr)
        return EXIT_USAGE


def unexpected_failure(exc: BaseException) -> str:
    """The line for a failure that is a bug; the full traceback goes to ``last-error.txt`` in the app's data folder."""
    import traceback

    from core.errors import is_disk_full, write_error
    from core.paths import data_dir

    if is_disk_full(exc):
        return str(write_error(exc, "the output", "writing"))
    first = (str(exc).strip().splitlines() or [""])[0][:200]
    where = data_dir() / "last-error.txt"
    try:
        where.parent.mkdir(parents=True, exist_ok=True)
        where.write_text("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)), encoding="utf-8")
        kept = f"the details are in {where}"
    except OSError:
        kept = "the details could not be saved"
    return (f"unexpected failure ({type(exc).__name__}: {first}); this is a bug in Compression Studio, not "
            f"something you did; {kept}, please report it")


if __name__ == "__main__":
    sys.exit(main())

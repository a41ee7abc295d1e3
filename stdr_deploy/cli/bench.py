"""`stdr-deploy bench`: measure the models, the served pipeline and EasyOCR; write a report."""

from __future__ import annotations

from pathlib import Path

import click

from stdr_deploy.cli.options import (
    cpu_backend_option, detector_precision_option, parse_weights, recognizer_option, weights_option,
)
from stdr_deploy.cli.output import console, print_json
from stdr_deploy.errors import StdrError, UserInputError

SOAK_CONCURRENCY = 4


def _ints(value: str) -> tuple[int, ...]:
    try:
        numbers = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise UserInputError(f"expected comma-separated integers, got {value!r}", hint="e.g. --concurrency 1,2,4,8") from None
    if not numbers or min(numbers) < 1:
        raise UserInputError(f"expected positive integers, got {value!r}", hint="e.g. --concurrency 1,2,4,8")
    return numbers


def _names(value: str | None, known: tuple[str, ...], what: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    names = tuple(v.strip() for v in value.split(",") if v.strip())
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise UserInputError(f"unknown {what} {', '.join(unknown) or value!r}", hint=f"choose from {', '.join(known)}")
    return names


def _engines(values: tuple[str, ...]) -> dict[str, Path]:
    engines = {}
    for value in values:
        model, sep, path = value.partition("=")
        if not sep or not Path(path).is_file():
            raise UserInputError(f"--engine {value!r}: expected MODEL=PATH to an existing engine file")
        engines[model] = Path(path)
    return engines


@click.command("bench")
@click.option("--url", help="A running server (grpc://HOST:PORT; http:// only with `serve --http-inference`). Default: start one.")
@click.option("--metrics-url", help="With --url: the server's metrics endpoint (e.g. http://HOST:8002/metrics), "
              "for the pipeline's time by stage.")
@click.option("--shared-memory", type=click.Choice(["auto", "system", "none"]), default="auto", show_default=True,
              help="How the load generator hands images to the pipeline: in Triton's system shared memory, in the "
              "requests (none), or auto: shared memory where the server is on this host and can map it.")
@click.option("--repo", type=click.Path(path_type=Path, exists=True, file_okay=False),
              help="Serve this rendered repository (default without --url: deploy with `auto` in a temporary folder).")
@click.option("--models", "models", default="craft,crnn-en", show_default=True, help="Models for the model level (comma-separated).")
@click.option("--runtimes", help="Runtimes for the model level (comma-separated): torch, ort-cpu, torch-cuda, "
              "torch-cuda-fp16, torch-cuda-nhwc-fp16, torch-cuda-nhwc-fp16-resident, ort-cuda, tensorrt. "
              "Default: every one available here.")
@click.option("--model-level/--no-model-level", default=True, show_default=True, help="Time each model on each runtime.")
@click.option("--pipeline/--no-pipeline", default=True, show_default=True, help="Load the served pipeline through Triton.")
@click.option("--concurrency", default="1,2,4,8,16", show_default=True,
              help=f"Pipeline concurrency levels; with --soak, the soak's single concurrency (default {SOAK_CONCURRENCY}).")
@click.option("--duration", type=float, default=30.0, show_default=True, help="Seconds of load per concurrency level.")
@click.option("--max-requests", type=int, help="Also stop a level (or the soak) after this many requests.")
@click.option("--peers", "peers", metavar="NAMES",
              help="Peer systems run side by side in this process, on the same images and sets, in the same run "
              "(comma-separated: rapidocr, easyocr; install the `peers` extra). A peer that cannot import is skipped, "
              "with the reason in the report.")
@click.option("--easyocr", is_flag=True, help="Same as --peers easyocr.")
@click.option("--scenes", type=click.Path(path_type=Path, exists=True, file_okay=False),
              help="Labelled scenes (gt.json + img00..): the four benchmark images and the accuracy set. "
              "Default: scenes_A of the shared test data.")
@click.option("--soak", "soak_s", type=float, metavar="SECONDS", help="Run only a soak of this many seconds (loopback server).")
@click.option("--server-pid", type=int, help="Server pid for the soak's RSS readings when --url is given (default: the only tritonserver).")
@recognizer_option
@detector_precision_option
@cpu_backend_option
@weights_option
@click.option("--engine", "engines", multiple=True, metavar="MODEL=PATH", help="TensorRT engine for the tensorrt runtime (repeatable).")
@click.option("--threads", type=int, help="Intra-op threads for torch, ONNX Runtime and EasyOCR (default: runtime default).")
@click.option("--chain", "chain", metavar="RUNTIME", help="Also time CRAFT at its max canvas + 16 crops back to back on RUNTIME.")
@click.option("--square-canvas", is_flag=True, help="Also time the detector at canvas x canvas (its worst case).")
@click.option("--quick", is_flag=True, help="Short run: small images, batches 1 and 4, ~1 s per case, no accuracy sets.")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False),
              help="Results folder (default: benchmarks/results/<host-slug>).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
def command(url, metrics_url, shared_memory, repo, models, runtimes, model_level, pipeline, concurrency, duration, max_requests, peers, easyocr, scenes,
            soak_s, server_pid, recognizer, detector_precision, cpu_backend, weights, engines, threads, chain, square_canvas, quick, out, as_json):
    """Benchmark the models, the served pipeline and EasyOCR; write JSON, markdown and plots.

    \b
    Model level: each model on each runtime at the reference shapes (the four images after the
    canvas resize; recognizers at batch 1, 4, 16), with FLOPs against the hardware's peak.
    Pipeline: a closed-loop load generator at each concurrency, with Triton's per-model
    queue/compute statistics, then the served pipeline scored on the scene set and on real_A beside
    it. --peers runs other OCR systems (RapidOCR, EasyOCR) on the same images and sets. --soak SECONDS runs only a soak: errors, latency drift, server RSS.
    """
    from stdr_deploy.bench import models as model_bench
    from stdr_deploy.bench.report import verdict, write_partial, write_report
    from stdr_deploy.bench.run import BenchOptions, run_bench
    from stdr_deploy.models import MODEL_SPECS

    from stdr_deploy.bench.peers import parse_peers

    peer_names = parse_peers(peers or "")
    easyocr = easyocr or "easyocr" in peer_names
    levels = _ints(concurrency)
    if soak_s is not None:
        if soak_s <= 0:
            raise UserInputError("--soak needs a positive number of seconds")
        if click.get_current_context().get_parameter_source("concurrency") == click.core.ParameterSource.DEFAULT:
            levels = (SOAK_CONCURRENCY,)
        if len(levels) != 1:
            raise UserInputError("a soak runs at one concurrency", hint="e.g. --soak 600 --concurrency 4")
    if url and repo:
        raise UserInputError("give --url or --repo, not both")
    if url:
        from stdr_deploy.triton_client import Endpoint

        Endpoint.parse(url)  # a malformed address is the caller's mistake (exit 2), before any phase runs
    if metrics_url and not url:
        raise UserInputError("--metrics-url goes with --url", hint="a server bench starts itself is read without it")
    if metrics_url and not metrics_url.startswith(("http://", "https://")):
        raise UserInputError(f"--metrics-url {metrics_url!r}: expected http://HOST:PORT/metrics")
    options = BenchOptions(
        models=_names(models, tuple(MODEL_SPECS), "model") or (),
        runtimes=_names(runtimes, model_bench.RUNTIMES, "runtime"),
        model_level=model_level and soak_s is None,
        pipeline=pipeline and soak_s is None,
        url=url,
        metrics_url=metrics_url,
        shared_memory={"auto": None, "system": True, "none": False}[shared_memory],
        repo=repo,
        recognizer=recognizer,
        detector_precision=detector_precision,
        cpu_backend=cpu_backend,
        concurrency=levels,
        duration_s=duration,
        max_requests=max_requests,
        easyocr=easyocr and soak_s is None,
        peers=tuple(p for p in peer_names if p != "easyocr") if soak_s is None else (),
        scenes=scenes,
        soak_s=soak_s,
        soak_concurrency=levels[0],
        server_pid=server_pid,
        quick=quick,
        threads=threads,
        square_canvas=square_canvas,
        chain=_names(chain, model_bench.RUNTIMES, "runtime")[0] if chain else None,
        weights=parse_weights(weights, recognizer),
        engines=_engines(engines),
    )
    from stdr_deploy.progress import interactive

    def folder_of(result):
        return out or Path("benchmarks") / "results" / result["host"]["slug"]

    with _RichReporter() if interactive() else _LogReporter() as reporter:
        result = run_bench(options, reporter, checkpoint=lambda partial: write_partial(partial, folder_of(partial)))
    folder = folder_of(result)
    written = write_report(result, folder)
    if as_json:
        print_json(result)
    console.print(f"wrote {', '.join(str(p) for p in written.values())} in {result['wall_s']:.0f} s")
    for check in result.get("targets", []):
        color = {True: "green", False: "red"}.get(check["met"], "yellow")
        console.print(f"[{color}]{verdict(check)}[/] {check['target']}")
    failures = result.get("failures", {})
    if failures:  # the report keeps what worked; the exit code says that something did not
        error = StdrError(
            f"{len(failures)} benchmark phase(s) failed: {', '.join(failures)}",
            hint=f"the reasons are under 'Failed phases' in {written['markdown']}; first: {next(iter(failures.values()))}",
        )
        error.exit_code = result["exit_code"]
        raise error


class _LogReporter:
    """Progress as timestamped lines on stderr, for a log or a pipe (a live display draws
    nothing there): each phase's start, steps and end, with a heartbeat during long steps."""

    def __enter__(self) -> "_LogReporter":
        self.activity = None
        return self

    def __exit__(self, *exc_info) -> None:
        self.done()

    def phase(self, name: str, total: int) -> None:
        from stdr_deploy.progress import Activity

        self.done()
        self.activity = Activity(name, detail=f"{total} steps")

    def step(self, message: str) -> None:
        from stdr_deploy.progress import log_line

        if self.activity is not None:
            log_line(f"{self.activity.name}: {message}")

    def done(self) -> None:
        if self.activity is not None:
            self.activity.end()
            self.activity = None

    def failed(self) -> None:
        if self.activity is not None:
            self.activity.end("failed", "see Failed phases in the report")
            self.activity = None


class _RichReporter:
    """A progress bar per phase on stderr."""

    def __enter__(self) -> "_RichReporter":
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            TextColumn("[bold]{task.fields[phase]}[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.description}"),
            console=console,
        )
        self.progress.__enter__()
        self.task = None
        return self

    def __exit__(self, *exc_info) -> None:
        self.done()
        self.progress.__exit__(*exc_info)

    def phase(self, name: str, total: int) -> None:
        self.done()
        self.task = self.progress.add_task("", total=total, phase=name)
        self.started = False

    def step(self, message: str) -> None:
        if self.task is None:
            return
        if self.started:
            self.progress.advance(self.task)
        self.started = True
        self.progress.update(self.task, description=message)

    def failed(self) -> None:
        if self.task is not None:
            self.progress.update(self.task, description="[red]failed[/] (see Failed phases in the report)")
            self.progress.stop_task(self.task)
            self.task = None

    def done(self) -> None:
        if self.task is not None:
            task = self.progress.tasks[-1]
            self.progress.update(self.task, completed=task.total, description="done")
            self.task = None


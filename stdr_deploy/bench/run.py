"""`stdr-deploy bench` end to end: model level, served pipeline, peers, accuracy, soak, report.

Order matters on a small host: the model level runs before any server exists; the pipeline is
loaded, scored and soaked while it is served; the server is stopped before EasyOCR runs, so
neither side shares the CPU with the other's idle processes doing work.
"""

from __future__ import annotations

import datetime as dt
import os
import shlex
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from stdr_deploy.bench import accuracy as acc
from stdr_deploy.bench import host as host_mod
from stdr_deploy.bench.models import QUICK_POLICY, TimingPolicy, available_runtimes, plan_cases, run_chain_bench, run_model_bench
from stdr_deploy.bench.report import targets
from stdr_deploy.errors import MissingDependency, StdrError, UserInputError
from stdr_deploy.ocr.detector_input import padded_size
from stdr_deploy.ocr.recognizers import RECOGNIZER_NAMES
from stdr_deploy.planner import TORCH_RECOGNIZER

DEFAULT_MODELS = ("craft", "crnn-en")
SEED_FILES = ("img00.png", "img01.png", "img02.png", "img03.png")  # the reference benchmark's four sizes


class Reporter:
    """Progress sink: `phase` opens a named stage with a number of steps, `step` advances it;
    `done` closes the open stage, `failed` closes it as failed (the report says why)."""

    def phase(self, name: str, total: int) -> None:
        pass

    def step(self, message: str) -> None:
        pass

    def done(self) -> None:
        pass

    def failed(self) -> None:
        pass


@dataclass(frozen=True)
class BenchOptions:
    models: tuple[str, ...] = DEFAULT_MODELS
    runtimes: tuple[str, ...] | None = None  # None: every runtime available here
    model_level: bool = True
    pipeline: bool = True
    url: str | None = None  # a running server; None starts one (from `repo`, else `auto`)
    metrics_url: str | None = None  # the running server's metrics endpoint, for the pipeline's stage times
    repo: Path | None = None
    recognizer: str | None = None  # None: the deployment's is the plan's; the chain's is crnn-en
    detector_precision: str | None = None  # of the deployment `auto` makes when no url or repo is given
    cpu_backend: str | None = None  # its CPU models' runtime (None: the planner's choice)
    concurrency: tuple[int, ...] = (1, 2, 4, 8, 16)
    duration_s: float = 30.0
    max_requests: int | None = None
    image_repeats: int = 5  # each pipeline image sent this many times alone, for its stage times (quick: 1)
    shared_memory: bool | None = None  # pipeline inputs in system shared memory; None: where the server is local
    easyocr: bool = False
    easyocr_runs: int = 3
    peers: tuple[str, ...] = ()  # in-process peer systems (`bench.peers`) beside EasyOCR, e.g. ("rapidocr",)
    scenes: Path | None = None
    soak_s: float | None = None
    soak_concurrency: int = 4
    server_pid: int | None = None
    quick: bool = False
    threads: int | None = None
    canvas_size: int = 2560
    square_canvas: bool = False
    chain: str | None = None  # runtime for the detector + 16 crops chain, None: not measured
    weights: Mapping[str, str] = field(default_factory=dict)
    engines: Mapping[str, Path] = field(default_factory=dict)


def default_scenes() -> Path | None:
    """scenes_A of the shared test data, if it sits where the project keeps it."""
    roots = [Path(os.environ["STDR_SHARED"])] if os.environ.get("STDR_SHARED") else []
    roots += [Path.cwd().parent / "shared", Path(__file__).resolve().parents[3] / "shared"]
    return next((r / "testdata" / "scenes_A" for r in roots if (r / "testdata" / "scenes_A" / "gt.json").is_file()), None)


def run_bench(options: BenchOptions, reporter: Reporter | None = None, argv: list[str] | None = None,
              checkpoint: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run what `options` asks for and return the JSON-ready result (see `report.write_report`).

    `checkpoint` gets the result so far as each phase starts (the CLI writes it as a partial
    report, so a run that is stopped keeps the phases it finished)."""
    reporter = reporter or Reporter()
    started = time.perf_counter()
    scenes = options.scenes or default_scenes()
    result: dict[str, Any] = {
        "format": 1,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(["stdr-deploy", "bench", *(argv if argv is not None else sys.argv[2:])]),
        "host": host_mod.host_info(),
        "load_avg": {"start": host_mod.load_average()},
        "versions": host_mod.versions(),
        "notes": [],
    }
    peaks = host_mod.peaks()
    result["peaks"] = {k: v.to_dict() for k, v in peaks.items()}
    if options.threads:
        import torch

        torch.set_num_threads(options.threads)
    policy = QUICK_POLICY if options.quick else TimingPolicy()

    def guarded(phase: str, run: Callable[[], Any]) -> Any:
        if checkpoint:  # before the phase: the result then holds every phase before it
            checkpoint(result)
        return _guarded(reporter, result, phase, run)

    needs_images = options.pipeline or options.soak_s or options.easyocr or options.peers
    images = _seed_images(scenes, options.quick, result["notes"]) if needs_images else {}  # fail fast

    def model_level() -> dict[str, Any]:
        runtimes = options.runtimes or tuple(r for r, why in available_runtimes(options.engines).items() if why is None)
        cases = plan_cases(options.models, runtimes, quick=options.quick, canvas_size=options.canvas_size, square_canvas=options.square_canvas)
        reporter.phase("model level", len(cases))
        bench = run_model_bench(
            cases, policy=policy, weights=options.weights, engines=options.engines, threads=options.threads, peaks=peaks, progress=reporter.step
        )
        return bench.to_dict()

    def chains() -> list[dict[str, Any]]:
        reporter.phase("detector + recognizer chain", 1)
        side = padded_size(options.canvas_size, options.canvas_size)[0]
        recognizer = options.recognizer or TORCH_RECOGNIZER  # the chain compares runtimes, torch among them
        reporter.step(f"craft {side}x{side} + {recognizer} x16 on {options.chain}")
        chain = run_chain_bench(options.chain, (1, 3, side, side), recognizer, policy=policy, weights=options.weights, threads=options.threads)
        return [chain.to_dict()]

    if options.model_level:
        result["models"] = guarded("model level", model_level)
    if options.chain:
        result["chains"] = guarded("chain", chains)
    with ExitStack() as stack:
        wants_server = options.pipeline or options.soak_s
        served = guarded("deployment", lambda: _server(options, stack, reporter, result)) if wants_server else None
        if served:
            url, pid, metrics_url = served
            if options.pipeline:
                result["pipeline"] = guarded("pipeline", lambda: _pipeline(url, metrics_url, images, options, reporter))
                if scenes and not options.quick:
                    ours = guarded("our accuracy", lambda: _score_served(url, scenes, options, reporter))
                    result.setdefault("accuracy", {"scenes": str(scenes)})["ours"] = ours
                    for extra in _extra_sets(scenes):
                        scored = guarded(f"our accuracy on {extra.name}", lambda: _score_served(url, extra, options, reporter))
                        result.setdefault("accuracy_sets", {}).setdefault(extra.name, {})["ours"] = scored
            if options.soak_s:
                result["soak"] = guarded("soak", lambda: _soak(url, images, pid, options, reporter))
    if options.easyocr:
        result["easyocr"], easy_score = guarded("easyocr", lambda: _easyocr(images, scenes, options, reporter)) or (None, None)
        if easy_score:
            result.setdefault("accuracy", {"scenes": str(scenes)})["easyocr"] = easy_score
    for name in options.peers:
        result.setdefault("peers", {})[name] = guarded(name, lambda: _peer(name, images, scenes, options, reporter, result))
    result["load_avg"]["end"] = host_mod.load_average()
    result["targets"] = targets(result)
    result["wall_s"] = time.perf_counter() - started
    return result


def _guarded(reporter: Reporter, result: dict[str, Any], phase: str, run: Callable[[], Any]) -> Any:
    """Run one phase; if it fails, record why in `failures` and go on, so a long run keeps the
    phases that worked. Typed errors are explained; anything else keeps its exception type."""
    reporter.done()  # a failure before this phase opens its own stage must not mark the last one
    try:
        return run()
    except StdrError as exc:
        message, code = f"{exc}" + (f" (hint: {exc.hint})" if exc.hint else ""), exc.exit_code
    except Exception as exc:  # noqa: BLE001 - one phase's bug must not discard the others' results
        message, code = f"{type(exc).__name__}: {exc}", StdrError.exit_code
    result.setdefault("failures", {})[phase] = message
    result.setdefault("exit_code", code)  # the first failure's, for `bench` to exit with
    reporter.failed()
    return None


def _seed_images(scenes: Path | None, quick: bool, notes: list[str]) -> dict[str, Any]:
    """label -> RGB array of the four reference images (two small ones with `quick`)."""
    from stdr_deploy.ocr.image_io import read_image

    files = [f for f in SEED_FILES if not quick or f in ("img00.png", "img02.png")]
    if scenes is None or not all((scenes / f).is_file() for f in files):
        raise UserInputError(
            "the benchmark images (scenes_A img00..img03) were not found",
            hint="pass --scenes DIR (the shared test data's testdata/scenes_A) or set STDR_SHARED",
        )
    images = {Path(f).stem: read_image(scenes / f) for f in files}
    notes.append("pipeline images: " + ", ".join(f"{k} {v.shape[0]}x{v.shape[1]}" for k, v in images.items()) + f" from {scenes}")
    return images


def _server(options: BenchOptions, stack: ExitStack, reporter: Reporter, result: dict[str, Any]) -> tuple[str, int | None, str | None]:
    """The gRPC URL to load, the server pid (for RSS) and its metrics URL (None: unknown),
    starting a server when none is given."""
    from stdr_deploy.bench.soak import find_server_pid

    if options.url:
        result["deployment"] = {"url": options.url, "started_here": False}
        return options.url, options.server_pid or find_server_pid(), options.metrics_url
    from stdr_deploy.server import TritonServer

    if options.repo:
        reporter.phase(f"start tritonserver on {options.repo}", 1)
        server = stack.enter_context(TritonServer(options.repo))
        reporter.step("ready")
        result["deployment"] = {"repo": str(options.repo), "started_here": True}
    else:
        from stdr_deploy.auto import AutoOptions, run_auto

        workspace = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="stdr-bench-")))
        # weights for model-level-only families (e.g. parseq=random) are not the deployment's
        if options.recognizer is None and set(options.weights) & set(RECOGNIZER_NAMES):
            raise UserInputError(
                "--weights names a recognizer, but which recognizer the deployment runs is left to the plan",
                hint="add --recognizer NAME for the served deployment",
            )
        served_weights = {m: w for m, w in options.weights.items() if m in ("craft", options.recognizer)}
        reporter.phase("deploy (stdr-deploy auto)", 7)
        deployed = run_auto(
            AutoOptions(
                workspace=workspace,
                repo=workspace / "repo",
                recognizer=options.recognizer,
                weights=served_weights,
                detector_precision=options.detector_precision,
                cpu_backend=options.cpu_backend,
            ),
            on_start=lambda step: reporter.step(step.name),
        )
        server = deployed.server
        stack.callback(server.stop)
        plan = deployed.plan
        result["deployment"] = {
            "started_here": True,
            "variant": plan.variant,
            "device": plan.device,
            "detector_precision": plan.detector.precision,
            "backends": {m.triton_name: m.backend for m in plan.models()},
            "float_precisions": {m.triton_name: m.float_precision for m in plan.models() if m.backend == "openvino"},
            "recognizer": plan.recognizer.family,
            "pipeline": plan.to_dict()["pipeline"],
            "instances": {m.triton_name: m.instance_count for m in plan.models()},
        }
    result["deployment"].update({"url": server.grpc_url, "pid": server.pid})
    return server.grpc_url, server.pid, server.metrics_url


def _pipeline(url: str, metrics_url: str | None, images: Mapping[str, Any], options: BenchOptions,
              reporter: Reporter) -> dict[str, Any]:
    from stdr_deploy.bench.load import image_requests, run_load

    requests = image_requests(images)
    repeats = 1 if options.quick else options.image_repeats
    reporter.phase("pipeline through Triton", len(requests) * (2 if repeats else 1) + len(options.concurrency))
    return run_load(
        url,
        requests,
        concurrency=options.concurrency,
        duration_s=options.duration_s,
        max_requests=options.max_requests,
        progress=reporter.step,
        metrics_url=metrics_url,
        image_repeats=repeats,
        shared_memory=options.shared_memory,
    ).to_dict()


def _score_served(url: str, scenes: Path, options: BenchOptions, reporter: Reporter) -> dict[str, Any]:
    gt, paths = acc.load_scenes(scenes)
    reporter.phase(f"our accuracy on {scenes.name}", len(paths))
    read = acc.served_reader(url)
    pred = acc.predictions(paths, _announced(read, reporter))
    return acc.score(gt, pred)


def _soak(url: str, images: Mapping[str, Any], pid: int | None, options: BenchOptions, reporter: Reporter) -> dict[str, Any]:
    from stdr_deploy.bench.load import image_requests
    from stdr_deploy.bench.soak import run_soak

    reporter.phase(f"soak {options.soak_s:g} s at concurrency {options.soak_concurrency}", 10)
    return run_soak(
        url,
        image_requests(images),
        seconds=float(options.soak_s or 0),
        concurrency=options.soak_concurrency,
        max_requests=options.max_requests,
        server_pid=pid,
        progress=reporter.step,
    ).to_dict()


def _easyocr(
    images: Mapping[str, Any], scenes: Path | None, options: BenchOptions, reporter: Reporter
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    from stdr_deploy.bench import easyocr_baseline as easy

    try:
        reader = easy.make_reader(options.threads)
    except MissingDependency as exc:
        return {"skipped": f"{exc} ({exc.hint})"}, None
    paths = {label: Path(scenes) / f"{label}.png" for label in images} if scenes else {}
    reporter.phase("EasyOCR latency", len(paths))
    warmup, runs = (0, 1) if options.quick else (1, options.easyocr_runs)
    latency = {}
    for label, path in paths.items():
        reporter.step(f"EasyOCR {label}")
        latency.update(easy.latency(reader, {label: path}, warmup=warmup, runs=runs))
    out = {"versions": easy.versions(), "warmup": warmup, "runs": runs, "latency": {k: v.to_dict() for k, v in latency.items()}}
    if scenes is None or options.quick:
        return out, None
    gt, scene_paths = acc.load_scenes(scenes)
    reporter.phase(f"EasyOCR accuracy on {scenes.name}", len(scene_paths))
    pred = acc.predictions(scene_paths, _announced(lambda p: easy.read_words(reader, p), reporter))
    return out, acc.score(gt, pred)


def _extra_sets(scenes: Path) -> list[Path]:
    """Labelled sets scored beside the scene set (every system, served and peers): real_A next to it, if present."""
    real = scenes.parent / "real_A"
    return [real] if (real / "gt.json").is_file() and real != scenes else []


def _peer(
    name: str, images: Mapping[str, Any], scenes: Path | None, options: BenchOptions, reporter: Reporter,
    result: dict[str, Any],
) -> dict[str, Any]:
    """One peer in this process: latency on the benchmark images, accuracy on every set."""
    from stdr_deploy.bench.peers import make_peer
    from stdr_deploy.bench.stats import LatencyStats
    from stdr_deploy.ocr.image_io import read_image

    try:
        reader = make_peer(name)
    except MissingDependency as exc:
        return {"skipped": f"{exc} ({exc.hint})"}
    warmup, runs = (0, 1) if options.quick else (1, options.easyocr_runs)
    reporter.phase(f"{name} latency", len(images))
    latency = {}
    for label, image in images.items():
        reporter.step(f"{name} {label}")
        for _ in range(warmup):
            reader.read(image)
        samples = []
        for _ in range(runs):
            start = time.perf_counter()
            reader.read(image)
            samples.append(time.perf_counter() - start)
        latency[label] = LatencyStats.from_seconds(samples).to_dict()
    out: dict[str, Any] = {"versions": reader.versions(), "warmup": warmup, "runs": runs, "latency": latency}
    if scenes is None or options.quick:
        return out
    read = lambda path: [(w.text, w.polygon) for w in reader.read(read_image(path))]  # noqa: E731
    for folder in [scenes, *_extra_sets(scenes)]:
        gt, paths = acc.load_scenes(folder)
        reporter.phase(f"{name} accuracy on {folder.name}", len(paths))
        scored = acc.score(gt, acc.predictions(paths, _announced(read, reporter)))
        result.setdefault("accuracy_sets", {}).setdefault(folder.name, {})[name] = scored
        if folder == scenes:
            result.setdefault("accuracy", {"scenes": str(scenes)})[name] = scored
    return out


def _announced(read: Callable[[Path], Any], reporter: Reporter) -> Callable[[Path], Any]:
    def wrapped(path: Path) -> Any:
        reporter.step(path.name)
        return read(path)

    return wrapped

"""`stdr-deploy serve`: run tritonserver on a model repository until Ctrl-C or SIGTERM."""

from __future__ import annotations

import contextlib
import ipaddress
import signal
import threading
import time
from pathlib import Path
from typing import Iterator

import click
from rich.table import Table

from stdr_deploy.cli.options import supervision_options, workspace_option
from stdr_deploy.cli.output import activity, console, print_json
from stdr_deploy.errors import UserInputError
from stdr_deploy.progress import log_line

LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def model_dirs(repo: Path) -> list[Path]:
    return sorted(path.parent for path in repo.glob("*/config.pbtxt"))


@click.command("serve")
@click.option("--repo", type=click.Path(path_type=Path, file_okay=False), default=Path("model_repository"),
              show_default=True, help="Triton model repository to serve (see `stdr-deploy render`).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address the server binds to; anything but loopback is reachable from other machines.")
@click.option("--http-port", type=click.IntRange(1, 65535), help="HTTP port (default: a free one).")
@click.option("--grpc-port", type=click.IntRange(1, 65535), help="gRPC port (default: a free one).")
@click.option("--metrics-port", type=click.IntRange(1, 65535), help="Metrics port (default: a free one).")
@workspace_option
@click.option("--log", "log_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Server log file (default: <workspace>/server.log, as `auto` writes it).")
@click.option("--timeout", type=click.FloatRange(min=1), default=300.0, show_default=True,
              help="Seconds to wait for the server and every model to be ready.")
@supervision_options
@click.option("--http-inference", is_flag=True,
              help="Also take inference over HTTP. Off by default: one small JSON request can crash this "
              "Triton's HTTP frontend; use it only with trusted clients.")
@click.option("--json", "as_json", is_flag=True,
              help="Once ready, print one JSON object (urls, pid, log, models) on stdout, then one JSON "
              "line per supervision event.")
def command(repo, host, http_port, grpc_port, metrics_port, workspace, log_path, timeout, policy, http_inference,
            as_json):
    """Start Triton on --repo, wait until every model is ready, and serve until Ctrl-C.

    Without a tritonserver of your own this runs the one shipped in nvidia-pytriton, with
    stdr-deploy's Python-based `onnxruntime` and `tensorrt` backends. Other commands reach the
    server through its gRPC URL (`--url grpc://127.0.0.1:PORT`); HTTP serves health, metadata and
    the repository API, and inference only with --http-inference.

    While serving, a supervisor probes every model with a real request. A model that fails its
    probe (e.g. its Python-backend stub died) is unloaded, so Triton's /v2/health/ready says not
    ready, and loaded again; a tritonserver that dies is restarted on the same ports. Each event is
    a line on stderr. Recoveries back off (1 s, doubling); more than --max-restarts of them within
    --restart-window end the command.

    \b
    Exit codes: 0 stopped by Ctrl-C/SIGTERM, 2 bad arguments, 3 nvidia-pytriton missing,
    7 the server failed to start, a model failed to load, or recovery gave up (crash loop).
    """
    from stdr_deploy.server import TritonServer

    if not model_dirs(repo):
        raise UserInputError(
            f"no models in {repo} (no */config.pbtxt)",
            hint="render a repository first: `stdr-deploy render` (or `stdr-deploy auto`)",
        )
    if not is_loopback(host):
        console.print(f"[yellow]warning:[/] serving on {host}: other machines can reach this server, unauthenticated")
    log_path = log_path or workspace / "server.log"
    server = TritonServer(repo, host=host, http_port=http_port, grpc_port=grpc_port,
                          metrics_port=metrics_port, log_path=log_path, http_inference=http_inference)
    started = time.monotonic()
    with sigterm_as_ctrl_c():  # until serving: then StopRequests
        try:
            server.start()
            with activity("serve", f"starting tritonserver (log: {log_path})") as update:
                models = server.wait_ready(timeout, progress=update)
            seconds = time.monotonic() - started
            if as_json:
                print_json({
                    "http_url": server.http_url,
                    "grpc_url": server.grpc_url,
                    "metrics_url": server.metrics_url,
                    "pid": server.pid,
                    "log": str(log_path),
                    "ready_seconds": round(seconds, 2),
                    "models": [{"name": m.name, "version": m.version, "state": m.state} for m in models],
                })
            else:
                console.print(status_table(server, models, seconds, policy))
            with StopRequests() as requests:
                console.print("serving; Ctrl-C stops it")
                supervise(server, repo, policy, as_json, requests)
        except KeyboardInterrupt:
            pass  # Ctrl-C, or SIGTERM turned into one by `sigterm_as_ctrl_c`: both mean "stop cleanly"
        finally:
            running = server.is_running()
            server.stop()
            if running:
                console.print("server stopped")


@contextlib.contextmanager
def sigterm_as_ctrl_c() -> Iterator[None]:
    """SIGTERM while starting or deploying stops as Ctrl-C does: the first one raises
    KeyboardInterrupt, later ones are ignored so the clean-up after it (stopping a started server)
    runs to its end. Serving itself takes signals through `StopRequests`."""
    raised: list[bool] = []

    def on_sigterm(*_) -> None:
        if not raised:
            raised.append(True)
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class StopRequests:
    """Ctrl-C and SIGTERM while serving: the first sets `event` (the supervisor lets its probe in
    flight finish, then returns; an exception raised inside the gRPC client would print a
    traceback), a second one stops at once (KeyboardInterrupt)."""

    def __init__(self):
        self.event = threading.Event()
        self.reason = ""
        self._previous: dict[int, object] = {}

    def _on_signal(self, signum, _frame) -> None:
        if self.event.is_set():
            raise KeyboardInterrupt
        self.reason = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        self.event.set()

    def __enter__(self) -> StopRequests:
        self._previous = {signum: signal.signal(signum, self._on_signal) for signum in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *_) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def supervise(server, repo: Path, policy, as_json: bool, stop: StopRequests) -> None:
    """Keep `server` answering until `stop` (also for `auto`).

    Each event is a log line on stderr, and a JSON line on stdout with --json.
    """
    from stdr_deploy.supervise import watch

    def report(event) -> None:
        log_line(f"supervise: {event.message}")
        if as_json:
            print_json(event.to_dict(), indent=None)

    watch(server, repo, policy, report, stop.event)


def status_table(server, models, seconds: float, policy) -> Table:
    table = Table(title=f"tritonserver ready in {seconds:.1f} s (pid {server.pid})", show_header=False)
    table.add_row("http", server.http_url)
    table.add_row("grpc", server.grpc_url)
    table.add_row("metrics", server.metrics_url)
    table.add_row("log", str(server.log_path))
    for model in models:
        colour = "green" if model.state == "READY" else "red"
        table.add_row(f"model {model.name}", f"v{model.version} [{colour}]{model.state}[/]")
    table.add_row("supervision", supervision_summary(policy))
    return table


def supervision_summary(policy) -> str:
    return (f"probe every {policy.interval_s:g} s; reload a failing model, restart a dead server; "
            f"at most {policy.max_restarts} recoveries in {policy.window_s:g} s")

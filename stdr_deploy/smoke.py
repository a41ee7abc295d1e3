"""Prove a deployed repository works: server health, configs, shapes, and reading known text.

Every check yields a `Check` row (model, check, expected, got) so a failure says exactly what
broke; `run_smoke` collects them all instead of stopping at the first.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from stdr_deploy.errors import SmokeFailed
from stdr_deploy.plan_schema import ModelPlan, Plan
from stdr_deploy.triton_client import Endpoint, TritonPipelineClient, connect, infer

# Words drawn on the smoke image: short, distinct, no ambiguous glyphs (0/O, 1/l/I).
SMOKE_WORDS = ("STDR", "deploy", "Triton", "2026")


@dataclass(frozen=True)
class Check:
    model: str  # "server", a model name, or "pipeline"
    check: str
    ok: bool
    expected: str = ""
    got: str = ""
    protocol: str = ""
    seconds: float = 0.0


@dataclass
class SmokeReport:
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "checks": [asdict(c) for c in self.checks]}

    def raise_for_failures(self) -> None:
        bad = self.failures()
        if bad:
            lines = [f"{c.model}: {c.check} [{c.protocol}] expected {c.expected!r}, got {c.got!r}" for c in bad]
            raise SmokeFailed(f"{len(bad)} smoke check(s) failed:\n  " + "\n  ".join(lines))


def smoke_image(words: tuple[str, ...] = SMOKE_WORDS, size: int = 44) -> np.ndarray:
    """RGB image with `words` drawn one per row in Pillow's bundled font (no font files needed)."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=size)
    width, row = 480, int(size * 2.2)
    image = Image.new("RGB", (width, row * len(words) + size), (245, 243, 236))
    draw = ImageDraw.Draw(image)
    for i, word in enumerate(words):
        draw.text((40 + 30 * (i % 2), size // 2 + i * row), word, fill=(20, 24, 32), font=font)
    return np.asarray(image)


def rendered_config(repo: Path, model: str):
    """The config.pbtxt we wrote, parsed into Triton's own schema."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse((repo / model / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())


def _served_config(client: Any, endpoint: Endpoint, model: str):
    from google.protobuf import json_format
    from tritonclient.grpc import model_config_pb2

    if endpoint.protocol == "grpc":
        return client.get_model_config(model).config
    return json_format.ParseDict(client.get_model_config(model), model_config_pb2.ModelConfig(), ignore_unknown_fields=True)


def config_differences(rendered, served) -> list[str]:
    """Fields we set that the server reports differently (the server adds defaults; those are fine)."""
    diffs = []
    for name in ("name", "platform", "backend", "max_batch_size"):
        want, got = getattr(rendered, name), getattr(served, name)
        if want and want != got:
            diffs.append(f"{name}: {want!r} != {got!r}")
    for kind in ("input", "output"):
        want = [(t.name, t.data_type, list(t.dims)) for t in getattr(rendered, kind)]
        got = [(t.name, t.data_type, list(t.dims)) for t in getattr(served, kind)]
        if sorted(want) != sorted(got):
            diffs.append(f"{kind}: {want} != {got}")
    want_groups = [(g.count, g.kind) for g in rendered.instance_group]
    got_groups = [(g.count, g.kind) for g in served.instance_group]
    if want_groups and want_groups != got_groups:
        diffs.append(f"instance_group: {want_groups} != {got_groups}")
    return diffs


def profile_inputs(model: ModelPlan, seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """One random input per profile point (min/opt/max), shaped as the plan promises to serve."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for point in ("min", "opt", "max"):
        feeds[point] = {
            name: rng.standard_normal(getattr(shape, point), dtype=np.float32)
            for name, shape in model.profile.items()
        }
    return feeds


def expected_output_shape(model: ModelPlan, input_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The output shape each family must produce for an input shape (from the model specs)."""
    batch = input_shape[0]
    if model.role == "detector":
        return (batch, input_shape[2] // 2, input_shape[3] // 2, 2)
    if model.family == "crnn-en":
        return (batch, input_shape[3] // 4 - 1, 97)
    return (batch, 26, 95)


def _timed(fn: Callable[[], Any]) -> tuple[Any, float, Exception | None]:
    t0 = time.perf_counter()
    try:
        return fn(), time.perf_counter() - t0, None
    except Exception as exc:  # every failure becomes a failed check row
        return None, time.perf_counter() - t0, exc


def run_smoke(
    urls: list[str],
    repo: Path,
    plan: Plan,
    *,
    reference: Callable[[np.ndarray], list] | None = None,
    expect_text: bool = True,
    progress: Callable[[str], None] = lambda message: None,
) -> SmokeReport:
    """All checks against every URL (e.g. the HTTP and the gRPC endpoint of one server).

    The per-model min/opt/max inferences run against the first URL only.

    `reference` is the in-process pipeline's `read`: served words and boxes must equal its own on
    the smoke image. `expect_text=False` skips the exact-text check (random-weight recognizers).
    """
    report = SmokeReport()
    image = smoke_image()
    expected_ref = reference(image) if reference else None
    for index, url in enumerate(urls):
        endpoint = Endpoint.parse(url)
        add = lambda model, check, ok, expected="", got="", seconds=0.0: report.checks.append(  # noqa: E731
            Check(model, check, bool(ok), str(expected), str(got), endpoint.protocol, round(seconds, 4))
        )
        progress(f"{endpoint.url}: health")
        client, _, exc = _timed(lambda: connect(endpoint))
        live, _, exc = _timed(lambda: client.is_server_live()) if client else (None, 0, exc)
        add("server", "live", live is True, True, live if exc is None else exc)
        ready, _, exc = _timed(lambda: client.is_server_ready())
        add("server", "ready", ready is True, True, ready if exc is None else exc)
        if not (live and ready):
            continue
        names = [m.triton_name for m in plan.models()] + ["pipeline"]
        for name in names:
            ok, _, exc = _timed(lambda: client.is_model_ready(name))
            add(name, "ready", ok is True, True, ok if exc is None else exc)
            served, _, exc = _timed(lambda: _served_config(client, endpoint, name))
            diffs = config_differences(rendered_config(repo, name), served) if served is not None else [str(exc)]
            add(name, "config equals rendered config.pbtxt", not diffs, "no differences", "; ".join(diffs))
        # The profile shapes cost the most (the detector's max canvas): check them on one protocol.
        for model in plan.models() if index == 0 else ():
            for point, feeds in profile_inputs(model).items():
                progress(f"{endpoint.url}: {model.triton_name} at {point} shape")
                shape = next(iter(feeds.values())).shape
                want = expected_output_shape(model, shape)
                out, seconds, exc = _timed(lambda: infer(client, endpoint, model.triton_name, feeds, ["output"]))
                got = out["output"].shape if out else exc
                ok = out is not None and tuple(out["output"].shape) == want and np.isfinite(out["output"]).all()
                add(model.triton_name, f"infer at {point} shape {list(shape)}", ok, want, got, seconds)
        progress(f"{endpoint.url}: pipeline reads the smoke image")
        words, seconds, exc = _timed(lambda: TritonPipelineClient(endpoint.url).read(image))
        texts = [w.text for w in words] if words is not None else exc
        if expect_text:
            add("pipeline", "reads the smoke image", texts == list(SMOKE_WORDS), list(SMOKE_WORDS), texts, seconds)
        if expected_ref is not None and words is not None:
            add("pipeline", "served words equal in-process words",
                texts == [w.text for w in expected_ref], [w.text for w in expected_ref], texts)
            gap = _max_polygon_gap(words, expected_ref)
            add("pipeline", "served boxes equal in-process boxes (<= 1 px)", gap <= 1.0, "<= 1.0 px", f"{gap:.3f} px")
    return report


def _max_polygon_gap(served: list, reference: list) -> float:
    if len(served) != len(reference):
        return float("inf")
    if not served:
        return 0.0
    return max(
        float(np.abs(np.asarray(a.polygon, float) - np.asarray(b.polygon, float)).max())
        for a, b in zip(served, reference)
    )

"""Write a benchmark result as `bench.json`, a markdown summary `bench.md` and PNG plots.

The result is a plain JSON-ready dict (see `stdr_deploy.bench.__init__` for its sections), so
the same writer serves `stdr-deploy bench` and `benchmarks/gpu_bench.py`, and a stored JSON can
be re-rendered. Every file is written atomically; plots use matplotlib's Agg backend.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from stdr_deploy.ocr.stages import SERVED_STAGES
from stdr_deploy.workspace import atomic_path, write_json_atomic, write_text_atomic

FORMAT_VERSION = 1
PLOTS = ("latency_vs_concurrency.png", "server_breakdown.png", "runtime_comparison.png", "pipeline_vs_easyocr.png")
CPU_SPEEDUP_TARGET = 3.0  # served pipeline vs EasyOCR, same images, same run
GPU_CHAIN_TARGET_MS = 15.0  # CRAFT at max canvas + 16 crops, p50


def host_slug(cpu_model: str, cores: int, gpus: Sequence[Mapping[str, Any]] = ()) -> str:
    """Folder name for a host's results: `h100-80g` for a GPU host, `cpu-xeon-2c` otherwise."""
    if gpus:
        name = str(gpus[0].get("name", "gpu"))
        words = [w for w in re.split(r"[\s_]+", name.lower()) if w not in ("nvidia", "geforce", "tesla", "rtx", "")]
        chip = words[0] if words else "gpu"
        gb = re.search(r"(\d+)\s*gb", name.lower())
        mem = int(gb.group(1)) if gb else round(float(gpus[0].get("memory_total", 0)) / 2**30)
        count = f"x{len(gpus)}-" if len(gpus) > 1 else ""
        return _slug(f"{chip}-{count}{mem}g")
    lowered = cpu_model.lower()
    family = next((f for f in ("xeon", "epyc", "ryzen", "core", "graviton", "neoverse", "apple") if f in lowered), None)
    vendor = family or (lowered.split()[0] if lowered.split() else "cpu")
    return _slug(f"cpu-{vendor}-{cores}c")


def write_report(result: Mapping[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write bench.json, bench.md and the plots that have data; returns what was written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {"json": write_json_atomic(out / "bench.json", result)}
    written["markdown"] = write_text_atomic(out / "bench.md", markdown(result))
    for name, path in write_plots(result, out).items():
        written[name] = path
    return written


def targets(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The issue's two targets, checked against what this run measured (skipped when not measured)."""
    checks = []
    ours = _served_p50_by_label(result)
    easy = {k: v["p50_ms"] for k, v in (result.get("easyocr") or {}).get("latency", {}).items()}
    common = [k for k in ours if k in easy]
    if common:
        ratios = {k: easy[k] / ours[k] for k in common}
        total = sum(easy[k] for k in common) / sum(ours[k] for k in common)
        acc = result.get("accuracy") or {}
        ours_acc = (acc.get("ours") or {}).get("word_accuracy")
        easy_acc = (acc.get("easyocr") or {}).get("word_accuracy")
        better = None if ours_acc is None or easy_acc is None else ours_acc > easy_acc
        checks.append(
            {
                "target": f"CPU: served pipeline >= {CPU_SPEEDUP_TARGET:g}x lower latency than EasyOCR on the four images, at higher word accuracy",
                "measured": {
                    "speedup_per_image": ratios,
                    "speedup_total": total,
                    "word_accuracy_ours": ours_acc,
                    "word_accuracy_easyocr": easy_acc,
                },
                "met": False if min(ratios.values()) < CPU_SPEEDUP_TARGET else better,  # None: accuracy not measured
            }
        )
    chains = [c for c in result.get("chains") or [] if c.get("latency")]
    if chains:
        best = min(chains, key=lambda c: c["latency"]["p50_ms"])
        p50 = best["latency"]["p50_ms"]
        checks.append(
            {
                "target": f"GPU: CRAFT at max canvas + {best['recognizer_shape'][0]} crops recognized in under {GPU_CHAIN_TARGET_MS:g} ms p50",
                "measured": {
                    "p50_ms": p50,
                    "detector_runtime": best["runtime"],
                    "recognizer_runtime": best.get("recognizer_runtime", best["runtime"]),
                    "detector_shape": best["detector_shape"],
                },
                "met": p50 < GPU_CHAIN_TARGET_MS,
            }
        )
    return checks


def verdict(check: Mapping[str, Any]) -> str:
    return {True: "MET", False: "NOT MET"}.get(check["met"], "UNDECIDED (accuracy not measured)")


# -- markdown ---------------------------------------------------------------------------------


def write_partial(result: Mapping[str, Any], out_dir: str | Path) -> None:
    """bench.json and bench.md of a run still going (no plots), marked `partial`: what a run
    that is stopped leaves; the finished run's `write_report` replaces them."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    partial = {**result, "partial": True}
    write_json_atomic(out / "bench.json", partial)
    write_text_atomic(out / "bench.md", markdown(partial))


def markdown(result: Mapping[str, Any]) -> str:
    host = result.get("host", {})
    lines = [f"# Benchmark: {host.get('slug', 'host')}", ""]
    if result.get("partial"):
        lines += ["**Partial:** written as a phase started; the run had not finished (or was stopped), "
                  "so later phases are missing.", ""]
    lines += _facts(result)
    for title, body in (
        ("Model level", _model_table(result.get("models"))),
        ("Chain: detector at max canvas + one recognizer batch", _chain_table(result.get("chains"))),
        ("Pipeline through Triton", _pipeline_tables(result.get("pipeline"))),
        ("Side by side with EasyOCR", _easyocr_tables(result)),
        ("Peers side by side", _peer_tables(result)),
        ("Soak", _soak_table(result.get("soak"))),
        ("Targets", _target_lines(result.get("targets") or targets(result))),
    ):
        if body:
            lines += [f"## {title}", "", *body, ""]
    if result.get("failures"):
        lines += ["## Failed phases", "", *[f"- {k}: {v}" for k, v in result["failures"].items()], ""]
    if result.get("notes"):
        lines += ["## Notes", "", *[f"- {n}" for n in result["notes"]], ""]
    return "\n".join(lines).rstrip() + "\n"


def _facts(result: Mapping[str, Any]) -> list[str]:
    host = result.get("host", {})
    rows = [
        ("created", result.get("created")),
        ("command", f"`{result.get('command')}`" if result.get("command") else None),
        ("wall time", f"{result['wall_s']:.0f} s" if result.get("wall_s") is not None else None),
        ("CPU", f"{host.get('cpu_model')} ({host.get('cores')} cores, {host.get('logical_cpus')} logical)"),
        ("GPU", ", ".join(g.get("name", "?") for g in host.get("gpus", [])) or "none"),
        ("deployment", _deployment(result.get("deployment"))),
        ("load average", _load(result.get("load_avg"))),
        ("versions", ", ".join(f"{k} {v}" for k, v in (result.get("versions") or {}).items() if v)),
    ]
    for kind, peak in (result.get("peaks") or {}).items():
        if peak:
            tensor = f"; fp16 tensor {peak['fp16_tensor_gflops']:.0f}" if peak.get("fp16_tensor_gflops") else ""
            rows.append((f"{kind} peak", f"{peak['fp32_gflops']:.0f} GFLOP/s fp32{tensor} ({peak['how']}; {peak['source']})"))
    return [f"- **{k}**: {v}" for k, v in rows if v] + [""]


def _model_table(models: Mapping[str, Any] | None) -> list[str]:
    if not models:
        return []
    lines = [
        f"Weights: {models.get('weights')}; threads: {models.get('threads') or 'runtime default'}. "
        "Latency per call (host arrays in and out), throughput in images or crops per second at p50; "
        "GFLOP from the ONNX graph; x torch = torch eager p50 / this p50 on the same device kind.",
        "",
        "| model | input | runtime | min ms | p50 ms | p90 ms | items/s | GFLOP | GFLOP/s | % of peak | x torch |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in models.get("results", []):
        lat = r.get("latency")
        if lat is None:
            lines.append(f"| {r['model']} | {r['label']} | {r['runtime']} | failed: {r.get('error')} | | | | | | | |")
            continue
        lines.append(
            f"| {r['model']} | {r['label']} {_shape(r['shape'])} | {r['runtime']} | {lat['min_ms']:.1f} | {lat['p50_ms']:.1f} | {lat['p90_ms']:.1f} "
            f"| {_rate(r.get('throughput_items_per_s'))} | {_num(r.get('gflops_per_call'), 1)} "
            f"| {_num(r.get('achieved_gflops_per_s'), 1)} | {_pct(r.get('fraction_of_peak'))} | {_num(r.get('speedup_vs_torch'), 2, 'x')} |"
        )
    for runtime, why in (models.get("skipped_runtimes") or {}).items():
        lines.append(f"\n{runtime}: not measured ({why}).")
    if models.get("flops_unavailable"):
        lines.append(f"\nGFLOP columns empty: {models['flops_unavailable']}.")
    return lines


def _chain_table(chains: Sequence[Mapping[str, Any]] | None) -> list[str]:
    if not chains:
        return []
    lines = [
        "Both models back to back per call, host arrays in and out (the pipeline's pre- and post-processing excluded).",
        "",
        "| detector runtime | recognizer runtime | detector input | recognizer input | p50 ms | p90 ms | p99 ms |",
        "|---|---|---|---|---:|---:|---:|",
    ]
    for chain in chains:
        lat = chain.get("latency")
        head = (
            f"| {chain['runtime']} | {chain.get('recognizer_runtime', chain['runtime'])} | {_shape(chain['detector_shape'])} "
            f"| {chain['recognizer']} {_shape(chain['recognizer_shape'])} "
        )
        if lat:
            lines.append(head + f"| {lat['p50_ms']:.2f} | {lat['p90_ms']:.2f} | {lat['p99_ms']:.2f} |")
        else:
            lines.append(head + f"| failed: {chain.get('error')} | | |")
    return lines


def _pipeline_tables(pipeline: Mapping[str, Any] | None) -> list[str]:
    if not pipeline:
        return []
    if pipeline.get("skipped"):
        return [f"Not measured: {pipeline['skipped']}"]
    labels = pipeline.get("labels", [])
    if pipeline.get("shared_memory"):
        transport = "images handed over in Triton's system shared memory (each request copies its image into the client's region)"
    else:
        transport = "images sent in the requests" + (f" ({pipeline['transport_note']})" if pipeline.get("transport_note") else "")
    lines = [
        f"Closed loop against `{pipeline['model']}` at {pipeline['url']}, {pipeline['duration_s']:g} s per level "
        f"(requests already sent are waited for), images {', '.join(labels)} in turn; {transport}.",
        "",
        "| concurrency | requests | errors | req/s | p50 ms | p95 ms | p99 ms | " + " | ".join(f"{l} p50" for l in labels) + " |",
        "|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * len(labels),
    ]
    for level in pipeline["levels"]:
        lat = level.get("latency") or {}
        per = [f"{level['per_label'][l]['p50_ms']:.0f}" if l in level.get("per_label", {}) else "" for l in labels]
        lines.append(
            f"| {level['concurrency']} | {level['requests']} | {level['errors']} | {level['throughput_per_s']:.2f} "
            f"| {_num(lat.get('p50_ms'), 0)} | {_num(lat.get('p95_ms'), 0)} | {_num(lat.get('p99_ms'), 0)} | " + " | ".join(per) + " |"
        )
    gpu_rows = [(level["concurrency"], g) for level in pipeline["levels"] for g in level.get("gpus", [])]
    if gpu_rows:
        lines += [
            "",
            "GPU during each level (NVML, sampled every 0.1 s): utilisation = share of time a kernel ran.",
            "",
            "| concurrency | GPU | mean util % | max util % | peak memory MiB |",
            "|---:|---|---:|---:|---:|",
        ]
        lines += [
            f"| {n} | {g['index']} {g['name']} | {g['utilization_mean_pct']:.1f} | {g['utilization_max_pct']:.0f} "
            f"| {g['memory_used_max_mib']} |"
            for n, g in gpu_rows
        ]
    lines += [
        "",
        "Triton's statistics per model (ms per request; the pipeline's compute includes its BLS calls):",
        "",
        "| concurrency | model | requests | avg batch | queue ms | compute in ms | compute infer ms | compute out ms |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for level in pipeline["levels"]:
        for m in level.get("server", []):
            batch = m["requests"] / m["executions"] if m["executions"] else 0.0
            lines.append(
                f"| {level['concurrency']} | {m['model']} | {m['requests']} | {batch:.2f} | {m['queue_ms']:.1f} "
                f"| {m['compute_input_ms']:.1f} | {m['compute_infer_ms']:.1f} | {m['compute_output_ms']:.1f} |"
            )
    lines += _stage_tables(pipeline)
    errors = [e for level in pipeline["levels"] for e in level.get("error_samples", [])]
    if errors:
        lines += ["", "Errors seen: " + "; ".join(dict.fromkeys(errors))]
    return lines


def _stage_tables(pipeline: Mapping[str, Any]) -> list[str]:
    """Where the pipeline model's time went (its stage counters): each image alone, then each level."""
    if pipeline.get("stages_note"):
        return ["", f"Pipeline stages not measured: {pipeline['stages_note']}."]
    header = " | ".join(SERVED_STAGES)

    def cells(stages: Mapping[str, float]) -> str:
        cpu = sum(stages.get(f"{stage}_cpu", 0.0) for stage in SERVED_STAGES)
        return " | ".join(_num(stages.get(stage), 1) for stage in SERVED_STAGES) + f" | {cpu:.1f}"

    lines = []
    images = pipeline.get("images") or []
    if images:
        lines += [
            "",
            "Inside the `pipeline` model, each image sent alone (ms per request, means; outside = client - the "
            "pipeline's Triton compute in + infer + out: transfer and gRPC; detector and recognizer: the BLS calls "
            "as the pipeline waits for them; thread CPU: the pipeline thread's CPU time over all stages):",
            "",
            f"| image | requests | client | pipeline compute | outside | {header} | thread CPU |",
            "|---|---:|---:|---:|---:|" + "---:|" * (len(SERVED_STAGES) + 1),
        ]
        for image in images:
            own = next((m for m in image["server"] if m["model"] == pipeline["model"]), None)
            client = image["latency"]["mean_ms"]
            compute = own["compute_input_ms"] + own["compute_infer_ms"] + own["compute_output_ms"] if own else None
            outside = client - compute if compute is not None else None
            lines.append(f"| {image['label']} | {image['latency']['count']} | {client:.1f} | {_num(compute, 1)} "
                         f"| {_num(outside, 1)} | {cells(image['stages'])} |")
    levels = [level for level in pipeline["levels"] if level.get("stages")]
    if levels:
        lines += [
            "",
            "Inside the `pipeline` model at each level (ms per request, means over the level's requests):",
            "",
            f"| concurrency | {header} | thread CPU | sum |",
            "|---:|" + "---:|" * (len(SERVED_STAGES) + 2),
        ]
        for level in levels:
            stages = level["stages"]
            lines.append(f"| {level['concurrency']} | {cells(stages)} | {sum(stages.get(s, 0.0) for s in SERVED_STAGES):.1f} |")
    return lines


def _peer_tables(result: Mapping[str, Any]) -> list[str]:
    """Latency per image (ours = served p50 at concurrency 1) and words read per set, per peer."""
    peers = result.get("peers") or {}
    lines = [f"{name} not run: {p['skipped']}" for name, p in peers.items() if p and p.get("skipped")]
    timed = {name: p for name, p in peers.items() if p and p.get("latency")}
    ours = _served_p50_by_label(result)
    if timed:
        labels = list(next(iter(timed.values()))["latency"])
        lines += [
            "In this process, after " + ", ".join(f"{n} {p['versions']}" for n, p in timed.items())
            + "; p50 ms of the timed runs, same run as the served pipeline (ours, concurrency 1).",
            "",
            "| image | ours p50 ms | " + " | ".join(f"{n} p50 ms | {n} / ours" for n in timed) + " |",
            "|---|---:|" + "---:|---:|" * len(timed),
        ]
        for label in labels:
            mine = ours.get(label)
            cells = []
            for p in timed.values():
                theirs = p["latency"].get(label, {}).get("p50_ms")
                cells += [_num(theirs, 0), f"{theirs / mine:.2f}x" if theirs and mine else ""]
            lines.append(f"| {label} | {_num(mine, 0)} | " + " | ".join(cells) + " |")
        lines.append("")
    sets = result.get("accuracy_sets") or {}
    scenes = result.get("accuracy") or {}
    if sets:
        lines += ["Words read per set (IoU >= 0.5, exact text):", "", "| set | system | hits / gt | word accuracy | det P | det R |",
                  "|---|---|---:|---:|---:|---:|"]
        for set_name, systems in sets.items():
            for system, s in systems.items():
                if s:
                    lines.append(f"| {set_name} | {system} | {s['hits']} / {s['total_gt']} | {_pct(s['word_accuracy'])} "
                                 f"| {_pct(s['det_precision'])} | {_pct(s['det_recall'])} |")
        if scenes.get("ours"):
            s = scenes["ours"]
            lines.append(f"| {Path(str(scenes.get('scenes', 'scenes'))).name} | ours | {s['hits']} / {s['total_gt']} "
                         f"| {_pct(s['word_accuracy'])} | {_pct(s['det_precision'])} | {_pct(s['det_recall'])} |")
    return lines


def _easyocr_tables(result: Mapping[str, Any]) -> list[str]:
    easy = result.get("easyocr") or {}
    acc = result.get("accuracy") or {}
    lines = []
    if easy.get("skipped"):
        lines += [f"EasyOCR not run: {easy['skipped']}", ""]
    ours = _served_p50_by_label(result)
    if easy.get("latency"):
        lines += [
            f"EasyOCR {easy.get('versions', {}).get('easyocr', '')} `readtext(path)` on the CPU "
            f"({easy.get('versions', {}).get('torch_threads', '?')} torch threads), {easy.get('runs')} timed runs after "
            f"{easy.get('warmup')} warm-up; ours = served pipeline p50 at concurrency 1, same run.",
            "",
            "| image | ours p50 ms | EasyOCR p50 ms | EasyOCR / ours |",
            "|---|---:|---:|---:|",
        ]
        for label, stats in easy["latency"].items():
            mine = ours.get(label)
            ratio = f"{stats['p50_ms'] / mine:.2f}x" if mine else ""
            lines.append(f"| {label} | {_num(mine, 0)} | {stats['p50_ms']:.0f} | {ratio} |")
        lines.append("")
    rows = [(name, acc.get(key)) for name, key in (("ours (served pipeline)", "ours"), ("EasyOCR", "easyocr")) if acc.get(key)]
    if rows:
        lines += [
            f"Word accuracy on {acc.get('scenes', 'the scene set')} (IoU >= 0.5, exact text):",
            "",
            "| system | word accuracy | case-insensitive | det recall | det precision | matched CER | hits / gt |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for name, s in rows:
            lines.append(
                f"| {name} | {_pct(s['word_accuracy'])} | {_pct(s['ci_word_accuracy'])} | {_pct(s['det_recall'])} "
                f"| {_pct(s['det_precision'])} | {_pct(s['matched_cer'])} | {s['hits']} / {s['total_gt']} |"
            )
    return lines


def _soak_table(soak: Mapping[str, Any] | None) -> list[str]:
    if not soak:
        return []
    lines = [
        f"{soak['seconds']:.0f} s at concurrency {soak['concurrency']} against {soak['url']}: {soak['requests']} requests, "
        f"{soak['errors']} errors; latency drift (last / first window p50) {_num(soak.get('latency_drift'), 2, 'x')}; "
        f"RSS growth {_num(soak.get('rss_growth_mib'), 1, ' MiB')} ({soak['rss_note']}).",
        "",
        "| window start s | requests | errors | p50 ms | p95 ms | RSS MiB |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for w in soak["windows"]:
        lat = w.get("latency") or {}
        lines.append(
            f"| {w['start_s']:.0f} | {w['requests']} | {w['errors']} | {_num(lat.get('p50_ms'), 0)} "
            f"| {_num(lat.get('p95_ms'), 0)} | {_num(w.get('rss_mib'), 1)} |"
        )
    if soak.get("error_samples"):
        lines += ["", "Errors seen: " + "; ".join(soak["error_samples"])]
    return lines


def _target_lines(checks: Iterable[Mapping[str, Any]]) -> list[str]:
    out = []
    for check in checks:
        measured = ", ".join(f"{k} {_fmt(v)}" for k, v in check["measured"].items())
        out.append(f"- {verdict(check)}: {check['target']} — {measured}")
    return out


# -- plots ------------------------------------------------------------------------------------


def write_plots(result: Mapping[str, Any], out: Path) -> dict[str, Path]:
    """The plots this result has data for (none without matplotlib: the report says so)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return {}
    written = {}
    for name, draw in (
        ("latency_vs_concurrency.png", _plot_concurrency),
        ("server_breakdown.png", _plot_breakdown),
        ("runtime_comparison.png", _plot_runtimes),
        ("pipeline_vs_easyocr.png", _plot_easyocr),
    ):
        fig = draw(plt, result)
        if fig is None:
            continue
        fig.tight_layout()
        with atomic_path(out / name) as tmp:
            fig.savefig(tmp, format="png", dpi=110)
        plt.close(fig)
        written[name] = out / name
    return written


def _plot_concurrency(plt: Any, result: Mapping[str, Any]):
    pipeline = result.get("pipeline") or {}
    levels = [lv for lv in pipeline.get("levels", []) if lv.get("latency")]
    if not levels:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.2))
    xs = [lv["concurrency"] for lv in levels]
    for key, style in (("p50_ms", "o-"), ("p95_ms", "s--"), ("p99_ms", "^:")):
        ax.plot(xs, [lv["latency"][key] for lv in levels], style, label=key.replace("_ms", ""))
    ax.set_xscale("log", base=2)
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.set_xlabel("concurrency (requests in flight)")
    ax.set_ylabel("latency (ms)")
    twin = ax.twinx()
    twin.plot(xs, [lv["throughput_per_s"] for lv in levels], "k.-", alpha=0.5, label="throughput")
    twin.set_ylabel("throughput (requests/s)")
    ax.legend(loc="upper left")
    twin.legend(loc="lower right")
    ax.set_title(f"{pipeline.get('model', 'pipeline')}: latency vs concurrency")
    return fig


def _plot_breakdown(plt: Any, result: Mapping[str, Any]):
    levels = [lv for lv in (result.get("pipeline") or {}).get("levels", []) if lv.get("server")]
    if not levels:
        return None
    models = sorted({m["model"] for lv in levels for m in lv["server"]})
    parts = ("queue_ms", "compute_input_ms", "compute_infer_ms", "compute_output_ms")
    fig, axes = plt.subplots(1, len(models), figsize=(3.6 * len(models), 4), squeeze=False)
    for ax, model in zip(axes[0], models):
        rows = [(lv["concurrency"], next((m for m in lv["server"] if m["model"] == model), None)) for lv in levels]
        rows = [(c, m) for c, m in rows if m]
        bottom = [0.0] * len(rows)
        labels = [str(c) for c, _ in rows]
        for part in parts:
            values = [m[part] for _, m in rows]
            ax.bar(labels, values, bottom=bottom, label=part.replace("_ms", "").replace("_", " "))
            bottom = [b + v for b, v in zip(bottom, values)]
        ax.set_title(model)
        ax.set_xlabel("concurrency")
    axes[0][0].set_ylabel("ms per request")
    axes[0][-1].legend(fontsize="small")
    fig.suptitle("Per-model time in Triton: queue vs compute")
    return fig


def _plot_runtimes(plt: Any, result: Mapping[str, Any]):
    rows = [r for r in (result.get("models") or {}).get("results", []) if r.get("latency")]
    if not rows:
        return None
    groups = list(dict.fromkeys(f"{r['model']}\n{r['label']}" for r in rows))
    runtimes = list(dict.fromkeys(r["runtime"] for r in rows))
    p50 = {(f"{r['model']}\n{r['label']}", r["runtime"]): r["latency"]["p50_ms"] for r in rows}
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(groups)), 4.5))
    width = 0.8 / len(runtimes)
    for k, runtime in enumerate(runtimes):
        xs = [i + k * width for i, g in enumerate(groups) if (g, runtime) in p50]
        ax.bar(xs, [p50[(g, runtime)] for g in groups if (g, runtime) in p50], width, label=runtime)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(groups))], groups, fontsize="small")
    ax.set_yscale("log")
    ax.set_ylabel("p50 latency per call (ms, log)")
    ax.legend()
    ax.set_title("Runtime comparison, model level")
    return fig


def _plot_easyocr(plt: Any, result: Mapping[str, Any]):
    easy = {k: v["p50_ms"] for k, v in (result.get("easyocr") or {}).get("latency", {}).items()}
    ours = _served_p50_by_label(result)
    labels = [k for k in easy if k in ours]
    if not labels:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    xs = range(len(labels))
    ax.bar([x - 0.2 for x in xs], [ours[k] for k in labels], 0.4, label="served pipeline (c=1)")
    ax.bar([x + 0.2 for x in xs], [easy[k] for k in labels], 0.4, label="EasyOCR readtext")
    ax.set_xticks(list(xs), labels)
    ax.set_yscale("log")
    ax.set_ylabel("p50 latency (ms, log)")
    ax.legend()
    ax.set_title("Same images, same run")
    return fig


# -- helpers ----------------------------------------------------------------------------------


def _served_p50_by_label(result: Mapping[str, Any]) -> dict[str, float]:
    """Per-image p50 of the served pipeline at concurrency 1 (the latency a lone user sees)."""
    levels = (result.get("pipeline") or {}).get("levels", [])
    first = next((lv for lv in levels if lv["concurrency"] == 1), None)
    return {k: v["p50_ms"] for k, v in (first or {}).get("per_label", {}).items()}


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.-]+", "-", text.lower()).strip("-")


def _shape(shape: Sequence[int]) -> str:
    return "x".join(str(d) for d in shape)


def _num(value: float | None, digits: int, suffix: str = "") -> str:
    return "" if value is None else f"{value:.{digits}f}{suffix}"


def _rate(value: float | None) -> str:
    return "" if value is None else f"{value:.{1 if value >= 10 else 2}f}"


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f}%"


def _deployment(deployment: Mapping[str, Any] | None) -> str | None:
    if not deployment:
        return None
    parts = [f"{deployment.get('variant', 'served')} on {deployment.get('device', '?')}" if deployment.get("variant") else None,
             deployment.get("recognizer"),
             ", ".join(f"{k} x{v}{_runtime(deployment, k)}" for k, v in (deployment.get("instances") or {}).items()) or None,
             f"canvas {deployment['pipeline']['canvas_size']}" if deployment.get("pipeline") else None,
             deployment.get("repo"),
             f"{deployment.get('url')}" + ("" if deployment.get("started_here") else " (running server)")]
    return "; ".join(p for p in parts if p)


def _runtime(deployment: Mapping[str, Any], model: str) -> str:
    """" on openvino (bf16)" where a model left the variant's runtime (older manifests: nothing)."""
    backend = (deployment.get("backends") or {}).get(model)
    variant = deployment.get("variant")
    if backend is None or backend == ("tensorrt" if variant == "tensorrt_plan" else variant):
        return ""
    floats = (deployment.get("float_precisions") or {}).get(model)
    return f" on {backend}" + (f" ({floats})" if floats else "")


def _load(load: Mapping[str, Any] | None) -> str | None:
    if not load:
        return None
    return ", ".join(f"{k} {' / '.join(f'{x:.2f}' for x in v)}" for k, v in load.items() if v)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items()) + "}"
    return json.dumps(value) if isinstance(value, (list, tuple)) else str(value)

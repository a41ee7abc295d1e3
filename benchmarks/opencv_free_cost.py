"""What taking OpenCV out of the core would cost, measured on the served path's two largest calls.

They are done with what the core install keeps (numpy, Pillow, ONNX Runtime), against OpenCV on
the same image in one run.

Usage: python benchmarks/opencv_free_cost.py IMAGE... [--repeat 7] [--json OUT]

Issue 20's 500 MB target for the core install is reachable only without OpenCV (136 MiB of the
611). This measures the price on the CPU path, per image:
- the detector input's resize (`detector_input`, the bit-identical-to-EasyOCR step): OpenCV's
  INTER_LINEAR, numpy written to give OpenCV's fixed-point bits, Pillow's BILINEAR, and ONNX
  Runtime's Resize (linear, half-pixel: OpenCV's sampling positions) on the uint8 NHWC image;
- CRAFT's word components (`find_words`' connectedComponentsWithStats on the thresholded score
  maps of the real int8 CRAFT export): OpenCV, and numpy over row runs (labels in OpenCV's order).
Each is the median wall time over --repeat calls on an idle machine (OpenCV's resize runs on
its own threads), beside the in-process `read` of the same image by the pipeline `ocr` builds for
this host (its plan's detector precision and canvas, ONNX Runtime), and checked for equal output.
This file is the measurement only: nothing in stdr_deploy uses these replacements.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
from PIL import Image

COEF_BITS = 11  # OpenCV's INTER_RESIZE_COEF_BITS: linear weights in 1/2048ths
ONE = 1 << COEF_BITS


def wall_ms(call: Callable[[], object], repeat: int) -> tuple[float, object]:
    """Median wall time of `call` in ms, and its last result."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = call()
        times.append(1e3 * (time.perf_counter() - start))
    return statistics.median(times), result


def linear_taps(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """First source index, next source index and the first's fixed-point weight per output
    index, as OpenCV's resize computes them for INTER_LINEAR (float32 positions, clamped ends)."""
    scale = 1.0 / (dst / src)
    f = ((np.arange(dst) + 0.5) * scale - 0.5).astype(np.float32)
    s = np.floor(f).astype(np.int64)
    f = f - s.astype(np.float32)
    low, high = s < 0, s >= src - 1
    f[low | high] = 0.0
    s[low] = 0
    s[high] = src - 1
    w0 = np.rint((np.float32(1.0) - f) * np.float32(ONE)).astype(np.int32)
    return s, np.minimum(s + 1, src - 1), w0


def resize_numpy(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """uint8 HxWxC bilinear resize with OpenCV's fixed-point arithmetic: its bits when shrinking
    (enlarging, OpenCV calls Intel IPP, whose rounding this does not reproduce; nor its 2x area path)."""
    if (height, width) == image.shape[:2]:
        return image.copy()
    x0, x1, a0 = linear_taps(image.shape[1], width)
    y0, y1, b0 = linear_taps(image.shape[0], height)
    rows = np.unique(np.concatenate([y0, y1]))
    src = image[rows].astype(np.int32)
    horizontal = (src[:, x0] * a0[None, :, None] + src[:, x1] * (ONE - a0)[None, :, None]) >> 4
    at = np.searchsorted(rows, y0), np.searchsorted(rows, y1)
    top = (b0[:, None, None] * horizontal[at[0]]) >> 16
    bottom = ((ONE - b0)[:, None, None] * horizontal[at[1]]) >> 16
    return ((top + bottom + 2) >> 2).astype(np.uint8)


def resize_pillow(image: np.ndarray, width: int, height: int) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))


def ort_resizer() -> Callable[[np.ndarray, int, int], np.ndarray]:
    """A one-node ONNX Runtime session: uint8 [1, H, W, 3] -> Resize(linear, half_pixel) -> sizes."""
    import onnxruntime
    from onnx import TensorProto, helper

    node = helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], mode="linear",
                            coordinate_transformation_mode="half_pixel")
    graph = helper.make_graph([node], "resize", [
        helper.make_tensor_value_info("x", TensorProto.UINT8, [1, None, None, 3]),
        helper.make_tensor_value_info("sizes", TensorProto.INT64, [4]),
    ], [helper.make_tensor_value_info("y", TensorProto.UINT8, [1, None, None, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])

    def resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
        sizes = np.array([1, height, width, 3], dtype=np.int64)
        return session.run(None, {"x": image[None], "sizes": sizes})[0][0]
    return resize


def components_numpy(mask: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """4-connected components of a bool mask: (count, int32 labels, stats [x, y, w, h, area]),
    numbered as OpenCV numbers them (background 0, then by first pixel in raster order)."""
    height, width = mask.shape
    padded = np.zeros((height, width + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    change = np.diff(padded, axis=1)
    row_s, start = np.nonzero(change == 1)
    _, end = np.nonzero(change == -1)  # exclusive; both in raster order, pairwise
    runs = len(start)
    if runs == 0:
        return 1, np.zeros(mask.shape, np.int32), np.array([[0, 0, width, height, mask.size]], np.int32)
    # run b (row r + 1) touches run a (row r) where a ends after b starts and starts before b ends
    key = width + 1
    starts_key, ends_key = row_s * key + start, row_s * key + end
    upper = np.flatnonzero(row_s > 0)
    lo = np.searchsorted(ends_key, (row_s[upper] - 1) * key + start[upper], side="right")
    hi = np.searchsorted(starts_key, (row_s[upper] - 1) * key + end[upper], side="left")
    counts = np.maximum(hi - lo, 0)
    u = np.repeat(upper, counts)
    v = np.repeat(lo, counts) + (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts))
    label = np.arange(runs)
    while True:  # min-label propagation with pointer jumping
        low = np.minimum(label[u], label[v])
        before = label.copy()
        np.minimum.at(label, u, low)
        np.minimum.at(label, v, low)
        label = label[label]
        if np.array_equal(label, before):
            break
    roots, number = np.unique(label, return_inverse=True)  # roots are each component's first run
    count = len(roots) + 1
    number = number + 1
    lengths = end - start
    labels = np.zeros(height * width, dtype=np.int32)
    pixel = np.repeat(row_s * width + start, lengths) + (np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths))
    labels[pixel] = np.repeat(number, lengths)
    stats = np.zeros((count, 5), dtype=np.int64)
    x_min = np.full(count, width)
    y_min = np.full(count, height)
    x_max = np.full(count, -1)
    y_max = np.full(count, -1)
    np.minimum.at(x_min, number, start)
    np.maximum.at(x_max, number, end - 1)
    np.minimum.at(y_min, number, row_s)
    np.maximum.at(y_max, number, row_s)
    stats[1:, 0], stats[1:, 1] = x_min[1:], y_min[1:]
    stats[1:, 2], stats[1:, 3] = x_max[1:] - x_min[1:] + 1, y_max[1:] - y_min[1:] + 1
    stats[1:, 4] = np.bincount(number, weights=lengths, minlength=count)[1:]
    empty_rows, empty_cols = np.flatnonzero(~mask.all(axis=1)), np.flatnonzero(~mask.all(axis=0))
    if len(empty_rows):  # OpenCV's background row: the box of the unset pixels
        stats[0] = [empty_cols[0], empty_rows[0], empty_cols[-1] - empty_cols[0] + 1,
                    empty_rows[-1] - empty_rows[0] + 1, mask.size - lengths.sum()]
    return count, labels.reshape(height, width), stats.astype(np.int32)


def measure(path: Path, repeat: int, pipeline, resize_ort) -> dict:
    from stdr_deploy.ocr import read_image
    from stdr_deploy.ocr.detector_input import detector_input, resized_size

    image = read_image(path)
    settings = pipeline.settings
    th, tw = resized_size(*image.shape[:2], settings.canvas_size, settings.mag_ratio)
    row: dict = {"image": path.name, "size": f"{image.shape[1]}x{image.shape[0]}", "resized": f"{tw}x{th}"}
    reference = cv2.resize(image, (tw, th), interpolation=cv2.INTER_LINEAR)
    for name, call in (("opencv", lambda: cv2.resize(image, (tw, th), interpolation=cv2.INTER_LINEAR)),
                       ("numpy", lambda: resize_numpy(image, tw, th)),
                       ("pillow", lambda: resize_pillow(image, tw, th)),
                       ("onnxruntime", lambda: resize_ort(image, tw, th))):
        ms, out = wall_ms(call, repeat)
        diff = np.abs(out.astype(np.int16) - reference)
        row[f"resize_{name}_ms"] = round(ms, 2)
        row[f"resize_{name}_equal"] = bool(diff.max() == 0)
        row[f"resize_{name}_max_diff"] = int(diff.max())
        row[f"resize_{name}_pixels_differing"] = round(float((diff > 0).mean()), 4)

    tensor = detector_input(image, settings.canvas_size, settings.mag_ratio).tensor
    maps = pipeline.detector.infer({"input": tensor})["output"][0]
    mask = (maps[..., 0] > settings.low_text) | (maps[..., 1] > settings.link_threshold)
    row["score_map"] = f"{mask.shape[1]}x{mask.shape[0]}"
    ms_cv, (count, labels, stats, _) = wall_ms(
        lambda: cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=4), repeat)
    ms_np, (count_np, labels_np, stats_np) = wall_ms(lambda: components_numpy(mask), repeat)
    row.update(components=count - 1, components_opencv_ms=round(ms_cv, 2), components_numpy_ms=round(ms_np, 2),
               components_equal=bool(count == count_np and np.array_equal(labels, labels_np)
                                     and np.array_equal(stats, stats_np)))
    read_ms, _ = wall_ms(lambda: pipeline.read(image), max(3, repeat // 2))
    row["read_ms"] = round(read_ms, 1)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", type=Path)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from stdr_deploy.cli.ocr import host_pipeline

    pipeline = host_pipeline("onnxruntime", "craft", None, (), None, None)  # as `stdr-deploy ocr IMAGE` reads
    resize_ort = ort_resizer()
    rows = [measure(path, args.repeat, pipeline, resize_ort) for path in args.images]
    result = {"command": " ".join(sys.argv), "opencv": cv2.__version__, "numpy": np.__version__,
              "pillow": Image.__version__, "repeat": args.repeat, "canvas": pipeline.settings.canvas_size,
              "recognizer": pipeline.family.name, "rows": rows}
    text = json.dumps(result, indent=2)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

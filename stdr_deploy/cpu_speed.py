"""How fast the CPU models run, by CPU class: what sizes the CPU canvas and sends models to OpenVINO.

The int8 units tell the classes apart. With AMX tiles OpenVINO runs the int8 CRAFT 2.2x faster
than ONNX Runtime; with AVX-512 VNNI alone 1.6x against ONNX Runtime as CPU plans serve it (1.04x
against its default memory settings), and 3.7x slower than on the AMX Xeon. Each class's figures
come from one machine, 2 threads, each model alone in a process of its own; a CPU class measured
anew is one more `CpuSpeed` here. The AMX figures were taken with ORT's default session settings,
which ran CRAFT 1.5x faster than the served ones on the EPYC.
"""

from __future__ import annotations

from dataclasses import dataclass

AMX_FLAGS = ("amx_int8",)
# The int8 CRAFT against fp32 on scenes_A img01 at 2560x2048, ONNX Runtime, the 2-core AMX Xeon
# (benchmarks/results/cpu-xeon-2c-int8/): seconds. Plan reasons and help text quote it.
INT8_XEON_IMG01_S = {"fp32": 13.8, "int8": 5.7}


@dataclass(frozen=True)
class CpuSpeed:
    machine: str  # where it was measured, as plan reasons quote it
    craft_pixels_per_core_s: dict[str, float]  # CRAFT on ONNX Runtime, per precision
    openvino: dict[tuple[str, str], float]  # OpenVINO (float layers f32) over ONNX Runtime: the models sent there
    openvino_bf16: dict[tuple[str, str], float]  # bf16 float layers over f32, where no check set read fewer words


# The 2-core Intel Xeon with AMX (benchmarks/results/cpu-xeon-2c-openvino/ and its bf16/): the int8
# CRAFT on ONNX Runtime read img01 at 1600x1280 in 1.49 s, fp32 at 2560x2048 in 13.8 s; on
# OpenVINO 2026.4 the int8 CRAFT (its int8-openvino graph) img01 at canvas 1600 in 0.658 s against
# 1.433, the ppocr recognizer 8x3x48x320 in 38.9 ms against 99.5 (outputs within 4e-6); CRAFT's
# float layers in bf16 img03 at 1600 in 0.459 s against 0.607. crnn-en's LSTM ran slower on
# OpenVINO (40.7 against 37.9 ms) and is not listed; ppocr in bf16 read fewer words (phrases-202,
# scenes-101) and is not listed there.
AMX = CpuSpeed(
    machine="the 2-core AMX Xeon",
    craft_pixels_per_core_s={"int8": 1600 * 1280 / 1.49 / 2, "fp32": 2560 * 2048 / INT8_XEON_IMG01_S["fp32"] / 2},
    openvino={("craft", "int8"): 1.433 / 0.658, ("ppocr", "fp32"): 99.5 / 38.9},
    openvino_bf16={("craft", "int8"): 0.607 / 0.459},
)

# The 2-core AMD EPYC (Zen 4: AVX-512 VNNI and BF16, no AMX; benchmarks/results/cpu-epyc-zen4-2c-speed/),
# best of two rounds of benchmarks/cpu_model_speed.py, ONNX Runtime with the session settings CPU plans render (memory
# arena and pattern off): CRAFT at 1408x1152, int8 2.465 s on ONNX Runtime, 1.572 s on OpenVINO,
# 1.528 s with bf16 float layers; fp32 6.938 s on ONNX Runtime; ppocr 8x3x48x320 112.8 ms against
# 64.5 on OpenVINO. Served, CRAFT's call on img03 (1408x1056) took 1382 ms on OpenVINO (bf16) and
# 2373 ms on ONNX Runtime.
VNNI = CpuSpeed(
    machine="the 2-core AMD EPYC with AVX-512 VNNI and no AMX",
    craft_pixels_per_core_s={"int8": 1408 * 1152 / 2.465 / 2, "fp32": 1408 * 1152 / 6.938 / 2},
    openvino={("craft", "int8"): 2.465 / 1.572, ("ppocr", "fp32"): 112.8 / 64.5},
    openvino_bf16={("craft", "int8"): 1.572 / 1.528},
)


def cpu_speed(features: tuple[str, ...]) -> CpuSpeed:
    """The measured class this CPU belongs to: AMX hosts run at the Xeon's figures; any other CPU
    at the EPYC's, the slower class (a CPU without VNNI is slower still: the planner derives its
    int8 rate from fp32, see AVX2_INT8_SPEEDUP)."""
    return AMX if any(flag in features for flag in AMX_FLAGS) else VNNI

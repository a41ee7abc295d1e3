"""Our own CRAFT, CRNN and PARSeq reproduce the official networks' outputs (shared/oracles)."""

from __future__ import annotations

import hashlib
import json

import cv2
import numpy as np
import pytest
import torch

from stdr_deploy.errors import UserInputError
from stdr_deploy.models import MODEL_SPECS, build_model, get_spec, load_model
from stdr_deploy.ocr import read_image
from stdr_deploy.ocr.detector_input import MEAN_255, STD_255, detector_input, normalised

# Families with an oracle parity test below; a new family must add one. The ONNX-native
# PP-OCRv4 families are checked against RapidOCR itself in test_ppocr.py.
ORACLE_TESTED = {"craft", "crnn-en", "parseq", "parseq-tiny", "ppocr", "ppocr-det"}
TORCH_FAMILIES = sorted(name for name, spec in MODEL_SPECS.items() if not spec.onnx_native)


def state_dict_shapes(model: torch.nn.Module) -> list[tuple[str, list[int]]]:
    return [(key, list(value.shape)) for key, value in model.state_dict().items()]


def max_abs(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape
    return float(np.abs(a - b).max())


# ---------------------------------------------------------------- specs


def test_every_family_has_an_oracle_test():
    assert set(MODEL_SPECS) == ORACLE_TESTED


def test_unknown_model_lists_the_known_names():
    with pytest.raises(UserInputError) as info:
        get_spec("resnet")
    assert all(name in info.value.hint for name in MODEL_SPECS)


def test_unknown_option_is_a_user_error():
    with pytest.raises(UserInputError, match="with_features"):
        build_model("crnn-en", with_features=True)


@pytest.mark.parametrize("name", TORCH_FAMILIES)
def test_spec_matches_the_network(name):
    """Parameter count, example input and output shapes agree with what the network does."""
    spec = get_spec(name)
    model = build_model(name)
    floats = sum(v.numel() for v in model.state_dict().values() if v.is_floating_point())
    assert floats == spec.params

    x = spec.example_input(batch=2, seed=3)
    assert x.dtype == np.dtype(spec.input.dtype) and x.shape[0] == 2
    assert np.array_equal(x, spec.example_input(batch=2, seed=3))
    assert not np.array_equal(x, spec.example_input(batch=2, seed=4))
    if spec.input.dtype == "float32":  # normalised pixels (craft takes uint8 pixels, any value)
        mean, std = np.asarray(spec.preprocess["mean"]), np.asarray(spec.preprocess["std"])
        assert x.min() >= (-mean / std).min() - 1e-6 and x.max() <= ((1 - mean) / std).max() + 1e-6

    small = {"craft": (64, 96), "crnn-en": (None, 128)}.get(name, (None, None))
    x = spec.example_input(2, *small)
    with torch.no_grad():
        y = model(torch.from_numpy(x))
    sizes = {"batch": 2, "half_height": x.shape[2] // 2, "half_width": x.shape[3] // 2, "steps": x.shape[3] // 4 - 1}
    (out,) = spec.outputs
    assert tuple(y.shape) == tuple(sizes[d] if isinstance(d, str) else d for d in out.dims)

    for shape in spec.validation_shapes:
        assert spec.input_shape(shape[0], shape[2], shape[3]) == shape
    facts = json.loads(json.dumps(spec.to_dict()))
    assert facts["name"] == name and facts["inputs"][0]["dims"][0] == "batch"


def test_fixed_dims_cannot_be_overridden():
    with pytest.raises(UserInputError, match="fixed"):
        get_spec("parseq").example_input(1, height=64)
    with pytest.raises(UserInputError, match="multiples of 32"):
        get_spec("craft").example_input(1, 100, 96)


# ---------------------------------------------------------------- CRAFT


@pytest.fixture(scope="module")
def craft_with_features():
    return load_model("craft", with_features=True)


def test_craft_keys_are_the_release_keys(shared, craft_with_features):
    keys = json.loads((shared / "oracles/craft/keys_craft.json").read_text())["keys"]
    assert state_dict_shapes(craft_with_features) == [(k["name"].removeprefix("module."), k["shape"]) for k in keys]


def craft_input_img02(shared) -> np.ndarray:
    """EasyOCR's exact detector input for img02 (512x413: no resize, zero-pad to 512x416)."""
    rgb = cv2.cvtColor(cv2.imread(str(shared / "testdata/scenes_A/img02.png")), cv2.COLOR_BGR2RGB)
    canvas = np.zeros((512, 416, 3), np.float32)
    canvas[: rgb.shape[0], : rgb.shape[1]] = rgb
    mean = (np.array([0.485, 0.456, 0.406]) * 255).astype(np.float32)
    std = (np.array([0.229, 0.224, 0.225]) * 255).astype(np.float32)
    return np.ascontiguousarray(((canvas - mean) / std).transpose(2, 0, 1)[None])


def test_craft_matches_easyocr_on_img02(shared, craft_with_features):
    oracle = np.load(shared / "oracles/craft/craft_A_img02_512x413.npz")
    summary = json.loads((shared / "oracles/craft/craft_oracle_summary.json").read_text())["images"]["img02.png"]
    x = craft_input_img02(shared)
    assert hashlib.sha256(x.tobytes()).hexdigest() == summary["input_sha256_float32"]
    assert np.array_equal(x.astype(np.float16), oracle["input_fp16"])

    with torch.no_grad():
        y, feature = (t.numpy() for t in craft_with_features(torch.from_numpy(x)))
    # The oracle maps are stored as float16: allow its rounding (half an ulp) plus 1e-4.
    y_ref = oracle["y_fp16"].astype(np.float32)
    assert np.all(np.abs(y - y_ref) <= np.abs(y_ref) * 2**-11 + 1e-4)  # measured: 9.3e-8 beyond fp16
    assert max_abs(y, y_ref) <= 5e-4
    cy, cx = oracle["feature_crop_yx"]
    crop, crop_ref = feature[:, :, cy : cy + 64, cx : cx + 64], oracle["feature_crop"].astype(np.float32)
    assert np.all(np.abs(crop - crop_ref) <= np.abs(crop_ref) * 2**-11 + 1e-4)  # measured: 1.5e-6 beyond fp16
    assert np.allclose(feature.mean(axis=(0, 2, 3)), oracle["feature_channel_mean"], atol=1e-5)


def test_craft_normalises_uint8_pixels_as_easyocr_does(shared, craft_with_features):
    """The uint8 input the export traces: normalised inside the network with EasyOCR's float32
    steps, so the maps are those of EasyOCR's float tensor for the same pixels."""
    pixels = detector_input(read_image(shared / "testdata/scenes_A/img02.png"), 2560, 1.0).tensor
    assert pixels.dtype == np.uint8
    with torch.no_grad():
        from_pixels = craft_with_features(torch.from_numpy(pixels))[0]
        from_floats = craft_with_features(torch.from_numpy(craft_input_img02(shared)))[0]
    assert torch.equal(from_pixels, from_floats)
    mean, std = get_spec("craft").pixel_normalisation()
    assert np.array_equal(normalised(pixels), craft_input_img02(shared))
    assert np.array_equal(mean, MEAN_255) and np.array_equal(std, STD_255)  # one recipe, two places


def test_craft_without_features_returns_the_map_only(craft_with_features):
    x = torch.from_numpy(get_spec("craft").example_input(1, 64, 64))
    plain = build_model("craft")
    plain.load_state_dict(craft_with_features.state_dict())
    with torch.no_grad():
        y = plain(x)
        y_and_feature = craft_with_features(x)
    assert isinstance(y, torch.Tensor) and y.shape == (1, 32, 32, 2)
    assert torch.equal(y, y_and_feature[0]) and y_and_feature[1].shape == (1, 32, 32, 32)


# ---------------------------------------------------------------- CRNN (EasyOCR english_g2)


def greedy_ctc(logits: np.ndarray, charset: str) -> str:
    ids = logits.argmax(-1)
    kept = [i for n, i in enumerate(ids) if i != 0 and (n == 0 or i != ids[n - 1])]
    return "".join(charset[i - 1] for i in kept)


def test_crnn_matches_easyocr_on_crops(shared):
    spec = get_spec("crnn-en")
    model = load_model("crnn-en")
    keys = json.loads((shared / "oracles/easyocr/keys_english_g2.json").read_text())["keys"]
    assert state_dict_shapes(model) == [(k["name"].removeprefix("module."), k["shape"]) for k in keys]

    oracle = np.load(shared / "oracles/easyocr/english_g2_crops_A.npz")
    for crop, expected in zip(oracle["crop_names"], oracle["greedy_ctc"]):
        stem = str(crop).removesuffix(".png")
        x = oracle[f"{stem}_input"]
        with torch.no_grad():
            logits = model(torch.from_numpy(x)).numpy()
        assert logits.shape == (1, x.shape[3] // 4 - 1, spec.num_classes)
        # measured: <= 9.2e-5 (crop03); the reference itself moves ~1e-4 with oneDNN on/off
        assert max_abs(logits, oracle[f"{stem}_logits"]) <= spec.atol, stem
        assert greedy_ctc(logits[0], spec.charset) == str(expected)


# ---------------------------------------------------------------- PARSeq

MODES = {"nar": (False, 0), "ar": (True, 1), "ar_norefine": (True, 0)}


@pytest.mark.parametrize("eos_bias", [False, True], ids=["plain", "eosbias"])
@pytest.mark.parametrize("mode", sorted(MODES))
def test_parseq_tiny_matches_official(shared, mode, eos_bias):
    decode_ar, refine_iters = MODES[mode]
    folder = shared / "oracles/parseq"
    model = load_model("parseq-tiny", folder / "parseq_tiny_random_A.pt", decode_ar=decode_ar, refine_iters=refine_iters)
    if eos_bias:
        with torch.no_grad():
            model.head.bias[0] += 1.0
    expected = np.load(folder / f"logits_A_{'eosbias_' if eos_bias else ''}{mode}.npy")
    with torch.no_grad():
        logits = model(torch.from_numpy(np.load(folder / "inputs_A.npy"))).numpy()
    assert logits.shape == expected.shape  # eosbias ar_norefine stops early: [3, 17, 95]
    assert max_abs(logits, expected) <= 1e-4  # measured: <= 7.2e-7
    assert np.array_equal(logits.argmax(-1), expected.argmax(-1))


def test_parseq_base_has_the_release_layout(shared):
    model = build_model("parseq")
    listing = json.loads((shared / "oracles/parseq/keys_parseq.json").read_text())
    assert state_dict_shapes(model) == [(key, shape) for key, shape in listing]
    assert sum(p.numel() for p in model.parameters()) == 23_832_671 == get_spec("parseq").params

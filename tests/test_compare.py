"""compare_outputs: the per-output verdict every conversion check relies on."""

from __future__ import annotations

import json

import numpy as np

from stdr_deploy.compare import compare_outputs


def test_within_atol_passes_and_reports_errors():
    expected = {"output": np.array([1.0, -2.0, 4.0], np.float32)}
    got = {"output": np.array([1.00005, -2.0, 3.99992], np.float32)}
    result = compare_outputs(expected, got, atol=1e-4)
    assert result
    (out,) = result.outputs
    assert abs(out.max_abs - 8e-5) < 1e-6
    assert abs(out.max_rel - 5e-5) < 1e-6
    assert result.max_abs == out.max_abs
    assert result.describe().startswith("output: ok shape [3] max_abs=")


def test_beyond_atol_fails_unless_rtol_covers_it():
    expected = {"output": np.array([100.0, 0.0], np.float32)}
    got = {"output": np.array([100.01, 0.0], np.float32)}
    assert not compare_outputs(expected, got, atol=1e-4)
    assert compare_outputs(expected, got, atol=1e-4, rtol=1e-3)
    assert "FAIL" in compare_outputs(expected, got, atol=1e-4).describe()


def test_shape_mismatch_is_always_a_failure():
    expected = {"output": np.zeros((1, 26, 95), np.float32)}
    got = {"output": np.zeros((1, 25, 95), np.float32)}
    result = compare_outputs(expected, got, atol=1e9, rtol=1e9)
    assert not result
    assert result.outputs[0].max_abs is None
    assert result.max_abs == float("inf")
    assert "shape [1, 25, 95] != expected [1, 26, 95]" in result.describe()


def test_missing_and_extra_outputs_fail_by_name():
    expected = {"output": np.zeros(2), "output1": np.zeros(2)}
    got = {"output": np.zeros(2), "logits": np.zeros(2)}
    result = compare_outputs(expected, got, atol=1.0)
    assert not result
    assert [o.name for o in result.outputs] == ["output", "output1", "logits"]
    assert [o.passed for o in result.outputs] == [True, False, False]
    lines = result.describe().splitlines()
    assert lines[1].startswith("output1: FAIL missing") and lines[2].startswith("logits: FAIL unexpected")


def test_nan_never_passes():
    expected = {"output": np.array([0.0, 1.0])}
    assert not compare_outputs(expected, {"output": np.array([0.0, np.nan])}, atol=1e9)
    assert not compare_outputs({"output": np.array([np.nan])}, {"output": np.array([np.nan])}, atol=1e9)


def test_to_dict_is_json_ready():
    result = compare_outputs({"output": np.ones((2, 3))}, {"output": np.ones((2, 3))}, atol=1e-4)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["passed"] is True
    assert data["outputs"]["output"]["got_shape"] == [2, 3]
    assert data["outputs"]["output"]["max_abs"] == 0.0

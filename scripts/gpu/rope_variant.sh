#!/usr/bin/env bash
# Builds an sm_90 cubin of the kernels from a hip/ directory (an edited copy, to compare a
# change side by side with rope_probe.py on the CUDA machine) with the shipped build's flags
# (build/cuda.rs, build/nvptx-flags and -archs: clang 19 to PTX, ptxas from CUDA 13), and prints the q/k
# norm + RoPE kernels' registers and spills.
#   bash scripts/gpu/rope_variant.sh HIP_DIR OUT.cubin
# Needs clang-19 and ptxas on PATH (eval "$(bash scripts/setup-cuda13.sh)").
set -euo pipefail
SRC=${1:?hip directory}
OUT=${2:?output cubin}
PTX=$(mktemp --suffix=.ptx)
trap 'rm -f "$PTX"' EXIT
BUILD=$(dirname "$0")/../../build
FLAGS=$(grep -v '^#' "$BUILD/nvptx-flags" | tr '\n' ' ')
ISA=$(grep -v '^#' "$BUILD/nvptx-archs" | awk '$1 == 90 { print $2 }')
clang-19 $FLAGS --cuda-gpu-arch=sm_90 --cuda-feature="${ISA:?no sm_90 in build/nvptx-archs}" -o "$PTX" "$SRC/rms_norm.hip"
# The cubin as build/cuda.rs makes it (ptxas -v changes a note in its output: the register
# report comes from a second run).
ptxas -arch=sm_90 -O3 -o "$OUT" "$PTX"
ptxas -arch=sm_90 -O3 -v -o /dev/null "$PTX" 2>&1 | grep -A3 "entry function 'rms_norm_rope" |
  grep -E "entry|spill|Used" | paste - - - | sed -E 's/ptxas info +: //g'

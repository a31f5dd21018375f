#!/usr/bin/env bash
# Portability check of the kernels in hip/, needing no CUDA or ROCm install (CI runs it):
#  1. nothing vendor-specific outside hip/portable.h;
#  2. hip/ compiles to PTX with clang (-x cuda -nocudainc -nocudalib) for sm_70, sm_80, sm_90;
#  3. hip/ compiles for AMD gfx90a (wave64) and gfx1100 (wave32) with -nogpulib -nogpuinc,
#     when the clang has the AMDGPU target.
# With ptxas on PATH it also prints the sm_90 register/spill report.
# Env: CANDLE_RMSNORM_CLANG (the clang for both GPU builds, as in build/cuda.rs and build/hsaco.rs),
#      else CLANG, else clang-19, else clang on PATH.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CLANG=${CANDLE_RMSNORM_CLANG:-${CLANG:-$(command -v clang-19 || command -v clang)}}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
SRC=$ROOT/hip/rms_norm.hip

echo "== vendor-specific code outside hip/portable.h"
if grep -nE '__nvvm_|__builtin_amdgcn|__NVPTX__|__AMDGCN__|__CUDA_ARCH__|threadIdx|__shfl|__syncthreads' \
    $(ls "$ROOT"/hip/* | grep -v portable.h); then
  echo "FAIL: the lines above belong in hip/portable.h"; exit 1
fi
echo ok

# The shipped build's flags (build/nvptx-flags, as build/cuda.rs reads them).
FLAGS=$(grep -v '^#' "$ROOT/build/nvptx-flags" | tr '\n' ' ')
# The PTX ISA of a shipped architecture (build/nvptx-archs); sm_70, which ships nothing, the
# first one's.
isa_of() {
  grep -v '^#' "$ROOT/build/nvptx-archs" | awk -v sm="$1" 'NR == 1 { first = $2 } $1 == sm { isa = $2 }
    END { print (isa != "" ? isa : first) }'
}
for sm in 70 80 90; do
  ptx=$(isa_of $sm)
  echo "== PTX sm_$sm"
  "$CLANG" $FLAGS --cuda-gpu-arch=sm_$sm --cuda-feature=$ptx -o "$TMP/k_sm$sm.ptx" "$SRC"
  n=$(grep -c '^\.visible \.entry' "$TMP/k_sm$sm.ptx")
  echo "ok: $n kernels"
  # 72 portable norm kernels (24 of them quantised) and 12 q/k norm + RoPE ones, and from sm_80
  # (asynchronous copies) the 60 staged ones (24 of them quantised).
  want=84; [ $sm -ge 80 ] && want=144
  [ "$n" -eq $want ] || { echo "FAIL: expected $want kernels"; exit 1; }
done
if command -v ptxas >/dev/null; then
  ptxas -arch=sm_90 -v "$TMP/k_sm90.ptx" -o /dev/null 2>&1 | grep -E 'registers|spill' | paste - - \
    | sed -E 's/ +/ /g' | sort | uniq -c | sort -rn
fi

if "$CLANG" -print-targets | grep -q amdgcn; then
  for arch in gfx90a gfx1100; do
    echo "== AMD $arch"
    "$CLANG" -x hip --offload-arch=$arch -nogpulib -nogpuinc --cuda-device-only --no-gpu-bundle-output \
      -std=c++17 -O3 -Wall -Werror -o "$TMP/k_$arch.hsaco" "$SRC"
    echo "ok: $(stat -c %s "$TMP/k_$arch.hsaco") bytes"
  done
else
  echo "== AMD: $CLANG has no amdgcn target, skipped"
fi
echo "check-ptx: all ok"

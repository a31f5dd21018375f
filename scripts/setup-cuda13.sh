#!/usr/bin/env bash
# Installs a CUDA 13.0 toolchain (nvcc, headers, link-time libraries) from PyPI wheels into DIR
# (default: ${XDG_CACHE_HOME:-~/.cache}/cuda13) and prints the `export` line that makes it
# CUDA_HOME (the toolchain lands in DIR/nvidia/cu13).
#   bash scripts/setup-cuda13.sh [DIR]
# Needed to build the crate with `--features cuda` on a machine without a CUDA install.
# The GPU machine that runs the result needs an NVIDIA driver >= 580 and CUDA 13 cuBLAS/cuRAND.
# libcuda is only stubbed for linking; the real driver library is used at run time.
# Requires: python3 -m pip, gcc, unzip, cargo. The libcuda stub is generated from cudarc's
# sources in the cargo registry; when they are missing this runs `cargo fetch` in this repository
# (Cargo.lock pins cudarc through the `cuda` feature).
# Project copy of /work/shared/tools/setup-cuda13.sh (same result).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEST="${1:-${XDG_CACHE_HOME:-$HOME/.cache}/cuda13}"
mkdir -p "$DEST"
DEST=$(cd "$DEST" && pwd)
T="$DEST/nvidia/cu13"
if [[ -x "$T/bin/nvcc" && -f "$T/lib/stubs/libcuda.so" ]]; then
  echo "export CUDA_HOME=$T PATH=$T/bin:\$PATH CUDA_COMPUTE_CAP=\${CUDA_COMPUTE_CAP:-90}"
  exit 0
fi

find_cudarc() {
  ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.* 2>/dev/null | sort -V | tail -n1 || true
}
CUDARC=$(find_cudarc)
if [[ -z "$CUDARC" ]]; then
  echo "cudarc sources not in the cargo registry: running 'cargo fetch' in $ROOT" >&2
  (cd "$ROOT" && cargo fetch --locked >&2)
  CUDARC=$(find_cudarc)
  if [[ -z "$CUDARC" ]]; then
    echo "cudarc sources still not found after 'cargo fetch' (is cudarc 0.19 in Cargo.lock?)" >&2
    exit 1
  fi
fi

W="$DEST/wheels"; mkdir -p "$W"
python3 -m pip download -q --no-deps -d "$W" \
  nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 \
  nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 \
  nvidia-cublas==13.0.2.14 nvidia-curand==10.4.0.35 nvidia-cuda-nvrtc==13.0.88 >&2
cd "$DEST"; for w in "$W"/*.whl; do unzip -q -o "$w"; done
mkdir -p "$T/targets/x86_64-linux" "$T/lib/stubs"
ln -sfn ../../include "$T/targets/x86_64-linux/include"   # nvcc.profile looks under targets/
ln -sfn ../../lib "$T/targets/x86_64-linux/lib"
ln -sfn lib "$T/lib64"                                      # cudaforge and cudarc look in lib64
(cd "$T/lib"; for l in cudart cublas cublasLt nvrtc; do ln -sf lib$l.so.13 lib$l.so; done
 ln -sf libcurand.so.10 libcurand.so)
# Link-time stub of libcuda: every cu* entry point that cudarc's driver bindings declare.
grep -ohE "^\s+(pub )?fn cu[A-Za-z0-9_]+\(" "$CUDARC"/src/driver/sys/*.rs | sed -E 's/^ *(pub )?fn //; s/\(//' |
  sort -u | sed 's/.*/int &(void){return 999;}/' > "$DEST/cuda_stub.c"
gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$T/lib/stubs/libcuda.so" "$DEST/cuda_stub.c"
rm -rf "$W"
echo "export CUDA_HOME=$T PATH=$T/bin:\$PATH CUDA_COMPUTE_CAP=\${CUDA_COMPUTE_CAP:-90}"

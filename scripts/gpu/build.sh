#!/usr/bin/env bash
# Builds the GPU test binaries (tests/cuda.rs, tests/rope_cuda.rs as rope_tests, tests/quant_cuda.rs as quant_tests) and the benchmark (benches/gpu, staged as gpu_bench) on this
# machine (no GPU needed, a CUDA 13 toolchain and clang-19 are), checks the PTX with ptxas
# (registers, spills) and stages everything the device machine needs, gzipped, in $DIST/gpu:
#   cuda_tests.xz gpu_bench.xz libcudart.so.13.gz device.sh torch_bench.py ptxas.txt rms_norm.ptx.gz
# (Other kernel builds can be staged as gpu_bench_<name>.xz; device.sh's `variants` phase runs them.)
# Then, from the checkout the device tool sends (with DIST inside it, git-ignored):
#   run: bash .dist/gpu/device.sh        carry: [".dist"]
#
# Env (relative paths are taken from the directory this is started in):
#   DIST                  staging folder (default: <repo>/.dist)
#   CUDA_HOME             CUDA 13 toolchain (default: ${XDG_CACHE_HOME:-$HOME/.cache}/cuda13/nvidia/cu13,
#                         where `bash scripts/setup-cuda13.sh` installs it)
#   CUDA_COMPUTE_CAP      PTX target and Candle's kernels (default 90)
#   CARGO_TARGET_DIR      (default: <repo>/target/cuda, apart from the CPU builds in <repo>/target)
#   WAN                   1: also build and stage the Wan example (wan_t2v.xz)
#   BINS                  the binaries to stage (default: cuda_tests rope_tests quant_tests gpu_bench);
#                         fewer keep one transfer under the device tool's 64 MiB with the tree
# The kernels are the shipped ones (kernels/cuda); CANDLE_RMSNORM_KERNELS=build compiles hip/ instead
# (docs/kernels.md).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
abs() { realpath -m -s -- "$1"; }
DIST=$(abs "${DIST:-$ROOT/.dist}")
CUDA_HOME=$(abs "${CUDA_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/cuda13/nvidia/cu13}")
CARGO_TARGET_DIR=$(abs "${CARGO_TARGET_DIR:-$ROOT/target/cuda}")
export CUDA_HOME CARGO_TARGET_DIR
export PATH=$CUDA_HOME/bin:$PATH
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
if [[ ! -x "$CUDA_HOME/bin/nvcc" ]]; then
  echo "no nvcc under CUDA_HOME=$CUDA_HOME: set CUDA_HOME, or install the toolchain with" >&2
  echo "  bash scripts/setup-cuda13.sh   (into \${XDG_CACHE_HOME:-\$HOME/.cache}/cuda13/nvidia/cu13)" >&2
  exit 1
fi
cd "$ROOT"
mkdir -p "$DIST/gpu"
STAGE=$DIST/gpu

echo "== building tests (cargo test --release --features cuda --no-run)"
# The executable of cargo's JSON artifact messages for target $1 (on stdin).
artifact() {
  python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == sys.argv[1] and m.get("executable"):
        print(m["executable"])' "$1"
}
BINS=${BINS:-cuda_tests rope_tests quant_tests gpu_bench}
# The test target of each staged test binary.
declare -A TARGET=([cuda_tests]=cuda [rope_tests]=rope_cuda [quant_tests]=quant_cuda)
declare -A BIN=()
for b in $BINS; do
  if [[ $b == gpu_bench ]]; then
    echo "== building benchmark"
    BIN[$b]=$(cargo bench --features cuda --bench gpu --no-run --message-format=json | artifact gpu)
  else
    t=${TARGET[$b]}
    BIN[$b]=$(cargo test --release --features cuda --test "$t" --no-run --message-format=json | artifact "$t")
  fi
done

# xz, not gzip: the binaries carry Candle's and our PTX as text, which xz packs about 2.5x
# smaller (16 MB gzip, 6.5 MB xz each): tests, benchmark and the Wan example fit one 64 MiB
# transfer. device.sh unpacks with Python's lzma (the device may lack xz).
pack() {
  strip -o "$STAGE/$1" "$2"
  xz -f -9 -T2 "$STAGE/$1"
  rm -f "$STAGE/$1.gz"
  ls -l "$STAGE/$1.xz"
}
rm -f "$STAGE"/{cuda_tests,rope_tests,quant_tests,gpu_bench}.xz
for b in $BINS; do
  pack "$b" "${BIN[$b]}"
done
BENCH_BIN=${BIN[gpu_bench]:-${BIN[cuda_tests]:-}}
# libcudart.so.13 travels beside the binaries when they need it; libcublas/libcublasLt/libcurand
# come from the device's PyTorch wheels (device.sh sets LD_LIBRARY_PATH).
if ldd "$BENCH_BIN" | grep -q 'libcudart.so.13'; then
  CUDART=$(find "$CUDA_HOME" -name 'libcudart.so.13*' -type f | head -n1)
  gzip -c -9 "$CUDART" > "$STAGE/libcudart.so.13.gz"
fi
ldd "$BENCH_BIN" | grep -E 'cu|nv' || true

# The shipped PTX (kernels/cuda; the cubins come from the same source), and ptxas's resource
# report for sm_90 (registers, spills, stack).
PTX=$ROOT/kernels/cuda/sm_80.ptx
gzip -9 -c "$PTX" > "$STAGE/rms_norm.ptx.gz"
ptxas -arch=sm_90 -v "$PTX" -o /dev/null 2> "$STAGE/ptxas.txt"
# (awk, not head: head closing the pipe early would fail the script under pipefail)
grep -E 'spill|registers' "$STAGE/ptxas.txt" | paste - - | sort | uniq -c | sort -rn | awk 'NR <= 20'
bash scripts/check-spills.sh "$PTX"

# WAN=1: also the Wan example (`-p wan_t2v --features cuda`), for device.sh's `wan` phase.
if [[ "${WAN:-0}" == 1 ]]; then
  echo "== building the Wan example"
  cargo build --release -p wan_t2v --features cuda
  pack wan_t2v "$CARGO_TARGET_DIR/release/wan_t2v"
fi

cp scripts/gpu/device.sh scripts/gpu/torch_bench.py scripts/gpu/torch_attention.py \
  scripts/gpu/wan_1.3b_smoke.json "$STAGE/"
du -sh "$STAGE"

#!/usr/bin/env bash
# Runs on the CUDA machine (staged by scripts/gpu/build.sh): the GPU tests, compute-sanitizer
# memcheck + racecheck on a subset, the benchmark, and PyTorch on the same shapes, ending with
# one side-by-side table. Logs go to $OUT (the device tool's folder) or ./gpu-out.
#   bash .dist/gpu/device.sh [tests] [sanitizer] [bench] [torch]     (default: all four)
# Env: COMPILE_DTYPES (torch.compile dtypes, default bf16), BENCH_ARGS (e.g. --quick).
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
PHASES=${*:-tests sanitizer bench torch}
W=/tmp/candle-rmsnorm-gpu
mkdir -p $W
for f in cuda_tests gpu_bench; do gunzip -c "$HERE/$f.gz" > $W/$f && chmod +x $W/$f; done
[ -f "$HERE/libcudart.so.13.gz" ] && gunzip -c "$HERE/libcudart.so.13.gz" > $W/libcudart.so.13
NV=$(python3 -c 'import nvidia, os; print(os.path.dirname(nvidia.__file__))')
export LD_LIBRARY_PATH=$W:$NV/cu13/lib:${LD_LIBRARY_PATH:-}
export RUST_BACKTRACE=1
{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,clocks.mem,power.limit --format=csv
  python3 -c 'import torch; p=torch.cuda.get_device_properties(0); print(torch.__version__, p.name, p.multi_processor_count, "SMs")'
  ldd $W/cuda_tests | grep -E 'not found|cu|nv' || true
} 2>&1 | tee "$OUT/device.txt"

status=0
if [[ " $PHASES " == *" tests "* ]]; then
  echo "== GPU tests"
  ( time timeout 400 $W/cuda_tests --test-threads=2 ) > "$OUT/tests.log" 2>&1 || status=1
  grep -E '^test |test result|panicked|skipped' "$OUT/tests.log" | tail -n 30
  tail -n 5 "$OUT/tests.log"
  # Spills in the machine code the driver would build from our PTX (STL/LDL = local memory).
  if command -v cuobjdump >/dev/null && ptxas -arch=sm_90 "$HERE/rms_norm.ptx" -o $W/k.cubin 2>/dev/null; then
    echo "SASS local-memory instructions (STL, LDL): $(cuobjdump -sass $W/k.cubin | grep -cE '\bSTL') $(cuobjdump -sass $W/k.cubin | grep -cE '\bLDL')"
  fi
fi
if [[ " $PHASES " == *" sanitizer "* ]]; then
  echo "== compute-sanitizer (memcheck, racecheck) on sanitizer_subset"
  {
    for tool in memcheck racecheck; do
      echo "--- $tool"
      timeout 200 compute-sanitizer --tool $tool --error-exitcode 3 $W/cuda_tests sanitizer_subset --test-threads=1 2>&1 | tail -n 25
      echo "exit code: ${PIPESTATUS[0]}"
    done
  } > "$OUT/sanitizer.log" 2>&1
  grep -E '^---|ERROR SUMMARY|RACECHECK SUMMARY|exit code|test result' "$OUT/sanitizer.log"
fi
if [[ " $PHASES " == *" bench "* ]]; then
  echo "== benchmark"
  $W/gpu_bench --json "$OUT/ours.jsonl" ${BENCH_ARGS:-} > "$OUT/bench.log" 2>&1 || status=1
  cat "$OUT/bench.log" | grep -v '^|' | tail -n 50
fi
if [[ " $PHASES " == *" torch "* && -s "$OUT/ours.jsonl" ]]; then
  echo "== PyTorch side by side"
  PYTHONUNBUFFERED=1 python3 "$HERE/torch_bench.py" --ours "$OUT/ours.jsonl" --md "$OUT/table.md" \
    --compile-dtypes "${COMPILE_DTYPES:-bf16}" > "$OUT/torch.log" 2>&1 || status=1
  grep -E 'compiled|Error|error' "$OUT/torch.log" | tail -n 20
  cat "$OUT/table.md" 2>/dev/null || tail -n 30 "$OUT/torch.log"
fi
exit $status

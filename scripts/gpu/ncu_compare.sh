#!/usr/bin/env bash
# On the CUDA machine: kernel-only durations and launch shapes (ncu) of this build's benchmark
# and of each staged variant (gpu_bench_<name>.gz beside device.sh), for a kernel and shapes:
#   bash .dist/gpu/ncu_compare.sh KERNEL_REGEX SHAPE...   e.g. '^rms_norm_bf16$' 32760x1536
# Prints, per build and shape, the median duration (us), DRAM bytes, grid, block, registers.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-$PWD/gpu-out}
K=$1; shift
W=/tmp/candle-rmsnorm-gpu
mkdir -p "$W" "$OUT"
[ -f "$HERE/libcudart.so.13.gz" ] && gunzip -c "$HERE/libcudart.so.13.gz" > $W/libcudart.so.13
NV=$(python3 -c 'import nvidia; print(list(nvidia.__path__)[0])' 2>/dev/null)
export LD_LIBRARY_PATH=$W:$NV/cu13/lib:${LD_LIBRARY_PATH:-}
for gz in "$HERE"/gpu_bench*.gz; do
  b=$(basename "$gz" .gz)
  gunzip -c "$gz" > $W/$b && chmod +x $W/$b
  for s in "$@"; do
    timeout 150 ncu --csv --kernel-name "regex:$K" --launch-count 30 \
      --metrics gpu__time_duration.sum,dram__bytes.sum,launch__grid_size,launch__block_size,launch__registers_per_thread \
      $W/$b --quick --only "$s" > "$OUT/ncu_${b}_$s.csv" 2>&1
    python3 - "$OUT/ncu_${b}_$s.csv" "$b" "$s" <<'PY'
import csv, sys, statistics
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 10]
if not rows:
    print(sys.argv[2], sys.argv[3], "no kernels profiled"); sys.exit()
h = rows[0]; m, v = h.index("Metric Name"), h.index("Metric Value")
acc = {}
for r in rows[1:]:
    acc.setdefault(r[m], []).append(float(r[v].replace(",", "")))
print(f"{sys.argv[2]:20s} {sys.argv[3]:12s} " + "  ".join(
    f"{k.split('__')[1]}={statistics.median(x):.1f}" for k, x in sorted(acc.items())))
PY
  done
done

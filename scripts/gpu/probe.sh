#!/usr/bin/env bash
# On the CUDA machine, from the repository root: the launch-geometry probe (probe.py) over the
# shipped sm_90 cubin, for the shapes and configurations below (override with PROBE_SWEEPS, one
# sweep per line: "op dtype shape config,config,..."), then ncu on NCU_CONFIGS (lines "op dtype
# shape config"); PROBE_FILE names a file of sweep lines instead; PROBE_GRAPH=1 times calls in a CUDA
# graph (small shapes); PROBE_RB=1 rounds before the weight (Wan's RMSNorm). Logs go to $OUT (default ./gpu-out).
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
CUBIN=${CUBIN:-$HERE/../../kernels/cuda/sm_90.cubin}
# Staged configurations: blocks of 64/128/256 threads taking 1, 2, 4 or 8 rows each.
ST=""
for b in 64 128 256; do ST="$ST,staged:$b:1:2,staged:$b:2:2,staged:$b:4:2,staged:$b:4:4,staged:$b:8:4"; done
DEFAULT_SWEEPS="rms bf16 75600x5120 staged:256:wave:4$ST
fused bf16 75600x5120 staged:256:wave:4$ST
rms f16 75600x5120 staged:256:wave:4$ST
rms f32 75600x5120 staged:256:wave:4$ST
fused f32 75600x5120 staged:256:wave:4$ST
rms bf16 32760x1536 :192:wave:0:1,:96:wave:0:2,:96:4:0:2$ST
fused bf16 32760x1536 staged:192:wave:4$ST
rms bf16 8192x5120 staged:256:wave:4$ST
fused bf16 8192x5120 staged:256:wave:4$ST
rms bf16 4096x5120 staged:256:wave:4,:320:wave:0:2$ST
fused bf16 4096x5120 staged:256:wave:4$ST
rms bf16 1024x5120 staged:256:wave:4,:320:wave:0:2$ST
fused bf16 1024x5120 staged:256:wave:4$ST
rms bf16 512x4096 staged:256:wave:4,:256:wave:0:2$ST
fused bf16 512x4096 staged:256:wave:4$ST
rms bf16 3024000x128 rows:256:wave:0:2:8,rows:256:32:0:2:8,rows:256:64:0:2:8,rows:256:128:0:2:8,rows:128:16:0:2:8,rows:128:32:0:2:8,rows:64:16:0:2:8,rows:256:32:0:1:16,rows:256:64:0:1:16"
DEFAULT_NCU=""
{ if [ -n "${PROBE_FILE:-}" ]; then cat "$PROBE_FILE"; else echo "${PROBE_SWEEPS:-$DEFAULT_SWEEPS}"; fi; } | while read -r op dt shape cfgs; do
  [ -n "$op" ] || continue
  python3 "$HERE/probe.py" "$CUBIN" --op "$op" --dtype "$dt" --shape "$shape" --configs "$cfgs" \
    ${PROBE_TRITON:+--triton} ${PROBE_GRAPH:+--graph} ${PROBE_RB:+--round-before-weight} 2>&1 | tee -a "$OUT/probe.log"
done
command -v ncu >/dev/null || { echo "no ncu"; exit 0; }
echo "${NCU_CONFIGS-$DEFAULT_NCU}" | while read -r op dt shape cfg; do
  [ -n "$op" ] || continue
  f="$OUT/ncu_${op}_${dt}_${shape}_$(echo "$cfg" | tr ':' '_').txt"
  timeout 200 ncu --kernel-name regex:rms_norm --launch-skip 1 --launch-count 1 \
    --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats \
    --section Occupancy --section LaunchStats --section SchedulerStats \
    --metrics sm__cycles_active.min,sm__cycles_active.avg,sm__cycles_active.max,dram__bytes_read.sum,dram__bytes_write.sum \
    python3 "$HERE/probe.py" "$CUBIN" --op "$op" --dtype "$dt" --shape "$shape" --only "$cfg" > "$f" 2>&1
  echo "== ncu $op $dt $shape $cfg"
  grep -E 'DRAM Throughput|Memory Throughput|Compute \(SM\) Throughput|Issue Slots Busy|Executed Ipc Active|Duration|Achieved Occupancy|Theoretical Occupancy|sm__cycles_active|dram__bytes|Registers Per|Stall|Warp Cycles Per Issued|Eligible Warps|Issued Warp' "$f" | head -30
done

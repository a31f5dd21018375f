#!/usr/bin/env bash
# On the CUDA machine, from the repository root: probe_channels.py over the shipped sm_90 cubin
# for the sweeps below (CHAN_SWEEPS overrides, one per line: "op dtype shape config,config,..."),
# then ncu on CHAN_NCU (lines "op dtype shape config"): the channel kernels' launch geometry and
# where their time goes. Logs go to $OUT (default ./gpu-out).
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
CUBIN=${CUBIN:-$HERE/../../kernels/cuda/sm_90.cubin}
DEFAULT_SWEEPS="rms bf16 1x384x131040 s:8,s:4,256:4:6
fused bf16 1x384x131040 s:8,s:4,s:2
rms f32 1x384x131040 s:8,s:4,s:2
fused f32 1x384x131040 s:4,s:2
rms bf16 1x96x499200 s:16,s:8
fused bf16 1x96x499200 s:16,s:8
rms f32 1x96x499200 s:16,s:8"
DEFAULT_NCU="rms bf16 1x384x131040 s:8"
echo "${CHAN_SWEEPS:-$DEFAULT_SWEEPS}" | while read -r op dt shape cfgs; do
  [ -n "$op" ] || continue
  python3 "$HERE/probe_channels.py" "$CUBIN" --op "$op" --dtype "$dt" --shape "$shape" \
    --configs "$cfgs" 2>&1 | tee -a "$OUT/probe_channels.log"
done
command -v ncu >/dev/null || { echo "no ncu"; exit 0; }
echo "${CHAN_NCU-$DEFAULT_NCU}" | while read -r op dt shape cfg; do
  [ -n "$op" ] || continue
  f="$OUT/ncu_chan_${op}_${dt}_${shape}_$(echo "$cfg" | tr ':' '_').txt"
  timeout 200 ncu --kernel-name regex:_chan --launch-skip 2 --launch-count 1 \
    --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats \
    --section Occupancy --section LaunchStats --section SchedulerStats \
    --metrics sm__cycles_active.min,sm__cycles_active.avg,sm__cycles_active.max,dram__bytes_read.sum,dram__bytes_write.sum,smsp__average_warps_issue_stalled_long_scoreboard_per_issue_active.ratio,smsp__average_warps_issue_stalled_barrier_per_issue_active.ratio \
    python3 "$HERE/probe_channels.py" "$CUBIN" --op "$op" --dtype "$dt" --shape "$shape" \
    --configs "$cfg" --reps 3 > "$f" 2>&1
  echo "== ncu $op $dt $shape $cfg"
  grep -E 'DRAM Throughput|Memory Throughput|Compute \(SM\) Throughput|Issue Slots Busy|Executed Ipc Active|Duration|Achieved Occupancy|Theoretical Occupancy|sm__cycles_active|dram__bytes|Registers Per|Stall|stalled|Warp Cycles Per Issued|Eligible Warps|Issued Warp|Block Limit|Dynamic Shared' "$f" | head -40
done

#!/usr/bin/env bash
# On the CUDA machine, from the repository root: cubins side by side (e.g. the previous commit's
# kernels against this tree's, or variants of one change), each sweep line of PROBE_FILE (as
# probe.sh: "op dtype shape config,...") run with every cubin in turn, twice over, so drift
# shows. CUBINS="label=path ..." names them (default: A=$CUBIN_A B=the shipped sm_90 cubin).
# PROBE_RB=1 rounds before the weight (Wan's RMSNorm). Logs go to $OUT (default ./gpu-out).
#   CUBIN_A=old.cubin PROBE_FILE=scripts/gpu/probe-ab.txt bash scripts/gpu/probe-ab.sh
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
CUBINS=${CUBINS:-A=${CUBIN_A:?the first cubin} B=$HERE/../../kernels/cuda/sm_90.cubin}
while read -r op dt shape cfgs; do
  [ -n "$op" ] || continue
  for round in 1 2; do
    for pair in $CUBINS; do
      python3 "$HERE/probe.py" "${pair#*=}" --op "$op" --dtype "$dt" --shape "$shape" \
        --configs "$cfgs" ${PROBE_RB:+--round-before-weight} 2>&1 | grep -v 'MB moved' |
        sed "s/^/${pair%%=*} $round $op $dt $shape /"
    done
  done
done < "${PROBE_FILE:?a file of sweep lines}" | tee -a "$OUT/probe-ab.log"

#!/usr/bin/env bash
# Register spills in the NVIDIA machine code of the shipped PTX: ptxas for sm_90 (the H200's
# architecture) compiles kernels/cuda/sm_80.ptx (or $1) and this fails when a kernel spills more
# bytes than scripts/spills.allow lets it (none unless listed there). Needs ptxas on PATH (CI's
# CUDA step and scripts/gpu/build.sh have it).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PTX=${1:-$ROOT/kernels/cuda/sm_80.ptx}
ptxas -arch=sm_90 -v "$PTX" -o /dev/null 2>&1 | awk -v allow="$ROOT/scripts/spills.allow" '
  BEGIN {
    while ((getline line < allow) > 0) {
      if (line ~ /^#/ || line == "") continue
      split(line, f, " "); ok[f[1]] = f[2]
    }
  }
  /Compiling entry function/ { name = $7; gsub(/\047/, "", name); kernels++ }
  /spill stores/ {
    bytes = $5 + 0; limit = (name in ok) ? ok[name] : 0
    if (bytes > limit) { printf "FAIL: %s spills %d bytes (allowed %d)\n", name, bytes, limit; bad = 1 }
    else if (bytes > 0) printf "known (scripts/spills.allow): %s spills %d bytes\n", name, bytes
  }
  END {
    if (kernels == 0) { print "FAIL: ptxas compiled no kernel"; exit 1 }
    if (!bad) printf "ok: %d kernels, no spill beyond scripts/spills.allow\n", kernels
    exit bad
  }'

#!/usr/bin/env bash
# Runs on the CUDA machine (staged by scripts/gpu/build.sh): the GPU tests, compute-sanitizer
# memcheck + racecheck on a subset, the benchmark, other kernel builds if staged (variants), and
# PyTorch on the same shapes, ending with one side-by-side table. Logs go to $OUT (the device tool's folder) or ./gpu-out.
#   bash .dist/gpu/device.sh [tests] [firstcalls] [images] [wan] [attn] [sanitizer] [bench] [channels] [rope] [ropencu] [variance]
#   [ab] [pool] [variants] [ncu] [hotspots] [torch]  (default: all)
# Env: COMPILE_DTYPES (torch.compile dtypes, default bf16), BENCH_ARGS (e.g. --quick), POOL_SHAPES, POOL_FLAGS,
#      HOTSPOTS (KERNEL:ARGS pairs, ARGS comma-separated), VARIANT_ARGS (the variants phase's benchmark arguments, default --quick), ROUNDS (its rounds),
#      TEST_FILTER (names of the GPU tests to run, default all), WAN_RUNS (impl:image pairs),
#      QUANT_UNSTAGED (0: the quant phase without its staging-off run),
#      OUT (logs, default ./gpu-out), GPU_WORK_DIR (unpacked binaries, default /tmp/candle-rmsnorm-gpu).
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
PHASES=${*:-tests firstcalls images wan attn sanitizer bench channels rope variance quant ab pool variants ncu quantncu torch}
W=${GPU_WORK_DIR:-/tmp/candle-rmsnorm-gpu}
mkdir -p "$W"
# unpack PATH_WITHOUT_SUFFIX DEST: PATH.xz (build.sh's, read with Python's lzma: the device may
# lack xz) or PATH.gz; false when neither is there.
unpack() {
  if [ -f "$1.xz" ]; then
    python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$1.xz" "$2"
  elif [ -f "$1.gz" ]; then
    gunzip -c "$1.gz" > "$2"
  else
    return 1
  fi && chmod +x "$2"
}
# Whichever of the binaries build.sh staged (BINS there); phases skip what is missing.
for f in cuda_tests gpu_bench rope_tests quant_tests; do unpack "$HERE/$f" "$W/$f" || rm -f "$W/$f"; done
[ -f "$HERE/libcudart.so.13.gz" ] && gunzip -c "$HERE/libcudart.so.13.gz" > "$W/libcudart.so.13"
# PyTorch's CUDA 13 wheels (libcublas, libcublasLt, libcurand); `nvidia` is a namespace package.
NV=$(python3 -c 'import nvidia; print(list(nvidia.__path__)[0])' 2>/dev/null)
export LD_LIBRARY_PATH=$W:$NV/cu13/lib:${LD_LIBRARY_PATH:-}
export RUST_BACKTRACE=1
{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,clocks.mem,power.limit --format=csv
  python3 -c 'import torch; p=torch.cuda.get_device_properties(0); print(torch.__version__, p.name, p.multi_processor_count, "SMs")'
  ldd "$W/gpu_bench" | grep -E 'not found|cu|nv' || true
} 2>&1 | tee "$OUT/device.txt"

status=0
if [[ " $PHASES " == *" tests "* ]]; then
  echo "== GPU tests"
  if [ -x "$W/cuda_tests" ]; then
    ( time timeout 400 "$W/cuda_tests" ${TEST_FILTER:-} --test-threads=2 ) > "$OUT/tests.log" 2>&1 || status=1
    grep -E '^test |test result|panicked|skipped' "$OUT/tests.log" | tail -n 30
    tail -n 5 "$OUT/tests.log"
  fi
  if [ -x "$W/quant_tests" ]; then
    ( time timeout 300 "$W/quant_tests" ${QUANT_FILTER:-} --test-threads=2 ) > "$OUT/quant_tests.log" 2>&1 || status=1
    grep -E '^test |test result|panicked|skipped' "$OUT/quant_tests.log" | tail -n 20
  fi
  if [ -x "$W/rope_tests" ]; then
    ( time timeout 300 "$W/rope_tests" ${ROPE_FILTER:-} --test-threads=2 ) > "$OUT/rope_tests.log" 2>&1 || status=1
    grep -E '^test |test result|panicked|skipped' "$OUT/rope_tests.log" | tail -n 20
  fi
  # Spills in the machine code the driver would build from our PTX (STL/LDL = local memory).
  gunzip -c "$HERE/rms_norm.ptx.gz" > "$W/rms_norm.ptx" 2>/dev/null
  if command -v cuobjdump >/dev/null && ptxas -arch=sm_90 "$W/rms_norm.ptx" -o "$W/k.cubin" 2>/dev/null; then
    echo "SASS local-memory instructions (STL, LDL): $(cuobjdump -sass "$W/k.cubin" | grep -cE '\bSTL') $(cuobjdump -sass "$W/k.cubin" | grep -cE '\bLDL')"
  fi
fi
if [[ " $PHASES " == *" firstcalls "* ]]; then
  # First call of every kernel variant in a fresh process: the shipped cubins, then the PTX the
  # driver compiles (what every build did before cubins were shipped), with the driver's JIT
  # cache off so that it really compiles.
  echo "== first calls: cubin, then PTX (JIT, cache disabled)"
  "$W/gpu_bench" --first-calls --json "$OUT/first_calls_cubin.jsonl" > "$OUT/first_calls.log" 2>&1 || status=1
  CANDLE_RMSNORM_CUDA_IMAGE=ptx CUDA_CACHE_DISABLE=1 "$W/gpu_bench" --first-calls \
    --json "$OUT/first_calls_ptx.jsonl" >> "$OUT/first_calls.log" 2>&1 || status=1
  grep -E '^first calls|SKIPPED' "$OUT/first_calls.log"
fi
if [[ " $PHASES " == *" images "* ]]; then
  # Kernel time of the shipped cubins against the driver's own compile of the PTX and, when
  # sm_90.ptx.gz is staged, a cubin made here by this machine's ptxas (compilers differ), bf16,
  # at IMAGE_SHAPES, in alternating rounds.
  images="cubin ptx"
  if [ -f "$HERE/sm_90.ptx.gz" ] && command -v ptxas >/dev/null; then
    gunzip -c "$HERE/sm_90.ptx.gz" > "$W/sm_90.ptx"
    ptxas -arch=sm_90 -O3 -o "$W/sm_90_local.cubin" "$W/sm_90.ptx" && images="$images $W/sm_90_local.cubin"
    echo "local ptxas: $(ptxas --version | tail -n1)"
  fi
  echo "== images: $images (bf16, --quick)"
  for shape in ${IMAGE_SHAPES:-32760x1536 8192x5120}; do
    for round in 1 2; do
      for image in $images; do
        CANDLE_RMSNORM_CUDA_IMAGE=$image "$W/gpu_bench" --quick --only "$shape" 2>&1 \
          | tee -a "$OUT/images.log" | grep -E '^\| (rms|fused)' | sed "s|^|$(basename "$image") |"
      done
    done
  done
fi
if [[ " $PHASES " == *" wan "* ]]; then
  # The Wan example (staged as wan_t2v.xz by build.sh with WAN=1): the 1.3B DiT with a 1-layer
  # umT5 and seeded random weights, 17 frames of 480x832, 3 steps, bf16; with this crate's norms
  # (shipped cubins), with candle_nn's, and with ours from PTX (the driver compiles it: what
  # every build did before cubins were shipped). The driver's JIT cache is off in every run,
  # so each pays the same compile of Candle's own PTX kernels. Each prints its timing table.
  if unpack "$HERE/wan_t2v" "$W/wan_t2v"; then
    for run in ${WAN_RUNS:-ours:cubin candle:cubin ours:ptx}; do
      impl=${run%%:*}; image=${run#*:}
      echo "== wan_t2v --cuda --dtype bf16 --norm-impl $impl (our kernels: $image)"
      ( time CUDA_CACHE_DISABLE=1 CANDLE_RMSNORM_CUDA_IMAGE=$image timeout 280 "$W/wan_t2v" \
          --prompt "a red fox running through snow" --cuda --dtype bf16 --norm-impl $impl \
          --config "$HERE/wan_1.3b_smoke.json" --output "$OUT/wan_${impl}_$image.gif" ) \
        > "$OUT/wan_${impl}_$image.log" 2>&1 || status=1
      grep -vE '^\s*$' "$OUT/wan_${impl}_$image.log" | tail -n 16
    done
  else
    echo "== wan: skipped (no wan_t2v.xz staged; build with WAN=1 scripts/gpu/build.sh)"
  fi
fi
if [[ " $PHASES " == *" attn "* ]]; then
  # PyTorch's SDPA (and the example's chunked algorithm in PyTorch) at the Wan example's
  # attention shapes: the bar for the example's "inside DiT attention" line.
  echo "== attention at the Wan example's shapes (PyTorch)"
  python3 "$HERE/torch_attention.py" --json "$OUT/torch_attention.json" 2>&1 | tee "$OUT/torch_attention.log" || status=1
fi
if [[ " $PHASES " == *" sanitizer "* ]]; then
  echo "== compute-sanitizer (memcheck, racecheck) on sanitizer_subset (out of place, in place)"
  {
    for tool in memcheck racecheck; do
      echo "--- $tool"
      # `sanitizer_subset` also selects `sanitizer_subset_inplace` (a name filter).
      if [ -x "$W/cuda_tests" ]; then
        timeout 280 compute-sanitizer --tool $tool --error-exitcode 3 "$W/cuda_tests" sanitizer_subset --test-threads=1 2>&1 | tail -n 25
        echo "exit code: ${PIPESTATUS[0]}"
      fi
      if [ -x "$W/quant_tests" ]; then
        echo "--- $tool quant_tests constructed_inputs_exact + sizes"
        timeout 200 compute-sanitizer --tool $tool --error-exitcode 3 "$W/quant_tests" constructed_inputs_exact sizes --test-threads=1 2>&1 | tail -n 8
        echo "exit code: ${PIPESTATUS[0]}"
      fi
      if [ -x "$W/rope_tests" ]; then
        echo "--- $tool rope_tests extremes"
        timeout 200 compute-sanitizer --tool $tool --error-exitcode 3 "$W/rope_tests" extremes --test-threads=1 2>&1 | tail -n 8
        echo "exit code: ${PIPESTATUS[0]}"
      fi
    done
  } > "$OUT/sanitizer.log" 2>&1
  grep -E '^---|ERROR SUMMARY|RACECHECK SUMMARY|exit code|test result' "$OUT/sanitizer.log"
fi
if [[ " $PHASES " == *" bench "* ]]; then
  echo "== benchmark"
  "$W/gpu_bench" --json "$OUT/ours.jsonl" ${BENCH_ARGS:-} > "$OUT/bench.log" 2>&1 || status=1
  cat "$OUT/bench.log" | grep -v '^|' | tail -n 50
fi
if [[ " $PHASES " == *" rope "* ]]; then
  echo "== q/k norm + RoPE (benches/gpu/cuda/rope.rs)"
  "$W/gpu_bench" --rope --json "$OUT/rope.jsonl" > "$OUT/rope.log" 2>&1 || status=1
  grep -E '^\||SKIPPED|Error|panicked' "$OUT/rope.log"
fi
if [[ " $PHASES " == *" variance "* ]]; then
  echo "== rms_norm with a variance size (benches/gpu/cuda/variance.rs)"
  "$W/gpu_bench" --variance --json "$OUT/variance.jsonl" > "$OUT/variance.log" 2>&1 || status=1
  grep -E '^\||SKIPPED|Error|panicked' "$OUT/variance.log"
fi
if [[ " $PHASES " == *" quant "* ]]; then
  echo "== quantised outputs (benches/gpu/cuda/quant.rs)"
  "$W/gpu_bench" --quant --json "$OUT/quant.jsonl" > "$OUT/quant.log" 2>&1 || status=1
  grep -E '^\||SKIPPED|Error|panicked' "$OUT/quant.log"
  # The same with staging off (CANDLE_RMSNORM_STAGES=0): the register _quant kernels, and the
  # unquantised ops unstaged too (QUANT_UNSTAGED=0 skips it).
  if [ "${QUANT_UNSTAGED:-1}" = 1 ]; then
    echo "== quantised outputs, staging off"
    CANDLE_RMSNORM_STAGES=0 "$W/gpu_bench" --quant --json "$OUT/quant_unstaged.jsonl" > "$OUT/quant_unstaged.log" 2>&1 || status=1
    grep -E '^\||SKIPPED|Error|panicked' "$OUT/quant_unstaged.log"
  fi
fi
if [[ " $PHASES " == *" channels "* ]]; then
  echo "== norms over dim 1 (benches/gpu/cuda/channels.rs)"
  "$W/gpu_bench" --channels --json "$OUT/channels.jsonl" > "$OUT/channels.log" 2>&1 || status=1
  grep -E '^\||SKIPPED|Error|panicked' "$OUT/channels.log"
fi
if [[ " $PHASES " == *" ab "* ]]; then
  # Configurations of one build side by side, alternating rounds, all dtypes: AB_CONFIGS is a
  # list of name:VAR=value,VAR=value (or name: for the defaults). The default compares the staged
  # loop (rows copied into shared memory ahead, sm_80+) with the register and two-read loops.
  echo "== configurations side by side: ${AB_CONFIGS:=staged: registers:CANDLE_RMSNORM_STAGES=0}"
  for shape in ${AB_SHAPES:-75600x5120 32760x1536 8192x5120 4096x5120 1024x5120}; do
    for round in $(seq 1 "${ROUNDS:-2}"); do
      for cfg in $AB_CONFIGS; do
        name=${cfg%%:*}; vars=${cfg#*:}
        env ${vars//,/ } "$W/gpu_bench" --only "$shape" 2>&1 | tee -a "$OUT/ab_$name.log" \
          | grep -E '^\| (rms|fused)' | sed "s|^|$name |"
      done
    done
  done
fi
if [[ " $PHASES " == *" pool "* ]]; then
  # Whether keeping Candle's stream-ordered pool from shrinking at each synchronisation (its
  # release threshold) changes the wall clock of back-to-back allocating calls; the in-place
  # calls allocate nothing. Alternating rounds, bf16, POOL_SHAPES; POOL_FLAGS lists the benchmark
  # flag sets to compare (`default` for none, commas inside a set: --keep-pool,--untracked).
  flagsets=${POOL_FLAGS:-default --keep-pool}
  echo "== memory pool and host path: $flagsets (bf16)"
  for shape in ${POOL_SHAPES:-75600x5120 32760x1536}; do
    for round in 1 2; do
      for set in $flagsets; do
        flags=${set//,/ }; [ "$set" = default ] && flags=""
        "$W/gpu_bench" --quick --only "$shape" $flags 2>&1 | tee -a "$OUT/pool.log" \
          | grep -E '^\| (rms|fused)' | sed "s|^|$set |"
      done
    done
  done
fi
if [[ " $PHASES " == *" variants "* ]]; then
  # Other builds of the kernels (gpu_bench_<name>.xz or .gz beside this script, e.g. the previous
  # commit's: the before/after check) against this build, in alternating rounds so that drift of
  # the machine hits every build alike; each run with VARIANT_ARGS (default --quick: bf16 only;
  # e.g. --quant for the quantised table).
  echo "== this build against staged variants (${VARIANT_ARGS:---quick}, ${ROUNDS:-2} rounds)"
  builds="this"
  for packed in "$HERE"/gpu_bench_*.xz "$HERE"/gpu_bench_*.gz; do
    [ -e "$packed" ] || continue
    v=$(basename "${packed%.*}"); v=${v#gpu_bench_}
    unpack "${packed%.*}" "$W/bench_$v"
    builds="$builds $v"
  done
  ln -sf "$W/gpu_bench" "$W/bench_this"
  for round in $(seq 1 "${ROUNDS:-2}"); do
    for v in $builds; do
      echo "--- round $round: $v"
      "$W/bench_$v" ${VARIANT_ARGS:---quick} 2>&1 | tee -a "$OUT/variants_$v.log" | grep -E '^\| `?(rms|fused)'
    done
  done
fi
if [[ " $PHASES " == *" ncu "* ]]; then
  # Kernel-only durations at the small shape where host overhead shows (ours and candle_nn's).
  echo "== ncu 512x4096 bf16"
  timeout 150 ncu --csv --metrics gpu__time_duration.sum,dram__bytes.sum --kernel-name regex:rms \
    --launch-count 300 "$W/gpu_bench" --quick --only 512x4096 > "$OUT/ncu.log" 2>&1
  python3 - "$OUT/ncu.log" <<'PY'
import csv, sys, statistics
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 10]
hdr = rows[0]; k, m, v = hdr.index("Kernel Name"), hdr.index("Metric Name"), hdr.index("Metric Value")
acc = {}
for r in rows[1:]:
    acc.setdefault((r[k].split("(")[0], r[m]), []).append(float(r[v].replace(",", "")))
for (name, metric), vals in sorted(acc.items()):
    print(f"{name:40s} {metric:28s} n={len(vals):3d} median={statistics.median(vals):.1f}")
PY
fi
if [[ " $PHASES " == *" ropencu "* ]]; then
  # Nsight Compute on the q/k norm + RoPE kernel (the first launch of each dtype in
  # `gpu_bench --rope`: Wan 14B 720p, q and k; bf16 weights take the _wt kernel): throughput,
  # occupancy, issue, warp stalls.
  for k in rms_norm_rope_bf16_wt rms_norm_rope_f32; do
    echo "== ncu $k"
    timeout 150 ncu --section SpeedOfLight --section Occupancy --section LaunchStats \
      --section WarpStateStats --section ComputeWorkloadAnalysis --section InstructionStats \
      --kernel-name "regex:^$k\$" --launch-count 1 --kill yes "$W/gpu_bench" --rope > "$OUT/ncu_$k.log" 2>&1
    grep -E 'Duration|Throughput|Registers|Achieved Occupancy|Theoretical Occupancy|Block Limit Reg|Issue Slots|Executed Instructions  |Warp Cycles' "$OUT/ncu_$k.log" | head -n 30
  done
fi
if [[ " $PHASES " == *" quantncu "* ]]; then
  # Nsight Compute on both ops' staged kernels, quantised and plain (bf16 75600x5120, the
  # first launch of each in `gpu_bench --quant`): throughput, occupancy, warp stalls.
  for k in rms_norm_bf16_staged_quant rms_norm_bf16_staged fused_add_rms_norm_bf16_staged_quant fused_add_rms_norm_bf16_staged; do
    echo "== ncu $k"
    timeout 150 ncu --section SpeedOfLight --section Occupancy --section LaunchStats \
      --section WarpStateStats --section MemoryWorkloadAnalysis --kernel-name "regex:^$k\$" \
      --launch-count 1 --kill yes "$W/gpu_bench" --quant > "$OUT/ncu_$k.log" 2>&1
    grep -E 'Duration|Throughput|Registers|Achieved Occupancy|Theoretical Occupancy|Block Limit|Dynamic Shared|Stall|Warp Cycles|Issued|Bank' "$OUT/ncu_$k.log" | head -n 40
  done
fi
if [[ " $PHASES " == *" hotspots "* ]]; then
  # Where a kernel's instructions go: Nsight Compute's per-instruction counts (SourceCounters:
  # executed instructions, stall samples) of the first launch of each KERNEL in `gpu_bench ARGS`,
  # as CSV of the SASS (hot_KERNEL.csv) for offline reading. HOTSPOTS lists KERNEL:ARGS pairs.
  for pair in ${HOTSPOTS:-rms_norm_bf16_staged_quant:--quant rms_norm_bf16_staged:--quant}; do
    k=${pair%%:*}; args=${pair#*:}; args=${args//,/ }
    echo "== hotspots $k ($args)"
    timeout 150 ncu --section SourceCounters --section InstructionStats --section SpeedOfLight \
      --import-source no --kernel-name "regex:^$k\$" --launch-count 1 --kill yes -f -o "$OUT/hot_$k" \
      "$W/gpu_bench" $args > "$OUT/hot_$k.log" 2>&1
    ncu -i "$OUT/hot_$k.ncu-rep" --page source --csv --print-source sass > "$OUT/hot_$k.csv" 2>&1
    ncu -i "$OUT/hot_$k.ncu-rep" --page details > "$OUT/hot_$k.txt" 2>&1
    rm -f "$OUT/hot_$k.ncu-rep"
    grep -E 'Duration|Executed Instructions  |Issue Slots|DRAM Throughput' "$OUT/hot_$k.txt" | head -n 8
    wc -l "$OUT/hot_$k.csv"
  done
fi
if [[ " $PHASES " == *" torch "* && -s "$OUT/ours.jsonl" ]]; then
  echo "== PyTorch side by side"
  PYTHONUNBUFFERED=1 python3 "$HERE/torch_bench.py" --ours "$OUT/ours.jsonl" --md "$OUT/table.md" --raw "$OUT/torch.json" \
    --compile-dtypes "${COMPILE_DTYPES:-bf16}" > "$OUT/torch.log" 2>&1 || status=1
  grep -E 'compiled|Error|error' "$OUT/torch.log" | tail -n 20
  cat "$OUT/table.md" 2>/dev/null || tail -n 30 "$OUT/torch.log"
fi
exit $status

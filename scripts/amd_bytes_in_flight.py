#!/usr/bin/env python3
"""Bytes in flight per compute unit that the AMD kernels keep at their occupancy, against what
the memory system needs (bandwidth x latency / CUs), per default architecture. Nothing here was
measured on AMD hardware: occupancy follows from each kernel's registers (read from the shipped
code objects' metadata) and LLVM's occupancy rules; the loads in flight follow from the launch
plan (src/gpu/geometry.rs) and the kernels' structure (hip/norm_regs.h).

    python3 scripts/amd_bytes_in_flight.py target/debug/build/candle-rmsnorm-*/out/hsaco_table.rs

(the table `build.rs` writes for `--features rocm`). Prints a Markdown table (docs/rocm.md).
"""
import glob
import math
import re
import sys

# Per architecture: VGPRs per SIMD lane, allocation granule, max waves per SIMD, SIMDs per CU,
# wave size (LLVM AMDGPUBaseInfo.cpp getTotalNumVGPRs / getVGPRAllocGranule / getMaxWavesPerEU,
# AMDGPU.td features FeatureGFX90AInsts and Feature1_5xVGPRs), and a flagship part's CUs and peak
# bandwidth (AMD product pages).
ARCH = {
    #          vgprs granule waves simds wave  part             CUs  GB/s
    "gfx90a": (512, 8, 8, 4, 64, "MI250X (one GCD)", 110, 1638),
    "gfx942": (512, 8, 8, 4, 64, "MI300X", 304, 5300),
    "gfx1030": (1024, 16, 16, 2, 32, "RX 6900 XT", 80, 512),
    "gfx1100": (1536, 24, 16, 2, 32, "RX 7900 XTX", 96, 960),
    "gfx1101": (1536, 24, 16, 2, 32, "RX 7800 XT", 60, 624),
    "gfx1201": (1536, 24, 16, 2, 32, "RX 9070 XT", 64, 640),
}
# DRAM latency under load is not published for these parts (and was not measured here): the
# need is given for two assumed latencies.
LATENCIES_NS = (600, 1200)

# The launches at the Wan shapes (src/gpu/geometry.rs): kernel, block threads, bytes a lane has
# in flight while it works on a row (16-byte chunks: the plain op keeps the next row's chunks
# loading during this row's reduction and write; the fused op loads x and the residual of its
# row, two chunks each, and then has nothing in flight until its next row), per wave size (the
# plan rounds blocks to whole waves: 1536 bf16 is 96 lanes x 2 chunks on wave32, 192 x 1 on
# wave64).
LAUNCHES = [
    ("rms_norm_bf16", "75600x5120 bf16", {32: (320, 2 * 16), 64: (320, 2 * 16)}),
    ("fused_add_rms_norm_bf16", "75600x5120 bf16", {32: (320, 2 * 2 * 16), 64: (320, 2 * 2 * 16)}),
    ("rms_norm_bf16", "32760x1536 bf16", {32: (96, 2 * 16), 64: (192, 1 * 16)}),
]


def kernels(path):
    text = open(path).read()
    out = {}
    for block in re.split(r"CodeObject \{", text)[1:]:
        arch = re.search(r'arch: "([^"]+)"', block).group(1)
        for m in re.finditer(r'name: "([^"]+)", vgprs: (\d+), sgprs: (\d+), agprs: (\d+)', block):
            out[(arch, m.group(1))] = int(m.group(2)) + int(m.group(4))
    return out


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else sorted(
        glob.glob("target/*/build/candle-rmsnorm-*/out/hsaco_table.rs"))[-1]
    regs = kernels(path)
    print("| arch (part) | kernel, shape | VGPRs | waves/SIMD | resident waves/CU | bytes in flight/CU | "
          "need/CU at %d / %d ns | ratio |" % LATENCIES_NS)
    print("|---|---|---|---|---|---|---|---|")
    for arch, (vg, gran, maxw, simds, wave, part, cus, gbs) in ARCH.items():
        for name, shape, by_wave in LAUNCHES:
            block, lane_bytes = by_wave[wave]
            v = regs[(arch, name)]
            per_simd = min(maxw, vg // (math.ceil(v / gran) * gran))
            waves_per_block = block // wave
            blocks = (per_simd * simds) // waves_per_block
            resident = blocks * waves_per_block
            inflight = resident * wave * lane_bytes
            need = [gbs * 1e9 * ns * 1e-9 / cus for ns in LATENCIES_NS]
            print(f"| {arch} ({part}) | {name}, {shape} | {v} | {per_simd} | {resident} | "
                  f"{inflight / 1024:.0f} KiB | {need[0] / 1024:.0f} / {need[1] / 1024:.0f} KiB | "
                  f"{inflight / need[0]:.1f} / {inflight / need[1]:.1f} |")


if __name__ == "__main__":
    main()

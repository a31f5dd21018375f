#!/usr/bin/env python3
"""Launch-geometry probe of the channel kernels (hip/norm_channel.h; CUDA machine, PyTorch only,
no Rust): a norm over dim 1 of [outer, C, inner] with chosen block, lanes and held chunks, beside
a device-to-device copy of the same bytes, by CUDA events, each output checked against a float64
PyTorch reference. The crate's own rule lives in src/gpu/channel_plan.rs.

  python3 probe_channels.py CUBIN [--shape 1x384x131040] [--dtype bf16] [--op rms|fused]
                                  [--configs block:lanes:chunks,...] [--reps 30]

A config `s:lanes` runs the staged kernel (`_chan_staged`: one tile of `lanes` chunks a channel a
block, and the weights, in shared memory, 256 threads).
"""
import argparse
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from probe import DT, NORM_VECTOR, Kernels, NormArgs  # noqa: E402

STAGES = 1 << 8  # NORM_STAGES bits: one tile buffer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cubin")
    ap.add_argument("--shape", default="1x384x131040")
    ap.add_argument("--dtype", default="bf16")
    ap.add_argument("--op", default="rms", choices=["rms", "fused"])
    ap.add_argument("--configs", default="256:4:6,256:8:0,256:16:0,256:32:0")
    ap.add_argument("--reps", type=int, default=30)
    a = ap.parse_args()
    outer, C, inner = map(int, a.shape.split("x"))
    dt, fused = DT[a.dtype], a.op == "fused"
    esz = torch.empty(0, dtype=dt).element_size()
    vec = 16 // esz
    K = Kernels(a.cubin)
    g = torch.Generator(device="cuda").manual_seed(1)
    tb = outer * C * inner * esz * (2 if fused else 1)
    sets = max(2, -(-(256 << 20) // (2 * tb)))
    mk = lambda: torch.randn(outer, C, inner, device="cuda", dtype=dt, generator=g)
    xs = [mk() for _ in range(sets)]
    rs = [mk() if fused else None for _ in range(sets)]
    outs = [torch.empty_like(xs[0]) for _ in range(sets)]
    sos = [torch.empty_like(xs[0]) if fused else None for _ in range(sets)]
    w = (1 + 0.1 * torch.randn(C, device="cuda", generator=g)).to(dt)
    srcs = [torch.empty(tb, dtype=torch.uint8, device="cuda") for _ in range(sets)]
    dsts = [torch.empty_like(srcs[0]) for _ in range(sets)]
    name = f"{'fused_add_rms_norm' if fused else 'rms_norm'}_{a.dtype}_chan"

    def args(i, lanes, chunks, flags=NORM_VECTOR, tpb=1):
        ci = C * inner
        p = lambda t: t.data_ptr() if t is not None else None
        return NormArgs(p(outs[i]), p(sos[i]), p(xs[i]), p(rs[i]), w.data_ptr(),
                        inner, inner, inner, inner, outer, C, 1e-6, flags, tpb, lanes,
                        chunks, C, inner, ci, ci, ci, ci, 1, 1)

    def timed(f):
        ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
              for _ in range(a.reps)]
        f(0)
        for i, (s, e) in enumerate(ev):
            s.record(); f(i % sets); e.record()
        torch.cuda.synchronize()
        return statistics.median(s.elapsed_time(e) * 1e3 for s, e in ev)

    copy = timed(lambda i: dsts[i].copy_(srcs[i]))
    print(f"{name} {a.shape}: {2 * tb / 1e6:.0f} MB moved; copy {copy:.1f} us", flush=True)
    for spec in [s for s in a.configs.split(",") if s]:
        staged = spec.startswith("s:")
        if staged:
            block, lanes, chunks = 256, int(spec[2:]), 0
        else:
            block, lanes, chunks = map(int, spec.split(":"))
        tiles = -(-inner // (lanes * vec))
        if staged:
            kname = name + "_staged"
            smem = (2 if fused else 1) * C * lanes * 16 + C * (8 if esz == 8 else 4)
            grid = outer * tiles
            launch = lambda i: K.launch(kname, grid, block, smem,
                                        args(i, lanes, 0, NORM_VECTOR | STAGES))
        else:
            kname, smem = name, 0
            grid = outer * tiles
            launch = lambda i: K.launch(name, grid, block, 0, args(i, lanes, chunks))
        outs[0].zero_()
        launch(0)
        torch.cuda.synchronize()
        v = xs[0].double() + (rs[0].double() if fused else 0)
        ref = v * torch.rsqrt(v.pow(2).mean(1, keepdim=True) + 1e-6) * w.double()[None, :, None]
        err = (outs[0].double() - ref).abs().max().item()
        ok = err < (0.05 if esz == 2 else 1e-4) * max(1.0, ref.abs().max().item() / 8)
        t = timed(launch)
        fit = K.fit(kname, block, smem)
        print(f"  block {block:4d} lanes {lanes:2d} chunks {chunks:2d} ({fit} blocks/SM, "
              f"{grid} blocks): {t:8.1f} us  {100 * copy / t:5.1f}% of copy  "
              f"{'ok' if ok else f'WRONG (max err {err:.3g})'}", flush=True)


if __name__ == "__main__":
    sys.exit(main())

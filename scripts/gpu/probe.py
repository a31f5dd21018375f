#!/usr/bin/env python3
"""Launch-geometry probe (CUDA machine, PyTorch only, no Rust): loads a cubin of this crate's
kernels through the driver API and times chosen kernels with chosen geometry (block, rows per
block, stages) beside a device-to-device copy of the same bytes, in one process, by CUDA events.
It answers "what would this launch rule give" without rebuilding the crate; the rule itself lives
in src/gpu/geometry.rs. Outputs are checked against a float64 PyTorch reference.

  python3 probe.py CUBIN [--shape 75600x5120] [--dtype bf16] [--op rms|fused] [--configs SPEC]
                         [--only SPEC] [--reps 30] [--triton] [--graph] [--round-before-weight]

A config SPEC is KERNEL_SUFFIX:block:rows_per_block:stages[:chunks_per_lane[:lanes_per_row]], e.g. `staged:256:8:4`
(rms_norm_bf16_staged, 256 threads, 8 rows a block, 4 row buffers) or `:320:16:0:2` (the
register kernel, 2 chunks a lane); rows_per_block `wave` means an equal share for exactly the
blocks that fit at once (the crate's rule). `--only` runs one config a few times (for ncu).
"""
import argparse
import ctypes as C
import statistics
import sys

import torch

DT = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}
VEC = {"bf16": 8, "f16": 8, "f32": 4}
NORM_VECTOR = 4
NORM_ROUND_BEFORE_WEIGHT = 2  # hip/norm_args.h


class NormArgs(C.Structure):  # hip/norm_args.h
    _fields_ = [(n, C.c_void_p) for n in ("out", "sum_out", "x", "residual", "weight")] + [
        (n, C.c_longlong)
        for n in ("out_stride", "sum_stride", "x_stride", "res_stride", "rows", "hidden")
    ] + [("eps", C.c_double)] + [
        (n, C.c_uint) for n in ("flags", "rows_per_block", "lanes_per_row", "chunks_per_lane")
    ] + [(n, C.c_longlong) for n in ("var_size", "inner", "x_outer", "res_outer", "out_outer",
                                      "sum_outer", "x_inner", "res_inner")]


assert C.sizeof(NormArgs) == 176
cu = C.CDLL("libcuda.so.1")


def ck(r, what):
    if r != 0:
        raise RuntimeError(f"{what}: CUresult {r}")


class Kernels:
    def __init__(self, path):
        torch.zeros(1, device="cuda")  # the primary context, current
        self.mod = C.c_void_p()
        data = open(path, "rb").read()
        ck(cu.cuModuleLoadData(C.byref(self.mod), C.c_char_p(data)), "cuModuleLoadData")
        self.fns = {}
        dev = C.c_int()
        ck(cu.cuCtxGetDevice(C.byref(dev)), "cuCtxGetDevice")
        self.mps = torch.cuda.get_device_properties(0).multi_processor_count

    def fn(self, name):
        if name not in self.fns:
            f = C.c_void_p()
            ck(cu.cuModuleGetFunction(C.byref(f), self.mod, name.encode()), name)
            ck(cu.cuFuncSetAttribute(f, 8, 200 * 1024), "max dynamic smem")  # opt in
            self.fns[name] = f
        return self.fns[name]

    def fit(self, name, block, smem):
        n = C.c_int()
        ck(cu.cuOccupancyMaxActiveBlocksPerMultiprocessor(C.byref(n), self.fn(name), block, smem),
           "occupancy")
        return n.value

    def launch(self, name, grid, block, smem, args):
        p = (C.c_void_p * 1)(C.cast(C.pointer(args), C.c_void_p))
        s = C.c_void_p(torch.cuda.current_stream().cuda_stream)
        ck(cu.cuLaunchKernel(self.fn(name), grid, 1, 1, block, 1, 1, smem, s, p, None), name)


def parse(spec):
    f = spec.split(":")
    suffix, block, rpb, stages = f[0], int(f[1]), f[2], int(f[3])
    cpl = int(f[4]) if len(f) > 4 else 0
    lanes = int(f[5]) if len(f) > 5 else 0
    return suffix, block, rpb, stages, cpl, lanes


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cubin")
    ap.add_argument("--shape", default="75600x5120")
    ap.add_argument("--dtype", default="bf16")
    ap.add_argument("--op", default="rms", choices=["rms", "fused"])
    ap.add_argument("--configs", default="")
    ap.add_argument("--only", default="")
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--triton", action="store_true")
    ap.add_argument("--graph", action="store_true")
    ap.add_argument("--round-before-weight", action="store_true",
                    help="NORM_ROUND_BEFORE_WEIGHT (Wan's RMSNorm): x * scale rounded to the dtype")
    a = ap.parse_args()
    rows, hidden = map(int, a.shape.split("x"))
    dt, vec = DT[a.dtype], VEC[a.dtype]
    fused = a.op == "fused"
    K = Kernels(a.cubin)
    g = torch.Generator(device="cuda").manual_seed(1)
    esz = torch.empty(0, dtype=dt).element_size()
    nbytes = rows * hidden * esz * (2 if fused else 1)
    # Input sets rotated over >= 256 MiB (counting inputs and outputs), so L2 holds none.
    sets = max(1, -(-(256 << 20) // (2 * nbytes)))
    xs = [torch.randn(rows, hidden, device="cuda", dtype=dt, generator=g) for _ in range(sets)]
    rs = [torch.randn(rows, hidden, device="cuda", dtype=dt, generator=g) if fused else None
          for _ in range(sets)]
    outs = [torch.empty_like(xs[0]) for _ in range(sets)]
    sos = [torch.empty_like(xs[0]) if fused else None for _ in range(sets)]
    x, r, out, so = xs[0], rs[0], outs[0], sos[0]
    w = (1 + 0.1 * torch.randn(hidden, device="cuda", generator=g)).to(dt)
    srcs = [torch.empty(nbytes, dtype=torch.uint8, device="cuda") for _ in range(sets)]
    dsts = [torch.empty_like(srcs[0]) for _ in range(sets)]
    base = f"{'fused_add_rms_norm' if fused else 'rms_norm'}_{a.dtype}"

    rb_flag = NORM_ROUND_BEFORE_WEIGHT if a.round_before_weight else 0

    def args_for(rpb, stages, cl, i=0):
        cpl, lanes = cl
        return NormArgs(outs[i].data_ptr(), sos[i].data_ptr() if fused else None,
                        xs[i].data_ptr(), rs[i].data_ptr() if fused else None, w.data_ptr(),
                        hidden, hidden, hidden, hidden, rows, hidden, 1e-6,
                        NORM_VECTOR | (stages << 8) | rb_flag, rpb, lanes, cpl)

    def plan(spec):
        suffix, block, rpb, stages, cpl, lanes = parse(spec)
        name = base + (f"_{suffix}" if suffix else "")
        # A team uses min(S, its rows) of its S row buffers (one team a block, or
        # block / lanes teams taking rows in turn).
        row = hidden * esz * (2 if fused else 1)
        conc = block // lanes if lanes else 1
        if rpb == "wave":
            fit = K.fit(name, block, stages * conc * row)
            rpb = -(-rows // (fit * K.mps))
        else:
            rpb = int(rpb)
        smem = min(stages, -(-rpb // conc)) * conc * row
        fit = K.fit(name, block, smem)
        return name, block, rpb, stages, (cpl, lanes), smem, fit

    def timed(f, reps):
        """Median of per-call event times, f(i) over the input sets in turn; with --graph, the
        mean of `reps` calls captured in one CUDA graph (no host launch cost: small shapes)."""
        if a.graph:
            f(0)
            torch.cuda.synchronize()
            gr = torch.cuda.CUDAGraph()
            with torch.cuda.graph(gr):
                for i in range(reps):
                    f(i % sets)
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            gr.replay()
            s.record(); gr.replay(); e.record()
            torch.cuda.synchronize()
            return s.elapsed_time(e) * 1e3 / reps
        ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
              for _ in range(reps)]
        f(0)
        for i, (s, e) in enumerate(ev):
            s.record(); f(i % sets); e.record()
        torch.cuda.synchronize()
        return statistics.median(s.elapsed_time(e) * 1e3 for s, e in ev)

    def check():
        xr = x.double() + (r.double() if fused else 0)
        n = xr * torch.rsqrt(xr.pow(2).mean(-1, keepdim=True) + 1e-6)
        if rb_flag:
            n = n.to(dt).double()
        ref = n * w.double()
        err = (out.double() - ref).abs().max().item()
        tol = 0.05 if esz == 2 else 1e-4
        ok = err < tol * max(1.0, ref.abs().max().item() / 8)
        if fused:
            ok = ok and torch.equal(so, (x.float() + r.float()).to(dt))
        return ok, err

    copy = lambda i: dsts[i].copy_(srcs[i])
    if a.only:
        name, block, rpb, stages, cpl, smem, fit = plan(a.only)
        grid = -(-rows // rpb)
        args = args_for(rpb, stages, cpl)
        for _ in range(3):
            K.launch(name, grid, block, smem, args)
        torch.cuda.synchronize()
        return
    specs = [s for s in a.configs.split(",") if s]
    print(f"{base} {a.shape}: {nbytes * 2 / 1e6:.0f} MB moved; {K.mps} SMs; {sets} input sets")
    for spec in specs:
        name, block, rpb, stages, cpl, smem, fit = plan(spec)
        grid = -(-rows // rpb)
        args = [args_for(rpb, stages, cpl, i) for i in range(sets)]
        out.zero_()
        K.launch(name, grid, block, smem, args[0])
        torch.cuda.synchronize()
        ok, err = check()
        t = timed(lambda i: K.launch(name, grid, block, smem, args[i]), a.reps)
        c = timed(copy, a.reps)
        print(f"{spec:22s} {name:32s} grid {grid:6d} rpb {rpb:5d} fit {fit} "
              f"{t:8.1f} us  copy {c:7.1f} us  {100 * c / t:5.1f}%  ok={ok} err={err:.2g}",
              flush=True)
    if a.triton:
        triton_row(xs, rs, w, outs, rows, hidden, fused, timed, copy, a.reps)


def triton_row(xs, rs, w, outs, rows, hidden, fused, timed, copy, reps):
    """A naive one-row-per-program Triton kernel, the reference point of issue 10's table."""
    import triton
    import triton.language as tl

    @triton.jit
    def k(X, R, W, O, H, BLOCK: tl.constexpr, FUSED: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        cols = tl.arange(0, BLOCK)
        m = cols < H
        v = tl.load(X + row * H + cols, mask=m, other=0.0).to(tl.float32)
        if FUSED:
            v += tl.load(R + row * H + cols, mask=m, other=0.0).to(tl.float32)
            tl.store(R + row * H + cols, v.to(X.dtype.element_ty), mask=m)
        s = tl.rsqrt(tl.sum(v * v, 0) / H + 1e-6)
        wv = tl.load(W + cols, mask=m, other=0.0).to(tl.float32)
        tl.store(O + row * H + cols, (v * s * wv).to(X.dtype.element_ty), mask=m)

    B = triton.next_power_of_2(hidden)
    for nw in (4, 8, 16):
        f = lambda i: k[(rows,)](xs[i], rs[i] if fused else xs[i], w, outs[i], hidden, BLOCK=B,
                                 FUSED=fused, num_warps=nw)
        t = timed(f, reps)
        c = timed(copy, reps)
        print(f"triton one row/program num_warps={nw:2d}  {t:8.1f} us  copy {c:7.1f} us  "
              f"{100 * c / t:5.1f}%", flush=True)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""q/k norm + RoPE probe (CUDA machine, PyTorch only, no Rust): loads one or more cubins of this
crate's kernels (kernels/cuda/sm_90.cubin, or builds of edited hip/ sources made by
rope_variant.sh) and times their `rms_norm_rope_{bf16,f32}` kernels on the benchmark's shapes
(q and k in one launch, Wan's rounding before the weight, cos/sin f32, written as [B, heads, L,
head_dim]) beside a device-to-device copy of the same bytes, by CUDA events, medians, in one
process. The weights hold values of the input dtype: passed as f32, or with CUBIN:wt as bf16 to
the `rms_norm_rope_bf16_wt` kernel (f32 runs are the same either way); the products are the
same, so each build's output is compared bit for bit with the first build's. The geometry is
src/gpu/rope_plan.rs's (16-byte chunks, one unit a lane per head, two heads a team), written out
here.

  python3 rope_probe.py CUBIN[:wt] [CUBIN[:wt] ...] [--reps 20] [--dtypes bf16,f32]
"""
import argparse
import ctypes as C
import statistics

import torch

ROPE_VECTOR, ROPE_HALF_SPLIT, ROPE_PER_HEAD, ROPE_ROUND_BEFORE_WEIGHT = 1, 2, 4, 8
ROPE_WEIGHT_IN_T = 64


class RopeArgs(C.Structure):
    """`struct RopeArgs` of hip/rope_args.h (192 bytes)."""
    _fields_ = [("out", C.c_uint64), ("x", C.c_uint64 * 2), ("w", C.c_uint64 * 2),
                ("cos", C.c_uint64), ("sin", C.c_uint64), ("x_b", C.c_int64 * 2),
                ("x_l", C.c_int64 * 2), ("out_t", C.c_int64), ("out_b", C.c_int64),
                ("out_l", C.c_int64), ("out_h", C.c_int64), ("batch", C.c_int64),
                ("seq", C.c_int64), ("eps", C.c_double), ("flags", C.c_uint32),
                ("heads", C.c_uint32), ("head_dim", C.c_uint32), ("tensors", C.c_uint32),
                ("rows_per_block", C.c_uint32), ("lanes_per_head", C.c_uint32),
                ("teams", C.c_uint32), ("units_per_lane", C.c_uint32),
                ("reserved", C.c_int64 * 2)]


assert C.sizeof(RopeArgs) == 192

# (name, L, heads, head_dim, per-head norm, half-split pairs): benches/gpu/cuda/rope.rs's shapes.
SHAPES = [("Wan 14B 720p", 75600, 40, 128, False, False),
          ("Wan 1.3B 480p", 32760, 12, 128, False, False),
          ("Flux-like", 4096, 24, 128, True, True)]

cu = C.CDLL("libcuda.so.1")


def check(r, what):
    if r != 0:
        raise RuntimeError(f"{what}: CUresult {r}")


def load(path):
    m = C.c_void_p()
    check(cu.cuModuleLoadData(C.byref(m), open(path, "rb").read()), f"load {path}")
    return m


def function(module, name):
    f = C.c_void_p()
    check(cu.cuModuleGetFunction(C.byref(f), module, name.encode()), name)
    return f


def launch(f, grid, block, args):
    params = (C.c_void_p * 1)(C.cast(C.pointer(args), C.c_void_p))
    stream = C.c_void_p(torch.cuda.current_stream().cuda_stream)
    check(cu.cuLaunchKernel(f, grid, 1, 1, block, 1, 1, 0, stream, params, None), "launch")


def median_us(f, reps):
    for _ in range(3):
        f()
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        f()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b) * 1000)
    return statistics.median(ts)


def plan(heads, d, dt, per_head):
    """Block, rows a block and the geometry fields (rope_plan.rs for 16-byte chunks)."""
    vec = 16 // torch.tensor([], dtype=dt).element_size()
    lph = 1
    while lph < d // (2 * vec):
        lph *= 2
    teams = (heads + 1) // 2
    rows = max(256 // (teams * lph), 1) if per_head else 1
    return -(-rows * teams * lph // 32) * 32, rows, lph, teams


def run_shape(modules, name, L, H, D, per_head, half, dt, reps):
    q, k = (torch.randn(L, H * D, device="cuda", dtype=dt) for _ in range(2))
    wq, wk = ((torch.rand(D if per_head else H * D, device="cuda") + 0.5).to(dt).float()
              for _ in range(2))
    wq_t, wk_t = wq.to(dt), wk.to(dt)
    cos, sin = (torch.rand(L, D // 2, device="cuda") for _ in range(2))
    out = torch.empty(2, L, H * D, device="cuda", dtype=dt)
    src = torch.empty_like(out)
    copy = median_us(lambda: out.copy_(src), reps)
    block, rows, lph, teams = plan(H, D, dt, per_head)
    a = RopeArgs()
    a.out, a.cos, a.sin = out.data_ptr(), cos.data_ptr(), sin.data_ptr()
    a.x[0], a.x[1] = q.data_ptr(), k.data_ptr()
    a.x_b[0] = a.x_b[1] = L * H * D
    a.x_l[0] = a.x_l[1] = H * D
    a.out_t, a.out_b, a.out_l, a.out_h = H * L * D, H * L * D, D, L * D
    a.batch, a.seq, a.eps = 1, L, 1e-6
    a.flags = ROPE_VECTOR | ROPE_ROUND_BEFORE_WEIGHT | (ROPE_HALF_SPLIT if half else 0) | (
        ROPE_PER_HEAD if per_head else 0)
    a.heads, a.head_dim, a.tensors = H, D, 2
    a.rows_per_block, a.lanes_per_head, a.teams, a.units_per_lane = rows, lph, teams, 1
    grid = 2 * -(-L // rows)
    tag = "bf16" if dt == torch.bfloat16 else "f32"
    first = None
    flags = a.flags
    for path, m in modules:
        wt = path.endswith(":wt") and dt != torch.float32
        a.flags = flags | (ROPE_WEIGHT_IN_T if wt else 0)
        ws = (wq_t, wk_t) if wt else (wq, wk)
        a.w[0], a.w[1] = ws[0].data_ptr(), ws[1].data_ptr()
        f = function(m, f"rms_norm_rope_{tag}{'_wt' if wt else ''}")
        out.zero_()
        launch(f, grid, block, a)
        torch.cuda.synchronize()
        same = ""
        if first is None:
            first = out.clone()
        else:
            same = f", bitwise equal to the first: {torch.equal(out, first)}"
        t = median_us(lambda: launch(f, grid, block, a), reps)
        print(f"{name} {tag} {path}: {t:.1f} us, copy {copy:.1f} us, "
              f"{100 * copy / t:.1f}% of copy{same}", flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("cubins", nargs="+")
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--dtypes", default="bf16,f32")
    args = p.parse_args()
    torch.zeros(1, device="cuda")  # the primary context, current on this thread
    modules = [(path, load(path.removesuffix(":wt"))) for path in args.cubins]
    for dt_name in args.dtypes.split(","):
        dt = {"bf16": torch.bfloat16, "f32": torch.float32}[dt_name]
        for shape in SHAPES:
            run_shape(modules, *shape, dt, args.reps)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""PyTorch side of the GPU benchmark: F.rms_norm and torch.compile of the eager formula (and of
the fused add + norm) on the shapes our benchmark ran (benches/gpu, `--json`: the shapes come from
its JSONL), timed the same way (median over many launches, each between CUDA events, inputs
rotated over >= 256 MiB so L2 never holds them). Prints one side-by-side markdown table.

usage: torch_bench.py --ours ours.jsonl [--md table.md] [--compile-dtypes bf16,f16,f32] [--quick]
"""
import argparse
import json
import math
import time

import torch
import torch.nn.functional as F

EPS = 1e-6
DT = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}


def median_us(fn, iters, warm=5):
    for i in range(warm):
        fn(i)
    torch.cuda.synchronize()
    evs = []
    for i in range(iters):
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        a.record()
        fn(i + warm)
        b.record()
        evs.append((a, b))
    torch.cuda.synchronize()
    t = sorted(a.elapsed_time(b) * 1e3 for a, b in evs)
    return t[len(t) // 2]


def eager_formula(x, w):
    h = x.float()
    var = h.pow(2).mean(-1, keepdim=True)
    return (h * torch.rsqrt(var + EPS)).to(x.dtype) * w


def fused_formula(x, r, w):
    s = x.float() + r.float()
    var = s.pow(2).mean(-1, keepdim=True)
    return (s * torch.rsqrt(var + EPS)).to(x.dtype) * w, s.to(x.dtype)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ours", required=True)
    ap.add_argument("--md")
    ap.add_argument("--raw", help="write torch's own figures here (JSON)")
    ap.add_argument("--compile-dtypes", default="bf16")
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    ours = {}
    with open(a.ours) as f:
        for line in f:
            r = json.loads(line)
            if r.get("backend", "cuda") != "cuda":
                continue
            ours[(r["op"], r["dtype"], r["rows"], r["hidden"])] = r
    comp_dts = set(a.compile_dtypes.split(",")) if a.compile_dtypes else set()
    torch._dynamo.config.cache_size_limit = 256
    c_plain = torch.compile(eager_formula)
    c_fused = torch.compile(fused_formula)
    res = {}
    dtypes = sorted({k[1] for k in ours}, key=["bf16", "f16", "f32"].index)
    shapes = list(dict.fromkeys((k[2], k[3]) for k in ours))  # in the benchmark's order
    for dn in dtypes:
        dt = DT[dn]
        for rows, hidden in shapes:
            if ("rms_norm", dn, rows, hidden) not in ours:
                continue
            eb = torch.finfo(dt).bits // 8
            set_bytes = rows * hidden * eb
            sets = max(1, min(64, math.ceil((256 << 20) / set_bytes)))
            iters = 30 if set_bytes > (256 << 20) else (100 if set_bytes > (16 << 20) else 400)
            if a.quick:
                iters //= 3
            xs = [torch.randn(rows, hidden, device="cuda").to(dt) for _ in range(sets)]
            rs = [torch.randn(rows, hidden, device="cuda").to(dt) for _ in range(sets)]
            w = torch.randn(hidden, device="cuda").to(dt)
            dst = torch.empty_like(xs[0])
            r = {}
            r["copy"] = median_us(lambda i: dst.copy_(xs[i % sets]), iters)
            r["eager"] = median_us(lambda i: F.rms_norm(xs[i % sets], (hidden,), w, EPS), iters)
            fr = {}
            if dn in comp_dts:
                t0 = time.time()
                c_plain(xs[0], w)
                c_fused(xs[0], rs[0], w)
                ct = time.time() - t0
                r["compile"] = median_us(lambda i: c_plain(xs[i % sets], w), iters)
                fr["compile"] = median_us(lambda i: c_fused(xs[i % sets], rs[i % sets], w), iters)
                print(f"  compiled {dn} {rows}x{hidden} in {ct:.1f} s", flush=True)
            res[("rms_norm", dn, rows, hidden)] = r
            res[("fused_add_rms_norm", dn, rows, hidden)] = fr
            print(f"torch {dn} {rows}x{hidden}: {r} fused {fr}", flush=True)
            del xs, rs, w, dst
            torch.cuda.empty_cache()

    if a.raw:
        with open(a.raw, "w") as f:
            json.dump([{"op": k[0], "dtype": k[1], "rows": k[2], "hidden": k[3], **v}
                       for k, v in res.items()], f, indent=0)
    name = torch.cuda.get_device_name()
    lines = [f"Device: {name}, torch {torch.__version__}. Median per call; % = copy time of the "
             "same bytes (our Rust copy) / time.", "",
             "| op | dtype | rows x hidden | ours us | ours % copy | candle_nn us | ours vs candle_nn "
             "| torch F.rms_norm us (% copy) | torch.compile us (% copy) | copy us |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for key, o in ours.items():
        op, dn, rows, hidden = key
        t = res.get(key, {})
        copy = o["copy_us"]

        def cell(v):
            return "not measured" if v is None else f"{v:.1f} ({100 * copy / v:.0f}%)"
        cnn = o.get("candle_nn_us")
        ous = o["ours_us"]
        cnn_s = "-" if cnn is None else f"{cnn:.1f}"
        spd = "-" if cnn is None else f"{cnn / ous:.2f}x"
        eag = cell(t.get("eager")) if op == "rms_norm" else "-"
        lines.append(
            f"| {op} | {dn} | {rows}x{hidden} | {ous:.1f} | {100 * copy / ous:.1f}% | {cnn_s} | {spd} | "
            f"{eag} | {cell(t.get('compile'))} | {copy:.1f} |")
    # torch's own copy next to ours, as a check of the ceiling
    lines.append("")
    lines.append("Copy check (torch dst.copy_(src) us vs ours): " + ", ".join(
        f"{k[1]} {k[2]}x{k[3]}: {v['copy']:.1f} vs {ours[k]['copy_us']:.1f}"
        for k, v in res.items() if "copy" in v))
    text = "\n".join(lines)
    print(text)
    if a.md:
        with open(a.md, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()

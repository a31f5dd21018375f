"""PyTorch's scaled_dot_product_attention at the Wan example's attention shapes, for comparison
with the example's own attention (examples/wan_t2v/src/dit.rs `attention`, timed by its run as
"inside DiT attention"): the Wan 2.1 1.3B DiT at 17 frames of 480x832 with classifier-free
guidance batched, i.e. batch 2, 12 heads of 128, 7800 tokens (5 x 30 x 52 latent patches),
self-attention over the tokens and cross-attention to 512 text tokens, bf16; 30 blocks of each
per denoising step. Also the example's algorithm in PyTorch (queries in chunks whose score
matrix holds at most 2^26 values, matmul, softmax, matmul) as a cross-check of what that
algorithm costs. Kernel times from CUDA events, medians of 20 after 5 warm-ups.

    python3 torch_attention.py [--json FILE]
"""
import argparse
import json
import statistics

import torch
import torch.nn.functional as F

B, H, L, D, LTXT, BLOCKS = 2, 12, 7800, 128, 512, 30


def median_ms(fn, reps=20, warm=5):
    for _ in range(warm):
        fn()
    times = []
    for _ in range(reps):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        torch.cuda.synchronize()
        times.append(s.elapsed_time(e))
    return statistics.median(times)


def chunked(q, k, v):
    """The example's attention: queries in chunks, scores in the input dtype."""
    b, h, lq, d = q.shape
    lk = k.shape[2]
    kt = k.transpose(-1, -2).contiguous()
    chunk = max(1, min(lq, (1 << 26) // max(1, b * h * lk)))
    outs = []
    for s in range(0, lq, chunk):
        sc = torch.matmul(q[:, :, s:s + chunk], kt) * (1.0 / d ** 0.5)
        outs.append(torch.matmul(torch.softmax(sc, dim=-1), v))
    return torch.cat(outs, dim=2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json")
    args = ap.parse_args()
    dev = torch.device("cuda")
    g = torch.Generator(device=dev).manual_seed(0)
    rnd = lambda *s: torch.randn(*s, device=dev, dtype=torch.bfloat16, generator=g)
    q, k, v = rnd(B, H, L, D), rnd(B, H, L, D), rnd(B, H, L, D)
    kc, vc = rnd(B, H, LTXT, D), rnd(B, H, LTXT, D)
    # Same function: SDPA and the chunked algorithm agree to bf16 rounding.
    err = (F.scaled_dot_product_attention(q, k, v) - chunked(q, k, v)).float().abs().max().item()
    rows = []
    for name, fn in [
        ("sdpa", lambda a, b_, c: F.scaled_dot_product_attention(a, b_, c)),
        ("chunked matmul+softmax (the example's algorithm)", chunked),
    ]:
        t_self = median_ms(lambda: fn(q, k, v))
        t_cross = median_ms(lambda: fn(q, kc, vc))
        step = BLOCKS * (t_self + t_cross)
        rows.append({"impl": name, "self_ms": t_self, "cross_ms": t_cross, "step_ms": step})
        print(f"| {name} | {t_self:.3f} | {t_cross:.3f} | {step:.1f} |")
    print(f"max |sdpa - chunked| = {err:.4f} (bf16 inputs of unit variance)")
    print(torch.__version__, torch.cuda.get_device_name(0),
          "sdpa backends: flash", torch.backends.cuda.flash_sdp_enabled(),
          "cudnn", torch.backends.cuda.cudnn_sdp_enabled(),
          "mem_efficient", torch.backends.cuda.mem_efficient_sdp_enabled())
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"shapes": {"B": B, "H": H, "L": L, "D": D, "text": LTXT, "blocks": BLOCKS},
                       "rows": rows, "max_abs_diff": err}, f, indent=1)


if __name__ == "__main__":
    print("| attention | self [2,12,7800,128] ms | cross (512 keys) ms | 30 blocks of each (one step) ms |")
    print("|---|---|---|---|")
    main()

"""PyTorch's Wan VAE RMS_norm (F.normalize over dim 1 * sqrt(C) * gamma) on the GPU, beside a
device copy of the same bytes: the peer figure for a norm over dim 1 (issue 11, part 2).

    python3 scripts/gpu/torch_channel_norm.py [--shape 1,384,21,60,104]

Median per call of CUDA-event-timed calls, inputs rotated over >= 256 MiB; % = copy time / time
(the copy reads and writes the tensor once, as the norm must).
"""
import argparse
import math

import torch
import torch.nn.functional as F


def timed(fn, args_list, reps=50):
    for a in args_list[:3]:
        fn(*a)
    torch.cuda.synchronize()
    times = []
    for i in range(reps):
        a = args_list[i % len(args_list)]
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn(*a)
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e) * 1000.0)
    times.sort()
    return times[len(times) // 2]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--shape", default="1,384,21,60,104")
    a = p.parse_args()
    shape = tuple(int(v) for v in a.shape.split(","))
    c = shape[1]
    print(torch.__version__, torch.cuda.get_device_name())
    for dt in (torch.bfloat16, torch.float32):
        nbytes = math.prod(shape) * torch.tensor([], dtype=dt).element_size()
        sets = max(1, (256 << 20) // nbytes + 1)
        xs = [torch.randn(shape, device="cuda", dtype=dt) for _ in range(sets)]
        outs = [torch.empty_like(x) for x in xs]
        gamma = torch.randn((c, 1, 1, 1), device="cuda", dtype=dt)
        scale = c ** 0.5

        def norm(x, o):
            return F.normalize(x, dim=1) * scale * gamma

        compiled = torch.compile(norm)
        copy = timed(lambda x, o: o.copy_(x), list(zip(xs, outs)))
        eager = timed(norm, list(zip(xs, outs)))
        comp = timed(compiled, list(zip(xs, outs)))
        name = str(dt).replace("torch.", "")
        print(f"{name} {a.shape}: copy {copy:.1f} us; F.normalize eager {eager:.1f} us "
              f"({copy / eager:.0%} of copy); torch.compile {comp:.1f} us ({copy / comp:.0%})")


if __name__ == "__main__":
    main()

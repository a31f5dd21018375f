"""Reference numbers for the example's UniPC sampler, from the Wan 2.1 reference scheduler itself.

Runs `FlowUniPCMultistepScheduler` of the official Wan 2.1 code (`wan/utils/fm_solvers_unipc.py`,
set up exactly as `wan/text2video.py` does: num_train_timesteps=1000, shift=1,
use_dynamic_shifting=False, then set_timesteps(steps, shift=shift)) on a toy problem whose
velocity field is known exactly, and writes the schedule and every intermediate sample as JSON.

The toy problem: data x0 ~ N(mu, s^2) independently per element, noise e ~ N(0, 1),
x_t = (1 - t) x0 + t e (the flow Wan is trained on, the model predicting v = e - x0). The exact
velocity is E[e - x0 | x_t = x]: with a = 1 - t and var = a^2 s^2 + t^2,
E[x0 | x] = mu + a s^2 (x - a mu) / var and E[e | x] = t (x - a mu) / var.

Needs torch, numpy, diffusers (the scheduler imports its base classes) and a checkout of
https://github.com/Wan-Video/Wan2.1:

    python unipc_reference.py --wan-repo /path/to/Wan2.1 > unipc_toy.json

The versions and the Wan 2.1 commit it ran with are recorded in the output (`versions`, `wan_commit`).
"""

import argparse
import importlib.util
import json
import sys

import numpy as np
import torch

# The sample's shape (the scheduler wants [batch, channels, ...] like the latents), and the data
# distribution per element (means, standard deviations).
SHAPE = (1, 2, 4)
MU = [0.5, -1.0, 2.0, 0.0, -0.25, 1.5, -2.0, 0.75]
STD = [0.3, 1.2, 0.05, 0.8, 2.0, 0.5, 0.1, 1.0]
# (steps, shift, seed of the starting noise).
CASES = [(20, 5.0, 1), (10, 3.0, 2), (4, 5.0, 3), (2, 1.0, 4), (1, 5.0, 5), (50, 5.0, 6)]


def velocity(x, t):
    mu = torch.tensor(MU, dtype=torch.float64).reshape(SHAPE)
    s2 = torch.tensor(STD, dtype=torch.float64).reshape(SHAPE) ** 2
    a = 1.0 - t
    var = a * a * s2 + t * t
    d = x.double() - a * mu
    e0 = mu + a * s2 * d / var
    e1 = t * d / var
    return (e1 - e0).float()


def load_scheduler(repo):
    path = f"{repo}/wan/utils/fm_solvers_unipc.py"
    spec = importlib.util.spec_from_file_location("fm_solvers_unipc", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.FlowUniPCMultistepScheduler


def run(cls, steps, shift, seed):
    sched = cls(num_train_timesteps=1000, shift=1, use_dynamic_shifting=False)
    sched.set_timesteps(steps, device="cpu", shift=shift)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(SHAPE, generator=gen, dtype=torch.float32)
    start = x.clone()
    samples = []
    for i, t in enumerate(sched.timesteps):
        sigma = float(sched.sigmas[i])
        v = velocity(x, sigma)
        x = sched.step(v, t, x, return_dict=False)[0]
        samples.append([float(u) for u in x.flatten()])
    return {
        "steps": steps,
        "shift": shift,
        "sigmas": [float(s) for s in sched.sigmas],
        "timesteps": [int(t) for t in sched.timesteps],
        "start": [float(u) for u in start.flatten()],
        "samples": samples,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--wan-repo", required=True)
    ap.add_argument("--wan-commit", default="unknown")
    args = ap.parse_args()
    cls = load_scheduler(args.wan_repo)
    out = {
        "about": "FlowUniPCMultistepScheduler of Wan 2.1 on an exact toy velocity field; "
        "see unipc_reference.py",
        "wan_commit": args.wan_commit,
        "versions": {"torch": torch.__version__, "numpy": np.__version__,
                     "diffusers": __import__("diffusers").__version__,
                     "python": sys.version.split()[0]},
        "mu": MU,
        "std": STD,
        "cases": [run(cls, *c) for c in CASES],
    }
    json.dump(out, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()

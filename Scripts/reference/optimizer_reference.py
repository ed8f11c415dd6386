#!/usr/bin/env python3
"""Reference numbers for LongMixerNN's optimizers, gradient clipping and learning-rate schedules.

Runs torch.optim.SGD / Adam / AdamW on fixed seeded parameters with a fixed sequence of five
gradients (one parameter has no gradient on odd steps, so optimizers must skip it there), records
the parameters after every step, runs torch.nn.utils.clip_grad_norm_, and evaluates torch's
LambdaLR / StepLR / CosineAnnealingLR for every schedule. Writes Tests/Fixtures/optimizer_reference.json,
which Tests/LongMixerNNTests/OptimizerTests.swift reads.

Regenerate (from the package root):

    python3 Scripts/reference/optimizer_reference.py

Every hyper-parameter is rounded to float32 before torch sees it, so that the Swift side (which
holds Float hyper-parameters) starts from exactly the same numbers.
"""
import json
import math
import pathlib

import numpy as np
import torch

torch.set_num_threads(1)
ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "Tests" / "Fixtures" / "optimizer_reference.json"

SHAPES = [[4, 5], [7], [2, 3]]
STEPS = 5


def f32(x):
    """x rounded to float32, as a Python float (exactly the value a Swift Float holds)."""
    return float(np.float32(x))


def flat(t):
    return [float(v) for v in t.detach().reshape(-1).tolist()]


gen = torch.Generator().manual_seed(20240611)
initial = [torch.randn(s, generator=gen) for s in SHAPES]
# Gradient k of parameter i; parameter 2 has no gradient on odd steps (None → skipped by torch).
gradients = []
for k in range(STEPS):
    step = []
    for i, s in enumerate(SHAPES):
        if i == 2 and k % 2 == 1:
            step.append(None)
        else:
            step.append(torch.randn(s, generator=gen) * (0.5 + k))
    gradients.append(step)


def run(make_optimizer, learning_rates=None):
    params = [torch.nn.Parameter(t.clone()) for t in initial]
    opt = make_optimizer(params)
    history = []
    for k in range(STEPS):
        if learning_rates is not None:
            for group in opt.param_groups:
                group["lr"] = learning_rates[k]
        opt.zero_grad(set_to_none=True)
        for p, g in zip(params, gradients[k]):
            p.grad = None if g is None else g.clone()
        opt.step()
        history.append([flat(p) for p in params])
    return history


optimizers = []


def add_optimizer(name, kind, make, learning_rates=None, **hyper):
    optimizers.append(dict(name=name, kind=kind, learning_rates=learning_rates,
                           after_step=run(make, learning_rates), **hyper))


lr = f32(0.1)
add_optimizer("sgd_plain", "sgd", lambda p: torch.optim.SGD(p, lr=lr), learning_rate=lr)

lr, mu, damp, wd = f32(0.05), f32(0.9), f32(0.1), f32(0.01)
add_optimizer("sgd_momentum_dampening_decay", "sgd",
              lambda p: torch.optim.SGD(p, lr=lr, momentum=mu, dampening=damp, weight_decay=wd),
              learning_rate=lr, momentum=mu, dampening=damp, weight_decay=wd)

lr, mu, wd = f32(0.05), f32(0.9), f32(0.001)
add_optimizer("sgd_nesterov", "sgd",
              lambda p: torch.optim.SGD(p, lr=lr, momentum=mu, weight_decay=wd, nesterov=True),
              learning_rate=lr, momentum=mu, weight_decay=wd, nesterov=True)

lr = f32(0.01)
add_optimizer("adam_default", "adam", lambda p: torch.optim.Adam(p, lr=lr), learning_rate=lr,
              beta1=f32(0.9), beta2=f32(0.999), epsilon=f32(1e-8), weight_decay=0.0)

lr, b1, b2, eps, wd = f32(0.02), f32(0.8), f32(0.99), f32(1e-6), f32(0.1)
add_optimizer("adam_weight_decay", "adam",
              lambda p: torch.optim.Adam(p, lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd),
              learning_rate=lr, beta1=b1, beta2=b2, epsilon=eps, weight_decay=wd)

# beta1 < 0.5 makes ATen's lerp take its other branch (weight 1 − beta1 ≥ 0.5).
lr, b1, b2, eps = f32(0.03), f32(0.3), f32(0.9), f32(1e-3)
add_optimizer("adam_small_beta1", "adam",
              lambda p: torch.optim.Adam(p, lr=lr, betas=(b1, b2), eps=eps),
              learning_rate=lr, beta1=b1, beta2=b2, epsilon=eps, weight_decay=0.0)

lr, wd = f32(0.01), f32(0.01)
add_optimizer("adamw_default", "adamw", lambda p: torch.optim.AdamW(p, lr=lr), learning_rate=lr,
              beta1=f32(0.9), beta2=f32(0.999), epsilon=f32(1e-8), weight_decay=wd)

# The learning rate changes before every step (as a schedule would set it).
rates = [f32(0.001 * (k + 1)) for k in range(STEPS)]
b1, b2, eps, wd = f32(0.85), f32(0.995), f32(1e-7), f32(0.2)
add_optimizer("adamw_changing_rate", "adamw",
              lambda p: torch.optim.AdamW(p, lr=rates[0], betas=(b1, b2), eps=eps, weight_decay=wd),
              learning_rates=rates, learning_rate=rates[0], beta1=b1, beta2=b2, epsilon=eps, weight_decay=wd)

# Gradient clipping.
clipping = []
for max_norm, k in [(1.0, 0), (1000.0, 1), (0.25, 4), (5.0, 3)]:
    params = [torch.nn.Parameter(t.clone()) for t in initial]
    for p, g in zip(params, gradients[k]):
        p.grad = None if g is None else g.clone()
    before = [None if p.grad is None else flat(p.grad) for p in params]
    total = torch.nn.utils.clip_grad_norm_(params, max_norm=f32(max_norm))
    clipping.append(dict(max_norm=f32(max_norm), gradients=before, total_norm=float(total),
                         clipped=[None if p.grad is None else flat(p.grad) for p in params]))


# Schedules: torch's value of group["lr"] before update `step` (scheduler.step() called `step` times).
def torch_rates(make_scheduler, base_lr, count):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=base_lr)
    sched = make_scheduler(opt)
    values = []
    for _ in range(count):
        values.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return values


schedules = []
LambdaLR = torch.optim.lr_scheduler.LambdaLR


def add_schedule(name, kind, values, **fields):
    schedules.append(dict(name=name, kind=kind, learning_rates=values, **fields))


base = f32(0.003)
add_schedule("constant", "constant", torch_rates(lambda o: LambdaLR(o, lambda s: 1.0), base, 12),
             learning_rate=base)

for warmup in [10, 0, 1]:
    peak = f32(1e-3)
    add_schedule(f"linear_warmup_{warmup}", "linear_warmup",
                 torch_rates(lambda o: LambdaLR(o, lambda s: min(s / warmup, 1.0) if warmup > 0 else 1.0), peak, 30),
                 peak_learning_rate=peak, warmup_steps=warmup)


def fairseq_inverse_sqrt(peak, warmup, init):
    # fairseq/optim/lr_scheduler/inverse_square_root_schedule.py, as a factor of the peak.
    lr_step = (peak - init) / warmup
    decay_factor = peak * warmup ** 0.5

    def factor(step):
        lr = init + step * lr_step if step < warmup else decay_factor * step ** -0.5
        return lr / peak
    return factor


for warmup, init in [(8, 0.0), (1, 0.0), (16, f32(1e-7))]:
    peak = f32(5e-4)
    add_schedule(f"inverse_sqrt_{warmup}", "inverse_sqrt",
                 torch_rates(lambda o: LambdaLR(o, fairseq_inverse_sqrt(peak, warmup, init)), peak, 60),
                 peak_learning_rate=peak, warmup_steps=warmup, initial_learning_rate=init)


def warmup_cosine(peak, warmup, total, minimum):
    def factor(step):
        if step < warmup:
            return step / warmup
        progress = min((step - warmup) / (total - warmup), 1.0)
        return (minimum + (peak - minimum) * 0.5 * (1.0 + math.cos(math.pi * progress))) / peak
    return factor


peak, minimum = f32(1e-3), f32(1e-5)
add_schedule("warmup_cosine", "warmup_cosine",
             torch_rates(lambda o: LambdaLR(o, warmup_cosine(peak, 5, 30, minimum)), peak, 40),
             peak_learning_rate=peak, warmup_steps=5, total_steps=30, minimum_learning_rate=minimum)
# No warm-up: torch's own CosineAnnealingLR over the `total` steps (it is periodic after T_max, so stop there).
add_schedule("cosine_annealing", "warmup_cosine",
             torch_rates(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=30, eta_min=minimum), peak, 31),
             peak_learning_rate=peak, warmup_steps=0, total_steps=30, minimum_learning_rate=minimum)

for step_size, gamma in [(7, f32(0.5)), (1, f32(0.9))]:
    base = f32(0.1)
    add_schedule(f"step_{step_size}", "step",
                 torch_rates(lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=step_size, gamma=gamma), base, 30),
                 initial_learning_rate=base, step_size=step_size, gamma=gamma)

fixture = dict(
    torch_version=torch.__version__,
    shapes=SHAPES,
    initial=[flat(t) for t in initial],
    gradients=[[None if g is None else flat(g) for g in step] for step in gradients],
    optimizers=optimizers,
    clipping=clipping,
    schedules=schedules,
)
OUT.parent.mkdir(parents=True, exist_ok=True)
OUT.write_text(json.dumps(fixture, indent=1) + "\n")
print(f"wrote {OUT.relative_to(ROOT)}: {len(optimizers)} optimizer runs, {len(clipping)} clipping cases, "
      f"{len(schedules)} schedules (torch {torch.__version__})")

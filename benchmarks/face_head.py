"""Training rate of the paper's face head on cached features (issue 5: face_head_gflops_fraction).

Workload: the head 4096 -> 4096 -> 2048 -> 1024 -> 1 (27.3M parameters, 108 MB per client) of 100 clients, each
with its own weights (the ``local`` regime's worst case: ~11 GB in all), plain SGD at batch 16 on 4096-d inputs
(VGG-Face FC7 features), sigmoid output with binary cross-entropy. The engine's ``fused`` backend trains them;
its achieved FLOP/s is divided by the machine's fp32 matmul FLOP/s measured in the same process with the same
threads. For reference, the plain ``nn.Sequential`` + ``optim.SGD`` step on the same head is measured too.

Each client takes ``steps`` local SGD steps (default 7: one local epoch of the paper's 13,792 faces split 80/20
over 100 clients, ~110 training images each, batch 16); the detail also reports a single step per client, where
the fused backend's input-layer deferral has nothing to batch.

FLOPs are the ones plain SGD executes: forward, weight gradients and the input gradients of every layer but the
first (its input is data; nobody computes that gradient).
"""

from __future__ import annotations

import gc
import time
from typing import Any

import torch
from torch import nn

from benchmarks.timing import executed_mlp_flops, matmul_flops, seconds_per_call
from fedmtl.backends import LocalSGD
from fedmtl.fused import FusedMLP
from fedmtl.models import mlp
from fedmtl.schedule import make_schedule

__all__ = ["run", "SIZES"]

SIZES = (4096, 4096, 2048, 1024, 1)


def _plain_step_seconds(batch: int, repeats: int) -> float:
    head = mlp(SIZES, seed=0)
    opt = torch.optim.SGD(head.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(batch, SIZES[0], generator=g), (torch.rand(batch, 1, generator=g) > 0.5).float()
    loss_fn = nn.BCEWithLogitsLoss()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(head(x), y).backward()
        opt.step()

    return seconds_per_call(step, warmup=2, repeats=repeats)


def _fused_seconds_per_step(clients: int, batch: int, steps: int) -> float:
    """Train ``clients`` heads (own weights each) for ``steps`` SGD steps each with the fused backend."""
    head = mlp(SIZES, seed=0)
    backend = FusedMLP(head)
    params = {n: p.detach().unsqueeze(0).repeat(clients, *[1] * p.dim()) for n, p in head.named_parameters()}
    del head
    g = torch.Generator().manual_seed(0)
    n = batch * steps
    x = torch.randn(clients * n, SIZES[0], generator=g)
    x = torch.nn.functional.normalize(x, dim=1)  # like VGG-Face's L2-normalised FC7 output
    y = (torch.rand(clients * n, 1, generator=g) > 0.5).float()
    schedule = make_schedule(torch.full((clients,), n), torch.arange(clients) * n, batch, 1, g)
    sgd = LocalSGD(lr=0.01, momentum=0.0, loss="bce", update=list(params))
    warm = make_schedule(torch.full((2,), n), torch.arange(2) * n, batch, 1, g)
    backend.train({k: v[:2] for k, v in params.items()}, x, y, warm, sgd)
    start = time.perf_counter()
    backend.train(params, x, y, schedule, sgd)
    seconds = time.perf_counter() - start
    finite = all(bool(torch.isfinite(v[-1]).all()) for v in params.values())
    del params
    gc.collect()
    if not finite:
        raise RuntimeError("face head benchmark: weights became NaN/Inf")
    return seconds / (clients * steps)


def run(clients: int = 100, batch: int = 16, steps: int = 7, threads: int = 2, repeats: int = 5) -> dict[str, Any]:
    torch.set_num_threads(threads)
    per_step = _fused_seconds_per_step(clients, batch, steps)
    one_step = _fused_seconds_per_step(clients, batch, 1)
    peak = matmul_flops(threads)
    plain = _plain_step_seconds(batch, repeats)
    macs = sum(a * b for a, b in zip(SIZES[:-1], SIZES[1:], strict=True))
    flops_per_step = executed_mlp_flops(SIZES, batch)
    rate = flops_per_step / per_step
    return {
        "face_head_gflops_fraction": rate / peak,
        "face_head_detail": {
            "workload": f"{clients} clients x {steps} steps, head {list(SIZES)} ({macs / 1e6:.1f}M weights per "
                        f"client), batch {batch}, plain SGD, BCE, {threads} threads, fused backend",
            "flops_convention": "executed: forward, weight gradients, input gradients of every layer but the first; "
                                "2 FLOPs per multiply-add",
            "matmul_gflops": peak / 1e9,
            "fused_gflops": rate / 1e9,
            "fused_ms_per_step": 1000 * per_step,
            "one_step_per_client_fraction": flops_per_step / one_step / peak,
            "one_step_per_client_ms": 1000 * one_step,
            "plain_ms_per_step": 1000 * plain,
            "plain_fraction": flops_per_step / plain / peak,
            "fused_vs_plain": plain / per_step,
        },
    }

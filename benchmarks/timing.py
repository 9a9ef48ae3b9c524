"""Measuring helpers shared by the speed benchmarks."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

import torch

from fedmtl.gram import path_flops, pays

__all__ = ["executed_mlp_flops", "stacked_round_flops", "matmul_flops", "matmul_flops_per_cpu_second",
           "seconds_per_call"]


def matmul_flops(threads: int, n: int = 1024, repeats: int = 20, trials: int = 5, *,
                 clock: Callable[[], float] = time.perf_counter) -> float:
    """The machine's fp32 matmul rate (FLOP/s, best of ``trials``) with ``threads`` torch threads, timed by
    ``clock`` (wall time by default)."""
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
    out = torch.empty(n, n)
    for _ in range(3):
        torch.mm(a, b, out=out)
    best = float("inf")
    for _ in range(trials):
        start = clock()
        for _ in range(repeats):
            torch.mm(a, b, out=out)
        best = min(best, clock() - start)
    return repeats * 2 * n**3 / best


def executed_mlp_flops(sizes: tuple[int, ...] | list[int], samples: int) -> int:
    """FLOPs that plain SGD on an MLP executes for ``samples`` sample-steps: per layer a forward and a weight
    gradient matmul, and an input gradient for every layer but the first (its input is data, so nobody computes
    it). Two FLOPs per multiply-add; bias adds and activations are left out (under 0.1% here)."""
    macs = [a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
    return (4 * sum(macs) + 2 * sum(macs[1:])) * samples


def stacked_round_flops(sizes: tuple[int, ...] | list[int], rows: Sequence[int], epochs: int, batch: int) -> int:
    """FLOPs that one round of ``StackedMLP`` local training executes (plain SGD, every layer trained, clients of
    ``rows`` rows): like :func:`executed_mlp_flops`, except that clients on the Gram path (:mod:`fedmtl.gram`)
    execute its input-layer work instead (``Z = X W`` and ``W -= lr X^T D`` over their rows, and per step the
    update of every row of ``Z``, padded rows of the stack included). Their Gram matrices, computed once per
    stack of clients and then cached, are left out (under 0.5% of a 100-round HAR run)."""
    fan_in, fan_out = sizes[0], sizes[1]
    steps = [epochs * -(-n // batch) for n in rows]
    on = [pays(n, s, batch, fan_in, fan_out, True) for n, s in zip(rows, steps, strict=True)]
    width = max((n for n, g in zip(rows, on, strict=True) if g), default=0)
    total = 0
    for n, s, gram in zip(rows, steps, on, strict=True):
        samples = n * epochs
        first = 4 * fan_in * fan_out * samples  # the direct path, counted in real samples as executed_mlp_flops
        total += executed_mlp_flops(sizes, samples) - first
        total += path_flops(n, s, batch, fan_in, fan_out, width=width)[0] if gram else first
    return total


def matmul_flops_per_cpu_second(threads: int, n: int = 1024, repeats: int = 20, trials: int = 5) -> float:
    """fp32 matmul FLOPs per CPU-second of this process (all threads together): on a machine shared with other
    jobs, time spent waiting for a core does not count, so a ratio of two such rates survives the sharing."""
    return matmul_flops(threads, n, repeats, trials, clock=time.process_time)


def seconds_per_call(fn: Callable[[], object], *, warmup: int = 1, repeats: int = 5) -> float:
    """Median wall time of ``fn`` after warm-up: the steady state, robust to one noisy call."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)

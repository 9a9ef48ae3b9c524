"""The vectorised engine against a plain per-client loop on the HAR workload (issue: engine_vs_loop_har).

Workload: the ``mtfl`` regime on 30 subjects, 5 local epochs of batch 32 per round, plain SGD. Both sides run
the same model, data, batch schedule and rounds; the loop is the fair baseline (nn.Module + optim.SGD per
client, tensors indexed directly, no DataLoader) at its best thread count.
"""

from __future__ import annotations

from typing import Any

import torch

from benchmark.har import HarSuiteConfig, har_workload
from benchmark.regimes import REGIMES
from benchmark.runner import layer_spec
from benchmarks.timing import executed_mlp_flops, matmul_flops, seconds_per_call, stacked_round_flops
from fedmtl import Federation, Simulation, mlp

__all__ = ["run"]


def _round_seconds(workload: Any, backend: str, threads: int, repeats: int, gram: bool = True) -> float:
    """Seconds per round; ``gram=False`` keeps every client's input layer on the direct path (the stacked
    backend's ``gram_max_ratio`` set to 0), the baseline the Gram path is measured against."""
    torch.set_num_threads(threads)
    regime = REGIMES["mtfl"]
    config = workload.base.replace(backend=backend, threads=threads, seed=0)
    sim = Simulation(mlp(workload.data.sizes, seed=0), layer_spec(regime, len(workload.data.sizes) - 1),
                     Federation(workload.data.clients), config)
    if not gram:
        sim.backend.gram_max_ratio = 0.0
    return seconds_per_call(sim.step, warmup=1, repeats=repeats)


def run(repeats: int = 5, thread_options: tuple[int, ...] = (1, 2)) -> dict[str, Any]:
    workload = har_workload(HarSuiteConfig(), progress=False)
    cfg = workload.base
    samples = sum(c.num_train for c in workload.data.clients)
    plain = executed_mlp_flops(workload.data.sizes, samples * cfg.local_epochs)
    flops = stacked_round_flops(workload.data.sizes, [c.num_train for c in workload.data.clients], cfg.local_epochs,
                                cfg.batch_size)
    times = {(b, t): _round_seconds(workload, b, t, repeats) for b in ("stacked", "loop") for t in thread_options}
    direct = {t: _round_seconds(workload, "stacked", t, repeats, gram=False) for t in thread_options}
    best_loop = min(thread_options, key=lambda t: times[("loop", t)])
    best_engine = min(thread_options, key=lambda t: times[("stacked", t)])
    peak = matmul_flops(best_engine)
    engine_s, loop_s = times[("stacked", best_engine)], times[("loop", best_loop)]
    return {
        "engine_vs_loop_har": loop_s / engine_s,
        "engine_har_peak_fraction": flops / engine_s / peak,
        "engine_har_detail": {
            "workload": f"HAR mtfl, {len(workload.data.clients)} clients, {samples} train windows, model "
                        f"{list(workload.data.sizes)}, {cfg.local_epochs} local epochs, batch {cfg.batch_size}, "
                        "plain SGD",
            "flops_per_round": flops,
            "flops_convention": "executed by the stacked engine: forward, weight gradients and the input "
                                "gradients of every layer but the first (never computed), except that the input "
                                "layer of clients on the Gram path (fedmtl.gram) counts that path's matmuls "
                                "instead; 2 FLOPs per multiply-add",
            "plain_sgd_flops_per_round": plain,
            "plain_sgd_fraction": plain / engine_s / peak,
            "plain_sgd_note": "the FLOPs plain step-by-step SGD would execute for the same round (samples x "
                              "epochs): the work the engine does, per second, in plain SGD's currency",
            "seconds_per_round": {f"{b}@{t}threads": s for (b, t), s in times.items()},
            "seconds_per_round_direct_input_layer": {f"stacked@{t}threads": s for t, s in direct.items()},
            "gram_path_speedup": min(direct.values()) / engine_s,
            "engine_threads": best_engine,
            "loop_threads": best_loop,
            "matmul_gflops": peak / 1e9,
            "engine_gflops": flops / engine_s / 1e9,
        },
    }

"""How the local SGD of many clients is computed: one protocol, three implementations.

- ``StackedMLP``: the fast path for ReLU MLP heads (the paper's models). Client weights are stacked into
  ``[C, in, out]`` tensors; every step is a handful of batched matmuls over all clients, the backward pass is
  written out by hand and the SGD update lands in place in the weights (``baddbmm_``), so no gradient tensor is
  ever materialised.
- ``VmapBackend``: any ``torch.nn.Module`` head, vectorised with ``torch.func.vmap(grad(...))``.
- ``LoopBackend``: a plain per-client loop with ``nn.Module`` + ``torch.optim.SGD``; the baseline the others are
  measured and checked against.

All three consume the same :class:`~fedmtl.schedule.BatchSchedule`, so they follow the same trajectory.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import nn

import fedmtl.gram as gram_path
from fedmtl.fused import FusedMLP
from fedmtl.losses import loss_grad, loss_value
from fedmtl.schedule import BatchSchedule
from fedmtl.scratch import Scratch

__all__ = ["LocalSGD", "Backend", "StackedMLP", "VmapBackend", "LoopBackend", "make_backend", "BACKENDS"]

Params = dict[str, torch.Tensor]


@dataclass
class LocalSGD:
    """Hyper-parameters and per-client state of one local-training phase.

    ``update`` names the parameters that move in this phase (others still pass gradients through); ``buffers``
    holds momentum buffers for them; ``prox`` maps a parameter to its proximal coefficient per client (``[C]``:
    FedProx's mu, Ditto's lambda) and ``anchors`` to the value it is pulled towards.
    """

    lr: float
    momentum: float
    loss: str
    update: list[str]
    buffers: Params = field(default_factory=dict)
    prox: dict[str, torch.Tensor] = field(default_factory=dict)
    anchors: Params = field(default_factory=dict)


class Backend(Protocol):
    name: str

    def to_native(self, name: str, value: torch.Tensor) -> torch.Tensor: ...

    def from_native(self, name: str, value: torch.Tensor) -> torch.Tensor: ...

    def forward(self, params: Params, x: torch.Tensor) -> torch.Tensor: ...

    def train(
        self, params: Params, x: torch.Tensor, y: torch.Tensor, schedule: BatchSchedule, sgd: LocalSGD
    ) -> None: ...


def _gather(t: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    return t.index_select(0, rows.reshape(-1)).view(*rows.shape, *t.shape[1:])


def _per_client(coef: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A ``[C]`` coefficient shaped to broadcast against a client-stacked tensor."""
    return coef.view(-1, *([1] * (like.dim() - 1)))


def _step_factors(sgd: LocalSGD, active: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-client learning rate and momentum that freeze clients which have finished their steps."""
    act = active.float().view(-1, 1, 1)
    return act * sgd.lr, torch.where(act > 0, sgd.momentum, 1.0)


class StackedMLP:
    """Batched matmuls over stacked client weights with a hand-written backward and fused in-place SGD."""

    name = "stacked"

    # The Gram path (fedmtl.gram) is taken by a client whose input layer costs at most this fraction of the direct
    # path's FLOPs there; 0 switches it off (the baseline it is measured against).
    gram_max_ratio = gram_path.MAX_COST_RATIO

    def __init__(self, head: nn.Sequential) -> None:
        self.layers: list[tuple[str, str]] = []
        for child_name, child in head.named_children():
            if isinstance(child, nn.Linear):
                if child.bias is None:
                    raise TypeError("StackedMLP needs Linear layers with a bias")
                self.layers.append((f"{child_name}.weight", f"{child_name}.bias"))
            elif not isinstance(child, nn.ReLU):
                raise TypeError(f"StackedMLP supports Linear and ReLU layers, not {type(child).__name__}")
        linears = [m for m in head.children() if isinstance(m, nn.Linear)]
        self.sizes = [linears[0].in_features, *(m.out_features for m in linears)] if linears else []
        self._grams = gram_path.GramCache()
        self._scratch = Scratch()
        names = [type(c).__name__ for c in head.children()]
        expected = ["Linear" if i % 2 == 0 else "ReLU" for i in range(len(names))]
        if names != expected or names[-1] != "Linear":
            raise TypeError(f"StackedMLP needs alternating Linear/ReLU ending in Linear, got {names}")

    @staticmethod
    def supports(head: nn.Module) -> bool:
        try:
            StackedMLP(head)  # type: ignore[arg-type]
        except TypeError:
            return False
        return isinstance(head, nn.Sequential)

    def to_native(self, name: str, value: torch.Tensor) -> torch.Tensor:
        return value.t().contiguous() if name.endswith(".weight") else value.clone()

    def from_native(self, name: str, value: torch.Tensor) -> torch.Tensor:
        return value.transpose(-1, -2).contiguous() if name.endswith(".weight") else value.clone()

    def forward(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        h = x
        for i, (w, b) in enumerate(self.layers):
            h = torch.baddbmm(params[b].unsqueeze(1), h, params[w])
            if i < len(self.layers) - 1:
                h = h.relu_()
        return h

    def train(self, params: Params, x: torch.Tensor, y: torch.Tensor, schedule: BatchSchedule, sgd: LocalSGD) -> None:
        """Clients whose input layer is cheaper through their Gram matrix (:mod:`fedmtl.gram`) and the others
        train as two stacks; a client's path depends only on its own sizes, never on its stack-mates."""
        first, count = gram_path.client_spans(schedule.rows, schedule.weight > 0)
        gram = self._gram_clients(count, schedule, sgd)
        for use, part in ((True, gram), (False, ~gram)):
            if bool(part.any()):
                self._train(params, x, y, schedule, sgd, part.nonzero().squeeze(1),
                            (first, count) if use else None)

    def _gram_clients(self, rows: torch.Tensor, schedule: BatchSchedule, sgd: LocalSGD) -> torch.Tensor:
        """Per client (``rows``: its span), whether its input layer takes the Gram path: plain SGD on it, and
        :func:`fedmtl.gram.pays`."""
        w = self.layers[0][0]
        clients = schedule.rows.shape[1]
        if sgd.momentum != 0.0 or (w in sgd.prox and bool((sgd.prox[w] != 0).any())):
            return torch.zeros(clients, dtype=torch.bool)
        fan_in, fan_out, trains = self.sizes[0], self.sizes[1], w in sgd.update
        return torch.tensor([gram_path.pays(int(n), int(s), schedule.rows.shape[2], fan_in, fan_out, trains,
                                            self.gram_max_ratio)
                             for n, s in zip(rows.tolist(), schedule.client_steps().tolist(), strict=True)],
                            dtype=torch.bool)

    def client_workspace_bytes(self, rows: int, steps: int, batch: int) -> int:
        """A stacked client's temporaries beyond its model when it takes the Gram path, for memory plans."""
        if not gram_path.pays(rows, steps, batch, self.sizes[0], self.sizes[1], True, self.gram_max_ratio):
            return 0
        return gram_path.stack_bytes(rows, self.sizes[1])

    def _train(self, params: Params, x: torch.Tensor, y: torch.Tensor, schedule: BatchSchedule, sgd: LocalSGD,
               clients: torch.Tensor, spans: tuple[torch.Tensor, torch.Tensor] | None) -> None:
        """The stack's ``clients``, ordered by their number of steps (longest first), so the clients still training
        at any step are a prefix of the stack: each step computes on ``[:k]`` views and wastes nothing on clients
        that have already finished, and every update is a plain scalar-lr in-place op. With ``spans`` (each
        client's first row and row count) the input layer's forward and update go through
        :class:`fedmtl.gram.InputGram`."""
        steps = schedule.client_steps()[clients]
        order = clients[torch.argsort(steps, descending=True, stable=True)]
        identity = len(order) == len(schedule.active[0]) and bool(
            (order == torch.arange(len(order), device=order.device)).all())
        moved = [params, sgd.buffers, sgd.anchors, sgd.prox]
        work = moved if identity else [{n: t.index_select(0, order) for n, t in d.items()} for d in moved]
        p, buffers, anchors, prox = work
        taken = int(steps.max())  # later steps are padding for other clients
        rows, weight = schedule.rows[:taken, order], schedule.weight[:taken, order]
        active_count = schedule.active[:taken, order].sum(1).tolist()
        update = set(sgd.update)
        last = len(self.layers) - 1
        w0, b0 = self.layers[0]
        valid = weight > 0
        inputs_gram = None
        if spans is not None:
            inputs_gram = gram_path.InputGram(x, spans[0][order], spans[1][order], p[w0], sgd.lr, w0 in update,
                                              self._grams, self._scratch)
        plain = sgd.momentum == 0.0 and not any(n in prox for n in update)
        views: dict[str, torch.Tensor] = {}
        view_k = -1
        with torch.no_grad():
            for s, k in enumerate(active_count):
                if k != view_k:  # the active prefix shrank: views of the first k clients, made once per size
                    view_k, views = k, {n: t[:k] for n, t in p.items()}
                    views.update({f"{b}+": views[b].unsqueeze(1) for _, b in self.layers})
                    views.update({f"{w}^T": views[w].transpose(1, 2) for w, _ in self.layers})
                step_rows = rows[s, :k]
                if inputs_gram is None:
                    inputs = [_gather(x, step_rows)]
                    local = None
                else:
                    local = inputs_gram.local(step_rows, valid[s, :k])
                    inputs = [None]
                for i, (w, b) in enumerate(self.layers):
                    if i == 0 and local is not None:
                        z = inputs_gram.pre_activation(local, k).add_(views[f"{b}+"])
                    else:
                        z = torch.baddbmm(views[f"{b}+"], inputs[-1], views[w])
                    inputs.append(z.relu_() if i < last else z)
                dz = loss_grad(sgd.loss, inputs.pop(), _gather(y, step_rows), weight[s, :k])
                for i in range(last, -1, -1):
                    w, b = self.layers[i]
                    h_in = inputs[i]
                    dh = torch.bmm(dz, views[f"{w}^T"]) if i > 0 else None
                    if w in update:
                        if i == 0 and local is not None:
                            inputs_gram.step(local, dz)
                        elif plain:
                            views[w].baddbmm_(h_in.transpose(1, 2), dz, alpha=-sgd.lr)
                        else:
                            self._apply(p, buffers, anchors, prox, w, k, h_in.transpose(1, 2), dz, sgd)
                    if b in update:
                        if plain:
                            views[b].add_(dz.sum(1), alpha=-sgd.lr)
                        else:
                            self._apply(p, buffers, anchors, prox, b, k, None, dz.sum(1), sgd)
                    if dh is not None:
                        dz = torch.ops.aten.threshold_backward(dh, h_in, 0.0)
            if inputs_gram is not None:
                inputs_gram.finish(p[w0])
        if not identity:
            for n in update:
                params[n][order] = p[n]
                if n in sgd.buffers:
                    sgd.buffers[n][order] = buffers[n]

    def _apply(self, p: Params, buffers: Params, anchors: Params, prox: Params, name: str, k: int,
               left: torch.Tensor | None, right: torch.Tensor, sgd: LocalSGD) -> None:
        """p -= lr * (grad + prox) on the first k clients, with grad = left @ right (weights) or right (biases).

        Without momentum or a proximal term the gradient is never materialised: the matmul accumulates straight
        into the weights. With momentum the buffer update ``buf = m * buf + grad`` is one fused ``baddbmm_``.
        """
        param = p[name][:k]
        mu = _per_client(prox[name][:k], param) if name in prox else None
        if sgd.momentum == 0.0:
            if mu is not None:
                param.addcmul_(self._pull(param, anchors[name][:k]), mu, value=-sgd.lr)
            if left is None:
                param.add_(right, alpha=-sgd.lr)
            else:
                param.baddbmm_(left, right, alpha=-sgd.lr)
            return
        buf = buffers[name][:k]
        if left is None:
            buf.mul_(sgd.momentum).add_(right)
        else:
            buf.baddbmm_(left, right, beta=sgd.momentum)
        if mu is not None:
            buf.addcmul_(self._pull(param, anchors[name][:k]), mu)
        param.add_(buf, alpha=-sgd.lr)

    def _pull(self, param: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
        """``param - anchor`` in a reused buffer (:mod:`fedmtl.scratch`: a fresh weight-stack-sized tensor per step
        cost Ditto a third of its time in the kernel)."""
        return torch.sub(param, anchor, out=self._scratch.get("pull", param.shape, param))


class VmapBackend:
    """Any module: ``vmap(grad(loss))`` over the client dimension of stacked parameters."""

    name = "vmap"

    def __init__(self, head: nn.Module) -> None:
        if any(True for _ in head.buffers()):
            raise TypeError("VmapBackend does not support modules with buffers (e.g. BatchNorm statistics)")
        self.head = head

    def to_native(self, name: str, value: torch.Tensor) -> torch.Tensor:
        return value.clone()

    def from_native(self, name: str, value: torch.Tensor) -> torch.Tensor:
        return value.clone()

    def _forward_one(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(self.head, params, (x,))

    def forward(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.func.vmap(self._forward_one)(params, x)

    def train(self, params: Params, x: torch.Tensor, y: torch.Tensor, schedule: BatchSchedule, sgd: LocalSGD) -> None:
        trainable = list(sgd.update)
        frozen = {n: t for n, t in params.items() if n not in sgd.update}

        def client_loss(p: Params, fixed: Params, xb: torch.Tensor, yb: torch.Tensor, wb: torch.Tensor) -> torch.Tensor:
            logits = self._forward_one({**p, **fixed}, xb)
            return loss_value(sgd.loss, logits.unsqueeze(0), yb.unsqueeze(0), wb.unsqueeze(0))

        grad_fn = torch.func.vmap(torch.func.grad(client_loss))
        for s in range(schedule.steps):
            rows = schedule.rows[s]
            current = {n: params[n] for n in trainable}
            grads = grad_fn(current, frozen, _gather(x, rows), _gather(y, rows), schedule.weight[s])
            lr, mom = _step_factors(sgd, schedule.active[s])
            with torch.no_grad():
                for n in trainable:
                    p, g = params[n], grads[n]
                    shape = (-1,) + (1,) * (p.dim() - 1)
                    lr_n, mom_n = lr.view(shape), mom.view(shape)
                    if n in sgd.prox:
                        g = g + _per_client(sgd.prox[n], p) * (p - sgd.anchors[n])
                    if sgd.momentum:
                        buf = sgd.buffers[n].mul_(mom_n).add_(g * (lr_n > 0))
                        p.addcmul_(buf, lr_n, value=-1.0)
                    else:
                        p.addcmul_(g, lr_n, value=-1.0)


class LoopBackend:
    """The plain baseline: one ``nn.Module`` and one ``torch.optim.SGD`` per client, clients one after another."""

    name = "loop"

    def __init__(self, head: nn.Module) -> None:
        self.module = copy.deepcopy(head)

    def to_native(self, name: str, value: torch.Tensor) -> torch.Tensor:
        return value.clone()

    def from_native(self, name: str, value: torch.Tensor) -> torch.Tensor:
        return value.clone()

    def forward(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.stack([torch.func.functional_call(self.module, {n: t[c] for n, t in params.items()}, (x[c],))
                                for c in range(x.shape[0])])

    def train(self, params: Params, x: torch.Tensor, y: torch.Tensor, schedule: BatchSchedule, sgd: LocalSGD) -> None:
        module = self.module
        named = dict(module.named_parameters())
        for p in named.values():
            p.requires_grad_(False)
        for n in sgd.update:
            named[n].requires_grad_(True)
        steps = schedule.client_steps()
        for c in range(schedule.rows.shape[1]):
            with torch.no_grad():
                for n, p in named.items():
                    p.copy_(params[n][c])
            opt = torch.optim.SGD([named[n] for n in sgd.update], lr=sgd.lr, momentum=sgd.momentum)
            if sgd.momentum:
                for n in sgd.update:
                    opt.state[named[n]]["momentum_buffer"] = sgd.buffers[n][c].clone()
            for s in range(int(steps[c])):
                rows = schedule.rows[s, c]
                logits = module(x.index_select(0, rows))
                loss = loss_value(sgd.loss, logits.unsqueeze(0), y.index_select(0, rows).unsqueeze(0),
                                  schedule.weight[s, c].unsqueeze(0))
                for n, mu in sgd.prox.items():
                    if n in sgd.update and float(mu[c]):
                        loss = loss + 0.5 * float(mu[c]) * (named[n] - sgd.anchors[n][c]).pow(2).sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            with torch.no_grad():
                for n in sgd.update:
                    params[n][c].copy_(named[n])
                    if sgd.momentum:
                        sgd.buffers[n][c].copy_(opt.state[named[n]]["momentum_buffer"])


BACKENDS = {"stacked": StackedMLP, "vmap": VmapBackend, "loop": LoopBackend, "fused": FusedMLP}


def make_backend(name: str, head: nn.Module) -> Backend:
    """``auto`` picks the stacked fast path when the head is a ReLU MLP and falls back to vmap otherwise."""
    from fedmtl.errors import ConfigError

    if name == "auto":
        return StackedMLP(head) if StackedMLP.supports(head) else VmapBackend(head)  # type: ignore[arg-type]
    if name not in BACKENDS:
        raise ConfigError(f"backend {name!r} is unknown (known: auto, {', '.join(BACKENDS)})")
    try:
        return BACKENDS[name](head)
    except TypeError as exc:
        raise ConfigError(f"backend {name!r} cannot run this model: {exc}") from None

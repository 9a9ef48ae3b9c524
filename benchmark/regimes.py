"""Training regimes as data: which layers are common, task-specific or personal, and how clients train.

Every regime runs on the same engine; the paper's cases and the personalised-FL baselines differ only in the
layer types of the model's layers, in whether data is pooled, and in the local-training phases. None of them
has a round loop of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from fedmtl.config import Phase
from fedmtl.errors import ConfigError

__all__ = ["Regime", "REGIMES", "get_regimes", "custom_regime", "all_layers", "split_layers", "half", "one"]

LayerPlan = Callable[[int], tuple[str, ...]]

# Plans and phase builders are module-level functions (bound with functools.partial) so that regimes pickle
# and can be sent to worker processes.


def _plan_all(layer_type: str, n: int) -> tuple[str, ...]:
    return (layer_type,) * n


def _plan_split(lower: str, upper: str, upper_layers: Callable[[int], int], n: int) -> tuple[str, ...]:
    k = max(1, min(n - 1, upper_layers(n)))
    return (lower,) * (n - k) + (upper,) * k


def _plan_fixed(types: tuple[str, ...], n: int) -> tuple[str, ...]:
    return types


def half(n: int) -> int:
    """The upper half of ``n`` layers (rounded down): the paper's split."""
    return n // 2


def one(n: int) -> int:
    """Only the top layer."""
    return 1


def _fedrep_phases(local_epochs: int) -> tuple[Phase, ...]:
    return (Phase(local_epochs, ("personal",)), Phase(1, ("common",)))


def all_layers(layer_type: str) -> LayerPlan:
    """Every layer of one type (a plan that pickles, for worker processes)."""
    return partial(_plan_all, layer_type)


def split_layers(lower: str, upper: str, upper_layers: Callable[[int], int]) -> LayerPlan:
    """``upper_layers(n)`` top layers of type ``upper`` (at least one, at most n - 1), the rest ``lower``."""
    return partial(_plan_split, lower, upper, upper_layers)


@dataclass(frozen=True)
class Regime:
    """One row of a leaderboard.

    ``plan(n)`` gives the layer type of each of the model's n trainable layers, bottom to top. ``pooled`` trains
    a single model on all clients' data together (the centralised cases). ``phases`` builds FedRep-style
    alternating local training from the configured local epochs.
    """

    name: str
    summary: str
    plan: LayerPlan
    pooled: bool = False
    paper: bool = False
    phases: Callable[[int], tuple[Phase, ...]] | None = None
    reference: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def layer_types(self, n_layers: int) -> tuple[str, ...]:
        return self.plan(n_layers)

    def local_phases(self, local_epochs: int) -> tuple[Phase, ...]:
        return self.phases(local_epochs) if self.phases else ()


REGIMES: dict[str, Regime] = {
    r.name: r
    for r in [
        Regime("centralized_joint", "one model trained on all clients' data pooled", all_layers("common"),
               pooled=True, paper=True, reference="paper Table IV 'centralized joint'"),
        Regime("separate", "one model per client, trained on its own data only", all_layers("personal"), paper=True,
               reference="paper Table IV 'separate'"),
        Regime("mtfl", "the paper: lower half common (FedAvg over all), upper half personal",
               split_layers("common", "personal", half), paper=True,
               reference="paper section III/VI 'multi-task FL'"),
        Regime("fedavg", "the whole model global (FedAvg)", all_layers("common"), paper=True,
               reference="McMahan et al. 2017"),
        Regime("fedper", "all layers common but the output layer, which stays personal",
               split_layers("common", "personal", one), reference="Arivazhagan et al. 2019"),
        Regime("lg_fedavg", "local representation: lower half personal, upper half global",
               split_layers("personal", "common", half), reference="Liang et al. 2020"),
        Regime("fedrep", "common body, personal head; each round trains the head first, then the body",
               split_layers("common", "personal", one),
               phases=_fedrep_phases,
               reference="Collins et al. 2021 (head epochs = local epochs, body epochs = 1)"),
        Regime("ditto", "a global model (FedAvg) and per client a personal copy pulled towards it (lambda 0.1)",
               all_layers("common"), extra={"ditto_lambda": 0.1}, reference="Li et al. 2021"),
    ]
}


def custom_regime(layer_types: str) -> Regime:
    """A regime from a comma list of layer types, bottom to top (``--layers common,common,task,personal``).

    The list is taken as given: a list shorter than the model leaves its top layers untyped, which the layer
    spec validation then reports, rather than guessing what the user meant.
    """
    types = tuple(t.strip() for t in layer_types.split(",") if t.strip())
    if not types:
        raise ConfigError("--layers needs a comma list of layer types (common, task, personal, pretrained)")
    return Regime("custom", f"layer types {', '.join(types)}", partial(_plan_fixed, types))


def get_regimes(names: str | Sequence[str] | None, known: Mapping[str, Regime] = REGIMES,
                default: Sequence[Regime] | None = None, suite: str = "") -> list[Regime]:
    """Resolve a comma list (or ``None``/"all": ``default``, else every known regime) against a suite's
    regimes, failing on the first unknown name."""
    if names is None or names == "all":
        return list(known.values() if default is None else default)
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    if not names:
        raise ConfigError("no regime given (known: " + ", ".join(known) + ")")
    where = f" to the {suite} suite" if suite else ""
    out = []
    for name in names:
        if name not in known:
            raise ConfigError(f"regime {name!r} is unknown{where} (known: {', '.join(known)})")
        out.append(known[name])
    return out

"""fedmtl: federated multi-task learning with pre-trained, common, task-specific and personal layers."""

from fedmtl.aggregators import (
    AGGREGATORS,
    Aggregator,
    FedAdam,
    FedAvg,
    FedProx,
    FedYogi,
    Median,
    TrimmedMean,
    make_aggregator,
)
from fedmtl.backends import BACKENDS, LoopBackend, StackedMLP, VmapBackend, make_backend
from fedmtl.config import Phase, TrainConfig, load_config
from fedmtl.engine import Simulation
from fedmtl.errors import (
    CheckpointError,
    ConfigError,
    DatasetError,
    DivergedError,
    FedMTLError,
    FetchError,
    LayerSpecError,
)
from fedmtl.federation import Client, Federation
from fedmtl.layers import LayerSpec, LayerType, Partition, partition
from fedmtl.lockstep import Lockstep
from fedmtl.metrics import summarize
from fedmtl.models import mlp

__all__ = [
    "AGGREGATORS", "Aggregator", "FedAdam", "FedAvg", "FedProx", "FedYogi", "Median", "TrimmedMean",
    "make_aggregator", "BACKENDS", "LoopBackend", "StackedMLP", "VmapBackend", "make_backend", "Phase",
    "TrainConfig", "load_config", "Simulation", "CheckpointError", "ConfigError", "DatasetError", "FedMTLError",
    "FetchError", "LayerSpecError", "DivergedError", "Client", "Federation", "LayerSpec", "LayerType", "Partition",
    "partition", "summarize", "mlp", "Lockstep",
]

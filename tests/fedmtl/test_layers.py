import pytest
import torch
from torch import nn

from fedmtl import LayerSpec, LayerSpecError, LayerType, mlp, partition


def test_prefixes_type_every_parameter_and_freeze_pretrained():
    model = mlp([4, 8, 8, 2], seed=0)
    part = partition(model, LayerSpec.of(pretrained="fc1", common="fc2", personal="fc3"))
    assert part.types["fc1.weight"] is LayerType.PRETRAINED
    assert part.types["fc2.bias"] is LayerType.COMMON
    assert part.types["fc3.weight"] is LayerType.PERSONAL
    assert not model.fc1.weight.requires_grad and model.fc2.weight.requires_grad
    assert part.trainable == ["fc2.weight", "fc2.bias", "fc3.weight", "fc3.bias"]


def test_untyped_trainable_parameter_is_an_error_naming_it():
    with pytest.raises(LayerSpecError, match="fc3.weight"):
        partition(mlp([4, 8, 8, 2]), LayerSpec.of(common=["fc1", "fc2"]))


def test_frozen_untyped_parameters_count_as_pretrained():
    model = mlp([4, 8, 2])
    model.fc1.requires_grad_(False)
    assert partition(model, LayerSpec.of(common="fc2")).types["fc1.bias"] is LayerType.PRETRAINED


def test_prefix_matches_at_module_boundary_only():
    model = nn.Sequential(*[nn.Linear(2, 2) for _ in range(11)])
    with pytest.raises(LayerSpecError, match="without a layer type"):
        partition(model, LayerSpec({"1": "common", **{str(i): "common" for i in range(2, 10)}, "0": "task"}))
    full = {str(i): "common" for i in range(11)}
    assert partition(model, LayerSpec(full)).types["10.weight"] is LayerType.COMMON


@pytest.mark.parametrize("spec, message", [
    ({"fc1": "common", "fc1.weight": "task"}, "overlap"),
    ({"fc1": "global"}, "unknown"),
    ({}, "empty"),
])
def test_bad_specs(spec, message):
    with pytest.raises(LayerSpecError, match=message):
        LayerSpec(spec)


def test_prefix_that_matches_nothing_is_an_error():
    with pytest.raises(LayerSpecError, match="fc9"):
        partition(mlp([4, 2]), LayerSpec.of(common=["fc1", "fc9"]))


def test_group_form_refuses_a_name_twice():
    with pytest.raises(LayerSpecError, match="twice"):
        LayerSpec.of(common="fc1", task="fc1")


def test_partition_count():
    model = mlp([4, 8, 2])
    part = partition(model, LayerSpec.of(common="fc1", personal="fc2"))
    assert part.count(model, LayerType.COMMON) == 4 * 8 + 8
    assert torch.equal(torch.tensor(part.count(model, LayerType.PERSONAL)), torch.tensor(8 * 2 + 2))

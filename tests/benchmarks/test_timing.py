"""FLOP counts in the speed benchmarks: executed FLOPs only."""

from benchmarks.timing import executed_mlp_flops


def test_executed_flops_leave_out_the_first_input_gradient() -> None:
    # 3 -> 4 -> 2: forward 2*(12+8), weight gradients 2*(12+8), input gradient of the second layer only 2*8
    assert executed_mlp_flops([3, 4, 2], samples=1) == 2 * 20 + 2 * 20 + 2 * 8
    assert executed_mlp_flops([3, 4, 2], samples=5) == 5 * executed_mlp_flops([3, 4, 2], samples=1)


def test_a_single_layer_executes_only_its_forward_and_weight_gradient() -> None:
    assert executed_mlp_flops([10, 7], samples=3) == 3 * (2 * 70 + 2 * 70)

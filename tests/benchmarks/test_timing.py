"""FLOP counts in the speed benchmarks: executed FLOPs only."""

from benchmarks.timing import executed_mlp_flops


def test_executed_flops_leave_out_the_first_input_gradient() -> None:
    # 3 -> 4 -> 2: forward 2*(12+8), weight gradients 2*(12+8), input gradient of the second layer only 2*8
    assert executed_mlp_flops([3, 4, 2], samples=1) == 2 * 20 + 2 * 20 + 2 * 8
    assert executed_mlp_flops([3, 4, 2], samples=5) == 5 * executed_mlp_flops([3, 4, 2], samples=1)


def test_a_single_layer_executes_only_its_forward_and_weight_gradient() -> None:
    assert executed_mlp_flops([10, 7], samples=3) == 3 * (2 * 70 + 2 * 70)


def test_stacked_round_flops_count_the_gram_path_where_it_is_taken():
    from benchmarks.timing import stacked_round_flops

    sizes = [601, 128, 64, 32, 6]
    pooled = stacked_round_flops(sizes, [8331], epochs=5, batch=32)  # the direct path: plain SGD's count
    assert pooled == executed_mlp_flops(sizes, 8331 * 5)
    subjects = stacked_round_flops(sizes, [280, 250], epochs=5, batch=32)  # the Gram path, padded to 280 rows
    steps = [5 * 9, 5 * 8]
    rest = executed_mlp_flops(sizes, 530 * 5) - 4 * 601 * 128 * 530 * 5
    assert subjects == rest + 4 * 530 * 601 * 128 + 2 * sum(steps) * 280 * 32 * 128
    assert subjects < 0.55 * executed_mlp_flops(sizes, 530 * 5)

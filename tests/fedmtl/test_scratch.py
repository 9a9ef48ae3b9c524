import torch

from fedmtl.scratch import Scratch


def test_a_name_reuses_its_memory_and_grows_when_asked_for_more():
    scratch = Scratch()
    like = torch.empty(0)
    first = scratch.get("a", (4, 5), like)
    assert first.shape == (4, 5) and first.is_contiguous()
    again = scratch.get("a", (2, 3), like)
    assert again.data_ptr() == first.data_ptr()  # the same memory, viewed smaller
    bigger = scratch.get("a", (10, 10), like)
    assert bigger.shape == (10, 10) and bigger.data_ptr() != first.data_ptr()
    assert scratch.get("b", (4, 5), like).data_ptr() != bigger.data_ptr()  # names do not share
    assert scratch.get("a", (3,), torch.empty(0, dtype=torch.float64)).dtype == torch.float64


def test_zeros_clears_what_the_last_user_left():
    scratch = Scratch()
    scratch.get("z", (3, 3), torch.empty(0)).fill_(7.0)
    assert torch.equal(scratch.zeros("z", (3, 3), torch.empty(0)), torch.zeros(3, 3))

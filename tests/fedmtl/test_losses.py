import torch

from fedmtl.losses import correct_and_count, loss_grad, loss_value


def test_cross_entropy_grad_matches_autograd():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 4, 5, generator=g, requires_grad=True)
    y = torch.randint(0, 5, (3, 4), generator=g)
    w = torch.tensor([[0.25] * 4, [0.5, 0.5, 0, 0], [0.0] * 4])
    loss_value("cross_entropy", logits, y, w).backward()
    assert torch.allclose(loss_grad("cross_entropy", logits.detach(), y, w), logits.grad, atol=1e-6)
    assert (logits.grad[2] == 0).all()


def test_bce_masks_missing_labels():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 5, generator=g, requires_grad=True)
    y = torch.randint(0, 2, (2, 3, 5), generator=g).float()
    y[0, :, 1:] = float("nan")  # client 0 only labels output 0
    w = torch.full((2, 3), 1 / 3)
    loss_value("bce", logits, y, w).backward()
    grad = loss_grad("bce", logits.detach(), y, w)
    assert torch.allclose(grad, logits.grad, atol=1e-6)
    assert (grad[0, :, 1:] == 0).all() and (grad[0, :, 0] != 0).all()


def test_correct_and_count():
    logits = torch.tensor([[[2.0, 0.0], [0.0, 1.0], [5.0, 0.0]]])
    y = torch.tensor([[0, 0, 1]])
    valid = torch.tensor([[True, True, False]])
    correct, total = correct_and_count("cross_entropy", logits, y, valid)
    assert correct.tolist() == [1] and total.tolist() == [2]

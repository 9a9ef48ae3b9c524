import torch

from fedmtl.schedule import make_schedule


def test_every_sample_once_per_epoch_and_batch_means():
    sizes = torch.tensor([5, 12, 7])
    offsets = torch.cumsum(sizes, 0) - sizes
    sched = make_schedule(sizes, offsets, batch_size=4, epochs=3, generator=torch.Generator().manual_seed(0))
    per_epoch = (sizes + 3) // 4
    assert sched.steps == int(per_epoch.max() * 3)
    for c in range(3):
        steps = int(per_epoch[c] * 3)
        assert sched.active[:steps, c].all() and not sched.active[steps:, c].any()
        rows = sched.rows[:steps, c][sched.weight[:steps, c] > 0]
        local = rows - offsets[c]
        assert local.min() >= 0 and local.max() < sizes[c]
        assert torch.equal(torch.bincount(local, minlength=int(sizes[c])), torch.full((int(sizes[c]),), 3))
        sums = sched.weight[:steps, c].sum(-1)
        assert torch.allclose(sums, torch.ones(steps))
    assert (sched.weight[~sched.active] == 0).all()


def test_same_generator_state_same_schedule():
    sizes, offsets = torch.tensor([9, 4]), torch.tensor([0, 9])
    a = make_schedule(sizes, offsets, 3, 2, torch.Generator().manual_seed(1))
    b = make_schedule(sizes, offsets, 3, 2, torch.Generator().manual_seed(1))
    c = make_schedule(sizes, offsets, 3, 2, torch.Generator().manual_seed(2))
    assert torch.equal(a.rows, b.rows)
    assert not torch.equal(a.rows, c.rows)

import math

import torch

from fedmtl.metrics import summarize


def test_sample_weighted_and_client_mean_differ_as_defined():
    m = summarize(torch.tensor([9, 1]), torch.tensor([10, 2]), ["a", "b"], ["t", "u"])
    assert math.isclose(m["accuracy"], 100 * 10 / 12)
    assert math.isclose(m["client_mean_accuracy"], 100 * (0.9 + 0.5) / 2)
    assert m["per_task"] == {"t": 90.0, "u": 50.0}
    assert m["per_client"]["b"] == 50.0

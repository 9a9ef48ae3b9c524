"""One torch thread per test: the tiny models here gain nothing from more, and on a shared, loaded machine
spinning worker threads made a 0.3 s simulation take 18 s."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

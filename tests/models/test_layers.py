"""Shared layers: the channels-last BatchNorm is BatchNorm2d, statistics and state alike."""

from __future__ import annotations

import torch

from ablate.models.layers import BatchNormLast


def test_batchnorm_last_equals_batchnorm2d_on_the_permuted_input():
    torch.manual_seed(0)
    ours, ref = BatchNormLast(6), torch.nn.BatchNorm2d(6)
    ref.load_state_dict(ours.state_dict())
    for _ in range(2):  # training: batch statistics, and the running averages they update
        x = torch.randn(3, 4, 5, 6) * 2 + 1
        torch.testing.assert_close(ours(x), ref(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))
    for name, value in ref.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[name], value)
    ours.eval(), ref.eval()
    x = torch.randn(2, 3, 3, 6)
    torch.testing.assert_close(ours(x), ref(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))

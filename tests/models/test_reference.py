"""The oracle predicts dynamic weights itself, so a wrong fast mixer cannot agree with it.

Each test swaps a mixer's kernel code for a plausible mistake and checks that the comparison
the mixer tests make (fast output against :func:`reference_forward`) then fails.
"""

from __future__ import annotations

import pytest
import torch

from ablate.models.mixers import get_mixer
from ablate.models.mixers.dynamic_dwconv import DynamicDWConv
from ablate.models.mixers.idynamic_dwconv import IDynamicDWConv
from ablate.models.reference import reference_forward


def _mixer(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    mixer = get_mixer(name)(8, num_groups=4, kernel_size=3).double()
    with torch.no_grad():
        for p in mixer.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return mixer


def _agrees(mixer: torch.nn.Module, x: torch.Tensor) -> bool:
    return torch.allclose(mixer(x), reference_forward(mixer, x), rtol=1e-9, atol=1e-9)


@pytest.fixture
def x() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(2, 5, 6, 8, dtype=torch.float64)


@pytest.mark.parametrize("name", ["dynamic_dwconv", "idynamic_dwconv", "window_idynamic"])
def test_the_real_mixers_agree_with_the_oracle(name, x):
    assert _agrees(_mixer(name), x)


def test_max_pooling_instead_of_the_mean_is_caught(x, monkeypatch):
    def max_pooled(self, x):
        k = self.kernel_size
        pooled = x.amax(dim=(1, 2), keepdim=True)  # the mutant: max instead of mean
        return self.kernel_gen(pooled).view(x.shape[0], self.num_groups, k, k)

    mixer = _mixer("dynamic_dwconv")
    monkeypatch.setattr(DynamicDWConv, "kernels", max_pooled)
    assert not _agrees(mixer, x)


@pytest.mark.parametrize("dims", [1, 2], ids=["row_above", "column_left"])
def test_a_kernel_predicted_from_a_neighbouring_position_is_caught(x, monkeypatch, dims):
    right = IDynamicDWConv.kernels

    def from_neighbour(self, x):  # the mutant: position i reads the feature next to it
        return right(self, torch.roll(x, shifts=1, dims=dims))

    mixer = _mixer("idynamic_dwconv")
    monkeypatch.setattr(IDynamicDWConv, "kernels", from_neighbour)
    assert not _agrees(mixer, x)

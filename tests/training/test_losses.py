"""NT-Xent against an independent loop implementation, exact values, symmetry, gradients, bf16."""
from __future__ import annotations

import math

import pytest
import torch

from simpleclr.training.methods.simclr import nt_xent


def loop_nt_xent(z1: torch.Tensor, z2: torch.Tensor, tau: float) -> float:
    """The SimCLR paper's definition written out view by view in plain Python floats."""
    views = [list(map(float, row)) for row in torch.cat([z1, z2]).tolist()]
    views = [[v / math.sqrt(sum(x * x for x in row)) for v in row] for row in views]
    n2 = len(views)
    half = n2 // 2
    total = 0.0
    for i in range(n2):
        pos = i + half if i < half else i - half
        sims = [sum(a * b for a, b in zip(views[i], views[k])) / tau for k in range(n2)]
        denom = sum(math.exp(sims[k]) for k in range(n2) if k != i)
        total += -math.log(math.exp(sims[pos]) / denom)
    return total / n2


@pytest.mark.parametrize("n,d,tau", [(1, 3, 0.5), (4, 8, 0.1), (7, 5, 0.5), (16, 32, 1.0)])
def test_matches_loop_reference_float64(n: int, d: int, tau: float) -> None:
    g = torch.Generator().manual_seed(n * 100 + d)
    z1 = torch.randn(n, d, generator=g, dtype=torch.float64)
    z2 = torch.randn(n, d, generator=g, dtype=torch.float64)
    got = nt_xent(z1, z2, tau)
    assert got.dtype == torch.float64 and got.ndim == 0
    assert got.item() == pytest.approx(loop_nt_xent(z1, z2, tau), abs=1e-6)


def test_float32_matches_reference_and_scale_invariance() -> None:
    g = torch.Generator().manual_seed(3)
    z1, z2 = torch.randn(2, 12, 16, generator=g)
    ref = loop_nt_xent(z1.double(), z2.double(), 0.2)
    assert nt_xent(z1, z2, 0.2).item() == pytest.approx(ref, abs=1e-5)
    # L2 normalisation: rescaling any embedding changes nothing.
    scale = torch.rand(12, 1, generator=g) * 10 + 0.1
    assert nt_xent(z1 * scale, z2, 0.2).item() == pytest.approx(ref, abs=1e-5)


@pytest.mark.parametrize("n", [1, 2, 5, 64])
def test_identical_embeddings_give_log_2n_minus_1(n: int) -> None:
    z = torch.randn(1, 10, dtype=torch.float64).expand(n, 10)
    for tau in (0.1, 0.5, 2.0):
        assert nt_xent(z, z.clone(), tau).item() == pytest.approx(math.log(2 * n - 1), abs=1e-9)


def test_swapping_views_leaves_loss_unchanged() -> None:
    g = torch.Generator().manual_seed(7)
    z1, z2 = torch.randn(2, 9, 6, generator=g, dtype=torch.float64)
    assert nt_xent(z1, z2, 0.3).item() == pytest.approx(nt_xent(z2, z1, 0.3).item(), abs=1e-12)
    # Permuting the pairs together is also a symmetry; permuting one side alone is not.
    p = torch.randperm(9, generator=g)
    assert nt_xent(z1[p], z2[p], 0.3).item() == pytest.approx(nt_xent(z1, z2, 0.3).item(), abs=1e-12)
    assert nt_xent(z1[p], z2, 0.3).item() != pytest.approx(nt_xent(z1, z2, 0.3).item(), abs=1e-3)


def test_hand_computed_value() -> None:
    # Views a=e1, b=e2 (z1) and c=e1, d=-e1 (z2); pairs a-c and b-d; tau=1.
    # Row a: -1 + log(e^0 + e^1 + e^-1); row c the same; row b: log 3; row d: log(1 + 2/e).
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    z2 = torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=torch.float64)
    e = math.e
    expected = (2 * (-1 + math.log(1 + e + 1 / e)) + math.log(3) + math.log(1 + 2 / e)) / 4
    assert nt_xent(z1, z2, 1.0).item() == pytest.approx(expected, abs=1e-12)
    # Temperature 0.5 doubles every logit.
    expected_half = (2 * (-2 + math.log(1 + e**2 + e**-2)) + math.log(3) + math.log(1 + 2 / e**2)) / 4
    assert nt_xent(z1, z2, 0.5).item() == pytest.approx(expected_half, abs=1e-12)


def test_one_pair_has_zero_loss() -> None:
    # With N=1 the positive is the only other view.
    assert nt_xent(torch.randn(1, 4), torch.randn(1, 4), 0.5).item() == pytest.approx(0.0, abs=1e-7)


def test_gradcheck_float64() -> None:
    g = torch.Generator().manual_seed(11)
    z1 = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: nt_xent(a, b, 0.5), (z1, z2))


def test_bf16_autocast_close_to_fp32() -> None:
    g = torch.Generator().manual_seed(5)
    x = torch.randn(64, 32, generator=g)
    head = torch.nn.Linear(32, 16)
    with torch.no_grad():
        fp32 = nt_xent(head(x[:32]), head(x[32:]), 0.2)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            z1, z2 = head(x[:32]), head(x[32:])
            assert z1.dtype == torch.bfloat16
            bf16 = nt_xent(z1, z2, 0.2)
    assert bf16.dtype == torch.float32
    # The only difference left is the bf16 rounding of the embeddings (8 mantissa bits).
    assert bf16.item() == pytest.approx(fp32.item(), rel=1e-2)
    # And given the same bf16 embeddings, autocast changes nothing at all.
    assert nt_xent(z1, z2, 0.2).item() == bf16.item()


def test_gradients_flow_under_autocast() -> None:
    z1 = torch.randn(8, 6, requires_grad=True)
    z2 = torch.randn(8, 6, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = nt_xent(z1.bfloat16(), z2.bfloat16(), 0.5)
    loss.backward()
    assert z1.grad is not None and torch.isfinite(z1.grad).all() and z1.grad.abs().sum() > 0


@pytest.mark.parametrize("z1,z2,tau", [
    (torch.randn(4, 3), torch.randn(5, 3), 0.5),
    (torch.randn(4), torch.randn(4), 0.5),
    (torch.randn(4, 3), torch.randn(4, 3), 0.0),
])
def test_bad_input_is_refused(z1: torch.Tensor, z2: torch.Tensor, tau: float) -> None:
    with pytest.raises(ValueError, match="nt_xent"):
        nt_xent(z1, z2, tau)

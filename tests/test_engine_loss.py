"""The default local loss equals F.cross_entropy(reduction="none") bit for bit, forward and backward."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from edgelearn.engine import cross_entropy_loss


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize(("n", "classes"), [(1, 2), (16, 10), (37, 100)])
def test_default_loss_is_cross_entropy_bit_for_bit(dtype: torch.dtype, n: int, classes: int) -> None:
    gen = torch.Generator().manual_seed(n * classes)
    logits = (torch.randn(n, classes, generator=gen) * 5).to(dtype).requires_grad_()
    y = torch.randint(0, classes, (n,), generator=gen)
    upstream = torch.randn(n, generator=gen).to(dtype)
    ours = cross_entropy_loss(lambda x: x, {"x": logits, "y": y})
    reference = F.cross_entropy(logits, y, reduction="none")
    assert ours.dtype == reference.dtype and torch.equal(ours, reference)
    (g_ours,) = torch.autograd.grad(ours, logits, upstream)
    (g_ref,) = torch.autograd.grad(reference, logits, upstream)
    assert torch.equal(g_ours, g_ref)


def test_default_loss_matches_under_cpu_autocast() -> None:
    torch.manual_seed(0)
    layer = torch.nn.Linear(8, 10)
    x, y = torch.randn(16, 8), torch.randint(0, 10, (16,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = cross_entropy_loss(layer, {"x": x, "y": y})
        reference = F.cross_entropy(layer(x), y, reduction="none")
    assert ours.dtype == reference.dtype == torch.float32
    assert torch.equal(ours, reference)
    (g_ours,) = torch.autograd.grad(ours.sum(), layer.weight)
    (g_ref,) = torch.autograd.grad(reference.sum(), layer.weight)
    assert torch.equal(g_ours, g_ref)


def test_vmap_loss_does_not_import_sympy() -> None:
    import subprocess
    import sys

    code = (
        "import sys, torch\n"
        "from torch.func import vmap\n"
        "from edgelearn.engine import cross_entropy_loss\n"
        "x, y = torch.randn(3, 4, 5), torch.randint(0, 5, (3, 4))\n"
        "vmap(lambda a, b: cross_entropy_loss(lambda t: t, {'x': a, 'y': b}))(x, y)\n"
        "print('sympy' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"

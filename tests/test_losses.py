"""The GAN objectives against closed forms at fixed logits."""
import math

import pytest
import torch

from genlab.losses import LOSSES, gradient_penalty
from genlab.registry import UsageError

ZERO = torch.zeros(4)
LOG2 = math.log(2)


@pytest.mark.parametrize("name, d_at_0, g_at_0", [
    ("minimax", 2 * LOG2, -LOG2),        # -log(1/2) - log(1/2);  log(1 - 1/2)
    ("nonsaturating", 2 * LOG2, LOG2),   # same D loss; -log(1/2)
    ("hinge", 2.0, 0.0),                 # relu(1) + relu(1); -0
    ("lsgan", 0.5, 0.5),                 # 1/2 (0-1)^2 + 1/2 0^2; 1/2 (0-1)^2
    ("wgan-gp", 0.0, 0.0),
])
def test_losses_at_zero_logits(name, d_at_0, g_at_0):
    loss = LOSSES[name]
    assert loss.d(ZERO, ZERO).item() == pytest.approx(d_at_0, abs=1e-6)
    assert loss.g(ZERO).item() == pytest.approx(g_at_0, abs=1e-6)


def test_losses_at_confident_logits():
    real, fake = torch.full((3,), 2.0), torch.full((3,), -3.0)
    sig = torch.sigmoid
    # the article's L_D = -[log D(x) + log(1 - D(G(z)))], L_G = log(1 - D(G(z)))
    assert LOSSES["minimax"].d(real, fake).item() == pytest.approx(
        -(math.log(sig(torch.tensor(2.0))) + math.log(1 - sig(torch.tensor(-3.0)))), rel=1e-6)
    assert LOSSES["minimax"].g(fake).item() == pytest.approx(math.log(1 - sig(torch.tensor(-3.0))), rel=1e-6)
    assert LOSSES["nonsaturating"].g(fake).item() == pytest.approx(-math.log(sig(torch.tensor(-3.0))), rel=1e-6)
    assert LOSSES["hinge"].d(real, fake).item() == pytest.approx(0.0)      # both margins satisfied
    assert LOSSES["hinge"].d(torch.full((3,), 0.5), torch.full((3,), -0.25)).item() == pytest.approx(1.25)
    assert LOSSES["lsgan"].d(real, fake).item() == pytest.approx(0.5 * 1 + 0.5 * 9)
    assert LOSSES["wgan-gp"].d(real, fake).item() == pytest.approx(-5.0)
    assert LOSSES["wgan-gp"].gp == 10.0


def test_minimax_saturates_where_nonsaturating_does_not():
    fake = torch.tensor([-8.0], requires_grad=True)   # D confidently rejects G's sample
    (g1,) = torch.autograd.grad(LOSSES["minimax"].g(fake), fake)
    (g2,) = torch.autograd.grad(LOSSES["nonsaturating"].g(fake), fake)
    assert abs(g1.item()) < 1e-3 < abs(g2.item())


def test_gradient_penalty_of_linear_critic():
    """D(x) = <w, x>: grad_x D = w everywhere, so the penalty is exactly (||w|| - 1)^2."""
    w = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    D = lambda x, y=None: (x * w).flatten(1).sum(1)
    x_real, x_fake = torch.randn(8, 3, 4, 4), torch.randn(8, 3, 4, 4)
    gp = gradient_penalty(D, x_real, x_fake)
    assert gp.item() == pytest.approx((w.norm().item() - 1) ** 2, rel=1e-5)


def test_unknown_loss_lists_known():
    with pytest.raises(UsageError, match="known: hinge, lsgan, minimax, nonsaturating, wgan-gp"):
        LOSSES["nope"]


def test_mode_seeking_term_closed_form():
    """Mao et al. 2019, eq. 3: 1 / (mean|x1 - x2| / mean|z1 - z2| + eps)."""
    from genlab.models.gan import mode_seeking
    x1, x2 = torch.full((4, 1, 3, 3), 0.5), torch.full((4, 1, 3, 3), -0.25)   # |x1 - x2| = 0.75
    z1, z2 = torch.zeros(4, 8), torch.full((4, 8), 1.5)                        # |z1 - z2| = 1.5
    assert mode_seeking(x1, x2, z1, z2).item() == pytest.approx(1 / (0.5 + 1e-5))
    assert mode_seeking(x1, x1, z1, z2).item() == pytest.approx(1e5)          # identical images: large

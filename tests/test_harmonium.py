"""dgmlib.harmonium against independent computations (torch.distributions, brute-force loops, a
grid search), and dgmlib.checks.harmonium: the reference passes, typical mistakes are caught."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from helpers import fails
from torch.distributions import Bernoulli, Categorical, kl_divergence

from dgmlib import harmonium
from dgmlib.checks.harmonium import check_interactions

DT = torch.float64


def random_model(n: int, m: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A random table model: a normalised log prior [2^m] and arbitrary logits [2^m, n]."""
    g = torch.Generator().manual_seed(seed)
    log_prior = torch.log_softmax(torch.randn(2**m, generator=g, dtype=DT), 0)
    return log_prior, 2 * torch.randn(2**m, n, generator=g, dtype=DT)


def bits(i: int, k: int) -> list[int]:
    """The bits of i, lowest first."""
    return [(i >> j) & 1 for j in range(k)]


# ---------------------------------------------------------------------------------------------
# states, interactions


def test_binary_states_rows_are_the_bits_of_their_index():
    z = harmonium.binary_states(4)
    assert z.shape == (16, 4) and z.dtype == DT
    for i in range(16):
        assert z[i].tolist() == bits(i, 4)
    assert harmonium.binary_states(0).shape == (1, 0)
    z[0, 0] = 7.0  # the caller's copy: the next call is unaffected
    assert harmonium.binary_states(4)[0, 0] == 0


@pytest.mark.parametrize("k", [-1, 21, 2.0])
def test_binary_states_rejects_bad_k(k):
    with pytest.raises((ValueError, TypeError), match="binary_states: k"):
        harmonium.binary_states(k)


def test_interactions_rebuild_the_function_at_every_state():
    """f(z) = sum_S a_S prod_{j in S} z_j, evaluated term by term, for a batch of random f."""
    f = torch.randn(3, 16, generator=torch.Generator().manual_seed(0), dtype=DT)
    a = harmonium.interactions(f)
    rebuilt = torch.zeros_like(f)
    for i in range(16):  # the state z
        for s in range(16):  # the subset S, as the state whose ones it is
            if all(
                zb >= sb for zb, sb in zip(bits(i, 4), bits(s, 4), strict=True)
            ):  # S within the ones of z
                rebuilt[:, i] += a[:, s]
    assert torch.allclose(rebuilt, f, atol=1e-12, rtol=0)


def test_interactions_match_the_moebius_formula():
    f = torch.randn(8, generator=torch.Generator().manual_seed(1), dtype=DT)
    a = harmonium.interactions(f)
    for s in range(8):
        subsets = [t for t in range(8) if t & s == t]
        expected = sum((-1) ** (bin(s ^ t).count("1")) * f[t] for t in subsets)
        assert abs(a[s] - expected) < 1e-12


def test_nonaffine_size_is_zero_exactly_for_affine_functions():
    z = harmonium.binary_states(3)
    affine = 0.3 + z @ torch.tensor([1.0, -2.0, 0.5], dtype=DT)
    assert harmonium.nonaffine_size(affine) < 1e-14
    assert abs(harmonium.nonaffine_size(affine + 0.7 * z[:, 0] * z[:, 2]) - 0.7) < 1e-14
    assert abs(harmonium.nonaffine_size(affine - 0.2 * z.prod(-1)) - 0.2) < 1e-14
    assert harmonium.nonaffine_size(torch.tensor([1.0, 5.0], dtype=DT)) == 0  # k = 1
    assert harmonium.interaction_orders(3).tolist() == [0, 1, 1, 2, 1, 2, 2, 3]


def test_interactions_reject_a_length_that_is_not_a_power_of_two():
    with pytest.raises(ValueError, match="interactions: the last dimension of f must be a power"):
        harmonium.interactions(torch.zeros(6, dtype=DT))
    with pytest.raises(TypeError, match="interactions: f must have a floating dtype"):
        harmonium.interactions(torch.zeros(4, dtype=torch.int64))


def test_softplus_has_no_threshold():
    """torch's softplus returns a for a > 20, off by log1p(e^-a); this one is exact."""
    a = torch.tensor([-800.0, -30.0, 0.0, 25.0, 800.0], dtype=DT)
    expected = torch.tensor(
        [
            math.exp(-800.0),
            math.log1p(math.exp(-30.0)),
            math.log(2.0),
            25.0 + math.log1p(math.exp(-25.0)),
            800.0,
        ],
        dtype=DT,
    )
    assert torch.allclose(harmonium.softplus(a), expected, rtol=1e-15, atol=0)
    assert F.softplus(a)[3] == 25.0  # the threshold this avoids


# ---------------------------------------------------------------------------------------------
# joint, marginal, posterior, ELBO


def test_log_joint_against_torch_distributions():
    log_prior, logits = random_model(3, 2, seed=2)
    table = harmonium.log_joint(log_prior, logits)
    prior = Categorical(logits=log_prior)
    for i, j in itertools.product(range(8), range(4)):
        x = torch.tensor(bits(i, 3), dtype=DT)
        expected = prior.log_prob(torch.tensor(j)) + Bernoulli(logits=logits[j]).log_prob(x).sum()
        assert abs(table[i, j] - expected) < 1e-12
    assert abs(torch.logsumexp(table.reshape(-1), 0)) < 1e-12
    assert torch.allclose(harmonium.log_marginal(log_prior, logits), torch.logsumexp(table, -1))
    post = harmonium.log_posterior(log_prior, logits)
    assert torch.allclose(post.exp().sum(-1), torch.ones(8, dtype=DT), atol=1e-12, rtol=0)


def test_elbo_is_both_forms_of_the_bound():
    """log p(x) - KL(q || p(z|x)) and E_q log p(x|z) - KL(q || p(z)), by torch.distributions."""
    log_prior, logits = random_model(4, 3, seed=3)
    q_logits = torch.randn(16, 3, generator=torch.Generator().manual_seed(4), dtype=DT)
    el = harmonium.elbo(log_prior, logits, q_logits)
    q = Categorical(logits=harmonium.factorised_log_q(q_logits))
    post = Categorical(logits=harmonium.log_posterior(log_prior, logits))
    first = harmonium.log_marginal(log_prior, logits) - kl_divergence(q, post)
    x = harmonium.binary_states(4)
    log_lik = Bernoulli(logits=logits[None]).log_prob(x[:, None]).sum(-1)  # [16 x, 8 z]
    second = (q.probs * log_lik).sum(-1) - kl_divergence(q, Categorical(logits=log_prior))
    assert torch.allclose(el, first, atol=1e-12, rtol=0)
    assert torch.allclose(el, second, atol=1e-12, rtol=0)
    assert (el < harmonium.log_marginal(log_prior, logits)).all()


def test_factorised_log_q_against_a_product_of_bernoullis():
    ell = torch.tensor([[0.3, -1.2, 2.0]], dtype=DT)
    table = harmonium.factorised_log_q(ell)
    for i in range(8):
        z = torch.tensor(bits(i, 3), dtype=DT)
        assert abs(table[0, i] - Bernoulli(logits=ell[0]).log_prob(z).sum()) < 1e-14


def test_shape_errors_name_the_argument():
    log_prior, logits = random_model(3, 2, seed=5)
    with pytest.raises(ValueError, match=r"elbo: q_logits must have shape \[8, 2\]"):
        harmonium.elbo(log_prior, logits, torch.zeros(8, 3, dtype=DT))
    with pytest.raises(ValueError, match="log_joint: expected log_prior"):
        harmonium.log_joint(log_prior, logits[:2])
    with pytest.raises(ValueError, match="log_prior must be a power of 2"):
        harmonium.log_joint(torch.zeros(3, dtype=DT), torch.zeros(3, 2, dtype=DT))
    with pytest.raises(ValueError, match=r"mean_field: q_logits must have shape \[5, 2\]"):
        harmonium.mean_field(torch.zeros(5, 4, dtype=DT), torch.zeros(5, 3, dtype=DT))
    with pytest.raises(ValueError, match=r"rbm_log_prior: expected u \[3\] and v \[2\]"):
        harmonium.rbm_log_prior(
            torch.zeros(3, 2, dtype=DT), torch.zeros(2, dtype=DT), torch.zeros(2, dtype=DT)
        )


# ---------------------------------------------------------------------------------------------
# mean field and the approximation gap


def test_mean_field_is_exact_on_a_factorised_target():
    ell = torch.tensor([[1.0, -0.5, 2.0], [0.0, 3.0, -1.0]], dtype=DT)
    target = harmonium.factorised_log_q(ell) + 5.0  # any constant per row
    got = harmonium.mean_field(target, torch.zeros(2, 3, dtype=DT), max_sweeps=1)
    assert torch.allclose(got, ell, atol=1e-12, rtol=0)


def test_mean_field_never_increases_the_kl_and_stops_at_a_fixed_point():
    target = 3 * torch.randn(20, 8, generator=torch.Generator().manual_seed(6), dtype=DT)
    ell = torch.zeros(20, 3, dtype=DT)
    kl = harmonium.kl_factorised(target, ell)
    for _ in range(30):
        ell = harmonium.mean_field(target, ell, max_sweeps=1)
        new = harmonium.kl_factorised(target, ell)
        assert (new <= kl + 1e-13).all()
        kl = new
    final = harmonium.mean_field(target, ell)
    again = harmonium.mean_field(target, final, max_sweeps=1)
    assert (again - final).abs().max() < 1e-10


def test_best_factorised_logits_beat_every_point_of_a_fine_grid():
    """m = 2: the best of the mean-field starts against a grid of 241^2 logits in [-12, 12]; the
    grid cannot do better, and it comes within its resolution (spacing 0.1 in each logit)."""
    target = 2.5 * torch.randn(30, 4, generator=torch.Generator().manual_seed(7), dtype=DT)
    best = harmonium.kl_factorised(target, harmonium.best_factorised_logits(target))
    axis = torch.linspace(-12, 12, 241, dtype=DT)
    grid = torch.cartesian_prod(axis, axis)  # [G, 2] logits
    log_q = harmonium.factorised_log_q(grid)
    kl_grid = (log_q.exp() * log_q).sum(-1, keepdim=True) - log_q.exp() @ torch.log_softmax(
        target, -1
    ).T
    grid_min = kl_grid.min(0).values
    assert (best <= grid_min + 1e-12).all()
    assert (grid_min - best).max() < 1e-3


def test_a_single_start_can_end_in_a_worse_local_minimum():
    """Why best_factorised_logits uses several starts: a bimodal target on two bits."""
    target = torch.log(torch.tensor([[0.49, 0.01, 0.01, 0.49]], dtype=DT))  # z1 = z2, two modes
    from_center = harmonium.mean_field(target, torch.zeros(1, 2, dtype=DT))
    best = harmonium.best_factorised_logits(target)
    kl_center = harmonium.kl_factorised(target, from_center)
    kl_best = harmonium.kl_factorised(target, best)
    assert kl_best < kl_center - 0.1  # the symmetric fixed point is a saddle, the corners win


def test_approximation_gap_vanishes_on_a_harmonium_only():
    g = torch.Generator().manual_seed(8)
    W = torch.randn(5, 3, generator=g, dtype=DT)
    u, v = torch.randn(5, generator=g, dtype=DT), torch.randn(3, generator=g, dtype=DT)
    z = harmonium.binary_states(3)
    log_prior, logits = harmonium.rbm_log_prior(W, u, v), z @ W.T + u
    assert harmonium.approximation_gap(log_prior, logits).abs().max() < 1e-12
    uniform = torch.full((8,), -math.log(8), dtype=DT)  # condition 2 fails
    assert harmonium.approximation_gap(uniform, logits).max() > 1e-2


# ---------------------------------------------------------------------------------------------
# the harmonium (RBM)


def test_rbm_marginals_against_the_brute_force_joint():
    g = torch.Generator().manual_seed(9)
    W = torch.randn(4, 3, generator=g, dtype=DT)
    u, v = torch.randn(4, generator=g, dtype=DT), torch.randn(3, generator=g, dtype=DT)
    x, z = harmonium.binary_states(4), harmonium.binary_states(3)
    energy = x @ W @ z.T + (x @ u)[:, None] + (z @ v)[None]  # [16, 8]
    log_joint = energy - torch.logsumexp(energy.reshape(-1), 0)
    assert torch.allclose(
        harmonium.rbm_log_marginal(W, u, v), torch.logsumexp(log_joint, 1), atol=1e-12
    )
    assert torch.allclose(
        harmonium.rbm_log_prior(W, u, v), torch.logsumexp(log_joint, 0), atol=1e-12
    )
    table = harmonium.log_joint(harmonium.rbm_log_prior(W, u, v), z @ W.T + u)
    assert torch.allclose(table, log_joint, atol=1e-12, rtol=0)


# ---------------------------------------------------------------------------------------------
# dgmlib.checks.harmonium (the notebook's exercise)


def test_check_interactions_passes_the_reference_and_rejects_a_stub(capsys):
    check_interactions(harmonium.interactions)
    assert capsys.readouterr().out == "check_interactions: all 6 cases pass.\n"

    def stub(f):
        raise NotImplementedError

    with pytest.raises(AssertionError, match="not implemented yet"):
        check_interactions(stub)


def no_signs(f):  # sums f over the subsets T of S without the alternating sign
    k = f.shape[-1].bit_length() - 1
    a = f.reshape(*f.shape[:-1], *([2] * k))
    for j in range(k):
        dim = a.dim() - 1 - j
        a = torch.stack([a.select(dim, 0), a.select(dim, 1) + a.select(dim, 0)], dim=dim)
    return a.reshape(f.shape)


def reversed_bits(f):  # the right coefficients, stored at the bit-reversed index
    k = f.shape[-1].bit_length() - 1
    a = harmonium.interactions(f)
    index = [int("".join(map(str, bits(s, k))), 2) if k else 0 for s in range(2**k)]
    return a[..., index]


def values_not_coefficients(f):
    return f


@pytest.mark.parametrize(
    ("fn", "case", "hint"),
    [
        (
            no_signs,
            "f(0,0), f(1,0), f(0,1), f(1,1) = 1, 2, 2, 8",
            "f(1,1) - f(1,0) - f(0,1) + f(0,0)",
        ),
        (
            values_not_coefficients,
            "f(0,0), f(1,0), f(0,1), f(1,1) = 1, 2, 2, 8",
            "(-1)^(|S| - |T|)",
        ),
        (reversed_bits, "1 + 2 z_1 - z_3", "the slope of z_3 is at index 4"),
    ],
)
def test_check_interactions_names_the_typical_mistakes(fn, case, hint):
    fails(check_interactions, fn, case, hint)

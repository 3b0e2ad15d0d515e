"""Hierarchical VAEs (lecture 11): the linear-Gaussian chain against sampling and Bayes' rule,
the two-layer Gaussian VAEs against Monte Carlo, and the binary hierarchy against brute-force
enumeration, sampling and finite differences."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch.distributions import Bernoulli, Normal, kl_divergence

from dgmlib import linear_gaussian as lg
from dgmlib.experiment import build, load_model_file, save_model
from dgmlib.kl_control import linear_warmup, scheduled
from dgmlib.models.binary_hierarchy import (
    BinaryHierarchyVAE,
    bernoulli_kl,
    binary_states,
    estimator_moments,
    exact_gradient,
    per_sample_gradients,
    sample_latents,
    state_log_probs,
)
from dgmlib.models.hierarchical import (
    BottomUpVAE,
    LadderVAE,
    gaussian_kl,
    layer_statistics,
    precision_weighted,
    two_layer_vae,
)
from dgmlib.objectives import ELBO
from dgmlib.train import Trainer

DT = torch.float64


# ---------------------------------------------------------------------------------------------
# the linear-Gaussian chain


@pytest.fixture
def chain() -> lg.LinearGaussianChain:
    return lg.LinearGaussianChain.random(2, 3, 5, torch.Generator().manual_seed(0))


def x_points(chain: lg.LinearGaussianChain, n: int = 4, seed: int = 1) -> torch.Tensor:
    return chain.sample(n, torch.Generator().manual_seed(seed))[2]


def test_marginal_and_joint_match_the_samples(chain):
    """The closed-form moments against 200k ancestral samples (5 standard errors)."""
    n = 200_000
    z2, z1, x = chain.sample(n, torch.Generator().manual_seed(2))
    v = torch.cat([z2, z1, x], 1)
    joint = chain.joint()
    se_mean = joint.covariance_matrix.diagonal().sqrt() / math.sqrt(n)
    assert ((v.mean(0) - joint.loc).abs() <= 5 * se_mean).all()
    cov = torch.cov(v.T)
    S = joint.covariance_matrix
    se_cov = ((S.diagonal()[:, None] * S.diagonal()[None, :] + S**2) / n).sqrt()
    assert ((cov - S).abs() <= 5 * se_cov).all()
    torch.testing.assert_close(chain.marginal_x().covariance_matrix, S[5:, 5:])


def test_bayes_rule_holds_at_random_latents(chain):
    """log p(x) = log p(x, z) - log p(z | x) for any z: the marginal, the conditionals of the
    model and the conditioned posterior agree."""
    x = x_points(chain)
    post = chain.posterior(x)
    for seed in range(3):
        z = post.sample(torch.Size([])) + torch.randn(
            4, 5, generator=torch.Generator().manual_seed(seed), dtype=DT
        )
        lhs = chain.log_joint(x, z[:, 2:], z[:, :2]) - post.log_prob(z)
        torch.testing.assert_close(lhs, chain.log_prob(x), rtol=0, atol=1e-10)


def test_markov_property_and_ladder_route_give_the_exact_factors(chain):
    x = x_points(chain)
    post = chain.posterior(x)
    bu = lg.bottom_up_factors(post, 2)
    C, c, P = chain.z2_given_z1()
    torch.testing.assert_close(bu.C, C, rtol=0, atol=1e-10)
    torch.testing.assert_close(bu.c, c.expand_as(bu.c), rtol=0, atol=1e-10)
    torch.testing.assert_close(bu.P2, P, rtol=0, atol=1e-10)
    td = lg.top_down_factors(post, 2)
    for a, b in zip(chain.ladder_posterior(x), td, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def test_factors_and_q_joint_round_trip(chain):
    post = chain.posterior(x_points(chain))
    for split in (lg.bottom_up_factors, lg.top_down_factors):
        q = split(post, 2)
        j = lg.q_joint(q)
        torch.testing.assert_close(j.loc, post.loc, rtol=0, atol=1e-10)
        torch.testing.assert_close(j.covariance_matrix, post.covariance_matrix, rtol=0, atol=1e-10)


def perturbed(q):
    if isinstance(q, lg.BottomUpQ):
        return lg.BottomUpQ(q.m1 + 0.3, 1.5 * q.P1, 0.8 * q.C, q.c - 0.2, 0.6 * q.P2)
    return lg.TopDownQ(q.m2 - 0.2, 0.7 * q.P2, 1.2 * q.D, q.d + 0.1, 1.3 * q.P1)


@pytest.mark.parametrize("split", [lg.bottom_up_factors, lg.top_down_factors])
def test_elbo_terms_equal_log_p_minus_the_kl_to_the_posterior(chain, split):
    x = x_points(chain)
    post = chain.posterior(x)
    exact = lg.elbo_terms(chain, x, split(post, 2))
    torch.testing.assert_close(exact["elbo"], chain.log_prob(x), rtol=0, atol=1e-9)
    q = perturbed(split(post, 2))
    t = lg.elbo_terms(chain, x, q)
    gap = kl_divergence(lg.q_joint(q), post)
    assert (gap > 0.01).all()
    torch.testing.assert_close(t["elbo"], chain.log_prob(x) - gap, rtol=0, atol=1e-9)


@pytest.mark.parametrize("split", [lg.bottom_up_factors, lg.top_down_factors])
def test_each_elbo_term_matches_monte_carlo(chain, split):
    """Every per-layer term against its sample mean under q (torch.distributions densities),
    within 5 standard errors."""
    x = x_points(chain, n=2)
    q = perturbed(split(chain.posterior(x), 2))
    t = lg.elbo_terms(chain, x, q)
    n = 100_000
    z = lg.q_joint(q).sample(torch.Size([n]))  # [n, N, 4]
    samples = lg.sampled_terms(chain, x, q, z[..., :2], z[..., 2:])
    for key, s in samples.items():
        se = s.std(0) / math.sqrt(n)
        assert ((s.mean(0) - t[key]).abs() <= 5 * se).all(), key


def test_bottom_up_z1_term_can_be_negative_and_top_down_terms_cannot():
    chain = lg.LinearGaussianChain.random(2, 3, 5, torch.Generator().manual_seed(0), noise1=0.1)
    x = x_points(chain, n=50)
    post = chain.posterior(x)
    bu, td = (
        lg.elbo_terms(chain, x, lg.bottom_up_factors(post, 2)),
        lg.elbo_terms(chain, x, lg.top_down_factors(post, 2)),
    )
    assert (bu["kl_z1"] < 0).any()
    assert (td["kl_z1"] > 0).all() and (td["kl_z2"] > 0).all()
    torch.testing.assert_close(bu["kl_z1"] + bu["kl_z2"], td["kl_z1"] + td["kl_z2"])


def test_linear_gaussian_errors(chain):
    with pytest.raises(ValueError, match="x must have shape \\[N, 5\\]"):
        chain.log_prob(torch.zeros(3, 4, dtype=DT))
    with pytest.raises(ValueError, match="S1 must have shape"):
        lg.LinearGaussianChain(chain.A, chain.a, chain.S0, chain.B, chain.b, chain.S0)
    with pytest.raises(TypeError, match="BottomUpQ or a TopDownQ"):
        lg.elbo_terms(chain, x_points(chain), (1, 2))
    assert isinstance(lg.top_down_factors(chain.posterior(x_points(chain)), 2), lg.TopDownQ)


# ---------------------------------------------------------------------------------------------
# two-layer Gaussian VAEs


def test_precision_weighted_is_the_normalised_product():
    g = torch.Generator().manual_seed(3)
    ma, la, mb, lb = (torch.randn(3, 4, generator=g, dtype=DT) for _ in range(4))
    mu, logvar = precision_weighted(ma, la, mb, lb)
    z = torch.randn(6, 3, 4, generator=g, dtype=DT)
    ratio = (
        Normal(mu, (0.5 * logvar).exp()).log_prob(z)
        - Normal(ma, (0.5 * la).exp()).log_prob(z)
        - Normal(mb, (0.5 * lb).exp()).log_prob(z)
    )
    torch.testing.assert_close(ratio, ratio[:1].expand_as(ratio), rtol=0, atol=1e-10)
    # very different precisions: the precise one dominates, no overflow
    mu, logvar = precision_weighted(
        torch.ones(1, dtype=DT),
        torch.tensor([-30.0], dtype=DT),
        torch.zeros(1, dtype=DT),
        torch.tensor([30.0], dtype=DT),
    )
    assert abs(float(mu) - 1) < 1e-12 and abs(float(logvar) + 30) < 1e-12


def test_gaussian_kl_matches_monte_carlo():
    g = torch.Generator().manual_seed(4)
    mq, lq, mp, lp = (torch.randn(3, generator=g, dtype=DT) for _ in range(4))
    z = mq + (0.5 * lq).exp() * torch.randn(200_000, 3, generator=g, dtype=DT)
    s = (Normal(mq, (0.5 * lq).exp()).log_prob(z) - Normal(mp, (0.5 * lp).exp()).log_prob(z)).sum(
        -1
    )
    assert abs(float(s.mean() - gaussian_kl(mq, lq, mp, lp))) < 5 * float(s.std()) / math.sqrt(
        len(s)
    )


def small(inference: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return two_layer_vae(inference, z1_dim=4, z2_dim=3, hidden=16, hidden_top=8, x_shape=[1, 4, 4])


@pytest.fixture
def xb() -> torch.Tensor:
    return torch.bernoulli(
        torch.full((5, 1, 4, 4), 0.4), generator=torch.Generator().manual_seed(5)
    )


@pytest.mark.parametrize("inference", ["bottom-up", "top-down"])
def test_terms_shapes_and_their_expectations_agree(inference, xb):
    """kl_z1 + kl_z2 (closed forms where they exist) and -log p(z)/q(z) at the samples estimate
    the same expectation; so do the two ELBO forms (5 standard errors over 20k draws)."""
    model = small(inference)
    assert isinstance(model, BottomUpVAE if inference == "bottom-up" else LadderVAE)
    t = model.terms(xb)
    assert t["z1"].shape == (5, 4) and t["z2"].shape == (5, 3) and t["kl"].shape == (5,)
    K = 20_000
    with torch.no_grad():
        t = model.terms(xb, K, torch.Generator().manual_seed(6))
    assert t["z1"].shape == (K, 5, 4) and t["kl_z1"].shape == (K, 5)
    diff = t["kl"] + t["log_pz_minus_log_qz"]
    assert ((diff.mean(0)).abs() <= 5 * diff.std(0) / math.sqrt(K)).all()
    lw = model.log_weights(xb, 3, torch.Generator().manual_seed(7))
    assert lw.shape == (3, 5)
    assert model.elbo(xb, 4).shape == (5,)
    assert model.sample(6).shape == (6, 1, 4, 4)


def test_ladder_kl_z1_is_the_kl_to_the_prior_given_z2(xb):
    model = small("top-down")
    with torch.no_grad():
        mh1, lh1, mu2, lv2 = model.encoder(xb)
        pm1, plv1 = model.prior1(mu2 + 0.3)  # at z2 = mu2 + 0.3
        mu1, lv1 = precision_weighted(mh1, lh1, pm1, plv1)
    torch.testing.assert_close(
        gaussian_kl(mu1, lv1, pm1, plv1),
        kl_divergence(Normal(mu1, (0.5 * lv1).exp()), Normal(pm1, (0.5 * plv1).exp())).sum(-1),
    )


@pytest.mark.parametrize("inference", ["bottom-up", "top-down"])
def test_posterior_means_and_layer_statistics(inference, xb):
    model = small(inference)
    m = model.posterior_means(xb, 4000, torch.Generator().manual_seed(8))
    ref = model.posterior_means(xb, 4000, torch.Generator().manual_seed(9))
    exact, sampled = ("z1", "z2") if inference == "bottom-up" else ("z2", "z1")
    torch.testing.assert_close(m[exact], ref[exact])
    assert (m[f"mc_var_{exact}"] == 0).all()
    se = (m[f"mc_var_{sampled}"] + ref[f"mc_var_{sampled}"]).sqrt()
    assert ((m[sampled] - ref[sampled]).abs() <= 5 * se).all()
    s = layer_statistics(model, xb, 4, 10, torch.Generator().manual_seed(10))
    assert 0 <= s["au_z1"] <= 4 and 0 <= s["au_z2"] <= 3
    assert s["elbo"] == pytest.approx(s["log_px_z"] - s["kl_z1"] - s["kl_z2"])


@pytest.mark.parametrize("inference", ["bottom-up", "top-down"])
def test_spec_round_trip_and_training_with_warmup(inference, xb, tmp_path):
    model = small(inference)
    path = tmp_path / "m.safetensors"
    save_model(path, model)
    loaded = load_model_file(path)
    g = torch.Generator().manual_seed(11)
    a = model.elbo(xb, 3, torch.Generator().manual_seed(11))
    torch.testing.assert_close(loaded.elbo(xb, 3, g), a)
    assert type(build(model.build_spec)) is type(model)
    trainer = Trainer(model, torch.optim.Adam(model.parameters(), 1e-2), ELBO(), progress=False)
    batches = scheduled(lambda epoch: [xb, xb], trainer, lambda s: linear_warmup(s, 4))
    trainer.fit(batches, 2)
    assert trainer.step == 4 and trainer.objective.kl_weight == pytest.approx(0.75)


def test_hierarchical_errors(xb):
    with pytest.raises(ValueError, match="inference must be one of"):
        two_layer_vae("sideways")
    model = small("top-down")
    with pytest.raises(ValueError, match="x must hold 16 values per example"):
        model.terms(torch.zeros(2, 10))
    with pytest.raises(ValueError, match="K must be an integer >= 1"):
        model.terms(xb, 0)
    with pytest.raises(ValueError, match="differs from z1_dim"):
        LadderVAE(model.encoder, model.prior1, small("bottom-up").encoder_top)


# ---------------------------------------------------------------------------------------------
# the binary hierarchy


@pytest.fixture
def binary() -> BinaryHierarchyVAE:
    torch.manual_seed(0)
    model = BinaryHierarchyVAE(x_dim=6, z1_dim=3, z2_dim=2)
    with torch.no_grad():  # weights large enough for an informative posterior
        for p in model.parameters():
            p.mul_(3.0)
    return model


def all_x(d: int) -> torch.Tensor:
    return binary_states(d)


def test_binary_states():
    s = binary_states(3)
    assert s.shape == (8, 3) and len({tuple(r.tolist()) for r in s}) == 8
    assert s[5].tolist() == [1.0, 0.0, 1.0]


def test_state_log_probs_and_bernoulli_kl_match_torch():
    g = torch.Generator().manual_seed(12)
    logits = torch.randn(4, 3, generator=g, dtype=DT)
    s = binary_states(3)
    ref = Bernoulli(logits=logits.unsqueeze(1)).log_prob(s).sum(-1)
    torch.testing.assert_close(state_log_probs(logits, s), ref)
    lp = torch.randn(3, generator=g, dtype=DT)
    q, p = torch.sigmoid(logits), torch.sigmoid(lp)
    ref_kl = (q * (q / p).log() + (1 - q) * ((1 - q) / (1 - p)).log()).sum(-1)
    torch.testing.assert_close(bernoulli_kl(logits, lp), ref_kl)


def test_binary_log_prob_is_normalised_and_the_recursion_is_the_brute_force_sum(binary):
    x = all_x(6)
    with torch.no_grad():
        lp = binary.log_prob(x)
        torch.testing.assert_close(
            torch.logsumexp(lp, 0), torch.zeros((), dtype=DT), atol=1e-12, rtol=0
        )
        brute = torch.logsumexp(
            (
                binary.log_pz2()[:, None]
                + binary.log_pz1_given_z2()
                + binary.log_px_given_z1(x)[:, None, :]
            ).flatten(1),
            -1,
        )
    torch.testing.assert_close(lp, brute, atol=1e-12, rtol=0)


def test_backward_message_matches_ancestral_sampling(binary):
    """p(x | z2) = E_{z1 ~ p(z1|z2)} p(x | z1), estimated by sampling z1 (5 standard errors)."""
    x = all_x(6)[[5, 40]]
    g = torch.Generator().manual_seed(13)
    n = 50_000
    with torch.no_grad():
        exact = binary.log_px_given_z2(x).exp()  # [2, S2]
        for j, z2 in enumerate(binary.states2):
            z1 = torch.bernoulli(
                torch.sigmoid(binary.prior_logits_z1(z2)).expand(n, -1), generator=g
            )
            lik = Bernoulli(logits=binary.layer0(z1).unsqueeze(1)).log_prob(x).sum(-1).exp()
            se = lik.std(0) / math.sqrt(n)
            assert ((lik.mean(0) - exact[:, j]).abs() <= 5 * se).all()


def test_posterior_gap_split_and_elbo_against_sampling(binary):
    x = all_x(6)[::7]
    with torch.no_grad():
        log_p2, log_p1 = binary.posterior(x)
        torch.testing.assert_close(log_p2.exp().sum(-1), torch.ones(len(x), dtype=DT))
        joint = (
            binary.log_pz2()[:, None]
            + binary.log_pz1_given_z2()
            + binary.log_px_given_z1(x)[:, None, :]
        )
        torch.testing.assert_close(
            log_p2[..., None] + log_p1,
            joint - binary.log_prob(x)[:, None, None],
            atol=1e-12,
            rtol=0,
        )
        t = binary.elbo_terms(x)
        gaps = binary.posterior_kls(x)
        torch.testing.assert_close(
            binary.log_prob(x) - t["elbo"], gaps["top"] + gaps["bottom"], atol=1e-12, rtol=0
        )
        assert (gaps["top"] >= 0).all() and (gaps["bottom"] >= 0).all()
    # the ELBO against the mean of log p(x, z) - log q(z | x) over sampled latents
    xi = x[2:3]
    n = 40_000
    z2, z1 = sample_latents(binary, xi, n, torch.Generator().manual_seed(14))
    with torch.no_grad():
        a1, a2 = binary.messages(xi)
        eta2 = binary.prior_logits + a2
        eta1 = binary.prior_logits_z1(z2) + a1
        lw = (
            Bernoulli(logits=binary.layer0(z1)).log_prob(xi).sum(-1)
            + Bernoulli(logits=binary.prior_logits_z1(z2)).log_prob(z1).sum(-1)
            + Bernoulli(logits=binary.prior_logits).log_prob(z2).sum(-1)
            - Bernoulli(logits=eta2).log_prob(z2).sum(-1)
            - Bernoulli(logits=eta1).log_prob(z1).sum(-1)
        )
    assert abs(float(lw.mean() - t["elbo"][2])) <= 5 * float(lw.std()) / math.sqrt(n)


def test_detached_elbo_trains_the_encoder_only(binary):
    x = all_x(6)[::5]
    binary.zero_grad()
    (-binary.elbo_terms(x, detach=True)["elbo"].mean()).backward()
    assert binary.layer0.weight.grad is None or (binary.layer0.weight.grad == 0).all()
    assert binary.layer1.weight.grad is None or (binary.layer1.weight.grad == 0).all()
    assert binary.message1.weight.grad.abs().sum() > 0


def test_exact_gradient_matches_finite_differences(binary):
    x = all_x(6)[9]
    g = exact_gradient(binary, x)
    a1, a2 = (m.detach() for m in binary.messages(x.unsqueeze(0)))
    h = 1e-6
    for i in range(5):
        d1, d2 = torch.zeros_like(a1), torch.zeros_like(a2)
        (d1 if i < 3 else d2)[0, i % 3] = h
        with torch.no_grad():
            up = binary.elbo_terms(x.unsqueeze(0), a1 + d1, a2 + d2)["elbo"]
            down = binary.elbo_terms(x.unsqueeze(0), a1 - d1, a2 - d2)["elbo"]
        assert abs(float((up - down) / (2 * h)) - float(g[i])) < 1e-7


def test_estimators_by_enumeration_and_by_sampling(binary):
    x = all_x(6)[9]
    exact = exact_gradient(binary, x)
    rf = estimator_moments(binary, x, "reinforce")
    st = estimator_moments(binary, x, "straight-through")
    torch.testing.assert_close(rf["mean"], exact, atol=1e-10, rtol=0)  # unbiased
    assert (st["mean"] - exact).norm() > 1e-3 * exact.norm()  # biased
    n = 20_000
    z2, z1 = sample_latents(binary, x, n, torch.Generator().manual_seed(15))
    for est, mom in (("reinforce", rf), ("straight-through", st)):
        g = per_sample_gradients(binary, x, z2, z1, est)
        assert g.shape == (n, 5)
        se = mom["cov"].diagonal().sqrt() / math.sqrt(n)
        assert ((g.mean(0) - mom["mean"]).abs() <= 5 * se + 1e-12).all(), est
        var = g.var(0).sum()
        trace = torch.trace(mom["cov"])
        assert abs(float(var - trace)) < 0.1 * float(trace), est


def test_binary_errors(binary):
    with pytest.raises(ValueError, match="z1_dim, z2_dim <= 12"):
        BinaryHierarchyVAE(z1_dim=13)
    with pytest.raises(ValueError, match="x must hold 6 values"):
        binary.log_prob(torch.zeros(2, 5, dtype=DT))
    with pytest.raises(ValueError, match="estimator must be one of"):
        per_sample_gradients(binary, all_x(6)[0], binary.states2, binary.states2, "gumbel")
    with pytest.raises(ValueError, match="must be one image"):
        exact_gradient(binary, all_x(6)[:2])


def test_binary_states_enumerate_products():
    assert [tuple(r) for r in binary_states(2).int().tolist()] == list(
        itertools.product([0, 1], repeat=2)
    )

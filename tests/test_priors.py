"""dgmlib.models.priors: every prior is a normalized density consistent with its sampler; the
flow is invertible with an exact log-determinant; the VAE's terms with each prior replayed with
torch.distributions; samples follow the prior's dtype; specs rebuild the VampPrior's binding."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import (
    Bernoulli,
    Categorical,
    Independent,
    MixtureSameFamily,
    Normal,
    kl_divergence,
)

from dgmlib.bounds import estimate_nll, iwae_bound
from dgmlib.experiment import build
from dgmlib.kernels import mixture_logpdf_ref
from dgmlib.models import (
    VAE,
    FlowPrior,
    MixtureOfGaussiansPrior,
    StandardNormalPrior,
    VampPrior,
)
from dgmlib.models.priors import PRIORS, AffineCoupling, make_prior
from dgmlib.models.vae import BernoulliDecoder, MLPGaussianEncoder
from dgmlib.objectives import ELBO

DT = torch.float64
#: small settings of the priors for the VAE tests
SMALL = {"mog": {"n_components": 3}, "vamp": {"n_pseudo": 3}, "flow": {"n_layers": 2}}


def randomize(module: torch.nn.Module, scale: float, seed: int = 0) -> torch.nn.Module:
    """Give every parameter random values (a trained-looking, non-trivial prior)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return module


def small_vamp(z_dim: int = 2, n_pseudo: int = 5, x_dim: int = 6) -> VampPrior:
    torch.manual_seed(0)
    enc = randomize(MLPGaussianEncoder(x_dim, 8, z_dim, 1), 0.7).double()
    prior = VampPrior(z_dim, n_pseudo=n_pseudo, x_shape=x_dim).double()
    prior.bind_encoder(enc)  # what a VAE does with its own encoder
    return prior


def priors_2d() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    return {
        "standard": StandardNormalPrior(2).double(),
        "mog": randomize(MixtureOfGaussiansPrior(2, 3), 0.8).double(),
        "vamp": small_vamp(),
        "flow": randomize(FlowPrior(2, n_layers=4, hidden=8), 0.3).double(),
    }


@pytest.mark.parametrize("name", ["standard", "mog", "vamp", "flow"])
def test_log_prob_integrates_to_one_in_2d(name):
    prior = priors_2d()[name]
    g = torch.linspace(-14.0, 14.0, 561, dtype=DT)
    grid = torch.cartesian_prod(g, g)
    with torch.no_grad():
        mass = prior.log_prob(grid).exp().sum() * (g[1] - g[0]) ** 2
    assert abs(mass.item() - 1.0) < 2e-3, mass


@pytest.mark.parametrize("name", ["standard", "mog", "vamp", "flow"])
def test_samples_follow_log_prob(name):
    """The mean of log p over samples equals the average of log p(z) p(z) on a grid (-entropy),
    and the sample mean matches the grid mean: sampler and density describe one distribution."""
    prior = priors_2d()[name]
    g = torch.linspace(-14.0, 14.0, 561, dtype=DT)
    grid = torch.cartesian_prod(g, g)
    with torch.no_grad():
        w = prior.log_prob(grid).exp() * (g[1] - g[0]) ** 2
        z = prior.sample(40_000, generator=torch.Generator().manual_seed(1))
        lp = prior.log_prob(z)
    assert z.shape == (40_000, 2)
    neg_entropy = (w * prior.log_prob(grid)).sum().item()
    se = lp.std().item() / math.sqrt(len(lp))
    assert abs(lp.mean().item() - neg_entropy) < 4 * se + 1e-3
    mean_grid = (w[:, None] * grid).sum(0)
    se_mean = z.std(0) / math.sqrt(len(z))
    assert ((z.mean(0) - mean_grid).abs() < 4 * se_mean + 1e-3).all()


def test_mixture_prior_matches_torch_distributions():
    prior = randomize(MixtureOfGaussiansPrior(3, 4), 1.0).double()
    z = torch.randn(2, 5, 3, generator=torch.Generator().manual_seed(0), dtype=DT)
    ref = MixtureSameFamily(
        Categorical(logits=prior.logits),
        Independent(Normal(prior.means, torch.exp(0.5 * prior.logvars)), 1),
    ).log_prob(z)
    out = prior.log_prob(z)
    assert out.shape == (2, 5)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    assert torch.allclose(prior.log_weights().exp().sum(), torch.tensor(1.0, dtype=DT))


def test_vamp_prior_is_the_mixture_of_the_encoders_posteriors():
    prior = small_vamp(z_dim=3, n_pseudo=4)
    u = prior.pseudo_inputs()
    assert u.shape == (4, 6) and (u > 0).all() and (u < 1).all()
    mu, logvar = prior.encoder(u)
    z = torch.randn(7, 3, generator=torch.Generator().manual_seed(0), dtype=DT)
    torch.testing.assert_close(prior.log_prob(z), mixture_logpdf_ref(z, mu, logvar))
    # the encoder is shared, not registered twice: only the pseudo-inputs are the prior's own
    assert [n for n, _ in prior.named_parameters()] == ["pseudo_logits"]
    # gradients reach the pseudo-inputs and the encoder
    prior.log_prob(z).sum().backward()
    assert prior.pseudo_logits.grad.abs().sum() > 0
    assert all(p.grad is not None for p in prior.encoder.parameters())


def test_vamp_prior_init_from_data_and_validation():
    init = torch.rand(3, 4)
    prior = VampPrior(2, n_pseudo=3, x_shape=4, init=init)
    torch.testing.assert_close(prior.pseudo_inputs(), init.clamp(0.01, 0.99))
    u = torch.rand(3, 4, generator=torch.Generator().manual_seed(1))
    prior.set_pseudo_inputs(u)  # e.g. training images
    torch.testing.assert_close(prior.pseudo_inputs(), u.clamp(0.01, 0.99))
    with pytest.raises(ValueError, match=r"pseudo-inputs must have shape \(2, 4\), got \(3, 4\)"):
        VampPrior(2, n_pseudo=2, x_shape=4, init=init)
    with pytest.raises(ValueError, match="values in"):
        VampPrior(2, n_pseudo=3, x_shape=4, init=init + 1.0)
    with pytest.raises(RuntimeError, match="no encoder bound; put the prior in a VAE first"):
        prior.log_prob(torch.zeros(1, 2))
    with pytest.raises(ValueError, match=r"encoder's z_dim \(3\) differs from the prior's \(2\)"):
        prior.bind_encoder(MLPGaussianEncoder(4, 5, 3, 1))
    with pytest.raises(TypeError, match="VampPrior: n_pseudo must be an integer >= 1"):
        VampPrior(2, n_pseudo=2.0)


def test_flow_is_invertible_with_the_autograd_log_determinant():
    torch.manual_seed(0)
    flow = randomize(FlowPrior(4, n_layers=5, hidden=16), 0.5).double()
    z = torch.randn(6, 4, generator=torch.Generator().manual_seed(2), dtype=DT)
    u, logdet = flow(z)
    torch.testing.assert_close(flow.inverse(u), z, rtol=1e-10, atol=1e-10)
    for i in range(len(z)):
        jac = torch.autograd.functional.jacobian(lambda v: flow(v[None])[0][0], z[i])
        torch.testing.assert_close(torch.linalg.slogdet(jac)[1], logdet[i])
    # log p(z) = log N(f(z); 0, I) + log|det df/dz|
    base = Normal(torch.zeros(4, dtype=DT), torch.ones(4, dtype=DT)).log_prob(u).sum(-1)
    torch.testing.assert_close(flow.log_prob(z), base + logdet)


def test_new_flow_and_coupling_are_the_identity():
    flow = FlowPrior(3)
    z = torch.randn(5, 3)
    u, logdet = flow(z)
    assert torch.equal(u, z) and torch.equal(logdet, torch.zeros(5))
    torch.testing.assert_close(flow.log_prob(z), StandardNormalPrior(3).log_prob(z))
    layer = AffineCoupling(torch.tensor([1.0, 0.0, 1.0]))
    assert torch.equal(layer(z)[0], z)


def test_coupling_leaves_the_masked_coordinates_unchanged():
    layer = randomize(AffineCoupling(torch.tensor([1.0, 0.0, 1.0, 0.0]), hidden=8), 0.5)
    z = torch.randn(10, 4)
    u, _ = layer(z)
    assert torch.equal(u[:, [0, 2]], z[:, [0, 2]])
    assert not torch.allclose(u[:, [1, 3]], z[:, [1, 3]])


def test_prior_validation():
    with pytest.raises(ValueError, match=r"z must have shape \[\.\.\., 2\]"):
        StandardNormalPrior(2).log_prob(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="z contains NaN"):
        MixtureOfGaussiansPrior(2).log_prob(torch.full((1, 2), float("nan")))
    with pytest.raises(ValueError, match="FlowPrior.sample: n must be an integer >= 1, got 0"):
        FlowPrior(2).sample(0)
    with pytest.raises(ValueError, match="FlowPrior: z_dim must be an integer >= 2, got 1"):
        FlowPrior(1)
    with pytest.raises(TypeError, match="StandardNormalPrior: z_dim must be an integer >= 1"):
        StandardNormalPrior(2.0)
    with pytest.raises(ValueError, match="kind must be one of"):
        make_prior("gamma", 2)
    with pytest.raises(ValueError, match="prior's z_dim"):
        VAE(MLPGaussianEncoder(784, 8, 3), BernoulliDecoder(3, 8), StandardNormalPrior(2))


@pytest.mark.parametrize("kind", PRIORS)
def test_samples_follow_the_priors_dtype(kind):
    """sample() draws in the dtype (and on the device) of the prior's parameters or buffers."""
    torch.manual_seed(0)
    model = VAE.for_mnist(z_dim=2, hidden=8, prior=kind, prior_kwargs=SMALL.get(kind))
    for dtype in (torch.float32, torch.float64):
        model.to(dtype)
        with torch.no_grad():
            z = model.prior.sample(3, generator=torch.Generator().manual_seed(0))
            x = model.sample(3, generator=torch.Generator().manual_seed(0))
        assert z.shape == (3, 2) and z.dtype == dtype
        assert x.shape == (3, 1, 28, 28) and x.dtype == dtype


def test_for_mnist_starts_from_the_same_networks_whatever_the_prior():
    """The encoder and decoder are created before the prior, so they draw the same weights."""
    states = []
    for kind in PRIORS:
        torch.manual_seed(0)
        model = VAE.for_mnist(z_dim=2, hidden=8, prior=kind, prior_kwargs=SMALL.get(kind))
        states.append({k: v for k, v in model.state_dict().items() if not k.startswith("prior.")})
    for state in states[1:]:
        assert all(torch.equal(state[k], states[0][k]) for k in states[0])


@pytest.mark.parametrize("kind", PRIORS)
def test_vae_terms_are_consistent(kind):
    """The ELBO objective's terms, the ELBO and the log-weights against a replay written with
    torch.distributions at the same noise (drawn again from the same seed); the K = 300 estimate
    of estimate_nll against independent groups of 300 log-weights; every parameter (of the prior
    too) gets a gradient."""
    torch.manual_seed(0)
    model = VAE.for_mnist(z_dim=2, hidden=16, prior=kind, prior_kwargs=SMALL.get(kind))
    x = torch.bernoulli(torch.full((4, 1, 28, 28), 0.3), generator=torch.Generator().manual_seed(0))
    assert model.analytic_kl == (kind == "standard")

    def replay(eps: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """log p(x|z), log p(z), log q(z|x) at z = mu + sd * eps; the closed-form KL to N(0, I)."""
        mu, logvar = model.encoder(x)
        q = Normal(mu, torch.exp(0.5 * logvar))
        z = q.loc + q.scale * eps
        logits = model.decoder(z).flatten(-3)
        log_px_z = Bernoulli(logits=logits).log_prob(x.view(4, 784)).sum(-1)
        kl = kl_divergence(q, Normal(0.0, 1.0)).sum(-1)
        return log_px_z, model.prior.log_prob(z), q.log_prob(z).sum(-1), kl

    torch.manual_seed(5)
    t = ELBO()(model, x)
    torch.manual_seed(5)
    log_px_z, log_pz, log_qz, kl_exact = replay(torch.randn(4, 2))
    torch.testing.assert_close(t["log_px_z"], log_px_z.mean())
    kl = kl_exact.mean() if kind == "standard" else (log_qz - log_pz).mean()
    torch.testing.assert_close(t["kl"], kl)
    # sanity lines: how the dictionary is assembled
    torch.testing.assert_close(t["loss"], t["kl"] - t["log_px_z"])
    torch.testing.assert_close(t["elbo"], -t["loss"])
    t["loss"].backward()
    assert all(p.grad is not None for p in model.parameters())

    S, K, B = 4000, 300, 4
    with torch.no_grad():
        log_w = model.log_weights(x, S, generator=torch.Generator().manual_seed(3))
        elbo = model.elbo(x, n_samples=S, generator=torch.Generator().manual_seed(3))
        log_px_z, log_pz, log_qz, kl_exact = replay(
            torch.randn(S, B, 2, generator=torch.Generator().manual_seed(3))
        )
        g = torch.Generator().manual_seed(4)
        nll = estimate_nll(lambda xb, k: model.log_weights(xb, k, generator=g), x, K=K, chunk=100)
        samples = model.sample(3, generator=g)
    assert elbo.shape == (B,) and log_w.shape == (S, B) and nll.shape == (B,)
    # float32 sums of 784 pixel terms of size ~1 (about 550 nats): default float32 tolerances
    torch.testing.assert_close(log_w, log_px_z + log_pz - log_qz)
    if kind == "standard":  # analytic KL: the Monte Carlo one differs by its own error only
        torch.testing.assert_close(elbo, log_px_z.mean(0) - kl_exact)
        mc_kl = log_qz - log_pz
        se = mc_kl.std(0) / math.sqrt(S)
        assert ((mc_kl.mean(0) - kl_exact).abs() < 4 * se).all()
    else:
        torch.testing.assert_close(elbo, log_w.mean(0))  # sanity line: the same draws
    # estimate_nll's single K-sample bound is one draw of L_K: compare it with 13 independent
    # draws of L_K (groups of log-weights), within 4 of their sd (times sqrt(1 + 1/13), as the
    # groups' mean is itself uncertain)
    groups = iwae_bound(log_w[: 13 * K].view(13, K, B), dim=1)
    spread = groups.std(0) * math.sqrt(1 + 1 / 13)
    assert ((-nll - groups.mean(0)).abs() < 4 * spread).all(), (-nll, groups.mean(0), spread)
    # at initialisation q is far from the posterior: E[L_300] is above the ELBO by many s.e.
    # (the s.e. of the difference is at most the sum of the two, the groups reusing log_w)
    se_gap = groups.std(0) / math.sqrt(13) + log_w.std(0) / math.sqrt(S)
    assert (groups.mean(0) - log_w.mean(0) > 4 * se_gap).all()
    assert samples.shape == (3, 1, 28, 28) and set(samples.unique().tolist()) <= {0.0, 1.0}


def test_vamp_vae_holds_the_encoder_once_and_its_spec_rebinds_it():
    model = VAE.for_mnist(z_dim=2, hidden=8, prior="vamp", prior_kwargs={"n_pseudo": 3})
    keys = list(model.state_dict())
    assert "prior.pseudo_logits" in keys
    assert not any(k.startswith("prior.encoder") for k in keys)
    assert model.prior.encoder is model.encoder
    rebuilt = build(model.build_spec)
    assert rebuilt.prior.encoder is rebuilt.encoder
    rebuilt.load_state_dict(model.state_dict())
    z = torch.randn(5, 2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(
            rebuilt.prior.log_prob(z), model.prior.log_prob(z), rtol=0, atol=0
        )

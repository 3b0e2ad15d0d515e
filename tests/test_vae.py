"""dgmlib.models.vae: every loss term replayed by hand with torch.distributions, shapes, the
linear-Gaussian case where log p(x) is exact, training and checkpoints."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.distributions import Bernoulli, MultivariateNormal, Normal, kl_divergence

from dgmlib.bounds import estimate_nll
from dgmlib.kl_control import free_bits_kl
from dgmlib.models.vae import (
    IWAE,
    VAE,
    BernoulliDecoder,
    ConvGaussianEncoder,
    GaussianDecoder,
    MLPGaussianEncoder,
    reparameterize,
)
from dgmlib.train import Trainer, load_model


def binary_images(n: int = 6, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.full((n, 1, 28, 28), 0.3), generator=g)


def small_vae(cls=VAE, z_dim: int = 4, **kwargs) -> VAE:
    torch.manual_seed(0)
    enc = MLPGaussianEncoder(784, 32, z_dim)
    dec = BernoulliDecoder(z_dim, 32, (1, 28, 28))
    return cls(enc, dec, **kwargs)


# --------------------------------------------------------------------------------------------
# Encoders and decoders
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(5, 1, 28, 28), (5, 28, 28), (5, 784)])
def test_encoders_accept_any_layout_of_784_values(shape):
    torch.manual_seed(0)
    x = torch.rand(shape)
    for enc in (MLPGaussianEncoder(784, 16, 3), ConvGaussianEncoder(3, channels=4, hidden=16)):
        mu, logvar = enc(x)
        assert mu.shape == logvar.shape == (5, 3)
        mu2, _ = enc(x.reshape(5, 784))
        torch.testing.assert_close(mu, mu2)


def test_encoder_rejects_wrong_size_and_nan():
    enc = MLPGaussianEncoder(784, 16, 3)
    with pytest.raises(
        ValueError, match=r"x must hold 784 values per example, got shape \(5, 700\)"
    ):
        enc(torch.zeros(5, 700))
    with pytest.raises(ValueError, match="x contains NaN"):
        enc(torch.full((2, 784), float("nan")))


def test_mlp_layer_sizes_and_linear_case():
    enc = MLPGaussianEncoder(10, 7, 3, n_hidden_layers=0)
    assert [type(m) for m in enc.net] == [nn.Linear]
    enc = MLPGaussianEncoder(10, 7, 3, n_hidden_layers=3, activation=nn.ReLU)
    sizes = [(m.in_features, m.out_features) for m in enc.net if isinstance(m, nn.Linear)]
    assert sizes == [(10, 7), (7, 7), (7, 7), (7, 6)]
    assert sum(isinstance(m, nn.ReLU) for m in enc.net) == 3


def test_bernoulli_decoder_log_prob_matches_torch_distributions():
    torch.manual_seed(0)
    dec = BernoulliDecoder(3, 16, (1, 28, 28))
    x = binary_images(4)
    z = torch.randn(4, 3)
    logits = dec(z)
    assert logits.shape == (4, 1, 28, 28)
    expected = Bernoulli(logits=logits).log_prob(x).sum((1, 2, 3))
    torch.testing.assert_close(dec.log_prob(x, z), expected)
    # K samples per example: [K, B]
    zk = torch.randn(5, 4, 3)
    lp = dec.log_prob(x, zk)
    assert lp.shape == (5, 4)
    for k in range(5):
        torch.testing.assert_close(lp[k], dec.log_prob(x, zk[k]))
    torch.testing.assert_close(dec.mean(z), torch.sigmoid(logits))
    s = dec.sample(z, generator=torch.Generator().manual_seed(0))
    assert s.shape == (4, 1, 28, 28) and set(s.unique().tolist()) <= {0.0, 1.0}


def test_decoder_shape_errors():
    dec = BernoulliDecoder(3, 16, (1, 28, 28))
    with pytest.raises(ValueError, match=r"z must have shape \[B, 3\] or \[K, B, 3\]"):
        dec.log_prob(binary_images(2), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="x has 3 examples but z has 2"):
        dec.log_prob(binary_images(3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="z contains NaN"):
        dec.log_prob(binary_images(2), torch.full((2, 3), float("nan")))


@pytest.mark.parametrize("variance", ["fixed", "learned"])
def test_gaussian_decoder_log_prob_matches_torch_distributions(variance):
    torch.manual_seed(0)
    dec = GaussianDecoder(2, 8, 6, variance=variance, sigma=0.3)
    assert isinstance(dec.logvar, nn.Parameter) == (variance == "learned")
    assert any(p is dec.logvar for p in dec.parameters()) == (variance == "learned")
    x, z = torch.randn(4, 6), torch.randn(4, 2)
    expected = Normal(dec(z), 0.3).log_prob(x).sum(-1)
    torch.testing.assert_close(dec.log_prob(x, z), expected)
    assert dec.log_prob(x, torch.randn(3, 4, 2)).shape == (3, 4)
    assert dec.sample(z).shape == (4, 6)
    with pytest.raises(ValueError, match="variance must be"):
        GaussianDecoder(2, 8, 6, variance="per-pixel")


def test_reparameterize_shapes_and_moments():
    mu, logvar = torch.tensor([[1.0, -2.0]]), torch.tensor([[0.0, math.log(9.0)]])
    g = torch.Generator().manual_seed(0)
    assert reparameterize(mu, logvar).shape == (1, 2)
    K = 40000
    z = reparameterize(mu, logvar, K=K, generator=g)
    assert z.shape == (K, 1, 2)
    # 4 standard errors of a normal sample's mean (sd / sqrt(K)) and sd (sd / sqrt(2 K))
    sd = torch.tensor([[1.0, 3.0]])
    assert ((z.mean(0) - mu).abs() < 4 * sd / math.sqrt(K)).all(), z.mean(0)
    assert ((z.std(0) - sd).abs() < 4 * sd / math.sqrt(2 * K)).all(), z.std(0)


# --------------------------------------------------------------------------------------------
# VAE.loss and IWAE.loss replayed by hand
# --------------------------------------------------------------------------------------------


def hand_terms(model: VAE, x: torch.Tensor, K: int | None):
    """mu, logvar, z and the log-densities written out with torch.distributions."""
    mu, logvar = model.encoder(x)
    std = torch.exp(0.5 * logvar)
    eps = torch.randn((mu.shape if K is None else (K, *mu.shape)), dtype=mu.dtype)
    z = mu + std * eps
    logits = model.decoder.net(z)
    log_px_z = Bernoulli(logits=logits).log_prob(x.reshape(x.shape[0], -1)).sum(-1)
    q = Normal(mu, std)
    kl_dims = kl_divergence(q, Normal(torch.zeros_like(mu), torch.ones_like(mu)))
    log_pz = Normal(0.0, 1.0).log_prob(z).sum(-1)
    log_qz = q.log_prob(z).sum(-1)
    return log_px_z, kl_dims, log_pz, log_qz


def test_vae_loss_matches_hand_written_elbo():
    model, x = small_vae(), binary_images()
    torch.manual_seed(1)
    terms = model.loss(x)
    assert set(terms) == {"loss", "recon", "kl", "elbo"}
    assert all(t.dim() == 0 for t in terms.values())
    torch.manual_seed(1)
    log_px_z, kl_dims, _, _ = hand_terms(model, x, None)
    recon, kl = -log_px_z.mean(), kl_dims.sum(-1).mean()
    torch.testing.assert_close(terms["recon"], recon)
    torch.testing.assert_close(terms["kl"], kl)
    torch.testing.assert_close(terms["elbo"], -(recon + kl))
    torch.testing.assert_close(terms["loss"], recon + kl)
    # and the gradients agree
    g1 = torch.autograd.grad(terms["loss"], model.encoder.net[0].weight)[0]
    g2 = torch.autograd.grad(recon + kl, model.encoder.net[0].weight)[0]
    torch.testing.assert_close(g1, g2)


def test_vae_loss_kl_weight_and_free_bits():
    model, x = small_vae(kl_weight=0.3), binary_images()
    torch.manual_seed(2)
    t = model.loss(x)
    torch.testing.assert_close(t["loss"], t["recon"] + 0.3 * t["kl"])
    torch.testing.assert_close(t["elbo"], -(t["recon"] + t["kl"]))  # the true ELBO is reported
    model.kl_weight, model.free_bits, model.free_bits_groups = 1.0, 0.5, 2
    torch.manual_seed(2)
    t = model.loss(x)
    torch.manual_seed(2)
    log_px_z, kl_dims, _, _ = hand_terms(model, x, None)
    torch.testing.assert_close(t["loss"], -log_px_z.mean() + free_bits_kl(kl_dims, 0.5, 2))


def test_vae_free_bits_stop_the_kl_gradient_below_the_threshold():
    """With every dimension below lambda, the loss gradient is the reconstruction gradient."""
    model, x = small_vae(free_bits=1e6), binary_images()
    torch.manual_seed(3)
    t = model.loss(x)
    params = list(model.encoder.parameters())
    g_loss = torch.autograd.grad(t["loss"], params, retain_graph=True)
    g_recon = torch.autograd.grad(t["recon"], params)
    for a, b in zip(g_loss, g_recon, strict=True):
        torch.testing.assert_close(a, b)


def test_vae_elbo_and_log_weights_match_hand_computation():
    model, x = small_vae(), binary_images()
    torch.manual_seed(4)
    elbo = model.elbo(x)
    torch.manual_seed(4)
    log_px_z, kl_dims, log_pz, log_qz = hand_terms(model, x, 1)
    torch.testing.assert_close(elbo, log_px_z[0] - kl_dims.sum(-1))
    torch.manual_seed(5)
    log_w = model.log_weights(x, 7)
    assert log_w.shape == (7, 6)
    torch.manual_seed(5)
    log_px_z, _, log_pz, log_qz = hand_terms(model, x, 7)
    torch.testing.assert_close(log_w, log_px_z + log_pz - log_qz)
    # a generator makes log_weights reproducible
    a = model.log_weights(x, 3, generator=torch.Generator().manual_seed(0))
    b = model.log_weights(x, 3, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(a, b)
    assert model.elbo(x, n_samples=5).shape == (6,)


def test_iwae_loss_matches_hand_written_bound():
    model, x = small_vae(IWAE, K=5), binary_images()
    torch.manual_seed(6)
    t = model.loss(x)
    assert set(t) == {"loss", "iwae", "elbo", "recon", "kl"}
    torch.manual_seed(6)
    log_px_z, kl_dims, log_pz, log_qz = hand_terms(model, x, 5)
    log_w = log_px_z + log_pz - log_qz
    iwae = (torch.logsumexp(log_w, 0) - math.log(5)).mean()
    torch.testing.assert_close(t["iwae"], iwae)
    torch.testing.assert_close(t["loss"], -iwae)
    torch.testing.assert_close(t["recon"], -log_px_z.mean())
    torch.testing.assert_close(t["kl"], kl_dims.sum(-1).mean())
    torch.testing.assert_close(t["elbo"], -(t["recon"] + t["kl"]))


def test_iwae_k1_is_the_monte_carlo_elbo():
    model, x = small_vae(IWAE, K=1), binary_images()
    torch.manual_seed(7)
    t = model.loss(x)
    torch.manual_seed(7)
    log_px_z, _, log_pz, log_qz = hand_terms(model, x, 1)
    torch.testing.assert_close(t["iwae"], (log_px_z + log_pz - log_qz).mean())


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_k_validation(bad):
    model, x = small_vae(), binary_images(2)
    with pytest.raises(ValueError, match="K must be an integer >= 1"):
        model.log_weights(x, bad)
    with pytest.raises(ValueError, match="K must be an integer >= 1"):
        IWAE(model.encoder, model.decoder, K=bad)
    with pytest.raises(ValueError, match="n_samples must be an integer >= 1"):
        model.elbo(x, n_samples=bad)
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        model.sample(bad)


def test_vae_rejects_bad_x():
    model = small_vae()
    with pytest.raises(ValueError, match="x contains NaN"):
        model.loss(torch.full((2, 1, 28, 28), float("nan")))
    with pytest.raises(ValueError, match="x must hold 784 values"):
        model.loss(torch.zeros(2, 1, 27, 27))


def test_sample_reconstruct_encode_shapes():
    model, x = small_vae(), binary_images(3)
    g = torch.Generator().manual_seed(0)
    s = model.sample(5, generator=g)
    assert s.shape == (5, 1, 28, 28) and set(s.unique().tolist()) <= {0.0, 1.0}
    m = model.sample(5, mean=True)
    assert m.shape == (5, 1, 28, 28) and 0 <= m.min() and m.max() <= 1
    r = model.reconstruct(x)
    mu, logvar = model.encode(x)
    torch.testing.assert_close(r, torch.sigmoid(model.decoder(mu)))
    assert mu.shape == logvar.shape == (3, 4)


def test_latent_sizes_must_agree():
    with pytest.raises(ValueError, match=r"encoder's z_dim \(3\) differs from the decoder's \(4\)"):
        VAE(MLPGaussianEncoder(784, 8, 3), BernoulliDecoder(4, 8))


def test_for_mnist_is_burdas_architecture():
    model = IWAE.for_mnist(K=50)
    assert model.K == 50 and model.z_dim == 50
    enc = [(m.in_features, m.out_features) for m in model.encoder.net if isinstance(m, nn.Linear)]
    dec = [(m.in_features, m.out_features) for m in model.decoder.net if isinstance(m, nn.Linear)]
    assert enc == [(784, 200), (200, 200), (200, 100)]  # mu and log-variance: 50 + 50
    assert dec == [(50, 200), (200, 200), (200, 784)]
    assert all(
        isinstance(m, (nn.Linear, nn.Tanh)) for m in [*model.encoder.net, *model.decoder.net]
    )
    assert isinstance(VAE.for_mnist(z_dim=2, hidden=10), VAE)


# --------------------------------------------------------------------------------------------
# A linear-Gaussian VAE: log p(x) is exact
# --------------------------------------------------------------------------------------------


def linear_gaussian_vae() -> tuple[VAE, torch.Tensor, torch.Tensor]:
    """z ~ N(0, I_2), x | z ~ N(W z + b, 0.5 I_5) with a linear encoder; float64."""
    torch.manual_seed(0)
    enc = MLPGaussianEncoder(5, 1, 2, n_hidden_layers=0)
    dec = GaussianDecoder(2, 1, 5, n_hidden_layers=0, variance="fixed", sigma=math.sqrt(0.5))
    model = VAE(enc, dec).double()
    W, b = dec.net[0].weight.detach(), dec.net[0].bias.detach()
    x = torch.randn(4, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    cov = W @ W.T + 0.5 * torch.eye(5, dtype=torch.float64)
    return model, x, MultivariateNormal(b, cov).log_prob(x)


def test_linear_gaussian_vae_bounds_and_nll():
    model, x, log_px = linear_gaussian_vae()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        elbo = model.elbo(x, n_samples=20000, generator=g)
        assert (elbo < log_px).all()
        nll = estimate_nll(lambda x, k: model.log_weights(x, k, generator=g), x, K=5000)
    iwae5000 = -nll
    assert (iwae5000 > elbo + 0.1).all()  # the random linear encoder is a poor q
    torch.testing.assert_close(iwae5000, log_px, atol=0.05, rtol=0.0)


# --------------------------------------------------------------------------------------------
# Training and checkpoints
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls,kwargs", [(VAE, {}), (IWAE, {"K": 3})])
def test_trainer_fits_and_checkpoints(tmp_path, cls, kwargs):
    model = small_vae(cls, **kwargs)
    x = binary_images(32)
    trainer = Trainer(
        model, torch.optim.Adam(model.parameters(), lr=1e-2), log_every=1, progress=False
    )
    torch.manual_seed(0)
    history = trainer.fit(
        lambda epoch: [x[:16], x[16:]] * 5, epochs=1, checkpoint=tmp_path / "m.st"
    )
    assert history["loss"][-1] < history["loss"][0]
    assert set(model.loss(x)) <= set(history)
    fresh = small_vae(cls, **kwargs)
    load_model(fresh, tmp_path / "m.st")
    for a, b in zip(model.state_dict().values(), fresh.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)

"""dgmlib.models.vae: the terms of every bound replayed by hand with torch.distributions, shapes,
the linear-Gaussian case where log p(x) is exact, build specs, training and checkpoints (the
objectives built on the terms: tests/test_objectives.py)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.distributions import Bernoulli, MultivariateNormal, Normal, kl_divergence

from dgmlib.bounds import estimate_nll
from dgmlib.experiment import build, load_model_file, make, save_model
from dgmlib.models.vae import (
    VAE,
    BernoulliDecoder,
    ConvGaussianEncoder,
    GaussianDecoder,
    MLPGaussianEncoder,
)
from dgmlib.objectives import ELBO, IWAEBound
from dgmlib.train import Trainer


def binary_images(n: int = 6, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.full((n, 1, 28, 28), 0.3), generator=g)


def small_vae(z_dim: int = 4) -> VAE:
    """A small VAE for 28 x 28 binary images, made with its build spec."""
    torch.manual_seed(0)
    enc = make(MLPGaussianEncoder, x_dim=784, hidden=32, z_dim=z_dim)
    dec = make(BernoulliDecoder, z_dim=z_dim, hidden=32, x_shape=(1, 28, 28))
    return make(VAE, encoder=enc, decoder=dec)


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


# --------------------------------------------------------------------------------------------
# VAE.terms, elbo and log_weights replayed by hand
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


def test_terms_match_the_hand_written_densities():
    """mu, logvar, z, log p(x|z), log p(z) - log q(z|x) and the analytic KL, per example."""
    model, x = small_vae(), binary_images()
    for K in (None, 3):
        torch.manual_seed(1)
        t = model.terms(x, K)
        torch.manual_seed(1)
        log_px_z, kl_dims, log_pz, log_qz = hand_terms(model, x, K)
        assert set(t) == {"mu", "logvar", "z", "log_px_z", "log_pz_minus_log_qz", "kl"}
        assert t["z"].shape == ((6, 4) if K is None else (3, 6, 4))
        torch.testing.assert_close(t["log_px_z"], log_px_z)
        torch.testing.assert_close(t["log_pz_minus_log_qz"], log_pz - log_qz)
        torch.testing.assert_close(t["kl"], kl_dims.sum(-1))  # analytic for N(0, I): [B]
    assert model.analytic_kl
    torch.testing.assert_close(model.kl_per_dim(t["mu"], t["logvar"]), kl_dims)
    # gradients flow through z into the encoder from both terms
    g = torch.autograd.grad(t["log_pz_minus_log_qz"].sum(), model.encoder.net[0].weight)[0]
    assert g.abs().sum() > 0


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


@pytest.mark.parametrize(
    ("bad", "error"), [(0, ValueError), (-1, ValueError), (2.5, TypeError), (True, TypeError)]
)
def test_k_validation(bad, error):
    model, x = small_vae(), binary_images(2)
    with pytest.raises(error, match="VAE.log_weights: K must be an integer >= 1"):
        model.log_weights(x, bad)
    with pytest.raises(error, match="VAE.elbo: n_samples must be an integer >= 1"):
        model.elbo(x, n_samples=bad)
    with pytest.raises(error, match="VAE.sample: n must be an integer >= 1"):
        model.sample(bad)


def test_vae_rejects_bad_x():
    model = small_vae()
    with pytest.raises(ValueError, match="x contains NaN"):
        model.terms(torch.full((2, 1, 28, 28), float("nan")))
    with pytest.raises(ValueError, match="x must hold 784 values"):
        model.elbo(torch.zeros(2, 1, 27, 27))
    with pytest.raises(TypeError, match="VAE.encode: x must be a torch.Tensor, got list"):
        model.encode([[0.0] * 784])


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


def test_for_mnist_is_burdas_architecture_with_a_build_spec():
    torch.manual_seed(0)
    model = VAE.for_mnist()
    assert model.z_dim == 50 and model.analytic_kl
    enc = [(m.in_features, m.out_features) for m in model.encoder.net if isinstance(m, nn.Linear)]
    dec = [(m.in_features, m.out_features) for m in model.decoder.net if isinstance(m, nn.Linear)]
    assert enc == [(784, 200), (200, 200), (200, 100)]  # mu and log-variance: 50 + 50
    assert dec == [(50, 200), (200, 200), (200, 784)]
    assert all(
        isinstance(m, (nn.Linear, nn.Tanh)) for m in [*model.encoder.net, *model.decoder.net]
    )
    # the spec rebuilds the same architecture from the same seed, bit for bit
    spec = model.build_spec
    assert spec["class"] == "dgmlib.models.vae:VAE"
    assert spec["args"]["encoder"]["args"]["activation"] == {
        "type": "torch.nn.modules.activation:Tanh"
    }
    torch.manual_seed(0)
    again = build(spec)
    for (k, a), (k2, b) in zip(model.state_dict().items(), again.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b), k
    small = VAE.for_mnist(z_dim=2, hidden=10, activation=nn.ReLU)
    assert small.z_dim == 2 and isinstance(small.encoder.net[1], nn.ReLU)
    with pytest.raises(ValueError, match="prior must be one of"):
        VAE.for_mnist(prior="laplace")


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


@pytest.mark.parametrize("objective", [ELBO(), IWAEBound(3)], ids=["elbo", "iwae3"])
def test_trainer_fits_and_the_saved_model_rebuilds_itself(tmp_path, objective):
    model = small_vae()
    x = binary_images(32)
    trainer = Trainer(
        model, torch.optim.Adam(model.parameters(), lr=1e-2), objective, log_every=1, progress=False
    )
    torch.manual_seed(0)
    history = trainer.fit(
        lambda epoch: [x[:16], x[16:]] * 5, epochs=1, checkpoint=tmp_path / "m.st"
    )
    assert history["loss"][-1] < history["loss"][0]
    assert set(objective(model, x)) <= set(history)
    digest = save_model(tmp_path / "final.safetensors", model, epochs=1)
    fresh = load_model_file(tmp_path / "final.safetensors", expected_sha256=digest)
    assert type(fresh) is VAE and not fresh.training
    for (k, a), (k2, b) in zip(model.state_dict().items(), fresh.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b), k

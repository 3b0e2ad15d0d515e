# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Lecture 01 — Latent-variable models and the evidence lower bound
#
# A latent-variable model explains each observation $\mathbf x$ by an unobserved cause
# $\mathbf z$: first draw $\mathbf z$ from a simple prior, then draw $\mathbf x$ given
# $\mathbf z$. Every model in this course (VAEs, hierarchical VAEs, diffusion) has this shape.
# The price of the construction is that the probability of the data, $p(\mathbf x)$, becomes an
# integral over $\mathbf z$. This lecture is about that integral: why it is hard, why the obvious
# Monte Carlo estimate of it fails, and which lower bound we optimise instead.
#
# We work throughout with **probabilistic PCA** {cite:p}`tipping1999probabilistic`, a linear
# Gaussian latent-variable model in which *every* quantity (the evidence, the posterior, the
# bound, the optimum) has a closed form. That makes it the ideal test bench: each identity we
# derive is checked numerically against the exact answer.
#
# **What you will learn**
#
# - the vocabulary of latent-variable models: prior, likelihood, evidence, posterior, and how
#   Bayes' rule ties them together;
# - why estimating $p(\mathbf x)$ by sampling $\mathbf z$ from the prior collapses as the latent
#   dimension grows, and why importance sampling with the exact posterior has zero variance;
# - the **evidence lower bound** (ELBO), obtained once by Jensen's inequality and once as an exact
#   decomposition $\log p(\mathbf x) = \mathrm{ELBO}(q) + \mathrm{KL}(q \,\|\, p(\mathbf z\mid\mathbf x))$;
# - the **EM algorithm** as coordinate ascent on the ELBO, why it never decreases the likelihood,
#   and how it converges to the closed-form maximum-likelihood solution of probabilistic PCA;
# - **MAP-EM**: a prior $p(\theta)$ adds $\log p(\theta)$ to the M-step; its updates for pPCA,
#   checked against a direct maximisation of the log posterior, and why a VAE, which keeps only a
#   point estimate of its weights, is not a fully Bayesian model;
# - **mean-field EM**: with a factorised $q$ the E-step leaves a KL gap; on complete pPCA data a
#   rotation of $W$ removes it, but with missing entries it cannot, and the ELBO's optimum is then
#   biased away from the maximum-likelihood parameters.
#
# **Prerequisites:** multivariate Gaussians (densities, marginals, conditioning), Bayes' rule,
# expectations, eigendecompositions, and basic PyTorch.
#
# **Follows:** the lecture notes on latent-variable models, the ELBO and the EM algorithm (the
# recap, EM and MAP-EM part of lecture 5 of the *Deep Generative Models* slides), the hand-written note on
# deep latent-variable models, and the introduction of the lecture on structured VAE learning.
# The derivations and checks below are worked out independently.

# %%
import math
from functools import partial

import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.decomposition import PCA
from torch.distributions import MultivariateNormal, kl_divergence

import dgmlib
from dgmlib import checks, set_threads, stats
from dgmlib.data import load_digits
from dgmlib.distributions import log_mean_exp, sample_mvn
from dgmlib.models import PPCA
from dgmlib.optim import lbfgs_minimise
from dgmlib.plot import image_grid
from dgmlib.widgets import choose, explore

device = dgmlib.notebook_setup(0)  # unused: the closed-form checks below run on the CPU
set_threads(1)  # every tensor in this lecture is tiny: one CPU thread is fastest
torch.set_default_dtype(torch.float64)  # the checks compare closed forms to 1e-6 or better
fmt = partial(stats.fmt, decimals=True)  # fmt(v, digits=4): rounded to 4 decimals, never "-0"


# %% [markdown]
# ## 1. Latent-variable models and Bayes' rule
#
# A latent-variable model specifies a joint density through two simple pieces,
#
# $$
# p_\theta(\mathbf x, \mathbf z) = p(\mathbf z)\, p_\theta(\mathbf x \mid \mathbf z),
# $$
#
# a **prior** $p(\mathbf z)$ over the latent variable and a **likelihood** (or decoder)
# $p_\theta(\mathbf x\mid\mathbf z)$ with parameters $\theta$. The model's density of an
# observation is the **evidence**, or marginal likelihood,
#
# $$
# p_\theta(\mathbf x) = \int p_\theta(\mathbf x\mid\mathbf z)\, p(\mathbf z)\, d\mathbf z
#   = \mathbb E_{p(\mathbf z)}\big[p_\theta(\mathbf x\mid\mathbf z)\big],
# $$
#
# and what the model believes about the cause of a given $\mathbf x$ is the **posterior**, from
# Bayes' rule:
#
# $$
# p_\theta(\mathbf z\mid\mathbf x) = \frac{p_\theta(\mathbf x\mid\mathbf z)\,p(\mathbf z)}{p_\theta(\mathbf x)} .
# $$
#
# Fitting the model by maximum likelihood means maximising $\sum_{n=1}^N \log p_\theta(\mathbf x_n)$
# over $\theta$, so the evidence is needed for *every* data point. When the likelihood is a neural
# network, the integral has no closed form, and neither has the posterior (its normaliser *is* the
# evidence). The rest of the course is about living with this; first we meet a model where all of
# it can be written down.
#
# ### Probabilistic PCA
#
# With observations $\mathbf x\in\mathbb R^d$ and latents $\mathbf z\in\mathbb R^k$, $k<d$,
# probabilistic PCA (pPCA) is
#
# $$
# \mathbf z \sim \mathcal N(\mathbf 0, I_k), \qquad
# \mathbf x = W\mathbf z + \boldsymbol\mu + \boldsymbol\varepsilon, \quad
# \boldsymbol\varepsilon \sim \mathcal N(\mathbf 0, \sigma^2 I_d),
# $$
#
# with parameters $\theta = (W, \boldsymbol\mu, \sigma^2)$, $W\in\mathbb R^{d\times k}$. (We write
# $k$ for the latent dimension because the letter $q$ will denote a distribution over
# $\mathbf z$; in code, `PPCA.q` is this $k$.)
#
# **Evidence.** $\mathbf x$ is an affine function of the jointly Gaussian pair
# $(\mathbf z, \boldsymbol\varepsilon)$, hence Gaussian. Its mean is $\boldsymbol\mu$ and, since
# $\mathbf z$ and $\boldsymbol\varepsilon$ are independent, its covariance is
# $W\,\mathrm{Cov}(\mathbf z)\,W^\top + \mathrm{Cov}(\boldsymbol\varepsilon)$:
#
# $$
# p_\theta(\mathbf x) = \mathcal N(\mathbf x;\, \boldsymbol\mu,\, C), \qquad C = WW^\top + \sigma^2 I_d .
# $$
#
# **Posterior.** As a function of $\mathbf z$, the log of the numerator of Bayes' rule is
#
# $$
# -\tfrac{1}{2\sigma^2}\|\mathbf x-\boldsymbol\mu-W\mathbf z\|^2 - \tfrac12\|\mathbf z\|^2 + \text{const}
# = -\tfrac{1}{2\sigma^2}\Big(\mathbf z^\top M\mathbf z - 2\,\mathbf z^\top W^\top(\mathbf x-\boldsymbol\mu)\Big) + \text{const},
# \qquad M = W^\top W + \sigma^2 I_k .
# $$
#
# A quadratic in $\mathbf z$ is a Gaussian log-density; completing the square reads off its
# precision $M/\sigma^2$ and its mean:
#
# $$
# p_\theta(\mathbf z\mid\mathbf x) = \mathcal N\big(\mathbf z;\; M^{-1}W^\top(\mathbf x-\boldsymbol\mu),\; \sigma^2 M^{-1}\big).
# $$
#
# `dgmlib.models.PPCA` implements exactly these formulas: `prior` and `likelihood(z)` return
# `torch.distributions` objects, `log_prob(x)` is the evidence, `posterior(x)` the posterior, and
# `log_likelihood(x, z)` and `joint_log_prob(x, z)` are fast shortcuts for $\log p(\mathbf x\mid\mathbf z)$
# and $\log p(\mathbf x, \mathbf z)$. We create a model with $d=10$, $k=3$ and draw a data set from
# it.

# %%
gen = torch.Generator().manual_seed(1)
d, k, n_data = 10, 3, 500
directions = torch.randn(d, k, generator=gen)
signal_std = torch.tensor([3.0, 2.0, 1.4])  # how strongly each latent coordinate shows in x
W_true = directions / directions.norm(dim=0) * signal_std
true_model = PPCA(W=W_true, mu=torch.randn(d, generator=gen), sigma2=1.0)
X = true_model.sample(n_data, gen)
x = X[:1]  # one observation, shape [1, d], used in the checks below
print(true_model, f"| data set X: {tuple(X.shape)}")

# %% [markdown]
# **Check: Bayes' rule, pointwise.** Rearranged, Bayes' rule says that
# $\log p(\mathbf x\mid\mathbf z) + \log p(\mathbf z) - \log p(\mathbf z\mid\mathbf x) = \log p(\mathbf x)$
# for **every** $\mathbf z$, not just on average. The left side uses the likelihood, prior and
# closed-form posterior; the right side uses the closed-form evidence. If either formula were
# wrong, the left side would change with $\mathbf z$.

# %%
z_any = 3.0 * torch.randn(5, 1, k, generator=gen)  # five arbitrary latent values
log_px = true_model.log_prob(x)  # [1]
lhs = (
    true_model.likelihood(z_any).log_prob(x)
    + true_model.prior.log_prob(z_any)
    - true_model.posterior(x).log_prob(z_any)
)  # [5, 1]
print("log p(x)                                    :", fmt(log_px.item()))
print("log p(x|z) + log p(z) - log p(z|x) at 5 z's :", " ".join(fmt(v) for v in lhs.flatten()))
# float64 sums of terms below 100 in size: round-off ~1e-13, so 1e-10 can only fail on a wrong formula
assert torch.allclose(lhs, log_px.expand_as(lhs), rtol=0, atol=1e-10)
print("agree to 1e-10 for every z")

# %% [markdown]
# To *see* Bayes' rule, take a model with a one-dimensional latent ($k=1$, $d=5$). For a fixed
# $\mathbf x$ we evaluate the prior and the likelihood on a fine grid of $z$ values, multiply them
# and normalise numerically; this brute-force posterior should lie on top of the closed form. The
# normalising constant of the grid is a Riemann sum for $p(\mathbf x)$ itself.

# %%
toy = PPCA(W=torch.tensor([[1.5], [1.0], [-0.8], [0.5], [1.2]]), mu=torch.zeros(5), sigma2=0.8)
x_toy = toy.sample(1, gen)  # [1, 5]
z_grid = torch.linspace(-6.0, 6.0, 3001)[:, None]  # [G, 1]
dz = (z_grid[1] - z_grid[0]).item()
log_joint = toy.joint_log_prob(x_toy, z_grid)  # log p(x | z) + log p(z) on the grid, [G]
posterior_grid = torch.softmax(log_joint, dim=0) / dz  # Bayes' rule, normalised numerically
posterior_exact = toy.posterior(x_toy).log_prob(z_grid).exp()
likelihood_grid = toy.likelihood(z_grid).log_prob(x_toy).exp()
likelihood_grid = likelihood_grid / (likelihood_grid.sum() * dz)  # rescaled to unit area
prior_grid = toy.prior.log_prob(z_grid).exp()
log_px_grid = torch.logsumexp(log_joint, dim=0) + math.log(dz)

fig, ax = plt.subplots(figsize=(7, 3.5))
zg = z_grid[:, 0].numpy()
ax.plot(zg, prior_grid.numpy(), label="prior $p(z)$")
ax.plot(zg, likelihood_grid.numpy(), "--", label=r"likelihood $p(\mathbf{x}\mid z)$ (rescaled)")
ax.plot(zg, posterior_exact.numpy(), lw=2.5, label=r"posterior $p(z\mid\mathbf{x})$, closed form")
ax.plot(zg[::60], posterior_grid[::60].numpy(), "k.", label="posterior by brute-force Bayes")
ax.set_xlim(-4, 4)
ax.set_xlabel("latent $z$")
ax.set_ylabel("density")
ax.set_title("Bayes' rule on a one-dimensional latent")
ax.legend(loc="upper left")
plt.show()

# %% [markdown]
# The posterior is narrower than both the prior and the likelihood: it combines the two sources
# of information, its precision being the sum of theirs.
#
# **Check: closed form against brute force.**

# %%
# The grid sum is a Riemann sum of a Gaussian-shaped integrand with spacing 0.004, far below the
# posterior sd: its error is exponentially small, and the truncation to [-6, 6] loses at most the
# prior mass outside it, 2e-9. So 1e-6 leaves room only for round-off.
max_density_gap = (posterior_grid - posterior_exact).abs().max().item()
print(
    "log p(x): closed form", fmt(toy.log_prob(x_toy).item()), "| grid sum", fmt(log_px_grid.item())
)
assert max_density_gap < 1e-6, max_density_gap
assert abs(log_px_grid.item() - toy.log_prob(x_toy).item()) < 1e-6
print("posterior densities and evidence agree to 1e-6")

# %% [markdown]
# ## 2. Naive Monte Carlo estimation of the evidence
#
# The evidence is an expectation under the prior, so the first idea is to average the likelihood
# over $K$ prior samples:
#
# $$
# \hat p_K(\mathbf x) = \frac1K\sum_{j=1}^K p_\theta(\mathbf x\mid\mathbf z_j), \qquad \mathbf z_j \sim p(\mathbf z).
# $$
#
# The estimator is unbiased, $\mathbb E[\hat p_K] = p(\mathbf x)$, and its variance is
# $\mathrm{Var}_{p(\mathbf z)}[p(\mathbf x\mid\mathbf z)]/K$. What matters is the error *relative*
# to the tiny number $p(\mathbf x)$:
#
# $$
# \frac{\operatorname{sd}(\hat p_K)}{p(\mathbf x)} = \sqrt{\frac{\rho(\mathbf x)}{K}}, \qquad
# \rho(\mathbf x) = \frac{\mathbb E_{p(\mathbf z)}\big[p(\mathbf x\mid\mathbf z)^2\big]}{p(\mathbf x)^2} - 1 .
# $$
#
# For pPCA the second moment is another Gaussian integral. Squaring a Gaussian density halves its
# variance and leaves a constant, $\mathcal N(\mathbf x; \mathbf a, \sigma^2 I)^2 =
# (4\pi\sigma^2)^{-d/2}\,\mathcal N(\mathbf x; \mathbf a, \tfrac{\sigma^2}{2} I)$, and averaging over
# $\mathbf a = W\mathbf z+\boldsymbol\mu$ with $\mathbf z\sim\mathcal N(\mathbf 0, I)$ is the same
# marginalisation as before:
#
# $$
# \mathbb E_{p(\mathbf z)}\big[p(\mathbf x\mid\mathbf z)^2\big]
#   = (4\pi\sigma^2)^{-d/2}\;\mathcal N\big(\mathbf x;\,\boldsymbol\mu,\, WW^\top + \tfrac{\sigma^2}{2} I_d\big).
# $$
#
# So $\rho(\mathbf x)$ is exact, and it is the evidence of a pPCA model with noise variance
# $\sigma^2/2$. We work with logarithms throughout: densities of 10-dimensional points are already
# around $e^{-20}$.


# %%
def naive_mc_log_evidence(
    model: PPCA, x: torch.Tensor, K: int, gen: torch.Generator
) -> torch.Tensor:
    """log of (1/K) sum_j p(x | z_j), z_j ~ p(z), for each row of x [P, d]: shape [P]."""
    z = torch.randn(K, x.shape[0], model.q, generator=gen)  # [K, P, k]
    return log_mean_exp(model.log_likelihood(x, z), dim=0)  # = likelihood(z).log_prob(x)


def relative_variance(model: PPCA, x: torch.Tensor) -> torch.Tensor:
    """rho(x) = Var[p(x|z)] / p(x)^2 under the prior, exactly, for each row of x: shape [P]."""
    half_noise = PPCA(W=model.W, mu=model.mu, sigma2=model.sigma2 / 2)
    log_second_moment = -0.5 * model.d * torch.log(
        4 * math.pi * model.sigma2
    ) + half_noise.log_prob(x)
    return torch.expm1(log_second_moment - 2 * model.log_prob(x))


# %% [markdown]
# **Check: the estimator and its variance formula.** On our $k=3$ model, with $K = 200\,000$
# prior samples, the estimate should be within 4 predicted standard deviations of the exact
# evidence (by Chebyshev's inequality a larger deviation has probability at most $1/16$ whatever
# the distribution of the estimate, and about $10^{-4}$ once the average is close to Gaussian).
# The empirical second moment of the likelihood should match the closed form within 4 of *its*
# standard deviations, which are exact too: the same squaring argument gives every power,
# $\mathcal N(\mathbf x; \mathbf a, \sigma^2 I)^n = (2\pi\sigma^2)^{-(n-1)d/2}\, n^{-d/2}\,
# \mathcal N(\mathbf x; \mathbf a, \tfrac{\sigma^2}{n} I)$, so
# $\mathbb E_{p(\mathbf z)}[p(\mathbf x\mid\mathbf z)^n] = (2\pi\sigma^2)^{-(n-1)d/2}\, n^{-d/2}\,
# \mathcal N(\mathbf x; \boldsymbol\mu, WW^\top + \tfrac{\sigma^2}{n} I_d)$, and the relative
# standard deviation of the average of $K$ squared likelihoods is
# $\sqrt{(\mathbb E[p^4]/\mathbb E[p^2]^2 - 1)/K}$.

# %%
K_check = 200_000
estimate = naive_mc_log_evidence(true_model, x, K_check, gen)
rho = relative_variance(true_model, x)
predicted_rel_sd = (rho / K_check).sqrt().item()
rel_error = torch.expm1(estimate - log_px).abs().item()
print(f"log p(x): exact {fmt(log_px.item())} | naive MC, K = {K_check}: {fmt(estimate.item())}")
print(f"relative error {rel_error:.2g}, predicted relative sd {predicted_rel_sd:.2g}")
assert rel_error < 4 * predicted_rel_sd


def log_likelihood_moment(model: PPCA, x: torch.Tensor, n: int) -> torch.Tensor:
    """log E_p(z)[p(x|z)^n] in closed form, for each row of x: shape [P]."""
    noise_over_n = PPCA(W=model.W, mu=model.mu, sigma2=model.sigma2 / n)
    return (
        -0.5 * (n - 1) * model.d * torch.log(2 * math.pi * model.sigma2)
        - 0.5 * model.d * math.log(n)
        + noise_over_n.log_prob(x)
    )


z_check = torch.randn(K_check, 1, k, generator=gen)
log_lik_z = true_model.log_likelihood(x, z_check)  # [K, 1]
log_m2, log_m4 = log_likelihood_moment(true_model, x, 2), log_likelihood_moment(true_model, x, 4)
# sanity line: the n = 2 moment is the one relative_variance uses (the same formula, rewritten)
assert torch.allclose(torch.expm1(log_m2 - 2 * log_px), rho, rtol=1e-10)
m2_rel_error = torch.expm1(log_mean_exp(2 * log_lik_z, dim=0) - log_m2).item()
m2_rel_sd = (torch.expm1(log_m4 - 2 * log_m2) / K_check).sqrt().item()
rho_empirical = torch.expm1(log_mean_exp(2 * log_lik_z, dim=0) - 2 * log_px).item()
print(f"rho(x): closed form {rho.item():.4g} | from samples {rho_empirical:.4g}")
print(
    f"E[p(x|z)^2]: relative error of the sample average {m2_rel_error:.2g}, "
    f"predicted relative sd {m2_rel_sd:.2g}"
)
assert abs(m2_rel_error) < 4 * m2_rel_sd
print("estimate and second moment both within 4 predicted sd")

# %% [markdown]
# ### The collapse with latent dimension
#
# Unbiasedness is little comfort when the variance is enormous. The likelihood
# $p(\mathbf x\mid\mathbf z)$ is large only where the posterior lives, and the prior rarely samples
# there: in each latent direction the posterior is narrower than the prior, and the *fraction* of
# prior mass near the posterior is (roughly) a product of one such ratio per direction, so it
# shrinks exponentially with $k$. Almost all samples then contribute nothing and
# $\hat p_K(\mathbf x)$ is typically far *below* $p(\mathbf x)$; once in a very long while a lucky
# sample makes up for it (that is how the average stays unbiased).
#
# We measure this on pPCA models with $d = 32$, noise $\sigma^2 = 1$ and $k$ orthogonal latent
# directions of strength $2$ (each posterior coordinate has variance $1/5$), for
# $k = 1, \dots, 24$. For 10 data points per model we repeat the $K = 1000$ estimate 10 times and
# record the relative error $|\hat p_K/p - 1|$ and the log-error $\log\hat p_K - \log p$.

# %%
d_big, K, repeats, n_points = 32, 1000, 10, 10
latent_dims = [1, 2, 3, 4, 6, 8, 12, 16, 24]
experiments = []  # (model, points, exact log-evidence) per latent dimension, reused in section 3
naive_rel_err, naive_log_err, exact_rel_sd = [], [], []
naive_mean_log_err, naive_mean_log_err_se = [], []  # mean of log p_K - log p and its s.e.
for kk in latent_dims:
    Q, _ = torch.linalg.qr(torch.randn(d_big, kk, generator=gen))  # orthonormal columns
    model = PPCA(W=2.0 * Q, mu=torch.zeros(d_big), sigma2=1.0)
    points = model.sample(n_points, gen)
    log_p = model.log_prob(points)  # [P]
    estimates = torch.stack([naive_mc_log_evidence(model, points, K, gen) for _ in range(repeats)])
    experiments.append((model, points, log_p))
    naive_rel_err.append(torch.expm1(estimates - log_p).abs().median().item())
    naive_log_err.append(torch.quantile(estimates - log_p, torch.tensor([0.1, 0.5, 0.9])).numpy())
    naive_mean_log_err.append((estimates - log_p).mean().item())
    naive_mean_log_err_se.append(((estimates - log_p).std() / math.sqrt(estimates.numel())).item())
    exact_rel_sd.append((relative_variance(model, points) / K).sqrt().median().item())
naive_log_err = np.stack(naive_log_err)

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
ax1.semilogy(latent_dims, exact_rel_sd, "o-", label="predicted relative sd (exact)")
ax1.semilogy(latent_dims, naive_rel_err, "s--", label=r"typical $|\hat p_K/p - 1|$ (median)")
ax1.axhline(1.0, color="gray", ls=":", label="100 % error")
ax1.set_xlabel("latent dimension $k$")
ax1.set_ylabel("relative error")
ax1.set_title(f"Naive Monte Carlo, K = {K} prior samples")
ax1.legend()
ax2.plot(latent_dims, naive_log_err[:, 1], "s-", label="median")
ax2.fill_between(
    latent_dims, naive_log_err[:, 0], naive_log_err[:, 2], alpha=0.3, label="10-90 % range"
)
ax2.axhline(0.0, color="gray", ls=":")
ax2.set_xlabel("latent dimension $k$")
ax2.set_ylabel(r"$\log \hat p_K(\mathbf{x}) - \log p(\mathbf{x})$  (nats)")
ax2.set_title("The estimate falls far below the truth")
ax2.legend(loc="lower left")
plt.show()

# %% [markdown]
# The predicted relative standard deviation grows geometrically with $k$ (the left panel has a
# log scale), and for these models the rate can be derived. With $W = 2Q$, $Q$ having orthonormal
# columns $\mathbf q_j$, the likelihood factorises over the coordinates $y_j = \mathbf q_j^\top
# \mathbf x$ (the part of $\mathbf x$ orthogonal to the columns does not depend on $\mathbf z$),
# and so do both moments in $\rho$. One coordinate is a pPCA model of its own, $y = 2z +
# \varepsilon$ with $d = 1$, and the second-moment formula above gives
#
# $$
# 1 + \rho(\mathbf x) = \prod_{j=1}^k \frac{(4\pi)^{-1/2}\,\mathcal N(y_j;\, 0,\, \tfrac92)}{\mathcal N(y_j;\, 0,\, 5)^2}
#   = \prod_{j=1}^k \tfrac53\, e^{4y_j^2/45} .
# $$
#
# The points are drawn from the model, so the $y_j$ are independent $\mathcal N(0, 5)$, and
# $\log(1+\rho)$ is a sum of $k$ independent terms, each with mean $\log\tfrac53 + \tfrac49$ and
# variance $(\tfrac{4}{45})^2\operatorname{Var}[y_j^2] = (\tfrac{4}{45})^2\cdot 2\cdot 5^2 = \tfrac{32}{81}$:
# on average $\rho$ is multiplied by $e^{\log(5/3) + 4/9}$ for every latent dimension added.
#
# Once the predicted sd passes 1, the typical estimate is useless: its relative error saturates at
# 100 %, because $\hat p_K$ is a vanishing fraction of $p(\mathbf x)$. On the log scale (right),
# the median estimate at $k = 24$ is smaller than $p(\mathbf x)$ by the factor printed below. The
# direction of that error is no accident: $\log$ is concave, so by Jensen's inequality
# $\mathbb E[\log\hat p_K] \le \log\mathbb E[\hat p_K] = \log p(\mathbf x)$, and the log of an
# unbiased estimate is biased low. Where the predicted sd is huge the *empirical* error cannot
# show it: the rare enormous terms that keep the estimator unbiased never occur in a few repeats.
# A deep generative model has tens or hundreds of latent dimensions, so sampling from the prior
# is hopeless.
#
# **Check: the growth rate and the sign of the log-error.** (i) The factorised formula against
# `relative_variance` (the $d = 32$ formula), at every point; (ii) the average of
# $\log(1+\rho)$ per latent dimension over all 90 points against $\log\tfrac53 + \tfrac49$,
# within 4 standard errors computed from the variance $\tfrac{32}{81}$; (iii) at every $k$ the
# mean log-error of the 100 estimates is at most 4 of its standard errors above 0.

# %%
growth_per_dim = math.log(5 / 3) + 4 / 9  # E[log(1 + rho_j)] for y_j ~ N(0, 5)
var_per_dim = 32 / 81  # Var[log(1 + rho_j)]
max_factor_gap, sum_log1p_rho, n_terms = 0.0, 0.0, 0
for (model, points, _), kk in zip(experiments, latent_dims, strict=True):
    y = points @ (model.W / 2.0)  # [P, k]: coordinates along the orthonormal columns of W
    log1p_rho_factorised = (math.log(5 / 3) + 4 * y**2 / 45).sum(-1)
    log1p_rho = torch.log1p(relative_variance(model, points))
    max_factor_gap = max(max_factor_gap, (log1p_rho - log1p_rho_factorised).abs().max().item())
    sum_log1p_rho += log1p_rho.sum().item()
    n_terms += kk * len(points)
measured_growth = sum_log1p_rho / n_terms
growth_se = math.sqrt(var_per_dim / n_terms)
jensen_z = max(m / se for m, se in zip(naive_mean_log_err, naive_mean_log_err_se, strict=True))
print(f"log(1 + rho), d = {d_big} formula vs product of 1-d factors: agree to below 1e-10")
print(
    f"log(1 + rho) per latent dimension: measured {measured_growth:.3f} (s.e. {growth_se:.3f}) "
    f"| predicted log(5/3) + 4/9 = {growth_per_dim:.3f}"
)
print(
    f"rho grows like e^({growth_per_dim:.3f} k), the predicted relative sd like "
    f"e^({growth_per_dim / 2:.3f} k)"
)
print(f"largest mean log-error over k, in standard errors: {jensen_z:+.2f} (Jensen: <= 0)")
print(
    f"typical relative error: k = {latent_dims[0]}: {naive_rel_err[0]:.2g}, "
    f"k = {latent_dims[-1]}: {naive_rel_err[-1]:.3g}"
)
print(
    f"median of log p_K - log p(x) at k = {latent_dims[-1]}: {naive_log_err[-1, 1]:.1f} nats "
    f"(a factor {math.exp(-naive_log_err[-1, 1]):.0e} too small)"
)
# float64 round-off on log(1 + rho) <= 25 is ~1e-14
assert max_factor_gap < 1e-10
assert abs(measured_growth - growth_per_dim) < 4 * growth_se
assert jensen_z < 4

# %% [markdown]
# **Explore: the latent dimension.** Move the slider `latent dim k` through the latent dimensions
# of the figure above. For one data point of the model with that $k$, the left panel follows 20
# naive estimates as the number of prior samples grows to $K = 1000$ (each curve is the running
# average of one stream of samples); the right panel shows where 100 such estimates end at
# $K = 1000$. At small $k$ every curve settles near the truth within the first hundred samples.
# As $k$ grows, the curves start far below it, stay flat while no sample lands near the
# posterior, and jump when one finally does; at $K = 1000$ the histogram leaves $0$ behind and
# drifts to the left — the downward bias of $\log\hat p_K$ that Jensen's inequality predicts,
# made visible.


# %%
def naive_running_estimates(kk: int, n_runs: int = 100) -> np.ndarray:
    """Running log p_K - log p(x), [K, n_runs], for one point of the k-dimensional model above."""
    g_k = torch.Generator().manual_seed(100 + kk)  # a stream of its own: `gen` is not consumed
    Q, _ = torch.linalg.qr(torch.randn(d_big, kk, generator=g_k))
    model = PPCA(W=2.0 * Q, mu=torch.zeros(d_big), sigma2=1.0)
    point = model.sample(1, g_k)  # [1, d]
    z = torch.randn(K, n_runs, kk, generator=g_k)  # n_runs independent streams of prior samples
    log_w = model.log_likelihood(point, z) - model.log_prob(point)  # [K, n_runs]
    log_counts = torch.log(torch.arange(1.0, K + 1))[:, None]
    return (torch.logcumsumexp(log_w, dim=0) - log_counts).numpy()


running_by_k = {kk: naive_running_estimates(kk) for kk in latent_dims}  # ~1 s, once
shown_K = np.unique(np.geomspace(1, K, 200).round().astype(int))  # 1..K, log-spaced
ERR_LIM = (-30.0, 2.0)  # fixed axes (nats), so that moving k moves the curves, not the scale


def draw_naive_estimates(axes, k: int) -> None:
    """Left: 20 running naive estimates against K; right: where 100 of them end at K."""
    ax1, ax2 = axes
    runs = running_by_k[k]
    ax1.semilogx(shown_K, runs[shown_K - 1, :20], lw=0.8, alpha=0.8)
    ax1.axhline(0.0, color="k", ls="--", lw=1)
    ax1.text(1.3, 0.5, r"truth: $\log p(\mathbf{x})$", fontsize=9)
    ax1.set(xlim=(1, K), ylim=ERR_LIM, xlabel="number of prior samples $K$")
    ax1.set_ylabel(r"$\log \hat p_K(\mathbf{x}) - \log p(\mathbf{x})$ (nats)")
    ax1.set_title(f"20 running naive estimates, latent dimension k = {k}")
    bins = np.linspace(*ERR_LIM, 65)
    ax2.hist(np.clip(runs[-1], *ERR_LIM), bins=bins, color="tab:blue", alpha=0.8)
    ax2.axvline(0.0, color="k", ls="--", lw=1, label="truth")
    ax2.axvline(np.median(runs[-1]), color="tab:red", lw=1.5, label="median estimate")
    ax2.set(xlim=ERR_LIM, ylim=(0, runs.shape[1]), ylabel="estimates (of 100)")
    ax2.set_xlabel(rf"$\log \hat p_K(\mathbf{{x}}) - \log p(\mathbf{{x}})$ at $K$ = {K} (nats)")
    ax2.set_title(f"Where 100 estimates end at K = {K}: below the truth")
    ax2.legend(loc="upper left")


explore(
    draw_naive_estimates, ncols=2, figsize=(11.0, 3.8), k=choose(latent_dims, 8, "latent dim k")
)

# %% [markdown]
# ## 3. Importance sampling
#
# Sampling where the likelihood is large requires a different sampling distribution. For any
# density $r(\mathbf z)$ that is positive wherever $p(\mathbf x, \mathbf z)$ is,
#
# $$
# p(\mathbf x) = \int r(\mathbf z)\,\frac{p(\mathbf x\mid\mathbf z)p(\mathbf z)}{r(\mathbf z)}\,d\mathbf z
#   = \mathbb E_{r(\mathbf z)}\big[w(\mathbf z)\big], \qquad
#   w(\mathbf z) = \frac{p(\mathbf x, \mathbf z)}{r(\mathbf z)},
# $$
#
# so averaging the **importance weights** $w(\mathbf z_j)$, $\mathbf z_j \sim r$, is again unbiased.
# Its variance depends on how well $r$ follows $p(\mathbf x, \mathbf z)$ as a function of
# $\mathbf z$. The best choice is the posterior: by Bayes' rule,
#
# $$
# r(\mathbf z) = p(\mathbf z\mid\mathbf x) \quad\Longrightarrow\quad
# w(\mathbf z) = \frac{p(\mathbf x, \mathbf z)}{p(\mathbf z\mid\mathbf x)} = p(\mathbf x)
# \quad\text{for every } \mathbf z,
# $$
#
# a **zero-variance** estimator: a single sample gives the exact answer. Of course this is
# circular, since writing down the posterior requires $p(\mathbf x)$. But it tells us what to aim
# for: a tractable distribution *close to the posterior*. Finding one is the job of variational
# inference (below) and of the encoder of a VAE (Lecture 02).
#
# **Check: every weight equals $p(\mathbf x)$.**

# %%
posterior = true_model.posterior(x)
z_post = sample_mvn(posterior, 10, gen)  # [10, 1, k], drawn from p(z | x)
log_w = true_model.joint_log_prob(x, z_post) - posterior.log_prob(z_post)  # [10, 1]
print("log p(x)                     :", fmt(log_px.item()))
print("log w(z) for 10 posterior z's:", " ".join(fmt(v) for v in log_w.flatten()))
assert torch.allclose(log_w, log_px.expand_as(log_w), rtol=0, atol=1e-10)
print("all 10 log-weights equal log p(x) to 1e-10: zero variance")

# %% [markdown]
# A proposal that is only *close* to the posterior keeps most of the benefit. Back on the models
# of section 2, we sample from the posterior with its covariance inflated by $c = 1.5$ (a wider
# proposal, so the weights stay bounded) and compare with naive sampling at the same $K = 1000$.
#
# This proposal's relative variance is exact too. With posterior $\mathcal N(\mathbf m, \Sigma)$ and
# proposal $r = \mathcal N(\mathbf m, c\Sigma)$ the normalised weight is
# $w/p(\mathbf x) = \mathcal N(\mathbf z; \mathbf m, \Sigma)/\mathcal N(\mathbf z; \mathbf m, c\Sigma)$;
# after whitening by $\Sigma^{-1/2}$ its second moment is a product of $k$ one-dimensional
# Gaussian integrals,
#
# $$
# \mathbb E_r\Big[\frac{w^2}{p(\mathbf x)^2}\Big] = \Big(\int \frac{\varphi(t)^2}{\varphi(t/\sqrt c)/\sqrt c}\,dt\Big)^k
#   = \Big(\frac{c}{\sqrt{2c-1}}\Big)^k
# \quad\Longrightarrow\quad
# \rho_r = \Big(\frac{c^2}{2c-1}\Big)^{k/2} - 1 \qquad (c > \tfrac12),
# $$
#
# the same for every $\mathbf x$. It also grows exponentially with $k$, but with a far smaller base
# than the prior's (printed below). Since the estimator is unbiased, its mean squared relative
# error is exactly $\mathbb E[(\hat p_K/p - 1)^2] = \rho_r/K$: we check the average of the 100
# squared relative errors at each $k$ against it, within 4 standard errors (from their spread).

# %%
is_rel_err, is_mse = [], []  # median |relative error|; mean squared one and its s.e.
for model, points, log_p in experiments:
    post = model.posterior(points)  # batch [P]; all points share one posterior covariance
    proposal = MultivariateNormal(post.loc, scale_tril=math.sqrt(1.5) * post.scale_tril[0])
    estimates = []
    for _ in range(repeats):
        z = sample_mvn(proposal, K, gen)  # [K, P, k]
        log_weights = model.joint_log_prob(points, z) - proposal.log_prob(z)
        estimates.append(log_mean_exp(log_weights, dim=0))
    rel_errors = torch.expm1(torch.stack(estimates) - log_p)  # [repeats, P]
    is_rel_err.append(rel_errors.abs().median().item())
    is_mse.append(((rel_errors**2).mean().item(), (rel_errors**2).std().item() / 10.0))

fig, ax = plt.subplots(figsize=(6.5, 3.8))
ax.semilogy(latent_dims, naive_rel_err, "s--", label="prior as proposal (naive)")
ax.semilogy(latent_dims, is_rel_err, "o-", label="posterior, covariance x 1.5")
ax.axhline(1.0, color="gray", ls=":", label="100 % error")
ax.set_xlabel("latent dimension $k$")
ax.set_ylabel(r"typical $|\hat p_K/p - 1|$")
ax.set_title(f"Importance sampling, K = {K}")
ax.legend()
plt.show()

c_inflate = 1.5
print(
    f"1 + rho_r per latent dimension: c / sqrt(2c - 1) = {c_inflate / math.sqrt(2 * c_inflate - 1):.4f}"
    f" (prior as proposal, on average: e^{growth_per_dim:.3f} = {math.exp(growth_per_dim):.2f})"
)
print("typical |p_K/p - 1|             K x mean squared relative error")
print("          naive  near-posterior      measured (s.e.)  predicted rho_r")
worst_z = 0.0
for kk, e_naive, e_is, (mse, mse_se) in zip(
    latent_dims, naive_rel_err, is_rel_err, is_mse, strict=True
):
    rho_r = (c_inflate**2 / (2 * c_inflate - 1)) ** (kk / 2) - 1
    worst_z = max(worst_z, abs(mse - rho_r / K) / mse_se)
    print(
        f"k = {kk:2d}: {e_naive:7.3g} {e_is:15.3g} {K * mse:13.3f} ({K * mse_se:.3f}) {rho_r:16.3f}"
    )
print(f"largest |measured - predicted| in standard errors: {worst_z:.1f} (must be < 4)")
assert worst_z < 4

# %% [markdown]
# The near-posterior proposal also degrades with $k$ (the mismatch compounds over directions),
# but slowly: its error stays at a few percent where the naive estimate is useless.
#
# ## 4. The evidence lower bound
#
# Take any distribution $q(\mathbf z)$ over the latent (we keep the letter $q$ for it from now
# on) and use it as an importance-sampling proposal inside the logarithm. Because $\log$ is
# concave, **Jensen's inequality** $\log\mathbb E[\cdot] \ge \mathbb E[\log\,\cdot]$ gives
#
# $$
# \log p(\mathbf x) = \log \mathbb E_{q(\mathbf z)}\left[\frac{p(\mathbf x, \mathbf z)}{q(\mathbf z)}\right]
#   \;\ge\; \mathbb E_{q(\mathbf z)}\left[\log\frac{p(\mathbf x, \mathbf z)}{q(\mathbf z)}\right]
#   =: \mathcal L(q) ,
# $$
#
# the **evidence lower bound** (ELBO). It trades the log of an expectation, which we could not
# estimate well, for an expectation of a log, which a handful of samples from $q$ estimates
# without bias.
#
# How loose is it? Replace $p(\mathbf x,\mathbf z)$ by $p(\mathbf z\mid\mathbf x)\,p(\mathbf x)$
# inside the logarithm; $\log p(\mathbf x)$ does not depend on $\mathbf z$ and leaves the
# expectation:
#
# $$
# \mathcal L(q) = \log p(\mathbf x) + \mathbb E_{q}\left[\log\frac{p(\mathbf z\mid\mathbf x)}{q(\mathbf z)}\right]
#   \quad\Longleftrightarrow\quad
# \boxed{\;\log p(\mathbf x) = \mathcal L(q) + \mathrm{KL}\big(q(\mathbf z)\,\|\,p(\mathbf z\mid\mathbf x)\big).\;}
# $$
#
# The gap is *exactly* the KL divergence from $q$ to the posterior. It is non-negative (which
# re-proves the bound) and zero only for $q = p(\mathbf z\mid\mathbf x)$: maximising the ELBO over
# $q$ is the same as moving $q$ towards the posterior. Writing instead
# $p(\mathbf x,\mathbf z) = p(\mathbf x\mid\mathbf z)p(\mathbf z)$ gives the form used to compute it,
#
# $$
# \mathcal L(q) = \mathbb E_{q}\big[\log p(\mathbf x\mid\mathbf z)\big] - \mathrm{KL}\big(q(\mathbf z)\,\|\,p(\mathbf z)\big),
# $$
#
# a reconstruction term minus a KL to the prior.
#
# **Closed form for Gaussian $q$ in pPCA.** Let $q = \mathcal N(\mathbf m, S)$. Expanding the
# square and using $\mathbb E_q[\mathbf z\mathbf z^\top] = S + \mathbf m\mathbf m^\top$,
#
# $$
# \mathbb E_q\big[\log p(\mathbf x\mid\mathbf z)\big] = -\frac d2\log(2\pi\sigma^2)
#   - \frac{\|\mathbf x-\boldsymbol\mu-W\mathbf m\|^2 + \operatorname{tr}(WSW^\top)}{2\sigma^2},
# \qquad
# \mathrm{KL}\big(q\,\|\,\mathcal N(\mathbf 0, I_k)\big) = \tfrac12\big(\operatorname{tr}S + \mathbf m^\top\mathbf m - k - \log\det S\big).
# $$
#
# `PPCA.elbo(x, q)` implements these two lines. (Exercise 1 asks you to write them yourself.)
#
# **Check: $\log p(\mathbf x) = \mathcal L(q) + \mathrm{KL}(q\,\|\,p(\mathbf z\mid\mathbf x))$ for
# several Gaussian $q$.** The KL to the posterior is computed independently, by
# `torch.distributions.kl_divergence`.

# %%
post_single = MultivariateNormal(posterior.loc[0], posterior.covariance_matrix[0])
A = torch.randn(k, k, generator=gen)
candidates = {
    "prior N(0, I)": MultivariateNormal(torch.zeros(k), torch.eye(k)),
    "random mean, random full S": MultivariateNormal(
        torch.randn(k, generator=gen), A @ A.T + 0.1 * torch.eye(k)
    ),
    "posterior with mean + 1": MultivariateNormal(
        post_single.loc + 1.0, post_single.covariance_matrix
    ),
    "posterior with covariance x 3": MultivariateNormal(
        post_single.loc, 3.0 * post_single.covariance_matrix
    ),
    "exact posterior": post_single,
}
print(f"{'q(z)':<30}{'ELBO':>10}{'KL(q||post)':>13}{'sum':>10}{'log p(x)':>10}")
for name, q_z in candidates.items():
    elbo = true_model.elbo(x, q_z).item()
    kl = kl_divergence(q_z, post_single).item()
    print(f"{name:<30}{fmt(elbo):>10}{fmt(kl):>13}{fmt(elbo + kl):>10}{fmt(log_px.item()):>10}")
    assert abs(elbo + kl - log_px.item()) < 1e-6
    assert elbo <= log_px.item() + 1e-12
print("ELBO + KL = log p(x) to 1e-6 for every q; the bound is tight only at the posterior")

# %% [markdown]
# **Check: the ELBO is an expectation we can sample.** With samples from $q$ the average of the
# log-weights $\log w = \log p(\mathbf x,\mathbf z) - \log q(\mathbf z)$ estimates the ELBO, while
# the log of the average weight estimates $\log p(\mathbf x)$: the two sides of Jensen's inequality,
# computed from the *same* samples. Each must agree with its closed form within 4 standard errors:
# for the ELBO the s.e. of the mean of the log-weights; for the average weight its exact relative
# standard deviation $\sqrt{\rho_r/K}$ from section 3, with $c = 3$ (this $q$ is the posterior with
# its covariance tripled).

# %%
q_wide = candidates["posterior with covariance x 3"]
z_q = sample_mvn(q_wide, 100_000, gen)  # [K, k]
log_w_q = true_model.joint_log_prob(x, z_q) - q_wide.log_prob(z_q)  # [K]
elbo_mc, elbo_se = log_w_q.mean().item(), (log_w_q.std() / math.sqrt(len(log_w_q))).item()
elbo_exact = true_model.elbo(x, q_wide).item()
log_mean_w = log_mean_exp(log_w_q, dim=0).item()
weight_rel_sd = math.sqrt(((3.0**2 / (2 * 3.0 - 1)) ** (k / 2) - 1) / len(log_w_q))  # rho_r, c = 3
print(f"mean of log w   : {fmt(elbo_mc)} (s.e. {elbo_se:.1g}) | closed-form ELBO {fmt(elbo_exact)}")
print(f"log of mean of w: {fmt(log_mean_w)} | log p(x) {fmt(log_px.item())}")
print(
    f"mean of w / p(x) - 1 = {math.expm1(log_mean_w - log_px.item()):.2g}, "
    f"predicted relative sd {weight_rel_sd:.2g}"
)
assert abs(elbo_mc - elbo_exact) < 4 * elbo_se
assert abs(math.expm1(log_mean_w - log_px.item())) < 4 * weight_rel_sd
print("both Monte Carlo estimates within 4 standard errors of their closed forms")

# %% [markdown]
# The picture below shows the bound on the one-dimensional model of section 1, for
# $q = \mathcal N(m, s^2)$. On the left $s$ is fixed at the posterior standard deviation and the
# mean $m$ moves; on the right $m$ is fixed at the posterior mean and $s$ varies. The ELBO touches
# $\log p(\mathbf x)$ exactly once, at the posterior; the shaded gap is the KL divergence.

# %%
toy_post = toy.posterior(x_toy)
m_star, s_star = toy_post.loc[0, 0], toy_post.scale_tril[0, 0, 0]
toy_log_px = toy.log_prob(x_toy).item()
means = m_star + torch.linspace(-2.0, 2.0, 201)
stds = s_star * torch.logspace(-1, 1, 201)
elbo_vs_mean = toy.elbo(
    x_toy, MultivariateNormal(means[:, None], scale_tril=s_star * torch.ones(201, 1, 1))
)
elbo_vs_std = toy.elbo(
    x_toy, MultivariateNormal(m_star * torch.ones(201, 1), scale_tril=stds[:, None, None])
)

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
for ax, grid, curve, label in [
    (ax1, means, elbo_vs_mean, "mean $m$ of $q$"),
    (ax2, stds, elbo_vs_std, "standard deviation $s$ of $q$"),
]:
    ax.plot(grid.numpy(), curve.numpy(), label=r"ELBO $\mathcal{L}(q)$")
    ax.axhline(toy_log_px, color="k", ls="--", label=r"$\log p(\mathbf{x})$")
    ax.fill_between(
        grid.numpy(),
        curve.numpy(),
        toy_log_px,
        alpha=0.2,
        label=r"gap = KL$(q\,\|\,p(z\mid\mathbf{x}))$",
    )
    ax.set_xlabel(label)
    ax.legend(loc="lower center")
ax2.set_xscale("log")
ax1.set_ylabel("nats")
ax1.set_ylim(toy_log_px - 6, toy_log_px + 1)
ax1.set_title("moving the mean of q")
ax2.set_title("changing the width of q")
plt.show()

# %% [markdown]
# ## 5. The EM algorithm
#
# Fitting the model means maximising $\sum_n \log p_\theta(\mathbf x_n)$. The decomposition of
# section 4, written for the whole data set with one distribution $q_n$ per point, reads
#
# $$
# \sum_n \log p_\theta(\mathbf x_n) = \underbrace{\sum_n \mathcal L(q_n, \theta)}_{\mathcal L(q, \theta)}
#   + \sum_n \mathrm{KL}\big(q_n(\mathbf z)\,\|\,p_\theta(\mathbf z\mid\mathbf x_n)\big).
# $$
#
# The **expectation-maximisation** (EM) algorithm {cite:p}`dempster1977maximum` maximises the
# ELBO $\mathcal L(q,\theta)$ by coordinate ascent, alternating between its two arguments:
#
# - **E-step** (over $q$, with $\theta_t$ fixed): the left side does not depend on $q$, so raising
#   $\mathcal L$ means lowering the KL terms, and they vanish for the exact posterior,
#   $q_n = p_{\theta_t}(\mathbf z\mid\mathbf x_n)$. The bound becomes tight:
#   $\mathcal L(q, \theta_t) = \log p_{\theta_t}(\mathbf X)$.
# - **M-step** (over $\theta$, with $q$ fixed): maximise
#   $\mathcal L(q,\theta) = \sum_n \mathbb E_{q_n}[\log p_\theta(\mathbf x_n, \mathbf z)] + \text{const}$,
#   the expected complete-data log-likelihood.
#
# **EM never decreases the likelihood.** With $q$ from the E-step at $\theta_t$,
#
# $$
# \log p_{\theta_{t+1}}(\mathbf X) \;\ge\; \mathcal L(q, \theta_{t+1}) \;\ge\; \mathcal L(q, \theta_t) \;=\; \log p_{\theta_t}(\mathbf X):
# $$
#
# the first inequality is the ELBO bound at the new parameters, the second is the M-step, the
# equality is the E-step.
#
# **EM for pPCA** {cite:p}`tipping1999probabilistic`. The E-step needs only the posterior
# moments, from section 1:
#
# $$
# \mathbb E[\mathbf z_n] = M^{-1}W^\top(\mathbf x_n - \boldsymbol\mu), \qquad
# \mathbb E[\mathbf z_n\mathbf z_n^\top] = \sigma^2 M^{-1} + \mathbb E[\mathbf z_n]\,\mathbb E[\mathbf z_n]^\top .
# $$
#
# In the M-step, $\boldsymbol\mu$ is the sample mean $\bar{\mathbf x}$ (it maximises the likelihood
# whatever $W$ and $\sigma^2$ are). The expected complete-data log-likelihood is, up to constants,
# $-\frac{Nd}{2}\log\sigma^2 - \frac{1}{2\sigma^2}\sum_n \mathbb E\|\mathbf x_n - \bar{\mathbf x} - W\mathbf z_n\|^2$,
# a quadratic in $W$. Setting its gradient to zero and then solving for $\sigma^2$:
#
# $$
# W_{\text{new}} = \Big[\sum_n (\mathbf x_n-\bar{\mathbf x})\,\mathbb E[\mathbf z_n]^\top\Big]
#   \Big[\sum_n \mathbb E[\mathbf z_n\mathbf z_n^\top]\Big]^{-1},
# \qquad
# \sigma^2_{\text{new}} = \frac{1}{Nd}\sum_n \Big(\|\mathbf x_n-\bar{\mathbf x}\|^2
#   - 2\,\mathbb E[\mathbf z_n]^\top W_{\text{new}}^\top(\mathbf x_n-\bar{\mathbf x})
#   + \operatorname{tr}\big(\mathbb E[\mathbf z_n\mathbf z_n^\top]\,W_{\text{new}}^\top W_{\text{new}}\big)\Big).
# $$
#
# This is `PPCA.em_step` (Exercise 3 asks you to write it). Below we run it from a random start
# and record three numbers per step: the log-likelihood before the step, the ELBO
# $\mathcal L(q, \theta_{t+1})$ of the E-step's $q$ at the new parameters, and the log-likelihood
# after. All are averaged over the $N = 500$ points (nats per point).

# %%
n_steps = 100
model = PPCA.init_random(X, k, gen)
log_lik = [model.log_prob(X).mean().item()]
elbo_after_m_step = []
for _ in range(n_steps):
    q_posterior = model.posterior(X)  # E-step: q_n = p(z | x_n) under the current parameters
    model = model.em_step(X)  # M-step (em_step recomputes the same posterior moments)
    elbo_after_m_step.append(model.elbo(X, q_posterior).mean().item())
    log_lik.append(model.log_prob(X).mean().item())
log_lik, elbo_after_m_step = np.array(log_lik), np.array(elbo_after_m_step)
mle = PPCA.mle(X, k)  # the closed-form optimum, section 6
mle_log_lik = mle.log_prob(X).mean().item()

# %% [markdown]
# **Check: monotonicity, the sandwich, and convergence to the maximum-likelihood solution.**

# %%
print(
    f"mean log-likelihood: start {fmt(log_lik[0])}, after 10 steps {fmt(log_lik[10])}, "
    f"after {n_steps} steps {fmt(log_lik[-1])}; closed-form MLE {fmt(mle_log_lik)}"
)
assert np.all(np.diff(log_lik) >= -1e-10), "EM decreased the likelihood"
assert np.all(log_lik[:-1] <= elbo_after_m_step + 1e-10) and np.all(
    elbo_after_m_step <= log_lik[1:] + 1e-10
)
assert abs(log_lik[-1] - mle_log_lik) < 1e-6
# W is identifiable only up to a rotation of the latent space; W W^T is not
assert torch.allclose(model.W @ model.W.T, mle.W @ mle.W.T, atol=1e-4)
print(
    "monotone; log p(old) <= ELBO(q, new) <= log p(new) at every step; "
    "converged to the MLE (to 1e-6 nats, and W W^T to 1e-4)"
)

# %%
steps = np.arange(len(log_lik))
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
ax1.plot(
    steps[:31], log_lik[:31], "o-", ms=3, label="EM: $\\frac{1}{N}\\log p_{\\theta_t}(\\mathbf{X})$"
)
ax1.axhline(mle_log_lik, color="k", ls="--", label="closed-form MLE")
ax1.set_xlabel("EM step $t$")
ax1.set_ylabel("mean log-likelihood (nats)")
ax1.set_title("EM climbs monotonically (first 30 steps)")
ax1.legend(loc="lower right")
ax2.semilogy(steps, np.maximum(mle_log_lik - log_lik, 1e-16), label="gap to the MLE")
ax2.set_xlabel("EM step $t$")
ax2.set_ylabel("nats (log scale)")
ax2.set_title("and converges geometrically")
ax2.legend()
plt.show()

# %% [markdown]
# The gap shrinks by a constant factor per step (a straight line on the log scale) until it
# reaches the floor of floating-point precision. The factor can be predicted. Freeze $\sigma^2$ and
# let $W = w\,\mathbf u_1$ point along the top eigenvector of the sample covariance $\widehat C$ (section 6),
# with variance $\lambda_1$ along it. Substituting the posterior moments into the M-step, every
# sum over $n$ becomes a multiple of $\widehat C\mathbf u_1 = \lambda_1\mathbf u_1$ and the update of the
# scalar $w$ is
#
# $$
# w_{\text{new}} = g(w) = \frac{\lambda_1 w\,(w^2+\sigma^2)}{\sigma^2(w^2+\sigma^2) + \lambda_1 w^2},
# \qquad \text{with fixed point } w_*^2 = \lambda_1 - \sigma^2 .
# $$
#
# Near the fixed point the error is multiplied by $g'(w_*) = 1 - 2\rho(1-\rho)$ per step, where
# $\rho = \sigma^2/\lambda_1$; the log-likelihood gap is quadratic in the error, so it shrinks by
# $g'(w_*)^2$. EM is therefore slow when a retained direction's variance is either much larger
# than the noise ($\rho \to 0$) or barely above it ($\rho \to 1$).
#
# **Check: the predicted rate.** Here the top direction is the slowest one; we compare the measured
# per-step shrinking of the gap between steps 30 and 40 with $g'(w_*)^2$ at the maximum-likelihood
# $\lambda_1$ and $\sigma^2$.

# %%
lambda_1 = torch.linalg.eigvalsh(torch.cov(X.T, correction=0))[-1].item()
rho_1 = mle.sigma2.item() / lambda_1
predicted_rate = (1 - 2 * rho_1 * (1 - rho_1)) ** 2
gap = mle_log_lik - log_lik
measured_rate = (gap[40] / gap[30]) ** (1 / 10)
print(f"gap shrinks per step by: measured {measured_rate:.3f} | predicted {predicted_rate:.3f}")
assert abs(measured_rate / predicted_rate - 1) < 0.02
print("agree within 2 %")

# %% [markdown]
# ## 6. The closed-form maximum-likelihood solution
#
# For pPCA we do not need EM at all. Let $\widehat C = \frac1N\sum_n (\mathbf x_n-\bar{\mathbf x})
# (\mathbf x_n-\bar{\mathbf x})^\top$ be the sample covariance with eigenvalues
# $\lambda_1\ge\dots\ge\lambda_d$ and unit eigenvectors $\mathbf u_1,\dots,\mathbf u_d$. The
# mean log-likelihood of a Gaussian with covariance $C$ is
# $-\frac12\big(d\log 2\pi + \log\det C + \operatorname{tr}(C^{-1}\widehat C)\big)$, and
# {cite:t}`tipping1999probabilistic` show that it is maximised, among covariances of the form
# $C = WW^\top+\sigma^2 I$, by
#
# $$
# \sigma^2_{\mathrm{ML}} = \frac{1}{d-k}\sum_{j=k+1}^d \lambda_j, \qquad
# W_{\mathrm{ML}} = U_k\big(\Lambda_k - \sigma^2_{\mathrm{ML}} I_k\big)^{1/2} R,
# $$
#
# with $U_k = [\mathbf u_1 \dots \mathbf u_k]$, $\Lambda_k = \mathrm{diag}(\lambda_1,\dots,\lambda_k)$
# and any rotation $R$ (we take $R = I$). In words: the model reproduces the data's variance
# exactly along the top $k$ principal directions, and explains the remaining $d-k$ directions by
# isotropic noise at their *average* variance. The columns of $W_{\mathrm{ML}}$ span the PCA
# subspace, which is how pPCA earns its name.
#
# This $C$ has eigenvalues $\lambda_1,\dots,\lambda_k$ and $\sigma^2_{\mathrm{ML}}$ ($d-k$ times)
# in the eigenbasis of $\widehat C$, so $\operatorname{tr}(C^{-1}\widehat C) = k + \sum_{j>k}\lambda_j/\sigma^2_{\mathrm{ML}} = d$
# and the maximum itself has a closed form:
#
# $$
# \frac1N \log p_{\mathrm{ML}}(\mathbf X) = -\frac12\Big(d\log 2\pi + \sum_{j\le k}\log\lambda_j + (d-k)\log\sigma^2_{\mathrm{ML}} + d\Big).
# $$
#
# **Check: the maximum from the eigenvalues alone.**

# %%
eigenvalues = torch.linalg.eigvalsh(torch.cov(X.T, correction=0)).flip(0)
sigma2_ml = eigenvalues[k:].mean()
formula = -0.5 * (
    d * math.log(2 * math.pi) + eigenvalues[:k].log().sum() + (d - k) * sigma2_ml.log() + d
)
print(
    f"sigma2: MLE {fmt(mle.sigma2)} (true {fmt(true_model.sigma2)}), from the eigenvalues {fmt(sigma2_ml)}"
)
print(
    f"max mean log-likelihood: eigenvalue formula {fmt(formula)} | PPCA.mle(X).log_prob(X).mean() {fmt(mle_log_lik)}"
)
# both sides are float64 closed forms of size ~20: round-off is ~1e-14
assert abs(mle.sigma2.item() - sigma2_ml.item()) < 1e-9
assert abs(formula.item() - mle_log_lik) < 1e-9
print("sigma2 and the maximum agree to 1e-9")

# %% [markdown]
# **Check: an independent implementation.** scikit-learn's `PCA` implements the same model:
# `PCA(n_components=k).fit(X).score(X)` is the mean pPCA log-likelihood of `X`. One detail
# differs: scikit-learn estimates variances with $N-1$ in the denominator, so its covariance is
# exactly $c\,C_{\mathrm{ML}}$ with $c = N/(N-1)$. Then `PPCA.mle(X, k, ddof=1)` should
# reproduce its score, and our (true) maximum should exceed it by exactly
# $\tfrac d2\,(\log c + 1/c - 1)$ (substitute $cC$ into the log-likelihood above).

# %%
sk_score = PCA(n_components=k).fit(X.numpy()).score(X.numpy())
ours_ddof1 = PPCA.mle(X, k, ddof=1).log_prob(X).mean().item()
c = n_data / (n_data - 1)
predicted_excess = 0.5 * d * (math.log(c) + 1 / c - 1)
print(f"scikit-learn PCA.score: {fmt(sk_score, 6)} | PPCA.mle(ddof=1): {fmt(ours_ddof1, 6)}")
print(
    f"MLE minus scikit-learn: {(mle_log_lik - sk_score) * 1e6:.4g}e-6 nats, predicted {predicted_excess * 1e6:.4g}e-6"
)
assert abs(ours_ddof1 - sk_score) < 1e-9
assert abs((mle_log_lik - sk_score) - predicted_excess) < 1e-9
print("both agree to 1e-9")

# %% [markdown]
# ### pPCA on real data
#
# The same closed form fits scikit-learn's $8\times8$ handwritten digits ($d = 64$, pixel values
# scaled to $[0,1]$). We fit on 1500 images and evaluate on the remaining 297. Since a model with
# $k$ latent dimensions contains the one with $k-1$ (set a column of $W$ to zero), the maximal
# training log-likelihood can only grow with $k$. The held-out curve follows it: the difference
# between the two (printed below) stays small next to the rise of the curves and does not grow
# with $k$, so with 1500 images these models hardly overfit. Do not read too much into the size of the numbers:
# they are *densities* of points in a unit cube, which can exceed 1, and part of the growth comes
# from pixels that are almost always 0, whose tiny variance makes the density very peaked.
# Lecture 03 explains why continuous densities on discrete pixel values need care.

# %%
images, _ = load_digits()
digits = images.reshape(len(images), -1).double()  # [1797, 64], values in [0, 1]
order = torch.randperm(len(digits), generator=gen)
train, test = digits[order[:1500]], digits[order[1500:]]
ks = [1, 2, 4, 8, 16, 32]
fits = {kk: PPCA.mle(train, kk) for kk in ks}
train_ll = [fits[kk].log_prob(train).mean().item() for kk in ks]
test_ll = [fits[kk].log_prob(test).mean().item() for kk in ks]

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6), gridspec_kw={"width_ratios": [1.3, 1]})
ax1.plot(ks, train_ll, "o-", label="training images")
ax1.plot(ks, test_ll, "s--", label="held-out images")
ax1.set_xlabel("latent dimension $k$")
ax1.set_ylabel("mean log-likelihood (nats per image)")
ax1.set_title("pPCA on 8x8 digits")
ax1.legend()
samples = fits[16].sample(24, gen).clamp(0, 1).reshape(-1, 8, 8)
image_grid(samples, nrow=8, ax=ax2, title="samples from the k = 16 model")
plt.show()

for kk, a, b in zip(ks, train_ll, test_ll, strict=True):
    print(
        f"k = {kk:2d}: train {a:8.2f} | held-out {b:8.2f} | difference {a - b:5.2f} nats per image"
    )

# Check: both columns from the eigenvalues and eigenvectors of the training covariance alone. In
# its eigenbasis C_ML is diagonal, (lambda_1..lambda_k, sigma2_ML, ..., sigma2_ML), so the mean
# log-likelihood of any data set with second moments S about the training mean is
# -(d log 2 pi + sum_j log c_j + sum_j u_j^T S u_j / c_j) / 2 (on the training set the last sum is d).
evals_train, evecs_train = torch.linalg.eigh(torch.cov(train.T, correction=0))
evals_train, evecs_train = evals_train.flip(0), evecs_train.flip(1)
worst_gap = 0.0
for kk, a, b in zip(ks, train_ll, test_ll, strict=True):
    c_diag = torch.cat([evals_train[:kk], evals_train[kk:].mean().expand(64 - kk)])
    for data, value in ((train, a), (test, b)):
        proj = (data - train.mean(0)) @ evecs_train  # coordinates in the eigenbasis
        trace_term = ((proj**2).mean(0) / c_diag).sum()
        closed = -0.5 * (64 * math.log(2 * math.pi) + c_diag.log().sum() + trace_term)
        worst_gap = max(worst_gap, abs(closed.item() - value))
print("train and held-out values agree with the eigenbasis formula to below 1e-9")
# float64 on 64 x 64 covariances with condition number below 1e3 (c_1 / sigma2_ML): round-off ~1e-12
assert worst_gap < 1e-9
assert np.all(np.diff(train_ll) > 0)  # sanity line: nested models, the maximum cannot decrease

# %% [markdown]
# The samples are recognisable strokes but blurry and noisy: a linear-Gaussian decoder cannot
# produce sharp digits. Before leaving pPCA we use it twice more, to see what changes when the
# parameters get a prior and when the E-step is no longer exact.
#
# ## 7. A prior on the parameters: MAP-EM
#
# Up to now $\theta$ was an unknown constant, fitted by maximum likelihood. A Bayesian makes it a
# random variable as well, with a prior $p(\theta)$, and its posterior
# $p(\theta\mid\mathbf X) = p(\mathbf X\mid\theta)\,p(\theta)/p(\mathbf X)$. The mode of that
# posterior, the **maximum a posteriori** (MAP) estimate, maximises
# $\log p(\mathbf X\mid\theta) + \log p(\theta)$: the evidence $p(\mathbf X)$ does not depend on
# $\theta$. Adding $\log p(\theta)$ to both sides of the decomposition of section 5 gives
#
# $$
# \log p(\mathbf X\mid\theta) + \log p(\theta) = \mathcal L(q, \theta) + \log p(\theta)
#   + \sum_n \mathrm{KL}\big(q_n\,\|\,p_\theta(\mathbf z\mid\mathbf x_n)\big)
#   \;\ge\; \mathcal L(q, \theta) + \log p(\theta) .
# $$
#
# The prior does not involve $\mathbf z$, so the E-step is the same as before (the exact posterior
# makes the bound tight), and the M-step maximises the expected complete-data log-likelihood
# *plus* $\log p(\theta)$. The sandwich argument of section 5, with $\log p(\theta)$ added to every
# term, shows that this **MAP-EM** never decreases the log posterior.
#
# **A prior for pPCA.** We take independent Gaussian loadings, $w_{ij}\sim\mathcal N(0, 1/\alpha)$;
# an inverse-gamma prior on the noise variance, $p(\sigma^2) = \frac{b^a}{\Gamma(a)}
# (\sigma^2)^{-a-1}e^{-b/\sigma^2}$; and a flat prior on $\boldsymbol\mu$, so that $\boldsymbol\mu$
# stays at the sample mean. With $\tilde{\mathbf x}_n = \mathbf x_n - \bar{\mathbf x}$, the M-step
# maximises, up to constants,
#
# $$
# -\frac{1}{2\sigma^2}\sum_n \mathbb E\|\tilde{\mathbf x}_n - W\mathbf z_n\|^2 - \frac{Nd}{2}\log\sigma^2
#   - \frac\alpha2\|W\|_F^2 - (a+1)\log\sigma^2 - \frac{b}{\sigma^2} .
# $$
#
# At fixed $\sigma^2$ its gradient in $W$ is
# $\frac{1}{\sigma^2}\big(\sum_n \tilde{\mathbf x}_n\mathbb E[\mathbf z_n]^\top - W\sum_n
# \mathbb E[\mathbf z_n\mathbf z_n^\top]\big) - \alpha W$, which vanishes at
#
# $$
# W_{\text{new}} = \Big[\sum_n \tilde{\mathbf x}_n\,\mathbb E[\mathbf z_n]^\top\Big]
#   \Big[\sum_n \mathbb E[\mathbf z_n\mathbf z_n^\top] + \alpha\sigma^2 I_k\Big]^{-1} :
# $$
#
# the update of section 5 with a ridge term $\alpha\sigma^2 I_k$. It involves $\sigma^2$, so we
# use the current value, and then maximise over $\sigma^2$ with $W_{\text{new}}$ held fixed.
# With $R = \sum_n \mathbb E\|\tilde{\mathbf x}_n - W_{\text{new}}\mathbf z_n\|^2$ (the numerator
# of section 5's $\sigma^2$ update), setting the derivative in $\sigma^2$ to zero gives
#
# $$
# \sigma^2_{\text{new}} = \frac{R + 2b}{Nd + 2(a+1)} .
# $$
#
# Two conditional maximisations replace the joint one. Each raises the M-step objective, and
# that is all the monotonicity argument needs.
#
# **Where the maximum lies.** The prior on $W$, like the likelihood, is unchanged by a rotation
# $W \to WR$, and as for the MLE the maximiser has its columns along eigenvectors $\mathbf u_j$
# of $\widehat C$ (section 6). Along a retained $\mathbf u_j$ the model's variance is $c_j =
# \ell_j^2 + \sigma^2$, where $\ell_j$ is the length of the column, and the log posterior
# depends on $\ell_j$ through $-\frac N2\big(\log c_j + \lambda_j/c_j\big) - \frac\alpha2\ell_j^2$.
# Its derivative in $\ell_j$ vanishes where $N(\lambda_j - c_j)/c_j^2 = \alpha$, a quadratic in
# $c_j$ with the positive root
#
# $$
# c_j = \frac{\sqrt{N^2 + 4\alpha N\lambda_j} - N}{2\alpha} \;<\; \lambda_j .
# $$
#
# The maximum-likelihood value $\lambda_j$ is shrunk. For large $N$ the root is close to
# $\lambda_j - \alpha\lambda_j^2/N$, so the prior's pull fades like $1/N$; with few data points it
# is strong.
#
# **Check: MAP-EM against a different algorithm.** On the first $N = 50$ points of `X`, with
# $\alpha = 1$ and $a = b = 1$, we run 200 MAP-EM steps from a random start. Then L-BFGS, started
# elsewhere, maximises the exact log posterior directly (`PPCA.log_prob` plus the log prior, over
# $W$, $\boldsymbol\mu$ and $\log\sigma^2$). Checks: (i) no EM step lowers the log posterior by
# more than $10^{-9}$ (float64 round-off on a sum of about 800 nats is near $10^{-13}$); (ii) the
# two optima agree, to $10^{-8}$ nats in the objective and to $10^{-5}$ in the covariance
# $WW^\top + \sigma^2 I$ (an objective that is flat at its maximum pins the parameters only to
# about the square root of its own accuracy), and L-BFGS finds $\boldsymbol\mu = \bar{\mathbf x}$ to
# $10^{-5}$; (iii) along the top eigenvectors, the optimum's variances equal the closed-form $c_j$
# to $10^{-5}$, and the covariance has no off-diagonal entries in that basis.

# %%
N_map, alpha, a_ig, b_ig = 50, 1.0, 1.0, 1.0  # w_ij ~ N(0, 1/alpha); sigma2 ~ InvGamma(a, b)
X_map = X[:N_map]


def log_prior(W: torch.Tensor, sigma2: torch.Tensor) -> torch.Tensor:
    """log p(W) + log p(sigma2) in nats: N(0, 1/alpha) loadings, InvGamma(a, b) noise variance."""
    log_p_W = -0.5 * alpha * W.pow(2).sum() + 0.5 * W.numel() * math.log(alpha / (2 * math.pi))
    log_p_s2 = (
        a_ig * math.log(b_ig) - math.lgamma(a_ig) - (a_ig + 1) * torch.log(sigma2) - b_ig / sigma2
    )
    return log_p_W + log_p_s2


def log_posterior(model: PPCA) -> torch.Tensor:
    """log p(X_map | theta) + log p(theta) = log p(theta | X_map) + log p(X_map), nats."""
    return model.log_prob(X_map).sum() + log_prior(model.W, model.sigma2)


def map_em_step(model: PPCA) -> PPCA:
    """The E-step of section 5, then W at the current sigma2 (ridge alpha sigma2), then sigma2."""
    mu = X_map.mean(0)
    Xc = X_map - mu
    M_inv = torch.linalg.inv(model.posterior_precision())
    Ez = Xc @ model.W @ M_inv  # rows: E[z_n]
    sum_Ezz = N_map * model.sigma2 * M_inv + Ez.T @ Ez  # sum_n E[z_n z_n^T]
    cross = Xc.T @ Ez  # sum_n (x_n - mean) E[z_n]^T
    ridge = alpha * model.sigma2 * torch.eye(k)
    W_new = torch.linalg.solve(sum_Ezz + ridge, cross.T).T  # the matrix solved with is symmetric
    R = Xc.pow(2).sum() - 2 * (W_new * cross).sum() + (sum_Ezz * (W_new.T @ W_new)).sum()
    return PPCA(W=W_new, mu=mu, sigma2=(R + 2 * b_ig) / (N_map * d + 2 * (a_ig + 1)))


map_model = PPCA.init_random(X_map, k, gen)
log_post = [log_posterior(map_model).item()]
for _ in range(200):
    map_model = map_em_step(map_model)
    log_post.append(log_posterior(map_model).item())
log_post = np.array(log_post)

theta = {
    "W": torch.randn(d, k, generator=torch.Generator().manual_seed(11)),
    "mu": torch.zeros(d),
    "log_s2": torch.zeros(()),
}
for p in theta.values():
    p.requires_grad_(True)
lbfgs_minimise(
    list(theta.values()),
    lambda: -log_posterior(PPCA(W=theta["W"], mu=theta["mu"], sigma2=theta["log_s2"].exp())),
    1000,
    1e-10,
    history_size=20,
)
direct = PPCA(W=theta["W"].detach(), mu=theta["mu"].detach(), sigma2=theta["log_s2"].exp().detach())

lam_map, U_map = torch.linalg.eigh(torch.cov(X_map.T, correction=0))
lam_map, U_map = lam_map.flip(0), U_map.flip(1)
c_formula = (torch.sqrt(N_map**2 + 4 * alpha * N_map * lam_map[:k]) - N_map) / (2 * alpha)
C_eig = U_map.T @ map_model.covariance() @ U_map  # the MAP covariance in the eigenbasis of C-hat
mle_small = PPCA.mle(X_map, k)

print(
    f"log p(X|theta) + log p(theta): start {fmt(log_post[0], 2)}, after 10 steps "
    f"{fmt(log_post[10], 4)}, after 200 steps {fmt(log_post[-1], 4)} | L-BFGS {fmt(log_posterior(direct), 4)}"
)
print("    j   lambda_j (ML)   c_j at the MAP   closed-form c_j   c_j / lambda_j")
for j in range(k):
    print(
        f"    {j + 1}   {lam_map[j]:13.4f}   {C_eig[j, j]:14.4f}   {c_formula[j]:15.4f}"
        f"   {C_eig[j, j] / lam_map[j]:14.3f}"
    )
print(f"sigma2: MAP {fmt(map_model.sigma2)}, MLE of the same 50 points {fmt(mle_small.sigma2)}")
assert np.all(np.diff(log_post) > -1e-9), "MAP-EM lowered the log posterior"
assert abs(log_post[-1] - log_posterior(direct).item()) < 1e-8
assert (map_model.covariance() - direct.covariance()).abs().max() < 1e-5
assert (direct.mu - X_map.mean(0)).abs().max() < 1e-5
assert (torch.diagonal(C_eig)[:k] - c_formula).abs().max() < 1e-5
assert (C_eig - torch.diag(torch.diagonal(C_eig))).abs().max() < 1e-5
print("monotone (no step lower by more than 1e-9); EM and L-BFGS agree (objective to 1e-8,")
print("covariance and mu to 1e-5); c_j equal the closed form to 1e-5, off-diagonals below 1e-5")

# %% [markdown]
# The prior has pulled every retained variance below its maximum-likelihood value, and in
# relative terms the strongest direction most (the last column; for large $N$ the ratio is
# close to $1 - \alpha\lambda_j/N$, which falls as $\lambda_j$ grows). The noise variance moved
# little: in its update the prior adds $2(a+1) = 4$ to the $Nd = 500$ of the denominator, and
# $2b = 2$ to the residual.
#
# **What this means for the VAE.** MAP-EM keeps a full distribution over $\mathbf z$ (the E-step's
# posterior) but only a point for $\theta$, the mode of $p(\theta\mid\mathbf X)$. A VAE does the
# same with approximations on both sides: an approximate, amortised posterior over $\mathbf z$
# (Lecture 02), and for the decoder's weights a single point, the maximum of the ELBO, which plays
# the role of the likelihood. Without a penalty on the weights that is a maximum-likelihood-type
# estimate; with weight decay, a penalty $\frac\alpha2\|\theta\|^2$ on the loss, it is a MAP
# estimate under the prior $\mathcal N(\mathbf 0, \alpha^{-1}I)$, exactly as here. Either way the
# uncertainty about $\theta$ is discarded, which is why the VAE is not a fully Bayesian model. A
# Bayesian treatment would approximate $p(\theta\mid\mathbf X)$ too, for instance by a variational
# distribution over the weights, and average over it when it predicts.
#
# ## 8. A restricted E-step: mean-field EM and the bias it leaves
#
# When the exact posterior is out of reach, **variational EM** replaces the E-step by a
# maximisation of the ELBO over a tractable family of $q_n$ (Lecture 02 takes gradient steps for
# it). The most common family is the **mean-field** one, $q_n(\mathbf z) = \prod_i q_{ni}(z_i)$,
# for Gaussians a diagonal covariance. Now the E-step cannot close the gap: whenever the
# posterior is correlated, the best diagonal $q_n$ still has $\mathrm{KL}(q_n\,\|\,p_\theta(\mathbf
# z\mid\mathbf x_n)) > 0$. The M-step then maximises $\mathcal L(q, \theta) = \log p(\mathbf
# X\mid\theta) - \sum_n \mathrm{KL}_n$, not the log-likelihood, and the two can have different
# maximisers: the ELBO also rewards parameters under which the posteriors are easy to factorise.
#
# **The mean-field E-step in closed form.** For a Gaussian posterior with mean $\mathbf m$ and
# precision $\Lambda$, the diagonal $q$ closest in $\mathrm{KL}(q\,\|\,p)$ keeps the mean and has
# variances $1/\Lambda_{ii}$, and what it leaves is
# $\mathrm{gap} = \tfrac12\big(\sum_i\log\Lambda_{ii} - \log\det\Lambda\big)$, zero iff $\Lambda$ is
# diagonal (Lecture 10 derives both). For pPCA, $\Lambda = I + W^\top W/\sigma^2$. So the E-step
# sets $\mathbb E[\mathbf z_n]$ to the posterior mean, and the M-step of section 5 uses
# $\mathbb E[\mathbf z_n\mathbf z_n^\top] = \operatorname{diag}(1/\Lambda_{ii}) + \mathbb E[\mathbf
# z_n]\mathbb E[\mathbf z_n]^\top$ in place of the exact second moment.
#
# **Complete data: the gap can be made to vanish.** All points share one $\Lambda$, and the
# likelihood sees $W$ only through $WW^\top$. Rotating $W \to WR$ changes neither the likelihood
# nor the fit, but it can make $W^\top W$ diagonal, and then the diagonal family is exact: this
# is Lecture 10's observation. The maximum of the ELBO is therefore the maximum of the
# likelihood, attained at the Tipping–Bishop $W$, whose columns are orthogonal: the mean-field
# restriction picks a rotation and costs nothing else. The first check below confirms this for
# the mean-field EM code, as a control.
#
# **Missing data: it cannot vanish.** Let each point reveal only some coordinates $o_n$. Its
# posterior has precision $\Lambda_n = I + W_{o_n}^\top W_{o_n}/\sigma^2$, where $W_{o_n}$ keeps
# the rows of the observed coordinates, and these matrices differ from point to point. In
# general no single rotation diagonalises all of them (check (iv) below searches for one), so no
# maximum-likelihood solution has a zero gap, and the mean-field ELBO trades likelihood for
# smaller gaps. The formulas carry over from section 1
# with $W_{o_n}$, $\boldsymbol\mu_{o_n}$ and $\mathbf x_{o_n}$, of dimension $d_n = |o_n|$. With
# $\mathbf r_n = \mathbf x_{o_n} - \boldsymbol\mu_{o_n}$ and $\mathbf b_n = W_{o_n}^\top\mathbf
# r_n/\sigma^2$, the posterior mean is $\Lambda_n^{-1}\mathbf b_n$ and, by the determinant and
# inverse identities for $W_{o_n}W_{o_n}^\top + \sigma^2 I$,
#
# $$
# \log p(\mathbf x_{o_n}) = -\tfrac12\Big(d_n\log(2\pi\sigma^2) + \log\det\Lambda_n
#   + \|\mathbf r_n\|^2/\sigma^2 - \mathbf b_n^\top\Lambda_n^{-1}\mathbf b_n\Big).
# $$
#
# In the M-step each row $j$ of $[W\ \boldsymbol\mu]$ is a least-squares fit over the points that
# observe coordinate $j$. With $\tilde{\mathbf z} = (\mathbf z, 1)$,
# $[\mathbf w_j;\ \mu_j] = \big(\sum_{n:\,j\in o_n}\mathbb E[\tilde{\mathbf z}_n\tilde{\mathbf
# z}_n^\top]\big)^{-1}\sum_{n:\,j\in o_n} x_{nj}\,\mathbb E[\tilde{\mathbf z}_n]$, and $\sigma^2$ is
# the expected squared residual averaged over the observed entries. Exact EM and mean-field EM
# differ only in the second moment they use.
#
# We hide each entry of `X` independently with probability one half and fit both, 400 and then
# 800 steps from one random start. The maximum-likelihood solution comes from exact EM, the
# mean-field optimum from mean-field EM, and L-BFGS on each closed-form objective, from another
# start, is the second algorithm for each.


# %%
def missing_data_terms(W, mu, sigma2, mask):
    """Per point [N]: posterior precisions [N, k, k], means [N, k], log p(x_o), mean-field gap."""
    r = mask * (X - mu)
    precision = torch.eye(k) + torch.einsum("nj,ja,jb->nab", mask, W, W) / sigma2
    b = r @ W / sigma2
    chol = torch.linalg.cholesky(precision)
    mean = torch.cholesky_solve(b[..., None], chol)[..., 0]
    logdet = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
    log_p = -0.5 * (
        mask.sum(1) * torch.log(2 * math.pi * sigma2)
        + logdet
        + r.pow(2).sum(1) / sigma2
        - (b * mean).sum(1)
    )
    gap = 0.5 * (torch.log(torch.diagonal(precision, dim1=-2, dim2=-1)).sum(-1) - logdet)
    return precision, mean, log_p, gap


def em_missing(start: PPCA, mask, steps: int, mean_field: bool):
    """Exact or mean-field EM on the observed entries. Returns the parameters after steps // 2
    and after steps, and the total log-likelihood and total mean-field ELBO at every step."""
    W, mu, sigma2 = start.W, start.mu, start.sigma2
    history, halfway = [], None
    for t in range(steps + 1):
        precision, mean, log_p, gap = missing_data_terms(W, mu, sigma2, mask)
        history.append((log_p.sum().item(), (log_p - gap).sum().item()))
        if t == steps // 2:
            halfway = PPCA(W=W, mu=mu, sigma2=sigma2)
        if t == steps:
            break
        if mean_field:  # the best diagonal q: the posterior's mean, variances 1 / Lambda_ii
            cov = torch.diag_embed(1 / torch.diagonal(precision, dim1=-2, dim2=-1))
        else:
            cov = torch.linalg.inv(precision)
        z1 = torch.cat([mean, torch.ones(len(X), 1)], 1)  # E[(z, 1)]
        second = z1[:, :, None] * z1[:, None, :]  # E[(z, 1)(z, 1)^T] ...
        second[:, :k, :k] += cov  # ... with the covariance of q added
        A = torch.einsum("nj,nab->jab", mask, second)  # one (k+1) x (k+1) system per row j
        B = torch.einsum("nj,na->ja", mask * X, z1)
        rows = torch.linalg.solve(A, B[..., None])[..., 0]  # [d, k + 1]: row j is (w_j, mu_j)
        W, mu = rows[:, :k], rows[:, k]
        sq = (mask * X**2).sum() - 2 * (rows * B).sum() + torch.einsum("ja,jab,jb->", rows, A, rows)
        sigma2 = sq / mask.sum()
    return halfway, PPCA(W=W, mu=mu, sigma2=sigma2), np.array(history)


def lbfgs_fit(objective, seed: int) -> PPCA:
    """Maximise objective(W, mu, sigma2) by L-BFGS from a random start."""
    g = torch.Generator().manual_seed(seed)
    par = [torch.randn(d, k, generator=g), torch.zeros(d), torch.zeros(())]
    for p in par:
        p.requires_grad_(True)
    lbfgs_minimise(
        par,
        lambda: -objective(par[0], par[1], par[2].exp()),
        2000,
        1e-9,
        tolerance_change=1e-14,
        history_size=20,
    )
    return PPCA(W=par[0].detach(), mu=par[1].detach(), sigma2=par[2].exp().detach())


mask = (torch.rand(n_data, d, generator=torch.Generator().manual_seed(7)) > 0.5).double()
em_start = PPCA.init_random(X, k, torch.Generator().manual_seed(3))

# Sanity lines: the missing-data formulas against PPCA on each point's observed coordinates
# (points with more than k of them), and log p - gap against PPCA.elbo of the diagonal q.
precision, mean, log_p, gap = missing_data_terms(em_start.W, em_start.mu, em_start.sigma2, mask)
worst_formula = 0.0
for n in range(n_data):
    o = mask[n].bool()
    if o.sum() > k:
        sub = PPCA(W=em_start.W[o], mu=em_start.mu[o], sigma2=em_start.sigma2)
        q_diag = MultivariateNormal(mean[n], torch.diag(1 / torch.diagonal(precision[n])))
        worst_formula = max(
            worst_formula,
            abs(sub.log_prob(X[n : n + 1, o]).item() - log_p[n].item()),
            abs(sub.elbo(X[n : n + 1, o], q_diag).item() - (log_p[n] - gap[n]).item()),
        )
assert worst_formula < 1e-10
print(f"observed entries: {int(mask.sum())} of {mask.numel()}")
print("log p(x_o) and the mean-field ELBO agree with PPCA on the observed coordinates: below 1e-10")

# Control: complete data, where the gap can vanish. Mean-field EM must reach Tipping-Bishop.
_, mf_full, hist_full = em_missing(em_start, torch.ones_like(mask), 400, mean_field=True)
_, _, _, gap_full = missing_data_terms(mf_full.W, mf_full.mu, mf_full.sigma2, torch.ones_like(mask))
full_ll_gap = abs(hist_full[-1, 0] / n_data - mle_log_lik)
full_cov_gap = (mf_full.covariance() - mle.covariance()).abs().max().item()
assert full_ll_gap < 1e-8 and full_cov_gap < 1e-6 and gap_full.max() < 1e-8
print(
    "complete data: mean-field EM reaches the Tipping-Bishop MLE (log-likelihood to 1e-8, "
    "covariance to 1e-6), and its gap is below 1e-8"
)

# %% [markdown]
# **Check: two optima, each found twice, and the difference between them.** (i) Exact EM never
# lowers the observed-data log-likelihood and mean-field EM never lowers its ELBO (tolerance
# $10^{-9}$, as in section 7). (ii) Convergence: going from 400 to 800 steps changes each
# covariance $WW^\top + \sigma^2 I$ by less than $10^{-5}$, and the L-BFGS optimum agrees with
# the EM optimum to $10^{-5}$ (the square-root argument of section 7). (iii) The bias: the
# mean-field optimum's log-likelihood falls short of the maximum, and its $\sigma^2$ exceeds the
# maximum-likelihood one, each by more than $10^{-3}$, a hundred times the agreement of the two
# algorithms. (iv) The premise: at the maximum-likelihood solution, even the best rotation $W \to
# WR$ (searched by L-BFGS over $R$, from three starts) leaves a gap, and at the mean-field
# optimum the ELBO is higher than there.

# %%
ml_half, ml_fit, hist_ml = em_missing(em_start, mask, 800, mean_field=False)
mf_half, mf_fit, hist_mf = em_missing(em_start, mask, 800, mean_field=True)
ml_direct = lbfgs_fit(lambda W, mu, s2: missing_data_terms(W, mu, s2, mask)[2].sum(), 5)
mf_direct = lbfgs_fit(
    lambda W, mu, s2: (lambda t: (t[2] - t[3]).sum())(missing_data_terms(W, mu, s2, mask)), 5
)


def rotation(v: torch.Tensor) -> torch.Tensor:
    """exp of the skew-symmetric k x k matrix with upper triangle v: a rotation."""
    S = torch.zeros(k, k)
    S[tuple(torch.triu_indices(k, k, 1))] = v
    return torch.linalg.matrix_exp(S - S.T)


def rotated_gap(model: PPCA, seed: int) -> float:
    """The smallest mean gap over rotations W -> W R, by L-BFGS from a random rotation."""
    v = torch.randn(k * (k - 1) // 2, generator=torch.Generator().manual_seed(seed))
    v.requires_grad_(True)

    def mean_gap() -> torch.Tensor:
        return missing_data_terms(model.W @ rotation(v), model.mu, model.sigma2, mask)[3].mean()

    # torch's defaults for the change tolerance and the history
    return lbfgs_minimise([v], mean_gap, 500, 1e-10, tolerance_change=1e-9, history_size=100)


best_rot_gap = min(rotated_gap(ml_fit, seed) for seed in range(3))

results = {}
for name, fit in (("maximum likelihood", ml_fit), ("mean-field optimum", mf_fit)):
    _, _, log_p, gap = missing_data_terms(fit.W, fit.mu, fit.sigma2, mask)
    results[name] = (log_p.mean().item(), gap.mean().item(), fit)
print("per point (nats)     log p(x_o)   mean gap   ELBO     sigma2   eigenvalues of W W^T")
for name, (ll, g, fit) in results.items():
    ev = torch.linalg.eigvalsh(fit.W @ fit.W.T).flip(0)[:k]
    print(
        f"{name:<20} {ll:9.4f} {g:10.4f} {ll - g:8.4f} {fit.sigma2.item():8.4f}   "
        + "  ".join(f"{e:6.3f}" for e in ev)
    )
ll_ml, _, _ = results["maximum likelihood"]
ll_mf, gap_mf, _ = results["mean-field optimum"]
print(
    f"maximum likelihood, best rotation of W: gap {best_rot_gap:.4f}, ELBO {ll_ml - best_rot_gap:.4f}"
    " per point"
)
print(
    f"mean-field optimum: log-likelihood {ll_ml - ll_mf:.4f} nats per point below the maximum, "
    f"sigma2 {mf_fit.sigma2.item() / ml_fit.sigma2.item():.3f} times the ML value"
)

converged = max(
    (fit.covariance() - half.covariance()).abs().max().item()
    for fit, half in ((ml_fit, ml_half), (mf_fit, mf_half))
)
agree = max(
    (ml_fit.covariance() - ml_direct.covariance()).abs().max().item(),
    (mf_fit.covariance() - mf_direct.covariance()).abs().max().item(),
)
assert np.all(np.diff(hist_ml[:, 0]) > -1e-9) and np.all(np.diff(hist_mf[:, 1]) > -1e-9)
assert converged < 1e-5 and agree < 1e-5
assert ll_ml - ll_mf > 1e-3 and mf_fit.sigma2 - ml_fit.sigma2 > 1e-3
assert best_rot_gap > 1e-3 and ll_mf - gap_mf > ll_ml - best_rot_gap
print(
    "monotone; 400 -> 800 steps changes both covariances by less than 1e-5; L-BFGS agrees to 1e-5"
)

# %% [markdown]
# The mean-field optimum pays for its smaller gap with likelihood: the noise variance is
# inflated and the weaker directions are shrunk (compare the eigenvalues of $WW^\top$). Both moves
# bring every $\Lambda_n = I + W_{o_n}^\top W_{o_n}/\sigma^2$ closer to the identity, where the
# posterior is uncorrelated and the factorised $q$ is exact. The effect on the likelihood is
# small per point, but it is a systematic bias, far outside the optimisers' tolerance. Unlike
# the prior of section 7 it does not fade with more data: the log-likelihood and the gaps are
# both sums over the points, so both grow in proportion to $N$ and their balance stays the same. A VAE with a
# diagonal encoder faces the same trade-off with a neural decoder, where no closed form measures
# it; Lecture 10 studies when an encoder family can be exact for a given decoder.
#
# With a neural network in place of $W\mathbf z + \boldsymbol\mu$ the decoder becomes
# expressive, but then neither the evidence, nor the posterior, nor the M-step has a closed
# form. What survives is the ELBO, optimised by stochastic gradients with an *amortised*
# approximate posterior and a point estimate of the decoder's weights: the variational
# autoencoder of Lecture 02 {cite:p}`kingma2014auto`.
#
# ## Exercises
#
# Each exercise is a function to complete between the `### BEGIN SOLUTION` and
# `### END SOLUTION` lines. The last line of the cell runs a check from `dgmlib.checks` that
# compares your function with a reference implementation on several cases and tells you which
# case fails and why.
#
# **Exercise 1 — the ELBO of a Gaussian $q$ in closed form.** Write
# `elbo_gaussian(model, x, m, S)` returning $\mathcal L(q)$ for $q = \mathcal N(\mathbf m, S)$, a
# single point `x` of shape `[d]`, `m` of shape `[k]` and `S` of shape `[k, k]`, using the two
# formulas of section 4 (use `model.W`, `model.mu`, `model.sigma2`). Do not call `model.elbo`.


# %%
def elbo_gaussian(model: PPCA, x: torch.Tensor, m: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
    """ELBO (nats) of q(z) = N(m, S) at one point x [d] under a pPCA model."""
    ### BEGIN SOLUTION
    W, mu, sigma2 = model.W, model.mu, model.sigma2
    d, k = W.shape
    residual = x - mu - W @ m
    expected_log_lik = -0.5 * d * torch.log(2 * math.pi * sigma2) - (
        residual @ residual + torch.trace(W @ S @ W.T)
    ) / (2 * sigma2)
    kl_to_prior = 0.5 * (torch.trace(S) + m @ m - k - torch.logdet(S))
    return expected_log_lik - kl_to_prior
    ### END SOLUTION


checks.check_elbo_gaussian(elbo_gaussian)

# %% [markdown]
# **Exercise 2 — a numerically stable importance-sampling estimate.** Given, for $K$ samples
# $\mathbf z_j\sim q$, the values $\log p(\mathbf x\mid\mathbf z_j)$, $\log p(\mathbf z_j)$ and
# $\log q(\mathbf z_j)$ (tensors of shape `[K, ...]`), return
# $\log\frac1K\sum_j p(\mathbf x\mid\mathbf z_j)p(\mathbf z_j)/q(\mathbf z_j)$, reducing the first
# dimension. Log-weights of real models are often around $-1000$: exponentiate carelessly and you
# get $\log 0$. (Hint: $\log\sum_j e^{a_j} = a^* + \log\sum_j e^{a_j - a^*}$ with $a^* = \max_j a_j$.)


# %%
def log_importance_estimate(
    log_px_given_z: torch.Tensor, log_pz: torch.Tensor, log_qz: torch.Tensor
) -> torch.Tensor:
    """log of the mean importance weight over dim 0: [K, ...] -> [...], in nats."""
    ### BEGIN SOLUTION
    log_w = log_px_given_z + log_pz - log_qz
    log_w_max = log_w.max(dim=0).values
    return log_w_max + torch.log(torch.exp(log_w - log_w_max).mean(dim=0))
    ### END SOLUTION


checks.check_log_importance_estimate(log_importance_estimate)

# %% [markdown]
# **Exercise 3 — one EM step for pPCA.** Write `em_step(X, W, mu, sigma2)` returning the pair
# `(W_new, sigma2_new)` of section 5, for data `X` of shape `[N, d]`, `W` of shape `[d, k]` and
# `mu` equal to the sample mean of `X`. Compute the posterior moments first, then the M-step.
# Do not call `PPCA.em_step`.


# %%
def em_step(
    X: torch.Tensor, W: torch.Tensor, mu: torch.Tensor, sigma2: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """One EM step for pPCA: (W_new [d, k], sigma2_new) from data X [N, d]."""
    ### BEGIN SOLUTION
    N, d = X.shape
    k = W.shape[1]
    Xc = X - mu
    M_inv = torch.linalg.inv(W.T @ W + sigma2 * torch.eye(k, dtype=X.dtype))
    Ez = Xc @ W @ M_inv  # rows: E[z_n]
    sum_Ezz = N * sigma2 * M_inv + Ez.T @ Ez  # sum_n E[z_n z_n^T]
    W_new = Xc.T @ Ez @ torch.linalg.inv(sum_Ezz)
    sigma2_new = (
        (Xc**2).sum() - 2 * ((Ez @ W_new.T) * Xc).sum() + torch.trace(sum_Ezz @ W_new.T @ W_new)
    ) / (N * d)
    return W_new, sigma2_new
    ### END SOLUTION


checks.check_em_step(em_step)

# %% [markdown]
# **Exercise 4 (no code to hand in).** (a) Using the closed-form ELBO, show that for pPCA the
# optimal Gaussian $q$ has covariance $S = \sigma^2 M^{-1}$ whatever $\mathbf x$ is: only the mean
# of the posterior depends on the data. What does that suggest about an encoder network that
# outputs a mean and a covariance? (b) Run the EM loop of section 5 on data with
# `signal_std = torch.tensor([30.0, 2.0, 1.4])` and compare the number of steps needed to reach a
# gap of $10^{-6}$ with the rate $g'(w_*)^2$ derived there.
#
# ## Summary
#
# - A latent-variable model defines $p(\mathbf x) = \int p(\mathbf x\mid\mathbf z)p(\mathbf z)\,d\mathbf z$;
#   the posterior $p(\mathbf z\mid\mathbf x)$ needs that same integral as its normaliser. In pPCA
#   both are Gaussian and exact, which made every check in this lecture possible.
# - Averaging the likelihood over prior samples is unbiased but useless in high dimension: its
#   relative variance grows exponentially with the latent dimension, and typical estimates are
#   orders of magnitude too small.
# - Importance sampling with proposal $r$ is also unbiased; with the exact posterior as proposal
#   every weight equals $p(\mathbf x)$ (zero variance), and a proposal near the posterior keeps
#   the error small.
# - The ELBO $\mathcal L(q) = \mathbb E_q[\log p(\mathbf x,\mathbf z) - \log q(\mathbf z)]$ is a
#   lower bound by Jensen's inequality, and exactly
#   $\log p(\mathbf x) = \mathcal L(q) + \mathrm{KL}(q\,\|\,p(\mathbf z\mid\mathbf x))$: raising the
#   bound over $q$ pulls $q$ towards the posterior.
# - EM is coordinate ascent on the ELBO: the E-step sets $q$ to the posterior (tight bound), the
#   M-step raises the bound in $\theta$; the likelihood never decreases. For pPCA it converges to
#   the Tipping–Bishop closed form, the PCA subspace with noise equal to the average discarded
#   variance, which also matches scikit-learn's independent implementation.
# - A prior on the parameters turns EM into MAP-EM: same E-step, M-step with $\log p(\theta)$
#   added (for pPCA, a ridge term in the $W$ update and pseudo-counts in the $\sigma^2$ update).
#   The MAP shrinks each retained variance by an amount that fades like $1/N$. Like ML, MAP keeps
#   only a point for $\theta$; a VAE does the same for its decoder weights, which is why it is not
#   a fully Bayesian model.
# - A factorised (mean-field) $q$ cannot follow a correlated posterior, so variational EM
#   maximises $\log p(\mathbf X\mid\theta)$ minus the remaining KL. On complete pPCA data the
#   maximiser rotates $W$ to orthogonal columns and loses nothing; with missing entries no rotation
#   removes the KL, and the optimum inflates the noise, shrinks the weak directions and stays below
#   the maximum likelihood.
# - Next: when the decoder is a neural network, the E-step is no longer available in closed form.
#   Lecture 02 replaces it by a learned, amortised $q_\phi(\mathbf z\mid\mathbf x)$ and gradient
#   ascent on the ELBO, with a point estimate of the decoder's weights.
#
# ## References
#
# - Probabilistic PCA, its closed-form maximum-likelihood solution and its EM algorithm:
#   {cite:p}`tipping1999probabilistic`.
# - The EM algorithm: {cite:p}`dempster1977maximum`.
# - Latent-variable models, EM and variational inference in textbook form (chapters 9, 10 and 12;
#   section 10.1.2 for what a factorised approximation does to a correlated Gaussian):
#   {cite:p}`bishop2006pattern`.
# - Variational autoencoders, the next lecture's subject: {cite:p}`kingma2014auto`,
#   {cite:p}`rezende2014stochastic`, and the tutorial {cite:p}`kingma2019introduction`.
# - Importance sampling inside the bound, for Lecture 05: {cite:p}`burda2016importance`.

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
# # Lecture 02 — Amortized inference and the variational autoencoder
#
# Lecture 01 ended with EM, an algorithm that needs the exact posterior $p_\theta(\mathbf z\mid
# \mathbf x)$ in its E-step. As soon as the likelihood $p_\theta(\mathbf x\mid\mathbf z)$ is a
# neural network, that posterior is out of reach. This lecture replaces the exact E-step by a
# learned approximation that is *shared* by all data points, works out how to differentiate an
# expectation whose distribution depends on the parameters, and puts the pieces together into the
# **variational autoencoder** (VAE), which we then train on Fashion-MNIST.
#
# **What you will learn**
#
# - **variational EM**: both EM steps become gradient steps on the ELBO; why one set of variational
#   parameters per data point does not scale, and how an encoder network **amortizes** inference;
# - two unbiased estimators of $\nabla_\lambda \mathbb E_{q_\lambda}[f]$, the **score-function**
#   (REINFORCE) estimator and the **reparametrization** estimator — derived, checked against an
#   exact gradient, and compared through exact formulas for their variances;
# - the gradients of the ELBO with respect to the decoder and the encoder, checked on a linear
#   Gaussian model whose ELBO has a closed form;
# - the VAE algorithm in a few lines of PyTorch, and trained VAEs on Fashion-MNIST:
#   reconstructions, samples, a two-dimensional latent map, interpolations, the test ELBO;
# - what amortization costs, measured by optimizing each test image's posterior separately.
#
# **Prerequisites:** Lecture 01 (the ELBO, its decomposition, EM), Gaussian densities, PyTorch
# autograd.
#
# **Follows:** the course's lecture notes on amortized inference and the VAE (variational EM, ELBO
# gradients and the reparametrization trick, the VAE algorithm), the VAE part of the notes on
# structured VAE learning, and the VAE recap that opens the notes on posterior collapse and
# tighter bounds. Derivations and checks are worked out independently.

# %%
import itertools
import json
import math

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import norm
from torch.func import grad, vmap

from dgmlib.bounds import estimate_nll
from dgmlib.checks import check_kl_standard_normal, check_reparam_sample
from dgmlib.data import (
    FASHION_MNIST_CLASSES,
    REPO_DATA_DIR,
    binarize_dynamic,
    binarize_fixed,
    load_fashion_mnist,
    to_unit_interval,
)
from dgmlib.distributions import LOG_2PI, kl_normal_std_normal
from dgmlib.models import VAE
from dgmlib.plot import image_grid, use_style
from dgmlib.train import Trainer, load_model
from dgmlib.utils import get_device, seed_everything

# One thread: the same arithmetic as the checkpoint script, so that the short live training in
# section 4 retraces the first steps of the stored models exactly.
seed_everything(0, threads=1)
use_style()
device = get_device()  # unused: stored outputs come from the CPU run
CHECKPOINTS = REPO_DATA_DIR / "checkpoints"  # the repository's data/checkpoints/


def fmt(v: float) -> str:
    """A number with 4 significant digits (stable across runs), without a '-0'."""
    return f"{float(v) + 0.0:.4g}"


# %% [markdown]
# ## 1. From EM to amortized variational inference
#
# For any density $q(\mathbf z)$, Lecture 01 showed
#
# $$
# \log p_\theta(\mathbf x) = \mathcal L(q, \theta) + \mathrm{KL}\big(q(\mathbf z)\,\|\,p_\theta(\mathbf z\mid\mathbf x)\big),
# \qquad
# \mathcal L(q, \theta) = \mathbb E_{q}\big[\log p_\theta(\mathbf x\mid\mathbf z)\big] - \mathrm{KL}\big(q(\mathbf z)\,\|\,p(\mathbf z)\big).
# $$
#
# EM maximizes $\sum_i \mathcal L(q_i, \theta)$ over a data set $\mathbf x_1, \dots, \mathbf x_N$ by
# coordinate ascent: the E-step sets each $q_i$ to the posterior $p_\theta(\mathbf z\mid\mathbf
# x_i)$, which makes the bound tight, and the M-step maximizes over $\theta$. With a neural-network
# decoder neither step is available: the posterior $p_\theta(\mathbf x\mid\mathbf z)p(\mathbf
# z)/p_\theta(\mathbf x)$ needs the evidence, the very integral we cannot compute, and the M-step
# has no closed form.
#
# **Variational EM.** Restrict each $q_i$ to a tractable family — here diagonal Gaussians
# $q_i(\mathbf z) = \mathcal N(\mathbf z;\, \mathbf m_i, \operatorname{diag}\mathbf s_i^2)$ with
# *local* variational parameters $\lambda_i = (\mathbf m_i, \log\mathbf s_i^2)$ — and replace both
# exact maximizations by gradient steps on the same objective:
#
# $$
# \text{E-step: } \lambda_i \leftarrow \lambda_i + \eta\, \nabla_{\lambda_i} \mathcal L(\lambda_i, \theta; \mathbf x_i),
# \qquad
# \text{M-step: } \theta \leftarrow \theta + \eta\, \nabla_\theta \sum_i \mathcal L(\lambda_i, \theta; \mathbf x_i).
# $$
#
# The E-step no longer closes the gap: at best it reaches the smallest
# $\mathrm{KL}(q_i \,\|\, p_\theta(\mathbf z\mid\mathbf x_i))$ within the family, so the algorithm
# ascends a bound rather than the likelihood itself {cite}`neal1998view`. Per-data-point
# parameters also scale badly: there are $2ZN$ of them for $Z$ latent dimensions; with
# mini-batches each $\lambda_i$ is updated only when $\mathbf x_i$ is drawn, about once per epoch,
# while $\theta$ moves at every step; and a new image, such as a test image, needs its own
# optimization before anything can be said about its latent code {cite}`hoffman2013stochastic`.
#
# **Amortization.** Replace the table $(\lambda_1, \dots, \lambda_N)$ by a *function* of the data:
# an **encoder** network with weights $\phi$ that outputs the variational parameters,
#
# $$
# q_\phi(\mathbf z\mid\mathbf x) = \mathcal N\big(\mathbf z;\; \boldsymbol\mu_\phi(\mathbf x),\; \operatorname{diag}\boldsymbol\sigma^2_\phi(\mathbf x)\big).
# $$
#
# The cost of inference is paid once, while training $\phi$, and spread ("amortized") over all data
# points; inferring the latent code of a new image is a single forward pass
# {cite}`kingma2014auto,rezende2014stochastic`. The objective becomes
# $\mathcal L(\phi, \theta) = \sum_i \mathcal L(\phi, \theta; \mathbf x_i)$, and both steps merge into
# one stochastic gradient ascent on $(\phi, \theta)$.
#
# The encoder can only produce variational parameters of the form $\lambda_i = e_\phi(\mathbf x_i)$,
# so for every $\theta$
#
# $$
# \max_\phi \sum_i \mathcal L\big(e_\phi(\mathbf x_i), \theta; \mathbf x_i\big)
# \;\le\; \sum_i \max_{\lambda_i} \mathcal L(\lambda_i, \theta; \mathbf x_i)
# \;\le\; \sum_i \log p_\theta(\mathbf x_i).
# $$
#
# The first gap is the **amortization gap**, the second the **approximation gap** of the Gaussian
# family {cite}`cremer2018inference`. Section 6 measures the first on a trained model; Lecture 10
# studies both. The model of this lecture has $Z = 20$ latent dimensions and $N = 60\,000$ training
# images:

# %%
Z, N_TRAIN = 20, 60_000
encoder_params = sum(p.numel() for p in VAE.for_mnist(z_dim=Z).encoder.parameters())
print(f"local variational parameters, 2 * Z * N: {2 * Z * N_TRAIN:,}")
print(f"weights of the amortized encoder (784-200-200-40 MLP): {encoder_params:,}")

# %% [markdown]
# ## 2. Gradients of an expectation
#
# Both updates need gradients of expectations. When only the integrand depends on the parameter,
# as for the decoder weights $\theta$, the gradient passes under the integral:
# $\nabla_\theta \mathbb E_{q}[f_\theta(\mathbf z)] = \mathbb E_{q}[\nabla_\theta f_\theta(\mathbf z)]$,
# estimated by averaging $\nabla_\theta f_\theta$ over samples of $q$. When the *distribution*
# depends on the parameter, as for the encoder weights $\phi$, this fails: a sample of
# $q_\lambda$ is just a number, and differentiating $f$ at that number ignores how moving $\lambda$
# moves the samples. There are two standard ways out.
#
# **Score-function estimator** (also called REINFORCE or likelihood-ratio). Differentiate the density
# and turn the result back into an expectation with $\nabla q = q\, \nabla \log q$:
#
# $$
# \nabla_\lambda \mathbb E_{q_\lambda}[f(\mathbf z)]
# = \int f(\mathbf z)\, \nabla_\lambda q_\lambda(\mathbf z)\, d\mathbf z
# = \mathbb E_{q_\lambda}\big[f(\mathbf z)\, \nabla_\lambda \log q_\lambda(\mathbf z)\big].
# $$
#
# It needs only samples and the *score* $\nabla_\lambda \log q_\lambda$: $f$ may be a black box,
# non-differentiable, and $\mathbf z$ may be discrete {cite}`williams1992simple`. Because
# $\mathbb E_{q_\lambda}[\nabla_\lambda \log q_\lambda] = \nabla_\lambda \int q_\lambda = 0$, any
# constant $b$ (a **baseline**) may be subtracted from $f$ without changing the mean.
#
# **Reparametrization estimator** (pathwise). Write the sample as a differentiable function of
# parameter-free noise, $\mathbf z = g_\lambda(\boldsymbol\varepsilon)$ with $\boldsymbol\varepsilon
# \sim r$; for a Gaussian, $z = \mu + \sigma\varepsilon$ with $\varepsilon \sim \mathcal N(0, 1)$.
# The expectation is then over $r$, which does not depend on $\lambda$, and the gradient passes
# under the integral, through $f$ and $g$ by the chain rule:
#
# $$
# \nabla_\lambda \mathbb E_{q_\lambda}[f(\mathbf z)] = \nabla_\lambda \mathbb E_{r}\big[f(g_\lambda(\boldsymbol\varepsilon))\big]
# = \mathbb E_{r}\Big[\nabla_{\mathbf z} f(\mathbf z)\big|_{\mathbf z = g_\lambda(\boldsymbol\varepsilon)}\; \frac{\partial g_\lambda(\boldsymbol\varepsilon)}{\partial \lambda}\Big].
# $$
#
# It needs $f$ differentiable in $\mathbf z$ and a differentiable sampler
# {cite}`kingma2014auto,rezende2014stochastic`.
#
# ### A toy objective with a known gradient
#
# Take $f(z) = z^2$ and $q = \mathcal N(\mu, \sigma^2)$. Then $\mathbb E_q[z^2] = \mu^2 + \sigma^2$,
# so the exact gradient is $(\partial_\mu, \partial_\sigma) = (2\mu, 2\sigma)$. With $\varepsilon =
# (z-\mu)/\sigma$ the scores are $\partial_\mu \log q = \varepsilon/\sigma$ and $\partial_\sigma
# \log q = (\varepsilon^2 - 1)/\sigma$, and the single-sample estimators are
#
# | estimator | of $\partial_\mu$ | of $\partial_\sigma$ |
# |---|---|---|
# | score function (SF) | $z^2\,\varepsilon/\sigma$ | $z^2(\varepsilon^2-1)/\sigma$ |
# | SF with baseline $b = \mu^2+\sigma^2$ | $(z^2-b)\,\varepsilon/\sigma$ | $(z^2-b)(\varepsilon^2-1)/\sigma$ |
# | reparametrization (RP) | $2z$ | $2z\varepsilon$ |
#
# (The baseline here is the exact mean of $f$, which would be unknown in practice — a running
# average of $f$ is the usual substitute; we use it to see what a good baseline can do.)
#
# **Their variances.** Each estimator is a polynomial in $\varepsilon \sim \mathcal N(0,1)$, so its
# variance follows from the moments $\mathbb E\varepsilon^2 = 1$, $\mathbb E\varepsilon^4 = 3$,
# $\mathbb E\varepsilon^6 = 15$, $\mathbb E\varepsilon^8 = 105$ (odd moments vanish). For the SF
# estimator of $\partial_\mu$, expand $z^2\varepsilon/\sigma = \tfrac{\mu^2}{\sigma}\varepsilon +
# 2\mu\varepsilon^2 + \sigma\varepsilon^3$. Its mean is $2\mu$ (only the middle term survives), and
# its second moment is $\tfrac{\mu^4}{\sigma^2}\cdot 1 + 4\mu^2\cdot 3 + \sigma^2\cdot 15 + 2\mu^2
# \cdot 3$ (the cross terms with odd powers vanish), so its variance is $\mu^4/\sigma^2 + 14\mu^2 +
# 15\sigma^2$. The same bookkeeping gives all six:
#
# | estimator | $\operatorname{Var}$ of the $\partial_\mu$ estimate | $\operatorname{Var}$ of the $\partial_\sigma$ estimate |
# |---|---|---|
# | SF | $\mu^4/\sigma^2 + 14\mu^2 + 15\sigma^2$ | $2\mu^4/\sigma^2 + 60\mu^2 + 74\sigma^2$ |
# | SF with baseline | $8\mu^2 + 10\sigma^2$ | $40\mu^2 + 56\sigma^2$ |
# | RP | $4\sigma^2$ | $4\mu^2 + 8\sigma^2$ |
#
# The reparametrized $\partial_\mu$ estimate does not depend on $\mu$ at all: it only looks at the
# slope of $f$ at the sample. The score function multiplies the *value* $f(z)$ by a zero-mean
# score, so it is noisy wherever $f$ is large, here like $\mu^4$; the baseline removes that term
# but not the rest.
#
# Below, each estimator is written twice: from the formulas of the table, and the way one
# implements it with automatic differentiation — the reparametrized sample is differentiated
# through, while the score-function estimate is the gradient of a **surrogate** $(f(z) - b)\log
# q_\lambda(z)$ in which the sample $z$ is held fixed (`detach`). `torch.func.vmap(grad(...))`
# returns one gradient per sample of $\varepsilon$.


# %%
def toy_estimates(mu: float, sigma: float, eps: torch.Tensor) -> dict[str, torch.Tensor]:
    """Single-sample estimates of (d/dmu, d/dsigma) E[z^2], one row per eps: name -> [M, 2]."""
    z = mu + sigma * eps
    b = mu**2 + sigma**2
    score = torch.stack([eps / sigma, (eps**2 - 1) / sigma], dim=1)  # d log q / d(mu, sigma)
    return {
        "SF": z[:, None] ** 2 * score,
        "SF+baseline": (z[:, None] ** 2 - b) * score,
        "RP": torch.stack([2 * z, 2 * z * eps], dim=1),
    }


def rp_objective(params, eps):
    """f(g(eps)) for one noise value: its gradient is the reparametrization estimate."""
    mu, sigma = params
    return (mu + sigma * eps) ** 2


def sf_surrogate(params, eps, baseline):
    """(f(z) - b) log q(z) with the sample z held fixed: its gradient is the score-function
    estimate."""
    mu, sigma = params
    z = (mu + sigma * eps).detach()
    log_q = -0.5 * ((z - mu) / sigma) ** 2 - torch.log(sigma) - 0.5 * LOG_2PI
    return (z**2 - baseline) * log_q


def per_sample_grads(fn, params, eps, *args):
    """One gradient per noise value, shape [M, 2], by vmap over the samples."""
    grads = vmap(grad(fn), in_dims=(None, 0) + (None,) * len(args))(params, eps, *args)
    return torch.stack(grads, dim=1)


mu0, sigma0 = 2.0, 1.0
eps = torch.randn(10_000, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
params = (torch.tensor(mu0, dtype=torch.float64), torch.tensor(sigma0, dtype=torch.float64))
by_formula = toy_estimates(mu0, sigma0, eps)
by_autograd = {
    "SF": per_sample_grads(sf_surrogate, params, eps, 0.0),
    "SF+baseline": per_sample_grads(sf_surrogate, params, eps, mu0**2 + sigma0**2),
    "RP": per_sample_grads(rp_objective, params, eps),
}
gaps = {k: (by_formula[k] - by_autograd[k]).abs().max().item() for k in by_formula}
# float64 estimates below 1e3 in size (|eps| < 6): round-off ~1e-13, so 1e-9 fails only on a bug
assert max(gaps.values()) < 1e-9
for k in gaps:
    print(f"{k:<12}: formula and autograd agree on all {len(eps):,} samples to below 1e-9")

# %% [markdown]
# **Check: both estimators are unbiased, with the predicted variances.** For $\mu \in \{0, 1, 2,
# 4\}$ and $\sigma = 1$ we draw $M = 10^6$ samples of $\varepsilon$ (the same ones for every
# estimator). The sample mean of each estimator must agree with the exact gradient within
# Monte Carlo error, which we take as 4 standard errors ($\mathrm{sd}/\sqrt M$); the sample variance
# must agree with the formula within 4 standard errors of a sample variance
# ($\sqrt{(\hat m_4 - \hat v^2)/M}$, with $\hat m_4$ the fourth central moment).


# %%
def exact_variances(mu: float, sigma: float) -> dict[str, tuple[float, float]]:
    """The variances of the table above: name -> (Var of d/dmu estimate, Var of d/dsigma)."""
    return {
        "SF": (
            mu**4 / sigma**2 + 14 * mu**2 + 15 * sigma**2,
            2 * mu**4 / sigma**2 + 60 * mu**2 + 74 * sigma**2,
        ),
        "SF+baseline": (8 * mu**2 + 10 * sigma**2, 40 * mu**2 + 56 * sigma**2),
        "RP": (4 * sigma**2, 4 * mu**2 + 8 * sigma**2),
    }


M = 1_000_000
gen = torch.Generator().manual_seed(2)
rows = []
worst_mean_z, worst_var_z = 0.0, 0.0
for mu in (0.0, 1.0, 2.0, 4.0):
    sigma = 1.0
    eps = torch.randn(M, generator=gen, dtype=torch.float64)
    exact_grad = torch.tensor([2 * mu, 2 * sigma], dtype=torch.float64)
    row = {"mu": mu}
    for name, g in toy_estimates(mu, sigma, eps).items():
        mean, var = g.mean(0), g.var(0)
        se_mean = g.std(0) / math.sqrt(M)
        se_var = (((g - mean) ** 2 - var) ** 2).mean(0).sqrt() / math.sqrt(M)
        exact_var = torch.tensor(exact_variances(mu, sigma)[name], dtype=torch.float64)
        worst_mean_z = max(worst_mean_z, ((mean - exact_grad).abs() / se_mean).max().item())
        worst_var_z = max(worst_var_z, ((var - exact_var).abs() / se_var).max().item())
        row[name] = (mean, var, exact_var)
    rows.append(row)

for j, (param, exact_str) in enumerate((("mu", "2 mu"), ("sigma", "2 sigma"))):
    print(f"\nd/d{param} E[z^2] (exact: {exact_str}), sigma = 1, M = 10^6 samples")
    print(
        f"{'mu':>4} {'exact':>6} | {'mean SF':>8} {'SF+b':>8} {'RP':>8} | "
        f"{'Var SF (exact)':>17} {'Var SF+b (exact)':>17} {'Var RP (exact)':>17} | {'SF/RP':>6} {'SF+b/RP':>7}"
    )
    for row in rows:
        exact = 2 * row["mu"] if j == 0 else 2.0
        means = " ".join(f"{row[k][0][j].item() + 0.0:>8.3f}" for k in ("SF", "SF+baseline", "RP"))
        variances = " ".join(
            f"{fmt(row[k][1][j]) + ' (' + fmt(row[k][2][j]) + ')':>17}"
            for k in ("SF", "SF+baseline", "RP")
        )
        ratio = row["SF"][2][j] / row["RP"][2][j]
        ratio_b = row["SF+baseline"][2][j] / row["RP"][2][j]
        print(
            f"{row['mu']:>4g} {fmt(exact):>6} | {means} | {variances} | {fmt(ratio):>6} {fmt(ratio_b):>7}"
        )
print(f"\nlargest |mean - exact gradient| in standard errors: {worst_mean_z:.1f} (must be < 4)")
print(f"largest |variance - formula| in standard errors:    {worst_var_z:.1f} (must be < 4)")
assert worst_mean_z < 4 and worst_var_z < 4

# %% [markdown]
# The ratios (computed from the exact variances) say how many times more samples the score
# function needs for the same accuracy as one reparametrized sample: averaging $S$ independent
# single-sample estimates divides the variance by $S$, so the *ratio* does not depend on $S$. The
# figure shows both facts at $\mu = 2$: the spread of single-sample estimates, and the standard
# deviation of $S$-sample averages against $S$, which falls like $1/\sqrt S$ for every estimator,
# with the score function's line offset by $\sqrt{\text{ratio}}$.

# %%
mu_fig, sigma_fig = 2.0, 1.0
eps = torch.randn(2000, 1024, generator=gen, dtype=torch.float64)  # 2000 repetitions of S <= 1024
est = {
    k: v[..., 0].reshape(2000, 1024)
    for k, v in toy_estimates(mu_fig, sigma_fig, eps.flatten()).items()
}
sizes = [1, 4, 16, 64, 256, 1024]
colors = {"SF": "tab:red", "SF+baseline": "tab:orange", "RP": "tab:blue"}
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
bins = np.linspace(-20, 30, 101)
for name, g in est.items():
    axes[0].hist(
        g[:, 0].numpy(),
        bins=bins,
        density=True,
        histtype="step",
        lw=1.5,
        color=colors[name],
        label=name,
    )
    sds = [g[:, :s].mean(1).std().item() for s in sizes]
    theory = [math.sqrt(exact_variances(mu_fig, sigma_fig)[name][0] / s) for s in sizes]
    axes[1].loglog(sizes, sds, "o", color=colors[name], label=f"{name} (2000 repetitions)")
    axes[1].loglog(sizes, theory, "-", color=colors[name], alpha=0.6)
axes[0].axvline(2 * mu_fig, color="k", ls="--", label=f"exact gradient {2 * mu_fig:g}")
axes[0].set_xlabel(r"single-sample estimate of $\partial_\mu\, \mathbb{E}[z^2]$")
axes[0].set_ylabel("density")
axes[0].set_title(r"Single-sample estimates at $\mu=2$, $\sigma=1$")
axes[0].legend()
axes[1].set_xlabel("number of samples $S$ averaged")
axes[1].set_ylabel("standard deviation of the estimate")
axes[1].set_title(r"Averages of $S$ samples (lines: $\sqrt{\mathrm{Var}/S}$)")
axes[1].legend(fontsize=9)
plt.show()

# %% [markdown]
# Both estimators are unbiased; what separates them is variance. Reparametrization wins here by a
# factor of about 4 to 124 in the $\mu$-gradient, and that is typical whenever $f$ is smooth in
# $\mathbf z$. Its cost is that it needs a differentiable path from the parameters to the sample,
# which discrete latent variables do not have; Lecture 07 meets that case, and uses relaxations or
# score-function estimators there {cite}`mohamed2020monte`.
#
# ## 3. The gradients of the ELBO
#
# For one data point the amortized ELBO is
#
# $$
# \mathcal L(\phi, \theta; \mathbf x) = \mathbb E_{q_\phi(\mathbf z\mid\mathbf x)}\big[\log p_\theta(\mathbf x\mid\mathbf z)\big]
# - \mathrm{KL}\big(q_\phi(\mathbf z\mid\mathbf x)\,\|\,p(\mathbf z)\big).
# $$
#
# **Decoder (M-step) gradient.** The sampling distribution does not depend on $\theta$, and neither
# does the KL term (the prior is fixed), so
#
# $$
# \nabla_\theta \mathcal L = \mathbb E_{q_\phi(\mathbf z\mid\mathbf x)}\big[\nabla_\theta \log p_\theta(\mathbf x\mid\mathbf z)\big]
# \approx \frac1S \sum_{s=1}^S \nabla_\theta \log p_\theta(\mathbf x\mid\mathbf z_s), \qquad \mathbf z_s \sim q_\phi(\mathbf z\mid\mathbf x),
# $$
#
# an ordinary Monte Carlo average. Unlike the naive estimator of Lecture 01, which drew
# $\mathbf z$ from the prior, the samples come from where the posterior puts its mass.
#
# **Encoder (E-step) gradient.** Reparametrize $\mathbf z = \boldsymbol\mu_\phi(\mathbf x) +
# \boldsymbol\sigma_\phi(\mathbf x) \odot \boldsymbol\varepsilon$, $\boldsymbol\varepsilon \sim
# \mathcal N(\mathbf 0, I)$:
#
# $$
# \nabla_\phi \mathcal L = \mathbb E_{\boldsymbol\varepsilon}\Big[\nabla_\phi \log p_\theta\big(\mathbf x \mid \boldsymbol\mu_\phi(\mathbf x) + \boldsymbol\sigma_\phi(\mathbf x)\odot\boldsymbol\varepsilon\big)\Big]
# - \nabla_\phi \mathrm{KL}\big(q_\phi(\mathbf z\mid\mathbf x)\,\|\,p(\mathbf z)\big).
# $$
#
# The first term is backpropagation through the decoder into $\mathbf z$, then into
# $\boldsymbol\mu_\phi$ and $\boldsymbol\sigma_\phi$, then into the encoder's weights. The second
# term needs no sampling at all.
#
# **The KL term in closed form.** With $\log q(\mathbf z) = -\tfrac12\sum_j\big[\log 2\pi + \log
# \sigma_j^2 + (z_j - \mu_j)^2/\sigma_j^2\big]$ and $\log p(\mathbf z) = -\tfrac12 \sum_j[\log 2\pi +
# z_j^2]$, take expectations under $q$ using $\mathbb E_q(z_j - \mu_j)^2 = \sigma_j^2$ and
# $\mathbb E_q z_j^2 = \mu_j^2 + \sigma_j^2$:
#
# $$
# \mathrm{KL}\big(q\,\|\,p\big) = \mathbb E_q[\log q - \log p] = \frac12 \sum_{j=1}^{Z} \big(\mu_j^2 + \sigma_j^2 - 1 - \log\sigma_j^2\big),
# $$
#
# whose gradient is $\mu_j$ in $\mu_j$ and $\tfrac12(\sigma_j^2 - 1)$ in $\log\sigma_j^2$.
#
# **Check: the closed-form KL against a Monte Carlo average** of $\log q(\mathbf z) - \log
# p(\mathbf z)$ over $10^6$ samples of $q$, within 4 standard errors.

# %%
mu_q = torch.tensor([0.5, -1.2, 2.0], dtype=torch.float64)
logvar_q = torch.tensor([-1.0, 0.3, -2.5], dtype=torch.float64)
z = mu_q + torch.exp(0.5 * logvar_q) * torch.randn(M, 3, generator=gen, dtype=torch.float64)
log_q = (-0.5 * (LOG_2PI + logvar_q + (z - mu_q) ** 2 / logvar_q.exp())).sum(-1)
log_p = (-0.5 * (LOG_2PI + z**2)).sum(-1)
kl_closed = 0.5 * (mu_q**2 + logvar_q.exp() - 1 - logvar_q).sum()
kl_mc, kl_se = (log_q - log_p).mean(), (log_q - log_p).std() / math.sqrt(M)
print(f"KL closed form {fmt(kl_closed)} | Monte Carlo {fmt(kl_mc)} +- {fmt(kl_se)} (1 s.e.)")
assert abs(kl_mc - kl_closed) < 4 * kl_se

# %% [markdown]
# ### Check: ELBO gradients on a model with a closed-form ELBO
#
# To test the gradient estimators we need the true gradient of an ELBO. A linear Gaussian decoder,
# $p_\theta(\mathbf x\mid\mathbf z) = \mathcal N(W\mathbf z + \mathbf b, s^2 I_D)$ — the
# probabilistic PCA of Lecture 01 — gives one. For $q = \mathcal N(\mathbf m,
# \operatorname{diag} e^{\boldsymbol\ell})$, the expected squared residual is
# $\mathbb E_q\|\mathbf x - W\mathbf z - \mathbf b\|^2 = \|\mathbf x - W\mathbf m - \mathbf b\|^2 +
# \sum_j e^{\ell_j}\|\mathbf w_j\|^2$ ($\mathbf w_j$ the $j$-th column of $W$), hence
#
# $$
# \mathbb E_q \log p_\theta(\mathbf x\mid\mathbf z) = -\frac D2 \log(2\pi s^2)
# - \frac{1}{2s^2}\Big(\|\mathbf x - W\mathbf m - \mathbf b\|^2 + \sum_j e^{\ell_j}\|\mathbf w_j\|^2\Big).
# $$
#
# Autograd on this formula gives the exact gradients in the decoder weights $W$ and the variational
# parameters $(\mathbf m, \boldsymbol\ell)$ (here directly the encoder's outputs). We compare them
# with $2 \times 10^4$ single-sample estimates: reparametrization for all parameters, and the score
# function for $(\mathbf m, \boldsymbol\ell)$, applied to the reconstruction term only (the KL
# gradient is exact in both). Each mean must match the exact gradient within 4 standard errors.

# %%
g_lin = torch.Generator().manual_seed(3)
D_lin, Z_lin, s_lin = 4, 2, 0.5
x_lin = torch.randn(D_lin, generator=g_lin, dtype=torch.float64)
b_lin = torch.zeros(D_lin, dtype=torch.float64)
W_lin = torch.randn(D_lin, Z_lin, generator=g_lin, dtype=torch.float64)
m_lin = torch.tensor([0.3, -0.5], dtype=torch.float64)
ell_lin = torch.tensor([-1.0, -0.5], dtype=torch.float64)


def log_lik_lin(W, z):
    """log N(x; W z + b, s^2 I) for the one data point x_lin."""
    r = x_lin - W @ z - b_lin
    return -0.5 * D_lin * (LOG_2PI + 2 * math.log(s_lin)) - 0.5 * (r**2).sum() / s_lin**2


def kl_lin(m, ell):
    return 0.5 * (m**2 + ell.exp() - 1 - ell).sum()


def elbo_closed_form(W, m, ell):
    r = x_lin - W @ m - b_lin
    expected_sq = (r**2).sum() + (ell.exp() * (W**2).sum(0)).sum()
    return (
        -0.5 * D_lin * (LOG_2PI + 2 * math.log(s_lin))
        - 0.5 * expected_sq / s_lin**2
        - kl_lin(m, ell)
    )


def elbo_reparam(W, m, ell, eps):
    """Single-sample ELBO with z = m + exp(ell / 2) * eps and the analytic KL."""
    return log_lik_lin(W, m + torch.exp(0.5 * ell) * eps) - kl_lin(m, ell)


def elbo_score_surrogate(m, ell, eps):
    """Its gradient in (m, ell) is log p(x|z) * score - grad KL, with the sample z held fixed."""
    z = (m + torch.exp(0.5 * ell) * eps).detach()
    log_q = (-0.5 * (LOG_2PI + ell + (z - m) ** 2 / ell.exp())).sum()
    return log_lik_lin(W_lin, z).detach() * log_q - kl_lin(m, ell)


exact = grad(elbo_closed_form, argnums=(0, 1, 2))(W_lin, m_lin, ell_lin)
S_lin = 20_000
eps_lin = torch.randn(S_lin, Z_lin, generator=g_lin, dtype=torch.float64)
rp = vmap(grad(elbo_reparam, argnums=(0, 1, 2)), in_dims=(None, None, None, 0))(
    W_lin, m_lin, ell_lin, eps_lin
)
sf = vmap(grad(elbo_score_surrogate, argnums=(0, 1)), in_dims=(None, None, 0))(
    m_lin, ell_lin, eps_lin
)


def z_scores(samples, target):
    return (
        ((samples.mean(0) - target).abs() / (samples.std(0) / math.sqrt(len(samples)))).max().item()
    )


print(
    f"{'parameter':<12}{'exact':>9}{'RP mean':>10}{'SF mean':>10}{'Var RP':>9}{'Var SF':>9}{'SF/RP':>7}"
)
for name, j, rp_j, sf_j in (("m", 1, rp[1], sf[0]), ("ell", 2, rp[2], sf[1])):
    for k in range(Z_lin):
        print(
            f"{name + '_' + str(k + 1):<12}{fmt(exact[j][k]):>9}{fmt(rp_j[:, k].mean()):>10}"
            f"{fmt(sf_j[:, k].mean()):>10}{fmt(rp_j[:, k].var()):>9}{fmt(sf_j[:, k].var()):>9}"
            f"{fmt(sf_j[:, k].var() / rp_j[:, k].var()):>7}"
        )
worst = {
    "decoder W, reparametrized": z_scores(rp[0], exact[0]),
    "encoder (m, ell), reparametrized": max(z_scores(rp[1], exact[1]), z_scores(rp[2], exact[2])),
    "encoder (m, ell), score function": max(z_scores(sf[0], exact[1]), z_scores(sf[1], exact[2])),
}
for k, v in worst.items():
    print(f"largest |mean - exact| in standard errors, {k}: {v:.1f}")
assert max(worst.values()) < 4

# %% [markdown]
# Both estimators of the encoder gradient are unbiased, and the score function is again far
# noisier: its variance is 5.7 to 32 times larger (the last column). With a 784-pixel image in
# place of $D = 4$ the value $\log p_\theta(\mathbf x\mid\mathbf z)$ is in the hundreds of nats and
# the gap widens further; this is why VAEs use the reparametrization estimator.
#
# ## 4. The variational autoencoder
#
# The VAE combines an amortized Gaussian encoder, a neural decoder and the gradients above
# {cite}`kingma2014auto,rezende2014stochastic,kingma2019introduction`. Our model is the
# one-stochastic-layer network used as a benchmark by {cite:t}`burda2016importance`
# (`VAE.for_mnist` in `dgmlib`):
#
# - prior $p(\mathbf z) = \mathcal N(\mathbf 0, I_Z)$;
# - decoder: a multilayer perceptron $Z \to 200 \to 200 \to 784$ with tanh activations outputs
#   one logit $\ell_d(\mathbf z)$ per pixel, and $p_\theta(\mathbf x\mid\mathbf z) = \prod_d
#   \mathrm{Bernoulli}(x_d;\, \operatorname{sigmoid}\ell_d(\mathbf z))$;
# - encoder: a multilayer perceptron $784 \to 200 \to 200 \to 2Z$ outputs $\boldsymbol\mu_\phi(\mathbf x)$
#   and $\log\boldsymbol\sigma^2_\phi(\mathbf x)$.
#
# A Bernoulli likelihood needs binary pixels. Fashion-MNIST {cite}`xiao2017fashion` has grey levels,
# so training images are **binarized dynamically**: every time an image is used, each pixel is
# drawn as 1 with probability equal to its grey level. The test images are binarized once, with a
# fixed seed, so that test figures are reproducible and comparable across lectures.
#
# **The algorithm.** Repeat until convergence:
#
# 1. draw a mini-batch $\mathbf x_1, \dots, \mathbf x_B$ of training images and binarize it;
# 2. encode: $(\boldsymbol\mu_i, \log\boldsymbol\sigma_i^2) = e_\phi(\mathbf x_i)$;
# 3. sample $\boldsymbol\varepsilon_i \sim \mathcal N(\mathbf 0, I)$ and set $\mathbf z_i =
#    \boldsymbol\mu_i + \boldsymbol\sigma_i \odot \boldsymbol\varepsilon_i$;
# 4. decode: $\log p_\theta(\mathbf x_i\mid\mathbf z_i) = \sum_d \big[x_{id}\,\ell_d(\mathbf z_i) -
#    \log(1 + e^{\ell_d(\mathbf z_i)})\big]$;
# 5. form $\hat{\mathcal L} = \frac1B \sum_i \big[\log p_\theta(\mathbf x_i\mid\mathbf z_i) -
#    \mathrm{KL}_i\big]$ with the closed-form $\mathrm{KL}_i$ of section 3;
# 6. backpropagate: autograd returns the decoder gradient and the reparametrized encoder gradient
#    of section 3 at once; take an optimizer step (Adam) on $-\hat{\mathcal L}$.
#
# Steps 1 and 3 make $\nabla\hat{\mathcal L}$ an unbiased estimate of the gradient of the average
# ELBO over the training set. In code, steps 2–5 are a few lines; we check them against the
# `loss` method of `dgmlib`'s `VAE`, value and gradients, with the same random numbers.

# %%
train_images, train_labels = load_fashion_mnist("train")
test_images, test_labels = load_fashion_mnist("test")
x_test = binarize_fixed(test_images, seed=0).unsqueeze(1)  # [10000, 1, 28, 28] in {0, 1}
print(f"train {tuple(train_images.shape)}, test {tuple(x_test.shape)}")


def vae_loss_by_hand(model: VAE, x: torch.Tensor) -> torch.Tensor:
    """Steps 2-5: minus the single-sample ELBO, averaged over the batch (nats)."""
    mu, logvar = model.encoder(x)  # step 2
    z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)  # step 3
    logits = model.decoder(z).flatten(1)  # step 4
    log_px_z = (x.flatten(1) * logits - F.softplus(logits)).sum(-1)
    kl = 0.5 * (mu**2 + logvar.exp() - 1 - logvar).sum(-1)  # step 5
    return -(log_px_z - kl).mean()


torch.manual_seed(0)
demo = VAE.for_mnist(z_dim=Z)
x_batch = binarize_dynamic(train_images[:100], torch.Generator().manual_seed(0)).unsqueeze(1)
losses, grads = [], []
for loss_fn in (vae_loss_by_hand, lambda m, x: m.loss(x)["loss"]):
    torch.manual_seed(123)  # the same epsilon for both
    demo.zero_grad()
    loss = loss_fn(demo, x_batch)
    loss.backward()
    losses.append(loss.item())
    grads.append(torch.cat([p.grad.flatten() for p in demo.parameters()]))
rel_grad_gap = ((grads[0] - grads[1]).norm() / grads[1].norm()).item()
print(f"loss by hand {fmt(losses[0])} nats | VAE.loss {fmt(losses[1])} nats")
# float32 (eps 1.2e-7): losses of ~550 nats agree to ~1e-4, gradients to ~1e-6 relative; a wrong
# term (a missing KL, a sign, a factor 1/2) changes them by far more than these tolerances
assert abs(losses[0] - losses[1]) < 1e-3 and rel_grad_gap < 1e-5
print(f"relative difference of the gradients (all {len(grads[0]):,} weights): below 1e-5")

# %% [markdown]
# ### A few hundred steps of training, live
#
# Training a VAE for many epochs takes minutes, so the models of the next section were trained by
# a script, `python tools/train_lecture02.py` (`make checkpoints`), and are loaded from
# `data/checkpoints/`. Here we run the script's recipe for its first 500 steps: the same
# initialization, the same order of images and the same binarization noise, Adam with learning
# rate $10^{-3}$, batches of 100 images, and `dgmlib`'s `Trainer`, which logs every term of
# `VAE.loss` averaged over blocks of 100 steps.


# %%
def epoch_batches(images: torch.Tensor, epoch: int, batch: int = 100):
    """One epoch of binarized mini-batches [batch, 1, 28, 28], in a seeded order (as the script)."""
    g = torch.Generator().manual_seed(1000 + epoch)
    order = torch.randperm(len(images), generator=g)
    for start in range(0, len(order), batch):
        yield binarize_dynamic(images[order[start : start + batch]], generator=g).unsqueeze(1)


torch.manual_seed(0)
live = VAE.for_mnist(z_dim=Z)
with torch.no_grad():  # the KL term of the freshly initialized encoder, no sampling involved
    kl_at_init = kl_normal_std_normal(*live.encode(x_test)).mean().item()
trainer = Trainer(live, torch.optim.Adam(live.parameters(), lr=1e-3), log_every=100, progress=False)
live_history = trainer.fit(
    lambda e: itertools.islice(epoch_batches(train_images, e), 500), epochs=1
)

results = json.loads((CHECKPOINTS / "l02_results.json").read_text())
stored_history = results["models"]["z20"]["history"]
n_live = len(live_history["elbo"])
gap = max(
    abs(a - b) for a, b in zip(live_history["elbo"], stored_history["elbo"][:n_live], strict=True)
)
print("step                      :", " ".join(f"{s:>7.0f}" for s in live_history["step"]))
print("ELBO, live (nats)         :", " ".join(f"{v:>7.1f}" for v in live_history["elbo"]))
print(
    "ELBO, checkpoint's log    :", " ".join(f"{v:>7.1f}" for v in stored_history["elbo"][:n_live])
)
print("KL term, live (nats)       :", " ".join(f"{v:>7.1f}" for v in live_history["kl"]))
print(f"KL term at initialization (10 000 test images): {kl_at_init:.2f} nats")
# The live run repeats the script's arithmetic (seeds, order, one thread); other CPU kernels change
# it only by float32 round-off. 0.05 nats is half the precision of the printed rows.
assert gap < 0.05
print("largest difference between the live and the stored ELBO: below 0.05 nats")

fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
steps = live_history["step"]
axes[0].plot(steps, live_history["loss"], "o-", label=r"loss $= -$ELBO")
axes[0].plot(
    steps, live_history["recon"], "s-", label=r"$-\mathbb{E}_q \log p(x|z)$ (reconstruction)"
)
axes[1].plot(steps, live_history["kl"], "^-", color="tab:green")
for ax in axes:
    ax.set_xlabel("training step (batch of 100)")
axes[0].set_ylabel("nats per image (mean of 100 steps)")
axes[0].set_title("The first 500 steps of a VAE (Z = 20)")
axes[0].legend()
axes[1].set_ylabel("nats per image (mean of 100 steps)")
axes[1].set_title(r"The KL term KL$(q_\phi(z|x) \| p(z))$")
plt.show()

# %% [markdown]
# The loss falls fast, entirely through the reconstruction term. The KL term *grows*: a freshly
# initialized encoder outputs almost the prior (its KL on the test images is 0.15 nats, printed
# above), and within the first hundred steps it starts to pay KL for information about the image
# put into $\mathbf z$, because every nat of it lowers the reconstruction term by more.
#
# ## 5. VAEs on Fashion-MNIST
#
# Two models, both trained for 30 epochs on all 60 000 training images by
# `python tools/train_lecture02.py` (15 to 30 minutes on one CPU core): one with $Z = 20$ and one
# with $Z = 2$, whose latent space we can draw. The script stores the weights with a SHA-256
# sidecar that `load_model` verifies, and the training log and test figures in
# `l02_results.json`.

# %%
models = {}
for name, z_dim in (("z20", 20), ("z2", 2)):
    models[name] = VAE.for_mnist(z_dim=z_dim)
    meta = load_model(models[name], CHECKPOINTS / f"l02_vae_{name}.safetensors")
    models[name].eval().requires_grad_(False)
    print(f"{name}: {meta['epochs']} epochs, made by `{meta['command']}`")

fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
for name, color in (("z20", "tab:blue"), ("z2", "tab:green")):
    r = results["models"][name]
    steps_per_epoch = N_TRAIN // 100
    epochs_axis = np.array(r["history"]["step"]) / steps_per_epoch
    axes[0].plot(
        epochs_axis, r["history"]["elbo"], color=color, alpha=0.7, label=f"{name}: training batches"
    )
    axes[0].plot(
        np.arange(1, len(r["test_elbo_per_epoch"]) + 1),
        r["test_elbo_per_epoch"],
        "o",
        ms=3,
        color=color,
        label=f"{name}: test set, end of epoch",
    )
    axes[1].plot(epochs_axis, r["history"]["kl"], color=color, label=name)
axes[0].set_ylim(-290, -230)
axes[0].set_xlabel("epoch")
axes[0].set_ylabel("ELBO (nats per image)")
axes[0].set_title("ELBO during training")
axes[0].legend(fontsize=9)
axes[1].set_xlabel("epoch")
axes[1].set_ylabel("KL (nats per image)")
axes[1].set_title("KL term during training")
axes[1].legend()
plt.show()

# %% [markdown]
# **The test ELBO.** We evaluate the single-sample ELBO on all 10 000 binarized test images, with
# a seeded generator for the samples of $\mathbf z$, and split it into its two terms. The script
# computed the same numbers when it saved the models; they must agree.

# %%
lines = [
    f"{'model':<6}{'test ELBO':>11}{'E_q log p(x|z)':>16}{'KL':>8}   (nats per image, 10 000 test images)"
]
terms = {}
for name, model in models.items():
    with torch.no_grad():
        mu, logvar = model.encode(x_test)
        kl = kl_normal_std_normal(mu, logvar).mean().item()
        elbo = model.elbo(x_test, generator=torch.Generator().manual_seed(0)).mean().item()
    terms[name] = (elbo, elbo + kl, kl)
    lines.append(f"{name:<6}{elbo:>11.1f}{elbo + kl:>16.1f}{kl:>8.2f}")
    # the same float32 evaluation as the script's: 0.01 nats leaves room for kernel round-off only
    assert abs(elbo - results["models"][name]["elbo"]) < 0.01, (name, elbo)
d_elbo, d_rec, d_kl = (a - b for a, b in zip(terms["z20"], terms["z2"], strict=True))
lines.append(
    f"z20 - z2: ELBO {d_elbo:+.1f}, E_q log p(x|z) {d_rec:+.1f}, KL {d_kl:+.1f}; "
    f"KL ratio z20 / z2 = {terms['z20'][2] / terms['z2'][2]:.2f}"
)
lines.append(
    "\nfirst 1000 test images, from the script: ELBO vs 1000-sample importance-weighted log p(x)"
)
for name, r in results["models"].items():
    gap_iw = r["iw_log_px_first_1000"] - r["elbo_first_1000"]
    lines.append(
        f"{name:<6} ELBO {r['elbo_first_1000']:.1f}   IW estimate {r['iw_log_px_first_1000']:.1f}"
        f"   difference {gap_iw:.2f}"
    )
print("\n".join(lines))

# %% [markdown]
# Twenty latent dimensions buy 16 nats per image over two (the line "z20 - z2"). The reconstruction
# term gains more than that, 22 nats, and the larger KL gives 6 of them back: the $Z = 20$ model
# spends about twice the KL of the $Z = 2$ model to get there. The importance-weighted estimate
# (Lecture 05) is a tighter lower bound on $\log p_\theta(\mathbf x)$.
# Since $\log p_\theta(\mathbf x) - \mathcal L = \mathrm{KL}(q_\phi(\mathbf z\mid\mathbf x) \,\|\,
# p_\theta(\mathbf z\mid\mathbf x))$ (Lecture 01), the difference of about 3 nats is a lower
# estimate of how much the ELBO loses, per image, because $q_\phi$ is not the true posterior.
#
# **Reconstructions.** One test image of each class (top), its binarized version that the encoder
# sees, and the decoder's mean $\mathbb E[\mathbf x\mid\mathbf z = \boldsymbol\mu_\phi(\mathbf x)]$
# — the pixel probabilities — for both models.

# %%
one_per_class = torch.stack([torch.nonzero(test_labels == k)[0, 0] for k in range(10)])
rows_recon = [
    (
        to_unit_interval(test_images[one_per_class]),
        "test images (grey levels): " + ", ".join(FASHION_MNIST_CLASSES),
    ),
    (x_test[one_per_class, 0], "binarized input"),
    (models["z20"].reconstruct(x_test[one_per_class])[:, 0], "reconstruction, Z = 20"),
    (models["z2"].reconstruct(x_test[one_per_class])[:, 0], "reconstruction, Z = 2"),
]
fig, axes = plt.subplots(4, 1, figsize=(10, 5.6))
for ax, (imgs, title) in zip(axes, rows_recon, strict=True):
    image_grid(imgs, nrow=10, ax=ax, title=title)
axes[0].title.set_fontsize(9)
plt.show()

# %% [markdown]
# With $Z = 20$ the reconstructions keep each garment's shape and rough pattern; with $Z = 2$
# they keep the class and the silhouette, little more.
#
# **Samples.** Draw $\mathbf z \sim \mathcal N(\mathbf 0, I)$ and show the decoder's pixel
# probabilities. (A binary sample of $p_\theta(\mathbf x \mid \mathbf z)$ adds independent pixel
# noise on top, shown in the last row for the $Z = 20$ model.)

# %%
g_samples = torch.Generator().manual_seed(4)
z_prior = torch.randn(20, 20, generator=g_samples)
fig, axes = plt.subplots(3, 1, figsize=(10, 2.9))
image_grid(
    models["z20"].decoder.mean(z_prior)[:, 0],
    nrow=20,
    ax=axes[0],
    title="Z = 20: pixel probabilities for z from the prior",
)
image_grid(
    models["z2"].sample(20, generator=g_samples, mean=True)[:, 0],
    nrow=20,
    ax=axes[1],
    title="Z = 2: pixel probabilities for z from the prior",
)
image_grid(
    models["z20"].decoder.sample(z_prior, generator=g_samples)[:, 0],
    nrow=20,
    ax=axes[2],
    title="Z = 20: binary samples of p(x | z), same z as the first row",
)
plt.show()

# %% [markdown]
# **The latent space of the $Z = 2$ model.** Left: the encoder means $\boldsymbol\mu_\phi(\mathbf
# x)$ of all 10 000 test images, coloured by their class (the labels were never used in
# training). Right: the decoder's mean image on a grid of latent points, placed at the quantiles
# $1\%, \dots, 99\%$ of the standard normal prior so that equal areas of the grid carry equal prior
# mass. The black line is the interpolation path of the next figure.

# %%
with torch.no_grad():
    mu2 = models["z2"].encode(x_test)[0]
pair = (int(torch.nonzero(test_labels == 1)[0]), int(torch.nonzero(test_labels == 9)[0]))
t_interp = torch.linspace(0, 1, 10)[:, None]
path2 = (1 - t_interp) * mu2[pair[0]] + t_interp * mu2[pair[1]]

fig, axes = plt.subplots(1, 2, figsize=(12, 5.6), gridspec_kw={"width_ratios": [1.25, 1]})
cmap = plt.get_cmap("tab10")
for k, cls in enumerate(FASHION_MNIST_CLASSES):
    pts = mu2[test_labels == k].numpy()
    axes[0].scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.5, color=cmap(k), label=cls)
axes[0].plot(path2[:, 0], path2[:, 1], "k.-", lw=1.5, ms=6)
axes[0].set_xlabel("$\\mu_1(x)$")
axes[0].set_ylabel("$\\mu_2(x)$")
axes[0].set_title("Encoder means of 10 000 test images (Z = 2)")
axes[0].legend(markerscale=6, fontsize=9, loc="center left", bbox_to_anchor=(1.0, 0.5))
axes[0].set_aspect("equal", adjustable="datalim")

n_grid = 15
q_grid = torch.tensor(norm.ppf(np.linspace(0.01, 0.99, n_grid)), dtype=torch.float32)
zz = torch.stack(torch.meshgrid(q_grid, q_grid.flip(0), indexing="xy"), -1).reshape(-1, 2)
image_grid(
    models["z2"].decoder.mean(zz)[:, 0],
    nrow=n_grid,
    ax=axes[1],
    title="Decoder means on a grid of prior quantiles",
)
plt.show()

# %% [markdown]
# Classes form regions of the latent plane, with neighbouring regions for similar garments
# (sandals, sneakers and ankle boots; pullovers, coats and shirts), and the decoded grid changes
# smoothly from one garment to the next. The KL term keeps the cloud of codes roughly inside the
# prior's bulk, so most of the plane that the prior samples from decodes to a plausible image.
#
# **Interpolation.** Encode two test images, a trouser and an ankle boot, move along the straight
# line between their encoder means, and decode each point.

# %%
with torch.no_grad():
    mu20 = models["z20"].encode(x_test)[0]
path20 = (1 - t_interp) * mu20[pair[0]] + t_interp * mu20[pair[1]]
fig, axes = plt.subplots(2, 1, figsize=(10, 2.8))
image_grid(
    models["z20"].decoder.mean(path20)[:, 0],
    nrow=10,
    ax=axes[0],
    title="Z = 20: decoded points on the segment between two encoder means",
)
image_grid(
    models["z2"].decoder.mean(path2)[:, 0],
    nrow=10,
    ax=axes[1],
    title="Z = 2: the same, along the black path of the latent map",
)
plt.show()

# %% [markdown]
# The change is gradual — the decoder is a smooth function of $\mathbf z$ — but the middle of the
# path decodes to faint, blurred mixtures: between the codes of two very different garments the
# straight line crosses a region that few images are encoded to, where the decoder has learned
# little. In the $Z = 2$ model the path visibly runs from the trouser region past the sandal
# region to the ankle boots.
#
# ## 6. What amortization costs
#
# The encoder gives $q_\phi(\mathbf z\mid\mathbf x)$ in one forward pass. Non-amortized variational
# inference, the E-step of section 1, would instead optimize a separate $(\mathbf m_i,
# \boldsymbol\ell_i)$ for each image with the decoder held fixed. We do this for the first 100
# test images with the $Z = 20$ model: 400 Adam steps (learning rate 0.05, one reparametrized
# sample per step), starting either from the prior ($\mathbf m = \mathbf 0$, $\boldsymbol\ell =
# \mathbf 0$) or from the encoder's output. The ELBO along the way is evaluated with the same 32
# samples of $\boldsymbol\varepsilon$ throughout (common random numbers), so the curves compare
# like with like. For scale, we also compute the importance-weighted estimate of
# $\log p_\theta(\mathbf x)$ of section 5 ($K = 1000$ samples of the encoder's $q_\phi$) on the
# same 100 images.
#
# **Check.** The improvement that per-image optimization brings must be real, not an accident of
# the 32 evaluation samples: it must exceed 4 standard errors of its own estimate (the per-image
# differences vary from sample to sample of $\boldsymbol\varepsilon$; the s.e. of their average
# over samples and images follows from that spread).

# %%
x_sub = x_test[:100]
decoder20 = models["z20"].decoder
eps_eval = torch.randn(32, 100, Z, generator=torch.Generator().manual_seed(5))


def elbo_eval(m: torch.Tensor, ell: torch.Tensor) -> torch.Tensor:
    """ELBO per image [100] for q = N(m, diag exp(ell)), with the fixed 32 noise samples."""
    with torch.no_grad():
        z = m + torch.exp(0.5 * ell) * eps_eval
        return decoder20.log_prob(x_sub, z).mean(0) - kl_normal_std_normal(m, ell)


def fit_local(m0: torch.Tensor, ell0: torch.Tensor, steps: int = 400, lr: float = 0.05):
    """Per-image variational parameters by Adam on the single-sample ELBO; returns the curve."""
    m, ell = m0.clone().requires_grad_(True), ell0.clone().requires_grad_(True)
    opt = torch.optim.Adam([m, ell], lr=lr)
    g = torch.Generator().manual_seed(6)
    checkpoints, curve = {0, 5, 10, 20, 30, 50, 75, 100, 150, 200, 300, 400}, []
    for t in range(steps + 1):
        if t in checkpoints:
            curve.append((t, elbo_eval(m, ell).mean().item()))
        if t == steps:
            break
        z = m + torch.exp(0.5 * ell) * torch.randn(m.shape, generator=g)
        loss = -(decoder20.log_prob(x_sub, z) - kl_normal_std_normal(m, ell)).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return m.detach(), ell.detach(), curve


with torch.no_grad():
    m_enc, ell_enc = models["z20"].encode(x_sub)
elbo_encoder = elbo_eval(m_enc, ell_enc)
_, _, curve_prior = fit_local(torch.zeros(100, Z), torch.zeros(100, Z))
m_ref, ell_ref, curve_enc = fit_local(m_enc, ell_enc)
elbo_refined = elbo_eval(m_ref, ell_ref)

with torch.no_grad():
    # per-sample, per-image ELBO differences [32, 100], refined minus encoder, same noise
    z_ref, z_enc = (
        m_ref + torch.exp(0.5 * ell_ref) * eps_eval,
        m_enc + torch.exp(0.5 * ell_enc) * eps_eval,
    )
    diff = (decoder20.log_prob(x_sub, z_ref) - decoder20.log_prob(x_sub, z_enc)) - (
        kl_normal_std_normal(m_ref, ell_ref) - kl_normal_std_normal(m_enc, ell_enc)
    )
    g_iw = torch.Generator().manual_seed(7)
    iw_log_px = -estimate_nll(lambda x, k: models["z20"].log_weights(x, k, g_iw), x_sub, K=1000)
amortization_gap = diff.mean().item()
gap_se = ((diff.var(0) / len(eps_eval)).sum().sqrt() / len(x_sub)).item()
measured_total = (iw_log_px - elbo_encoder).mean().item()
shortfall = elbo_encoder.mean().item() - curve_prior[-1][1]
last_gain = curve_prior[-1][1] - curve_prior[-2][1]
print(f"mean ELBO of the 100 images (nats): encoder {elbo_encoder.mean():.1f}")
print(f"  per-image optimization from the prior, after 400 steps: {curve_prior[-1][1]:.1f}")
print(f"  per-image optimization from the encoder, after 400 steps: {curve_enc[-1][1]:.1f}")
print(
    f"  after 400 steps, optimization from the prior is {shortfall:.1f} nats below the encoder, "
    f"and gained {last_gain:.1f} nats in its last {curve_prior[-1][0] - curve_prior[-2][0]} steps"
)
print(
    f"amortization gap (lower estimate): {amortization_gap:.2f} nats per image (s.e. {gap_se:.2f}); "
    f"images improved: {(elbo_refined > elbo_encoder).sum().item()} of 100"
)
print(
    f"importance-weighted log p(x), K = 1000: {iw_log_px.mean():.1f}, "
    f"{measured_total:.2f} nats above the encoder's ELBO"
)
print(
    f"amortization gap / (IW estimate - encoder ELBO) = {amortization_gap / measured_total:.2f}; "
    f"left between the refined q and the IW estimate: {measured_total - amortization_gap:.2f} nats"
)
assert amortization_gap > 4 * gap_se

fig, ax = plt.subplots(figsize=(6.4, 3.8))
ax.plot(*np.array(curve_prior).T, "o-", label="per-image VI, started at the prior")
ax.plot(*np.array(curve_enc).T, "s-", label="per-image VI, started at the encoder")
ax.axhline(
    elbo_encoder.mean().item(), color="k", ls="--", label="amortized encoder (one forward pass)"
)
ax.set_ylim(elbo_encoder.mean().item() - 40, curve_enc[-1][1] + 5)
ax.set_xlabel("Adam steps on the per-image variational parameters")
ax.set_ylabel("mean ELBO of 100 test images (nats)")
ax.set_title("Amortized versus per-image inference (Z = 20)")
ax.legend()
plt.show()

# %% [markdown]
# A single forward pass of the encoder is worth about 400 gradient steps of per-image inference
# from scratch — the whole point of amortization. After 400 steps that optimization (whose curve
# starts far below the plotted range) is still 2.0 nats short of the encoder, but it has not
# converged: it gained 3.3 nats in its last 100 steps. The run started at the encoder shows that
# better values exist: it improves on the encoder's answer by 1.97 nats per image, against a
# standard error of 0.05 for that estimate. This is a lower estimate of the amortization gap, the
# price of sharing one network among all images.
#
# This gap is not small. On the same 100 images the importance-weighted estimate lies 2.77 nats
# above the encoder's ELBO, and per-image optimization recovers 71 % of that distance (the ratio
# printed above). Only the remaining 0.80 nats separate the refined Gaussian $q$ from the
# importance-weighted estimate; both numbers are lower estimates, so this says nothing final about
# the gap that the Gaussian family itself leaves. Lecture 10 separates the two gaps properly.
#
# ## Exercises
#
# Each exercise has a solution between `### BEGIN SOLUTION` and `### END SOLUTION`; the last line of
# the cell runs a check from `dgmlib.checks` that tells you whether your function is right.
#
# **Exercise 1 — the reparametrized sample.** Implement `reparam_sample(mu, logvar)`, returning one
# sample of $\mathcal N(\boldsymbol\mu, \operatorname{diag} e^{\text{logvar}})$ per row that is a
# differentiable function of `mu` and `logvar`. Use `torch.randn_like` for the noise.


# %%
def reparam_sample(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    ### BEGIN SOLUTION
    return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
    ### END SOLUTION


check_reparam_sample(reparam_sample)

# %% [markdown]
# **Exercise 2 — the KL term.** Implement `kl_standard_normal(mu, logvar)`:
# $\mathrm{KL}(\mathcal N(\boldsymbol\mu, \operatorname{diag} e^{\text{logvar}}) \,\|\, \mathcal N(\mathbf 0,
# I))$ for each row, summed over the latent dimensions (shape `[B]`), in nats.


# %%
def kl_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    ### BEGIN SOLUTION
    return 0.5 * (mu**2 + logvar.exp() - 1.0 - logvar).sum(-1)
    ### END SOLUTION


check_kl_standard_normal(kl_standard_normal)

# %% [markdown]
# **Exercise 3 (no code to hand in).** (a) Derive the variance $2\mu^4/\sigma^2 + 60\mu^2 +
# 74\sigma^2$ of the score-function estimate of $\partial_\sigma \mathbb E[z^2]$ in section 2.
# (b) Which baseline $b$ minimizes the variance of the score-function estimate of
# $\partial_\mu \mathbb E[z^2]$? Is it the mean $\mu^2 + \sigma^2$ of $f$? (c) Replace the
# reparametrized encoder gradient of the live training in section 4 by the score-function
# estimator (use a surrogate as in section 3, with $\log p_\theta(\mathbf x\mid\mathbf z)$ held
# fixed) and compare the loss after 500 steps.
#
# ## Summary
#
# - Without the exact posterior, EM becomes **variational EM**: gradient ascent on the ELBO in
#   the variational parameters (E-step) and in the model parameters (M-step). Local parameters per
#   data point scale with $N$, go stale under mini-batches and need fresh optimization for new
#   data; an **encoder** $q_\phi(\mathbf z\mid\mathbf x)$ amortizes inference into one forward pass,
#   at the price of an amortization gap.
# - $\nabla_\lambda \mathbb E_{q_\lambda}[f]$ has two unbiased estimators: the **score function**
#   $\mathbb E[f\,\nabla \log q]$, which needs only samples and the score (any $f$, discrete
#   $\mathbf z$), and **reparametrization** $\mathbb E_\varepsilon[\nabla f(g_\lambda(\varepsilon))]$,
#   which needs a differentiable $f$ and sampler. On $f(z) = z^2$ both matched the exact gradient
#   within Monte Carlo error, and their variances matched exact formulas: the score function's
#   grows like $\mu^4$, a baseline removes that term, reparametrization stays at $4\sigma^2$.
# - The ELBO's decoder gradient is a plain Monte Carlo average under $q_\phi$; its encoder
#   gradient is reparametrized through the decoder, plus the exact gradient of the closed-form
#   Gaussian KL. Both were checked against a closed-form ELBO.
# - The **VAE** trains encoder and decoder jointly by SGD on single-sample ELBO estimates. On
#   binarized Fashion-MNIST its reconstructions, samples, latent map and interpolations show a
#   smooth, class-structured latent space; the test ELBO was about $-241.5$ nats with $Z = 20$
#   and $-257.5$ with $Z = 2$.
# - Next: Lecture 03 returns to the likelihood itself — what a density model of discrete pixels
#   really measures — and Lectures 04 and 05 to the weak points of this VAE: posterior collapse and
#   the looseness of the bound.
#
# ## References
#
# - The VAE, the reparametrization trick and amortized inference: {cite}`kingma2014auto`,
#   {cite}`rezende2014stochastic`; a book-length introduction: {cite}`kingma2019introduction`.
# - The score-function (REINFORCE) estimator: {cite}`williams1992simple`; a survey of Monte Carlo
#   gradient estimators: {cite}`mohamed2020monte`.
# - EM as coordinate ascent on a free energy, and its variational variants: {cite}`neal1998view`;
#   stochastic variational inference with local and global parameters: {cite}`hoffman2013stochastic`.
# - The amortization and approximation gaps: {cite}`cremer2018inference`.
# - The benchmark architecture and evaluation by importance sampling: {cite}`burda2016importance`.
# - The Fashion-MNIST data set: {cite}`xiao2017fashion`.

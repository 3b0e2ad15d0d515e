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
#   why a VAE, with a point estimate of its weights, is not a fully Bayesian model;
# - two unbiased estimators of $\nabla_\lambda \mathbb E_{q_\lambda}[f]$, the **score-function**
#   (REINFORCE) estimator and the **reparametrization** estimator — derived, checked against an
#   exact gradient, and compared through exact formulas for their variances;
# - the gradients of the ELBO with respect to the decoder and the encoder, checked on a linear
#   Gaussian model whose ELBO has a closed form;
# - the VAE algorithm in a few lines of PyTorch, and trained VAEs on Fashion-MNIST:
#   reconstructions, samples, a two-dimensional latent map, interpolations, the test ELBO;
# - a Gaussian decoder with fixed variance $\sigma^2$ turns the reconstruction term into a squared
#   error, and a "squared error + $\beta\cdot$KL" loss into a VAE with $\sigma^2 = \beta/2$; what
#   that noise level does, solved exactly for a linear decoder;
# - why a plain autoencoder cannot sample: its codes have no known distribution, and draws from
#   the prior land where the decoder was never trained, measured against the VAE;
# - what amortization costs, measured by optimizing each test image's posterior separately.
#
# **Prerequisites:** Lecture 01 (the ELBO, its decomposition, EM), Gaussian densities, PyTorch
# autograd.
#
# **Follows:** the course's lecture notes on amortized inference and the VAE (variational EM, ELBO
# gradients and the reparametrization trick, the VAE algorithm), the VAE part of the notes on
# structured VAE learning (with its classical autoencoder and Gaussian decoder), and the VAE recap that opens the notes on posterior collapse and
# tighter bounds. Derivations and checks are worked out independently.

# %%
import itertools
import math

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import norm
from torch.func import grad, vmap

from dgmlib import notebook_setup, pretrained
from dgmlib.bounds import estimate_nll
from dgmlib.checks import check_kl_standard_normal, check_reparam_sample
from dgmlib.data import (
    FASHION_MNIST_CLASSES,
    binarize_dynamic,
    binarize_fixed,
    load_fashion_mnist,
    to_unit_interval,
)
from dgmlib.distributions import LOG_2PI, kl_normal_std_normal
from dgmlib.models import VAE, GaussianDecoder
from dgmlib.objectives import ELBO
from dgmlib.optim import lbfgs_minimise
from dgmlib.plot import image_grid, image_rows, plot_history
from dgmlib.stats import fmt
from dgmlib.train import Trainer
from dgmlib.widgets import explore

device = notebook_setup(0)  # the live training of section 4 runs there; stored outputs: CPU
# One thread: the same arithmetic as the checkpoint script, so that the short live training in
# section 4 retraces the first steps of the stored models exactly.
torch.set_num_threads(1)


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
# **What is inferred, and what is only estimated.** The VAE keeps a distribution over each
# image's latent code, $q_\phi(\mathbf z\mid\mathbf x_i)$, but the decoder's weights $\theta$
# (and the encoder's $\phi$) are single points: the maximiser of the ELBO, which stands in for
# the log-likelihood. That makes it variational EM for the latents and maximum likelihood (or,
# with a prior, MAP) for the parameters, the reading of {cite:t}`kingma2014auto`. Lecture 01
# (section 7) added a prior to EM: $p(\theta)$ turns the M-step's objective into $\mathcal L(q,
# \theta) + \log p(\theta)$, whose maximiser is still a point, the mode of $p(\theta\mid\mathbf
# X)$. The models of this lecture are trained on the
# ELBO alone, with no penalty on the weights, so there is not even a prior; adding weight decay,
# a penalty $\frac\alpha2\|\theta\|^2$, would make them MAP estimates under
# $\theta\sim\mathcal N(\mathbf 0, \alpha^{-1}I)$. In neither case does the model represent its
# uncertainty about $\theta$: a new image is explained by one decoder, not by an average over
# the decoders that the data leave plausible. In that sense the VAE is not a fully Bayesian
# model. The same reparametrized estimator can handle a variational posterior over $\theta$ as
# well, as {cite:t}`kingma2014auto` note in an appendix, at the price of a distribution over
# every weight.
#
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
# p(\mathbf z)$ over $10^6$ samples of $q$ (the densities from `torch.distributions`), within 4
# standard errors.

# %%
mu_q = torch.tensor([0.5, -1.2, 2.0], dtype=torch.float64)
logvar_q = torch.tensor([-1.0, 0.3, -2.5], dtype=torch.float64)
z = mu_q + torch.exp(0.5 * logvar_q) * torch.randn(M, 3, generator=gen, dtype=torch.float64)
log_q = torch.distributions.Normal(mu_q, torch.exp(0.5 * logvar_q)).log_prob(z).sum(-1)
log_p = torch.distributions.Normal(torch.zeros_like(mu_q), 1.0).log_prob(z).sum(-1)
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
# ELBO over the training set. In code, steps 2–5 are a few lines; we check them against
# `dgmlib.objectives.ELBO`, the objective that `dgmlib`'s `Trainer` minimises, value and
# gradients, with the same random numbers.

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
for loss_fn in (vae_loss_by_hand, lambda m, x: ELBO()(m, x)["loss"]):
    torch.manual_seed(123)  # the same epsilon for both
    demo.zero_grad()
    loss = loss_fn(demo, x_batch)
    loss.backward()
    losses.append(loss.item())
    grads.append(torch.cat([p.grad.flatten() for p in demo.parameters()]))
rel_grad_gap = ((grads[0] - grads[1]).norm() / grads[1].norm()).item()
print(f"loss by hand {fmt(losses[0])} nats | ELBO objective {fmt(losses[1])} nats")
# float32 (eps 1.2e-7): losses of ~550 nats agree to ~1e-4, gradients to ~1e-6 relative; a wrong
# term (a missing KL, a sign, a factor 1/2) changes them by far more than these tolerances
assert abs(losses[0] - losses[1]) < 1e-3 and rel_grad_gap < 1e-5
print(f"relative difference of the gradients (all {len(grads[0]):,} weights): below 1e-5")

# %% [markdown]
# ### A Gaussian decoder: a squared error, and a weight on the KL
#
# For grey-level images, which are continuous, the usual decoder is a Gaussian around the
# network's output, $p_\theta(\mathbf x\mid\mathbf z) = \mathcal N\big(\mathbf x;\,
# \boldsymbol\mu_\theta(\mathbf z),\, \sigma^2 I_D\big)$ with a fixed variance $\sigma^2$
# (`GaussianDecoder(..., variance="fixed")` in `dgmlib`). Its log-density is a scaled squared
# error plus a constant,
#
# $$
# \log\mathcal N\big(\mathbf x;\,\boldsymbol\mu,\,\sigma^2 I_D\big) = -\frac{\|\mathbf x -
# \boldsymbol\mu\|^2}{2\sigma^2} - \frac D2\log(2\pi\sigma^2),
# $$
#
# so the ELBO is
# $-\frac{1}{2\sigma^2}\big(\mathbb E_q\|\mathbf x - \boldsymbol\mu_\theta(\mathbf z)\|^2 + 2\sigma^2\,
# \mathrm{KL}(q_\phi(\mathbf z\mid\mathbf x)\,\|\,p(\mathbf z))\big) - \frac D2\log(2\pi\sigma^2)$.
# Multiplying an objective by a positive constant and shifting it does not move its maximiser:
# **maximising this ELBO is minimising the squared error plus $\beta = 2\sigma^2$ times the KL**.
# Read backwards, a VAE trained on "sum of squared errors + $\beta\cdot$KL" (a $\beta$-VAE with a
# squared-error loss) is a Gaussian-decoder VAE that assumes the noise variance $\sigma^2 =
# \beta/2$; with $\beta = 1$ that is $\sigma^2 = \tfrac12$. If the squared error is averaged over the
# pixels rather than summed (the default of `F.mse_loss`), it is divided by $D$, and the implied
# variance becomes $D/2$.
#
# **Check: the log-density, three ways**, for 100 grey-level test images and the output of a
# randomly initialised decoder, at $\sigma \in \{0.1, 0.5, 1\}$: the formula above,
# `GaussianDecoder.log_prob` (which uses `torch.distributions.Normal`), and `scipy.stats.norm`,
# all in float64. Each is a sum of 784 terms with a total below $10^4$ in size, so round-off stays
# near $10^{-11}$, and $10^{-9}$ can only fail on a wrong formula. **Check: the $\beta$ form**, with
# one fixed draw of $\boldsymbol\varepsilon$: the ELBO computed from the decoder's log-density and
# `torch.distributions.kl_divergence` must equal $-(\text{SSE} + \beta\,\mathrm{KL})/(2\sigma^2) -
# \frac D2\log(2\pi\sigma^2)$ with $\text{SSE}$ from `F.mse_loss(..., reduction="sum")` and $\beta =
# 2\sigma^2$, in value and in the gradients of all weights (relative $10^{-9}$). Any other
# weight, $\beta = \sigma^2$ say, fails.

# %%
x_grey = to_unit_interval(test_images[:100]).unsqueeze(1).double()  # [100, 1, 28, 28] in [0, 1]
D_pix = x_grey[0].numel()
torch.manual_seed(1)
encoder_g = VAE.for_mnist(z_dim=Z).encoder.double()
decoder_g = GaussianDecoder(Z, 200, variance="fixed", sigma=1.0).double()
eps_g = torch.randn(100, Z, generator=torch.Generator().manual_seed(2), dtype=torch.float64)

worst_density = 0.0
for sigma_g in (0.1, 0.5, 1.0):
    decoder_g.logvar.fill_(2 * math.log(sigma_g))
    with torch.no_grad():
        z_g = encoder_g(x_grey)[0] + eps_g
        mean_g = decoder_g(z_g).flatten(1)
        by_formula = -((x_grey.flatten(1) - mean_g) ** 2).sum(-1) / (
            2 * sigma_g**2
        ) - 0.5 * D_pix * (math.log(2 * math.pi * sigma_g**2))
        by_torch = decoder_g.log_prob(x_grey, z_g)
    by_scipy = norm.logpdf(x_grey.flatten(1).numpy(), mean_g.numpy(), sigma_g).sum(-1)
    worst_density = max(
        worst_density,
        (by_formula - by_torch).abs().max().item(),
        np.abs(by_formula.numpy() - by_scipy).max(),
    )
    print(
        f"sigma = {sigma_g}: mean log N(x; mu(z), sigma^2 I) over 100 images {by_torch.mean():.1f} nats"
    )
assert worst_density < 1e-9
print("formula, torch.distributions and scipy agree to below 1e-9 nats")


def gaussian_elbo(sigma: float) -> torch.Tensor:
    """Mean single-sample ELBO of x_grey with the fixed eps, from log-densities and torch's KL."""
    decoder_g.logvar.fill_(2 * math.log(sigma))
    mu_q, logvar_q = encoder_g(x_grey)
    z = mu_q + torch.exp(0.5 * logvar_q) * eps_g
    q = torch.distributions.Normal(mu_q, torch.exp(0.5 * logvar_q))
    kl = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).sum(-1)
    return (decoder_g.log_prob(x_grey, z) - kl).mean()


def beta_loss(beta: float) -> torch.Tensor:
    """Mean of SSE + beta * KL with the same eps: the squared-error VAE loss."""
    mu_q, logvar_q = encoder_g(x_grey)
    z = mu_q + torch.exp(0.5 * logvar_q) * eps_g
    sse = F.mse_loss(decoder_g(z), x_grey, reduction="none").flatten(1).sum(-1)
    return (sse + beta * kl_normal_std_normal(mu_q, logvar_q)).mean()


weights_g = list(encoder_g.parameters()) + list(decoder_g.parameters())
for sigma_g in (0.1, 0.5, 1.0):
    for beta_try, label in ((2 * sigma_g**2, "beta = 2 sigma^2"), (sigma_g**2, "beta = sigma^2")):
        elbo_g = gaussian_elbo(sigma_g)
        g_elbo = torch.autograd.grad(elbo_g, weights_g)
        rhs = -beta_loss(beta_try) / (2 * sigma_g**2) - 0.5 * D_pix * math.log(
            2 * math.pi * sigma_g**2
        )
        g_rhs = torch.autograd.grad(rhs, weights_g)
        value_gap = abs(elbo_g.item() - rhs.item()) / abs(elbo_g.item())
        grad_gap = (
            torch.cat([(a - b).flatten() for a, b in zip(g_elbo, g_rhs, strict=True)]).norm()
            / torch.cat([a.flatten() for a in g_elbo]).norm()
        ).item()
        verdict = "agree (below 1e-9)" if max(value_gap, grad_gap) < 1e-9 else "differ"
        print(
            f"sigma = {sigma_g}, {label:<16}: ELBO vs -(SSE + beta KL) / (2 sigma^2) + const: {verdict}"
            + ("" if verdict.startswith("agree") else f", relative gap in value {value_gap:.2g}")
        )
        assert (max(value_gap, grad_gap) < 1e-9) == (beta_try == 2 * sigma_g**2)

# %% [markdown]
# **What the weight means: a linear decoder.** With a linear decoder and a linear encoder the
# consequence of "$\beta = 2\sigma^2$" can be computed exactly. Take $\boldsymbol\mu_\theta(\mathbf z)
# = \bar{\mathbf x} + W\mathbf z$ and $q(\mathbf z\mid\mathbf x) = \mathcal N(A(\mathbf x - \bar{\mathbf
# x}),\, \operatorname{diag} e^{\boldsymbol\ell})$ (the offsets are at their optimum for centred
# data). The expected squared error is $\|(I - WA)\tilde{\mathbf x}\|^2 + \sum_j e^{\ell_j}\|\mathbf
# w_j\|^2$ with $\tilde{\mathbf x} = \mathbf x - \bar{\mathbf x}$, and the KL is $\frac12\big(\|A
# \tilde{\mathbf x}\|^2 + \sum_j (e^{\ell_j} - 1 - \ell_j)\big)$. Averaged over images with covariance
# $\widehat C = U\Lambda U^\top$ both depend on the data only through $\widehat C$, and in its
# eigenbasis ($W \to U^\top W$, $A \to AU$, which changes nothing else) the loss is
#
# $$
# \sum_i \lambda_i\,\|\mathbf e_i - W\mathbf a_i\|^2 + \sum_j e^{\ell_j}\|\mathbf w_j\|^2
#   + \frac\beta2\Big(\sum_i \lambda_i\|\mathbf a_i\|^2 + \sum_j\big(e^{\ell_j} - 1 - \ell_j\big)\Big),
# $$
#
# with $\mathbf a_i$ the $i$-th column of $A$. By the equivalence above, its minimiser is the
# maximum-likelihood pPCA with the noise variance held at $\sigma^2 = \beta/2$: Lecture 01 showed
# that a diagonal $q$ loses nothing for pPCA, and for a fixed $\sigma^2$ the Tipping–Bishop
# analysis gives columns of squared length $\lambda_j - \sigma^2$ along the top eigenvectors, and
# **zero for every direction whose variance is below $\sigma^2$**
# {cite:p}`tipping1999probabilistic`. So $\beta/2$ is a noise level: directions of the data with
# less variance than that are not worth a latent unit, and the decoder explains them as noise.
#
# **Check: the squared-error loss finds the predicted solution.** On 2000 grey-level training
# images, with $k = 8$ latent units and $\beta = 4$ ($\sigma^2 = 2$, between the 6th and 7th
# eigenvalues), L-BFGS minimises the loss above over $W$, $A$ and $\boldsymbol\ell$ from two random
# starts, for at most 600 iterations each. (The encoder reads whitened coordinates, $A = \tilde A\Lambda^{-1/2}$: a change of
# variables for the optimiser only, since directions of tiny variance otherwise make the problem
# ill-conditioned.) The eigenvalues of $W^\top W$ must equal $\max(\lambda_j - \beta/2, 0)$ to
# $10^{-4}$, a tolerance from the optimiser: the two runs, which share nothing but the data,
# must agree with each other to that accuracy. A sanity line compares the eigenbasis loss with the
# loss computed image by image.

# %%
X_lin = to_unit_interval(train_images[:2000]).reshape(2000, -1).double()
lam_img, U_img = torch.linalg.eigh(torch.cov(X_lin.T, correction=0))
lam_img, U_img = lam_img.flip(0), U_img.flip(1)
k_lin, beta_lin = 8, 4.0


def linear_beta_loss(W, A, ell, beta):
    """Mean SSE + beta * KL of the linear VAE, in the eigenbasis of the data covariance."""
    Wa_ii = (W * A.T).sum(1)  # (W A)_ii
    quad = ((A.T @ (W.T @ W)) * A.T).sum(1)  # ||W a_i||^2
    sse = (lam_img * (1 - 2 * Wa_ii + quad)).sum() + (ell.exp() * W.pow(2).sum(0)).sum()
    kl = 0.5 * ((lam_img * A.pow(2)).sum() + (ell.exp() - 1 - ell).sum())
    return sse + beta * kl


# sanity line: the same loss image by image, in pixel coordinates, at random parameters
g_lin2 = torch.Generator().manual_seed(8)
W_r = torch.randn(784, k_lin, generator=g_lin2, dtype=torch.float64)
A_r = 0.1 * torch.randn(k_lin, 784, generator=g_lin2, dtype=torch.float64)
ell_r = torch.randn(k_lin, generator=g_lin2, dtype=torch.float64)
x_c = X_lin - X_lin.mean(0)
m_r = x_c @ (A_r @ U_img.T).T
per_image = (
    F.mse_loss(m_r @ (U_img @ W_r).T, x_c, reduction="none").sum(-1)
    + (ell_r.exp() * W_r.pow(2).sum(0)).sum()
    + beta_lin * 0.5 * (m_r.pow(2).sum(-1) + (ell_r.exp() - 1 - ell_r).sum())
)
eig_vs_images = abs(
    per_image.mean().item() / linear_beta_loss(W_r, A_r, ell_r, beta_lin).item() - 1
)
assert eig_vs_images < 1e-10
print("eigenbasis loss = mean over the 2000 images: relative difference below 1e-10")

whiten = lam_img.clamp_min(1e-6).rsqrt()  # constant pixels (lambda = 0) get a finite scale
fits = []
for seed in (9, 10):
    g = torch.Generator().manual_seed(seed)
    par = [
        (0.01 * torch.randn(784, k_lin, generator=g, dtype=torch.float64)).requires_grad_(True),
        (0.01 * torch.randn(k_lin, 784, generator=g, dtype=torch.float64)).requires_grad_(True),
        torch.zeros(k_lin, dtype=torch.float64, requires_grad=True),
    ]
    lbfgs_minimise(
        par, lambda par=par: linear_beta_loss(par[0], par[1] * whiten, par[2], beta_lin), 600
    )
    fits.append(torch.linalg.eigvalsh(par[0].detach().T @ par[0].detach()).flip(0))
predicted = (lam_img[:k_lin] - beta_lin / 2).clamp_min(0)
print(f"{'j':<26}" + " ".join(f"{j:>7d}" for j in range(1, k_lin + 1)))
print(f"{'lambda_j':<26}" + " ".join(f"{v:7.3f}" for v in lam_img[:k_lin]))
# eigenvalues of a Gram matrix, so >= 0: clamped against round-off (a "-0.000")
print(f"{'||w_j||^2, learned':<26}" + " ".join(f"{max(v, 0.0):7.3f}" for v in fits[0].tolist()))
print(f"{'max(lambda_j - beta/2, 0)':<26}" + " ".join(f"{v:7.3f}" for v in predicted))
assert (fits[0] - fits[1]).abs().max() < 1e-4
assert (fits[0] - predicted).abs().max() < 1e-4
print("both starts agree to 1e-4, and match the prediction to 1e-4")

print(
    f"\nlargest pixel variance {X_lin.var(0, unbiased=False).max():.3f}, largest eigenvalue "
    f"{lam_img[0]:.2f}, mean pixel variance {lam_img.mean():.3f}"
)
print("loss                          implied sigma^2   directions with variance above it")
for label, s2 in (
    ("SSE + 0.01 KL", 0.005),
    ("SSE + 0.1 KL", 0.05),
    ("SSE + KL", 0.5),
    ("SSE + 4 KL (the check)", 2.0),
    ("mean over pixels of SE + KL", D_pix / 2),
):
    print(f"{label:<30}{s2:>15g}   {(lam_img > s2).sum().item():>10d} of {D_pix}")

# %% [markdown]
# The learned loadings sit on the prediction: six directions carry latent units, and the two
# whose variance is below $\beta/2$ are switched off although the model has units to spare. The
# table turns this into a warning for squared-error VAEs on images in $[0, 1]$. Plain "SSE +
# KL" assumes a noise variance of one half, more than the variance of any single pixel and more
# than all but a handful of principal variances, so a linear model trained that way would use only
# those few latent units. With the squared error averaged over the pixels the implied noise
# exceeds even the largest principal variance, and the decoder has no use for $\mathbf z$ at all:
# the posterior collapse of Lecture 04. A squared-error VAE uses its latents only if $\beta$ is
# small enough (or $\sigma^2$ is learned). With a neural decoder the equivalence $\beta =
# 2\sigma^2$ is the same, only there is no closed form to read the consequence off.

# %% [markdown]
# ### A few hundred steps of training, live
#
# Training a VAE for many epochs takes minutes, so the models of the next section were trained by
# a script, `python tools/train_lecture02.py` (`make checkpoints`), and are loaded from
# `data/checkpoints/`. Here we run the script's recipe for its first 500 steps: the same
# initialization, the same order of images and the same binarization noise, Adam with learning
# rate $10^{-3}$, batches of 100 images, and `dgmlib`'s `Trainer` on the objective `ELBO()`. The
# trainer logs every term of the objective averaged over blocks of 100 steps, each signed as its
# name says: `elbo`, `kl`, and `log_px_z` $= \mathbb E_q \log p_\theta(\mathbf x\mid\mathbf z)$,
# whose negative, the reconstruction loss, is plotted below. The script's log of the same steps
# is stored with the checkpoints (`dgmlib.pretrained.results("l02")`).


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
opt_live = torch.optim.Adam(live.parameters(), lr=1e-3)
trainer = Trainer(live, opt_live, ELBO(), log_every=100, progress=False, device=device)
live_history = trainer.fit(
    lambda e: itertools.islice(epoch_batches(train_images, e), 500), epochs=1
)

results = pretrained.results("l02")
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
curves = {
    "step": steps,
    r"loss $= -$ELBO": live_history["loss"],
    r"$-\mathbb{E}_q \log p(x|z)$ (reconstruction)": [-v for v in live_history["log_px_z"]],
}
labels = {"xlabel": "training step (batch of 100)", "ylabel": "nats per image (mean of 100 steps)"}
plot_history(curves, ax=axes[0], **labels)
plot_history(
    {"step": steps, r"KL$(q_\phi(z|x) \| p(z))$": live_history["kl"]}, ax=axes[1], **labels
)
axes[0].set_title("The first 500 steps of a VAE (Z = 20)")
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
# with $Z = 2$, whose latent space we can draw. The script stores each model's weights together
# with its architecture, so `dgmlib.pretrained.load("l02_vae_z20")` rebuilds it by name and
# verifies the file's SHA-256; the training log and test figures are in `l02_results.json`
# (`pretrained.results("l02")`, loaded above).

# %%
models = {}
for name in ("z20", "z2"):
    models[name] = pretrained.load(f"l02_vae_{name}").requires_grad_(False)  # in eval mode
    print(f"{name}: {results['settings']['epochs']} epochs, made by `{results['command']}`")

fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
for name, color in (("z20", "tab:blue"), ("z2", "tab:green")):
    r = results["models"][name]
    steps_per_epoch = N_TRAIN // 100
    epochs_axis = np.array(r["history"]["step"]) / steps_per_epoch
    axes[0].plot(
        epochs_axis, r["history"]["elbo"], color=color, alpha=0.7, label=f"{name}: training batches"
    )
    axes[0].plot(
        [c["epoch"] for c in r["curves"]],
        [c["test_elbo"] for c in r["curves"]],
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
    assert abs(elbo - results["models"][name]["test"]["elbo"]) < 0.01, (name, elbo)
d_elbo, d_rec, d_kl = (a - b for a, b in zip(terms["z20"], terms["z2"], strict=True))
lines.append(
    f"z20 - z2: ELBO {d_elbo:+.1f}, E_q log p(x|z) {d_rec:+.1f}, KL {d_kl:+.1f}; "
    f"KL ratio z20 / z2 = {terms['z20'][2] / terms['z2'][2]:.2f}"
)
cfg = results["settings"]
lines.append(
    f"\nfirst {cfg['nll_n']} test images, from the script: ELBO vs {cfg['nll_k']}-sample "
    "importance-weighted log p(x)"
)
for name, r in results["models"].items():
    elbo_sub, iw_log_px = r["test"]["subset_elbo"], -r["test"]["subset_nll"]  # nll = -log p(x)
    lines.append(
        f"{name:<6} ELBO {elbo_sub:.1f}   IW estimate {iw_log_px:.1f}"
        f"   difference {iw_log_px - elbo_sub:.2f}"
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
prior_rows = [  # made in this order: the last two draw from g_samples
    (models["z20"].decoder.mean(z_prior)[:, 0], "Z = 20: pixel probabilities for z from the prior"),
    (
        models["z2"].sample(20, generator=g_samples, mean=True)[:, 0],
        "Z = 2: pixel probabilities for z from the prior",
    ),
    (
        models["z20"].decoder.sample(z_prior, generator=g_samples)[:, 0],
        "Z = 20: binary samples of p(x | z), same z as the first row",
    ),
]
image_rows(prior_rows, nrow=20, figsize=(10, 2.9))
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
# **Explore: the decoder under a moving latent point.** Move the sliders $z_1$ and $z_2$ (run the
# cell first) to place a point $\mathbf z$ in the latent plane of the $Z = 2$ model; the right
# panel shows the decoder's mean $\mathbb E[\mathbf x\mid\mathbf z]$ there, and its title names
# the class of the nearest test image's code and how far away it is. Look for three things: the
# image changes gradually as $\mathbf z$ moves inside a class region, it turns into another
# garment where two regions meet, and outside the dotted circle of radius 3, where the prior
# puts little mass and few codes lie, the decoder still returns an image, one it was never
# trained to produce. The default is the prior's mean, $\mathbf z = \mathbf 0$.

# %%
# The cloud of codes as an image (drawing 10 000 points at every move would be slow): on
# 160 x 160 cells of [-4, 4]^2, the colour of the commonest class, as in the map above; the
# more codes a cell holds, the more opaque it is.
edges = np.linspace(-4.0, 4.0, 161)
counts = np.stack(
    [np.histogram2d(*mu2[test_labels == k].numpy().T, bins=(edges, edges))[0] for k in range(10)]
)  # [class, z1 cell, z2 cell]
cloud = np.asarray(cmap(counts.argmax(0).T))  # [z2 cell, z1 cell, RGBA]
cloud[..., 3] = 0.8 * np.clip(counts.sum(0).T / 3.0, 0.0, 1.0)
angle = np.linspace(0.0, 2 * np.pi, 200)


def draw_decoded(axes: np.ndarray, z1: float, z2: float) -> None:
    """Left: the codes of the test images and the point z; right: the decoder's mean at z."""
    ax_map, ax_image = axes
    ax_map.imshow(cloud, extent=(-4, 4, -4, 4), origin="lower", interpolation="nearest")
    for r in (1, 2, 3):  # circles of radius 1, 2, 3 around the prior's mean
        ax_map.plot(r * np.cos(angle), r * np.sin(angle), color="0.4", lw=0.8, ls=":")
    ax_map.plot([z1], [z2], "k+", ms=16, mew=2.5)
    ax_map.set(xlim=(-4, 4), ylim=(-4, 4), aspect="equal", xlabel="$z_1$", ylabel="$z_2$")
    ax_map.set_title("codes of the test images (colours as above)\n+: z; dotted: radius 1, 2, 3")
    z = torch.tensor([[z1, z2]])
    with torch.no_grad():
        image = models["z2"].decoder.mean(z)[0, 0]
    distance = ((mu2 - z) ** 2).sum(1).sqrt()
    nearest = int(distance.argmin())
    ax_image.imshow(image, cmap="gray", vmin=0, vmax=1)
    ax_image.set_axis_off()
    ax_image.set_title(
        f"decoder mean E[x | z] at z = ({z1:.1f}, {z2:.1f})\nnearest test code: "
        f"{FASHION_MNIST_CLASSES[int(test_labels[nearest])]}, at distance "
        f"{distance[nearest]:.2f}"
    )


explore(
    draw_decoded,
    ncols=2,
    figsize=(9.0, 4.4),
    z1=widgets.FloatSlider(value=0.0, min=-4.0, max=4.0, step=0.1),
    z2=widgets.FloatSlider(value=0.0, min=-4.0, max=4.0, step=0.1),
)

# %% [markdown]
# **Interpolation.** Encode two test images, a trouser and an ankle boot, move along the straight
# line between their encoder means, and decode each point.

# %%
with torch.no_grad():
    mu20 = models["z20"].encode(x_test)[0]
path20 = (1 - t_interp) * mu20[pair[0]] + t_interp * mu20[pair[1]]
path_rows = [
    (
        models["z20"].decoder.mean(path20)[:, 0],
        "Z = 20: decoded points on the segment between two encoder means",
    ),
    (
        models["z2"].decoder.mean(path2)[:, 0],
        "Z = 2: the same, along the black path of the latent map",
    ),
]
image_rows(path_rows, nrow=10, figsize=(10, 2.8))
plt.show()

# %% [markdown]
# The change is gradual — the decoder is a smooth function of $\mathbf z$ — but the middle of the
# path decodes to faint, blurred mixtures: between the codes of two very different garments the
# straight line crosses a region that few images are encoded to, where the decoder has learned
# little. In the $Z = 2$ model the path visibly runs from the trouser region past the sandal
# region to the ankle boots.

# %% [markdown]
# ### A plain autoencoder cannot sample
#
# A classical autoencoder has the same two networks, but both are deterministic and it is
# trained on the reconstruction alone, here $-\log p_\theta(\mathbf x\mid\mathbf z =
# \boldsymbol\mu_\phi(\mathbf x))$: the VAE's loss without the noise and without the KL. Nothing in
# that loss says where the codes $\boldsymbol\mu_\phi(\mathbf x)$ should lie, so their distribution
# is whatever training happens to produce, and there is no density from which to draw new codes.
# The VAE's KL term is what ties its codes to the prior: the decoder is trained on $\mathbf z \sim
# q_\phi(\mathbf z\mid\mathbf x)$, and the KL pulls the mixture of these over the data (the
# *aggregate posterior*) towards $\mathcal N(\mathbf 0, I)$, so a draw from the prior lands where
# the decoder has been trained.
#
# We train an autoencoder of the $Z = 2$ architecture for one epoch (600 steps, the batches of
# the live run of section 4) and measure, for a sampler of codes, how often it lands in a
# **hole**: farther from every code of 10 000 training images than 99 % of the test images' codes
# are. A sampler that matched the code distribution would land in a hole about 1 % of the time.
# For the stored $Z = 2$ VAE the codes are draws from $q_\phi(\mathbf z\mid\mathbf x)$, and the
# sampler is its prior. For the autoencoder we try the prior, and, more charitably, a Gaussian
# fitted to its codes (a fair test of the shape of the codes: it is unchanged when all codes are
# shifted or scaled).
#
# **Check.** The autoencoder's hole fraction, with either sampler, exceeds the VAE's by more than
# 4 standard errors of the difference (binomial, 10 000 draws each).

# %%
torch.manual_seed(0)
ae = VAE.for_mnist(z_dim=2)  # only the encoder's mean output is used
opt_ae = torch.optim.Adam(ae.parameters(), lr=1e-3)
for x_b in epoch_batches(train_images, 0):
    loss_ae = -ae.decoder.log_prob(x_b, ae.encoder(x_b)[0]).mean()
    opt_ae.zero_grad()
    loss_ae.backward()
    opt_ae.step()
ae.eval().requires_grad_(False)

x_codes = binarize_fixed(train_images[:10_000], seed=1).unsqueeze(1)
g_codes = torch.Generator().manual_seed(14)
with torch.no_grad():
    codes = {"autoencoder": (ae.encoder(x_codes)[0], ae.encoder(x_test)[0])}
    codes["VAE"] = tuple(
        mu + torch.exp(0.5 * lv) * torch.randn(mu.shape, generator=g_codes)
        for mu, lv in (models["z2"].encode(x_codes), models["z2"].encode(x_test))
    )


def nearest_code(points: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Distance from each point [P, 2] to its nearest reference code [R, 2], in chunks."""
    return torch.cat([torch.cdist(p, reference).min(1).values for p in points.split(1000)])


prior_draws = torch.randn(10_000, 2, generator=g_codes)
ae_train = codes["autoencoder"][0]
fitted_draws = ae_train.mean(0) + prior_draws @ torch.linalg.cholesky(torch.cov(ae_train.T)).T
samplers = {
    "VAE, prior N(0, I)": ("VAE", prior_draws),
    "autoencoder, prior N(0, I)": ("autoencoder", prior_draws),
    "autoencoder, fitted Gaussian": ("autoencoder", fitted_draws),
}
holes = {}
print(
    "codes of 10 000 training images:    mean         covariance             inside the prior's 99 % disc"
)
for name, (c_train, _) in codes.items():
    m1, m2 = (round(v, 1) + 0.0 for v in c_train.mean(0).tolist())  # no "-0.0"
    c11, c12, c22 = (round(v, 1) + 0.0 for v in torch.cov(c_train.T).flatten()[[0, 1, 3]].tolist())
    inside = ((c_train**2).sum(1) < -2 * math.log(0.01)).float().mean().item()
    print(
        f"  {name:<32} ({m1:4.1f}, {m2:4.1f})   [[{c11:4.1f}, {c12:4.1f}], [{c12:4.1f}, {c22:4.1f}]]"
        f"   {inside:6.0%}"
    )
print("sampler                          draws in a hole")
for name, (model_name, draws) in samplers.items():
    c_train, c_test = codes[model_name]
    radius = torch.quantile(nearest_code(c_test, c_train), 0.99)
    in_hole = nearest_code(draws, c_train) > radius
    holes[name] = (in_hole.float().mean().item(), in_hole)
    print(f"  {name:<31}{holes[name][0]:8.0%}")
p_vae = holes["VAE, prior N(0, I)"][0]
for name in ("autoencoder, prior N(0, I)", "autoencoder, fitted Gaussian"):
    p_ae = holes[name][0]
    se = math.sqrt((p_ae * (1 - p_ae) + p_vae * (1 - p_vae)) / 10_000)
    assert p_ae - p_vae > 4 * se, name
print(
    "the autoencoder lands in holes more often than the VAE, by more than 4 s.e. with either sampler"
)

# %%
fig = plt.figure(figsize=(12, 8.4))
grid = fig.add_gridspec(2, 2, height_ratios=[1.25, 1])
circle = np.linspace(0, 2 * np.pi, 200)
r99 = math.sqrt(-2 * math.log(0.01))
for col, (name, title) in enumerate(
    (
        ("autoencoder", "Autoencoder codes (10 000 training images)"),
        ("VAE", "VAE: z ~ q(z|x) for the same images"),
    )
):
    ax = fig.add_subplot(grid[0, col])
    c_train = codes[name][0].numpy()
    for cls in range(10):
        sel = train_labels[:10_000].numpy() == cls
        ax.scatter(c_train[sel, 0], c_train[sel, 1], s=1, alpha=0.4, color=cmap(cls))
    sampler = "autoencoder, prior N(0, I)" if name == "autoencoder" else "VAE, prior N(0, I)"
    hole_pts = prior_draws[holes[sampler][1]][:300].numpy()
    ax.plot(hole_pts[:, 0], hole_pts[:, 1], "kx", ms=3, label="prior draws in a hole (300 shown)")
    ax.plot(r99 * np.cos(circle), r99 * np.sin(circle), "k--", lw=1, label="prior's 99 % disc")
    ax.set_title(title)
    ax.set_aspect("equal", adjustable="datalim")
    ax.legend(loc="upper right", fontsize=8, markerscale=2)
ax_img = fig.add_subplot(grid[1, :])
ax_img.axis("off")
inner = grid[1, :].subgridspec(3, 1)
with torch.no_grad():
    rows_img = [
        (ae.decoder.mean(prior_draws[:20]), "autoencoder's decoder at 20 draws of N(0, I)"),
        (
            ae.decoder.mean(fitted_draws[:20]),
            "autoencoder's decoder at 20 draws of the fitted Gaussian",
        ),
        (
            models["z2"].decoder.mean(prior_draws[:20]),
            "VAE's decoder at the same 20 draws of N(0, I)",
        ),
    ]
for r, (imgs, title) in enumerate(rows_img):
    image_grid(imgs[:, 0], nrow=20, ax=fig.add_subplot(inner[r]), title=title)
plt.show()

# %% [markdown]
# The autoencoder's codes (left, coloured by class as in the latent map) take a shape of their
# own: off the origin, stretched, and leaving most of the lower half of the prior's disc empty.
# Nothing in its loss asks for anything else, so neither would a longer training. Many prior
# draws fall into that empty region, and there the decoder, never trained on such codes, returns
# faint, ghostly mixtures (first row of images). A Gaussian fitted to the codes covers them
# better, but it still lands between them far more often than the VAE's prior does (the table).
# The VAE's samples of $q_\phi$ (right) fill the prior's disc, because the KL term charges for
# every departure from $\mathcal N(\mathbf 0, I)$; what remains are thin cracks between the
# classes, the prior holes that Lecture 06 measures and removes with learned priors. Its decoded
# prior draws (last row) are mostly recognisable garments.

# %% [markdown]
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
# - The VAE infers the latents but only estimates the weights (ML, or MAP with weight decay):
#   variational EM for $\mathbf z$, a point for $\theta$, hence not a fully Bayesian model.
# - A Gaussian decoder with fixed $\sigma^2$ makes the ELBO $-\frac{1}{2\sigma^2}(\text{SSE} +
#   2\sigma^2\,\mathrm{KL})$ + const, checked against `torch.distributions` and scipy: a
#   squared-error loss with KL weight $\beta$ assumes $\sigma^2 = \beta/2$, and in a linear model
#   every direction with less variance than that gets no latent unit.
# - A plain autoencoder has no distribution over its codes; prior draws fall into its empty
#   regions far more often than into the VAE's, and decode to images unlike the data. The VAE's
#   KL term is what makes its prior a usable sampler.
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
# - Probabilistic PCA at a fixed noise variance, behind the linear reading of $\beta$:
#   {cite}`tipping1999probabilistic`.
# - The benchmark architecture and evaluation by importance sampling: {cite}`burda2016importance`.
# - The Fashion-MNIST data set: {cite}`xiao2017fashion`.

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
# # Lecture 12 — Diffusion as a deep hierarchical VAE
#
# A hierarchical VAE stacks latent layers $\mathbf x \to \mathbf z_1 \to \mathbf z_2 \to\dots$ and
# learns both directions: an encoder that infers the layers and a decoder that generates them.
# A **diffusion model** is the same construction taken to an extreme. It has $T$ latent layers
# (here $T = 1000$), each with the dimension of the data; its encoder is not learned at all but
# fixed: every step shrinks the previous layer a little and adds a little Gaussian noise, until
# nothing of $\mathbf x$ is left. Only the decoder — the *reverse* process, which removes the
# noise step by step — is learned, and all of its steps share one network. Because the encoder is
# linear and Gaussian, everything the ELBO needs has a closed form: every layer given the data,
# every layer's posterior, every KL term. This lecture derives these forms, checks each one
# against an independent computation, and then trains two small diffusion models.
#
# **What you will learn**
#
# - the **forward process** $q(\mathbf z_t\mid\mathbf z_{t-1})$ and its closed-form marginal
#   $q(\mathbf z_t\mid\mathbf x)$, checked against the simulated chain — and why the noise scale
#   must be $\sqrt{\beta_t}$, not $\beta_t$;
# - the **posterior** $q(\mathbf z_{t-1}\mid\mathbf z_t,\mathbf x)$, derived and checked against
#   Gaussian conditioning of the whole chain and against regression on simulated chains;
# - the **ELBO as a sum of closed-form KL terms** and its estimate with one random step per
#   example, the estimator a diffusion model is trained with {cite:p}`sohl2015deep,ho2020denoising`;
# - on Gaussian data, where the optimal reverse model is linear: the exact ELBO for every $T$,
#   its **continuous-time limit** through the I-MMSE identity {cite:p}`guo2005mutual`, and the
#   $1/T$ approach of the ELBO to $\log p(\mathbf x)$ {cite:p}`kingma2021variational`;
# - **noise prediction**: the ELBO's weighting of the noise-prediction error against the
#   unweighted $L_{\text{simple}}$ of Ho et al.;
# - a model of a 2-D data set with a known density (ELBO against the exact entropy, samples) and
#   a small DDPM on Fashion-MNIST (samples, a bound in bits per dimension);
# - diffusion **as a hierarchical VAE**, and why its latent layers cannot collapse.
#
# **Prerequisites:** Lecture 01 (the ELBO, KL divergences), Lecture 02 (the VAE,
# reparametrization), Lecture 03 (dequantization, bits per dimension), Lecture 11 (hierarchical
# VAEs and the collapse of their top layers).
#
# **Follows:** the part on deep diffusion probabilistic models of the course's hand-written note
# on deep latent-variable models (the forward chain, its marginal, the posterior
# $q(\mathbf z_{t-1}\mid\mathbf z_t,\mathbf z_0)$, the ELBO with closed-form KL terms, training
# with a random step). The derivations and checks below are worked out independently; where the
# note's formulas carry misprints, §1 and §2 show numerically which version is right.

# %%
import math

import matplotlib.pyplot as plt
import numpy as np
import torch
from scipy import stats
from torch.distributions import Normal, kl_divergence

from dgmlib import notebook_setup, pretrained, set_threads
from dgmlib.checks import check_forward_posterior, check_marginal_sample
from dgmlib.cnf import ring_log_prob
from dgmlib.data import load_fashion_mnist, toy_2d
from dgmlib.diffusion import (
    alpha_bars,
    ddpm_sample,
    elbo_estimate,
    eps_kl_weights,
    forward_marginal,
    forward_posterior,
    gaussian_data_diffusion_limit,
    gaussian_data_elbo_terms,
    linear_betas,
    log_snr_betas,
    posterior_variances,
    snr,
)
from dgmlib.gan import mode_coverage
from dgmlib.io import load_checkpoint
from dgmlib.plot import image_grid
from dgmlib.stats import fmt, mean_se
from dgmlib.units import log_density_to_integer_units, nats_to_bits_per_dim
from dgmlib.widgets import choose, explore

notebook_setup(0)
set_threads(1)  # one thread: small tensor operations are fastest and reproducible
DT = torch.float64  # the checks run in double precision
RESULTS = pretrained.results("l12")  # settings and figures of tools/train_lecture12.py


# %% [markdown]
# ## 1. The forward process: a fixed encoder
#
# Write $\mathbf z_0 = \mathbf x$. The **forward process** is a Markov chain of $T$ Gaussian
# steps with a fixed **noise schedule** $0 < \beta_1, \dots, \beta_T < 1$:
#
# $$
# q(\mathbf z_t\mid\mathbf z_{t-1}) = \mathcal N\big(\mathbf z_t;\ \sqrt{1-\beta_t}\,
# \mathbf z_{t-1},\ \beta_t\mathbf I\big),
# \qquad\text{i.e.}\qquad
# \mathbf z_t = \sqrt{\alpha_t}\,\mathbf z_{t-1} + \sqrt{\beta_t}\,\boldsymbol\epsilon_t,
# \quad \alpha_t = 1-\beta_t,\ \boldsymbol\epsilon_t\sim\mathcal N(\mathbf 0,\mathbf I).
# $$
#
# The scale $\sqrt{\alpha_t}$ is chosen so that a unit-variance input stays at unit variance:
# $\alpha_t\cdot 1 + \beta_t = 1$. **The marginal.** Let $\bar\alpha_t = \prod_{s\le t}\alpha_s$
# ($\bar\alpha_0 = 1$). Suppose $\mathbf z_{t-1} = \sqrt{\bar\alpha_{t-1}}\,\mathbf x +
# \sqrt{1-\bar\alpha_{t-1}}\,\boldsymbol\epsilon'$ with $\boldsymbol\epsilon'$ standard normal
# (true for $t - 1 = 0$). Then $\mathbf z_t = \sqrt{\bar\alpha_t}\,\mathbf x +
# \sqrt{\alpha_t(1-\bar\alpha_{t-1})}\,\boldsymbol\epsilon' + \sqrt{\beta_t}\,
# \boldsymbol\epsilon_t$; the two independent noises add up to one Gaussian of variance
# $\alpha_t - \bar\alpha_t + 1 - \alpha_t = 1 - \bar\alpha_t$. By induction, for every $t$,
#
# $$
# q(\mathbf z_t\mid\mathbf x) = \mathcal N\big(\mathbf z_t;\ \sqrt{\bar\alpha_t}\,\mathbf x,\
# (1-\bar\alpha_t)\mathbf I\big):
# $$
#
# any layer can be sampled from $\mathbf x$ directly, without the $t$ steps before it. With Ho et
# al.'s schedule ($T = 1000$, $\beta_t$ linear from $10^{-4}$ to $0.02$) {cite:p}`ho2020denoising`,
# $\bar\alpha_T$ is tiny, so $q(\mathbf z_T\mid\mathbf x)\approx\mathcal N(\mathbf 0,\mathbf I)$
# whatever $\mathbf x$ is. The quantity that says how much of $\mathbf x$ is left in
# $\mathbf z_t$ is the **signal-to-noise ratio** $\mathrm{snr}_t = \bar\alpha_t/(1-\bar\alpha_t)$,
# which falls from $\mathrm{snr}_1 = (1-\beta_1)/\beta_1$ to nearly zero.
#
# The note writes the step as $\mathbf z_t = \sqrt{1-\beta_t}\,\mathbf z_{t-1} + \beta_t
# \boldsymbol\epsilon$, with noise scale $\beta_t$. That chain has the same mean, but its
# variance obeys $v_t = \alpha_t v_{t-1} + \beta_t^2$ instead of $v_t = \alpha_t v_{t-1} +
# \beta_t$: it is not the chain whose marginal is stated above.
#
# **Check 1: the marginal against the simulated chain.** We run $n = 100\,000$ chains from
# $z_0 = 1.5$ (one coordinate; the coordinates are independent) through all 1000 steps, with the
# noise scale $\sqrt{\beta_t}$ and, on the same noise, with the misprinted scale $\beta_t$. At
# $t \in \{1, 10, 100, 1000\}$ the sample mean and variance must agree with the closed form
# within 4.5 standard errors ($\sqrt{v/n}$ for the mean, $v\sqrt{2/(n-1)}$ for the variance of a
# Gaussian sample; a correct implementation fails one of these eight tests with probability below
# $10^{-4}$), and a Kolmogorov–Smirnov test of the first 20 000 values against
# $\mathcal N(\sqrt{\bar\alpha_t} z_0, 1-\bar\alpha_t)$ must give a p-value above $10^{-3}$ (a
# false alarm rate of $10^{-3}$ per test). The misprinted chain is compared with the stated
# marginal and with its own variance recursion.

# %%
betas = linear_betas(1000)  # Ho et al.: beta_t linear from 1e-4 to 0.02, float64 [T]
T = len(betas)
ab = alpha_bars(betas)  # [abar_0 = 1, abar_1, ..., abar_T]
n_chains, z0_value = 100_000, 1.5
shown_t = (1, 10, 100, 1000)
keep_t = sorted({*shown_t, *(t - 1 for t in (2, 10, 100)), 2})  # for §2 as well
g = torch.Generator().manual_seed(1)
z = torch.full((n_chains,), z0_value, dtype=DT)
z_typo = z.clone()
v_typo = [0.0]  # the variance recursion of the misprinted chain
kept, kept_typo = {0: z.clone()}, {}
for t in range(1, T + 1):
    eps = torch.randn(n_chains, generator=g, dtype=DT)
    beta = betas[t - 1]
    z = (1 - beta).sqrt() * z + beta.sqrt() * eps  # the forward step
    z_typo = (1 - beta).sqrt() * z_typo + beta * eps  # the note's noise scale beta_t
    v_typo.append(float((1 - beta) * v_typo[-1] + beta**2))
    if t in keep_t:
        kept[t], kept_typo[t] = z.clone(), z_typo.clone()

print(f"{'t':>5} {'mean':>8} {'closed':>8} {'z':>5}   {'var':>8} {'closed':>8} {'z':>5}   KS p")
for t in shown_t:
    mean, var = forward_marginal(torch.tensor(z0_value, dtype=DT), t, betas)
    zt = kept[t]
    z_mean = (zt.mean() - mean) / (var / n_chains).sqrt()
    z_var = (zt.var() - var) / (var * math.sqrt(2 / (n_chains - 1)))
    p_ks = stats.kstest(zt[:20_000].numpy(), "norm", args=(float(mean), float(var.sqrt()))).pvalue
    print(
        f"{t:>5} {fmt(zt.mean()):>8} {fmt(mean):>8} {float(z_mean):>5.1f}   {fmt(zt.var()):>8} "
        f"{fmt(var):>8} {float(z_var):>5.1f}   {p_ks:.3f}"
    )
    assert abs(z_mean) < 4.5 and abs(z_var) < 4.5 and p_ks > 1e-3
print(
    f"false-alarm probability of the 8 moment tests: {fmt(8 * 2 * stats.norm.sf(4.5), 2)} (< 1e-4)"
)

print("\nthe misprinted chain (noise scale beta_t):")
print(f"{'t':>5} {'var':>9} {'recursion':>10} {'stated 1 - abar_t':>18} {'z vs stated':>12}")
for t in shown_t:
    var = 1 - ab[t]
    zt = kept_typo[t]
    z_stated = (zt.var() - var) / (var * math.sqrt(2 / (n_chains - 1)))
    z_own = (zt.var() - v_typo[t]) / (v_typo[t] * math.sqrt(2 / (n_chains - 1)))
    print(f"{t:>5} {fmt(zt.var()):>9} {fmt(v_typo[t]):>10} {fmt(var):>18} {float(z_stated):>12.0f}")
    assert abs(z_own) < 4.5 and abs(z_stated) > 10  # it follows its own recursion, not the marginal
print(
    f"at t = T the misprinted chain is N({fmt(kept_typo[T].mean(), 3)}, {fmt(kept_typo[T].var(), 3)})"
    " (its noise fades with beta_t^2), not the N(0, 1) the model starts from"
)

# %% [markdown]
# The chain with the noise scale $\sqrt{\beta_t}$ matches the closed form at every step, in its
# moments and in its whole distribution. The misprinted chain follows its own variance
# recursion, and its variance stays far below $1-\bar\alpha_t$: adding noise of standard deviation
# $\beta_t\le 0.02$ while shrinking by $\sqrt{1-\beta_t}$ drives it towards a narrow Gaussian near
# zero instead of $\mathcal N(0, 1)$.
#
# ## 2. The posterior of one step: $q(\mathbf z_{t-1}\mid\mathbf z_t,\mathbf x)$
#
# The reverse process will be trained to imitate the forward chain run backwards. Run backwards,
# the forward chain is intractable on its own ($q(\mathbf z_{t-1}\mid\mathbf z_t)$ depends on the
# data distribution), but it becomes a simple Gaussian once $\mathbf x$ is known. By Bayes' rule
# and the Markov property,
#
# $$
# q(\mathbf z_{t-1}\mid\mathbf z_t,\mathbf x) = \frac{q(\mathbf z_t\mid\mathbf z_{t-1})\,
# q(\mathbf z_{t-1}\mid\mathbf x)}{q(\mathbf z_t\mid\mathbf x)}
# \ \propto\ \exp\Big(-\frac{\|\mathbf z_t-\sqrt{\alpha_t}\,\mathbf z_{t-1}\|^2}{2\beta_t}
# - \frac{\|\mathbf z_{t-1}-\sqrt{\bar\alpha_{t-1}}\,\mathbf x\|^2}{2(1-\bar\alpha_{t-1})}\Big).
# $$
#
# The exponent is quadratic in $\mathbf z_{t-1}$: the posterior is Gaussian. Its precision is the
# coefficient of $-\frac12\|\mathbf z_{t-1}\|^2$,
# $\frac{\alpha_t}{\beta_t} + \frac{1}{1-\bar\alpha_{t-1}} = \frac{\alpha_t(1-\bar\alpha_{t-1}) +
# \beta_t}{\beta_t(1-\bar\alpha_{t-1})} = \frac{1-\bar\alpha_t}{\beta_t(1-\bar\alpha_{t-1})}$, and
# its mean is the variance times the linear coefficient. So
#
# $$
# q(\mathbf z_{t-1}\mid\mathbf z_t,\mathbf x) = \mathcal N\big(\tilde{\boldsymbol\mu}_t,\
# \tilde\beta_t\mathbf I\big),\qquad
# \tilde\beta_t = \frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}\,\beta_t,\qquad
# \tilde{\boldsymbol\mu}_t = \frac{\sqrt{\bar\alpha_{t-1}}\,\beta_t}{1-\bar\alpha_t}\,\mathbf x
# + \frac{\sqrt{\alpha_t}\,(1-\bar\alpha_{t-1})}{1-\bar\alpha_t}\,\mathbf z_t .
# $$
#
# The mean is a weighted average of where $\mathbf x$ says $\mathbf z_{t-1}$ should be and where
# $\mathbf z_t$ says it should be; the variance is below $\beta_t$. (For $t = 1$, $\tilde\beta_1
# = 0$: given $\mathbf z_1$ and $\mathbf x = \mathbf z_0$ nothing is left to sample.) The note
# writes the variance with $1-\bar\alpha_{t+1}$ in the numerator instead of $1-\bar\alpha_{t-1}$.
#
# **Check 2: the posterior, two ways.** (a) Given $\mathbf x$, the chain
# $(z_1,\dots,z_T)$ is jointly Gaussian, with covariance
# $\mathrm{Cov}(z_i, z_j) = \sum_{s\le\min(i,j)} \sqrt{\bar\alpha_i\bar\alpha_j}\,
# \beta_s/\bar\alpha_s$ (write $z_t = \sqrt{\bar\alpha_t}\,x + \sum_{s\le t}
# \sqrt{\bar\alpha_t/\bar\alpha_s}\sqrt{\beta_s}\,\epsilon_s$). We condition $z_{t-1}$ on the
# **whole** future $z_t,\dots,z_T$ with the textbook Gaussian formula (a linear solve); by the
# Markov property the answer must be the formula above, which conditions on $z_t$ alone.
# Tolerance: the relative error of a linear solve is at most about the condition number times
# the float64 unit round-off; we print the condition number and allow $10^{-6}$ relative.
# (b) On the simulated chains of §1 (all started at the same $z_0$), the least-squares regression
# of $z_{t-1}$ on $z_t$ estimates the posterior's slope, intercept and variance; each must agree
# with the formula within 4.5 standard errors, and the note's variance is tested the same way.

# %%
t_future = (2, 10, 500)
idx = torch.arange(1, T + 1)
cum = torch.cumsum(betas / ab[1:], 0)  # sum_{s <= t} beta_s / abar_s
lo = torch.minimum(idx[:, None], idx[None, :]) - 1
cov = (ab[1:, None] * ab[None, 1:]).sqrt() * cum[lo]  # Cov(z_i, z_j | x), i, j = 1..T
x_val = torch.tensor(0.7, dtype=DT)
mean_chain = ab[1:].sqrt() * x_val
zt_future = mean_chain + torch.linalg.cholesky(cov) @ torch.randn(T, generator=g, dtype=DT)
print(
    f"{'t':>4} {'cond':>9} {'mean (future)':>14} {'mean (formula)':>15} {'var (future)':>13} {'var (formula)':>14}"
)
for t in t_future:
    a, f = t - 2, slice(t - 1, T)  # index of z_{t-1}; indices of z_t, ..., z_T
    S_ff = cov[f, f]
    k = torch.linalg.solve(S_ff, cov[f, a])
    m_cond = mean_chain[a] + k @ (zt_future[f] - mean_chain[f])
    v_cond = cov[a, a] - cov[a, f] @ k
    m_form, v_form = forward_posterior(x_val, zt_future[t - 1], t, betas)
    cond = torch.linalg.cond(S_ff)
    print(
        f"{t:>4} {float(cond):>9.1e} {fmt(m_cond, 6):>14} {fmt(m_form, 6):>15} {fmt(v_cond, 6):>13} "
        f"{fmt(v_form, 6):>14}"
    )
    assert float(cond) * 1.2e-16 < 1e-7  # the solve is accurate to well below the tolerance
    assert abs(m_cond - m_form) < 1e-6 * abs(m_form) and abs(v_cond - v_form) < 1e-6 * v_form
print("(a) conditioning on the whole future = the formula, relative error below 1e-6")

print(f"\n(b) regression of z_(t-1) on z_t over {n_chains} simulated chains")
print(
    f"{'t':>4} {'slope z':>8} {'icpt z':>7} {'var z':>6} {'note var z':>11}   var, formula / note"
)
for t in (2, 10, 100):
    y, xr = kept[t - 1], kept[t]
    xm, ym = xr.mean(), y.mean()
    slope = ((xr - xm) * (y - ym)).sum() / ((xr - xm) ** 2).sum()
    intercept = ym - slope * xm
    resid_var = ((y - intercept - slope * xr) ** 2).sum() / (n_chains - 2)
    c0 = ab[t - 1].sqrt() * betas[t - 1] / (1 - ab[t])  # coefficient of z_0
    ct = (1 - betas[t - 1]).sqrt() * (1 - ab[t - 1]) / (1 - ab[t])  # coefficient of z_t
    v_right = float(posterior_variances(betas)[t - 1])
    v_note = float((1 - ab[t + 1]) / (1 - ab[t]) * betas[t - 1])
    se_slope = (resid_var / ((xr - xm) ** 2).sum()).sqrt()
    se_icpt = (resid_var * (1 / n_chains + xm**2 / ((xr - xm) ** 2).sum())).sqrt()
    se_var = v_right * math.sqrt(2 / (n_chains - 2))
    zs = [
        (slope - ct) / se_slope,
        (intercept - c0 * z0_value) / se_icpt,
        (resid_var - v_right) / se_var,
        (resid_var - v_note) / (v_note * math.sqrt(2 / (n_chains - 2))),
    ]
    print(
        f"{t:>4} {float(zs[0]):>8.1f} {float(zs[1]):>7.1f} {float(zs[2]):>6.1f} {float(zs[3]):>11.0f}"
        f"   {fmt(v_right)} / {fmt(v_note)}"
    )
    assert all(abs(float(v)) < 4.5 for v in zs[:3]) and abs(float(zs[3])) > 4.5
    if t == 2:
        ratio_t2 = v_note / v_right
print(f"at t = 2 the note's variance is {fmt(ratio_t2, 3)} times the right one")

# %% [markdown]
# Conditioning on the whole future gives the same mean and variance as the formula, which
# conditions on $z_t$ only: the Markov property at work. On the simulated chains, the slope, the
# intercept and the spread around the regression line agree with the formula, while the note's
# variance (with $1-\bar\alpha_{t+1}$) is rejected at every step tested, by a wide margin where
# it matters most: at small $t$, where the ratio $(1-\bar\alpha_{t+1})/(1-\bar\alpha_{t-1})$
# is large, it makes the posterior variance several times too large (printed for $t = 2$).
#
# ## 3. The ELBO as a sum of closed-form KL terms
#
# The generative model runs the chain backwards: $p(\mathbf z_T) = \mathcal N(\mathbf 0,
# \mathbf I)$, learned Gaussian steps $p_\theta(\mathbf z_{t-1}\mid\mathbf z_t)$ for $t = T,
# \dots, 2$, and a decoder $p_\theta(\mathbf x\mid\mathbf z_1)$. The ELBO of Lecture 01 with the
# fixed encoder $q(\mathbf z_{1:T}\mid\mathbf x) = \prod_t q(\mathbf z_t\mid\mathbf z_{t-1})$ is
#
# $$
# \mathrm{ELBO}(\mathbf x) = \mathbb E_{q}\Big[\log p_\theta(\mathbf x\mid\mathbf z_1) +
# \sum_{t=2}^T\log p_\theta(\mathbf z_{t-1}\mid\mathbf z_t) + \log p(\mathbf z_T) -
# \sum_{t=1}^T \log q(\mathbf z_t\mid\mathbf z_{t-1})\Big] \le \log p_\theta(\mathbf x).
# $$
#
# Pairing each $q(\mathbf z_t\mid\mathbf z_{t-1})$ with a model term does not give KL divergences:
# the two point in opposite directions. The fix is to write the encoder backwards too. For
# $t\ge 2$, Bayes' rule and the Markov property give $q(\mathbf z_t\mid\mathbf z_{t-1}) =
# q(\mathbf z_{t-1}\mid\mathbf z_t,\mathbf x)\,q(\mathbf z_t\mid\mathbf x)/q(\mathbf z_{t-1}\mid
# \mathbf x)$; in the product over $t$ the marginals telescope to $q(\mathbf z_T\mid\mathbf x)/
# q(\mathbf z_1\mid\mathbf x)$, and with the first step $q(\mathbf z_1\mid\mathbf x)$,
#
# $$
# q(\mathbf z_{1:T}\mid\mathbf x) = q(\mathbf z_T\mid\mathbf x)\prod_{t=2}^T q(\mathbf z_{t-1}
# \mid\mathbf z_t,\mathbf x).
# $$
#
# Substituting and grouping the terms that share a variable,
#
# $$
# \mathrm{ELBO}(\mathbf x) = \underbrace{\mathbb E_{q(\mathbf z_1\mid\mathbf x)}\log
# p_\theta(\mathbf x\mid\mathbf z_1)}_{\text{reconstruction}}
# - \sum_{t=2}^T\underbrace{\mathbb E_{q(\mathbf z_t\mid\mathbf x)}\,\mathrm{KL}\big(q(\mathbf
# z_{t-1}\mid\mathbf z_t,\mathbf x)\,\|\,p_\theta(\mathbf z_{t-1}\mid\mathbf z_t)\big)}_{L_{t-1}}
# - \underbrace{\mathrm{KL}\big(q(\mathbf z_T\mid\mathbf x)\,\|\,p(\mathbf z_T)\big)}_{\text{prior}}.
# $$
#
# Every KL is between two Gaussians in $\mathbf z_{t-1}$ and has a closed form; the expectations
# over $q(\mathbf z_t\mid\mathbf x)$ need one sample of §1's marginal each. With reverse steps
# $p_\theta(\mathbf z_{t-1}\mid\mathbf z_t) = \mathcal N(\boldsymbol\mu_\theta(\mathbf z_t, t),
# \sigma_t^2\mathbf I)$ and $\sigma_t^2 = \tilde\beta_t$, $L_{t-1} = \mathbb E_q
# \|\tilde{\boldsymbol\mu}_t - \boldsymbol\mu_\theta\|^2/(2\tilde\beta_t)$. A sum of $T - 1$
# terms is too expensive to evaluate for every training example, but it is an expectation:
# with $t$ uniform on $\{2,\dots,T\}$, $(T-1)\,L_{t-1}$ is an unbiased estimate of the sum. One
# random step per example, one network evaluation: that is how diffusion models are trained,
# and how the ELBO can be estimated for any model.
#
# **A case where everything is exact.** Let the data be one-dimensional, $x\sim\mathcal N(m,
# s^2)$ (each coordinate of a Gaussian with diagonal covariance is such a case). Then $z_t$ and
# $x$ are jointly Gaussian, $\mathbb E[x\mid z_t]$ is linear in $z_t$, and the reverse model
# $p(z_{t-1}\mid z_t) = q(z_{t-1}\mid z_t, x = \mathbb E[x\mid z_t])$ with variance
# $\tilde\beta_t$ and the decoder $\mathcal N(\mathbb E[x\mid z_1], \mathrm{Var}(x\mid z_1))$ are
# the best reverse model of this form (§5 shows why). Each KL is then
# $\frac{c_t^2}{2\tilde\beta_t}(x-\mathbb E[x\mid z_t])^2$ with $c_t$ the coefficient of
# $\mathbf x$ in $\tilde{\boldsymbol\mu}_t$, a quadratic whose expectations are exact
# (`dgmlib.diffusion.gaussian_data_elbo_terms`); averaged over the data these are polynomials of
# degree 2 in $x$, so the two-point rule $\frac12[f(m - s) + f(m + s)]$ averages them exactly.
#
# **Check 3: two Monte Carlo estimates against the exact ELBO.** (a) The rewriting: on a short
# chain ($T = 5$), the ELBO's definition — the log-ratio of the model's joint and the encoder
# along simulated trajectories, every density evaluated with `torch.distributions` — against the
# exact sum of KL terms. (b) The training estimator: on Ho et al.'s schedule ($T = 1000$), one
# uniform step $t$ per example, $\log p(x\mid z_1) - (T-1)\,\mathrm{KL}_t - \mathrm{KL}_{\text{prior}}$,
# with the KL between the two Gaussians again taken from `torch.distributions`; also for
# $T = 10$, where using the weight $T$ instead of $T-1$ would be a visible bias. Each estimate
# uses 400 000 draws and must agree with the exact data-averaged ELBO within 4 standard errors.

# %%
m_data, s2_data = 0.4, 0.5


GH_NODES, GH_WEIGHTS = np.polynomial.hermite_e.hermegauss(3)


def data_mean(f):
    """E_x f(x) for x ~ N(m, s2): Gauss-Hermite with 3 nodes, exact for polynomials of degree
    up to 5 (the ELBO's terms are quadratic in x, their squares quartic)."""
    x = m_data + math.sqrt(s2_data) * torch.tensor(GH_NODES, dtype=DT)
    return (f(x) * torch.tensor(GH_WEIGHTS / GH_WEIGHTS.sum(), dtype=DT)).sum(-1)


def exact_elbo(b):
    return float(data_mean(lambda x: gaussian_data_elbo_terms(x, m_data, s2_data, b)["elbo"]))


def posterior_mean_of_x(z, t, ab_):
    """E[x | z_t] for x ~ N(m, s2): Gaussian conditioning, linear in z_t."""
    a = ab_[t]
    return m_data + a.sqrt() * s2_data / (a * s2_data + 1 - a) * (z - a.sqrt() * m_data)


def var_x_given_z1(ab_):
    return s2_data * (1 - ab_[1]) / (ab_[1] * s2_data + 1 - ab_[1])


n_mc = 400_000
gm = torch.Generator().manual_seed(3)


def draw(shape):
    return torch.randn(shape, generator=gm, dtype=DT)


# (a) the definition of the ELBO along simulated trajectories, T = 5
b5 = log_snr_betas(5, 20.0, 0.05)
ab5 = alpha_bars(b5)
x = m_data + math.sqrt(s2_data) * draw(n_mc)
zs = [x]
for t in range(1, 6):
    zs.append((1 - b5[t - 1]).sqrt() * zs[-1] + b5[t - 1].sqrt() * draw(n_mc))
log_ratio = Normal(posterior_mean_of_x(zs[1], 1, ab5), var_x_given_z1(ab5).sqrt()).log_prob(x)
log_ratio = log_ratio + Normal(0.0, 1.0).log_prob(zs[5])
for t in range(2, 6):  # the model's reverse steps
    mean_p, var_p = forward_posterior(posterior_mean_of_x(zs[t], t, ab5), zs[t], t, b5)
    log_ratio = log_ratio + Normal(mean_p, var_p.sqrt()).log_prob(zs[t - 1])
for t in range(1, 6):  # minus the encoder's steps
    log_ratio = log_ratio - Normal((1 - b5[t - 1]).sqrt() * zs[t - 1], b5[t - 1].sqrt()).log_prob(
        zs[t]
    )
est_a, se_a = mean_se(log_ratio)


# (b) the random-step estimator
def random_step_estimate(b, weight):
    ab_, T_ = alpha_bars(b), len(b)
    x = m_data + math.sqrt(s2_data) * draw(n_mc)
    z1 = ab_[1].sqrt() * x + (1 - ab_[1]).sqrt() * draw(n_mc)
    recon = Normal(posterior_mean_of_x(z1, 1, ab_), var_x_given_z1(ab_).sqrt()).log_prob(x)
    t = torch.randint(2, T_ + 1, (n_mc,), generator=gm)
    zt = ab_[t].sqrt() * x + (1 - ab_[t]).sqrt() * draw(n_mc)
    beta, ab_t, ab_prev = b[t - 1], ab_[t], ab_[t - 1]

    def post_mean(x0):  # the posterior mean of §2, for a tensor of steps t
        return (ab_prev.sqrt() * beta * x0 + (1 - beta).sqrt() * (1 - ab_prev) * zt) / (1 - ab_t)

    sd = ((1 - ab_prev) / (1 - ab_t) * beta).sqrt()
    kl = kl_divergence(
        Normal(post_mean(x), sd), Normal(post_mean(posterior_mean_of_x(zt, t, ab_)), sd)
    )
    prior = kl_divergence(Normal(ab_[T_].sqrt() * x, (1 - ab_[T_]).sqrt()), Normal(0.0, 1.0))
    est = recon - weight(T_) * kl - prior
    return mean_se(est)


rows = [("(a) T = 5, log-ratio along trajectories", est_a, se_a, exact_elbo(b5))]
for T_ in (1000, 10):
    b = betas if T_ == 1000 else log_snr_betas(10, 1e4, 1e-4)
    est, se = random_step_estimate(b, lambda T_: T_ - 1)
    rows.append((f"(b) T = {T_}, random step, weight T - 1", est, se, exact_elbo(b)))
est_wrong, se_wrong = random_step_estimate(log_snr_betas(10, 1e4, 1e-4), lambda T_: T_)
print(f"{'':42s} {'estimate':>9} {'s.e.':>7} {'exact':>9} {'z':>6}")
for name, est, se, ex in rows:
    print(f"{name:42s} {fmt(est):>9} {fmt(se, 2):>7} {fmt(ex):>9} {(est - ex) / se:>6.1f}")
    assert abs(est - ex) < 4 * se
ex10 = exact_elbo(log_snr_betas(10, 1e4, 1e-4))
print(
    f"{'    T = 10 with the weight T instead':42s} {fmt(est_wrong):>9} {fmt(se_wrong, 2):>7} {fmt(ex10):>9} {(est_wrong - ex10) / se_wrong:>6.1f}"
)
assert abs(est_wrong - ex10) > 4 * se_wrong  # the check would catch this bias
spread = math.sqrt(
    data_mean(lambda x: gaussian_data_elbo_terms(x, m_data, s2_data, betas)["elbo"] ** 2)
    - exact_elbo(betas) ** 2
)
print(
    f"standard deviation over x of the exact ELBO (T = 1000): {fmt(spread, 3)} nats; of the "
    f"one-step estimate: {fmt(rows[1][2] * math.sqrt(n_mc), 3)} nats"
)

# %% [markdown]
# Both the definition along trajectories and the one-step estimator agree with the exact sum of
# KL terms, while weighting the random term by $T$ instead of $T - 1$ is detected at $T = 10$.
# The one-step estimate is noisier than the exact ELBO of each example (printed last): that noise
# is what one network evaluation instead of $T$ costs.
#
# ## 4. How close is the ELBO to $\log p(\mathbf x)$? The continuous-time limit
#
# The ELBO averaged over the data is $-H(p_{\text{data}})$ minus the average gap, so it is at
# most $-H$ with equality only if the model is the data distribution and the encoder its exact
# posterior. On Gaussian data the optimal reverse model lets us see what a diffusion model with
# $T$ steps loses, in closed form.
#
# **The per-step KL in terms of the SNR.** With $\mathbb E[x\mid z_t]$ in place of $x$ in the
# model's mean, $\mathrm{KL}_t = \frac{c_t^2}{2\tilde\beta_t}(x - \mathbb E[x\mid z_t])^2$, and
# $\frac{c_t^2}{\tilde\beta_t} = \frac{\bar\alpha_{t-1}\beta_t^2}{(1-\bar\alpha_t)^2}\cdot
# \frac{1-\bar\alpha_t}{(1-\bar\alpha_{t-1})\beta_t} = \frac{\bar\alpha_{t-1}\beta_t}
# {(1-\bar\alpha_t)(1-\bar\alpha_{t-1})} = \mathrm{snr}_{t-1} - \mathrm{snr}_t$ (expand
# $\frac{\bar\alpha_{t-1}}{1-\bar\alpha_{t-1}} - \frac{\bar\alpha_t}{1-\bar\alpha_t}$ over a
# common denominator). Averaged over $x$ and $z_t$, the squared error of the best estimate is the
# minimum mean squared error of estimating $x$ from $\sqrt{\bar\alpha_t}x + \sqrt{1-\bar\alpha_t}
# \epsilon$, i.e. from $x$ plus noise of variance $1/\mathrm{snr}_t$:
# $\mathrm{mmse}(u) = \frac{s^2}{1 + u s^2}$. Hence
#
# $$
# \mathbb E\,\mathrm{KL}_t = \tfrac12(\mathrm{snr}_{t-1} - \mathrm{snr}_t)\,\mathrm{mmse}(\mathrm{snr}_t),
# \qquad
# \sum_{t=2}^T \mathbb E\,\mathrm{KL}_t \;\xrightarrow{\ T\to\infty\ }\;
# \int_{\mathrm{snr}_T}^{\mathrm{snr}_1}\tfrac12\,\mathrm{mmse}(u)\,du
# = \tfrac12\log\frac{1 + \mathrm{snr}_1 s^2}{1 + \mathrm{snr}_T s^2},
# $$
#
# a Riemann sum of $\frac12\mathrm{mmse}$ over the SNR axis, evaluated at the lower end of each
# interval. The integral is the I-MMSE identity of Guo, Shamai and Verdú
# {cite:p}`guo2005mutual`: $\frac{d}{du} I(x; \sqrt u\,x + \epsilon) = \frac12\mathrm{mmse}(u)$,
# and $I = \frac12\log(1 + u s^2)$ here. Because $\mathrm{mmse}$ decreases, the sum lies above the
# integral: the discrete-time model pays an **excess** that vanishes as the steps get finer. Its
# size follows from the error of one interval, $\int_{u_t}^{u_{t-1}}\frac12(\mathrm{mmse}(u_t) -
# \mathrm{mmse}(u))\,du \approx -\frac14\mathrm{mmse}'(u_t)\,\Delta u^2$. With the log-SNR
# $\lambda$ spaced evenly by $\Delta\lambda = (\lambda_1 - \lambda_T)/(T-1)$, $\Delta u \approx
# u\,\Delta\lambda$, and summing,
#
# $$
# \text{excess} \approx \frac{\Delta\lambda}{4}\int u\,(-\mathrm{mmse}'(u))\,du
# = \frac{\lambda_1 - \lambda_T}{4(T-1)}\Big[\log(1 + u s^2) + \frac{1}{1 + us^2}\Big]_{\mathrm{snr}_T}^{\mathrm{snr}_1},
# $$
#
# a $1/T$ decay with a known constant (the next term of the expansion is smaller by a factor of
# order $\Delta\lambda$).
#
# **The other two terms.** The reconstruction term with the optimal decoder averages to
# $-\frac12\log\big(2\pi e\,\mathrm{Var}(x\mid z_1)\big) = -\frac12\log\frac{2\pi e s^2}{1 +
# \mathrm{snr}_1 s^2}$, and the average prior KL splits as $\mathbb E_x\mathrm{KL}(q(z_T\mid
# x)\,\|\,p) = I(x; z_T) + \mathrm{KL}(q(z_T)\,\|\,p)$ with $I(x;z_T) = \frac12\log(1 +
# \mathrm{snr}_T s^2)$. Adding the three, the logarithms of $1 + \mathrm{snr}_1 s^2$ and $1 +
# \mathrm{snr}_T s^2$ cancel:
#
# $$
# \mathbb E_x\,\mathrm{ELBO}_T = -H - \mathrm{KL}\big(q(z_T)\,\|\,\mathcal N(0,1)\big) - \text{excess}_T,
# \qquad H = \tfrac12\log(2\pi e s^2).
# $$
#
# In continuous time the schedule matters only through the mismatch of the last layer with the
# prior {cite:p}`kingma2021variational`; as $\mathrm{snr}_T\to 0$ that vanishes too and the ELBO
# reaches $\mathbb E\log p(x) = -H$.
#
# **Check 4.** On a schedule whose log-SNR falls linearly from $\log 10^4$ to $\log 10^{-4}$
# (`log_snr_betas`, end points fixed as $T$ grows): (a) the per-step KLs of
# `gaussian_data_elbo_terms`, averaged, equal $\frac12(\mathrm{snr}_{t-1} -
# \mathrm{snr}_t)\,\mathrm{mmse}(\mathrm{snr}_t)$ (two computations of the same numbers: relative
# tolerance $10^{-10}$); (b) the exact ELBO equals $-H - \mathrm{KL}(q(z_T)\,\|\,p) -
# \text{excess}_T$ with the excess measured against the I-MMSE integral (tolerance $10^{-10}$
# nats, float64 sums of up to $10^4$ terms); (c) $(T-1)\cdot\text{excess}_T$ approaches the
# predicted constant, within a relative error below $\Delta\lambda$.

# %%
snr_max, snr_min = 1e4, 1e-4
neg_H = -0.5 * math.log(2 * math.pi * math.e * s2_data)
limit = gaussian_data_diffusion_limit(s2_data, snr_min, snr_max)


def mmse(u):
    return s2_data / (1 + u * s2_data)


def F(u):
    return math.log(1 + u * s2_data) + 1 / (1 + u * s2_data)


span = math.log(snr_max) - math.log(snr_min)
C_pred = span / 4 * (F(snr_max) - F(snr_min))

b100 = log_snr_betas(100, snr_max, snr_min)
s100 = snr(b100)
per_step = data_mean(lambda x: gaussian_data_elbo_terms(x, m_data, s2_data, b100)["per_step"])
derived = 0.5 * (s100[:-1] - s100[1:]) * mmse(s100[1:])
rel = float(((per_step - derived).abs() / derived).max())
print("(a) T = 100: 99 per-step KLs, largest relative difference from the SNR formula below 1e-10")
assert rel < 1e-10

print(f"\nE log p(x) = -H = {fmt(neg_H, 6)} nats; I-MMSE integral = {fmt(limit, 6)} nats")
print(
    f"{'T':>6} {'sum of KLs':>11} {'excess':>10} {'(T-1) excess':>13} {'pred.':>7} {'ELBO':>9} {'-H - KL(q(z_T)||p)':>19}"
)
excesses, Ts = [], (10, 100, 1000, 10_000)
for T_ in Ts:
    b = log_snr_betas(T_, snr_max, snr_min)
    ab_ = alpha_bars(b)
    terms = {
        k: float(data_mean(lambda x, k=k, b=b: gaussian_data_elbo_terms(x, m_data, s2_data, b)[k]))
        for k in ("elbo", "diffusion")
    }
    excess = terms["diffusion"] - limit
    # the marginal q(z_T) = N(sqrt(abar_T) m, abar_T s2 + 1 - abar_T) against N(0, 1)
    mT, vT = ab_[T_].sqrt() * m_data, ab_[T_] * s2_data + 1 - ab_[T_]
    kl_marg = float(kl_divergence(Normal(mT, vT.sqrt()), Normal(0.0, 1.0)))
    rhs = neg_H - kl_marg - excess
    dlam = span / (T_ - 1)
    print(
        f"{T_:>6} {fmt(terms['diffusion'], 6):>11} {fmt(excess, 4):>10} {fmt((T_ - 1) * excess, 4):>13} "
        f"{fmt(C_pred, 4):>7} {fmt(terms['elbo'], 6):>9} {fmt(rhs, 6):>19}"
    )
    assert abs(terms["elbo"] - rhs) < 1e-10  # (b)
    assert excess > 0 and terms["elbo"] < neg_H
    if T_ >= 100:
        assert abs((T_ - 1) * excess / C_pred - 1) < dlam  # (c)
    excesses.append(excess)
print(
    f"KL(q(z_T) || p) at snr_T = 1e-4: {fmt(kl_marg, 3)} nats; excess ratios per decade of T: "
    f"{[fmt(a / b, 3) for a, b in zip(excesses, excesses[1:], strict=False)]}"
)

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
u_grid = np.logspace(-4, 4, 400)
axes[0].semilogx(
    u_grid,
    0.5 * s2_data / (1 + u_grid * s2_data),
    color="k",
    label=r"$\frac{1}{2}\,\mathrm{mmse}(u)$",
)
s10 = snr(log_snr_betas(10, snr_max, snr_min)).numpy()
axes[0].bar(
    s10[1:],
    0.5 * s2_data / (1 + s10[1:] * s2_data),
    width=s10[:-1] - s10[1:],
    align="edge",
    alpha=0.35,
    color="C0",
    edgecolor="C0",
    label="T = 10: the per-step KLs",
)
axes[0].set_xlabel("signal-to-noise ratio u")
axes[0].set_ylabel("nats per unit of SNR")
axes[0].set_title("The diffusion term is a Riemann sum of mmse / 2")
axes[0].legend()
Ts_np = np.array(Ts, dtype=float)
axes[1].loglog(Ts_np, excesses, "o-", label="excess of the sum over the integral")
axes[1].loglog(Ts_np, C_pred / (Ts_np - 1), "k--", label=r"predicted $C/(T-1)$")
axes[1].set_xlabel("number of steps T")
axes[1].set_ylabel("nats")
axes[1].set_title("The ELBO approaches E log p(x) like 1/T")
axes[1].legend()
plt.show()

# %% [markdown]
# On a logarithmic SNR axis the bars of the $T = 10$ model overshoot the curve by a lot; with
# $10^4$ steps the excess is small, and it falls by the factor 10 per decade of $T$ that the
# Riemann-sum argument predicts, with the predicted constant. What is left at large $T$ is the
# mismatch of $q(z_T)$ with the prior, tiny at $\mathrm{snr}_T = 10^{-4}$. A learned model loses
# more: its estimate of $\mathbb E[\mathbf x\mid\mathbf z_t]$ is not the best one, and each
# step's KL grows by the extra squared error, weighted as in the next section.
#
# ## 5. Noise prediction, and how the ELBO weights it
#
# A network could predict $\boldsymbol\mu_\theta$ directly, or a guess $\hat{\mathbf x}_\theta
# (\mathbf z_t, t)$ of the data to put into $\tilde{\boldsymbol\mu}_t$. Ho et al. predict the
# **noise** instead {cite:p}`ho2020denoising`: since $\mathbf z_t = \sqrt{\bar\alpha_t}\mathbf x
# + \sqrt{1-\bar\alpha_t}\boldsymbol\epsilon$, a guess $\hat{\boldsymbol\epsilon} =
# \boldsymbol\epsilon_\theta(\mathbf z_t, t)$ gives $\hat{\mathbf x} = (\mathbf z_t -
# \sqrt{1-\bar\alpha_t}\hat{\boldsymbol\epsilon})/\sqrt{\bar\alpha_t}$, and substituting into
# $\tilde{\boldsymbol\mu}_t$,
#
# $$
# \boldsymbol\mu_\theta(\mathbf z_t, t) = \frac{1}{\sqrt{\alpha_t}}\Big(\mathbf z_t -
# \frac{\beta_t}{\sqrt{1-\bar\alpha_t}}\,\hat{\boldsymbol\epsilon}\Big),\qquad
# \tilde{\boldsymbol\mu}_t - \boldsymbol\mu_\theta = \frac{\beta_t}{\sqrt{\alpha_t(1-\bar\alpha_t)}}
# \big(\hat{\boldsymbol\epsilon} - \boldsymbol\epsilon\big).
# $$
#
# With reverse variance $\sigma_t^2$, the KL of step $t$ (the part that depends on the network) is
# therefore
#
# $$
# \mathrm{KL}_t = w_t\,\|\boldsymbol\epsilon - \hat{\boldsymbol\epsilon}\|^2,\qquad
# w_t = \frac{\beta_t^2}{2\sigma_t^2\,\alpha_t\,(1-\bar\alpha_t)}
# \ \overset{\sigma_t^2 = \tilde\beta_t}{=}\ \frac12\Big(\frac{\mathrm{snr}_{t-1}}{\mathrm{snr}_t}
# - 1\Big),
# $$
#
# the last form by §4's $c_t^2/\tilde\beta_t = \mathrm{snr}_{t-1} - \mathrm{snr}_t$ and
# $\|\mathbf x - \hat{\mathbf x}\|^2 = \|\boldsymbol\epsilon - \hat{\boldsymbol\epsilon}\|^2/
# \mathrm{snr}_t$. Also $\mathrm{KL}_t = \frac12(\mathrm{snr}_{t-1} - \mathrm{snr}_t)\|\mathbf x -
# \hat{\mathbf x}\|^2$, minimised by $\hat{\mathbf x} = \mathbb E[\mathbf x\mid\mathbf z_t]$ —
# why §3's reverse model was the best one. Ho et al. found that dropping the weights,
# $L_{\text{simple}} = \mathbb E_{t,\mathbf x,\boldsymbol\epsilon}\|\boldsymbol\epsilon -
# \boldsymbol\epsilon_\theta(\mathbf z_t, t)\|^2$ with $t$ uniform, gives better samples.
# $L_{\text{simple}}$ is the ELBO reweighted by $1/w_t$.
#
# **Check 5: the weight against the KL of two Gaussians.** For random $\mathbf x$,
# $\boldsymbol\epsilon$, $\hat{\boldsymbol\epsilon}$ (7 coordinates) and several $t$, the KL
# between $q(\mathbf z_{t-1}\mid\mathbf z_t,\mathbf x)$ and $\mathcal N(\boldsymbol\mu_\theta,
# \tilde\beta_t\mathbf I)$, from `torch.distributions` with the means of §2 at $\mathbf x$ and
# at $\hat{\mathbf x}$, equals $w_t\|\boldsymbol\epsilon - \hat{\boldsymbol\epsilon}\|^2$ with
# $w_t$ from `eps_kl_weights`, and $w_t$ equals its SNR form (relative tolerance $10^{-9}$:
# float64 with divisions by $1-\bar\alpha_t$, which is $10^{-4}$ at $t = 1$).

# %%
w_post = eps_kl_weights(betas)  # sigma_t^2 = beta~_t (entry t = 1: the decoder, sigma_1^2 = beta_1)
s_all = torch.cat([torch.tensor([math.inf], dtype=DT), snr(betas)])
worst = 0.0
for t in (2, 3, 10, 100, 500, 1000):
    xv, e, e_hat = draw(7), draw(7), draw(7)
    zt = ab[t].sqrt() * xv + (1 - ab[t]).sqrt() * e
    x_hat = (zt - (1 - ab[t]).sqrt() * e_hat) / ab[t].sqrt()
    mq, v = forward_posterior(xv, zt, t, betas)
    mp, _ = forward_posterior(x_hat, zt, t, betas)
    kl = kl_divergence(Normal(mq, v.sqrt()), Normal(mp, v.sqrt())).sum()
    by_weight = w_post[t - 1] * (e - e_hat).square().sum()
    snr_form = 0.5 * (s_all[t - 1] / s_all[t] - 1)
    worst = max(
        worst,
        float((kl - by_weight).abs() / kl),
        float((w_post[t - 1] - snr_form).abs() / snr_form),
    )
assert worst < 1e-9
print(
    "KL from torch.distributions = w_t ||eps - eps_hat||^2 = its SNR form, relative error below 1e-9"
)
sigma_beta = betas**2 / (
    2 * betas * (1 - betas) * (1 - ab[1:])
)  # the same weight with sigma_t^2 = beta_t
for t in (2, 10, 100, 1000):
    print(
        f"t = {t:>4}: w_t = {fmt(w_post[t - 1], 3):>8} (sigma^2 = beta~_t), {fmt(sigma_beta[t - 1], 3):>8} (sigma^2 = beta_t)"
    )
print(
    f"w_2 / w_1000 = {fmt(w_post[1] / w_post[-1], 3)}: L_simple gives step 1000 that much more weight, relative to step 2, than the ELBO does"
)
t_min = int(w_post[1:].argmin()) + 2
print(
    f"beyond t = 100: smallest w_t = {fmt(w_post[t_min - 1], 3)} at t = {t_min}, "
    f"w_1000 / w_min = {fmt(w_post[-1] / w_post[t_min - 1], 3)}"
)

fig, ax = plt.subplots(figsize=(6.4, 3.6))
tt = np.arange(2, T + 1)
ax.semilogy(tt, w_post[1:].numpy(), label=r"ELBO, $\sigma_t^2 = \tilde\beta_t$")
ax.semilogy(tt, sigma_beta[1:].numpy(), "--", label=r"ELBO, $\sigma_t^2 = \beta_t$")
ax.axhline(
    float(w_post[1:].mean()),
    color="k",
    lw=1,
    label=r"$L_{\mathrm{simple}}$ (flat), at the mean weight",
)
ax.set_xlabel("step t")
ax.set_ylabel(r"weight $w_t$ of $\|\epsilon - \hat\epsilon\|^2$")
ax.set_title("The ELBO weights the noise error of small t most")
ax.legend()
plt.show()

# %% [markdown]
# With Ho et al.'s schedule the ELBO's weight falls steeply over the first steps (the ratio
# $w_2/w_{1000}$ is printed) and beyond $t \approx 100$ varies only by a factor of about two,
# with a shallow minimum in the middle of the chain. The first steps remove
# noise that is barely visible; the ELBO counts
# them heavily because a density must get every fine detail right, while $L_{\text{simple}}$
# spends the network's capacity on the large-$t$ steps that shape the image. The two choices of
# $\sigma_t^2$ differ only for small $t$, where $\tilde\beta_t < \beta_t$.
#
# ## 6. A trained model on a 2-D data set with a known density
#
# **Data.** `dgmlib.data.toy_2d("ring", n)` draws a label $k$ uniformly from $\{0,\dots,7\}$ and
# returns $\mathbf c_k + \sigma\boldsymbol\epsilon$ with $\mathbf c_k = 2(\cos\frac{2\pi k}8,
# \sin\frac{2\pi k}8)$ and $\sigma = 0.05$ (read from its code; checked below). Its density is the
# mixture $p(\mathbf x) = \frac18\sum_k\mathcal N(\mathbf x;\mathbf c_k,\sigma^2\mathbf I)$ and its
# entropy $H = -\mathbb E\log p(\mathbf x)$ is a lower bound on the cross-entropy
# $-\mathbb E\log p_\theta(\mathbf x)$ of any model, hence on any model's $-\mathrm{ELBO}$.
# Neighbouring centres are $4\sin(\pi/8)$ apart, about 31 standard deviations, so the components
# barely overlap and $H \approx \log 8 + \log(2\pi e\sigma^2)$ (each point is almost surely
# recognised as coming from its own component). We estimate $H$ by Monte Carlo from the exact
# density and compare with that approximation.
#
# **The best model of the diffusion family.** For this mixture $\mathbb E[\mathbf x\mid\mathbf
# z_t]$ is available in closed form: $\mathbf z_t$ given $k$ is
# $\mathcal N(\sqrt{\bar\alpha_t}\mathbf c_k, v_t\mathbf I)$ with $v_t = \bar\alpha_t\sigma^2 +
# 1 - \bar\alpha_t$, the posterior over components is the softmax of those Gaussian
# log-densities, and within component $k$, $\mathbb E[\mathbf x\mid\mathbf z_t, k] = \mathbf c_k
# + \frac{\sqrt{\bar\alpha_t}\sigma^2}{v_t}(\mathbf z_t - \sqrt{\bar\alpha_t}\mathbf c_k)$. As a
# noise predictor this is the **optimal** network: by §5 no network can have a larger ELBO with
# the same variances $\tilde\beta_t$ and decoder variance. So we can say how far a trained network
# is from the best it could be, and how far the best is from $-H$.
#
# **The models.** `python tools/train_lecture12.py --part toy` (a few minutes on one CPU thread)
# trained three copies of the same MLP (`MLPDenoiser`: 3 hidden layers of 128 SiLU units, the
# step's sinusoidal embedding added to each) on fresh ring samples, on Ho et al.'s schedule, with
# three objectives: $L_{\text{simple}}$; the ELBO's weighting $T w_t\|\boldsymbol\epsilon -
# \hat{\boldsymbol\epsilon}\|^2$ with a uniform step; and the same ELBO estimated by drawing the
# step with probability $\propto w_t$ (an importance-sampled estimate of the same objective whose
# terms all have weight $\sum_s w_s$). It evaluated each model's ELBO on 4000 fresh points with
# every step's KL (`elbo_estimate(..., every_step=True)`, decoder variance $\beta_1$) and stored
# it.
#
# **Check 6.** (a) Per-component means and standard deviations of 80 000 ring samples match
# $\mathbf c_k$ and $\sigma$ within 4.5 standard errors. (b) The Monte Carlo entropy agrees with
# the separated-mode approximation within 4 standard errors. (c) For each stored model, our own
# estimate on 20 000 other points, with one step per point drawn with probability proportional
# to the optimal network's mean KL at that step (importance sampling, which cuts the standard
# error about tenfold), agrees with the stored all-steps ELBO within 4 combined standard errors:
# two independent unbiased estimates of the same number. (d) No network can have a larger ELBO
# than the optimal one, and no model a larger ELBO than $\mathbb E\log p(\mathbf x)$: on the same
# points, steps and noise (common random numbers, so that the differences have small standard
# errors) each difference must be below 4 of its standard errors; the printed $z$ say by how
# much they are below zero.

# %%
RING_SIGMA, RING_RADIUS = 0.05, 2.0
angles = torch.arange(8, dtype=DT) * (2 * math.pi / 8)
centres = RING_RADIUS * torch.stack([angles.cos(), angles.sin()], 1)  # [8, 2]


# (a) the stated parameters
x_ring, lab_ring = toy_2d("ring", 80_000, seed=99)
x_ring = x_ring.double()
z_max = 0.0
for k in range(8):
    pts = x_ring[lab_ring == k]
    n_k = len(pts)
    z_mean = (pts.mean(0) - centres[k]) / (RING_SIGMA / math.sqrt(n_k))
    z_sd = (pts.std(0) - RING_SIGMA) / (RING_SIGMA / math.sqrt(2 * (n_k - 1)))
    z_max = max(z_max, float(z_mean.abs().max()), float(z_sd.abs().max()))
gap_c = float((centres[0] - centres[1]).norm())
print(
    f"neighbouring centres are {fmt(gap_c, 4)} apart, {fmt(gap_c / RING_SIGMA, 3)} standard deviations"
)
print(f"(a) 8 components: largest |z| of their means and standard deviations: {z_max:.1f} (< 4.5)")
assert z_max < 4.5

# (b) the entropy by Monte Carlo from the exact density
# the exact density: 8 Gaussians N(c_k, sigma^2 I) of weight 1/8 (dgmlib.cnf.ring_log_prob)
lp = ring_log_prob(toy_2d("ring", 200_000, seed=98)[0].double(), RING_SIGMA)
H_mc, H_se = mean_se(-lp)
H_sep = math.log(8) + math.log(2 * math.pi * math.e * RING_SIGMA**2)
print(
    f"(b) entropy H: Monte Carlo {fmt(H_mc, 5)} +- {fmt(H_se, 2)} nats; "
    f"log 8 + log(2 pi e sigma^2) = {fmt(H_sep, 5)} (z = {(H_mc - H_sep) / H_se:.1f})"
)
assert abs(H_mc - H_sep) < 4 * H_se

# (c) the stored models, and our own one-step estimates on other points
toy_settings = RESULTS["settings"]["toy"]
toy_betas = linear_betas(RESULTS["settings"]["T"])
toy_ab = alpha_bars(toy_betas)
VARIANTS = {"simple": "L_simple", "elbo": "ELBO, uniform t", "elbo_is": "ELBO, t ~ w_t"}
toy = {name: RESULTS["models"][f"ring_{name}"]["test"] for name in VARIANTS}  # stored figures
# the trained models by name (rebuilt from their specs, SHA-256 verified), in double precision
toy_models = {name: pretrained.load(f"l12_ring_{name}").double() for name in VARIANTS}


def optimal_eps(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The noise prediction of the optimal network for the ring: from E[x | z_t] in closed form."""
    a = toy_ab[t].to(z.dtype)[:, None]
    v = a * RING_SIGMA**2 + 1 - a  # variance of z_t given the component
    mu_k = a.sqrt()[:, :, None] * centres[None]  # [B, 1, 1] * [1, 8, 2]: E[z_t | k]
    resp = torch.softmax(-0.5 * (z[:, None, :] - mu_k).square().sum(-1) / v, 1)  # p(k | z_t)
    gain = (a.sqrt() * RING_SIGMA**2 / v)[:, :, None]
    x_mean = (resp[:, :, None] * (centres[None] + gain * (z[:, None, :] - mu_k))).sum(1)
    return (z - a.sqrt() * x_mean) / (1 - a).sqrt()


# the optimal network with every step's KL, on the points the script evaluated the models on
eval_pts = toy_2d("ring", toy_settings["eval_points"], seed=toy_settings["eval_seed"])[0].double()
opt_full = elbo_estimate(
    optimal_eps, eval_pts, toy_betas, generator=torch.Generator().manual_seed(6), every_step=True
)
opt_per_step = opt_full["per_step"].mean(1)  # [T - 1]
proposal_toy = opt_per_step / opt_per_step.sum()  # for importance sampling of the step

x_eval = toy_2d("ring", 20_000, seed=97)[0].double()
nets = {**{name: m.ema for name, m in toy_models.items()}, "optimal": optimal_eps}
one_step = {}
for name, net in nets.items():  # the same generator seed: the same steps and noise for every net
    one_step[name] = elbo_estimate(
        net, x_eval, toy_betas, generator=torch.Generator().manual_seed(5), t_probs=proposal_toy
    )["elbo"]
print(f"(c) ELBO in nats: {'stored, all steps':>22} {'ours, one step':>18} {'z':>5}")
for name, label in VARIANTS.items():
    r = toy[name]
    mine, se = mean_se(one_step[name])
    zc = (mine - r["elbo"]) / math.hypot(se, r["elbo_se"])
    print(
        f"    {label:<15} {fmt(r['elbo'], 3):>9} +- {fmt(r['elbo_se'], 2):<6} {fmt(mine, 3):>9} +- "
        f"{fmt(se, 2):<6} {zc:>5.1f}"
    )
    assert abs(zc) < 4

uniform = elbo_estimate(
    nets["simple"], x_eval, toy_betas, generator=torch.Generator().manual_seed(5)
)
print(
    f"    standard error with a uniform step instead (L_simple): "
    f"{fmt(mean_se(uniform['elbo'])[1], 2)}"
)

# (d) paired differences, common random numbers
print("\n(d) paired differences (nats):")
pairs = [(f"{VARIANTS[n]} - optimal", one_step[n] - one_step["optimal"]) for n in VARIANTS]
pairs.append(
    ("optimal (all steps) - log p(x)", opt_full["elbo"] - ring_log_prob(eval_pts, RING_SIGMA))
)
for label, d in pairs:
    mean_d, se_d = mean_se(d)
    print(f"    {label:<31} {fmt(mean_d, 3):>8} +- {fmt(se_d, 2):<7} (z = {mean_d / se_d:.1f})")
    assert mean_d < 4 * se_d  # no network may beat the optimal one, and no model the data
frac = opt_per_step.cumsum(0) / opt_per_step.sum()
print(
    f"share of the optimal network's diffusion term spent in steps 2..10: {fmt(frac[8], 2)}, "
    f"in steps 2..100: {fmt(frac[98], 2)}"
)
print(
    f"\n-H = {fmt(-H_mc, 4)} nats; ELBO of the optimal network: {fmt(opt_full['elbo'].mean(), 3)} "
    f"(reconstruction {fmt(opt_full['reconstruction'].mean(), 4)}, diffusion "
    f"{fmt(opt_full['diffusion'].mean(), 4)}, prior {fmt(opt_full['prior'].mean(), 2)})"
)

# %%
g_samp = torch.Generator().manual_seed(21)
n_samp = 1000
samples = {}
for name, net in nets.items():
    g_samp.manual_seed(21)  # the same noise for every model
    samples[name], _ = ddpm_sample(net, (n_samp, 2), toy_betas, generator=g_samp, dtype=DT)
fresh = toy_2d("ring", n_samp, seed=96)[0].double()
print(f"{'':22s} modes covered   within 3 sigma of a centre   samples per mode")
for name, pts in {"fresh data": fresh, **samples}.items():
    cov_ = mode_coverage(pts, centres, RING_SIGMA)
    dist = torch.cdist(pts, centres).min(1).values
    margin = float((dist - 3 * RING_SIGMA).abs().min())
    assert margin > 1e-9  # no count can change by round-off
    label = VARIANTS.get(name, name)
    print(
        f"{label:22s} {cov_.modes:>7} of 8   {cov_.high_quality:>18.3f}         {cov_.counts.tolist()}"
    )
print(f"expected fraction for the data: 1 - exp(-9/2) = {1 - math.exp(-4.5):.4f}")

fig, axes = plt.subplots(1, 5, figsize=(15, 3.2), sharex=True, sharey=True)
for ax, (name, pts) in zip(axes, {"data": fresh, **samples}.items(), strict=True):
    ax.scatter(pts[:, 0].numpy(), pts[:, 1].numpy(), s=2, alpha=0.5)
    ax.set_title(VARIANTS.get(name, name if name != "optimal" else "optimal network"))
    ax.set_aspect("equal")
axes[0].set_xlim(-2.6, 2.6)
axes[0].set_ylim(-2.6, 2.6)
fig.suptitle(f"{n_samp} points of the ring and {n_samp} samples of each model (1000 reverse steps)")
plt.show()

fig, ax = plt.subplots(figsize=(7, 3.6))
tt = np.arange(2, len(toy_betas) + 1)
for name, label in VARIANTS.items():
    ax.loglog(tt, toy[name]["kl_per_step"], label=label, lw=1)
ax.loglog(tt, opt_per_step.numpy(), "k", lw=1.5, label="optimal network")
ax.set_xlabel("step t")
ax.set_ylabel("mean KL of step t (nats)")
ax.set_title("Where the ELBO's nats are spent: the KL of each step")
ax.legend()
plt.show()

# %% [markdown]
# All three networks cover the eight modes. The orderings of (d) hold by wide margins, and they
# separate what is lost where. The optimal network's ELBO is still below $\mathbb E\log
# p(\mathbf x) = -H$ by the amount printed in (d): that part of the gap belongs to the model family
# — 1000 discrete steps with fixed variances — and no training can close it (§4 showed the same
# discretization loss on Gaussian data; for the ring, whose modes are narrow, it is larger). The
# trained networks lose a further, smaller amount by not being the optimal denoiser. Training on
# the ELBO's own weighting with a uniform step gives the lowest ELBO of the three and visibly
# more samples off the modes: its objective is the right one, but each step's error enters with a
# weight up to $T w_2$, and the gradient estimate is dominated by the noisy first steps. Drawing
# the step in proportion to $w_t$ estimates the same objective with equal weights, and that
# model's ELBO and samples are on a par with those of $L_{\text{simple}}$. The per-step curves
# show where the nats go: half of the optimal network's diffusion term is spent in steps 2 to
# 10 (printed), where the network must resolve the fine structure of the narrow modes.
#
# ## 7. A small DDPM on Fashion-MNIST
#
# **Data and the bound in bits per dimension.** A Gaussian diffusion model is a density on
# $\mathbb R^D$, so we fit it to **dequantized** images, as in Lecture 03: an 8-bit image $\mathbf
# x\in\{0,\dots,255\}^D$ becomes $\mathbf x + \mathbf u$, $\mathbf u\sim U[0,1)^D$, drawn afresh
# every epoch, and is scaled to $\mathbf z_0 = (\mathbf x+\mathbf u)/128 - 1\in[-1,1)^D$. By the
# change of variables $\log p(\mathbf x + \mathbf u) = \log p(\mathbf z_0) - D\log 128$, and by
# Lecture 03's Jensen argument $\mathbb E_{\mathbf u}\log p(\mathbf x+\mathbf u)\le\log
# P(\mathbf x)$. So
#
# $$
# \text{bpd}(\mathbf x) \;\le\; \frac{-\,\mathbb E_{\mathbf u}\,\mathrm{ELBO}(\mathbf z_0)}{D\log 2}
# + \log_2 128,
# $$
#
# an upper bound on the model's discrete bits per dimension ($D = 784$), estimated without bias
# by one random step and one dequantization per draw.
#
# **The model.** `python tools/train_lecture12.py --part fmnist` trained a small U-Net
# (`UNetDenoiser(c1=32, c2=64)`: the image rearranged into 4 channels of $14\times 14$, residual
# blocks at $14\times14$ and $7\times7$, about 0.3 million parameters) on the 60 000 training
# images with $L_{\text{simple}}$, Ho et al.'s schedule and an exponential moving average of the
# weights, for the epochs printed below (Adam, a warm-up and a cosine decay of the learning rate),
# on one CPU thread in about half an hour of CPU time. The decoder's variance $\sigma_1^2$ was then fitted on training images (the
# mean squared error of $\hat{\mathbf x}(\mathbf z_1)$ per dimension, its maximum-likelihood
# value), and the bound was estimated on all 10 000 test images with four draws each; the script
# also stored the KL of each step on a grid of steps, and 64 samples.
#
# **Check 7.** We recompute the bound on 500 randomly chosen test images with an estimator of
# our own: the step drawn from a proposal proportional to the stored per-step KL curve
# (importance sampling; unbiased for any proposal, with less variance when it follows the terms).
# It must agree with the stored value within 4 combined standard errors (conservative: the 500
# images are part of the 10 000). The conversion to bits per dimension is checked against
# `dgmlib.dequantization` (a sanity line: two writings of the same formula).

# %%
fm = RESULTS["models"]["fmnist"]
fm_settings = RESULTS["settings"]["fmnist"]
fm_model = pretrained.load("l12_fmnist")
fm_betas = fm_model.betas
D_IMG, LEVELS = 784, 256
test_images, test_labels = load_fashion_mnist("test")
print(
    f"model: {fm['n_params']} parameters, {fm_settings['epochs']} epochs = {fm['steps']} steps of "
    f"batches of {fm_settings['batch_size']}; decoder variance sigma_1^2 = {fmt(fm['decoder_var'], 3)} "
    f"(beta_1 = {fmt(fm_betas[0], 3)})"
)


def to_bpd(elbo_z0: torch.Tensor) -> torch.Tensor:
    """Bits per dimension of the 8-bit image from the ELBO of z_0 = (x + u) / 128 - 1."""
    return -elbo_z0 / (D_IMG * math.log(2)) + math.log2(128)


# the proposal over t = 2..T: the stored mean KL per step, interpolated in log-log
curve = fm["step_kl_curve"]
t_grid = torch.tensor([r["t"] for r in curve], dtype=DT)
kl_grid = torch.tensor([r["kl"] for r in curve], dtype=DT)
t_all = torch.arange(2, len(fm_betas) + 1, dtype=DT)
proposal = torch.from_numpy(
    np.exp(np.interp(np.log(t_all.numpy()), np.log(t_grid.numpy()), np.log(kl_grid.numpy())))
)
proposal = proposal / proposal.sum()

sub = torch.randperm(len(test_images), generator=torch.Generator().manual_seed(31))[:500]
g_fm = torch.Generator().manual_seed(32)
y = (test_images[sub].double() + torch.rand(500, 28, 28, generator=g_fm, dtype=DT)) / 128 - 1
z0_sub = y.float().reshape(500, 1, 28, 28)
with torch.no_grad():
    est = elbo_estimate(
        fm_model.ema,
        z0_sub,
        fm_betas,
        decoder_var=fm["decoder_var"],
        generator=g_fm,
        t_probs=proposal.float(),
    )
bpd_sub = to_bpd(est["elbo"].double())
mine, se_mine = mean_se(bpd_sub)
stored, se_stored = fm["test"]["neg_elbo_bpd"], fm["test"]["neg_elbo_bpd_se"]
z_fm = (mine - stored) / math.hypot(se_mine, se_stored)
print(
    f"test bound, stored (10000 images x {fm['test']['draws']} draws, uniform step): "
    f"{fmt(stored, 3)} +- {fmt(se_stored, 2)} bits/dim"
)
print(
    f"ours (500 images, importance-sampled step): {fmt(mine, 3)} +- {fmt(se_mine, 2)} bits/dim  (z = {z_fm:.1f})"
)
assert abs(z_fm) < 4
print(
    f"spread over images: {fmt(se_stored * math.sqrt(fm['test']['n_images']), 3)} bits/dim for the stored "
    f"mean of {fm['test']['draws']} uniform-step draws, {fmt(se_mine * math.sqrt(len(bpd_sub)), 3)} for one "
    "importance-sampled draw"
)
via_dgmlib = nats_to_bits_per_dim(
    -log_density_to_integer_units(est["elbo"].double() + D_IMG * math.log(2), D_IMG, LEVELS), D_IMG
)
assert torch.allclose(via_dgmlib, bpd_sub, rtol=1e-12, atol=0)  # sanity line: the same formula

# %% [markdown]
# **Where the bits go, and two reference points.** The bound splits into the prior KL, the
# diffusion KLs of steps $2,\dots,T$ (Ho et al.'s *rate*) and the reconstruction term (their
# *distortion*), each converted to bits per dimension. Beside them: the course's own figure on
# the same 8-bit data, the per-pixel Gaussian of Lecture 03 (each pixel an independent Gaussian
# fitted to dequantized training images; its dequantization bound has a closed form, recomputed
# here on the whole test set), and Ho et al.'s CIFAR-10 figures {cite:p}`ho2020denoising`
# (Table 1 and §4.3 of the paper: test NLL bounds of 3.70 bits/dim when trained on the true bound
# with fixed isotropic variances, FID 13.51, and 3.75 bits/dim when trained on $L_{\text{simple}}$,
# FID 3.17; the $L_{\text{simple}}$ model's bound splits into a rate of 1.78 and a distortion of
# 1.97 bits/dim). CIFAR-10 images are colour photographs with $3\times32\times32$ values, a harder
# data set than Fashion-MNIST, and their models have thousands of times more parameters and
# steps: the comparison shows orders of magnitude, not a ranking. The course's VAEs were trained
# on binarized images and report nats per image, which are not comparable with bits per dimension
# of 8-bit data.

# %%
train_images, _ = load_fashion_mnist("train")
tr = train_images.reshape(len(train_images), -1).double()
# the per-pixel Gaussian fitted to dequantized training images: mean and variance of x + u
m_pix = tr.mean(0) + 0.5
v_pix = tr.var(0) + 1 / 12
te = test_images.reshape(len(test_images), -1).double()
# E_u log N(x + u; m, v) = -((x + 1/2 - m)^2 + 1/12) / (2 v) - log(2 pi v) / 2, per pixel
bound_pix = (
    -((te + 0.5 - m_pix) ** 2 + 1 / 12) / (2 * v_pix) - 0.5 * torch.log(2 * math.pi * v_pix)
).sum(1)
bpd_pix = float(nats_to_bits_per_dim(-bound_pix.mean(), D_IMG))

ft = fm["test"]
print(
    f"{'Fashion-MNIST test set, bits/dim (upper bounds)':<58}{'total':>7}{'prior':>8}{'rate':>8}{'distortion':>11}"
)
print(
    f"{'this DDPM (T = 1000, L_simple), 10000 images':<58}{fmt(ft['neg_elbo_bpd'], 3):>7}"
    f"{fmt(ft['kl_prior_bpd'], 1):>8}{fmt(ft['kl_diffusion_bpd'], 3):>8}"
    f"{fmt(ft['neg_log_px_z1_bpd'] + math.log2(128), 3):>11}"
)
print(f"{'per-pixel Gaussian (Lecture 03), closed form, 10000 images':<58}{fmt(bpd_pix, 4):>7}")
print(f"{'uniform distribution over 256 levels':<58}{8:>7}")
HO2020 = {  # Ho et al. (2020), Table 1 and Section 4.3: CIFAR-10, test NLL bound (train), bits/dim
    "trained on L (fixed isotropic variance)": {"nll": 3.70, "train": 3.69, "fid": 13.51},
    "trained on L_simple": {
        "nll": 3.75,
        "train": 3.72,
        "fid": 3.17,
        "rate": 1.78,
        "distortion": 1.97,
    },
}
print("\nHo et al. (2020), CIFAR-10 (for scale, not comparable data):")
for name, r in HO2020.items():
    extra = f", rate {r['rate']:.2f}, distortion {r['distortion']:.2f}" if "rate" in r else ""
    print(
        f"   {name:<42} NLL <= {r['nll']:.2f} ({r['train']:.2f} train), FID {r['fid']:.2f}{extra}"
    )
print(
    f"share of the rate spent in steps 2..10 (stored per-step curve): {fmt(proposal[:9].sum(), 2)}; "
    f"KL of step 2 alone: {fmt(kl_grid[0] / (D_IMG * math.log(2)), 2)} bits/dim"
)
assert ft["neg_elbo_bpd"] < bpd_pix  # the diffusion model must beat independent pixels
parts = ("kl_prior_bpd", "kl_diffusion_bpd", "neg_log_px_z1_bpd")
recon_check = sum(ft[k] for k in parts) + math.log2(128)
# sanity line: the parts add up to the total (stored per-image terms are float32: 1e-5 bits/dim)
assert abs(recon_check - ft["neg_elbo_bpd"]) < 1e-5

# %% [markdown]
# The stored bound and our importance-sampled recomputation agree, and a single draw of our
# estimator is far less spread than the average of four uniform-step draws: most of the bound
# sits in the first few steps, which a uniform step rarely hits. The table splits the bound as
# Ho et al. do. The prior term is negligible — with this schedule $q(\mathbf z_T\mid\mathbf x)$
# is almost exactly $\mathcal N(\mathbf 0,\mathbf I)$; Ho et al. report about $10^{-5}$ bits per
# dimension for it {cite:p}`ho2020denoising`. The rest divides between the rate of the
# diffusion steps and the distortion of the decoder, with more than half of the rate spent in
# steps 2 to 10 (printed), i.e. on details at noise levels that are invisible in an image. The
# model is about three bits per dimension better than independent pixels, and, like Ho et al.'s
# models, far from the likelihoods of the best density models: its samples (below) are
# recognisable garments — shirts, trousers, shoes, bags — but many are blotchy or malformed,
# the result of about 0.3 million parameters and ten epochs on one CPU thread.

# %%
# the 64 samples the script drew, stored with the weights (the file's SHA-256 checked again)
fm_entry = pretrained.manifest()["l12_fmnist"]
fm_file = pretrained.checkpoint_dir() / fm_entry["file"]
samples_fm = load_checkpoint(fm_file, fm_entry["sha256"])[0][fm["samples"]]
fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
image_grid(
    (samples_fm[:64, 0] + 1) / 2,
    nrow=8,
    ax=axes[0],
    title="64 samples of the DDPM (1000 reverse steps)",
)
image_grid(test_images[sub[:64]].float() / 255, nrow=8, ax=axes[1], title="64 test images")
plt.show()

kl_bits = kl_grid / (D_IMG * math.log(2))
epochs_curve = [r["epoch"] for r in fm["curves"]]
fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
axes[0].loglog(t_grid.numpy(), kl_bits.numpy(), "o-", ms=3)
axes[0].set_xlabel("step t")
axes[0].set_ylabel("mean KL of step t (bits/dim)")
axes[0].set_title(f"Per-step KL on {fm_settings['curve_images']} test images")
axes[1].errorbar(
    epochs_curve,
    [r["neg_elbo_bpd"] for r in fm["curves"]],
    yerr=[2 * r["neg_elbo_bpd_se"] for r in fm["curves"]],
    fmt="o-",
    capsize=3,
)
axes[1].set_xlabel("epoch")
axes[1].set_ylabel("bits/dim (one-step estimate, 2 s.e.)")
axes[1].set_title("Test bound during training (500 images)")
plt.show()

# %% [markdown]
# **Exploration: what a step $t$ leaves of an image, and what it costs.** The slider sets the
# step $t$. The left panel shows six test images $\mathbf x$, a draw of $\mathbf z_t\sim
# q(\mathbf z_t\mid\mathbf x)$ for each (the same noise $\boldsymbol\epsilon$ at every $t$), and
# the model's guess $\hat{\mathbf x} = (\mathbf z_t - \sqrt{1-\bar\alpha_t}\,
# \hat{\boldsymbol\epsilon})/\sqrt{\bar\alpha_t}$ of the image (values outside $[-1, 1]$ clipped for
# display); the right panel marks $t$ on the stored per-step KL curve above. Move $t$ through the
# first ten steps: the noise is invisible and the guess is the image itself, yet these steps carry
# the largest KL terms, the fine detail a density must get right. After a few hundred steps the
# garment can hardly be seen in $\mathbf z_t$, yet the guess is still a blurred garment, mostly of
# the right kind: these are the steps that shape an image, where $L_{\text{simple}}$ spends its
# capacity (§5). At the last steps
# $\mathbf z_t$ is pure noise, and the guess, divided by a tiny $\sqrt{\bar\alpha_t}$, is
# meaningless — which is why sampling starts from $\mathcal N(\mathbf 0,\mathbf I)$ and not from
# a guess.

# %%
shown_steps = [1, 2, 3, 5, 10, 20, 50, 100, 200, 300, 500, 700, 900, 1000]
fm_ab = alpha_bars(fm_betas)
x_show = (test_images[sub[:6]].float() + 0.5).reshape(6, 1, 28, 28) / 128 - 1  # the cells' centres
eps_show = torch.randn(x_show.shape, generator=torch.Generator().manual_seed(33))
z_show, x_hat_show = {}, {}
with torch.no_grad():
    for t in shown_steps:
        a = fm_ab[t].float()
        z_show[t] = a.sqrt() * x_show + (1 - a).sqrt() * eps_show
        eps_hat = fm_model.ema(z_show[t], torch.full((6,), t, dtype=torch.long))
        x_hat_show[t] = (z_show[t] - (1 - a).sqrt() * eps_hat) / a.sqrt()
snr_fm = snr(fm_betas)


def draw_step(axes, t):
    """x, z_t and the guess x_hat(z_t) of six test images (left); step t on the KL curve (right)."""
    ax, ax_kl = axes
    rows = torch.cat([x_show, z_show[t], x_hat_show[t]])[:, 0]  # [18, 28, 28] in [-1, 1]
    image_grid(((rows + 1) / 2).clamp(0, 1), nrow=6, ax=ax)
    for r, label in enumerate(("$x$", "$z_t$", r"$\hat x(z_t)$")):
        ax.text(-2, 14 + 29 * r, label, ha="right", va="center", fontsize=12)
    ax.set_title(f"step t = {t}, snr_t = {float(snr_fm[t - 1]):.2g}")
    ax_kl.loglog(t_grid.numpy(), kl_bits.numpy(), "o-", ms=3, label="stored mean KL of step t")
    ax_kl.axvline(t, color="C3", lw=1.5, label=f"t = {t}")
    ax_kl.set(xlim=(0.8, 1200), ylim=(3e-6, 1), xlabel="step t", ylabel="bits/dim")
    ax_kl.set_title("what step t costs in the ELBO")
    ax_kl.legend(loc="lower left")


explore(draw_step, ncols=2, figsize=(12, 4.2), t=choose(shown_steps, 10, "step t"))

# %% [markdown]
# ## 8. Diffusion as a hierarchical VAE
#
# Put side by side, a hierarchical VAE (Lecture 11) and a diffusion model are the same kind of
# object — a Markov chain of latent layers with an ELBO that is a sum of one KL per layer — with
# opposite choices of what is learned:
#
# | | hierarchical VAE | diffusion model |
# |---|---|---|
# | latent layers | a few, usually smaller than $\mathbf x$ | $T$ (here 1000), each of the dimension of $\mathbf x$ |
# | encoder $q$ | learned, one network per layer | fixed: $\mathcal N(\sqrt{1-\beta_t}\mathbf z_{t-1}, \beta_t\mathbf I)$, no parameters |
# | top layer | learned to be close to the prior | $q(\mathbf z_T\mid\mathbf x)\approx\mathcal N(\mathbf 0,\mathbf I)$ by construction |
# | decoder | one network per layer | one network for all steps, told $t$ |
# | ELBO terms | KLs between learned distributions, by sampling | closed-form Gaussian KLs, one random layer per example |
# | what a layer knows about $\mathbf x$ | chosen by training | fixed by the schedule: $I(\mathbf x;\mathbf z_t)$ falls with $\mathrm{snr}_t$ |
#
# **Why the layers cannot collapse.** In Lecture 11 the top layer of a bottom-up hierarchy
# collapses: the ELBO is free to set $q(\mathbf z_L\mid\cdot) = p(\mathbf z_L\mid\cdot)$, making
# that layer's KL zero and the layer useless, whenever the decoder can do without it. That move
# needs a learned encoder. Here the encoder is fixed, so how much each layer knows about
# $\mathbf x$ is not the optimizer's choice: for Gaussian data $I(x; z_t) = \frac12\log(1 +
# \mathrm{snr}_t s^2)$ (printed below for the schedule of §1). The model cannot make a KL term
# vanish by ignoring a layer, because each term compares the model with a *given* posterior
# $q(\mathbf z_{t-1}\mid\mathbf z_t,\mathbf x)$: by §5 it is at least
# $\frac12(\mathrm{snr}_{t-1}-\mathrm{snr}_t)\,\mathbb E\|\mathbf x - \mathbb E[\mathbf x\mid
# \mathbf z_t]\|^2 > 0$, a quantity set by the data and the schedule. The analogue of a collapsed
# layer, a reverse step that does not use what $\mathbf z_t$ says about $\mathbf x$
# ($\hat{\mathbf x} = \mathbb E[\mathbf x]$), pays $\frac12(\mathrm{snr}_{t-1}-\mathrm{snr}_t)
# \,\mathrm{Var}(\mathbf x)$ instead, more by the factor $1 + \mathrm{snr}_t s^2$ on the Gaussian
# data of §3 (the table below, which checks that factor): where $\mathbf z_t$ knows much about
# $\mathbf x$, ignoring it is expensive, and the ELBO forces the model to use it.
# The price of a fixed encoder is depth: to keep every
# reverse step close to a Gaussian, the steps must be small and many, and generation takes $T$
# network evaluations (§4 measured how the ELBO improves as they multiply).

# %%
print(f"x ~ N({m_data}, {s2_data}), Ho et al.'s schedule; mean KLs of step t in nats")
print(
    f"{'t':>5} {'snr_t':>9} {'I(x; z_t)':>10} {'KL, optimal':>12} {'KL, x_hat = E[x]':>17} {'ratio':>9}"
)
s_ho = torch.cat([torch.tensor([math.inf], dtype=DT), snr(betas)])
for t in (2, 10, 100, 300, 600, 1000):
    s_t = float(s_ho[t])
    kl_opt = float(
        data_mean(
            lambda x, t=t: gaussian_data_elbo_terms(x, m_data, s2_data, betas)["per_step"][t - 2]
        )
    )
    # a reverse step that does not use what z_t says about x: x_hat = E[x] = m, so by §5 its KL
    # is (snr_{t-1} - snr_t) / 2 * E(x - m)^2 = (snr_{t-1} - snr_t) s2 / 2
    kl_blind = float(0.5 * (s_ho[t - 1] - s_ho[t]) * s2_data)
    assert kl_blind > kl_opt > 0
    assert abs(kl_blind / kl_opt - (1 + s_t * s2_data)) < 1e-9 * (1 + s_t * s2_data)
    print(
        f"{t:>5} {s_t:>9.3g} {0.5 * math.log(1 + s_t * s2_data):>10.4g} {kl_opt:>12.4g} "
        f"{kl_blind:>17.4g} {kl_blind / kl_opt:>9.4g}"
    )

# %% [markdown]
# ## 9. Exercises
#
# ### Exercise 1: sampling a layer directly
#
# Implement `my_marginal_sample(x0, t, betas, eps)`: given data `x0`, a step $t\in\{1,\dots,T\}$
# (a Python integer), the schedule `betas` (`betas[t - 1]` $=\beta_t$) and standard normal noise
# `eps` of the shape of `x0`, return $\mathbf z_t = \sqrt{\bar\alpha_t}\,\mathbf x_0 +
# \sqrt{1-\bar\alpha_t}\,\boldsymbol\epsilon$. Then use it to show how the ring is destroyed
# layer by layer.


# %%
def my_marginal_sample(
    x0: torch.Tensor, t: int, betas: torch.Tensor, eps: torch.Tensor
) -> torch.Tensor:
    ### BEGIN SOLUTION
    abar_t = torch.prod(1 - betas[:t])
    return abar_t.sqrt() * x0 + (1 - abar_t).sqrt() * eps
    ### END SOLUTION


check_marginal_sample(my_marginal_sample)

# %%
g_ex = torch.Generator().manual_seed(41)
fig, axes = plt.subplots(1, 5, figsize=(14, 2.9), sharex=True, sharey=True)
for ax, t in zip(axes, (1, 100, 200, 400, 1000), strict=True):
    zt = my_marginal_sample(fresh, t, betas, torch.randn(fresh.shape, generator=g_ex, dtype=DT))
    ax.scatter(zt[:, 0].numpy(), zt[:, 1].numpy(), s=2, alpha=0.5)
    ax.set_title(f"t = {t}, snr = {fmt(snr(betas)[t - 1], 2)}")
    ax.set_aspect("equal")
fig.suptitle("q(z_t) of the ring: the forward process destroys the data")
plt.show()

# %% [markdown]
# ### Exercise 2: the posterior of one step
#
# Implement `my_forward_posterior(z0, zt, t, betas)` returning the mean and variance of
# $q(\mathbf z_{t-1}\mid\mathbf z_t,\mathbf z_0)$ for $t\ge 2$ (§2): the mean has the broadcast
# shape of `z0` and `zt`, the variance is a number (a 0-d tensor). Then check with it that
# $\tilde\beta_t < \beta_t$ for every $t$ of Ho et al.'s schedule and find where the ratio
# $\tilde\beta_t/\beta_t$ is smallest.


# %%
def my_forward_posterior(z0: torch.Tensor, zt: torch.Tensor, t: int, betas: torch.Tensor):
    ### BEGIN SOLUTION
    abar = torch.cat([torch.ones(1, dtype=betas.dtype), torch.cumprod(1 - betas, 0)])
    beta, ab_t, ab_prev = betas[t - 1], abar[t], abar[t - 1]
    mean = (ab_prev.sqrt() * beta * z0 + (1 - beta).sqrt() * (1 - ab_prev) * zt) / (1 - ab_t)
    return mean, (1 - ab_prev) / (1 - ab_t) * beta
    ### END SOLUTION


check_forward_posterior(my_forward_posterior)

# %%
zero = torch.zeros(1, dtype=DT)
ratios = torch.stack(
    [my_forward_posterior(zero, zero, t, betas)[1] / betas[t - 1] for t in range(2, T + 1)]
)
assert bool((ratios < 1).all())
print(
    f"beta~_t / beta_t < 1 for all t; 1 - largest ratio = {fmt(1 - ratios.max(), 2)}, smallest ratio "
    f"{fmt(ratios.min(), 3)} at t = {int(ratios.argmin()) + 2}"
)

# %% [markdown]
# **Further exercises (no check).**
#
# 1. Repeat Check 4 with Ho et al.'s linear schedule for growing $T$ (stretching the same
#    $\beta$ range over more steps). Why does the ELBO no longer converge to a $T$-independent
#    limit? (Look at $\mathrm{snr}_1$ and $\mathrm{snr}_T$.)
# 2. Train the toy model of §6 with $T = 100$ steps instead of 1000 (use the training script's
#    functions with a shorter schedule) and compare its ELBO with the optimal network's for
#    $T = 100$. How much of the gap to $-H$ is the discretization of §4?
# 3. Replace the fixed reverse variance $\tilde\beta_t$ by $\beta_t$ in `elbo_estimate` and
#    re-evaluate the toy models: which choice gives the better ELBO, and at which steps?
#
# ## Summary
#
# - The forward process $\mathbf z_t = \sqrt{1-\beta_t}\mathbf z_{t-1} + \sqrt{\beta_t}
#   \boldsymbol\epsilon$ has the closed-form marginal $\mathcal N(\sqrt{\bar\alpha_t}\mathbf x,
#   (1-\bar\alpha_t)\mathbf I)$, checked against 100 000 simulated chains; with the noise scale
#   $\beta_t$ the chain has another, much smaller variance.
# - The posterior $q(\mathbf z_{t-1}\mid\mathbf z_t,\mathbf x)$ is Gaussian with variance
#   $\tilde\beta_t = \frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}\beta_t$, checked against
#   conditioning on the whole future of the chain and against regression on simulated chains,
#   which rejects the variance with $1-\bar\alpha_{t+1}$.
# - Writing the encoder backwards turns the ELBO into a reconstruction term, $T-1$ closed-form
#   KLs and a prior KL; one random step per example gives an unbiased estimate, checked against
#   the exact ELBO of Gaussian data, where the optimal reverse model is linear.
# - On Gaussian data the sum of KLs is a Riemann sum of $\frac12\mathrm{mmse}$ over the SNR; its
#   limit is the I-MMSE integral, the ELBO tends to $-H - \mathrm{KL}(q(\mathbf z_T)\,\|\,p)$, and
#   the excess falls like $1/T$ with a constant we derived and confirmed.
# - With noise prediction, step $t$'s KL is $w_t\|\boldsymbol\epsilon-\hat{\boldsymbol\epsilon}\|^2$
#   with $w_t = \frac12(\mathrm{snr}_{t-1}/\mathrm{snr}_t - 1)$; $L_{\text{simple}}$ drops the
#   weights.
# - On the ring, the trained models' ELBOs, the optimal network's ELBO and $-H$ are ordered as
#   they must be; sample quality was measured by modes covered and the fraction of samples near
#   a mode. A small DDPM on Fashion-MNIST gives recognisable samples and a dequantized bound in
#   bits per dimension well below that of independent pixels.
# - Diffusion is a hierarchical VAE with a fixed encoder and one latent layer per step; because
#   the encoder is fixed, every layer's information about $\mathbf x$ and every KL term's minimum
#   are set by the data and the schedule, and no layer can collapse.
#
# ## References
#
# - {cite}`sohl2015deep` — diffusion probabilistic models: the forward chain, the reverse model,
#   the ELBO with posterior KL terms.
# - {cite}`ho2020denoising` — DDPM: noise prediction, $L_{\text{simple}}$, the linear schedule,
#   the CIFAR-10 figures quoted in §7.
# - {cite}`kingma2021variational` — the ELBO in terms of the SNR, the continuous-time limit.
# - {cite}`guo2005mutual` — the I-MMSE identity.
# - {cite}`sonderby2016ladder` — ladder VAEs: top-down inference in hierarchical VAEs.
# - {cite}`vahdat2020nvae` — NVAE, a deep hierarchical VAE.
# - {cite}`theis2016note` — dequantization and bits per dimension.
# - {cite}`xiao2017fashion` — the Fashion-MNIST data set.

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
# # Lecture 09 — Adversarial variational Bayes
#
# A Gaussian encoder is the weak point of the VAE: whatever the true posterior
# $p_\theta(\mathbf z\mid\mathbf x)$ looks like, $q_\phi(\mathbf z\mid\mathbf x)$ is an ellipse,
# and the ELBO pays for the mismatch with $\mathrm{KL}(q\,\|\,p_\theta(\mathbf z\mid\mathbf x))$.
# A neural network that takes noise as an extra input, $\mathbf z = g_\phi(\mathbf x,
# \boldsymbol\varepsilon)$, can produce samples of almost any shape; what it cannot produce is
# the density $q_\phi(\mathbf z\mid\mathbf x)$, which the KL term of the ELBO needs. **Adversarial
# variational Bayes** (AVB) replaces that density by a classifier. A classifier trained to tell
# two distributions apart learns, in its logit, the logarithm of their density ratio, and the KL
# term is nothing but an average log density ratio. This lecture derives that *density-ratio
# trick*, checks it where the ratio is known, corrects a formula of the course's slides that
# uses the ratio instead of its logarithm, derives AVB and the reason why its encoder step may
# hold the classifier fixed, and verifies AVB on a model whose posterior is known exactly. It
# ends with the toy example of the AVB paper, where the exact log-likelihood and the exact ELBO
# gap of both an implicit and a Gaussian encoder can be computed on a grid.
#
# **What you will learn**
#
# - the **density-ratio trick** {cite:p}`sugiyama2012density,mohamed2016learning`: the optimal
#   logit of a balanced logistic classifier is $\log q_1/q_2$; checked on $\mathcal N(1, 1)$
#   against $\mathcal N(0, 2^2)$ by logistic regression on $[1, x, x^2]$ (coefficients against
#   the closed form, within their standard errors) and by a small neural network whose mean logit
#   estimates the KL divergence;
# - why the mean of $D/(1-D)$, the ratio itself, is **not** a KL estimate: it estimates
#   $1 + \chi^2$, derived and measured on the same pair;
# - **AVB** {cite:p}`mescheder2017adversarial`: the ELBO of an implicit encoder with the KL term
#   written as $\mathbb E_q[T^*(\mathbf x, \mathbf z)]$, the discriminator $T(\mathbf x,
#   \mathbf z)$, the two losses, and why the encoder step may treat $T$ as fixed
#   ($\mathbb E_q[\nabla_\phi T^*] = 0$, checked numerically);
# - AVB on the linear-Gaussian model $z\sim\mathcal N(0, 1)$, $x\mid z\sim\mathcal N(z, 1/4)$:
#   the learned $T$ against the closed-form $T^*$, its mean against the mutual information
#   $\tfrac12\log 5$, and AVB's ELBO against $\mathbb E\log p(x)$;
# - the paper's **toy example** (four one-hot $2\times 2$ images, a 2-D latent): AVB against a
#   Gaussian-encoder VAE with the same decoder family, $\log p(\mathbf x)$ and the ELBO gap by
#   quadrature on a grid, and the posteriors each encoder learned.
#
# **Prerequisites:** Lecture 01 (the ELBO and its gap), Lecture 02 (the VAE and the
# reparametrization trick), Lecture 08 (the optimal discriminator $D^* = p_d/(p_d + p_g)$).
#
# **Follows:** the part on adversarial variational Bayes in the course's lecture notes (lecture 7
# of the *Deep Generative Models* slides: the implicit posterior, the density-ratio trick and the
# AVB objective). The derivations and checks below are worked out independently. The models are
# trained by `python tools/train_lecture09.py` (about five minutes of CPU time on one core) and
# loaded from `data/checkpoints/`.

# %%
import math

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import torch
from scipy import integrate, stats
from sklearn.linear_model import LogisticRegression
from torch.distributions import Normal, kl_divergence
from torch.func import grad, vmap

from dgmlib import notebook_setup, pretrained
from dgmlib.avb import avb_losses, latent_grid, log_marginal_on_grid
from dgmlib.checks import check_avb_losses, check_kl_from_discriminator
from dgmlib.density_ratio import (
    fit_logistic_regression,
    gaussian_log_ratio_coefficients,
    gaussian_ratio_mean,
    kl_from_logits,
    quadratic_features,
    ratio_mean_from_logits,
)
from dgmlib.gan import kl as kl_on_grid
from dgmlib.plot import plot_history
from dgmlib.stats import fmt, mean_se
from dgmlib.widgets import explore

DEVICE = notebook_setup(0)  # every computation below is small and runs on the CPU
DT = torch.float64
RESULTS = pretrained.results("l09")  # made by tools/train_lecture09.py
SETTINGS = RESULTS["settings"]
print(f"checkpoints made by `{RESULTS['command']}`")

# %% [markdown]
# ## 1. The density-ratio trick
#
# Let $q_1$ and $q_2$ be two densities on the same space. Draw a label $y\sim\mathrm{Bernoulli}
# (1/2)$ and then $\mathbf x\sim q_1$ if $y = 1$, $\mathbf x\sim q_2$ if $y = 0$. By Bayes' rule
# the probability that a point came from $q_1$ is
#
# $$
# D^*(\mathbf x) = p(y = 1\mid\mathbf x) = \frac{\tfrac12 q_1(\mathbf x)}{\tfrac12 q_1(\mathbf x)
# + \tfrac12 q_2(\mathbf x)} = \frac{q_1(\mathbf x)}{q_1(\mathbf x) + q_2(\mathbf x)},
# \qquad\text{so}\qquad
# \frac{D^*}{1 - D^*} = \frac{q_1}{q_2},\qquad
# T^*(\mathbf x) := \log\frac{D^*(\mathbf x)}{1 - D^*(\mathbf x)} = \log q_1(\mathbf x) -
# \log q_2(\mathbf x).
# $$
#
# The equal class sizes matter: with prior odds $\pi_1/\pi_2$ the logit would be shifted by
# $\log \pi_1/\pi_2$. $D^*$ is also what a classifier learns. Writing $D = \sigma(T)$ with a logit
# $T$, the expected logistic loss
# $\ell(T) = -\mathbb E_{q_1}[\log\sigma(T)] - \mathbb E_{q_2}[\log(1 - \sigma(T))]$ is minimised
# pointwise: at each $\mathbf x$ the integrand $-q_1\log D - q_2\log(1 - D)$ has derivative
# $-q_1/D + q_2/(1 - D)$ in $D$, which vanishes at $D = D^*$ (Lecture 08). So a classifier
# trained by logistic regression on samples alone, with no density anywhere, estimates the log
# density ratio, and averages of its logit estimate divergences:
#
# $$
# \mathrm{KL}(q_1\,\|\,q_2) = \mathbb E_{q_1}\Big[\log\frac{q_1}{q_2}\Big] = \mathbb E_{q_1}[T^*].
# $$
#
# **A pair with a known ratio.** Take $p = \mathcal N(1, 1)$ as $q_1$ and $q = \mathcal N(0, 2^2)$
# as $q_2$. The log ratio is a quadratic:
#
# $$
# \log\frac{p(x)}{q(x)} = -\frac{(x - 1)^2}{2} + \frac{x^2}{8} + \log 2
# = \underbrace{\log 2 - \tfrac12}_{c_0} + \underbrace{1}_{c_1}\cdot x
# \underbrace{-\tfrac38}_{c_2}\, x^2 .
# $$
#
# Its mean under $p$, with $\mathbb E_p[x] = 1$ and $\mathbb E_p[x^2] = 1 + 1 = 2$, is
#
# $$
# \mathrm{KL}(p\,\|\,q) = \log 2 - \tfrac12 + 1 - \tfrac38\cdot 2 = \log 2 - \tfrac14 ,
# $$
#
# the same as the general formula $\log\frac{\sigma_q}{\sigma_p} + \frac{\sigma_p^2 + (\mu_p -
# \mu_q)^2}{2\sigma_q^2} - \frac12 = \log 2 + \frac{2}{8} - \frac12$.
#
# **Check 1: the closed forms.** The coefficients against `torch.distributions` (the difference
# of the two log-densities at 101 points, fitted exactly by three of them), and the KL against
# `torch.distributions.kl_divergence` and against adaptive quadrature of $p\log(p/q)$
# (`scipy.integrate.quad`); all agree to round-off (tolerance $10^{-9}$).

# %%
P_MEAN, P_STD, Q_MEAN, Q_STD = 1.0, 1.0, 0.0, 2.0  # p = N(1, 1) (label 1), q = N(0, 2^2)
p_dist = Normal(torch.tensor(P_MEAN, dtype=DT), torch.tensor(P_STD, dtype=DT))
q_dist = Normal(torch.tensor(Q_MEAN, dtype=DT), torch.tensor(Q_STD, dtype=DT))
COEF = gaussian_log_ratio_coefficients(P_MEAN, P_STD, Q_MEAN, Q_STD)  # (c0, c1, c2)
KL_PQ = math.log(2) - 0.25


def log_ratio(x: torch.Tensor) -> torch.Tensor:
    """T*(x) = log p(x) - log q(x), the closed form."""
    return COEF[0] + COEF[1] * x + COEF[2] * x * x


xs = torch.linspace(-6, 6, 101, dtype=DT)
coef_err = (log_ratio(xs) - (p_dist.log_prob(xs) - q_dist.log_prob(xs))).abs().max()
kl_torch = float(kl_divergence(p_dist, q_dist))
kl_quad, _ = integrate.quad(
    lambda x: stats.norm.pdf(x, 1, 1) * (stats.norm.logpdf(x, 1, 1) - stats.norm.logpdf(x, 0, 2)),
    -30,
    30,
    epsabs=1e-13,
    epsrel=1e-13,
    limit=200,
)
print(f"c0 = log 2 - 1/2 = {fmt(COEF[0])}, c1 = {fmt(COEF[1])}, c2 = {fmt(COEF[2])}")
print(
    f"KL(p || q) = log 2 - 1/4 = {fmt(KL_PQ)} nats; torch.distributions {fmt(kl_torch)}, "
    f"quadrature {fmt(kl_quad)}"
)
assert coef_err < 1e-9 and abs(kl_torch - KL_PQ) < 1e-9 and abs(kl_quad - KL_PQ) < 1e-9
print("coefficients and KL agree with both references to below 1e-9")

# %% [markdown]
# **Check 2: logistic regression recovers the coefficients.** Since the log ratio is exactly a
# linear function of the features $[1, x, x^2]$, logistic regression on these features is a
# correctly specified model: its maximum-likelihood coefficients converge to $(c_0, c_1, c_2)$
# and are asymptotically Gaussian, with covariance the inverse of the Hessian of the negative
# log-likelihood. We fit it by Newton's method (`dgmlib.density_ratio.fit_logistic_regression`)
# on $n = 20\,000$ samples of each distribution, compare each coefficient with its closed form
# within 3 standard errors, and compare the fit with scikit-learn's unpenalised logistic
# regression (a different solver; tolerance $10^{-4}$, above its stopping tolerance).

# %%
N_FIT = 20_000
g = torch.Generator().manual_seed(1)
x_p = P_MEAN + P_STD * torch.randn(N_FIT, generator=g, dtype=DT)
x_q = Q_MEAN + Q_STD * torch.randn(N_FIT, generator=g, dtype=DT)
features = quadratic_features(torch.cat([x_p, x_q]))
labels = torch.cat([torch.ones(N_FIT, dtype=DT), torch.zeros(N_FIT, dtype=DT)])
fit = fit_logistic_regression(features, labels)
sk = LogisticRegression(C=np.inf, fit_intercept=False, tol=1e-10, max_iter=10_000)
sk.fit(features.numpy(), labels.numpy())
sk_diff = float(np.abs(sk.coef_[0] - fit.coef.numpy()).max())
print(f"Newton's method: {fit.n_steps} steps")
print("coefficient   fitted +- s.e.      closed form   (fitted - closed) / s.e.")
for name, c, s, true in zip(("c0", "c1", "c2"), fit.coef, fit.se, COEF, strict=True):
    print(
        f"  {name}         {fmt(c, 4):>7} +- {fmt(s, 2):<6}    {fmt(true, 4):>7}"
        f"          {fmt((c - true) / s, 2):>5}"
    )
assert all(abs(float(c) - t) < 3 * float(s) for c, s, t in zip(fit.coef, fit.se, COEF, strict=True))
assert sk_diff < 1e-4
print("each coefficient within 3 standard errors of its closed form; scikit-learn agrees to 1e-4")

# %% [markdown]
# **Check 3: a neural network's mean logit estimates the KL.** A classifier need not know the
# form of the ratio. The script trained a small MLP (`RatioEstimator`: two hidden layers of 32
# ELU units) on the logistic loss, drawing fresh samples of $p$ and $q$ for every step. We
# evaluate its mean logit on $20\,000$ new samples of $p$: an estimate of $\mathrm{KL}(p\,\|\,q)$
# with a Monte Carlo standard error, which we compare with the closed form within 3 standard
# errors. The same mean by Gauss-Hermite quadrature under $p$ (80 nodes, no sampling) isolates
# what is left of the network's own error.

# %%
ratio_net = pretrained.load("l09_ratio")
stored = RESULTS["models"]["ratio"]["test"]
g = torch.Generator().manual_seed(2)
x_eval = P_MEAN + P_STD * torch.randn(20_000, 1, generator=g)
with torch.no_grad():
    logits_p = ratio_net(x_eval).double()
    nodes, weights = np.polynomial.hermite_e.hermegauss(80)
    x_nodes = torch.as_tensor(P_MEAN + P_STD * nodes, dtype=torch.float32)[:, None]
    t_nodes = ratio_net(x_nodes).double()
w_nodes = torch.as_tensor(weights / weights.sum(), dtype=DT)
kl_mlp, kl_mlp_se = kl_from_logits(logits_p)
kl_mlp_quad = float((w_nodes * t_nodes).sum())
print(
    f"mean logit of the MLP on 20000 samples of p: {fmt(kl_mlp)} +- {fmt(kl_mlp_se, 2)} nats "
    f"(KL(p || q) = {fmt(KL_PQ)}; {fmt((kl_mlp - KL_PQ) / kl_mlp_se, 2)} standard errors)"
)
print(
    f"E_p[T_mlp] by quadrature: {fmt(kl_mlp_quad)} nats (the network's own error "
    f"{fmt(kl_mlp_quad - KL_PQ, 2)}); the script stored {fmt(stored['kl_quadrature'])}"
)
assert abs(kl_mlp - KL_PQ) < 3 * kl_mlp_se
assert abs(kl_mlp_quad - stored["kl_quadrature"]) < 1e-5  # same weights, float32 round-off

# %%
xg = torch.linspace(-4, 5, 400, dtype=DT)
with torch.no_grad():
    t_mlp = ratio_net(xg.float()[:, None]).double()
t_fit = quadratic_features(xg) @ fit.coef
fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
axes[0].plot(xg, p_dist.log_prob(xg).exp(), label=r"$p = \mathcal{N}(1, 1)$, label 1")
axes[0].plot(xg, q_dist.log_prob(xg).exp(), label=r"$q = \mathcal{N}(0, 2^2)$, label 0")
axes[0].set_xlabel("x")
axes[0].set_ylabel("density")
axes[0].legend()
axes[0].set_title("the two distributions")
axes[1].plot(xg, log_ratio(xg), "k", lw=3, alpha=0.35, label=r"$\log p/q$ (closed form)")
axes[1].plot(xg, t_fit, "--", label="logistic regression on $[1, x, x^2]$")
axes[1].plot(xg, t_mlp, label="MLP logit (trained by the script)")
axes[1].set_xlabel("x")
axes[1].set_ylabel("logit (nats)")
axes[1].set_ylim(-8, 2)
axes[1].legend()
axes[1].set_title("the classifiers' logits estimate the log density ratio")
plt.show()

# %% [markdown]
# Both classifiers follow the log ratio where the data are; the MLP bends away from the
# parabola at the right end of the plot, where few samples of either distribution fall and the
# logistic loss has little to fit. Its mean under $p$ hardly notices: $p$ has almost no mass
# there.
#
# ## 2. $D/(1 - D)$ is the ratio, not its logarithm
#
# The course's slides write the KL term of AVB as $\mathrm{KL}\approx D/(1 - D)$. But $D^*/(1 -
# D^*) = q_1/q_2$ is the density ratio itself, and its average under $q_1$ is a different
# divergence:
#
# $$
# \mathbb E_{q_1}\Big[\frac{D^*}{1 - D^*}\Big] = \int \frac{q_1^2}{q_2}\,d\mathbf x
# = 1 + \chi^2(q_1\,\|\,q_2),\qquad \chi^2(q_1\,\|\,q_2) = \int\frac{(q_1 - q_2)^2}{q_2}\,
# d\mathbf x,
# $$
#
# which is at least 1 and equals 1 only for $q_1 = q_2$ (where the KL is 0). For our pair,
# $p^2/q\propto\exp\big(-(x - 1)^2 + x^2/8\big) = \exp\big(-\tfrac78 x^2 + 2x - 1\big)$, and the
# Gaussian integral $\int e^{-ax^2 + bx + c}dx = \sqrt{\pi/a}\,e^{b^2/(4a) + c}$ with
# $a = 7/8$, $b = 2$, $c = -1$, times the constant $\frac{1}{2\pi}\cdot 2\sqrt{2\pi}$, gives
#
# $$
# \mathbb E_p\Big[\frac pq\Big] = \frac{4}{\sqrt 7}\,e^{1/7} .
# $$
#
# (In general, for $\mathcal N(\mu_1, s_1^2)$ against $\mathcal N(\mu_2, s_2^2)$ it is
# $\frac{s_2^2}{s_1\sqrt{2s_2^2 - s_1^2}}\exp\frac{(\mu_1 - \mu_2)^2}{2s_2^2 - s_1^2}$, and
# infinite unless $2 s_2^2 > s_1^2$: the slide's estimator can have no finite mean at all.) Its
# logarithm is the Rényi divergence of order 2, which by Jensen's inequality is at least the KL.
#
# **Check 4: what the slide's formula estimates.** The closed form against adaptive quadrature
# (tolerance $10^{-9}$) and against the general formula (`gaussian_ratio_mean`); the mean of $e^{T^*}$ with the exact log ratio at the $20\,000$ samples
# of $p$ above against the closed form within 3 standard errors; and the same mean with the
# MLP's logit, beside the KL, from which it differs by far more than its standard error.

# %%
ratio_closed = 4 / math.sqrt(7) * math.exp(1 / 7)
ratio_general = gaussian_ratio_mean(P_MEAN, P_STD, Q_MEAN, Q_STD)  # the general formula
ratio_quad, _ = integrate.quad(
    lambda x: math.exp(2 * stats.norm.logpdf(x, 1, 1) - stats.norm.logpdf(x, 0, 2)), -30, 30
)
ratio_exact, ratio_exact_se = ratio_mean_from_logits(log_ratio(x_eval[:, 0].double()))
ratio_mlp, ratio_mlp_se = ratio_mean_from_logits(logits_p)
renyi2 = math.log(ratio_closed)
print(
    f"E_p[p/q] = 4/sqrt(7) e^(1/7) = {fmt(ratio_closed)} (quadrature {fmt(ratio_quad)}), "
    f"so chi^2(p || q) = {fmt(ratio_closed - 1)}"
)
print(f"mean D*/(1 - D*) with the exact ratio: {fmt(ratio_exact)} +- {fmt(ratio_exact_se, 2)}")
print(
    f"mean D/(1 - D) with the MLP:           {fmt(ratio_mlp)} +- {fmt(ratio_mlp_se, 2)}   "
    f"<- the slide's 'KL estimate'"
)
print(
    f"mean log D/(1 - D) with the MLP:       {fmt(kl_mlp)} +- {fmt(kl_mlp_se, 2)}   "
    f"<- the KL estimate (KL = {fmt(KL_PQ)})"
)
print(f"log E_p[p/q] (Renyi divergence of order 2) = {fmt(renyi2)} >= KL = {fmt(KL_PQ)}")
assert abs(ratio_quad - ratio_closed) < 1e-9 and abs(ratio_general - ratio_closed) < 1e-12
assert abs(ratio_exact - ratio_closed) < 3 * ratio_exact_se
assert abs(ratio_mlp - KL_PQ) > 100 * ratio_mlp_se and renyi2 > KL_PQ

# %% [markdown]
# **Explore: the width of $q$.** Keep $p = \mathcal N(1, 1)$ and move the standard deviation
# $s$ of $q = \mathcal N(0, s^2)$ (the pair above has $s = 2$). On the left, the two densities; on
# the right, the two estimators as running means over the first $n$ of the same 20 000 samples of
# $p$, with the exact ratio: the mean of $\log D^*/(1 - D^*)$, and the slide's mean of $D^*/(1 -
# D^*)$, shown through its logarithm so that both are in nats. The dashed lines are their limits,
# $\mathrm{KL}(p\,\|\,q)$ and $\log(1 + \chi^2)$, the Rényi divergence of order 2. For a wide
# $q$ both curves settle. As $s$ shrinks towards $1/\sqrt 2$ the second limit runs away, and below
# it the slide's estimator has no finite mean: its curve climbs in jumps, each a rare sample in
# the tail of $p$ where $q$ is far smaller, and never settles, while the KL estimate still does.

# %%
eps_explore = torch.randn(20_000, generator=torch.Generator().manual_seed(40), dtype=DT)
x_explore = P_MEAN + P_STD * eps_explore  # 20 000 samples of p, shared by every s
n_shown = torch.unique(torch.logspace(0, math.log10(len(x_explore)), 400).long())  # n = 1..20000
xs_density = torch.linspace(-4, 6, 300, dtype=DT)


def draw_width(axes: np.ndarray, s: float) -> None:
    """The densities of p and q = N(0, s^2), and the running means of the two estimators."""
    q_s = Normal(torch.tensor(Q_MEAN, dtype=DT), torch.tensor(s, dtype=DT))
    axes[0].plot(xs_density, p_dist.log_prob(xs_density).exp(), label="p = N(1, 1)")
    axes[0].plot(xs_density, q_s.log_prob(xs_density).exp(), label=f"q = N(0, {s:.2f}²)")
    axes[0].set(
        xlim=(-4, 6), ylim=(0, 0.7), xlabel="x", ylabel="density", title="the two distributions"
    )
    axes[0].legend(loc="upper left")
    c0, c1, c2 = gaussian_log_ratio_coefficients(P_MEAN, P_STD, Q_MEAN, s)
    t_exact = c0 + c1 * x_explore + c2 * x_explore**2  # log D*/(1 - D*) = log p/q
    n = torch.arange(1, len(x_explore) + 1, dtype=DT)
    mean_log = (t_exact.cumsum(0) / n)[n_shown - 1]
    log_mean = (torch.logcumsumexp(t_exact, 0) - n.log())[n_shown - 1]
    kl_s = float(kl_divergence(p_dist, q_s))
    renyi_s = math.log(gaussian_ratio_mean(P_MEAN, P_STD, Q_MEAN, s))
    ax = axes[1]
    ax.plot(n_shown, mean_log, color="C0", label="mean of log D*/(1 - D*)")
    ax.axhline(kl_s, color="C0", ls="--", label="KL(p ‖ q)")
    ax.plot(n_shown, log_mean, color="C3", label="log of the mean of D*/(1 - D*)")
    if math.isfinite(renyi_s):
        ax.axhline(renyi_s, color="C3", ls="--", label="log(1 + χ²)")
        limit = f"log(1 + χ²) = {renyi_s:.2f}"
    else:
        limit = "χ² infinite"
    ax.set_yscale("symlog", linthresh=1.0, linscale=2.0)  # linear below 1 nat, then logarithmic
    ax.set(
        xscale="log",
        xlim=(1, len(x_explore)),
        ylim=(-0.5, 40),
        xlabel="number of samples n",
        ylabel="running estimate (nats)",
        title=f"s = {s:.2f}: KL = {kl_s:.2f}, {limit}",
    )
    ticks = [0, 0.5, 1, 2, 5, 10, 20]
    ax.set_yticks(ticks, [f"{t:g}" for t in ticks])
    ax.set_xticks([1, 10, 100, 1000, 10_000], ["1", "10", "100", "1000", "10000"])
    ax.minorticks_off()  # fewer tick labels to lay out: a faster redraw
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2, fontsize="small")


explore(
    draw_width,
    ncols=2,
    figsize=(11, 4.2),
    s=widgets.FloatSlider(value=2.0, min=0.6, max=3.0, step=0.05, description="std of q"),
)

# %% [markdown]
# ## 3. Adversarial variational Bayes
#
# **The problem.** For a VAE with prior $p(\mathbf z)$, decoder $p_\theta(\mathbf x\mid\mathbf
# z)$ and data distribution $\pi(\mathbf x)$, the average ELBO is
#
# $$
# \mathcal L(\theta, \phi) = \mathbb E_{\pi(\mathbf x)}\mathbb E_{q_\phi(\mathbf z\mid\mathbf x)}
# \big[\log p_\theta(\mathbf x\mid\mathbf z) + \log p(\mathbf z) - \log q_\phi(\mathbf z\mid
# \mathbf x)\big].
# $$
#
# Take an **implicit encoder**: $\mathbf z = g_\phi(\mathbf x, \boldsymbol\varepsilon)$ with
# $\boldsymbol\varepsilon\sim\mathcal N(\mathbf 0, \mathbf I)$ fed to the network as an extra
# input. The first term needs samples only, and it is differentiable in $\phi$ through the
# samples (the reparametrization trick of Lecture 02). The last term needs the density
# $q_\phi(\mathbf z\mid\mathbf x) = \int \delta(\mathbf z - g_\phi(\mathbf x, \boldsymbol
# \varepsilon))\,\mathcal N(\boldsymbol\varepsilon)\,d\boldsymbol\varepsilon$, which we cannot
# evaluate.
#
# **The density-ratio trick on pairs.** Compare two distributions of pairs $(\mathbf x,
# \mathbf z)$: $q_1 = \pi(\mathbf x)\,q_\phi(\mathbf z\mid\mathbf x)$ (an example and a code of
# it) and $q_2 = \pi(\mathbf x)\,p(\mathbf z)$ (an example and a code from the prior). Both can be
# sampled, and their ratio is the integrand we miss, because $\pi(\mathbf x)$ cancels:
#
# $$
# T^*(\mathbf x, \mathbf z) = \log\frac{\pi(\mathbf x)\,q_\phi(\mathbf z\mid\mathbf x)}{\pi(
# \mathbf x)\,p(\mathbf z)} = \log q_\phi(\mathbf z\mid\mathbf x) - \log p(\mathbf z),
# \qquad
# \mathcal L(\theta, \phi) = \mathbb E_{\pi}\mathbb E_{q_\phi}\big[\log p_\theta(\mathbf x\mid
# \mathbf z) - T^*(\mathbf x, \mathbf z)\big].
# $$
#
# By §1, $T^*$ is the optimal logit of a classifier $T(\mathbf x, \mathbf z)$ of the two kinds of
# pairs (the AVB paper's Proposition 1). AVB therefore trains three networks on two losses:
#
# - the **dual** (discriminator) loss, the logistic loss with the encoder's pairs labelled 1:
#   $\min_T\ \mathbb E_{\pi}\mathbb E_{q_\phi}\big[\mathrm{softplus}(-T(\mathbf x, \mathbf z))
#   \big] + \mathbb E_{\pi}\mathbb E_{p(\mathbf z)}\big[\mathrm{softplus}(T(\mathbf x,
#   \mathbf z))\big]$;
# - the **primal** loss of the encoder and the decoder, the negative ELBO with $T$ in place of
#   $T^*$: $\min_{\theta, \phi}\ \mathbb E_{\pi}\mathbb E_{\boldsymbol\varepsilon}\big[-\log
#   p_\theta(\mathbf x\mid\mathbf z) + T(\mathbf x, \mathbf z)\big]$ with $\mathbf z =
#   g_\phi(\mathbf x, \boldsymbol\varepsilon)$, where $T$'s weights are **held fixed**: the
#   gradient reaches $\phi$ only through $\mathbf z$.
#
# **Why holding $T$ fixed is right.** $T^*$ depends on $\phi$ twice, through the samples $\mathbf
# z = g_\phi(\mathbf x, \boldsymbol\varepsilon)$ and through the function $T^*_\phi = \log
# q_\phi - \log p$ itself. By the chain rule,
#
# $$
# \nabla_\phi\, \mathbb E_{\boldsymbol\varepsilon}\big[T^*_\phi(\mathbf x, g_\phi(\mathbf x,
# \boldsymbol\varepsilon))\big]
# = \mathbb E_{\boldsymbol\varepsilon}\big[\nabla_{\mathbf z}T^*_\phi(\mathbf x, \mathbf z)\,
# \partial_\phi g_\phi(\mathbf x, \boldsymbol\varepsilon)\big]
# + \mathbb E_{q_\phi(\mathbf z\mid\mathbf x)}\big[(\nabla_\phi T^*_\phi)(\mathbf x, \mathbf z)
# \big],
# $$
#
# and the second term vanishes: $\nabla_\phi T^*_\phi = \nabla_\phi\log q_\phi(\mathbf z\mid
# \mathbf x)$ (the prior does not depend on $\phi$), and a score has mean zero,
# $\mathbb E_{q_\phi}[\nabla_\phi\log q_\phi] = \int\nabla_\phi q_\phi\,d\mathbf z =
# \nabla_\phi\int q_\phi\,d\mathbf z = \nabla_\phi 1 = 0$ (the paper's Proposition 2). So at
# $T = T^*$ the gradient of the primal loss with $T$ frozen *is* the gradient of the negative
# ELBO. Letting the primal loss change $T$'s weights would be wrong in a different way: it would
# train $T$ to make the encoder's pairs look like prior pairs, against its own loss.
#
# **Check 5: the score term has mean zero, and the frozen gradient is the KL's gradient.** On an
# explicit family, $q_\phi(z\mid x) = \mathcal N(a x, e^{2b})$ with $\phi = (a, b)$, prior
# $\mathcal N(0, 1)$ and $x\sim\mathcal N(0, 5/4)$, everything is known: $T^*_\phi$ in closed
# form, and $\mathbb E_x\mathrm{KL}(q_\phi\,\|\,p) = \tfrac12(\tfrac54 a^2 + e^{2b} - 1 - 2b)$ with
# gradient $(\tfrac54 a,\ e^{2b} - 1)$. At $a = 0.5$, $b = \log 0.6$ we compute, per sample and
# by autograd (`torch.func.vmap(grad(...))`) on $10^5$ samples, (i) the score term
# $\nabla_\phi T^*_\phi(x, z)$ at fixed samples $z\sim q_\phi$, whose mean must be zero, and (ii)
# the pathwise gradient of $T^*_{\phi_0}(x, a x + e^b\varepsilon)$ with the function frozen at
# $\phi_0$, whose mean must be the KL's gradient; each within 3 standard errors.

# %%
A0, B0 = 0.5, math.log(0.6)
phi0 = torch.tensor([A0, B0], dtype=DT)


def t_star(phi: torch.Tensor, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """T*_phi(x, z) = log N(z; a x, e^(2b)) - log N(z; 0, 1) for q_phi(z|x) = N(a x, e^(2b))."""
    return Normal(phi[0] * x, phi[1].exp()).log_prob(z) - Normal(0.0, 1.0).log_prob(z)


g = torch.Generator().manual_seed(3)
n_s = 100_000
x_s = math.sqrt(1.25) * torch.randn(n_s, generator=g, dtype=DT)
eps_s = torch.randn(n_s, generator=g, dtype=DT)
z_s = A0 * x_s + math.exp(B0) * eps_s  # samples of q_phi0
score = vmap(grad(t_star), in_dims=(None, 0, 0))(phi0, x_s, z_s)  # [n, 2]
pathwise = vmap(
    grad(lambda phi, x, e: t_star(phi0, x, phi[0] * x + phi[1].exp() * e)), in_dims=(None, 0, 0)
)(phi0, x_s, eps_s)
kl_grad = torch.tensor([1.25 * A0, math.exp(2 * B0) - 1], dtype=DT)
print("                               d/da                d/db")
for label, v in (("(i) score term, mean", score), ("(ii) frozen T*, pathwise", pathwise)):
    (ma, sa), (mb, sb) = mean_se(v[:, 0]), mean_se(v[:, 1])
    print(f"  {label:<26} {fmt(ma, 3):>7} +- {fmt(sa, 2):<7} {fmt(mb, 3):>7} +- {fmt(sb, 2)}")
print(f"  gradient of E_x KL           {fmt(kl_grad[0], 3):>7}            {fmt(kl_grad[1], 3):>7}")
full_sd = (score + pathwise).std(0) / math.sqrt(n_s)
print(
    f"the total derivative (score + pathwise) has the same mean; its standard errors: "
    f"{fmt(full_sd[0], 2)} and {fmt(full_sd[1], 2)}"
)
for k in range(2):
    assert abs(mean_se(score[:, k])[0]) < 3 * mean_se(score[:, k])[1]
    assert abs(mean_se(pathwise[:, k])[0] - float(kl_grad[k])) < 3 * mean_se(pathwise[:, k])[1]

# %% [markdown]
# ## 4. AVB where the posterior is known
#
# **The model.** $z\sim\mathcal N(0, 1)$ and $x\mid z\sim\mathcal N(z, \sigma^2)$ with
# $\sigma = 1/2$. Then $x\sim\mathcal N(0, 1 + \sigma^2) = \mathcal N(0, 5/4)$, and the posterior
# is Gaussian with precision $1 + 1/\sigma^2 = 5$ and mean $\frac{x/\sigma^2}{5} = \frac45 x$:
# $p(z\mid x) = \mathcal N(\tfrac45 x, \tfrac15)$. If the encoder learns this posterior, the
# optimal discriminator is
#
# $$
# T^*(x, z) = \log\mathcal N(z; \tfrac45 x, \tfrac15) - \log\mathcal N(z; 0, 1)
# = \tfrac12\log 5 - \tfrac52\big(z - \tfrac45 x\big)^2 + \tfrac12 z^2 .
# $$
#
# Its mean on joint samples is the mutual information: $\mathbb E(z - \tfrac45 x)^2 = \tfrac15$
# (the posterior variance) and $\mathbb E z^2 = 1$, so
# $\mathbb E[T^*] = \tfrac12\log 5 - \tfrac12 + \tfrac12 = \tfrac12\log 5 = I(x; z)$, the entropy
# of the prior minus that of the posterior, $\tfrac12\log(2\pi e) - \tfrac12\log(2\pi e/5)$.
# With the posterior as encoder the ELBO equals $\log p(x)$ for every $x$, so the average ELBO is
#
# $$
# \mathbb E\log p(x) = -\tfrac12\log\big(2\pi\cdot\tfrac54\big) - \tfrac12 ,
# $$
#
# using $\mathbb E[x^2/(2\cdot\frac54)] = \frac12$. (It splits into $\mathbb E\log p(x\mid z) =
# -\tfrac12\log(2\pi\sigma^2) - \tfrac12\mathbb E(x - z)^2/\sigma^2$ with $\mathbb E(x - z)^2 =
# \tfrac15 + \tfrac1{25}\cdot\tfrac54 = \tfrac14$, minus the KL term $\tfrac12\log 5$.)
#
# **The experiment.** The script keeps the decoder fixed at the true $p(x\mid z)$ and trains by
# AVB only the implicit encoder $z = g_\phi(x, \boldsymbol\varepsilon)$ (4-D noise, two hidden
# layers of 64 ELU units) and $T(x, z)$ (an MLP of the same size plus a learned quadratic form in
# $(x, z)$, which can represent the log ratio of two Gaussians exactly), on fresh data
# $x\sim\mathcal N(0, 5/4)$. As in the paper, the two players alternate: several steps of the
# discriminator on the dual loss, then one step of the encoder on the primal loss with $T$ held
# fixed (`dgmlib.avb.AVBObjective(dual_steps=k)`, the numbers printed below), each with Adam and
# a cosine-decayed learning rate. With a discriminator that lags behind the encoder, the encoder
# follows the gradient of an out-of-date $T$; the extra discriminator steps keep $T$ close to
# $T^*$ for the current encoder, which is what the derivation above assumes.

# %%
gauss = pretrained.load("l09_gauss_avb")
s = SETTINGS["gauss_avb"]
NOISE_STD = s["noise_std"]
POST_MEAN, POST_VAR = 1 / (1 + NOISE_STD**2), NOISE_STD**2 / (1 + NOISE_STD**2)
MI = 0.5 * math.log(5)
E_LOG_PX = -0.5 * math.log(2 * math.pi * 1.25) - 0.5
print(
    f"sigma = {NOISE_STD}: posterior N({fmt(POST_MEAN)} x, {fmt(POST_VAR)}), "
    f"I(x; z) = log(5)/2 = {fmt(MI)} nats, E log p(x) = {fmt(E_LOG_PX)} nats"
)
print(
    f"trained for {SETTINGS['epochs']['gauss_avb']} epochs of "
    f"{SETTINGS['steps_per_epoch']['gauss_avb']} steps of {s['batch']} examples, "
    f"{SETTINGS['dual_steps']['gauss_avb']} steps of T per step of the encoder, base learning "
    f"rates {SETTINGS['learning_rates']['gauss_avb']} (encoder, T)"
)
curves = RESULTS["models"]["gauss_avb"]["curves"]
history = {k: [c[k] for c in curves] for k in ("step", "kl", "elbo")}
ax = plot_history(history, ["kl", "elbo"], xlabel="training step", ylabel="nats (epoch mean)")
ax.axhline(MI, color="C0", ls=":", label=r"$I(x; z) = \frac{1}{2}\log 5$")
ax.axhline(E_LOG_PX, color="C1", ls=":", label=r"$\mathbb{E}\log p(x)$")
ax.legend()
ax.set_title("AVB on the linear-Gaussian model: the batch means of the training run")
plt.show()

# %% [markdown]
# **Check 6: $T$ against $T^*$, and AVB's ELBO against $\mathbb E\log p(x)$.** On $20\,000$
# fresh pairs $x\sim p(x)$, $z\sim q_\phi(z\mid x)$: the mean of $T$ (AVB's estimate of the KL
# term) against $I(x; z)$, and the mean of $\log p(x\mid z) - T(x, z)$ (AVB's ELBO estimate)
# against $\mathbb E\log p(x)$, each within 3 standard errors. We also print the root mean square
# of $T - T^*$ on the same pairs and the encoder's conditional mean and standard deviation at a
# few inputs beside the posterior's (descriptive; not asserted).

# %%
g = torch.Generator().manual_seed(4)
with torch.no_grad():
    x_j = math.sqrt(1 + NOISE_STD**2) * torch.randn(20_000, 1, generator=g)
    z_j = gauss.encoder.sample(x_j, generator=g)
    t_j = gauss.discriminator(x_j, z_j).double()
    log_px_z = gauss.decoder.log_prob(x_j, z_j).double()
    xd, zd = x_j[:, 0].double(), z_j[:, 0].double()
    t_star_j = Normal(POST_MEAN * xd, math.sqrt(POST_VAR)).log_prob(zd) - Normal(0.0, 1.0).log_prob(
        zd
    )
kl_avb, kl_avb_se = mean_se(t_j)
elbo_avb, elbo_avb_se = mean_se(log_px_z - t_j)
rms = float(((t_j - t_star_j) ** 2).mean().sqrt())
print(
    f"mean T on joint samples: {fmt(kl_avb)} +- {fmt(kl_avb_se, 2)}  vs  I(x; z) = {fmt(MI)}"
    f"   ({fmt((kl_avb - MI) / kl_avb_se, 2)} s.e.)"
)
print(
    f"AVB's ELBO estimate:     {fmt(elbo_avb)} +- {fmt(elbo_avb_se, 2)}  vs  E log p(x) = "
    f"{fmt(E_LOG_PX)}   ({fmt((elbo_avb - E_LOG_PX) / elbo_avb_se, 2)} s.e.)"
)
print(
    f"root mean square of T - T* on these pairs: {fmt(rms, 2)} nats (the standard deviation "
    f"of T* is {fmt(t_star_j.std(), 2)})"
)
print("\n   x    E_q[z|x] (posterior)   sd_q(z|x) (posterior)")
for xv in (-2.0, -1.0, 0.0, 1.0, 2.0):
    with torch.no_grad():
        zz = gauss.encoder.sample(torch.full((20_000, 1), xv), generator=g)[:, 0].double()
    print(
        f"  {xv:>4}   {fmt(zz.mean(), 2, decimals=True):>5} ({fmt(POST_MEAN * xv, 2, True):>5})"
        f"          {fmt(zz.std(), 3, True)} ({fmt(math.sqrt(POST_VAR), 3, True)})"
    )
assert abs(kl_avb - MI) < 3 * kl_avb_se
assert abs(elbo_avb - E_LOG_PX) < 3 * elbo_avb_se

# %%
zg = torch.linspace(-3.5, 3.5, 300)
fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
for k, xv in enumerate((-1.5, 0.0, 1.5)):
    with torch.no_grad():
        t_line = gauss.discriminator(torch.full((300, 1), xv), zg[:, None])
        zz = gauss.encoder.sample(torch.full((20_000, 1), xv), generator=g)[:, 0]
    exact = Normal(POST_MEAN * xv, math.sqrt(POST_VAR)).log_prob(zg) - Normal(0.0, 1.0).log_prob(zg)
    axes[0].plot(zg, exact, color=f"C{k}", lw=3, alpha=0.35)
    axes[0].plot(zg, t_line, color=f"C{k}", label=f"x = {xv}: T (thin) and T* (thick)")
    axes[1].hist(zz, bins=80, density=True, color=f"C{k}", alpha=0.35, label=f"q(z | x = {xv})")
    axes[1].plot(zg, Normal(POST_MEAN * xv, math.sqrt(POST_VAR)).log_prob(zg).exp(), color=f"C{k}")
axes[0].set_ylim(-12, 3)
axes[0].set_xlabel("z")
axes[0].set_ylabel("nats")
axes[0].set_title(r"the discriminator $T(x, z)$ against $T^*(x, z)$")
axes[0].legend(fontsize=8)
axes[1].set_xlabel("z")
axes[1].set_ylabel("density")
axes[1].set_title("the implicit encoder's samples against the posterior (lines)")
axes[1].legend(fontsize=8)
plt.show()

# %% [markdown]
# Where the encoder puts its samples, $T$ lies on $T^*$; away from them (large $|z|$ at a given
# $x$) it drifts, as the MLP of §1 did, because no pair of either kind falls there. The averages
# that AVB needs agree with their closed forms within their standard errors, and the implicit
# encoder's conditional means and standard deviations match the posterior's to about the second
# decimal (the table above), although nothing told it that the posterior is Gaussian.
#
# ## 5. The paper's toy example
#
# The data are the four $2\times 2$ binary images with exactly one pixel on, each with
# probability $1/4$; the latent space is 2-D with prior $\mathcal N(\mathbf 0, \mathbf I)$, and
# the decoder gives four independent Bernoulli pixels. The best possible model puts all its mass
# on the four images, $\log p(\mathbf x) = -\log 4$ for each; its posteriors then partition the
# latent plane into four regions, each the prior restricted to a region, far from Gaussian. A
# Gaussian encoder cannot follow such a posterior, and the ELBO then pushes the decoder towards
# posteriors that are easier to fit; an implicit encoder can.
#
# Two models with the same decoder family (three hidden layers of 64 ELU units, four logits):
# **AVB**, with an implicit encoder (16-D noise, three hidden layers of 64 ELU units, then
# Gaussian noise of standard deviation `output_std` on its output; why, below) and a
# discriminator of three hidden layers of 128 units plus a quadratic form; and a **VAE** with a
# Gaussian encoder of the same size. AVB alternates discriminator and encoder steps as in §4.
# The paper's own run took 100k steps with a larger discriminator; the script's schedule is
# shorter (printed below).
#
# **Exact numbers on a grid.** With a 2-D latent, integrals over $\mathbf z$ are sums over a grid:
# with the midpoint rule on $128\times 128$ cells of area $a$ covering $[-4, 4]^2$,
#
# $$
# p(\mathbf x) \approx \sum_g a\, p(\mathbf z_g)\,p_\theta(\mathbf x\mid\mathbf z_g),\qquad
# p_\theta(\mathbf z_g\mid\mathbf x) = \frac{p(\mathbf z_g)\,p_\theta(\mathbf x\mid\mathbf z_g)}
# {p(\mathbf x)},\qquad
# \log p(\mathbf x) - \mathcal L(\mathbf x) = \mathrm{KL}\big(q(\mathbf z\mid\mathbf x)\,\|\,
# p_\theta(\mathbf z\mid\mathbf x)\big) \approx \sum_g a\, q_g\log\frac{q_g}{p_\theta(\mathbf z_g
# \mid\mathbf x)} .
# $$
#
# The ELBO gap needs $q(\mathbf z\mid\mathbf x)$ on the grid. For the VAE it is a Gaussian. For
# the implicit encoder it is not available, which is the point of AVB; this is what the small
# output noise is for. With it, $q(\mathbf z\mid\mathbf x) = \mathbb E_{\boldsymbol\varepsilon}
# \big[\mathcal N(\mathbf z;\, g_\phi(\mathbf x, \boldsymbol\varepsilon),\, s^2\mathbf I)\big]$,
# and $M$ draws of $\boldsymbol\varepsilon$ give a mixture $\hat q_M$ with $\mathbb E[\hat q_M] =
# q$ at every point. The KL divergence is convex in its first argument, so by Jensen's inequality
# $\mathbb E\,\mathrm{KL}(\hat q_M\,\|\,p) \ge \mathrm{KL}(q\,\|\,p)$: the mixture's gap is an
# **upper bound** on the implicit encoder's gap (in expectation over the draws), and it tightens
# as $M$ grows (`ImplicitEncoder.mixture_log_density`; the idea is that of semi-implicit
# variational inference {cite:p}`yin2018semi`). Training never uses this density.
#
# **Check 7: the quadrature.** $\log p(\mathbf x)$ on the $128\times 128$ grid against a grid of
# $512\times 512$ cells, and $p(\mathbf x)$ against plain Monte Carlo over the prior,
# $\frac1n\sum_i p_\theta(\mathbf x\mid\mathbf z_i)$ with $n = 200\,000$ and $\mathbf z_i\sim
# \mathcal N(\mathbf 0, \mathbf I)$, within 3 standard errors plus the grid difference. The VAE's
# gap by quadrature against $\log p(\mathbf x)$ minus its ELBO computed the usual way (the
# analytic KL to the prior and a Monte Carlo reconstruction term over $200\,000$ samples of $q$),
# within 3 standard errors of the latter plus the grid difference.

# %%
toy_avb, toy_vae = pretrained.load("l09_toy_avb"), pretrained.load("l09_toy_vae")
toy = {"AVB": toy_avb, "VAE": toy_vae}
OUTPUT_STD = toy_avb.encoder.output_std
LIMIT, N_GRID = SETTINGS["toy"]["grid"]
eye = torch.eye(4, dtype=DT)
grid, area = latent_grid(LIMIT, N_GRID)
fine_grid, fine_area = latent_grid(LIMIT, 4 * N_GRID)
quad = {}
g = torch.Generator().manual_seed(5)
z_prior = torch.randn(200_000, 2, generator=g, dtype=DT)
for name in ("toy_avb", "toy_vae"):
    steps = SETTINGS["epochs"][name] * SETTINGS["steps_per_epoch"][name]
    k = SETTINGS["dual_steps"].get(name)
    extra = f", {k} steps of T per encoder step" if k else ""
    print(f"{name}: {steps} steps of {SETTINGS['toy']['batch']} images{extra}")
print(f"implicit encoder: output_std = {OUTPUT_STD}; grid [-{LIMIT}, {LIMIT}]^2, {N_GRID}^2 cells")
print(f"-log 4 = {fmt(-math.log(4))}\n")
print("model  image   log p(x) (grid)   512^2 grid - 128^2 grid   p(x) (grid)", end="")
print("   p(x) (MC over prior)")
for name, model in toy.items():
    dec = model.decoder.double()
    log_px, log_post = log_marginal_on_grid(dec, eye, grid, area)
    log_px_fine, _ = log_marginal_on_grid(dec, eye, fine_grid, fine_area)
    with torch.no_grad():
        lik = dec.log_prob(eye, z_prior[:, None].expand(-1, 4, 2))  # [n, 4]
    quad[name] = (log_px, log_post)
    for i in range(4):
        p_mc, p_se = mean_se(lik[:, i].exp())
        grid_err = abs(float(log_px_fine[i] - log_px[i]))
        print(
            f"{name}      {i}        {fmt(log_px[i], 3, True)}          "
            f"{'below 1e-4' if grid_err < 1e-4 else fmt(grid_err, 2)}                "
            f"{fmt(log_px[i].exp(), 4, True)}        {fmt(p_mc, 4, True)} +- {fmt(p_se, 1)}"
        )
        assert abs(float(log_px[i].exp()) - p_mc) < 3 * p_se + grid_err
    model.decoder.float()
    print(f"{name}    mean log p(x) = {fmt(log_px.mean())}")

# the VAE's gap, by quadrature and the usual way
with torch.no_grad():
    mu, logvar = toy_vae.encoder.double()(eye)
    q_vae = Normal(mu[:, None], (0.5 * logvar).exp()[:, None])
    log_q_vae = q_vae.log_prob(grid[None]).sum(-1)  # [4, G]
    gap_vae = kl_on_grid(log_q_vae, quad["VAE"][1], area)
    kl_prior = 0.5 * (mu**2 + logvar.exp() - 1 - logvar).sum(-1)
    z_q = mu + (0.5 * logvar).exp() * torch.randn(200_000, 4, 2, generator=g, dtype=DT)
    rec = toy_vae.decoder.double().log_prob(eye, z_q)  # [n, 4]
    toy_vae.float()
print("\nVAE    image   gap by quadrature   log p(x) - (E_q log p(x|z) - KL(q || prior))")
for i in range(4):
    rec_m, rec_se = mean_se(rec[:, i])
    usual = float(quad["VAE"][0][i]) - (rec_m - float(kl_prior[i]))
    print(
        f"        {i}           {fmt(gap_vae[i], 4, True)}            {fmt(usual, 4, True)} +- "
        f"{fmt(rec_se, 2)}"
    )
    assert abs(float(gap_vae[i]) - usual) < 3 * rec_se + 1e-3

# %% [markdown]
# (The last tolerance allows $10^{-3}$ for the quadrature of the gap, the size of the grid
# differences printed above.)
#
# **Check 8: AVB's gap is smaller.** The implicit encoder's upper bound on its gap for $M =
# 1024$ and $M = 4096$ mixture components, the mass of the mixture on the grid, and AVB's own
# estimate of its ELBO from $T$ (the mean of $\log p(\mathbf x\mid\mathbf z) - T(\mathbf x,
# \mathbf z)$ over $20\,000$ samples), beside the VAE's exact gap. Asserted: for every image the
# bound with $M = 4096$ is below the VAE's gap.

# %%
gaps_avb = {}
enc64 = toy_avb.encoder.double()
for m_comp in (1024, 4096):
    g = torch.Generator().manual_seed(6)
    log_q = torch.stack([enc64.mixture_log_density(eye[i], grid, m_comp, g) for i in range(4)])
    gaps_avb[m_comp] = (kl_on_grid(log_q, quad["AVB"][1], area), (log_q.exp() * area).sum(1))
toy_avb.float()
with torch.no_grad():
    g = torch.Generator().manual_seed(7)
    avb_own = toy_avb.elbo_estimate(torch.eye(4), K=20_000, generator=g)
print("image   AVB gap bound, M = 1024   M = 4096   (mass on grid)   VAE gap", end="")
print("    AVB ELBO bound   AVB's own ELBO estimate")
for i in range(4):
    b1, b4, mass = gaps_avb[1024][0][i], gaps_avb[4096][0][i], gaps_avb[4096][1][i]
    elbo_bound = quad["AVB"][0][i] - b4
    print(
        f"  {i}          {fmt(b1, 3, True)}             {fmt(b4, 3, True)}      "
        f"({fmt(mass, 4, True)})       {fmt(gap_vae[i], 3, True)}       {fmt(elbo_bound, 3, True)}"
        f"          {fmt(avb_own[i], 3, True)}"
    )
print(
    f"mean over the images: AVB gap <= {fmt(gaps_avb[4096][0].mean(), 3)} nats, "
    f"VAE gap {fmt(gap_vae.mean(), 3)} nats"
)
assert (gaps_avb[4096][0] < gap_vae).all()
assert ((gaps_avb[4096][1] - 1).abs() < 1e-3).all()  # the mixture's mass lies on the grid

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 5.6))
shape = (N_GRID, N_GRID)
t = grid[:, 0].reshape(shape)[:, 0].numpy()
for ax, (name, model) in zip(axes, toy.items(), strict=True):
    g = torch.Generator().manual_seed(8)
    for i in range(4):
        with torch.no_grad():
            if name == "AVB":
                zz = model.encoder.sample(torch.eye(4)[[i] * 600], generator=g)
            else:
                mu_i, lv_i = model.encoder(torch.eye(4)[[i]])
                zz = mu_i + (0.5 * lv_i).exp() * torch.randn(600, 2, generator=g)
        ax.scatter(zz[:, 0], zz[:, 1], s=3, alpha=0.4, color=f"C{i}", label=f"image {i}")
        post = quad[name][1][i].exp().reshape(shape).T.numpy()
        ax.contour(t, t, post, levels=[0.05, 0.3], colors=f"C{i}", linewidths=1)
    ax.set_xlim(-3.2, 3.2)
    ax.set_ylim(-3.2, 3.2)
    ax.set_aspect("equal")
    ax.set_xlabel("$z_1$")
    ax.set_ylabel("$z_2$")
    ax.legend(loc="upper right", fontsize=8, markerscale=4)
axes[0].set_title("AVB: samples of q(z|x) and contours of p(z|x)")
axes[1].set_title("VAE: samples of q(z|x) and contours of p(z|x)")
plt.show()

# %% [markdown]
# The implicit encoder's samples fill four wedges that meet at the origin, and its model's
# posteriors (the contours, from the grid) have the same shapes. The Gaussian encoder's samples
# form axis-aligned ellipses, and the VAE's decoder has cut the latent plane into strips whose
# posteriors such ellipses fit better: the ELBO has shaped the model to suit its encoder, at a
# price in log-likelihood (the VAE's mean $\log p(\mathbf x)$ above is further from $-\log 4$).
# Both are short runs, and neither model reaches $-\log 4$; but for every image AVB's gap, even as
# an upper bound, is smaller than the VAE's. AVB's own ELBO estimate from $T$ lies near the
# quadrature value but is not a bound: it inherits the discriminator's error.
#
# ## 6. Exercises
#
# ### Exercise 1: the KL estimate from a discriminator's outputs
#
# Implement `my_kl_from_discriminator(d)`: given the outputs $D\in(0, 1)$ of a discriminator at
# samples of $q_1$ (a tensor of any shape), return the estimate of $\mathrm{KL}(q_1\,\|\,q_2)$ in
# nats, one number. (§2 shows which formula of the slides not to use.) Then apply it to the
# MLP of §1.


# %%
def my_kl_from_discriminator(d: torch.Tensor) -> torch.Tensor:
    ### BEGIN SOLUTION
    return (torch.log(d) - torch.log1p(-d)).mean()
    ### END SOLUTION


check_kl_from_discriminator(my_kl_from_discriminator)

# %%
d_mlp = torch.sigmoid(logits_p)
print(
    f"KL from the MLP's D: {fmt(my_kl_from_discriminator(d_mlp))} nats "
    f"(mean logit in §1: {fmt(kl_mlp)})"
)

# %% [markdown]
# ### Exercise 2: the two AVB losses
#
# Implement `my_avb_losses(decoder, discriminator, x, z, z_prior)`: `x` is a batch $[B, 4]$,
# `z` $[B, 2]$ the encoder's samples for it (differentiable in the encoder's weights), `z_prior`
# $[B, 2]$ samples of the prior; `decoder.log_prob(x, z)` and `discriminator(x, z)` return
# $[B]$. Return `(primal, dual)`, the batch means of $-\log p(\mathbf x\mid\mathbf z) +
# T(\mathbf x, \mathbf z)$ **with $T$'s weights held fixed** and of the logistic loss
# $\mathrm{softplus}(-T(\mathbf x, \mathbf z)) + \mathrm{softplus}(T(\mathbf x,
# \mathbf z_{\text{prior}}))$ **with $\mathbf z$ detached**. (`torch.func.functional_call(module,
# params, args)` evaluates a module with other weights, e.g. detached ones.) Then evaluate both on
# the toy AVB model.


# %%
def my_avb_losses(decoder, discriminator, x, z, z_prior):
    ### BEGIN SOLUTION
    frozen = {k: v.detach() for k, v in discriminator.named_parameters()}
    frozen.update(dict(discriminator.named_buffers()))
    t_frozen = torch.func.functional_call(discriminator, frozen, (x, z))
    primal = (-decoder.log_prob(x, z) + t_frozen).mean()
    dual = (
        torch.nn.functional.softplus(-discriminator(x, z.detach()))
        + torch.nn.functional.softplus(discriminator(x, z_prior))
    ).mean()
    return primal, dual
    ### END SOLUTION


check_avb_losses(my_avb_losses)

# %%
g = torch.Generator().manual_seed(9)
x_b = torch.eye(4)[torch.randint(0, 4, (20_000,), generator=g)]
with torch.no_grad():
    z_b = toy_avb.encoder.sample(x_b, generator=g)
    z_p = torch.randn(20_000, 2, generator=g)
    primal, dual = my_avb_losses(toy_avb.decoder, toy_avb.discriminator, x_b, z_b, z_p)
    ref = avb_losses(toy_avb.decoder, toy_avb.discriminator, x_b, z_b, z_p)
print(
    f"primal loss {fmt(primal)} nats (AVB's negative ELBO estimate; dgmlib: {fmt(ref['primal'])}), "
    f"dual loss {fmt(dual)} (dgmlib: {fmt(ref['dual'])}; 2 log 2 = {fmt(2 * math.log(2))} "
    "would mean that T cannot tell the pairs apart)"
)

# %% [markdown]
# **Further exercises (no check).**
#
# 1. Copy the `gauss_avb` part of `tools/train_lecture09.py` into a cell and train it with
#    `quadratic=False` (a plain MLP discriminator) and with half the steps. How far do the mean
#    of $T$ and AVB's ELBO end from $\tfrac12\log 5$ and $\mathbb E\log p(x)$, in standard errors?
# 2. In the same copy, replace $T$ in the primal loss by $e^T = D/(1 - D)$, the slide's formula.
#    What does the encoder converge to? (Hint: $\mathbb E_q[q/p]$ is minimised by a different
#    $q$ than $\mathbb E_q[\log q/p]$.)
# 3. Train the toy VAE with an importance-weighted bound (Lecture 05, `IWAEBound`) instead of the
#    ELBO, and compute its $\log p(\mathbf x)$ and ELBO gap on the grid. Does it close the gap to
#    AVB?
#
# ## Summary
#
# - A classifier of samples of $q_1$ (label 1) against as many samples of $q_2$ (label 0)
#   learns, in its logit, $\log q_1/q_2$. On $\mathcal N(1, 1)$ against $\mathcal N(0, 2^2)$,
#   logistic regression on $[1, x, x^2]$ recovered the closed-form coefficients within their
#   standard errors, and a small MLP's mean logit estimated $\mathrm{KL} = \log 2 - \tfrac14$
#   within its standard error.
# - The mean of $D/(1 - D)$, the ratio itself, estimates $1 + \chi^2$, not the KL; for the pair
#   above it is $\frac4{\sqrt7}e^{1/7}$, which the measurement confirmed. The KL estimate is the
#   mean of the logit $\log(D/(1-D))$.
# - AVB writes the KL term of an implicit encoder's ELBO as $\mathbb E_q[T^*]$, with $T^*$ the
#   optimal logit of a classifier of $(\mathbf x, \mathbf z\sim q)$ against $(\mathbf x,
#   \mathbf z\sim p)$, and trains it alongside. The encoder step may hold $T$ fixed because
#   $\mathbb E_q[\nabla_\phi T^*] = \mathbb E_q[\nabla_\phi\log q_\phi] = 0$ (checked).
# - On a linear-Gaussian model AVB's mean $T$ matched $I(x; z) = \tfrac12\log 5$ and its ELBO
#   estimate matched $\mathbb E\log p(x)$, within their standard errors.
# - On the paper's toy example, with $\log p(\mathbf x)$ and the ELBO gap computed on a grid
#   (for the implicit encoder as a mixture upper bound), AVB's gap was smaller than the
#   Gaussian VAE's for every image, and its posteriors took the non-Gaussian shapes that the
#   VAE's could not.
#
# ## References
#
# - {cite}`mescheder2017adversarial` — adversarial variational Bayes, its Propositions 1 and 2,
#   and the toy example.
# - {cite}`sugiyama2012density` — density-ratio estimation, by probabilistic classification among
#   other methods.
# - {cite}`mohamed2016learning` — the density-ratio trick in learning implicit models.
# - {cite}`goodfellow2014generative` — the optimal discriminator.
# - {cite}`yin2018semi` — semi-implicit variational distributions and their bounds.
# - {cite}`kingma2014auto` — the VAE and the reparametrization trick.

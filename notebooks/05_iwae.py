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
# # Lecture 05 — Tighter bounds: the importance-weighted autoencoder
#
# The VAE of Lecture 02 maximises the ELBO, and the ELBO is below $\log p(\mathbf x)$ by
# $\mathrm{KL}(q(\mathbf z\mid\mathbf x)\,\|\,p(\mathbf z\mid\mathbf x))$. A Gaussian encoder
# cannot match a posterior that is skewed, correlated or multimodal, so this gap never closes, and
# the decoder is trained on a biased objective: it is pushed towards models whose posteriors are
# easy to approximate, not towards the best density. This lecture replaces the single sample of
# the ELBO by an average of $K$ importance weights. The result is a family of bounds
# $\mathcal L_1 \le \mathcal L_2 \le \dots \le \log p(\mathbf x)$ that starts at the ELBO and
# closes the gap as $K$ grows, at no extra cost in parameters.
#
# **What you will learn**
#
# - the **importance-weighted bound** $\mathcal L_K$ {cite:p}`burda2016importance`, derived from
#   importance sampling and Jensen's inequality; why $\mathcal L_1$ is the ELBO, why
#   $\mathcal L_K$ never decreases with $K$, why it tends to $\log p(\mathbf x)$, and how fast
#   (the gap shrinks like $1/K$) — all checked on probabilistic PCA, where $\log p(\mathbf x)$ is
#   exact;
# - the **IWAE**: the same encoder and decoder as a VAE, trained on $\mathcal L_K$; its gradient
#   is an importance-weighted average of per-sample gradients;
# - how to **evaluate** a latent-variable model honestly: a $K = 5000$ importance-sampling
#   estimate of the negative log-likelihood, and the number of **active units**;
# - VAE against IWAE ($K = 5$, $50$) on Fashion-MNIST with Burda et al.'s architecture, beside
#   their MNIST numbers;
# - the price of a tight bound: the **signal-to-noise ratio** of the encoder's gradient falls
#   like $1/\sqrt K$ while the decoder's grows like $\sqrt K$ {cite:p}`rainforth2018tighter`,
#   reproduced on Rainforth et al.'s Gaussian model with fitted log-log slopes.
#
# **Prerequisites:** Lecture 01 (the ELBO, importance sampling, probabilistic PCA), Lecture 02
# (the VAE, reparametrization gradients), Lecture 04 (active units).
#
# **Follows:** the course's lecture notes on the variational autoencoder (lecture 4 of the
# *Deep Generative Models* slides), the part on tighter variational bounds and the
# signal-to-noise ratio of their gradients. The derivations and checks below are worked out
# independently.

# %%
import json
import math

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch.distributions import MultivariateNormal

from dgmlib.bounds import estimate_nll, iwae_bound
from dgmlib.checks import check_active_units, check_iwae_bound
from dgmlib.data import REPO_DATA_DIR, binarize_fixed, load_fashion_mnist
from dgmlib.diagnostics import active_units, gradient_snr, loglog_slope, mean_snr
from dgmlib.models import IWAE, PPCA, VAE
from dgmlib.plot import use_style
from dgmlib.train import load_model, sidecar_path
from dgmlib.utils import seed_everything

seed_everything(0)
use_style()
DT = torch.float64  # the exact checks (pPCA, gradient SNR) run in double precision


def fmt(v: float, digits: int = 4) -> str:
    """A number with `digits` significant digits (stable across runs)."""
    return f"{v:.{digits}g}"


# %% [markdown]
# ## 1. From importance sampling to a family of bounds
#
# Write $w(\mathbf z) = p(\mathbf x, \mathbf z) / q(\mathbf z\mid\mathbf x)$ for the
# **importance weight** of a latent sample. Whenever $q$ is positive where the posterior is,
#
# $$
# \mathbb E_{\mathbf z\sim q}\big[w(\mathbf z)\big]
#   = \int q(\mathbf z\mid\mathbf x)\,\frac{p(\mathbf x,\mathbf z)}{q(\mathbf z\mid\mathbf x)}\,
#     \mathrm d\mathbf z = p(\mathbf x),
# $$
#
# so one weight is an unbiased estimate of the evidence (Lecture 01, §3). Taking the logarithm
# *inside* the expectation gives the ELBO, $\mathbb E_q[\log w] \le \log \mathbb E_q[w]$ by
# Jensen's inequality. The gap is large when $w$ fluctuates a lot, because $\log$ is most concave
# where its argument is small.
#
# The remedy is to reduce the fluctuation *before* taking the log. Draw $K$ independent samples
# $\mathbf z_1, \dots, \mathbf z_K \sim q(\mathbf z\mid\mathbf x)$; their average weight
# $\hat p_K = \frac1K\sum_k w(\mathbf z_k)$ is still unbiased for $p(\mathbf x)$, with $K$ times
# less variance. Jensen's inequality applied to $\hat p_K$ gives the **importance-weighted bound**
#
# $$
# \mathcal L_K(\mathbf x) \;=\; \mathbb E_{\mathbf z_{1:K}\sim q}
#   \left[\log \frac1K \sum_{k=1}^K \frac{p(\mathbf x,\mathbf z_k)}{q(\mathbf z_k\mid\mathbf x)}\right]
#   \;\le\; \log \mathbb E\big[\hat p_K\big] = \log p(\mathbf x).
# $$
#
# For $K=1$ the sum has one term and $\mathcal L_1 = \mathbb E_q[\log w]$ is exactly the ELBO.
# In code, the inner quantity is a `logsumexp` of the $K$ log-weights minus $\log K$
# (`dgmlib.bounds.iwae_bound`; Exercise 1 asks you to write it), which stays finite even when
# every weight underflows: log-weights of a 784-pixel image are around $-250$ nats.
#
# ## 2. Three properties of $\mathcal L_K$
#
# **(a) Monotone in $K$.** Let $M < K$ and let $I$ be a subset of $\{1,\dots,K\}$ of size $M$,
# drawn uniformly at random. Every index belongs to $I$ with probability $M/K$, so averaging the
# subset means over all subsets gives back the full mean:
# $\frac1K\sum_{k=1}^K w_k = \mathbb E_I\big[\frac1M\sum_{i\in I} w_i\big]$. Jensen's inequality,
# now for the expectation over $I$, and then the fact that each subset of $M$ samples is itself an
# i.i.d. draw of size $M$, give
#
# $$
# \mathcal L_K
#   = \mathbb E_{\mathbf z_{1:K}}\Big[\log \mathbb E_I \tfrac1M \textstyle\sum_{i\in I} w_i\Big]
#   \;\ge\; \mathbb E_{\mathbf z_{1:K}}\,\mathbb E_I\Big[\log \tfrac1M \textstyle\sum_{i\in I} w_i\Big]
#   = \mathcal L_M .
# $$
#
# **(b) Consistent.** By the law of large numbers $\hat p_K \to p(\mathbf x)$ almost surely, and
# $\log$ is continuous at $p(\mathbf x) > 0$; if the weights are bounded (or, more generally, if
# $\log \hat p_K$ is uniformly integrable) the expectations converge too:
# $\mathcal L_K \to \log p(\mathbf x)$.
#
# **(c) The gap shrinks like $1/K$.** Expand $\log \hat p_K$ to second order around
# $p = p(\mathbf x)$: $\log \hat p_K \approx \log p + (\hat p_K - p)/p - (\hat p_K - p)^2/(2p^2)$.
# The linear term has mean zero and the quadratic term has mean $\mathrm{Var}[w]/(K p^2)$, so
#
# $$
# \log p(\mathbf x) - \mathcal L_K \;\approx\; \frac{\mathrm{Var}_q[w]}{2K\,p(\mathbf x)^2}
#   \;=\; \frac{\chi^2\big(p(\mathbf z\mid\mathbf x)\,\|\,q(\mathbf z\mid\mathbf x)\big)}{2K}
#   \qquad (K \text{ large}),
# $$
#
# with $\chi^2(p\,\|\,q) = \mathbb E_q[(p/q)^2] - 1$, because $w/p(\mathbf x) =
# p(\mathbf z\mid\mathbf x)/q(\mathbf z\mid\mathbf x)$ {cite:p}`domke2018importance`. The ELBO's
# gap is the KL divergence; the large-$K$ gap is governed by a different divergence, which
# punishes an encoder that is *too narrow* far more than one that is too wide.
#
# ## 3. Check on probabilistic PCA, where $\log p(\mathbf x)$ is exact
#
# We take a pPCA model ($d = 6$ observed, $k = 2$ latent dimensions), one data point, and a
# deliberately imperfect Gaussian $q(\mathbf z\mid\mathbf x)$: the exact posterior mean shifted by
# a fraction of a standard deviation, and a diagonal covariance 1.5 times wider than the
# posterior's variances (it ignores their correlation). Lecture 01 gives the closed forms of
# $\log p(\mathbf x)$, the posterior and the ELBO (`PPCA.log_prob`, `posterior`, `elbo`). For two
# Gaussians the $\chi^2$ divergence has a closed form too: completing the square in
# $\int p^2/q$ gives, with $P = 2\Sigma_p^{-1} - \Sigma_q^{-1}$ (it must be positive definite,
# otherwise the weights have infinite variance) and $\mathbf h = 2\Sigma_p^{-1}\mathbf m_p -
# \Sigma_q^{-1}\mathbf m_q$,
#
# $$
# \log \int \frac{p^2}{q} = \tfrac12\log|\Sigma_q| - \log|\Sigma_p| - \tfrac12\log|P|
#   + \tfrac12\,\mathbf h^\top P^{-1}\mathbf h - \mathbf m_p^\top\Sigma_p^{-1}\mathbf m_p
#   + \tfrac12\,\mathbf m_q^\top\Sigma_q^{-1}\mathbf m_q .
# $$

# %%
gen = torch.Generator().manual_seed(5)
d, k = 6, 2
ppca = PPCA(
    W=1.5 * torch.randn(d, k, generator=gen, dtype=DT), mu=torch.zeros(d, dtype=DT), sigma2=0.5
)
x = ppca.sample(1, gen)  # one observation [1, d]

post = ppca.posterior(x)
m_p, S_p = post.loc[0], post.covariance_matrix.reshape(k, k)
m_q = m_p + torch.tensor([0.8, -0.6], dtype=DT) * S_p.diagonal().sqrt()  # shifted mean
S_q = torch.diag(1.5 * S_p.diagonal())  # mean-field and too wide
q = MultivariateNormal(m_q, S_q)

log_px = ppca.log_prob(x).item()
elbo = ppca.elbo(x, q).item()


def chi2_gaussians(m_p, S_p, m_q, S_q) -> float:
    """chi^2(N(m_p, S_p) || N(m_q, S_q)) = int p^2 / q - 1, by completing the square."""
    Pp, Pq = torch.linalg.inv(S_p), torch.linalg.inv(S_q)
    P = 2 * Pp - Pq
    assert torch.linalg.eigvalsh(P).min() > 0, "q too narrow: the weights have infinite variance"
    h = 2 * Pp @ m_p - Pq @ m_q
    log_int = (
        0.5 * torch.logdet(S_q)
        - torch.logdet(S_p)
        - 0.5 * torch.logdet(P)
        + 0.5 * h @ torch.linalg.solve(P, h)
        - m_p @ Pp @ m_p
        + 0.5 * m_q @ Pq @ m_q
    )
    return torch.expm1(log_int).item()


chi2 = chi2_gaussians(m_p, S_p, m_q, S_q)
print(f"log p(x) = {fmt(log_px)}   ELBO = {fmt(elbo)}   KL(q || p(z|x)) = {fmt(log_px - elbo)}")
print(f"chi^2(p(z|x) || q) = {fmt(chi2)}")

# %% [markdown]
# Now the Monte Carlo side. For each $K$ we draw $M = 5000$ independent sets of $K$ samples from
# $q$, evaluate the bound's inner quantity $\log\hat p_K$ on each set, and average: this estimates
# $\mathcal L_K$ with a standard error we can quote.

# %%
Ks_ppca = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]
M = 5000
chol_q = torch.linalg.cholesky(S_q)
L_mean, L_se = [], []
for K in Ks_ppca:
    z = m_q + torch.randn(M, K, k, generator=gen, dtype=DT) @ chol_q.T  # [M, K, k]
    log_w = ppca.joint_log_prob(x, z) - q.log_prob(z)  # [M, K]
    L_hat = iwae_bound(log_w, dim=1)  # log (1/K) sum_k w_k, one per set: [M]
    L_mean.append(L_hat.mean().item())
    L_se.append(L_hat.std().item() / math.sqrt(M))
L_mean, L_se = np.array(L_mean), np.array(L_se)

print("   K    L_K (MC)    +- s.e.    log p(x) - L_K    chi^2/(2K)")
for K, m, s in zip(Ks_ppca, L_mean, L_se, strict=True):
    print(f"{K:4d}   {m:9.4f}   {s:8.4f}   {log_px - m:12.4f}   {chi2 / (2 * K):11.4f}")

# %% [markdown]
# **Check.** (i) $\mathcal L_1$ agrees with the closed-form ELBO within 4 standard errors;
# (ii) each step up in $K$ does not lower the estimate by more than 3 standard errors of the
# difference (monotone within Monte Carlo error); (iii) every $\mathcal L_K$ is below
# $\log p(\mathbf x)$ up to 3 standard errors; (iv) the gap at $K = 1000$ is less than 1% of the
# ELBO's gap; (v) for $K \ge 10$ the gap matches $\chi^2/(2K)$ to within 25% plus 3 standard
# errors.

# %%
gap = log_px - L_mean
print(f"L_1 (MC) = {L_mean[0]:.3f} +- {L_se[0]:.3f}   |   ELBO (closed form) = {elbo:.3f}")
assert abs(L_mean[0] - elbo) < 4 * L_se[0]
steps = np.diff(L_mean)
steps_se = np.sqrt(L_se[1:] ** 2 + L_se[:-1] ** 2)
print("smallest step L_{K'} - L_K in units of its s.e.:", fmt((steps / steps_se).min(), 3))
assert np.all(steps > -3 * steps_se), "L_K decreased by more than the Monte Carlo error"
assert np.all(L_mean < log_px + 3 * L_se)
print(f"gap at K = 1000 / gap at K = 1 = {fmt(gap[-1] / gap[0], 2)}")
assert gap[-1] < 0.01 * gap[0]
large = np.array(Ks_ppca) >= 10
pred = chi2 / (2 * np.array(Ks_ppca))
assert np.all(np.abs(gap - pred)[large] < 0.25 * pred[large] + 3 * L_se[large])
print("all checks passed: L_1 = ELBO, L_K monotone, below log p(x), gap ~ chi^2 / (2K)")

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
ax = axes[0]
ax.errorbar(
    Ks_ppca,
    L_mean,
    yerr=2 * L_se,
    fmt="o-",
    color="tab:blue",
    ms=4,
    label=r"$\mathcal{L}_K$ (Monte Carlo, $\pm 2$ s.e.)",
)
ax.axhline(log_px, color="black", lw=1.2, label=r"$\log p(\mathbf{x})$ (exact)")
ax.axhline(elbo, color="tab:red", ls="--", lw=1.2, label="ELBO (exact)")
ax.set_xscale("log")
ax.set_xlabel("number of samples $K$")
ax.set_ylabel("nats")
ax.set_title(r"$\mathcal{L}_K$ climbs from the ELBO to $\log p(\mathbf{x})$")
ax.legend(loc="lower right")
ax = axes[1]
Ks_arr = np.array(Ks_ppca)
ax.errorbar(
    Ks_arr,
    gap,
    yerr=2 * L_se,
    fmt="o",
    color="tab:blue",
    ms=4,
    label=r"$\log p(\mathbf{x}) - \mathcal{L}_K$",
)
ax.plot(Ks_arr, pred, "k--", lw=1, label=r"$\chi^2 / (2K)$")
ax.set_xscale("log")
ax.set_yscale("log")
ax.set_xlabel("number of samples $K$")
ax.set_ylabel("gap (nats)")
ax.set_title(r"The gap shrinks like $1/K$")
ax.legend(loc="lower left")
plt.show()

# %% [markdown]
# Two features are worth noticing. Most of the improvement comes from the first few samples:
# $K = 5$ already removes most of the KL gap here. And at small $K$ the gap is *larger* than
# $\chi^2/(2K)$: the second-order expansion needs $\hat p_K$ to be close to $p(\mathbf x)$, which
# is only true once $K \gg \chi^2$.
#
# ## 4. The IWAE: training on $\mathcal L_K$
#
# The **importance-weighted autoencoder** {cite:p}`burda2016importance` is a VAE — Gaussian
# encoder $q_\phi(\mathbf z\mid\mathbf x)$, decoder $p_\theta(\mathbf x\mid\mathbf z)$, prior
# $\mathcal N(0, I)$ — trained on $\mathcal L_K$ instead of the ELBO. With reparametrized samples
# $\mathbf z_k = \boldsymbol\mu_\phi(\mathbf x) + \boldsymbol\sigma_\phi(\mathbf x)\odot\boldsymbol\epsilon_k$
# and $\log w_k = \log p_\theta(\mathbf x, \mathbf z_k) - \log q_\phi(\mathbf z_k\mid\mathbf x)$,
# the gradient of one estimate is
#
# $$
# \nabla_{\theta,\phi}\,\log \frac1K\sum_k w_k
#   = \sum_{k=1}^K \tilde w_k\, \nabla_{\theta,\phi} \log w_k ,
# \qquad \tilde w_k = \frac{w_k}{\sum_j w_j} = \operatorname{softmax}(\log w)_k .
# $$
#
# Each sample contributes the gradient a VAE would use for it, but weighted by its normalised
# importance weight: samples that explain $\mathbf x$ well dominate, and the encoder is no longer
# penalised for putting some mass where the posterior has little — the samples there get small
# weights. With $K = 1$ the weight is $1$ and we recover the VAE's gradient. In `dgmlib` the whole
# objective is two lines of `IWAE.loss`: `log_w = log p(x|z) + log p(z) - log q(z|x)` for $K$
# samples of shape $[K, B]$, then `-iwae_bound(log_w).mean()`; autograd produces the weighted
# gradient above.
#
# ## 5. VAE against IWAE on Fashion-MNIST
#
# We train three models with the one-stochastic-layer architecture of Burda et al.
# (`VAE.for_mnist()`: encoder 784–200–200–(50+50), Bernoulli decoder 50–200–200–784, tanh) and
# identical initial weights, differing only in the objective: the ELBO ($K = 1$, analytic KL),
# $\mathcal L_5$ and $\mathcal L_{50}$. Training takes too long for a notebook (an IWAE step with
# $K = 50$ decodes 50 latent samples per image), so the models were trained by a documented,
# deterministic command that writes small checkpoints with SHA-256 sidecars and a JSON of results:
#
# ```
# make checkpoints          # runs: python tools/train_lecture05.py
# ```
#
# It trains each model on the 60k training images, dynamically binarized, with batches of 100 and
# Adam (the paper's hyper-parameters, its learning-rate decay compressed to one epoch per stage),
# for the same number of epochs; then, on the test set binarized once with a fixed seed, it
# measures the ELBO, $\mathcal L_5$, $\mathcal L_{50}$ and the active units on all 10 000 images,
# and the **negative log-likelihood** estimated by $-\mathcal L_{5000}$ on a fixed random subset of
# the test set. That estimate is an upper bound on $-\log p(\mathbf x)$ in expectation (by §2),
# tight to a fraction of a nat at $K = 5000$; it is the standard yardstick for latent-variable
# models, and it treats all three models the same way whatever they were trained on.

# %%
CKPT = REPO_DATA_DIR / "checkpoints"
results = json.loads((CKPT / "l05_results.json").read_text())
settings = results["settings"]
print("made by:", results["command"])
for key in ("epochs", "batch_size", "optimizer", "learning_rate", "nll_K", "nll_images"):
    print(f"  {key}: {settings[key]}")

models = {}
for name, r in results["models"].items():
    model = VAE.for_mnist() if r["K_train"] == 1 else IWAE.for_mnist(K=r["K_train"])
    # load_model refuses a file whose SHA-256 differs from its sidecar
    load_model(model, CKPT / r["checkpoint"])
    assert sidecar_path(CKPT / r["checkpoint"]).read_text().split()[0] == r["sha256"]
    models[name] = model.eval()
print(
    "checkpoints verified:",
    ", ".join(f"{r['checkpoint']} ({r['sha256'][:12]})" for r in results["models"].values()),
)

# %% [markdown]
# The table puts our Fashion-MNIST figures beside Burda et al.'s MNIST figures for the same
# architecture (their Table 1, one stochastic layer). The numbers are not comparable across data
# sets — binarized Fashion-MNIST has far more ink per image than MNIST and costs about three times
# as many nats — and our models trained for a few epochs rather than 3280, so only the
# *differences between rows* are comparable.

# %%
names = {"vae": "VAE   (K = 1)", "iwae5": "IWAE  (K = 5)", "iwae50": "IWAE  (K = 50)"}
burda = results["burda2016_table1_mnist"]
burda_rows = {"vae": burda["vae_k1"], "iwae5": burda["iwae_k5"], "iwae50": burda["iwae_k50"]}
n_nll, n_all = settings["nll_images"], settings["test_bounds_images"]
print(
    f"{'':16s}| Fashion-MNIST (ours, {settings['epochs']} epochs), nats{'':17s}| MNIST (Burda et al.)"
)
print(f"{'model':16s}|   ELBO     L_5      L_50    NLL(K=5000)  active | NLL      active")
print(f"{'':16s}| ({n_all} test images)          ({n_nll} images)   units  |          units")
print("-" * 93)
for name, r in results["models"].items():
    b = burda_rows[name]
    print(
        f"{names[name]:16s}| {r['elbo']:7.2f}  {r['iwae_5']:7.2f}  {r['iwae_50']:7.2f}  "
        f"{r['nll']:7.2f}      {r['active_units']:3d}    | {b['nll']:6.2f}   {b['active_units']:3d}"
    )
res = results["models"]
gain = res["vae"]["nll"] - res["iwae50"]["nll"]
print(
    f"\nNLL gain of IWAE (K = 50) over the VAE: {gain:.2f} nats here, "
    f"{burda['vae_k1']['nll'] - burda['iwae_k50']['nll']:.2f} nats in Burda et al. on MNIST"
)
print(
    f"standard error of each NLL mean over the subset: about {res['vae']['nll_sem']:.1f} nats "
    "(image-to-image spread; the difference is paired, see below)"
)

# %% [markdown]
# The comparison of the NLL rests on the *same* images for every model, so the relevant noise is
# that of the per-image *difference*, far smaller than the spread of the NLLs themselves. The JSON
# holds the per-image estimates for the first 100 images of the subset, enough to see it:

# %%
nb = {n: np.array(r["nll_notebook_subset"]) for n, r in res.items()}
diff = nb["vae"] - nb["iwae50"]
print(
    f"first 100 subset images: VAE NLL - IWAE(50) NLL = {diff.mean():.2f} +- {diff.std(ddof=1) / 10:.2f} nats "
    f"(paired s.e.); IWAE(50) better on {int((diff > 0).sum())} of 100 images"
)
assert res["iwae50"]["nll"] < res["vae"]["nll"], "IWAE (K = 50) should reach a better test NLL"
assert diff.mean() > 3 * diff.std(ddof=1) / 10
assert res["iwae50"]["active_units"] >= res["vae"]["active_units"]

# %% [markdown]
# **Check: recompute the stored NLL.** The notebook re-estimates $-\mathcal L_{5000}$ on those
# 100 test images for each model from the verified checkpoints, with a different random
# generator than the training script. Two $K = 5000$ estimates of the same image differ by
# Monte Carlo noise — a few tenths of a nat for the VAE, more for the IWAE ($K = 50$), whose
# broad encoder makes the importance weights more variable. The means over the 100 images must
# agree within 4 standard errors of the mean difference.

# %%
images, _ = load_fashion_mnist("test")
x_test = binarize_fixed(images, seed=0).unsqueeze(1)  # the training script's fixed binarization
subset = torch.randperm(len(x_test), generator=torch.Generator().manual_seed(0))[:100]
x_nb = x_test[subset]  # the first 100 images of the NLL subset (see settings["nll_subset"])

recomputed = {}
for name, model in models.items():
    g = torch.Generator().manual_seed(2024)

    def log_weights(xb, kk, model=model, g=g):
        return model.log_weights(xb, kk, generator=g)

    nll = torch.cat(
        [estimate_nll(log_weights, x_nb[i : i + 50], K=5000, chunk=500) for i in (0, 50)]
    )
    recomputed[name] = nll.numpy()

print("model             stored mean   recomputed mean   difference   s.e. of the difference")
for name in models:
    dd = recomputed[name] - nb[name]
    se = dd.std(ddof=1) / math.sqrt(len(dd))
    print(
        f"{names[name]:16s}    {nb[name].mean():8.2f}       {recomputed[name].mean():8.2f}"
        f"       {dd.mean():+6.2f}         {se:.2f}"
    )
    assert abs(dd.mean()) < 4 * se
d_re = recomputed["vae"] - recomputed["iwae50"]
assert d_re.mean() > 3 * d_re.std(ddof=1) / 10
print(f"recomputed VAE - IWAE(50): {d_re.mean():.2f} nats: the stored figures are confirmed")

# %% [markdown]
# **Reading the table.**
#
# - **The bounds disagree about which model is best.** The VAE has by far the best ELBO (and
#   even the best $\mathcal L_5$); the IWAE with $K = 50$ has an ELBO tens of nats lower, yet the
#   best $\mathcal L_{50}$. A bound measures the model *and* the encoder together. The IWAE's
#   encoder is a poor posterior approximation when used alone, one sample at a time: it was never
#   asked to be one. It only has to propose samples among which the weights find good ones, and a
#   broad proposal does that well. Judging an IWAE by its ELBO confuses the quality of the model
#   with that of its encoder.
# - **The NLL settles it.** With $K = 5000$ samples the estimate depends far less on the encoder,
#   and by this yardstick IWAE ($K = 50$) is better than the VAE, with IWAE ($K = 5$) in between,
#   as in Burda et al.; the gain is of the same order as theirs.
# - **Active units.** A unit $j$ is active when its posterior mean varies across the data,
#   $\mathrm{Var}_{\mathbf x}\,\mathbb E_q[z_j\mid\mathbf x] > 0.01$ (Lecture 04). The VAE uses only
#   a handful of its 50 units; the IWAE ($K = 50$) uses almost all of them. The ELBO charges the
#   full KL for every unit that carries information and punishes any mismatch between $q$ and the
#   true posterior, so the VAE switches most units off; under the tighter bound an extra unit
#   costs less, because imprecise proposals are forgiven by the weights. The right-hand plot shows
#   the per-unit variances behind the counts.

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
colors = {"vae": "tab:red", "iwae5": "tab:orange", "iwae50": "tab:blue"}
ax = axes[0]
for name, r in res.items():
    ep = [c["epoch"] for c in r["curves"]]
    ax.plot(
        ep,
        [-c["test_iwae_50"] for c in r["curves"]],
        "o-",
        color=colors[name],
        ms=4,
        label=names[name],
    )
ax.set_xticks(ep)
ax.set_xlabel("epoch")
ax.set_ylabel(r"$-\mathcal{L}_{50}$ on 1000 test images (nats)")
ax.set_title("Test bound during training (lower is better)")
ax.legend()
ax = axes[1]
for name, r in res.items():
    v = np.sort(np.array(r["mu_variance"]))[::-1]
    ax.semilogy(
        np.arange(1, len(v) + 1),
        v,
        "o-",
        ms=3,
        color=colors[name],
        label=f"{names[name]}: {r['active_units']} active",
    )
ax.axhline(settings["active_unit_threshold"], color="black", ls="--", lw=1, label="threshold 0.01")
ax.set_xlabel("latent unit (sorted)")
ax.set_ylabel(r"$\mathrm{Var}_x\, \mathbb{E}_q[z_j \mid x]$")
ax.set_title("Active units on the 10 000 test images")
ax.legend(loc="upper right", fontsize=8)
plt.show()

# %% [markdown]
# ## 6. The price of a tight bound: the signal-to-noise ratio of the gradients
#
# If $\mathcal L_K$ is better for large $K$, why not take $K$ huge? Because of what happens to the
# *encoder's* gradient {cite:p}`rainforth2018tighter`. As $K \to \infty$, $\mathcal L_K \to \log
# p(\mathbf x)$, which does not depend on the encoder at all, so the *expected* encoder gradient
# $\nabla_\phi \mathcal L_K$ vanishes — by §2(c), like $1/K$. Its Monte Carlo estimate, an average
# over $K$ samples, has a standard deviation that falls only like $1/\sqrt K$. The
# **signal-to-noise ratio**
#
# $$
# \mathrm{SNR}_K = \frac{\big|\mathbb E[\Delta_K]\big|}{\mathrm{sd}[\Delta_K]},
# \qquad \Delta_K = \nabla \log \frac1K \sum_{k=1}^K w_k \quad\text{(one estimate)},
# $$
#
# therefore behaves like $(1/K)/(1/\sqrt K) = 1/\sqrt K$ for the encoder: the gradient drowns in its
# own noise. The decoder's expected gradient tends to $\nabla_\theta \log p(\mathbf x) \ne 0$ while
# its noise falls like $1/\sqrt K$, so its SNR *grows* like $\sqrt K$. A tighter bound trains the
# generative model better and the inference network worse.
#
# **Rainforth et al.'s Gaussian model.** In $D = 20$ dimensions,
# $\mathbf z \sim \mathcal N(\boldsymbol\mu, I)$ and $\mathbf x \mid \mathbf z \sim
# \mathcal N(\mathbf z, I)$, so $p(\mathbf x) = \mathcal N(\boldsymbol\mu, 2I)$ and
# $p(\mathbf z\mid\mathbf x) = \mathcal N\big(\tfrac12(\boldsymbol\mu + \mathbf x), \tfrac12 I\big)$.
# The decoder's parameter is $\theta = \boldsymbol\mu$; the encoder is $q(\mathbf z\mid\mathbf x)
# = \mathcal N(A\mathbf x + \mathbf b, \sigma^2 I)$ with $\sigma^2 = 2/3$ fixed, so $\phi = (A,
# \mathbf b)$, optimal at $A = \tfrac12 I$, $\mathbf b = \tfrac12\boldsymbol\mu$. We generate 1024
# points from a random $\boldsymbol\mu$, set the parameters to their optimum ($\boldsymbol\mu$ =
# the data mean), perturb every parameter by Gaussian noise of standard deviation $0.01$, and
# study the gradient at one data point.
#
# **The gradients in closed form.** With $\mathbf m = A\mathbf x + \mathbf b$ and
# $\mathbf z_k = \mathbf m + \sigma\boldsymbol\epsilon_k$, the log-weight is, up to a constant,
#
# $$
# \log w_k = -\tfrac12\|\mathbf z_k - \boldsymbol\mu\|^2 - \tfrac12\|\mathbf x - \mathbf z_k\|^2
#            + \tfrac12\|\boldsymbol\epsilon_k\|^2
# $$
#
# (the last term is $-\log q$ at the reparametrized sample; it does not depend on $\phi$ for fixed
# $\boldsymbol\epsilon_k$). Hence $\nabla_{\boldsymbol\mu}\log w_k = \mathbf z_k - \boldsymbol\mu$,
# $\nabla_{\mathbf z}\log w_k = \mathbf x + \boldsymbol\mu - 2\mathbf z_k$, and by §4
#
# $$
# \Delta_{\boldsymbol\mu} = \sum_k \tilde w_k(\mathbf z_k - \boldsymbol\mu), \qquad
# \Delta_{\mathbf b} = \sum_k \tilde w_k(\mathbf x + \boldsymbol\mu - 2\mathbf z_k), \qquad
# \Delta_A = \Delta_{\mathbf b}\,\mathbf x^\top .
# $$
#
# Substituting $\mathbf z_k = \mathbf m + \sigma\boldsymbol\epsilon_k$ and expanding the squares
# (with $\sigma^2 = 2/3$, the terms in $\|\boldsymbol\epsilon_k\|^2$ add up to
# $\tfrac12 - \sigma^2 = -\tfrac16$),
#
# $$
# \log w_k = \sigma\,\mathbf a^\top\boldsymbol\epsilon_k - \tfrac16\|\boldsymbol\epsilon_k\|^2
#   + \text{const}, \qquad \mathbf a = \mathbf x + \boldsymbol\mu - 2\mathbf m,
# \qquad
# \Delta_{\boldsymbol\mu} = \mathbf m - \boldsymbol\mu + \sigma\bar{\boldsymbol\epsilon},
# \qquad
# \Delta_{\mathbf b} = \mathbf a - 2\sigma\bar{\boldsymbol\epsilon},
# \qquad
# \bar{\boldsymbol\epsilon} = \sum_k \tilde w_k\boldsymbol\epsilon_k :
# $$
#
# one weighted average of the noise gives every gradient, which makes the experiment cheap. Two
# consequences can be read off. First, the weights see $\boldsymbol\epsilon_k$ only through its
# component along $\mathbf a$ and its length, so by symmetry $\mathbb E[\Delta_{\mathbf b}]$
# points along $\mathbf a$, for every $K$. We measure the encoder's SNR on that component,
# $\hat{\mathbf a}^\top\Delta_{\mathbf b}$, which carries all of its signal
# ($\Delta_A = \Delta_{\mathbf b}\mathbf x^\top$ has the same SNR row by row); for the decoder we
# average the SNR of the 20 coordinates of $\Delta_{\boldsymbol\mu}$. Second, as
# $K \to \infty$, $\bar{\boldsymbol\epsilon}$ tends to the mean of the density proportional to
# $\mathcal N(\boldsymbol\epsilon; 0, I)\,e^{\log w}$, which is the Gaussian
# $\mathcal N(\tfrac34\sigma\mathbf a, \tfrac34 I)$. Then $\Delta_{\mathbf b} \to \mathbf a(1 -
# \tfrac32\sigma^2) = 0$, the vanishing encoder signal, and $\Delta_{\boldsymbol\mu} \to
# \tfrac12(\mathbf x - \boldsymbol\mu) = \nabla_{\boldsymbol\mu}\log p(\mathbf x)$, as promised.
#
# **Check: the closed-form gradients against autograd** on one draw of $K = 7$ samples: autograd
# differentiates the bound written with the full Gaussian log-densities, so the check covers both
# the expansion and the gradient formulas.

# %%
D = 20
g = torch.Generator().manual_seed(0)
mu_true = torch.randn(D, generator=g, dtype=DT)
X_rf = mu_true + math.sqrt(2.0) * torch.randn(1024, D, generator=g, dtype=DT)  # x ~ N(mu, 2 I)
mu_opt = X_rf.mean(0)
perturb = 0.01
mu_0 = mu_opt + perturb * torch.randn(D, generator=g, dtype=DT)
A_0 = 0.5 * torch.eye(D, dtype=DT) + perturb * torch.randn(D, D, generator=g, dtype=DT)
b_0 = 0.5 * mu_opt + perturb * torch.randn(D, generator=g, dtype=DT)
sigma = math.sqrt(2.0 / 3.0)
x_rf = X_rf[0]


def iwae_gradients(eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Closed-form IWAE gradients for noise eps [R, K, D]: (Delta_mu [R, D], Delta_b [R, D])."""
    m = A_0 @ x_rf + b_0
    a = x_rf + mu_0 - 2 * m
    log_w = sigma * (eps @ a) - eps.pow(2).sum(-1) / 6  # up to a constant, [R, K]
    w = torch.softmax(log_w, dim=1)  # normalised weights [R, K]
    eps_bar = torch.einsum("rk,rkd->rd", w, eps)  # [R, D]
    return m - mu_0 + sigma * eps_bar, a - 2 * sigma * eps_bar


def normal_log_prob(v, mean, var):
    return -0.5 * ((v - mean).pow(2) / var + math.log(2 * math.pi * var)).sum(-1)


eps_check = torch.randn(1, 7, D, generator=g, dtype=DT)
mu_, A_, b_ = (t.clone().requires_grad_() for t in (mu_0, A_0, b_0))
z_check = A_ @ x_rf + b_ + sigma * eps_check
log_w_check = (
    normal_log_prob(z_check, mu_, 1.0)
    + normal_log_prob(x_rf, z_check, 1.0)
    - normal_log_prob(z_check, A_ @ x_rf + b_, sigma**2)
)
iwae_bound(log_w_check, dim=1).sum().backward()
d_mu, d_b = iwae_gradients(eps_check)
err = max(
    (d_mu[0] - mu_.grad).abs().max().item(),
    (d_b[0] - b_.grad).abs().max().item(),
    (torch.outer(d_b[0], x_rf) - A_.grad).abs().max().item(),
)
print(f"max |closed form - autograd| over the gradients of mu, b and A: {err:.1e}")
assert err < 1e-10

# %% [markdown]
# **The experiment.** For each $K \in \{1, 3, 10, 30, 100, 300, 1000\}$ we draw $R$ independent
# gradient estimates and compute the SNR with `dgmlib.diagnostics.gradient_snr`. The encoder's
# signal is tiny at large $K$ — that is the point — so measuring it needs many repeats: we use
# $R = 20\,000$ draws of $\boldsymbol\epsilon_{1:K}$, each paired with its mirror image
# $-\boldsymbol\epsilon_{1:K}$ (**antithetic** sampling: both are draws from $\mathcal N(0, I)$, so
# the mean over all $2R$ estimates is still unbiased, but near the optimum the encoder's gradient
# is almost an odd function of $\boldsymbol\epsilon$, and the pairs cancel most of the noise of the
# *mean*). The standard deviation is that of single estimates, over all $2R$. Everything is
# vectorised over the repeats, in chunks, in double precision (the noise is drawn in single
# precision, which is faster, and promoted).

# %%
Ks_snr = [1, 3, 10, 30, 100, 300, 1000]
R = 20_000
a_vec = x_rf + mu_0 - 2 * (A_0 @ x_rf + b_0)
a_hat = a_vec / a_vec.norm()
g_snr = torch.Generator().manual_seed(1)
snr_dec, snr_enc, snr_enc_se, enc_mean, enc_sd = [], [], [], [], []
for K in Ks_snr:
    d_mu_all, d_b_all, pair_means = [], [], []
    chunk = max(1, 50_000 // K)
    for start in range(0, R, chunk):
        eps = torch.randn(min(chunk, R - start), K, D, generator=g_snr).to(DT)
        d_mu, d_b = iwae_gradients(torch.cat([eps, -eps]))  # antithetic pairs
        d_b = d_b @ a_hat  # the encoder's gradient along its mean direction
        d_mu_all.append(d_mu)
        d_b_all.append(d_b)
        pair_means.append(0.5 * (d_b[: len(eps)] + d_b[len(eps) :]))
    d_mu_all, d_b_all, pair_means = torch.cat(d_mu_all), torch.cat(d_b_all), torch.cat(pair_means)
    snr_dec.append(mean_snr(d_mu_all))  # [2R, D]: SNR per coordinate, averaged
    snr_enc.append(gradient_snr(d_b_all[:, None]).item())  # [2R, 1]
    enc_mean.append(d_b_all.mean().abs().item())
    enc_sd.append(d_b_all.std().item())
    # standard error of the encoder's SNR estimate: that of the mean (from the R independent
    # pair means) divided by the standard deviation
    snr_enc_se.append(pair_means.std().item() / math.sqrt(R) / enc_sd[-1])

slope_dec, _ = loglog_slope(Ks_snr, snr_dec)
slope_enc, _ = loglog_slope(Ks_snr, snr_enc)
print("    K    SNR decoder (mu)    SNR encoder (A, b) +- s.e.")
for K, sd_, se_, err in zip(Ks_snr, snr_dec, snr_enc, snr_enc_se, strict=True):
    print(f"{K:5d}    {sd_:12.3g}        {se_:10.3g} +- {err:.3f}")
print(
    f"fitted log-log slopes: decoder {slope_dec:+.2f} (theory +1/2), encoder {slope_enc:+.2f} (theory -1/2)"
)

# %% [markdown]
# **Check: the slopes.** A least-squares line through $(\log K, \log\mathrm{SNR})$ should have
# slope $+\tfrac12$ for the decoder and $-\tfrac12$ for the encoder, within $\pm 0.1$.

# %%
assert abs(slope_dec - 0.5) < 0.1, slope_dec
assert abs(slope_enc + 0.5) < 0.1, slope_enc
print("SNR slopes agree with the theory: decoder ~ sqrt(K), encoder ~ 1/sqrt(K)")

# %%
Ks_arr = np.array(Ks_snr, dtype=float)
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
ax = axes[0]
ax.loglog(Ks_arr, snr_dec, "o-", color="tab:blue", label=f"decoder $\\mu$: slope {slope_dec:+.2f}")
ax.errorbar(
    Ks_arr,
    snr_enc,
    yerr=2 * np.array(snr_enc_se),
    fmt="s-",
    ms=5,
    color="tab:red",
    label=f"encoder $(A, b)$: slope {slope_enc:+.2f}",
)
ax.loglog(Ks_arr, snr_dec[0] * Ks_arr**0.5, "k:", lw=1, label=r"$\propto K^{\pm 1/2}$")
ax.loglog(Ks_arr, snr_enc[0] * Ks_arr**-0.5, "k:", lw=1)
ax.set_xlabel("number of samples $K$")
ax.set_ylabel("SNR")
ax.set_title("Gradient signal-to-noise ratio")
ax.legend()
ax = axes[1]
ax.loglog(
    Ks_arr, enc_mean, "s-", color="tab:red", label=r"$|\mathbb{E}[\hat a^\top \Delta_b]|$ (signal)"
)
ax.loglog(Ks_arr, enc_sd, "^-", color="tab:purple", label=r"sd$[\hat a^\top \Delta_b]$ (noise)")
ax.loglog(Ks_arr, enc_mean[0] / Ks_arr, "k--", lw=1, label=r"$\propto 1/K$")
ax.loglog(Ks_arr, enc_sd[0] / Ks_arr**0.5, "k:", lw=1, label=r"$\propto 1/\sqrt{K}$")
ax.set_xlabel("number of samples $K$")
ax.set_title("Encoder: the signal falls faster than the noise")
ax.legend(loc="lower left", fontsize=8)
plt.show()

# %% [markdown]
# In the left panel the error bars are $\pm 2$ standard errors of the encoder's SNR estimate. The
# point at $K = 1000$, where the signal is smallest, is the least precise, and it is the one that
# tilts the fitted line slightly above $-\tfrac12$. The right panel shows the mechanism: the encoder's expected gradient falls like $1/K$, exactly
# as the gap $\chi^2/(2K)$ of §2(c) does (its gradient with respect to $\phi$ *is* the expected
# gradient), while the noise falls only like $1/\sqrt K$. At $K = 1000$ a single gradient estimate
# of the encoder has an SNR of the order of $0.01$: about a hundred units of noise per unit of
# signal.
#
# **What to do about it.** Rainforth et al. propose to split a budget of $MK$ samples as $M$
# independent bounds of $K$ samples each, averaged (the MIWAE), or to train the encoder on a
# looser bound than the decoder (PIWAE, CIWAE) {cite:p}`rainforth2018tighter`. The *doubly
# reparametrized* gradient estimator rewrites the part of the encoder's gradient that flows
# through the density $q_\phi$ itself (a score function, whose noise does not shrink with the
# signal) by a second reparametrization, and its encoder SNR no longer decays as $K$ grows
# {cite:p}`tucker2019doubly`. Whatever the training objective, the large-$K$ bound remains the
# standard way to *evaluate* a latent-variable model, as in §5.
#
# ## Exercises
#
# ### Exercise 1 — the importance-weighted bound, computed stably
#
# Implement `my_iwae_bound(log_w)`: for log-weights of shape $[K, B]$ ($K$ samples of $B$
# examples) return the $B$ values $\log \frac1K \sum_k e^{\log w_k}$. Log-weights of images are
# around $-250$ nats, where `exp` underflows to $0$: subtract the maximum over the samples first
# (or use `torch.logsumexp`).


# %%
def my_iwae_bound(log_w: torch.Tensor) -> torch.Tensor:
    ### BEGIN SOLUTION
    top = log_w.max(dim=0).values
    return top + torch.log(torch.exp(log_w - top).mean(dim=0))
    ### END SOLUTION


check_iwae_bound(my_iwae_bound)

# %% [markdown]
# ### Exercise 2 — active units
#
# Implement `my_active_units(mu, threshold)`: given posterior means $\mathbb E_q[\mathbf z\mid
# \mathbf x]$ of $N$ data points, shape $[N, Z]$, return the number of dimensions whose variance
# over the data (divisor $N$) exceeds `threshold`. Then apply it to the encoder means of the IWAE
# ($K = 50$) on the 100 test images above, and compare with the count of `dgmlib.diagnostics.
# active_units`.


# %%
def my_active_units(mu: torch.Tensor, threshold: float = 0.01) -> int:
    ### BEGIN SOLUTION
    return int((mu.var(dim=0, unbiased=False) > threshold).sum())
    ### END SOLUTION


check_active_units(my_active_units)
with torch.no_grad():
    mu_nb = models["iwae50"].encode(x_nb)[0]
print(
    "IWAE (K = 50), 100 test images:",
    my_active_units(mu_nb),
    "active units; dgmlib:",
    active_units(mu_nb).count,
)

# %% [markdown]
# ### Exercise 3 (optional) — more samples at test time, or in training?
#
# Using the checkpoints, estimate $\mathcal L_K$ for $K \in \{1, 5, 50, 500\}$ of the VAE and of
# the IWAE ($K = 50$) on the 100 test images. At which $K$ does each model's bound overtake the
# other's? What does that say about judging an IWAE by its ELBO, or a VAE by its $\mathcal L_{50}$?
#
# ## Summary
#
# - Averaging $K$ importance weights before taking the logarithm gives the bound
#   $\mathcal L_K = \mathbb E\log\frac1K\sum_k p(\mathbf x,\mathbf z_k)/q(\mathbf z_k\mid\mathbf x)$.
#   $\mathcal L_1$ is the ELBO; $\mathcal L_K$ never decreases with $K$ (Jensen over random
#   subsets) and tends to $\log p(\mathbf x)$; for large $K$ the gap is $\chi^2(p(\mathbf z\mid
#   \mathbf x)\,\|\,q)/(2K)$. All four facts were checked on pPCA against the exact evidence.
# - The IWAE trains a VAE's networks on $\mathcal L_K$. Its gradient weights each sample's VAE
#   gradient by its normalised importance weight, so the encoder may be imprecise where the
#   weights forgive it.
# - Models are compared by the same estimator: $-\mathcal L_{5000}$ on test data, paired over the
#   same images. On Fashion-MNIST with Burda et al.'s architecture, IWAE ($K = 50$) reaches a
#   better test NLL than the VAE and uses many more active units, as on MNIST; the stored figures
#   were recomputed here.
# - The price: the encoder's gradient SNR falls like $1/\sqrt K$ while the decoder's grows like
#   $\sqrt K$ (slopes $\mp 1/2$ fitted on Rainforth et al.'s Gaussian model). Tighter is not
#   automatically better for the inference network.
#
# ## References
#
# - {cite}`burda2016importance` — the importance-weighted bound, its properties, the IWAE, the
#   $K = 5000$ evaluation and active units.
# - {cite}`rainforth2018tighter` — the signal-to-noise ratio of IWAE gradients, and the Gaussian
#   model used in §6.
# - {cite}`domke2018importance` — importance-weighted bounds as variational inference; the
#   asymptotic gap.
# - {cite}`tucker2019doubly` — doubly reparametrized gradients for the IWAE's encoder.
# - {cite}`cremer2018inference` — the gap of a trained VAE split into approximation and
#   amortization parts (Lecture 10).
# - {cite}`xiao2017fashion` — the Fashion-MNIST data set.

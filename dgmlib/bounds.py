"""Variational bounds on log p(x) and the large-K estimate of the negative log-likelihood.

Shape conventions, shared by every function here:

* a **log-weight** is ``log w = log p(x, z) - log q(z|x) = log p(x|z) + log p(z) - log q(z|x)``
  for one latent sample ``z ~ q(z | x)``; a tensor of log-weights has the **samples along one
  dimension** (``dim=0`` by default: shape ``[K, B]`` for ``K`` samples of ``B`` examples);
* each term is already **summed over data and latent dimensions**, so a value is one number per
  (sample, example);
* nothing here averages over the batch: every function returns one value per example, and the
  caller takes ``.mean()`` for a mini-batch objective;
* all values are natural logarithms, i.e. **nats**; :mod:`dgmlib.units` converts them.

Inputs containing NaN, or of the wrong shape, raise a ``ValueError`` naming the argument (a wrong
type, a ``TypeError``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from dgmlib.validation import check_int, check_tensor

__all__ = ["estimate_nll", "iwae_bound"]


def iwae_bound(log_w: Tensor, dim: int = 0) -> Tensor:
    """The importance-weighted bound ``log (1/K) sum_k exp(log_w_k)`` along ``dim``, in nats.

    ``log_w``: log-weights with the ``K`` samples along ``dim`` (``[K, B]`` by default); the result
    drops ``dim`` (``[B]``). Computed with ``logsumexp`` (stable for log-weights of any size).
    ``K = 1`` gives the single-sample ELBO; the expectation of the bound is non-decreasing in ``K``
    and tends to ``log p(x)`` (Burda et al., 2016).
    """
    check_tensor(log_w, "log_w", "iwae_bound")
    if not -log_w.dim() <= dim < log_w.dim():
        raise ValueError(f"iwae_bound: dim={dim} is out of range for log_w {tuple(log_w.shape)}")
    K = log_w.shape[dim]
    if K < 1:
        raise ValueError(f"iwae_bound: log_w has K = 0 samples along dim={dim}")
    return torch.logsumexp(log_w, dim=dim) - math.log(K)


def estimate_nll(
    log_weights_fn: Callable[[Tensor, int], Tensor],
    x: Tensor,
    K: int = 5000,
    chunk: int = 500,
) -> Tensor:
    """Negative log-likelihood estimate ``-log (1/K) sum_k w_k`` per example, in nats: ``[B]``.

    ``log_weights_fn(x, k)`` must return ``k`` fresh log-weights per example, shape ``[k, B]``
    (e.g. :meth:`dgmlib.models.vae.VAE.log_weights`). The ``K`` samples are drawn in chunks of at
    most ``chunk`` and combined with a running ``logsumexp``, so memory is bounded by one chunk
    whatever ``K``; the result equals :func:`iwae_bound` of all ``K`` log-weights at once. It is
    the ``K``-sample IWAE bound, negated: an upper bound on ``-log p(x)`` in expectation, tight as
    ``K`` grows (the standard evaluation of Burda et al., 2016, with ``K = 5000``). Computed
    without gradients. :func:`dgmlib.units.nats_to_bits_per_dim` gives bits per dimension.
    """
    check_int(K, "K", "estimate_nll")
    check_int(chunk, "chunk", "estimate_nll")
    check_tensor(x, "x", "estimate_nll")
    B = x.shape[0]
    total: Tensor | None = None
    done = 0
    with torch.no_grad():
        while done < K:
            k = min(chunk, K - done)
            log_w = log_weights_fn(x, k)
            if not isinstance(log_w, Tensor) or tuple(log_w.shape) != (k, B):
                shape = tuple(log_w.shape) if isinstance(log_w, Tensor) else type(log_w).__name__
                raise ValueError(
                    f"estimate_nll: log_weights_fn(x, {k}) must return shape [{k}, {B}] "
                    f"(samples, examples), got {shape}"
                )
            check_tensor(log_w, "log_weights_fn(x, k)", "estimate_nll")
            part = torch.logsumexp(log_w, dim=0)
            total = part if total is None else torch.logaddexp(total, part)
            done += k
    assert total is not None
    return -(total - math.log(K))

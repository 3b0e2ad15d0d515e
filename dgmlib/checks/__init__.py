"""Checks for the notebooks' exercises (nbgrader cells): run a student's function on known cases.

Each exercise cell ends with a call such as ``check_em_step(em_step)``. The check calls the
student's function on several fixed cases (fixed seeds) whose answers are known, and compares
each result with a float64 reference implementation from ``dgmlib``. If every case agrees it
prints one line::

    check_em_step: all 3 cases pass.

Otherwise it raises ``AssertionError`` whose message names the check and the failing case
(``check_em_step, case 'N = 50, d = 3, q = 1': ...``), shows what was expected and what was
got, and ends with a ``Hint:`` for the typical mistake that produces such a result. A function
that still raises ``NotImplementedError`` (the stub of the student edition) is reported as
"not implemented yet"; any other exception raised by the student's code is reported with the
case it happened in.

The checks are grouped by topic: :mod:`dgmlib.checks.lvm` (lecture 01),
:mod:`dgmlib.checks.dequantization` (lecture 03), :mod:`dgmlib.checks.vae` (lectures 02, 04
and 05), :mod:`dgmlib.checks.priors` (lecture 06), :mod:`dgmlib.checks.discrete` (lecture 07),
:mod:`dgmlib.checks.gan` (lecture 08), :mod:`dgmlib.checks.avb` (lecture 09),
:mod:`dgmlib.checks.gaps` and :mod:`dgmlib.checks.harmonium` (lecture 10),
:mod:`dgmlib.checks.hierarchical` (lecture 11), :mod:`dgmlib.checks.diffusion` (lecture 12)
and :mod:`dgmlib.checks.flows` (appendix A1); :mod:`dgmlib.checks.common` holds the plumbing
they share.
"""

from dgmlib.checks.avb import check_avb_losses, check_kl_from_discriminator
from dgmlib.checks.dequantization import check_dequantized_bpd, check_discretized_logistic
from dgmlib.checks.diffusion import check_forward_posterior, check_marginal_sample
from dgmlib.checks.discrete import check_categorical_kl_uniform, check_gumbel_max_sample
from dgmlib.checks.flows import check_adjoint_dynamics, check_hutchinson_divergence
from dgmlib.checks.gan import check_jsd, check_optimal_discriminator
from dgmlib.checks.gaps import check_optimal_linear_encoder
from dgmlib.checks.harmonium import check_interactions
from dgmlib.checks.hierarchical import (
    check_backward_message,
    check_ladder_merge,
    check_topdown_kls,
)
from dgmlib.checks.lvm import check_elbo_gaussian, check_em_step, check_log_importance_estimate
from dgmlib.checks.priors import check_aggregate_posterior_log_prob, check_mixture_prior_log_prob
from dgmlib.checks.vae import (
    check_active_units,
    check_free_bits,
    check_iwae_bound,
    check_kl_standard_normal,
    check_reparam_sample,
)

__all__ = [
    "check_active_units",
    "check_adjoint_dynamics",
    "check_aggregate_posterior_log_prob",
    "check_avb_losses",
    "check_backward_message",
    "check_categorical_kl_uniform",
    "check_dequantized_bpd",
    "check_discretized_logistic",
    "check_elbo_gaussian",
    "check_em_step",
    "check_forward_posterior",
    "check_free_bits",
    "check_gumbel_max_sample",
    "check_hutchinson_divergence",
    "check_interactions",
    "check_iwae_bound",
    "check_jsd",
    "check_kl_from_discriminator",
    "check_kl_standard_normal",
    "check_ladder_merge",
    "check_log_importance_estimate",
    "check_marginal_sample",
    "check_mixture_prior_log_prob",
    "check_optimal_discriminator",
    "check_optimal_linear_encoder",
    "check_reparam_sample",
    "check_topdown_kls",
]

"""dgmlib.checks_vae: each check passes the reference solution, reports a stub as "not implemented
yet", and names the failing case (expected vs got) for typical mistakes."""

from __future__ import annotations

import math

import pytest
import torch

from dgmlib import checks_vae
from dgmlib.bounds import iwae_bound, nats_to_bits_per_dim
from dgmlib.diagnostics import active_units
from dgmlib.distributions import kl_normal_std_normal
from dgmlib.kl_control import free_bits_kl


def reparam(mu, logvar):
    return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)


REFERENCES = {
    "check_reparam_sample": reparam,
    "check_kl_standard_normal": kl_normal_std_normal,
    "check_bits_per_dim": nats_to_bits_per_dim,
    "check_free_bits": free_bits_kl,
    "check_active_units": active_units,
    "check_iwae_bound": iwae_bound,
}


def test_every_check_is_listed():
    assert sorted(REFERENCES) == sorted(checks_vae.__all__)


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_reference_passes_with_one_line(name, capsys):
    getattr(checks_vae, name)(REFERENCES[name])
    out = capsys.readouterr().out
    assert (
        out.count("\n") == 1 and out.startswith(f"{name}: all ") and out.endswith("cases pass.\n")
    )


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_stub_is_reported_as_not_implemented(name):
    def stub(*args, **kwargs):
        raise NotImplementedError

    with pytest.raises(AssertionError, match=f"{name}: your function is not implemented yet"):
        getattr(checks_vae, name)(stub)


def test_check_does_not_change_the_global_random_state():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    checks_vae.check_reparam_sample(reparam)
    torch.testing.assert_close(torch.rand(3), expected)


def fails(check, fn, *fragments):
    with pytest.raises(AssertionError) as info:
        check(fn)
    msg = str(info.value)
    for f in fragments:
        assert f in msg, msg
    return msg


def test_wrong_reparametrizations_are_caught():
    fails(
        checks_vae.check_reparam_sample,
        lambda mu, logvar: mu + torch.exp(logvar) * torch.randn_like(mu),
        "case 'sample std over 20000 draws'",
        "expected",
        "got",
        "Hint: sigma = exp(logvar / 2)",
    )
    fails(
        checks_vae.check_reparam_sample,
        lambda mu, logvar: torch.normal(mu.detach(), torch.exp(0.5 * logvar.detach())),
        "case 'gradients'",
    )
    fails(checks_vae.check_reparam_sample, lambda mu, logvar: mu[:, :1], "case 'shape'")
    fails(
        checks_vae.check_reparam_sample,
        lambda mu, logvar: mu + torch.exp(0.5 * logvar.detach()) * torch.randn_like(mu),
        "no gradient reaches logvar",
    )


def test_wrong_kl_is_caught():
    fails(
        checks_vae.check_kl_standard_normal,
        lambda mu, logvar: 0.5 * (logvar.exp() + mu**2 - logvar).sum(-1),  # forgot the -1
        "case 'q equals the prior (KL = 0)'",
        "expected [0, 0], got [1.5, 1.5]",
    )
    fails(
        checks_vae.check_kl_standard_normal,
        lambda mu, logvar: 0.5 * (logvar.exp() + mu**2 - 1 - logvar).sum(),  # summed the batch
        "expected shape (2,), got ()",
    )


def test_wrong_bits_per_dim_is_caught():
    fails(
        checks_vae.check_bits_per_dim,
        lambda nll, d: nll / (d * math.log(10)),
        "case 'D * log 2 nats is 1 bit per dim'",
    )


def test_wrong_free_bits_are_caught():
    def per_example_clamp(kl, lam):
        return torch.clamp(kl, min=lam).mean(0).sum()

    fails(checks_vae.check_free_bits, per_example_clamp, "clamp the batch mean, not each example")

    def python_max(kl, lam):
        return torch.tensor(sum(max(lam, v) for v in kl.mean(0).tolist()))

    fails(checks_vae.check_free_bits, python_max, "case 'gradient'", "torch.clamp")


def test_wrong_active_units_are_caught():
    fails(
        checks_vae.check_active_units,
        lambda mu, thr: int((mu.abs().mean(0) > thr).sum()),  # magnitude, not variance
        "case 'constant dimensions are inactive'",
        "expected 2 active units, got 5",
    )


def test_wrong_iwae_bounds_are_caught():
    fails(
        checks_vae.check_iwae_bound,
        lambda log_w: log_w.mean(0),  # the ELBO, not the IWAE bound
        "two weights 1 and 3 give log 2",
    )
    fails(
        checks_vae.check_iwae_bound,
        lambda log_w: log_w.exp().mean(0).log(),  # unstable
        "very negative log-weights (-1000) do not underflow",
        "got -inf",
    )
    fails(
        checks_vae.check_iwae_bound,
        lambda log_w: log_w.exp().mean(1).log(),  # wrong dimension
        "case 'K = 1 gives the single log-weight",
    )


def test_a_crash_in_student_code_names_the_case():
    msg = fails(checks_vae.check_iwae_bound, lambda log_w: log_w.foo(), "raised AttributeError")
    assert "case 'K = 1" in msg

"""dgmlib.train: one trainer step replayed by hand (with a model's own loss and with an
objective), history, device, resume (the checkpoint files themselves: tests/test_io.py)."""

from __future__ import annotations

import copy

import pytest
import torch

from dgmlib.experiment import load_weights
from dgmlib.io import CheckpointError, load_checkpoint
from dgmlib.train import Trainer


class GaussianFit(torch.nn.Module):
    """Fit N(mu, exp(log_sigma)^2) to data by maximum likelihood; loss terms in nats."""

    def __init__(self, d: int = 3) -> None:
        super().__init__()
        self.mu = torch.nn.Parameter(torch.zeros(d))
        self.log_sigma = torch.nn.Parameter(torch.zeros(d))

    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        nll = -torch.distributions.Normal(self.mu, self.log_sigma.exp()).log_prob(x).sum(1).mean()
        return {"loss": nll, "nll": nll, "sigma": self.log_sigma.exp().mean()}


def data(n: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 2.0 + 0.5 * torch.randn(n, 3, generator=g)


def test_train_step_matches_plain_torch():
    """One Trainer step equals the same Adam step written out in plain torch."""
    torch.manual_seed(0)
    a = GaussianFit()
    b = copy.deepcopy(a)
    x = data()
    trainer = Trainer(a, torch.optim.Adam(a.parameters(), lr=0.1), progress=False)
    values = trainer.train_step(x)
    opt = torch.optim.Adam(b.parameters(), lr=0.1)
    loss = b.loss(x)["loss"]
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert values["loss"] == pytest.approx(loss.item())
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)


def test_fit_learns_and_logs_every_term():
    model = GaussianFit()
    trainer = Trainer(
        model, torch.optim.Adam(model.parameters(), lr=0.05), log_every=5, progress=False
    )
    x = data(256)
    hist = trainer.fit(lambda epoch: [x[i : i + 32] for i in range(0, 256, 32)], epochs=20)
    assert set(hist) == {"step", "epoch", "loss", "nll", "sigma"}
    assert len(hist["loss"]) == 20 * 8 // 5
    assert hist["loss"][-1] < hist["loss"][0]
    assert torch.allclose(model.mu.detach(), x.mean(0), atol=0.1)


def test_loss_contract_errors():
    class NoLoss(GaussianFit):
        def loss(self, x):
            return {"nll": super().loss(x)["nll"]}

    m = NoLoss()
    with pytest.raises(KeyError, match="must return a dict with a 'loss' entry"):
        Trainer(m, torch.optim.SGD(m.parameters(), lr=0.1), progress=False).train_step(data())

    class NanLoss(GaussianFit):
        def loss(self, x):
            return {"loss": super().loss(x)["loss"] * float("nan")}

    m = NanLoss()
    with pytest.raises(FloatingPointError, match="non-finite loss"):
        Trainer(m, torch.optim.SGD(m.parameters(), lr=0.1), progress=False).train_step(data())


def gaussian_nll(model: torch.nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """An objective kept outside the model: the same negative log-likelihood, in nats."""
    return {"loss": model.loss(x)["nll"], "mu_mean": model.mu.mean()}


def test_train_step_with_an_objective_matches_plain_torch():
    """objective(model, x)["loss"] is what the step minimises; every term is returned."""
    torch.manual_seed(0)
    a = GaussianFit()
    b = copy.deepcopy(a)
    x = data()
    trainer = Trainer(a, torch.optim.SGD(a.parameters(), lr=0.1), gaussian_nll, progress=False)
    values = trainer.train_step(x)
    assert set(values) == {"loss", "mu_mean"}
    nll = -torch.distributions.Normal(b.mu, b.log_sigma.exp()).log_prob(x).sum(1).mean()
    nll.backward()
    with torch.no_grad():
        for p in b.parameters():
            p -= 0.1 * p.grad
    assert values["loss"] == pytest.approx(nll.item(), rel=1e-6)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q)


def test_a_model_without_loss_needs_an_objective():
    model = torch.nn.Linear(2, 1)
    with pytest.raises(TypeError, match="Linear has no loss"):
        Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), progress=False)


def test_device_comes_from_the_argument_or_dgmlib_device(monkeypatch):
    model = GaussianFit()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    monkeypatch.delenv("DGMLIB_DEVICE", raising=False)
    assert Trainer(model, opt, progress=False).device == torch.device("cpu")
    monkeypatch.setenv("DGMLIB_DEVICE", "cpu")
    assert Trainer(model, opt, progress=False, device="cpu").device == torch.device("cpu")
    if not torch.cuda.is_available():
        monkeypatch.setenv("DGMLIB_DEVICE", "cuda")
        with pytest.raises(RuntimeError, match="DGMLIB_DEVICE='cuda' asks for CUDA"):
            Trainer(model, opt, progress=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_model_and_batches_move_to_the_gpu():
    model = GaussianFit()
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), device="cuda")
    values = trainer.train_step(data())  # a CPU batch
    assert model.mu.device.type == "cuda" and values["loss"] > 0


def test_resume_gives_the_same_result_as_one_run(tmp_path):
    """Training 4 epochs, or 2 then resuming for 2 more from the checkpoint, gives equal weights."""
    x = data(128)

    def batches(epoch):
        g = torch.Generator().manual_seed(epoch)
        return [x[i] for i in torch.randperm(128, generator=g).split(32)]

    def run(epochs, ck, model=None):
        torch.manual_seed(0)
        model = model or GaussianFit()
        t = Trainer(
            model, torch.optim.Adam(model.parameters(), lr=0.05), log_every=4, progress=False
        )
        t.fit(batches, epochs=epochs, checkpoint=ck)
        return t

    full = run(4, tmp_path / "full.safetensors")
    run(2, tmp_path / "part.safetensors")
    resumed = run(4, tmp_path / "part.safetensors")
    assert resumed.step == full.step == 16 and resumed.epoch == 4
    for p, q in zip(full.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-7)
    assert resumed.history["loss"] == pytest.approx(full.history["loss"])
    # the trainer's checkpoint holds the weights under the keys load_weights reads
    tensors, meta = load_checkpoint(tmp_path / "full.safetensors")
    assert meta["epoch"] == 4 and meta["step"] == 16
    fresh = GaussianFit()
    load_weights(fresh, tensors, tmp_path / "full.safetensors")
    assert torch.equal(fresh.mu, full.model.mu) and torch.equal(
        fresh.log_sigma, full.model.log_sigma
    )
    with pytest.raises(CheckpointError, match="full.safetensors: does not fit GaussianFit"):
        load_weights(GaussianFit(d=4), tensors, tmp_path / "full.safetensors")

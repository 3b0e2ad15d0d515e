"""dgmlib.train: one trainer step replayed by hand, history, checkpoints, resume, corruption."""

from __future__ import annotations

import copy

import pytest
import torch

from dgmlib.train import (
    CheckpointError,
    Trainer,
    load_checkpoint,
    load_model,
    save_checkpoint,
    sidecar_path,
)


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


def test_checkpoint_round_trip(tmp_path):
    path = tmp_path / "ck.safetensors"
    tensors = {"a": torch.randn(3, 4), "b": torch.arange(5)}
    digest = save_checkpoint(path, tensors, {"note": "x", "k": [1, 2]})
    got, meta = load_checkpoint(path)
    assert set(got) == {"a", "b"} and all(torch.equal(got[k], tensors[k]) for k in tensors)
    assert meta == {"note": "x", "k": [1, 2]}
    assert sidecar_path(path).read_text().split() == [digest, path.name]
    assert not list(tmp_path.glob("*.tmp"))


def test_corrupted_or_missing_checkpoint(tmp_path):
    path = tmp_path / "ck.safetensors"
    save_checkpoint(path, {"a": torch.ones(10)})
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="corrupted checkpoint: SHA-256 is") as err:
        load_checkpoint(path)
    assert sidecar_path(path).read_text().split()[0] in str(err.value)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope.safetensors")
    sidecar_path(path).unlink()
    with pytest.raises(CheckpointError, match="no hash sidecar"):
        load_checkpoint(path)


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
    fresh = GaussianFit()
    load_model(fresh, tmp_path / "full.safetensors")
    assert torch.equal(fresh.mu, full.model.mu)
    with pytest.raises(CheckpointError, match="does not fit"):
        load_model(GaussianFit(d=4), tmp_path / "full.safetensors")

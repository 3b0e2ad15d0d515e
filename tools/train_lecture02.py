"""Train the two VAEs of Lecture 02 (amortized inference and the VAE) and write their checkpoints.

Usage: python tools/train_lecture02.py [--out data/checkpoints] [--models z2 z20] [--epochs N]

Both models are the one-stochastic-layer MLP VAE of Burda et al. (``VAE.for_mnist``: encoder
784-200-200-(2Z), Bernoulli decoder Z-200-200-784, tanh) trained on the plain single-sample ELBO
with Adam on all 60k dynamically binarized Fashion-MNIST training images:

* ``z2``  -- a two-dimensional latent code, so the latent space can be drawn;
* ``z20`` -- a twenty-dimensional latent code, the better generative model.

Everything is deterministic: one CPU thread, fixed seeds, a fixed data order per epoch and the
dynamic binarization drawn from the same seeded generator. For each model it writes
``l02_<model>.safetensors`` (model weights only, loadable with ``dgmlib.train.load_model``) with
its ``.sha256`` sidecar, and one ``l02_results.json`` with the configuration, the training curves,
the test ELBO after every epoch, and the final test figures that the lecture recomputes: the
single-sample ELBO (and its two terms) on all 10k test images, binarized once with a fixed seed.
It also records a 1000-sample importance-weighted estimate of log p(x) on the first 1000 test
images, which the lecture quotes to show how loose the ELBO is.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dgmlib.bounds import estimate_nll  # noqa: E402
from dgmlib.data import binarize_dynamic, binarize_fixed, load_fashion_mnist  # noqa: E402
from dgmlib.models import VAE  # noqa: E402
from dgmlib.train import Trainer, atomic_write_bytes, save_checkpoint  # noqa: E402

COMMAND = "python tools/train_lecture02.py"
SEED = 0
HIDDEN = 200
MODELS = {"z2": 2, "z20": 20}  # name -> latent dimension
BATCH = 100
EPOCHS = 30
LR = 1e-3
LOG_EVERY = 100
TEST_BINARIZATION_SEED = 0
EVAL_SEED = 0  # generator of the single-sample test ELBO
NLL_K = 1000  # importance samples of the log-likelihood estimate
NLL_N = 1000  # ... on the first NLL_N test images
NLL_SEED = 1


def build(z_dim: int) -> VAE:
    """A fresh model, initialised from the global seed (the lecture does the same)."""
    torch.manual_seed(SEED)
    return VAE.for_mnist(z_dim=z_dim, hidden=HIDDEN)


def epoch_batches(train_images: torch.Tensor, epoch: int, batch: int = BATCH):
    """The mini-batches of one epoch: a seeded permutation, then a seeded dynamic binarization.

    ``train_images``: uint8 [N, 28, 28]; yields float {0, 1} tensors [batch, 1, 28, 28].
    """
    g = torch.Generator().manual_seed(1000 * (SEED + 1) + epoch)
    order = torch.randperm(len(train_images), generator=g)
    for start in range(0, len(order), batch):
        idx = order[start : start + batch]
        yield binarize_dynamic(train_images[idx], generator=g).unsqueeze(1)


def test_data() -> torch.Tensor:
    """All 10k test images, binarized once with a fixed seed: [10000, 1, 28, 28]."""
    images, _ = load_fashion_mnist("test")
    return binarize_fixed(images, seed=TEST_BINARIZATION_SEED).unsqueeze(1)


@torch.no_grad()
def evaluate(model: VAE, x: torch.Tensor) -> dict:
    """Single-sample test ELBO and its terms (generator seeded EVAL_SEED), averaged, in nats.

    ``"recon"`` is ``E_q log p(x|z)`` here; the training history's ``"recon"`` is its negative,
    as ``VAE.loss`` logs it.
    """
    model.eval()
    mu, logvar = model.encode(x)
    kl = float((0.5 * (mu**2 + logvar.exp() - 1.0 - logvar)).sum(-1).mean())
    elbo = float(model.elbo(x, generator=torch.Generator().manual_seed(EVAL_SEED)).mean())
    return {"elbo": elbo, "kl": kl, "recon": elbo + kl}


def train(name: str, train_images: torch.Tensor, x_test: torch.Tensor, out: Path, epochs: int):
    """Train one model; save its weights; return its results."""
    model = build(MODELS[name])
    trainer = Trainer(model, torch.optim.Adam(model.parameters(), lr=LR), LOG_EVERY, False)
    per_epoch: list[float] = []

    def on_epoch_end(tr: Trainer) -> None:
        r = evaluate(model, x_test)
        per_epoch.append(r["elbo"])
        print(f"  {name} epoch {tr.epoch}: test ELBO {r['elbo']:.2f}", flush=True)

    history = trainer.fit(
        lambda epoch: epoch_batches(train_images, epoch), epochs, on_epoch_end=on_epoch_end
    )
    results = evaluate(model, x_test)
    with torch.no_grad():
        g = torch.Generator().manual_seed(NLL_SEED)
        nll = estimate_nll(lambda x, k: model.log_weights(x, k, g), x_test[:NLL_N], K=NLL_K)
        g_elbo = torch.Generator().manual_seed(EVAL_SEED)
        elbo_sub = model.elbo(x_test[:NLL_N], generator=g_elbo)
    results["iw_log_px_first_1000"] = float(-nll.mean())
    results["elbo_first_1000"] = float(elbo_sub.mean())
    results["test_elbo_per_epoch"] = per_epoch
    results["history"] = {k: history[k] for k in ("step", "elbo", "kl", "recon")}
    results["n_params"] = sum(p.numel() for p in model.parameters())
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    meta = {"model": name, "z_dim": MODELS[name], "epochs": epochs, "command": COMMAND}
    save_checkpoint(out / f"l02_vae_{name}.safetensors", tensors, meta)
    return results


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "checkpoints")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--epochs", type=int, default=EPOCHS, help="for quick trials only")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    train_images, _ = load_fashion_mnist("train")
    x_test = test_data()
    json_path = args.out / "l02_results.json"
    config = {
        "command": COMMAND,
        "seed": SEED,
        "hidden": HIDDEN,
        "models": MODELS,
        "batch": BATCH,
        "epochs": args.epochs,
        "lr": LR,
        "log_every": LOG_EVERY,
        "test_binarization_seed": TEST_BINARIZATION_SEED,
        "eval_seed": EVAL_SEED,
        "nll_k": NLL_K,
        "nll_n": NLL_N,
        "nll_seed": NLL_SEED,
    }
    # keep the results of models not re-trained now, if they were made with the same settings
    old = json.loads(json_path.read_text()) if json_path.is_file() else {}
    summary = {"config": config, "models": old.get("models", {})}
    if old.get("config") != config:
        summary["models"] = {}
    for name in args.models:
        t0 = time.perf_counter()
        summary["models"][name] = train(name, train_images, x_test, args.out, args.epochs)
        print(f"{name}: done in {time.perf_counter() - t0:.0f} s", flush=True)
        summary["models"] = {m: summary["models"][m] for m in MODELS if m in summary["models"]}
        atomic_write_bytes(json_path, (json.dumps(summary, indent=1) + "\n").encode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

"""Train the two discrete-latent models of Lecture 07 (a VQ-VAE and a categorical VAE).

Usage: python tools/train_lecture07.py [--out data/checkpoints] [--quick]
Runtime: 5 to 8 minutes (299 s and 464 s measured) on one thread of a busy two-core CPU (both
models, evaluation included); ``--quick`` runs a smoke test of the pipeline on 1000 images.

Both models are MLPs on binary 28 x 28 images with a Bernoulli decoder:

* ``vqvae``: ``dgmlib.models.VQVAE`` -- encoder 784-256-256-(16 x 8), i.e. P = 16 vectors of
  size D = 8 per image, a codebook of K = 64 codes, commitment weight beta = 0.25, decoder
  128-256-256-784 (ReLU);
* ``catvae``: ``dgmlib.models.CategoricalVAE`` -- L = 20 categorical latent variables with
  C = 10 categories, encoder 784-256-256-(20 x 10), decoder 200-256-256-784 (ReLU), trained with
  Gumbel-softmax samples whose temperature is annealed per epoch,
  ``tau = max(TAU_MIN, TAU_START * exp(-TAU_DECAY * epoch))`` (epochs counted from 0).

Training: the first ``N_TRAIN`` Fashion-MNIST training images, dynamically binarized (a fresh
Bernoulli sample in every epoch), mini-batches of 100 in a seeded order, Adam (lr 1e-3).

Evaluation on the 10k test images binarized once with seed 0 (as in the other lectures), each in
one batch: for the VQ-VAE the reconstruction NLL ``-log p(x | z_q)``, the ELBO
``-NLL - P log K`` and the codebook usage (counts, perplexity, codes used); for the categorical
VAE the ELBO of the discrete model with one exact sample per image
(``CategoricalVAE.elbo(x, 1, generator seeded EVAL_SEED)``) and its KL term.

Everything is deterministic: one CPU thread, fixed seeds, generators for the data order and the
binarization, the global seed (per epoch) for the Gumbel noise. The script writes into ``--out``
``l07_<model>.safetensors`` (weights, loadable with ``dgmlib.train.load_model``) with ``.sha256``
sidecars, and ``l07_results.json`` (settings, command, hashes, curves, test figures).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dgmlib.data import binarize_dynamic, binarize_fixed, load_fashion_mnist  # noqa: E402
from dgmlib.models.discrete import (  # noqa: E402
    VQVAE,
    CategoricalVAE,
    categorical_kl_uniform,
    codebook_usage,
)
from dgmlib.train import Trainer, atomic_write_bytes, save_checkpoint  # noqa: E402
from dgmlib.utils import seed_everything  # noqa: E402

COMMAND = "python tools/train_lecture07.py"
SEED = 0
THREADS = 1
N_TRAIN = 60_000
EPOCHS = 8
BATCH = 100
LR = 1e-3
LOG_EVERY = 100
TEST_BINARIZATION_SEED = 0
EVAL_SEED = 0
VQ_KWARGS = {"n_codes": 64, "code_dim": 8, "n_positions": 16, "hidden": 256, "beta": 0.25}
CAT_KWARGS = {"n_latent": 20, "n_categories": 10, "hidden": 256}
TAU_START, TAU_MIN, TAU_DECAY = 1.0, 0.5, 0.1
MODELS = ("vqvae", "catvae")


def tau_at(epoch: int) -> float:
    """The Gumbel-softmax temperature of epoch ``epoch`` (counted from 0)."""
    return max(TAU_MIN, TAU_START * math.exp(-TAU_DECAY * epoch))


def build(name: str) -> VQVAE | CategoricalVAE:
    """A freshly initialised model of the lecture (weights depend only on ``SEED``)."""
    torch.manual_seed(SEED)
    if name == "vqvae":
        return VQVAE(**VQ_KWARGS)
    if name == "catvae":
        return CategoricalVAE(**CAT_KWARGS, tau=TAU_START)
    raise ValueError(f"unknown model {name!r}; expected one of {MODELS}")


def test_set() -> torch.Tensor:
    """The test images binarized once with ``TEST_BINARIZATION_SEED``: ``[10000, 1, 28, 28]``."""
    images, _ = load_fashion_mnist("test")
    return binarize_fixed(images, seed=TEST_BINARIZATION_SEED).unsqueeze(1)


@torch.no_grad()
def evaluate(name: str, model: VQVAE | CategoricalVAE, x: torch.Tensor) -> dict:
    """Test figures of a model on ``x`` (one batch; nats per image)."""
    model.eval()
    if isinstance(model, VQVAE):
        nll = float(model.recon_nll(x).mean())
        counts, perplexity, used = codebook_usage(model.codes(x), model.n_codes)
        return {
            "recon_nll": nll,
            "elbo": -nll - model.n_positions * math.log(model.n_codes),
            "perplexity": perplexity,
            "codes_used": used,
            "code_counts": counts.tolist(),
        }
    g = torch.Generator().manual_seed(EVAL_SEED)
    elbo = float(model.elbo(x, 1, generator=g).mean())
    kl = float(categorical_kl_uniform(model.logits(x)).sum(-1).mean())
    return {"elbo": elbo, "kl": kl, "recon": -elbo - kl}


def train_one(
    name: str, train_images: torch.Tensor, epochs: int, x_curve: torch.Tensor
) -> tuple[VQVAE | CategoricalVAE, list[dict]]:
    """Train ``name`` on ``train_images`` (uint8 ``[N, 28, 28]``); return (model, curves)."""
    model = build(name)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    trainer = Trainer(model, opt, log_every=LOG_EVERY, progress=False)
    n = len(train_images)
    curves: list[dict] = []

    def batches(epoch: int):
        torch.manual_seed(10_000 * (SEED + 1) + epoch)  # the Gumbel noise
        g = torch.Generator().manual_seed(1000 * (SEED + 1) + epoch)
        order = torch.randperm(n, generator=g)
        if isinstance(model, CategoricalVAE):
            model.tau = tau_at(epoch)

        def gen():
            for start in range(0, n, BATCH):
                yield binarize_dynamic(train_images[order[start : start + BATCH]], g).unsqueeze(1)

        return gen()

    def on_epoch_end(tr: Trainer) -> None:
        r = evaluate(name, model, x_curve)
        row = {"epoch": tr.epoch, "test_elbo": r["elbo"]}
        if "perplexity" in r:
            row["perplexity"] = r["perplexity"]
        else:
            row["tau"] = model.tau
        curves.append(row)
        print(f"  {name} epoch {tr.epoch}/{epochs}: {row}", flush=True)

    trainer.fit(batches, epochs, on_epoch_end=on_epoch_end)
    return model, curves


def save_model(model: VQVAE | CategoricalVAE, name: str, epochs: int, path: Path) -> str:
    """Write the weights of ``model`` with its metadata and sidecar; return the SHA-256."""
    kwargs = VQ_KWARGS if name == "vqvae" else CAT_KWARGS
    meta = {"model": name, "kwargs": kwargs, "epochs": epochs, "command": COMMAND}
    return save_checkpoint(path, {f"model.{k}": v for k, v in model.state_dict().items()}, meta)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(ROOT / "data" / "checkpoints"))
    ap.add_argument("--quick", action="store_true", help="a smoke test (not the lecture's)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(SEED, threads=THREADS)
    t_start = time.perf_counter()
    n_train, epochs = (1000, 1) if args.quick else (N_TRAIN, EPOCHS)

    train_images, _ = load_fashion_mnist("train")
    train_images = train_images[:n_train]
    x_test = test_set()
    results: dict = {}
    for name in MODELS:
        t0 = time.perf_counter()
        model, curves = train_one(name, train_images, epochs, x_test[:1000])
        path = out / f"l07_{name}.safetensors"
        digest = save_model(model, name, epochs, path)
        r = evaluate(name, model, x_test)
        r.update(
            {
                "checkpoint": path.name,
                "sha256": digest,
                "n_params": sum(p.numel() for p in model.parameters()),
                "curves": curves,
                "train_seconds": round(time.perf_counter() - t0),
            }
        )
        results[name] = r
        shown = {k: v for k, v in r.items() if k not in ("curves", "code_counts")}
        print(f"[{name}] {shown}", flush=True)

    doc = {
        "lecture": "07_discrete_latents",
        "command": COMMAND,
        "quick": bool(args.quick),
        "settings": {
            "seed": SEED,
            "threads": THREADS,
            "n_train": n_train,
            "epochs": epochs,
            "batch_size": BATCH,
            "optimizer": "Adam",
            "learning_rate": LR,
            "vqvae": VQ_KWARGS,
            "catvae": CAT_KWARGS,
            "tau_schedule": {"start": TAU_START, "min": TAU_MIN, "decay": TAU_DECAY},
            "data": "Fashion-MNIST, dynamically binarized for training; the test set binarized "
            f"once with seed {TEST_BINARIZATION_SEED}",
            "test_images": len(x_test),
            "eval_seed": EVAL_SEED,
            "curve_images": 1000,
        },
        "models": results,
    }
    atomic_write_bytes(out / "l07_results.json", (json.dumps(doc, indent=1) + "\n").encode())
    print("wrote", out / "l07_results.json", flush=True)
    print(f"total {time.perf_counter() - t_start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

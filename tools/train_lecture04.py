"""Train the eight VAEs of Lecture 04 (posterior collapse) and write their checkpoints.

Usage: python tools/train_lecture04.py [--out data/checkpoints] [--variants NAME ...]

Two experiments, four variants each. **Bars and stripes** (``bas_*``): 8 x 8 binary images whose
exact ``log p(x)`` is known (``dgmlib.data.bars_and_stripes``), fresh samples at every step, an
8-dimensional latent code, and a PixelCNN whose first kernel sees every earlier pixel, so that
it can model the data exactly without ``z``. **Fashion-MNIST** (all with the same MLP Gaussian
encoder and a 16-dimensional latent code):

* ``mlp``               -- a factorized Bernoulli MLP decoder (the reference VAE);
* ``pixelcnn``          -- a small PixelCNN decoder, trained on the plain ELBO;
* ``pixelcnn_anneal``   -- the same, with the KL weight rising linearly from 0 to 1;
* ``pixelcnn_freebits`` -- the same, with free bits (lambda nats per latent dimension).

The bars-and-stripes variants are the same four kinds (``bas_mlp``, ``bas_pixelcnn``,
``bas_pixelcnn_anneal``, ``bas_pixelcnn_freebits``). Fashion-MNIST images are binarized by
thresholding (intensity > 0.5), which gives clean silhouettes that an
autoregressive decoder models well. Everything is deterministic: one CPU thread, fixed seeds, a
fixed training subset and a seeded order. For each variant it writes
``l04_<variant>.safetensors`` (model weights only, loadable with ``dgmlib.train.load_model``)
with its ``.sha256`` sidecar, and one ``l04_results.json`` with the configuration, the training
curves, and the test figures that the lecture recomputes: KL, active units and the single-sample
ELBO on the first ``N_EVAL`` images of the binarized test set (``l04_bas_results.json``: the same
for the bars-and-stripes models, on ``BAS["n_eval"]`` fixed samples, with the exact
``log p(x)``). Runtime: roughly 15-20 minutes on one quiet CPU core (about 45 on a busy
machine), of which the bars-and-stripes models take about 4.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from functools import partial
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dgmlib.data import (  # noqa: E402
    bars_and_stripes,
    bars_and_stripes_log_prob,
    binarize_dynamic,
    binarize_fixed,
    binarize_threshold,
    load_fashion_mnist,
)
from dgmlib.diagnostics import active_units, kl_per_dimension  # noqa: E402
from dgmlib.kl_control import linear_warmup, scheduled  # noqa: E402
from dgmlib.models import VAE, BernoulliDecoder, MLPGaussianEncoder, PixelCNNDecoder  # noqa: E402
from dgmlib.train import Trainer, atomic_write_bytes, save_checkpoint  # noqa: E402

SEED = 0
Z_DIM = 16
HIDDEN = 200
N_TRAIN = 20_000  # the first 20k training images
BATCH = 100
EPOCHS = 6
LR = 1e-3
LOG_EVERY = 10
# a 29 x 29 first masked convolution sees the 14 rows above a pixel (half the image) at once
PIXELCNN = {"channels": 16, "n_layers": 3, "kernel_size": 29, "hidden_kernel_size": 3}
WARMUP_EPOCHS = 3  # KL annealing: beta from 0 to 1 over the first 3 epochs
FREE_BITS = 0.5  # nats per latent dimension
TEST_BINARIZATION_SEED = 0
N_EVAL = 1000  # test images used for the reported figures
EVAL_SEED = 0  # generator of the single-sample ELBO
AU_THRESHOLD = 0.01
BINARIZATION = "threshold"  # pixel > 0.5; or "dynamic" (a Bernoulli draw per batch)
VARIANTS = ("mlp", "pixelcnn", "pixelcnn_anneal", "pixelcnn_freebits")

# Bars and stripes: a data set the PixelCNN can model exactly on its own.
BAS = {
    "size": 8,  # 8 x 8 images
    "z_dim": 8,
    "hidden": 64,  # encoder and MLP-decoder width
    # a 15 x 15 first kernel covers every earlier pixel of an 8 x 8 image
    "pixelcnn": {"channels": 16, "n_layers": 2, "kernel_size": 15, "hidden_kernel_size": 3},
    "batch": 100,
    "steps_per_epoch": 500,  # an "epoch" is 500 fresh batches
    "epochs": 6,
    "lr": 3e-3,
    "warmup_steps": 1500,  # KL annealing over the first half of training
    "free_bits": 0.25,  # nats per latent dimension
    "n_eval": 2000,
    "eval_data_seed": 99,
}
BAS_VARIANTS = ("bas_mlp", "bas_pixelcnn", "bas_pixelcnn_anneal", "bas_pixelcnn_freebits")
ALL_VARIANTS = VARIANTS + BAS_VARIANTS


def build(variant: str) -> VAE:
    """The model of a variant, freshly initialised from the global seed."""
    torch.manual_seed(SEED)
    if variant.startswith("bas_"):
        size, z_dim, hidden = BAS["size"], BAS["z_dim"], BAS["hidden"]
        encoder = MLPGaussianEncoder(size * size, hidden, z_dim)
        if variant == "bas_mlp":
            decoder = BernoulliDecoder(z_dim, hidden, x_shape=(1, size, size))
        else:
            decoder = PixelCNNDecoder(z_dim, **BAS["pixelcnn"], x_shape=(1, size, size))
        free_bits = BAS["free_bits"]
    else:
        encoder = MLPGaussianEncoder(784, HIDDEN, Z_DIM)
        if variant == "mlp":
            decoder = BernoulliDecoder(Z_DIM, HIDDEN)
        else:
            decoder = PixelCNNDecoder(Z_DIM, **PIXELCNN)
        free_bits = FREE_BITS
    model = VAE(encoder, decoder)
    if variant.endswith("_freebits"):
        model.free_bits = free_bits
    return model


def bas_eval_data() -> torch.Tensor:
    """The fixed bars-and-stripes evaluation images: ``[BAS["n_eval"], 1, 8, 8]``."""
    g = torch.Generator().manual_seed(BAS["eval_data_seed"])
    return bars_and_stripes(BAS["n_eval"], BAS["size"], g)


def eval_data() -> torch.Tensor:
    """The first N_EVAL images of the test set, binarized once with a fixed seed: [N, 1, 28, 28]."""
    images, _ = load_fashion_mnist("test")
    images = images[:N_EVAL]
    if BINARIZATION == "threshold":
        return binarize_threshold(images).unsqueeze(1)
    return binarize_fixed(images, seed=TEST_BINARIZATION_SEED).unsqueeze(1)


@torch.no_grad()
def evaluate(model: VAE, x: torch.Tensor) -> dict:
    """KL, active units and the single-sample ELBO (generator seeded EVAL_SEED) on x, in nats."""
    model.eval()
    mu, logvar = model.encode(x)
    kl_dims = kl_per_dimension(mu, logvar)
    au = active_units(mu, AU_THRESHOLD)
    elbo = model.elbo(x, generator=torch.Generator().manual_seed(EVAL_SEED))
    kl = float(kl_dims.sum())
    extra = {}
    if x.shape[-1] == BAS["size"]:
        extra["log_px"] = float(bars_and_stripes_log_prob(x).mean())
    return {
        **extra,
        "kl": kl,
        "active_units": au.count,
        "elbo": float(elbo.mean()),
        "recon": float(elbo.mean()) + kl,  # E_q log p(x|z)
        "kl_per_dim": kl_dims.tolist(),
        "mu_variance": au.variances.tolist(),
    }


def fashion_batches(train_images: torch.Tensor):
    """``batches(epoch)``: the training images in a seeded order, binarized, ``[B, 1, 28, 28]``."""

    def batches(epoch: int):
        g = torch.Generator().manual_seed(1000 * (SEED + 1) + epoch)
        order = torch.randperm(len(train_images), generator=g)
        for start in range(0, len(order), BATCH):
            idx = order[start : start + BATCH]
            if BINARIZATION == "threshold":
                yield binarize_threshold(train_images[idx]).unsqueeze(1)
            else:
                yield binarize_dynamic(train_images[idx], generator=g).unsqueeze(1)

    return batches


def bas_batches(epoch: int):
    """``BAS["steps_per_epoch"]`` fresh bars-and-stripes batches, seeded by the epoch."""
    g = torch.Generator().manual_seed(1000 * (SEED + 1) + epoch)
    for _ in range(BAS["steps_per_epoch"]):
        yield bars_and_stripes(BAS["batch"], BAS["size"], g)


def train(variant: str, batches, x_eval: torch.Tensor, out: Path) -> dict:
    """Train one variant on ``batches(epoch)``; save its weights; return its results."""
    bas = variant.startswith("bas_")
    model = build(variant)
    lr = BAS["lr"] if bas else LR
    trainer = Trainer(model, torch.optim.Adam(model.parameters(), lr=lr), LOG_EVERY, False)
    epochs = BAS["epochs"] if bas else EPOCHS
    if variant.endswith("_anneal"):
        steps = BAS["warmup_steps"] if bas else WARMUP_EPOCHS * (N_TRAIN // BATCH)
        batches = scheduled(batches, trainer, partial(linear_warmup, warmup_steps=steps))
    per_epoch = []

    def on_epoch_end(tr: Trainer) -> None:
        r = evaluate(model, x_eval)
        per_epoch.append({k: r[k] for k in ("kl", "active_units", "elbo")})
        print(
            f"  {variant} epoch {tr.epoch}: test KL {r['kl']:.3f}  AU {r['active_units']}  "
            f"ELBO {r['elbo']:.2f}",
            flush=True,
        )

    history = trainer.fit(batches, epochs, on_epoch_end=on_epoch_end)
    results = evaluate(model, x_eval)
    results["per_epoch"] = per_epoch
    results["history"] = {k: history[k] for k in ("step", "kl", "elbo", "recon")}
    results["n_params"] = sum(p.numel() for p in model.parameters())
    path = out / f"l04_{variant}.safetensors"
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    save_checkpoint(path, tensors, {"variant": variant, "command": COMMAND})
    return results


COMMAND = "python tools/train_lecture04.py"


def fashion_config() -> dict:
    """The settings of the Fashion-MNIST experiment, as recorded in ``l04_results.json``."""
    return {
        "command": COMMAND,
        "seed": SEED,
        "z_dim": Z_DIM,
        "hidden": HIDDEN,
        "n_train": N_TRAIN,
        "batch": BATCH,
        "epochs": EPOCHS,
        "lr": LR,
        "log_every": LOG_EVERY,
        "pixelcnn": PIXELCNN,
        "warmup_epochs": WARMUP_EPOCHS,
        "free_bits": FREE_BITS,
        "test_binarization_seed": TEST_BINARIZATION_SEED,
        "n_eval": N_EVAL,
        "eval_seed": EVAL_SEED,
        "au_threshold": AU_THRESHOLD,
        "binarization": BINARIZATION,
    }


def bas_config() -> dict:
    """The settings of the bars-and-stripes experiment, as recorded in ``l04_bas_results.json``."""
    return {
        "command": COMMAND,
        "seed": SEED,
        "log_every": LOG_EVERY,
        "eval_seed": EVAL_SEED,
        "au_threshold": AU_THRESHOLD,
        **BAS,
    }


def run(variants: list[str], json_path: Path, config: dict, batches, x_eval, out: Path) -> None:
    """Train ``variants`` of one experiment and update its results JSON after each one."""
    # keep the results of variants not re-trained now, if they were made with the same settings
    old = json.loads(json_path.read_text()) if json_path.is_file() else {}
    summary = {"config": config, "variants": old.get("variants", {})}
    if old.get("config") != config:
        summary["variants"] = {}
    order = BAS_VARIANTS if variants[0].startswith("bas_") else VARIANTS
    for variant in variants:
        t0 = time.perf_counter()
        summary["variants"][variant] = train(variant, batches, x_eval, out)
        print(f"{variant}: done in {time.perf_counter() - t0:.0f} s", flush=True)
        summary["variants"] = {v: summary["variants"][v] for v in order if v in summary["variants"]}
        atomic_write_bytes(json_path, (json.dumps(summary, indent=1) + "\n").encode())


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "checkpoints")
    parser.add_argument("--variants", nargs="+", choices=ALL_VARIANTS, default=list(ALL_VARIANTS))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    bas = [v for v in args.variants if v in BAS_VARIANTS]
    fashion = [v for v in args.variants if v in VARIANTS]
    if bas:
        run(
            bas,
            args.out / "l04_bas_results.json",
            bas_config(),
            bas_batches,
            bas_eval_data(),
            args.out,
        )
    if fashion:
        images, _ = load_fashion_mnist("train")
        batches = fashion_batches(images[:N_TRAIN])
        run(
            fashion, args.out / "l04_results.json", fashion_config(), batches, eval_data(), args.out
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

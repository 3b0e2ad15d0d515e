"""Train the two discrete-latent models of Lecture 07 (a VQ-VAE and a categorical VAE).

Usage: python tools/train_lecture07.py [--out data/checkpoints] [--device cpu] [--quick]
Runtime: 5 to 13 minutes (299 s to 790 s measured) on one thread of a busy two-core CPU (both
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
Bernoulli sample in every epoch), mini-batches of 100 in a seeded order, Adam (lr 1e-3). The
state is saved after every epoch (in ``--out``/.l07_state/, removed at the end), so an
interrupted run resumes where it stopped and ends with the same weights.

Test figures (nats per image, the results schema of ``dgmlib.experiment``) on the 10k test images
binarized once with seed 0 (as in the other lectures), each in one batch: for the VQ-VAE
``log_px_z = log p(x | z_q)``, ``kl = P log K``, ``elbo = log_px_z - kl`` and the codebook usage
(counts, perplexity, codes used); for the categorical VAE the ELBO of the discrete model with one
exact sample per image (``CategoricalVAE.elbo(x, 1, generator seeded EVAL_SEED)``), its exact KL
and ``log_px_z = elbo + kl``.

Everything is deterministic: one CPU thread, fixed seeds, generators for the data order and the
binarization, the global seed (per epoch) for the Gumbel noise. The script writes into ``--out``
``l07_<model>.safetensors`` (weights and build spec: ``dgmlib.pretrained.load("l07_vqvae")``)
with ``.sha256`` sidecars, ``l07_results.json`` and the models' entries in ``manifest.json``.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dgmlib import experiment  # noqa: E402
from dgmlib.data import binarize_dynamic, binarize_fixed, load_fashion_mnist  # noqa: E402
from dgmlib.io import load_checkpoint, sha256_bytes  # noqa: E402
from dgmlib.models.discrete import (  # noqa: E402
    VQVAE,
    CategoricalVAE,
    categorical_kl_uniform,
    codebook_usage,
)
from dgmlib.train import Trainer  # noqa: E402
from dgmlib.utils import seed_everything  # noqa: E402

# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------
LECTURE = "07_discrete_latents"
COMMAND = "python tools/train_lecture07.py"  # recorded in the results and the checkpoints
SEED = 0  # initial weights (reset before each model), data order, binarization, Gumbel noise
THREADS = 1  # one CPU thread: bit-for-bit reproducible, and fastest for these small layers
N_TRAIN = 60_000  # the first N_TRAIN Fashion-MNIST training images
EPOCHS = 8
BATCH = 100  # images per Adam step
LR = 1e-3  # Adam's learning rate
LOG_EVERY = 100  # steps per logged mean of the training terms
TEST_BINARIZATION_SEED = 0  # the test set binarized once, as in every lecture
EVAL_SEED = 0  # the exact categorical samples of the categorical VAE's test ELBO
CURVE_IMAGES = 1000  # the first test images, evaluated after every epoch
QUICK_N_TRAIN, QUICK_EPOCHS = 1000, 1  # --quick: a smoke test of the pipeline
VQ_KWARGS = {"n_codes": 64, "code_dim": 8, "n_positions": 16, "hidden": 256, "beta": 0.25}
CAT_KWARGS = {"n_latent": 20, "n_categories": 10, "hidden": 256}
TAU_START, TAU_MIN, TAU_DECAY = 1.0, 0.5, 0.1  # the categorical VAE's temperature schedule
MODELS = ("vqvae", "catvae")


def tau_at(epoch: int) -> float:
    """The Gumbel-softmax temperature of epoch ``epoch`` (counted from 0)."""
    return max(TAU_MIN, TAU_START * math.exp(-TAU_DECAY * epoch))


def build(name: str) -> VQVAE | CategoricalVAE:
    """A freshly initialised model of the lecture with its build spec (weights depend only on
    ``SEED``)."""
    torch.manual_seed(SEED)
    if name == "vqvae":
        return experiment.make(VQVAE, **VQ_KWARGS)
    if name == "catvae":
        return experiment.make(CategoricalVAE, **CAT_KWARGS, tau=TAU_START)
    raise ValueError(f"build: name must be one of {MODELS}, got {name!r}")


def test_set() -> torch.Tensor:
    """The test images binarized once with ``TEST_BINARIZATION_SEED``: ``[10000, 1, 28, 28]``."""
    images, _ = load_fashion_mnist("test")
    return binarize_fixed(images, seed=TEST_BINARIZATION_SEED).unsqueeze(1)


@torch.no_grad()
def evaluate(model: VQVAE | CategoricalVAE, x: torch.Tensor) -> dict:
    """Test figures of a model on ``x`` (one batch; nats per image, means in float64)."""
    model.eval()
    x = x.to(model.decoder.net[0].weight.device)
    if isinstance(model, VQVAE):
        log_px_z = float(model.log_px_z(x).mean())
        counts, perplexity, used = codebook_usage(model.codes(x), model.n_codes)
        return {
            "log_px_z": log_px_z,
            "kl": model.kl,
            "elbo": log_px_z - model.kl,
            "perplexity": perplexity,
            "codes_used": used,
            "code_counts": counts.tolist(),
        }
    g = torch.Generator(device=x.device).manual_seed(EVAL_SEED)
    elbo = float(model.elbo(x, 1, generator=g).mean())
    kl = float(categorical_kl_uniform(model.logits(x)).sum(-1).mean())
    return {"log_px_z": elbo + kl, "kl": kl, "elbo": elbo}


def epoch_batches(model: VQVAE | CategoricalVAE, train_images: torch.Tensor):
    """``batches(epoch)`` for :meth:`Trainer.fit`: seeds the epoch's Gumbel noise, sets its
    temperature, and yields binarized batches ``[BATCH, 1, 28, 28]`` in a seeded order (one
    generator for the order and the binarization, so each epoch is reproducible on its own)."""
    n = len(train_images)

    def batches(epoch: int):
        torch.manual_seed(10_000 * (SEED + 1) + epoch)  # the Gumbel noise
        g = torch.Generator().manual_seed(1000 * (SEED + 1) + epoch)
        order = torch.randperm(n, generator=g)
        if isinstance(model, CategoricalVAE):
            model.tau = tau_at(epoch)
        for start in range(0, n, BATCH):
            yield binarize_dynamic(train_images[order[start : start + BATCH]], g).unsqueeze(1)

    return batches


def train_one(
    name: str,
    train_images: torch.Tensor,
    epochs: int,
    x_curve: torch.Tensor,
    device: str | torch.device = "cpu",
    state: Path | None = None,
) -> tuple[VQVAE | CategoricalVAE, list[dict]]:
    """Train ``name`` on ``train_images`` (uint8 ``[N, 28, 28]``); return (model, curves).

    With ``state``, the trainer's state and the curves are saved there after every epoch, and a
    state found there of a run on the same images is resumed (to ``epochs`` in all: the epochs
    are seeded one by one, so a resumed or extended run is the uninterrupted one)."""
    model = build(name)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    trainer = Trainer(model, opt, log_every=LOG_EVERY, progress=False, device=device)
    run = {
        "n_train": len(train_images),
        "images_sha256": sha256_bytes(train_images.numpy().tobytes()),
    }
    curves: list[dict] = []
    if state is not None and state.is_file() and load_checkpoint(state)[1].get("run") == run:
        curves = list(trainer.load(state)["curves"])
        print(f"  {name}: resuming after epoch {trainer.epoch}", flush=True)

    def on_epoch_end(tr: Trainer) -> None:
        r = evaluate(model, x_curve)
        row = {"epoch": tr.epoch, "test_elbo": r["elbo"]}
        row.update({"perplexity": r["perplexity"]} if name == "vqvae" else {"tau": model.tau})
        curves.append(row)
        print(f"  {name} epoch {tr.epoch}/{epochs}: {row}", flush=True)
        if state is not None:
            tr.save(state, extra={"run": run, "curves": curves})

    trainer.fit(epoch_batches(model, train_images), epochs, on_epoch_end=on_epoch_end)
    return model, curves


def main(argv: list[str] | None = None) -> int:
    args = experiment.script_args(experiment.script_parser(__doc__), argv)
    device = args.device
    seed_everything(SEED, threads=THREADS)
    t_start = time.perf_counter()
    n_train, epochs = (QUICK_N_TRAIN, QUICK_EPOCHS) if args.quick else (N_TRAIN, EPOCHS)
    train_images = load_fashion_mnist("train")[0][:n_train]
    x_test = test_set()
    state_dir = args.out / ".l07_state"
    state_dir.mkdir(parents=True, exist_ok=True)

    models: dict = {}
    for name in MODELS:
        t0 = time.perf_counter()
        model, curves = train_one(
            name,
            train_images,
            epochs,
            x_test[:CURVE_IMAGES],
            device,
            state_dir / f"{name}.safetensors",
        )
        path = args.out / f"l07_{name}.safetensors"
        digest = experiment.save_model(path, model, name=name, command=COMMAND, epochs=epochs)
        models[name] = experiment.model_entry(
            path,
            digest,
            model,
            round(time.perf_counter() - t0),
            test=evaluate(model, x_test),
            curves=curves,
        )
        shown = {k: v for k, v in models[name]["test"].items() if k != "code_counts"}
        print(f"[{name}] {models[name]['train_seconds']} s, test {shown}", flush=True)

    settings = {
        "seed": SEED,
        "threads": THREADS,
        "device": str(device),
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
        "curve_images": CURVE_IMAGES,
    }
    path = experiment.write_results(
        args.out, "l07", LECTURE, COMMAND, settings, models, args.quick, state_dir
    )
    print(f"wrote {path}; total {time.perf_counter() - t_start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Train the eight VAEs of Lecture 04 (posterior collapse) and write their checkpoints.

Usage: python tools/train_lecture04.py [--out data/checkpoints] [--variants NAME ...]
                                       [--device cpu] [--quick]

Two experiments, the same four variants in each:

* ``mlp``               -- a factorized Bernoulli MLP decoder (the reference VAE);
* ``pixelcnn``          -- a small PixelCNN decoder, trained on the plain ELBO;
* ``pixelcnn_anneal``   -- the same, with the KL weight rising linearly from 0 to 1
  (``dgmlib.kl_control.scheduled`` on the objective's ``kl_weight``);
* ``pixelcnn_freebits`` -- the same, with free bits (``ELBO(free_bits=lambda)``, lambda nats per
  latent dimension).

**Bars and stripes** (``bas_<variant>``, settings ``BAS``): 8 x 8 binary images whose exact
``log p(x)`` is known (``dgmlib.data.bars_and_stripes``), fresh samples at every step, an
8-dimensional latent code, and a PixelCNN whose first kernel sees every earlier pixel, so that it
can model the data exactly without ``z``. **Fashion-MNIST** (``<variant>``): the first ``N_TRAIN``
training images binarized by thresholding (intensity > 0.5, clean silhouettes that an
autoregressive decoder models well) in a seeded order (``dgmlib.experiment.epoch_order``), an
MLP Gaussian encoder and a 16-dimensional latent code.

Everything is deterministic: one CPU thread, fixed seeds, a fixed training subset and order.
Written into ``--out``: ``l04_<variant>.safetensors`` (weights and build spec, with a ``.sha256``
sidecar; ``dgmlib.pretrained.load("l04_pixelcnn")``) and one ``l04_results.json`` in the schema of
``dgmlib.experiment``, with the settings of both experiments (``settings["fashion"]``,
``settings["bas"]``) and per model: ``experiment``, the figures the lecture recomputes (``test``:
KL, KL per dimension, active units, variances of the posterior means, the single-sample ELBO and
``log_px_z`` = E_q log p(x|z) on the first ``N_EVAL`` binarized test images, or on
``BAS["n_eval"]`` fixed samples with their exact mean ``log_px``), the same after every epoch
(``curves``) and the Trainer's history (``history``: means over ``LOG_EVERY`` steps of ``kl``,
``elbo`` and ``log_px_z``, the true ELBO and KL whatever the objective; nats per image).
Runtime: roughly 15-20 minutes on one quiet CPU core (about 45 on a busy machine), of which the
bars-and-stripes models take about 4. ``--quick`` is a smoke test of the pipeline (its files are
not the lecture's, so it needs another ``--out``).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dgmlib.data import (  # noqa: E402
    bars_and_stripes,
    bars_and_stripes_log_prob,
    binarize_threshold,
    load_fashion_mnist,
)
from dgmlib.diagnostics import active_units, kl_per_dimension  # noqa: E402
from dgmlib.experiment import epoch_order, make, save_model, write_results  # noqa: E402
from dgmlib.io import read_json  # noqa: E402
from dgmlib.kl_control import linear_warmup, scheduled  # noqa: E402
from dgmlib.models import VAE, BernoulliDecoder, MLPGaussianEncoder, PixelCNNDecoder  # noqa: E402
from dgmlib.objectives import ELBO  # noqa: E402
from dgmlib.train import Trainer  # noqa: E402
from dgmlib.utils import get_device, set_threads  # noqa: E402

# --- configuration ---------------------------------------------------------------------------
COMMAND = "python tools/train_lecture04.py"
LECTURE = "04_posterior_collapse"
SEED = 0  # torch seed of the initial weights; also seeds the data order / fresh samples
THREADS = 1  # CPU threads: one, so that the arithmetic (and the files) are reproducible
LOG_EVERY = 10  # steps per entry of the training history (the mean over those steps)
EVAL_SEED = 0  # generator of the single-sample ELBO
AU_THRESHOLD = 0.01  # a latent dimension is active when Var_x(mu_j(x)) exceeds this

# Fashion-MNIST
Z_DIM = 16  # latent dimension
HIDDEN = 200  # width of the MLP encoder's (and MLP decoder's) two hidden layers
N_TRAIN = 20_000  # the first 20k training images
BATCH = 100  # images per step
EPOCHS = 6  # passes over the training images
LR = 1e-3  # Adam's learning rate
# a 29 x 29 first masked convolution sees the 14 rows above a pixel (half the image) at once
PIXELCNN = {"channels": 16, "n_layers": 3, "kernel_size": 29, "hidden_kernel_size": 3}
WARMUP_EPOCHS = 3  # KL annealing: beta from 0 to 1 over the first 3 epochs
FREE_BITS = 0.5  # nats per latent dimension
N_EVAL = 1000  # test images (the first ones) used for the reported figures

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
    "n_eval": 2000,  # fixed evaluation samples ...
    "eval_data_seed": 99,  # ... drawn with this seed
}

VARIANTS = ("mlp", "pixelcnn", "pixelcnn_anneal", "pixelcnn_freebits")
BAS_VARIANTS = tuple(f"bas_{v}" for v in VARIANTS)
# --quick: the settings it replaces, for a smoke test of the pipeline (Fashion-MNIST, BAS)
QUICK = {"n_train": 500, "epochs": 1, "log_every": 1, "warmup_epochs": 1, "n_eval": 100}
BAS_QUICK = {"steps_per_epoch": 10, "epochs": 2, "log_every": 2, "warmup_steps": 10, "n_eval": 100}
# ---------------------------------------------------------------------------------------------

DEFAULT_OUT = ROOT / "data" / "checkpoints"
Batches = Callable[[int], Iterator[torch.Tensor]]


def fashion_settings(quick: bool = False) -> dict:
    """The settings of the Fashion-MNIST experiment (``quick``: those of the smoke test)."""
    s = {
        "seed": SEED,
        "threads": THREADS,
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
        "n_eval": N_EVAL,
        "eval_seed": EVAL_SEED,
        "au_threshold": AU_THRESHOLD,
        "binarization": "threshold 0.5",
    }
    return {**s, **QUICK} if quick else s


def bas_settings(quick: bool = False) -> dict:
    """The settings of the bars-and-stripes experiment (``quick``: those of the smoke test)."""
    s = {
        "seed": SEED,
        "threads": THREADS,
        "log_every": LOG_EVERY,
        "eval_seed": EVAL_SEED,
        "au_threshold": AU_THRESHOLD,
        **BAS,
    }
    return {**s, **BAS_QUICK} if quick else s


def build(variant: str) -> VAE:
    """The model of a variant (with its build spec), freshly initialised from the global seed."""
    torch.manual_seed(SEED)
    if variant.startswith("bas_"):
        side, z_dim, hidden, pixelcnn = BAS["size"], BAS["z_dim"], BAS["hidden"], BAS["pixelcnn"]
    else:
        side, z_dim, hidden, pixelcnn = 28, Z_DIM, HIDDEN, PIXELCNN
    x_shape = (1, side, side)
    encoder = make(MLPGaussianEncoder, x_dim=side * side, hidden=hidden, z_dim=z_dim)
    if variant.endswith("mlp"):
        decoder = make(BernoulliDecoder, z_dim=z_dim, hidden=hidden, x_shape=x_shape)
    else:
        decoder = make(PixelCNNDecoder, z_dim=z_dim, **pixelcnn, x_shape=x_shape)
    return make(VAE, encoder=encoder, decoder=decoder)


def objective(variant: str) -> ELBO:
    """The training objective of a variant: the ELBO, with free bits for ``*_freebits``."""
    if variant.endswith("_freebits"):
        return ELBO(free_bits=BAS["free_bits"] if variant.startswith("bas_") else FREE_BITS)
    return ELBO()


def eval_data(n: int) -> torch.Tensor:
    """The first ``n`` test images, binarized by thresholding: ``[n, 1, 28, 28]``."""
    images, _ = load_fashion_mnist("test")
    return binarize_threshold(images[:n]).unsqueeze(1)


def bas_eval_data(n: int) -> torch.Tensor:
    """The fixed bars-and-stripes evaluation images: ``[n, 1, 8, 8]``."""
    g = torch.Generator().manual_seed(BAS["eval_data_seed"])
    return bars_and_stripes(n, BAS["size"], g)


@torch.no_grad()
def evaluate(model: VAE, x: torch.Tensor) -> dict:
    """On the images ``x [N, 1, H, W]``: the KL (total and per dimension), the active units, the
    variances of the posterior means, the single-sample ELBO (generator seeded ``EVAL_SEED``) and
    ``log_px_z`` = E_q log p(x|z), averaged over the images, nats; for bars and stripes also the
    exact mean ``log_px``."""
    model.eval()
    mu, logvar = model.encode(x)
    kl_dims = kl_per_dimension(mu, logvar)
    au = active_units(mu, AU_THRESHOLD)
    elbo = model.elbo(x, generator=torch.Generator(x.device).manual_seed(EVAL_SEED))
    kl = float(kl_dims.sum())
    extra = {}
    if x.shape[-1] == BAS["size"]:
        extra["log_px"] = float(bars_and_stripes_log_prob(x.cpu()).mean())
    return {
        **extra,
        "kl": kl,
        "active_units": au.count,
        "elbo": float(elbo.mean()),
        "log_px_z": float(elbo.mean()) + kl,
        "kl_per_dim": kl_dims.tolist(),
        "mu_variance": au.variances.tolist(),
    }


def fashion_batches(train_images: torch.Tensor) -> Batches:
    """``batches(epoch)``: the images in the order ``epoch_order``, thresholded,
    ``[BATCH, 1, 28, 28]``."""

    def batches(epoch: int) -> Iterator[torch.Tensor]:
        order = epoch_order(len(train_images), epoch, SEED)
        for start in range(0, len(order), BATCH):
            yield binarize_threshold(train_images[order[start : start + BATCH]]).unsqueeze(1)

    return batches


def bas_batches(steps_per_epoch: int) -> Batches:
    """``batches(epoch)``: ``steps_per_epoch`` fresh bars-and-stripes batches, seeded by the
    epoch, ``[BAS["batch"], 1, 8, 8]``."""

    def batches(epoch: int) -> Iterator[torch.Tensor]:
        g = torch.Generator().manual_seed(1000 * (SEED + 1) + epoch)
        for _ in range(steps_per_epoch):
            yield bars_and_stripes(BAS["batch"], BAS["size"], g)

    return batches


def train(
    variant: str,
    batches: Batches,
    x_eval: torch.Tensor,
    cfg: dict,
    out: Path,
    device: torch.device,
) -> dict:
    """Train one variant on ``batches(epoch)`` with the settings ``cfg`` of its experiment, save
    its checkpoint into ``out``; return its results entry."""
    model = build(variant)
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    trainer = Trainer(
        model, opt, objective(variant), log_every=cfg["log_every"], progress=False, device=device
    )
    if variant.endswith("_anneal"):
        if "warmup_steps" in cfg:
            steps = cfg["warmup_steps"]
        else:
            steps = cfg["warmup_epochs"] * (cfg["n_train"] // cfg["batch"])
        batches = scheduled(batches, trainer, partial(linear_warmup, warmup_steps=steps))
    curves = []

    def on_epoch_end(tr: Trainer) -> None:
        r = evaluate(model, x_eval)
        curves.append(
            {
                "epoch": tr.epoch,
                "test_kl": r["kl"],
                "test_active_units": r["active_units"],
                "test_elbo": r["elbo"],
            }
        )
        print(
            f"  {variant} epoch {tr.epoch}: test KL {r['kl']:.3f}  AU {r['active_units']}  "
            f"ELBO {r['elbo']:.2f}",
            flush=True,
        )

    t0 = time.perf_counter()
    history = trainer.fit(batches, cfg["epochs"], on_epoch_end=on_epoch_end)
    seconds = time.perf_counter() - t0
    path = out / f"l04_{variant}.safetensors"
    return {
        "checkpoint": path.name,
        "sha256": save_model(path, model, variant=variant, command=COMMAND),
        "n_params": sum(p.numel() for p in model.parameters()),
        "train_seconds": round(seconds),
        "experiment": "bas" if variant.startswith("bas_") else "fashion",
        "test": evaluate(model, x_eval),
        "curves": curves,
        "history": {k: history[k] for k in ("step", "kl", "elbo", "log_px_z")},
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    variants = VARIANTS + BAS_VARIANTS
    parser.add_argument("--variants", nargs="+", choices=variants, default=list(variants))
    parser.add_argument("--device", default=None, help="default: $DGMLIB_DEVICE, else cpu")
    parser.add_argument("--quick", action="store_true", help="a smoke test (not the lecture's)")
    args = parser.parse_args(argv)
    if args.quick and args.out.resolve() == DEFAULT_OUT.resolve():
        parser.error("--quick writes smoke-test files; give another folder with --out")
    device = get_device(args.device)
    set_threads(THREADS)
    args.out.mkdir(parents=True, exist_ok=True)
    cfg = {"fashion": fashion_settings(args.quick), "bas": bas_settings(args.quick)}
    # keep the results of variants not re-trained now, if made with the same settings
    path = args.out / "l04_results.json"
    old = read_json(path) if path.is_file() else {}
    models = {}
    if old.get("quick") == args.quick:
        for name, entry in old.get("models", {}).items():
            if old["settings"].get(entry["experiment"]) == cfg[entry["experiment"]]:
                models[name] = entry
    data = {}
    if any(v in BAS_VARIANTS for v in args.variants):
        c = cfg["bas"]
        data["bas"] = (bas_batches(c["steps_per_epoch"]), bas_eval_data(c["n_eval"]).to(device))
    if any(v in VARIANTS for v in args.variants):
        c = cfg["fashion"]
        images = load_fashion_mnist("train")[0][: c["n_train"]]
        data["fashion"] = (fashion_batches(images), eval_data(c["n_eval"]).to(device))
    for variant in [v for v in BAS_VARIANTS + VARIANTS if v in args.variants]:
        experiment = "bas" if variant.startswith("bas_") else "fashion"
        batches, x_eval = data[experiment]
        models[variant] = train(variant, batches, x_eval, cfg[experiment], args.out, device)
        print(f"{variant}: done in {models[variant]['train_seconds']} s of training", flush=True)
        ordered = {v: models[v] for v in VARIANTS + BAS_VARIANTS if v in models}
        write_results(args.out, "l04", LECTURE, COMMAND, cfg, ordered, quick=args.quick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

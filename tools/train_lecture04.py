"""Train the VAEs of Lecture 04 (posterior collapse) and write their checkpoints.

Usage: python tools/train_lecture04.py [--part all|main|rf] [--out data/checkpoints]
                                       [--variants NAME ...] [--device cpu] [--quick]

``--part main`` trains the eight models of the two experiments below (``--variants``: some of
them), ``--part rf`` the receptive-field sweep at the end of this docstring, and ``--part all``
(the default) both.

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
autoregressive decoder models well) in a seeded order (``dgmlib.epoch_order``), an
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

**Decoder weakening** (``--part rf``, settings ``RF``): VAEs with a PixelCNN decoder trained on
the plain ELBO on bars and stripes (fresh samples, the encoder and code of ``BAS``), with the
decoder's receptive field swept from a 3 x 3 window (the four nearest earlier pixels) to every
earlier pixel, and ``z`` entering through a rich path (a multi-channel conditioning map made by a
hidden layer, added in every layer); a control with the default narrow path (one linear map to
one bias map) at the two ends. Models ``rf<k>_s<seed>`` and ``rf<k>_narrow_s<seed>`` (``k`` the
first kernel), files ``l04_rf<k>[_narrow]_s<seed>.safetensors`` and ``l04_rf_results.json``
(``dgmlib.pretrained.results("l04_rf")``), with per model the figures of ``evaluate`` on the
``BAS`` evaluation images (``test``), the same after every epoch (``curves``) and the Trainer's
history. Resumable: each model's training state is saved after every epoch in
``<out>/l04_rf_resume/`` (removed once the model is written), and a model already in the
results file with the same settings is not trained again. Runtime: 10 models of 2000 steps,
about 10 minutes on one busy CPU core (3.5 minutes of CPU time).
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

from dgmlib import experiment  # noqa: E402
from dgmlib.data import (  # noqa: E402
    bars_and_stripes,
    bars_and_stripes_log_prob,
    binarize_threshold,
    load_fashion_mnist,
)
from dgmlib.diagnostics import active_units, kl_per_dimension  # noqa: E402
from dgmlib.io import read_json, sidecar_path  # noqa: E402
from dgmlib.kl_control import linear_warmup, scheduled  # noqa: E402
from dgmlib.models import VAE, BernoulliDecoder, MLPGaussianEncoder, PixelCNNDecoder  # noqa: E402
from dgmlib.objectives import ELBO  # noqa: E402
from dgmlib.train import Trainer  # noqa: E402
from dgmlib.utils import get_device, set_threads  # noqa: E402

# --- configuration ---------------------------------------------------------------------------
COMMAND = "python tools/train_lecture04.py"
RF_COMMAND = COMMAND + " --part rf"
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

# Decoder weakening (--part rf): the BAS data, encoder, code, batch, steps per epoch and lr; the
# plain ELBO. A 1 x 1 hidden layer keeps the receptive field at the first kernel's window, k // 2
# rows up and k // 2 columns to either side (k = 3: 4 earlier pixels; k = 15: all of them).
RF = {
    "kernel_sizes": [3, 5, 9, 15],  # first masked kernel of the rich-path models
    "seeds": [0, 1],  # torch seed of the initial weights, and seed of the stream of batches
    "narrow": {"kernel_sizes": [3, 15], "seeds": [0]},  # the control with the default z-path
    "pixelcnn": {"channels": 16, "n_layers": 2, "hidden_kernel_size": 1},
    "rich_path": {"cond_channels": 8, "cond_hidden": 64},  # 8 maps from a 64-unit hidden layer
    "epochs": 4,  # of BAS["steps_per_epoch"] fresh batches
}
RF_QUICK = {"steps_per_epoch": 10, "epochs": 2, "log_every": 2, "n_eval": 100}
# ---------------------------------------------------------------------------------------------

DEFAULT_OUT = ROOT / "data" / "checkpoints"
Batches = Callable[[int], Iterator[torch.Tensor]]


def fashion_settings(quick: bool = False) -> dict:
    """The settings of the Fashion-MNIST experiment (``quick``: those of the smoke test)."""
    s = {
        **experiment.config_values(
            globals(),
            "SEED THREADS Z_DIM HIDDEN N_TRAIN BATCH EPOCHS LR LOG_EVERY PIXELCNN WARMUP_EPOCHS "
            "FREE_BITS N_EVAL EVAL_SEED AU_THRESHOLD",
        ),
        "binarization": "threshold 0.5",
    }
    return {**s, **QUICK} if quick else s


def bas_settings(quick: bool = False) -> dict:
    """The settings of the bars-and-stripes experiment (``quick``: those of the smoke test)."""
    s = {
        **experiment.config_values(globals(), "SEED THREADS LOG_EVERY EVAL_SEED AU_THRESHOLD"),
        **BAS,
    }
    return {**s, **BAS_QUICK} if quick else s


def rf_settings(quick: bool = False) -> dict:
    """The settings of the receptive-field sweep (``quick``: those of the smoke test)."""
    keys = ("size", "z_dim", "hidden", "batch", "steps_per_epoch", "lr", "n_eval")
    s = {
        **experiment.config_values(globals(), "THREADS LOG_EVERY EVAL_SEED AU_THRESHOLD"),
        "eval_data_seed": BAS["eval_data_seed"],
        **{k: BAS[k] for k in keys},
        **RF,
    }
    return {**s, **RF_QUICK} if quick else s


def rf_runs() -> list[tuple[str, int, int, bool]]:
    """The sweep's models: ``(name, kernel_size, seed, rich)``, rich-path models first."""
    runs = [(f"rf{k}_s{s}", k, s, True) for s in RF["seeds"] for k in RF["kernel_sizes"]]
    narrow = RF["narrow"]
    runs += [
        (f"rf{k}_narrow_s{s}", k, s, False) for s in narrow["seeds"] for k in narrow["kernel_sizes"]
    ]
    return runs


def build_rf(kernel_size: int, seed: int, rich: bool) -> VAE:
    """A model of the sweep (with its build spec), freshly initialised from ``seed``."""
    torch.manual_seed(seed)
    side = BAS["size"]
    encoder = experiment.make(
        MLPGaussianEncoder, x_dim=side * side, hidden=BAS["hidden"], z_dim=BAS["z_dim"]
    )
    decoder = experiment.make(
        PixelCNNDecoder,
        z_dim=BAS["z_dim"],
        kernel_size=kernel_size,
        **RF["pixelcnn"],
        **(RF["rich_path"] if rich else {}),
        x_shape=(1, side, side),
    )
    return experiment.make(VAE, encoder=encoder, decoder=decoder)


def build(variant: str) -> VAE:
    """The model of a variant (with its build spec), freshly initialised from the global seed."""
    torch.manual_seed(SEED)
    if variant.startswith("bas_"):
        side, z_dim, hidden, pixelcnn = BAS["size"], BAS["z_dim"], BAS["hidden"], BAS["pixelcnn"]
    else:
        side, z_dim, hidden, pixelcnn = 28, Z_DIM, HIDDEN, PIXELCNN
    x_shape = (1, side, side)
    encoder = experiment.make(MLPGaussianEncoder, x_dim=side * side, hidden=hidden, z_dim=z_dim)
    if variant.endswith("mlp"):
        decoder = experiment.make(BernoulliDecoder, z_dim=z_dim, hidden=hidden, x_shape=x_shape)
    else:
        decoder = experiment.make(PixelCNNDecoder, z_dim=z_dim, **pixelcnn, x_shape=x_shape)
    return experiment.make(VAE, encoder=encoder, decoder=decoder)


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
        order = experiment.epoch_order(len(train_images), epoch, SEED)
        for start in range(0, len(order), BATCH):
            yield binarize_threshold(train_images[order[start : start + BATCH]]).unsqueeze(1)

    return batches


def bas_batches(steps_per_epoch: int, seed: int = SEED) -> Batches:
    """``batches(epoch)``: ``steps_per_epoch`` fresh bars-and-stripes batches from a generator
    seeded by ``seed`` and the epoch, ``[BAS["batch"], 1, 8, 8]``."""

    def batches(epoch: int) -> Iterator[torch.Tensor]:
        g = torch.Generator().manual_seed(1000 * (seed + 1) + epoch)
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
    return experiment.model_entry(
        path,
        experiment.save_model(path, model, variant=variant, command=COMMAND),
        model,
        round(seconds),
        experiment="bas" if variant.startswith("bas_") else "fashion",
        test=evaluate(model, x_eval),
        curves=curves,
        history={k: history[k] for k in ("step", "kl", "elbo", "log_px_z")},
    )


def train_rf(
    name: str,
    kernel_size: int,
    seed: int,
    rich: bool,
    x_eval: torch.Tensor,
    cfg: dict,
    out: Path,
    device: torch.device,
) -> dict:
    """Train one model of the sweep on the plain ELBO with the settings ``cfg``, resuming from
    ``out/l04_rf_resume/<name>.train.safetensors`` if an earlier run left it; save the model into
    ``out`` and return its results entry (the per-epoch curves and the training time are kept in
    the Trainer's state, so that a resumed run reports the same as an uninterrupted one)."""
    model = build_rf(kernel_size, seed, rich)
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    trainer = Trainer(model, opt, ELBO(), log_every=cfg["log_every"], progress=False, device=device)
    trainer.state = {"curves": [], "train_seconds": 0.0}
    t0 = time.perf_counter()

    def on_epoch_end(tr: Trainer) -> None:
        nonlocal t0
        r = evaluate(model, x_eval)
        tr.state["curves"].append(
            {
                "epoch": tr.epoch,
                "test_kl": r["kl"],
                "test_active_units": r["active_units"],
                "test_elbo": r["elbo"],
            }
        )
        tr.state["train_seconds"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        print(
            f"  {name} epoch {tr.epoch}: test KL {r['kl']:.3f}  AU {r['active_units']}  "
            f"ELBO {r['elbo']:.3f}",
            flush=True,
        )

    resume = out / "l04_rf_resume" / f"{name}.train.safetensors"
    resume.parent.mkdir(exist_ok=True)
    batches = bas_batches(cfg["steps_per_epoch"], seed)
    history = trainer.fit(batches, cfg["epochs"], checkpoint=resume, on_epoch_end=on_epoch_end)
    path = out / f"l04_{name}.safetensors"
    return experiment.model_entry(
        path,
        experiment.save_model(path, model, variant=name, command=RF_COMMAND),
        model,
        round(trainer.state["train_seconds"]),
        experiment="rf",
        kernel_size=kernel_size,
        seed=seed,
        z_path="rich" if rich else "narrow",
        rows_up=model.decoder.rows_up,
        test=evaluate(model, x_eval),
        curves=trainer.state["curves"],
        history={k: history[k] for k in ("step", "kl", "elbo", "log_px_z")},
    )


def run_rf_part(out: Path, quick: bool, device: torch.device) -> None:
    """``--part rf``: train the sweep's models not yet in ``l04_rf_results.json`` (with the same
    settings), writing the results file and the manifest entries after each."""
    cfg = rf_settings(quick)
    path = out / "l04_rf_results.json"
    old = read_json(path) if path.is_file() else {}
    same = old.get("quick") == quick and old.get("settings") == cfg
    models = dict(old.get("models", {})) if same else {}
    x_eval = bas_eval_data(cfg["n_eval"]).to(device)
    names = [run[0] for run in rf_runs()]
    for name, kernel_size, seed, rich in rf_runs():
        if name in models:
            print(f"{name}: already trained with these settings", flush=True)
            continue
        models[name] = train_rf(name, kernel_size, seed, rich, x_eval, cfg, out, device)
        print(f"{name}: done in {models[name]['train_seconds']} s of training", flush=True)
        ordered = {n: models[n] for n in names if n in models}
        experiment.write_results(out, "l04_rf", LECTURE, RF_COMMAND, cfg, ordered, quick=quick)
        (out / "l04_rf_resume" / f"{name}.train.safetensors").unlink()
        sidecar_path(out / "l04_rf_resume" / f"{name}.train.safetensors").unlink()
    resume_dir = out / "l04_rf_resume"
    if resume_dir.is_dir() and not any(resume_dir.iterdir()):
        resume_dir.rmdir()


def run_main_part(out: Path, variants: list[str], quick: bool, device: torch.device) -> None:
    """``--part main``: train ``variants`` of the two experiments, keeping in
    ``l04_results.json`` the entries of the others if made with the same settings."""
    cfg = {"fashion": fashion_settings(quick), "bas": bas_settings(quick)}
    path = out / "l04_results.json"
    old = read_json(path) if path.is_file() else {}
    models = {}
    if old.get("quick") == quick:
        for name, entry in old.get("models", {}).items():
            if old["settings"].get(entry["experiment"]) == cfg[entry["experiment"]]:
                models[name] = entry
    data = {}
    if any(v in BAS_VARIANTS for v in variants):
        c = cfg["bas"]
        data["bas"] = (bas_batches(c["steps_per_epoch"]), bas_eval_data(c["n_eval"]).to(device))
    if any(v in VARIANTS for v in variants):
        c = cfg["fashion"]
        images = load_fashion_mnist("train")[0][: c["n_train"]]
        data["fashion"] = (fashion_batches(images), eval_data(c["n_eval"]).to(device))
    for variant in [v for v in BAS_VARIANTS + VARIANTS if v in variants]:
        experiment = "bas" if variant.startswith("bas_") else "fashion"
        batches, x_eval = data[experiment]
        models[variant] = train(variant, batches, x_eval, cfg[experiment], out, device)
        print(f"{variant}: done in {models[variant]['train_seconds']} s of training", flush=True)
        ordered = {v: models[v] for v in VARIANTS + BAS_VARIANTS if v in models}
        experiment.write_results(out, "l04", LECTURE, COMMAND, cfg, ordered, quick=quick)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("all", "main", "rf"), default="all")
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
    if args.part in ("all", "main"):
        run_main_part(args.out, args.variants, args.quick, device)
    if args.part in ("all", "rf"):
        run_rf_part(args.out, args.quick, device)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

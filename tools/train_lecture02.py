"""Train the two VAEs of Lecture 02 (amortized inference and the VAE) and write their checkpoints.

Usage: python tools/train_lecture02.py [--out data/checkpoints] [--models z2 z20] [--device cpu]
                                       [--quick]

Both models are the one-stochastic-layer MLP VAE of Burda et al. (``VAE.for_mnist``: encoder
784-200-200-(2Z), Bernoulli decoder Z-200-200-784, tanh) trained on the plain single-sample ELBO
(``dgmlib.objectives.ELBO``) with Adam on all 60k dynamically binarized Fashion-MNIST training
images: ``z2`` has a two-dimensional latent code, so the latent space can be drawn; ``z20`` a
twenty-dimensional one, the better generative model. About 30 minutes on one busy CPU core.

Everything is deterministic: one CPU thread, fixed seeds, a fixed data order per epoch and the
dynamic binarization drawn from the same seeded generator as the order (the notebook retraces
the first steps with the same batches, so this batching is kept as it is). Written into
``--out``: ``l02_vae_<model>.safetensors`` (weights and build spec, with a ``.sha256`` sidecar;
``dgmlib.pretrained.load("l02_vae_z20")``) and ``l02_results.json`` in the schema of
``dgmlib.experiment``: per model the test figures that the lecture recomputes (``test``: the
single-sample ELBO, ``log_px_z`` = E_q log p(x|z) and the KL on all test images, binarized once
with a fixed seed; ``subset_elbo`` and ``subset_nll``, the ELBO and a ``NLL_K``-sample
importance-weighted estimate of -log p(x) on the first ``NLL_N`` test images, which the lecture
quotes to show how loose the ELBO is), the test ELBO after every epoch (``curves``) and the
training history of the Trainer (``history``: means over ``LOG_EVERY`` steps of ``elbo``, ``kl``
and ``log_px_z``, all signed as named, nats per image). ``--quick`` is a smoke test of the
pipeline on a few images (its files are not the lecture's, so it needs another ``--out``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dgmlib import experiment  # noqa: E402
from dgmlib.bounds import estimate_nll  # noqa: E402
from dgmlib.data import binarize_dynamic, binarize_fixed, load_fashion_mnist  # noqa: E402
from dgmlib.io import read_json  # noqa: E402
from dgmlib.models import VAE  # noqa: E402
from dgmlib.objectives import ELBO  # noqa: E402
from dgmlib.train import Trainer  # noqa: E402
from dgmlib.utils import set_threads  # noqa: E402

# --- configuration ---------------------------------------------------------------------------
COMMAND = "python tools/train_lecture02.py"
LECTURE = "02_amortized_vae"
SEED = 0  # torch seed of the initial weights; also seeds the epochs' order and binarization
THREADS = 1  # CPU threads: one, so that the arithmetic (and the files) are reproducible
HIDDEN = 200  # width of the two hidden layers of the encoder and of the decoder
MODELS = {"z2": 2, "z20": 20}  # model name -> latent dimension
BATCH = 100  # images per step
EPOCHS = 30  # passes over the training images
LR = 1e-3  # Adam's learning rate
LOG_EVERY = 100  # steps per entry of the training history (the mean over those steps)
N_TRAIN = 60_000  # training images used (all)
N_TEST = 10_000  # test images of the reported figures (all)
TEST_BINARIZATION_SEED = 0  # the test images are binarized once, with this seed
EVAL_SEED = 0  # generator of the single-sample test ELBO
NLL_K = 1000  # importance samples of the log-likelihood estimate ...
NLL_N = 1000  # ... on the first NLL_N test images
NLL_SEED = 1  # generator of that estimate
# --quick: the settings it replaces, for a smoke test of the pipeline
QUICK = {"epochs": 1, "n_train": 1000, "n_test": 500, "log_every": 2, "nll_k": 20, "nll_n": 100}
# ---------------------------------------------------------------------------------------------

DEFAULT_OUT = ROOT / "data" / "checkpoints"


def settings(quick: bool = False) -> dict:
    """The settings recorded in ``l02_results.json`` (``quick``: those of the smoke test)."""
    s = {
        **experiment.config_values(
            globals(),
            "SEED THREADS HIDDEN MODELS BATCH EPOCHS LR LOG_EVERY N_TRAIN N_TEST "
            "TEST_BINARIZATION_SEED EVAL_SEED NLL_K NLL_N NLL_SEED",
        ),
    }
    return {**s, **QUICK} if quick else s


def build(z_dim: int) -> VAE:
    """A fresh model (with its build spec), initialised from the global seed as in the lecture."""
    torch.manual_seed(SEED)
    return VAE.for_mnist(z_dim=z_dim, hidden=HIDDEN)


def epoch_batches(train_images: torch.Tensor, epoch: int) -> Iterator[torch.Tensor]:
    """The mini-batches of one epoch: a seeded permutation, then a dynamic binarization drawn from
    the same generator. ``train_images``: uint8 ``[N, 28, 28]``; yields float {0, 1} tensors
    ``[BATCH, 1, 28, 28]``."""
    g = torch.Generator().manual_seed(1000 * (SEED + 1) + epoch)
    order = torch.randperm(len(train_images), generator=g)
    for start in range(0, len(order), BATCH):
        idx = order[start : start + BATCH]
        yield binarize_dynamic(train_images[idx], generator=g).unsqueeze(1)


def test_data(n: int) -> torch.Tensor:
    """The first ``n`` test images, binarized once with a fixed seed: ``[n, 1, 28, 28]``."""
    images, _ = load_fashion_mnist("test")
    return binarize_fixed(images, seed=TEST_BINARIZATION_SEED)[:n].unsqueeze(1)


@torch.no_grad()
def evaluate(model: VAE, x: torch.Tensor) -> dict[str, float]:
    """The single-sample ELBO (generator seeded ``EVAL_SEED``), ``log_px_z`` = E_q log p(x|z)
    and the analytic KL, each averaged over the images ``x [N, 1, 28, 28]``, nats."""
    model.eval()
    mu, logvar = model.encode(x)
    kl = float(model.kl_per_dim(mu, logvar).sum(-1).mean())
    g = torch.Generator(x.device).manual_seed(EVAL_SEED)
    elbo = float(model.elbo(x, generator=g).mean())
    return {"elbo": elbo, "log_px_z": elbo + kl, "kl": kl}


@torch.no_grad()
def nll_subset(model: VAE, x: torch.Tensor, k: int) -> dict[str, float]:
    """On ``x``: the single-sample ELBO and the ``k``-sample importance-weighted estimate of
    -log p(x) (``dgmlib.bounds.estimate_nll``), averaged over the images, nats."""
    g = torch.Generator(x.device).manual_seed(NLL_SEED)
    nll = estimate_nll(lambda xb, kb: model.log_weights(xb, kb, g), x, K=k)
    elbo = model.elbo(x, generator=torch.Generator(x.device).manual_seed(EVAL_SEED))
    return {"subset_elbo": float(elbo.mean()), "subset_nll": float(nll.mean())}


def train(
    name: str,
    train_images: torch.Tensor,
    x_test: torch.Tensor,
    out: Path,
    cfg: dict,
    device: torch.device,
) -> dict:
    """Train model ``name``, save its checkpoint into ``out``; return its results entry."""
    model = build(MODELS[name])
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    trainer = Trainer(model, opt, ELBO(), log_every=cfg["log_every"], progress=False, device=device)
    curves: list[dict] = []

    def on_epoch_end(tr: Trainer) -> None:
        r = evaluate(model, x_test)
        curves.append({"epoch": tr.epoch, "test_elbo": r["elbo"]})
        print(f"  {name} epoch {tr.epoch}: test ELBO {r['elbo']:.2f}", flush=True)

    t0 = time.perf_counter()
    history = trainer.fit(
        lambda epoch: epoch_batches(train_images, epoch), cfg["epochs"], on_epoch_end=on_epoch_end
    )
    seconds = time.perf_counter() - t0
    test = evaluate(model, x_test)
    test.update(nll_subset(model, x_test[: cfg["nll_n"]], cfg["nll_k"]))
    path = out / f"l02_vae_{name}.safetensors"
    meta = {"name": name, "z_dim": MODELS[name], "epochs": cfg["epochs"], "command": COMMAND}
    return experiment.model_entry(
        path,
        experiment.save_model(path, model, **meta),
        model,
        round(seconds),
        z_dim=MODELS[name],
        test=test,
        curves=curves,
        history={k: history[k] for k in ("step", "elbo", "kl", "log_px_z")},
    )


def main(argv: list[str]) -> int:
    parser = experiment.script_parser(__doc__)
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    args = experiment.script_args(parser, argv)
    device = args.device
    set_threads(THREADS)
    cfg = settings(args.quick)
    args.out.mkdir(parents=True, exist_ok=True)
    train_images = load_fashion_mnist("train")[0][: cfg["n_train"]]
    x_test = test_data(cfg["n_test"]).to(device)
    # keep the results of models not re-trained now, if they were made with the same settings
    path = args.out / "l02_results.json"
    old = read_json(path) if path.is_file() else {}
    same = old.get("settings") == cfg and old.get("quick") == args.quick
    models = dict(old["models"]) if same else {}
    for name in args.models:
        models[name] = train(name, train_images, x_test, args.out, cfg, device)
        print(f"{name}: done in {models[name]['train_seconds']} s of training", flush=True)
        ordered = {m: models[m] for m in MODELS if m in models}
        experiment.write_results(args.out, "l02", LECTURE, COMMAND, cfg, ordered, quick=args.quick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

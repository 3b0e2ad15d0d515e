"""Train the continuous normalizing flow of Appendix A1; write a small checkpoint and its curve.

Usage: python tools/train_lectureA1.py [--out data/checkpoints] [--device cpu] [--quick]
Runtime: one to one and a half minutes of CPU time on one thread (76 s and 58 s measured; one to
five minutes of wall time on a two-core machine shared with other jobs); ``--quick`` runs a
few-second smoke test of the pipeline (not the lecture's settings).

The model (FFJORD-style, exact trace in 2-D): ``dgmlib.cnf.CNF`` around
``dgmlib.cnf.ConcatMLP(**NET)``, base ``N(0, I)`` at ``t0 = 0``, data at ``t1 = 1``, trained on
``dgmlib.data.toy_2d("ring", N_TRAIN, seed=TRAIN_SEED, noise=RING_STD)``, a mixture of 8
Gaussians whose density ``dgmlib.cnf.ring_log_prob`` is exact. Each step minimises the mean
``-log p(x)`` of ``BATCH`` points drawn with replacement (indices from one generator seeded
``BATCH_SEED``), by Adam with a cosine decay of the learning rate, differentiating through a
fixed-grid solver (``dgmlib.ode.fixed_grid(RK4_STEPS)`` on ``[0, 1]``, float32): with a fixed
grid every step costs the same and the run is reproducible.

Evaluated at the end in float64 with an adaptive solver (``dopri5``, ``EVAL_TOL``), the
continuous-time model the lecture studies, on ``N_TEST`` fresh points (seed ``TEST_SEED``), in
nats per point: ``nll`` = mean ``-log p_model(x)`` (the cross-entropy), ``entropy`` = mean
``-log p_true(x)``, ``kl_data_model`` = their paired difference ``KL(p_true || p_model)``, each
with its standard error (``_se``); ``nll_train_solver``, the cross-entropy with the training
solver; ``nfe``, the evaluations of ``f`` the adaptive solver needed.

Everything is deterministic: one CPU thread, fixed seeds. Outputs in ``--out``:
``lA1_cnf.safetensors`` (weights and build spec, ``dgmlib.pretrained.load("lA1_cnf")``) with its
``.sha256`` sidecar, ``lA1_results.json`` (schema of ``dgmlib.experiment``) and the manifest entry.
On the same platform a re-run reproduces the checkpoint bit for bit; another CPU's float32
kernels change the trajectory slightly, which is why the lecture loads the file.
"""

from __future__ import annotations

import copy
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dgmlib import experiment  # noqa: E402
from dgmlib.cnf import CNF, ConcatMLP, ring_log_prob  # noqa: E402
from dgmlib.data import toy_2d  # noqa: E402
from dgmlib.ode import fixed_grid  # noqa: E402
from dgmlib.stats import mean_se  # noqa: E402
from dgmlib.train import Trainer  # noqa: E402
from dgmlib.utils import seed_everything  # noqa: E402

# --- configuration ---------------------------------------------------------------------------
COMMAND = "python tools/train_lectureA1.py"
SEED = 0  # torch's seed before the model is built (its initial weights)
THREADS = 1  # one CPU thread: the float32 sums are the same on every run
RING_STD = 0.25  # standard deviation of each of the ring's 8 Gaussians
N_TRAIN = 20_000  # training points, drawn once
TRAIN_SEED = 1  # toy_2d seed of the training points
N_TEST = 2000  # evaluation points
TEST_SEED = 2  # toy_2d seed of the evaluation points
NET = {"dim": 2, "hidden": 64, "layers": 3, "activation": "tanh", "init_scale": 0.1}  # ConcatMLP
STEPS = 1500  # optimiser steps, one batch each
BATCH = 256  # points per batch, drawn with replacement
BATCH_SEED = 3  # seed of the generator that draws every batch's indices
LR = 3e-3  # Adam's initial learning rate
LR_END = 1e-4  # ... decayed to this by a cosine over STEPS steps
RK4_STEPS = 4  # steps of the training solver on [0, 1]
LOG_EVERY = 50  # steps per point of the loss curve (the mean loss over them)
EVAL_TOL = {"rtol": 1e-7, "atol": 1e-9}  # dopri5 tolerances of the float64 evaluation
QUICK = {"steps": 20, "n_test": 200, "log_every": 10}  # --quick: a smoke test of the pipeline
# ---------------------------------------------------------------------------------------------


def build_model() -> CNF:
    """A freshly initialised CNF with a build spec (weights depend only on ``SEED``)."""
    torch.manual_seed(SEED)
    return experiment.make(CNF, net=experiment.make(ConcatMLP, **NET))


def train_data(n: int = N_TRAIN) -> torch.Tensor:
    """The training points, float32 ``[n, 2]``."""
    return toy_2d("ring", n, seed=TRAIN_SEED, noise=RING_STD)[0]


def test_data(n: int = N_TEST) -> torch.Tensor:
    """The evaluation points, float64 ``[n, 2]``."""
    return toy_2d("ring", n, seed=TEST_SEED, noise=RING_STD)[0].double()


def nll(model: CNF, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The training objective: ``{"loss": mean -log p(x)}`` (nats) with the training solver."""
    return {"loss": -model.log_prob(x, **fixed_grid(RK4_STEPS)).mean()}


def train(
    steps: int = STEPS,
    n_train: int = N_TRAIN,
    log_every: int = LOG_EVERY,
    device: str | torch.device | None = None,
) -> tuple[CNF, list[dict]]:
    """Train the CNF for ``steps`` steps; return it and its loss curve (rows ``{step, loss}``).

    One step per Trainer epoch: the epoch's one batch, then the learning-rate schedule's step."""
    x_all = train_data(n_train)
    model = build_model()
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=LR_END)
    g = torch.Generator().manual_seed(BATCH_SEED)
    trainer = Trainer(model, opt, nll, log_every=log_every, progress=False, device=device)

    def batches(epoch: int) -> list[torch.Tensor]:
        return [x_all[torch.randint(0, len(x_all), (BATCH,), generator=g)]]

    history = trainer.fit(batches, steps, on_epoch_end=lambda tr: sched.step())
    curve = [
        {"step": int(s), "loss": float(f"{v:.5g}")}
        for s, v in zip(history.get("step", []), history.get("loss", []), strict=True)
    ]
    return model.cpu(), curve


def evaluate(model: CNF, x: torch.Tensor) -> dict:
    """Test figures of the float64 continuous-time model (see the module docstring)."""
    m64 = copy.deepcopy(model).double()
    with torch.no_grad():
        m64.nfe = 0
        lp = m64.log_prob(x, method="dopri5", **EVAL_TOL)
        nfe = m64.nfe
        lp_rk4 = m64.log_prob(x, **fixed_grid(RK4_STEPS))
    lp_true = ring_log_prob(x, RING_STD)
    figures = {"nll_train_solver": float(-lp_rk4.mean()), "nfe": nfe}
    for key, v in (("nll", -lp), ("entropy", -lp_true), ("kl_data_model", lp_true - lp)):
        figures[key], figures[f"{key}_se"] = mean_se(v)
    return figures


def settings(steps: int, n_test: int, log_every: int) -> dict:
    """The settings recorded in the results file."""
    return {
        **experiment.config_values(globals(), "SEED THREADS RING_STD N_TRAIN TRAIN_SEED"),
        "n_test": n_test,
        "test_seed": TEST_SEED,
        "net": NET,
        "steps": steps,
        "batch_size": BATCH,
        "batch_seed": BATCH_SEED,
        "learning_rate": LR,
        "learning_rate_end": LR_END,
        "rk4_steps": RK4_STEPS,
        "log_every": log_every,
        "eval_tol": EVAL_TOL,
    }


def main(argv: list[str] | None = None) -> int:
    args = experiment.script_args(experiment.script_parser(__doc__), argv)
    out = args.out
    seed_everything(SEED, threads=THREADS)
    steps, n_test, log_every = (
        (QUICK["steps"], QUICK["n_test"], QUICK["log_every"])
        if args.quick
        else (STEPS, N_TEST, LOG_EVERY)
    )

    t_start = time.perf_counter()
    model, curve = train(steps, log_every=log_every, device=args.device)
    train_seconds = round(time.perf_counter() - t_start)
    path = out / "lA1_cnf.safetensors"
    digest = experiment.save_model(path, model, command=COMMAND, steps=steps)
    figures = evaluate(model, test_data(n_test))
    print(f"[cnf] {figures}, trained in {train_seconds} s", flush=True)

    entry = experiment.model_entry(
        path,
        digest,
        model,
        train_seconds,
        test=figures,
        curves=curve,
    )
    results = experiment.write_results(
        out,
        "lA1",
        "A1_adjoint",
        COMMAND,
        settings(steps, n_test, log_every),
        {"cnf": entry},
        quick=args.quick,
    )
    print(f"wrote {results} (total {time.perf_counter() - t_start:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

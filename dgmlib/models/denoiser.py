r"""Noise-prediction networks for diffusion models (Lecture 12) and a DDPM wrapper to train them.

A diffusion model's reverse process is parameterized by one network ``eps_theta(z_t, t)`` shared
by all steps: it predicts the noise ``eps`` in ``z_t = sqrt(abar_t) x + sqrt(1 - abar_t) eps``
(see :mod:`dgmlib.diffusion`). The step ``t`` enters through a sinusoidal embedding.

* :class:`MLPDenoiser`: for vectors ``[B, D]`` (the 2-D toy data sets);
* :class:`UNetDenoiser`: a small U-Net for one-channel 28 x 28 images ``[B, 1, 28, 28]``
  (working at 14 x 14 and 7 x 7 after a lossless space-to-depth rearrangement; residual blocks
  with group normalization and the time embedding added after the first convolution);
* :class:`DDPM`: the network, a copy of it holding an exponential moving average (EMA) of its
  weights (the copy used for evaluation and sampling), and the noise schedule; its ``loss(x)``
  is the training objective of :func:`dgmlib.diffusion.ddpm_loss`, so that
  :class:`dgmlib.train.Trainer` trains it with ``objective=None`` (:class:`EMATrainer` updates
  the average after every step). Built with :func:`dgmlib.experiment.make` from sizes alone
  (the linear schedule's ``T``, ``beta_1``, ``beta_T``), it is saved and reloaded by name
  (:func:`dgmlib.pretrained.load`).

Everything is float32 unless the caller converts the module.
"""

from __future__ import annotations

import copy
import math
from typing import cast

import torch
from torch import Tensor, nn

from dgmlib.diffusion import WEIGHTINGS, alpha_bars, ddpm_loss, linear_betas
from dgmlib.train import Trainer
from dgmlib.validation import check_choice

__all__ = [
    "DDPM",
    "EMATrainer",
    "MLPDenoiser",
    "UNetDenoiser",
    "sinusoidal_embedding",
]


def sinusoidal_embedding(t: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """Transformer-style embedding of integer steps ``t [B]``: ``[B, dim]`` (``dim`` even).

    Coordinates ``2k`` and ``2k + 1`` are ``sin`` and ``cos`` of ``t / max_period^(2k / dim)``.
    """
    if dim < 2 or dim % 2:
        raise ValueError(f"sinusoidal_embedding: dim must be an even integer >= 2, got {dim}")
    if t.dim() != 1:
        raise ValueError(f"sinusoidal_embedding: t must be 1-D [B], got shape {tuple(t.shape)}")
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    )
    args = t.to(torch.float32)[:, None] * freqs[None]
    return torch.stack([args.sin(), args.cos()], dim=-1).reshape(len(t), dim)


def _time_mlp(emb_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(emb_dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim))


class MLPDenoiser(nn.Module):
    """``eps_theta(z, t)`` for vectors: ``z [B, D]``, ``t`` int64 ``[B]`` -> ``[B, D]``.

    The embedding of ``t`` goes through a small MLP and is added to every hidden layer;
    ``n_hidden`` layers of width ``hidden`` with SiLU activations.
    """

    def __init__(self, data_dim: int = 2, hidden: int = 128, n_hidden: int = 3, emb_dim: int = 64):
        super().__init__()
        if n_hidden < 1:
            raise ValueError(f"MLPDenoiser: n_hidden must be >= 1, got {n_hidden}")
        self.data_dim, self.emb_dim = data_dim, emb_dim
        self.time = _time_mlp(emb_dim, hidden)
        self.inp = nn.Linear(data_dim, hidden)
        self.hidden = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(n_hidden - 1))
        self.out = nn.Linear(hidden, data_dim)
        self.act = nn.SiLU()

    def forward(self, z: Tensor, t: Tensor) -> Tensor:
        if z.dim() != 2 or z.shape[1] != self.data_dim:
            raise ValueError(f"MLPDenoiser: z must be [B, {self.data_dim}], got {tuple(z.shape)}")
        e = self.time(sinusoidal_embedding(t, self.emb_dim).to(self.inp.weight.dtype))
        h = self.act(self.inp(z) + e)
        for layer in self.hidden:
            h = self.act(layer(h) + e)
        return self.out(h)


class _ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, emb_dim: int, groups: int = 8):
        super().__init__()
        self.norm1 = nn.GroupNorm(min(groups, c_in), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, c_out)
        self.norm2 = nn.GroupNorm(min(groups, c_out), c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        self.act = nn.SiLU()

    def forward(self, x: Tensor, e: Tensor) -> Tensor:
        h = self.conv1(self.act(self.norm1(x)))
        h = h + self.emb(e)[:, :, None, None]
        h = self.conv2(self.act(self.norm2(h)))
        return h + self.skip(x)


class UNetDenoiser(nn.Module):
    """``eps_theta(z, t)`` for images: ``z [B, 1, 28, 28]``, ``t`` int64 ``[B]`` -> like ``z``.

    A small U-Net made cheap for CPUs: the image is first rearranged losslessly into 4 channels
    of 14 x 14 (``pixel_unshuffle``), processed at 14 x 14 (``c1`` channels) and 7 x 7 (``c2``
    channels) by residual blocks, and rearranged back (``pixel_shuffle``). Down: two blocks at
    14 x 14, a strided convolution, one block at 7 x 7; a middle block; up: nearest-neighbour
    upsampling, the 14 x 14 features concatenated, two blocks. The output convolution starts at
    zero (the untrained network predicts no noise).
    """

    def __init__(self, c1: int = 32, c2: int = 64, emb_dim: int = 128):
        super().__init__()
        self.emb_dim = emb_dim
        self.time = _time_mlp(emb_dim, emb_dim)
        self.inp = nn.Conv2d(4, c1, 3, padding=1)
        self.down1a = _ResBlock(c1, c1, emb_dim)  # 14 x 14
        self.down1b = _ResBlock(c1, c1, emb_dim)
        self.pool = nn.Conv2d(c1, c1, 3, stride=2, padding=1)  # 14 -> 7
        self.down2 = _ResBlock(c1, c2, emb_dim)  # 7 x 7
        self.mid = _ResBlock(c2, c2, emb_dim)
        self.up1a = _ResBlock(c2 + c1, c1, emb_dim)  # 14 x 14
        self.up1b = _ResBlock(c1, c1, emb_dim)
        self.norm = nn.GroupNorm(min(8, c1), c1)
        self.out = nn.Conv2d(c1, 4, 3, padding=1)
        self.act = nn.SiLU()
        for p in self.out.parameters():
            nn.init.zeros_(p)

    def forward(self, z: Tensor, t: Tensor) -> Tensor:
        if z.dim() != 4 or tuple(z.shape[1:]) != (1, 28, 28):
            raise ValueError(f"UNetDenoiser: z must be [B, 1, 28, 28], got {tuple(z.shape)}")
        e = self.time(sinusoidal_embedding(t, self.emb_dim).to(self.inp.weight.dtype))
        h1 = self.inp(nn.functional.pixel_unshuffle(z, 2))  # [B, c1, 14, 14]
        h1 = self.down1b(self.down1a(h1, e), e)
        h = self.mid(self.down2(self.pool(h1), e), e)  # [B, c2, 7, 7]
        h = nn.functional.interpolate(h, scale_factor=2, mode="nearest")
        h = self.up1b(self.up1a(torch.cat([h, h1], 1), e), e)
        return nn.functional.pixel_shuffle(self.out(self.act(self.norm(h))), 2)


class DDPM(nn.Module):
    """A noise-prediction network with its EMA copy and its noise schedule.

    ``net``: any module ``net(z, t) -> eps`` (``t`` int64 in ``1..T``). The schedule: ``betas``,
    a float tensor ``[T]``, or, when it is ``None``, Ho et al.'s linear schedule
    ``dgmlib.diffusion.linear_betas(T, beta_1, beta_T)`` (sizes only, so that the model has a
    build spec); stored in float64 as the buffer ``betas``. ``loss(x)`` draws ``t`` and the
    noise from the global RNG (seed it per epoch for reproducible training) and returns
    ``{"loss", "mse"}``: the objective of :func:`dgmlib.diffusion.ddpm_loss` with this
    ``weighting``.
    """

    betas: Tensor

    def __init__(
        self,
        net: nn.Module,
        betas: Tensor | None = None,
        weighting: str = "simple",
        ema_decay: float = 0.999,
        T: int = 1000,
        beta_1: float = 1e-4,
        beta_T: float = 0.02,
    ):
        super().__init__()
        check_choice(weighting, "weighting", "DDPM", WEIGHTINGS)
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"DDPM: ema_decay must lie in [0, 1), got {ema_decay}")
        if betas is None:
            betas = linear_betas(T, beta_1, beta_T)
        alpha_bars(betas)
        self.net = net
        self.ema = copy.deepcopy(net)
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.register_buffer("betas", betas.detach().to(torch.float64).clone())
        self.weighting = weighting
        self.ema_decay = ema_decay

    @property
    def T(self) -> int:
        """The number of diffusion steps."""
        return len(self.betas)

    def loss(self, x: Tensor) -> dict[str, Tensor]:
        """The training objective on a batch ``x [B, ...]``: ``{"loss", "mse"}`` (scalars)."""
        return ddpm_loss(self.net, x, self.betas, weighting=self.weighting)

    @torch.no_grad()
    def update_ema(self) -> None:
        """``ema <- decay * ema + (1 - decay) * net`` for every parameter and buffer."""
        for pe, p in zip(self.ema.parameters(), self.net.parameters(), strict=True):
            pe.mul_(self.ema_decay).add_(p.detach(), alpha=1.0 - self.ema_decay)
        for be, b in zip(self.ema.buffers(), self.net.buffers(), strict=True):
            be.copy_(b)


class EMATrainer(Trainer):
    """:class:`dgmlib.train.Trainer` for a :class:`DDPM`: updates the EMA after every step."""

    def train_step(self, x: Tensor) -> dict[str, float]:
        out = super().train_step(x)
        cast(DDPM, self.model).update_ema()
        return out

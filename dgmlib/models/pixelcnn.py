"""A small PixelCNN decoder for binary images, conditioned on a latent code.

An autoregressive decoder factorises ``p(x|z) = prod_i p(x_i | x_<i, z)`` over pixels in raster
order (row by row, left to right). Masked convolutions (van den Oord et al., 2016) make one
network compute all the conditionals in parallel when ``x`` is known (training, ``log_prob``):

* mask **A** (first layer) lets output pixel ``i`` see input pixels strictly before ``i``;
* mask **B** (later layers) also lets it see position ``i`` of the previous layer, which already
  depends only on pixels before ``i``.

Such a decoder can model the image without ``z`` at all, which is why a VAE with it tends to
collapse its posterior onto the prior (lecture 04). Sampling is sequential: one network
evaluation per pixel. Shapes: ``x [B, 1, H, W]`` (``[B, H, W]`` and ``[B, H*W]`` accepted),
``z [B, Z]`` or ``[K, B, Z]``; log-probabilities are summed over pixels, in nats.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dgmlib.validation import check_choice, check_int, check_tensor

__all__ = ["MaskedConv2d", "PixelCNNDecoder"]


class MaskedConv2d(nn.Conv2d):
    """A ``Conv2d`` whose kernel is masked so that output pixel ``(r, c)`` sees only input pixels
    before it in raster order: rows above, and the same row to the left (``mask_type="A"``), or
    also the pixel itself (``mask_type="B"``). Odd square kernels, "same" padding, stride 1."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        mask_type: str,
        bias: bool = True,
    ) -> None:
        check_choice(mask_type, "mask_type", "MaskedConv2d", ("A", "B"))
        if check_int(kernel_size, "kernel_size", "MaskedConv2d") % 2 == 0:
            raise ValueError(f"MaskedConv2d: kernel_size must be odd and >= 1, got {kernel_size}")
        super().__init__(
            in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias
        )
        self.mask_type = mask_type
        c = kernel_size // 2
        mask = torch.ones(kernel_size, kernel_size)
        mask[c, c + (mask_type == "B") :] = 0.0
        mask[c + 1 :, :] = 0.0
        self.mask: Tensor
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """Masked convolution: ``[B, in, H, W] -> [B, out, H, W]``."""
        return self._conv_forward(x, self.weight * self.mask, self.bias)


class PixelCNNDecoder(nn.Module):
    """``p(x|z) = prod_i Bernoulli(x_i; sigmoid(logit_i(x_<i, z)))`` for binary 1 x H x W images.

    Architecture: a mask-A convolution (``kernel_size``) from the image to ``channels`` maps, then
    ``n_layers - 1`` residual mask-B convolutions (``hidden_kernel_size``) with ReLU, then two 1x1
    convolutions to one logit map. The receptive field reaches
    ``kernel_size // 2 + (n_layers - 1) * (hidden_kernel_size // 2)`` rows up (``rows_up``) and as
    many columns to either side: fewer layers or smaller kernels make a weaker decoder
    (``hidden_kernel_size=1`` keeps the field at the first kernel's window).

    How ``z`` enters: a network maps it to a conditioning map ``s(z)`` of ``cond_channels x H x W``
    and every layer adds a 1x1 convolution of that map, a ``z``-dependent input that may differ at
    every position, channel and layer (the spatial conditioning of the conditional PixelCNN,
    van den Oord et al., 2016). ``s`` does not depend on ``x``, so the autoregressive property is
    kept. The default (``cond_channels=1``, ``cond_hidden=0``) is the narrow path: one linear map
    to one ``H x W`` map, so each layer sees ``z`` only through one number per position;
    ``cond_channels > 1`` widens the map and ``cond_hidden > 0`` puts a hidden ReLU layer of that
    width between ``z`` and the map.
    """

    def __init__(
        self,
        z_dim: int,
        channels: int = 32,
        n_layers: int = 5,
        kernel_size: int = 7,
        hidden_kernel_size: int = 3,
        x_shape: Sequence[int] = (1, 28, 28),
        cond_channels: int = 1,
        cond_hidden: int = 0,
    ) -> None:
        super().__init__()
        x_shape = tuple(int(s) for s in x_shape)
        if len(x_shape) != 3 or x_shape[0] != 1:
            raise ValueError(f"PixelCNNDecoder: x_shape must be (1, H, W), got {x_shape}")
        check_int(n_layers, "n_layers", "PixelCNNDecoder")
        check_int(cond_channels, "cond_channels", "PixelCNNDecoder")
        check_int(cond_hidden, "cond_hidden", "PixelCNNDecoder", low=0)
        self.z_dim, self.x_shape, self.cond_channels = z_dim, x_shape, cond_channels
        H, W = x_shape[1:]
        self.cond: nn.Module
        if cond_hidden == 0:
            self.cond = nn.Linear(z_dim, cond_channels * H * W)
        else:
            self.cond = nn.Sequential(
                nn.Linear(z_dim, cond_hidden),
                nn.ReLU(),
                nn.Linear(cond_hidden, cond_channels * H * W),
            )
        self.input = MaskedConv2d(1, channels, kernel_size, "A")
        self.hidden = nn.ModuleList(
            MaskedConv2d(channels, channels, hidden_kernel_size, "B") for _ in range(n_layers - 1)
        )
        self.cond_convs = nn.ModuleList(
            nn.Conv2d(cond_channels, channels, 1) for _ in range(n_layers)
        )
        self.output = nn.Sequential(
            nn.ReLU(), nn.Conv2d(channels, channels, 1), nn.ReLU(), nn.Conv2d(channels, 1, 1)
        )
        self.rows_up = kernel_size // 2 + (n_layers - 1) * (hidden_kernel_size // 2)

    @property
    def x_dim(self) -> int:
        """Number of pixels, ``H * W``."""
        return math.prod(self.x_shape)

    def _net(self, x: Tensor, cond_map: Tensor) -> Tensor:
        """Logits ``[B, 1, h, W]`` from images ``x [B, 1, h, W]`` and z-maps ``[B, C, h, W]``."""
        h = F.relu(self.input(x) + self.cond_convs[0](cond_map))
        for layer, cond in zip(self.hidden, self.cond_convs[1:], strict=True):
            h = h + F.relu(layer(h) + cond(cond_map))
        return self.output(h)

    def _cond_map(self, z: Tensor) -> Tensor:
        """The latent mapped to the conditioning map: ``[B, Z] -> [B, cond_channels, H, W]``."""
        return self.cond(z).view(z.shape[0], self.cond_channels, *self.x_shape[1:])

    def _prepare(self, x: Tensor, z: Tensor) -> tuple[Tensor, Tensor, tuple[int, ...]]:
        """Validate; flatten a ``[K, B, Z]`` latent to ``[K*B, Z]`` with ``x`` repeated K times."""
        where = "PixelCNNDecoder"
        check_tensor(x, "x", where)
        check_tensor(z, "z", where)
        if z.dim() not in (2, 3) or z.shape[-1] != self.z_dim:
            raise ValueError(
                f"{where}: z must have shape [B, {self.z_dim}] or [K, B, {self.z_dim}], got "
                f"{tuple(z.shape)}"
            )
        if x[0].numel() != self.x_dim or x.shape[0] != z.shape[-2]:
            raise ValueError(
                f"{where}: x must have shape [B, {', '.join(map(str, self.x_shape))}] with B = "
                f"{z.shape[-2]} (from z), got {tuple(x.shape)}"
            )
        x = x.reshape(1, x.shape[0], *self.x_shape)
        lead = tuple(z.shape[:-1])
        if z.dim() == 3:
            x = x.expand(z.shape[0], *x.shape[1:])
        return x.reshape(-1, *self.x_shape), z.reshape(-1, self.z_dim), lead

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        """Logits of ``p(x_i | x_<i, z)`` for every pixel: ``[B, 1, H, W]`` (``[K, B, 1, H, W]``
        for ``z [K, B, Z]``). Logit ``i`` depends on ``x`` only through pixels before ``i``."""
        xf, zf, lead = self._prepare(x, z)
        return self._net(xf, self._cond_map(zf)).view(*lead, *self.x_shape)

    def log_prob(self, x: Tensor, z: Tensor) -> Tensor:
        """``log p(x|z)`` summed over pixels: ``[B]`` for z ``[B, Z]``, ``[K, B]`` for
        ``[K, B, Z]``; ``x`` binary (or in ``[0, 1]``), nats."""
        xf, zf, lead = self._prepare(x, z)
        logits = self._net(xf, self._cond_map(zf))
        nll = F.binary_cross_entropy_with_logits(logits, xf, reduction="none")
        return -nll.flatten(1).sum(-1).view(lead)

    @torch.no_grad()
    def sample(
        self, z: Tensor, generator: torch.Generator | None = None, fast: bool = True
    ) -> Tensor:
        """Draw ``x ~ p(x|z)`` pixel by pixel in raster order: ``[B, 1, H, W]`` in {0, 1}.

        ``z``: ``[B, Z]``. Each pixel is ``1`` when a uniform draw falls below its probability.
        ``fast=True`` evaluates the network only on the rows that can influence the current row
        (its receptive field), which gives exactly the same result as the full image
        (``fast=False``) at a fraction of the cost.
        """
        check_tensor(z, "z", "PixelCNNDecoder.sample")
        if z.dim() != 2 or z.shape[-1] != self.z_dim:
            raise ValueError(
                f"PixelCNNDecoder.sample: z must have shape [B, {self.z_dim}], got {tuple(z.shape)}"
            )
        B = z.shape[0]
        _, H, W = self.x_shape
        x = torch.zeros(B, *self.x_shape, dtype=z.dtype, device=z.device)
        cond_map = self._cond_map(z)
        for r in range(H):
            top = max(0, r - self.rows_up) if fast else 0
            bottom = r + 1 if fast else H
            for c in range(W):
                logits = self._net(x[:, :, top:bottom], cond_map[:, :, top:bottom])
                p = torch.sigmoid(logits[:, 0, r - top, c])
                u = torch.rand(B, generator=generator, dtype=z.dtype, device=z.device)
                x[:, 0, r, c] = (u < p).to(z.dtype)
        return x

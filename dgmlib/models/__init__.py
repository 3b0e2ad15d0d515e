"""Models of the course: probabilistic PCA, the VAE with its encoders, decoders and priors,
autoregressive decoders, discrete latents (VQ-VAE, categorical VAE)."""

from dgmlib.models.discrete import VQVAE, CategoricalVAE, VectorQuantizer
from dgmlib.models.pixelcnn import MaskedConv2d, PixelCNNDecoder
from dgmlib.models.ppca import PPCA
from dgmlib.models.priors import (
    FlowPrior,
    MixtureOfGaussiansPrior,
    StandardNormalPrior,
    VampPrior,
)
from dgmlib.models.vae import (
    VAE,
    BernoulliDecoder,
    ConvGaussianEncoder,
    GaussianDecoder,
    MLPGaussianEncoder,
)

__all__ = [
    "PPCA",
    "VAE",
    "BernoulliDecoder",
    "CategoricalVAE",
    "ConvGaussianEncoder",
    "FlowPrior",
    "GaussianDecoder",
    "MaskedConv2d",
    "MixtureOfGaussiansPrior",
    "MLPGaussianEncoder",
    "PixelCNNDecoder",
    "StandardNormalPrior",
    "VampPrior",
    "VectorQuantizer",
    "VQVAE",
]

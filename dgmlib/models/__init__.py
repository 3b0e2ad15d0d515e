"""Models of the course: probabilistic PCA, VAEs and IWAEs, autoregressive decoders, discrete
latents (VQ-VAE, categorical VAE)."""

from dgmlib.models.discrete import VQVAE, CategoricalVAE, VectorQuantizer
from dgmlib.models.pixelcnn import MaskedConv2d, PixelCNNDecoder
from dgmlib.models.ppca import PPCA
from dgmlib.models.priors import (
    FlowPrior,
    MixtureOfGaussiansPrior,
    PriorVAE,
    StandardNormalPrior,
    VampPrior,
)
from dgmlib.models.vae import (
    IWAE,
    VAE,
    BernoulliDecoder,
    ConvGaussianEncoder,
    GaussianDecoder,
    MLPGaussianEncoder,
)

__all__ = [
    "IWAE",
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
    "PriorVAE",
    "StandardNormalPrior",
    "VampPrior",
    "VectorQuantizer",
    "VQVAE",
]

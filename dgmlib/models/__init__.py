"""Models of the course: probabilistic PCA, VAEs and IWAEs, autoregressive decoders."""

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
]

"""dgmlib: the shared helper package of the Deep Generative Models course.

Submodules are imported on demand (``import dgmlib.data``), so importing ``dgmlib`` itself is
cheap, never touches a GPU driver and works without the optional ``triton`` dependency.
"""

from dgmlib.utils import get_device, notebook_setup, seed_everything, set_threads

__all__ = ["get_device", "notebook_setup", "seed_everything", "set_threads"]
__version__ = "0.1.0"

"""granite-asr: IBM Granite Speech 4.1 (2b, 2b-nar, 2b-plus) in plain PyTorch.

Pipeline, left to right (imports only point this way):
    audio → model → decoding → engine → transcribe → cli / server
"""

from .api import build_model, load_model

__version__ = "0.1.0"
__all__ = ["build_model", "load_model", "__version__"]

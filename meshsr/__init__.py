"""meshsr: cached coarse-to-fine mesh interpolation and learned super-resolution."""

__version__ = "0.1.0"

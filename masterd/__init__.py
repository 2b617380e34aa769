"""
masterd: the master daemon of a render farm.
"""

from ._version import __version__

__all__ = ["__version__"]

"""tutti — a server and client for online community choirs.

The import package ``tutti`` holds what every side shares (the command line and the wire
contract); ``tutti.server``, ``tutti.client`` and ``tutti.audio`` live in the top-level
folders ``server/``, ``client/`` and ``audio/`` of the source tree.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]

"""tutti — a server and client for online community choirs.

The import package ``tutti`` holds what every side shares (the command line and the wire
contract); ``tutti.server``, ``tutti.client`` and ``tutti.audio`` live in the top-level
folders ``server/``, ``client/`` and ``audio/`` of the source tree.
"""

import os

# BLAS splits a product's sums over its threads as it finds them free, so a mix's bits would
# depend on what else ran: one thread makes `tutti mix` and the server's mix give the same
# samples (the mix runs its own threads).  Read when numpy loads: set before anything imports it.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.1.0"
__all__ = ["__version__"]

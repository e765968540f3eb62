"""Suite-wide pytest configuration.  Area fixtures live in tests/<area>/conftest.py and
helpers shared between areas in tests/support/."""

import sys

assert "numpy" not in sys.modules, "numpy loaded before tutti could set its BLAS threads"
import tutti  # noqa: E402,F401  (sets OPENBLAS_NUM_THREADS before numpy loads: tutti/__init__.py)

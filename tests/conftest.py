"""Suite-wide pytest configuration.  Area fixtures live in tests/<area>/conftest.py and
helpers shared between areas in tests/support/."""

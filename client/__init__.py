"""The singer's client: clock sync, full-duplex audio engine, crash-safe takes, uploads."""

"""The session server: aiohttp + python-socketio, SQLite and a data directory."""

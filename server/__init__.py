"""The session server: aiohttp + python-socketio, SQLite and a data directory.

Where things are:

- ``app.py`` — :func:`init_app`, the application factory (no sockets); ``app_keys.py`` its
  typed state (:class:`Config`, services); ``cli.py`` — ``tutti serve``.
- ``http_api.py`` — HTTP views; ``errors.py`` — the exception tree and the JSON error middleware.
- ``realtime.py`` — Socket.IO: connect/auth, clock probe, roster, level relay, fan-out.
- ``sessions.py`` — session rules (create, join, settings, close); ``takes.py`` — take
  lifecycle (arm, start at ``t0``, stop, manifest, files).
- ``store.py`` — the :class:`SessionStore` interface and its SQLite implementation;
  ``models.py`` — the records; ``auth.py`` — tokens, join codes, join-code rate limit.
- ``tracks.py`` — backing tracks; ``download.py`` — Range/ETag downloads;
  ``audiocheck.py`` — audio validation with soundfile.
- ``tus.py`` + ``uploads.py`` — generic tus 1.0 uploads; ``take_uploads.py`` — the hooks that
  make them take recordings.

The HTTP and Socket.IO contract is documented in ``docs/protocol.md``.
"""

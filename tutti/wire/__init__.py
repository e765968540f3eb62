"""The wire contract between the tutti server and its clients (singers and leaders).

Pure: no I/O.  Both ``tutti.server`` and ``tutti.client`` import this package, so an event
name or a payload field is spelled in exactly one place, both directions:

- :mod:`tutti.wire.record` — the typed record: one ``to_dict``/``from_dict`` pair and a
  JSON Schema, all read from the fields;
- :mod:`tutti.wire.contract` — event names, session settings, what clients send;
- :mod:`tutti.wire.outbound` — what the server sends, one record per event;
- :mod:`tutti.wire.replies` — the HTTP API's request and reply bodies;
- :mod:`tutti.wire.schema` — the whole contract as one JSON Schema (``tutti wire-schema``).

Versioning: :data:`PROTOCOL_VERSION` is sent by every client in the Socket.IO ``auth``
object; the server refuses a connection whose version it does not speak.  Event names are
never reused: a retired name stays in :data:`RETIRED_EVENTS` with the version that retired it.

Times on the wire are seconds.  ``server time`` means the server's ``time.monotonic()``;
``client time`` the client's own ``time.monotonic()``.  Sample counts are frames at the
session rate ``fs``.
"""

from tutti.wire.contract import *  # noqa: F403
from tutti.wire.contract import __all__ as _contract
from tutti.wire.outbound import *  # noqa: F403
from tutti.wire.outbound import __all__ as _outbound
from tutti.wire.record import Record, spec
from tutti.wire.replies import *  # noqa: F403
from tutti.wire.replies import __all__ as _replies

__all__ = [*_contract, *_outbound, *_replies, "Record", "spec"]

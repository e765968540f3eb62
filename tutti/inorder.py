"""Work computed ahead on a thread pool and taken back in order, with a bounded window."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future
from typing import Any, TypeVar

__all__ = ["in_order"]

_T = TypeVar("_T")


def in_order(
    pool: Executor, fn: Callable[..., _T], args: Iterable[tuple[Any, ...]], window: int
) -> Iterator[_T]:
    """``fn(*x)`` for each ``x`` of ``args``, computed ahead on ``pool``, yielded in order; at
    most ``window`` results wait at a time (memory stays bounded)."""
    pending: deque[Future[_T]] = deque()
    for x in args:
        pending.append(pool.submit(fn, *x))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()

"""Domain error -> HTTP response: the one table errors are answered from.

The router uses it, and so does ``abode.testing`` (which answers like a router).
"""

from __future__ import annotations

from abode.cluster.errors import (
    AbodeError,
    Aborted,
    CallTimeout,
    CommitFailed,
    CommitUncertain,
    ConnectionLost,
    InvalidId,
    Refused,
    RemoteError,
    RequestTooLarge,
    UnknownMethod,
    UnknownNamespace,
)
from abode.cluster.http import Response, error_response

# Most specific first: the first row whose class matches wins.
HTTP_STATUS: list[tuple[type[AbodeError], int]] = [
    (InvalidId, 400),
    (UnknownNamespace, 404),
    (UnknownMethod, 404),
    (RequestTooLarge, 413),
    (Refused, 503),
    (CallTimeout, 504),
    (ConnectionLost, 502),
    (CommitUncertain, 502),
    (RemoteError, 500),
    (Aborted, 500),
    (CommitFailed, 500),
    (AbodeError, 500),
]


def status_for(exc: AbodeError) -> int:
    for cls, status in HTTP_STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def error_to_response(exc: AbodeError) -> Response:
    retry_after = exc.retry_after if isinstance(exc, Refused) else None
    return error_response(status_for(exc), str(exc) or exc.code, retry_after=retry_after)

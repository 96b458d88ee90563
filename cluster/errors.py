"""The error hierarchy of abode.

    AbodeError                      base of every error abode raises on purpose
    ├── InvalidId (ValueError)      malformed id, or an id of another namespace
    ├── UnknownNamespace            no object class with that name in the app
    ├── UnknownMethod               RPC to a missing or private method
    ├── RequestTooLarge             body above --max-body
    ├── Refused                     the event never ran; safe to retry
    │   ├── Overloaded              the object's mailbox is full
    │   └── Unavailable             no live home can serve the object right now
    ├── CallTimeout                 the callee did not answer within --call-timeout
    ├── ConnectionLost              the link to the node broke mid-call: it may have run
    ├── RemoteError                 a handler raised; carries the remote type and message
    ├── Aborted                     the object called ctx.abort(reason)
    └── CommitFailed                the event's writes could not be made durable
        └── CommitUncertain         ... on every copy; they may yet last (replicas)

Errors cross the wire as a stable code (``CODES``) plus message, because one gRPC
stream multiplexes many calls and a gRPC status would end them all.
"""

from __future__ import annotations


class AbodeError(Exception):
    code = "internal"

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message


class InvalidId(AbodeError, ValueError):
    code = "invalid_id"


class UnknownNamespace(AbodeError):
    code = "unknown_namespace"


class UnknownMethod(AbodeError):
    code = "unknown_method"


class RequestTooLarge(AbodeError):
    code = "too_large"


class Refused(AbodeError):
    """The event never started, so retrying cannot run it twice."""

    code = "refused"

    def __init__(self, message: str = "", retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Overloaded(Refused):
    code = "overloaded"


class Unavailable(Refused):
    code = "unavailable"


class CallTimeout(AbodeError):
    code = "call_timeout"


class ConnectionLost(AbodeError):
    """The stream broke after the call was sent: it may or may not have run."""

    code = "connection_lost"


class RemoteError(AbodeError):
    """A handler raised. ``remote_type`` names the exception class on the callee."""

    code = "remote"

    def __init__(self, message: str = "", remote_type: str = "Exception") -> None:
        super().__init__(message)
        self.remote_type = remote_type

    def __str__(self) -> str:
        return f"{self.remote_type}: {self.message}"


class Aborted(AbodeError):
    code = "aborted"


class CommitFailed(AbodeError):
    code = "commit_failed"


class CommitUncertain(CommitFailed):
    """The writes reached some copies but not all (a replica did not take them): they
    may be lost or may last, like a call whose connection broke."""

    code = "commit_uncertain"


CODES: dict[str, type[AbodeError]] = {
    cls.code: cls
    for cls in (
        AbodeError,
        InvalidId,
        UnknownNamespace,
        UnknownMethod,
        RequestTooLarge,
        Refused,
        Overloaded,
        Unavailable,
        CallTimeout,
        ConnectionLost,
        RemoteError,
        Aborted,
        CommitFailed,
        CommitUncertain,
    )
}


def from_code(
    code: str, message: str, remote_type: str = "", retry_after: float = 1.0
) -> AbodeError:
    """Rebuild the domain error a peer sent; unknown codes become the base class."""
    cls = CODES.get(code, AbodeError)
    if issubclass(cls, RemoteError):
        return cls(message, remote_type or "Exception")
    if issubclass(cls, Refused):
        return cls(message, retry_after)
    return cls(message)

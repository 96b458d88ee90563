"""Errors: the wire codes (cluster.errors, cluster.wire) and the HTTP table (router)."""

from __future__ import annotations

import pytest

from abode.cluster import errors, wire
from abode.cluster.http import Response
from abode.cluster.http_status import HTTP_STATUS, error_to_response, status_for


@pytest.mark.parametrize("cls", sorted(errors.CODES.values(), key=lambda c: c.code))
def test_every_error_crosses_the_wire_as_itself(cls):
    if issubclass(cls, errors.RemoteError):
        err = cls("bad input", "ValueError")
    elif issubclass(cls, errors.Refused):
        err = cls("busy", retry_after=2.5)
    else:
        err = cls("message")
    back = wire.outcome_from_pb(wire.outcome_to_pb(7, err))
    assert type(back) is cls
    assert back.message == err.message
    if isinstance(err, errors.RemoteError):
        assert back.remote_type == "ValueError" and str(back) == "ValueError: bad input"
    if isinstance(err, errors.Refused):
        assert back.retry_after == 2.5


def test_a_handler_exception_crosses_as_remote_error():
    back = wire.outcome_from_pb(wire.outcome_to_pb(1, KeyError("k")))
    assert isinstance(back, errors.RemoteError)
    assert back.remote_type == "KeyError" and back.message == "'k'"


def test_an_unknown_code_becomes_the_base_error():
    assert type(errors.from_code("from_the_future", "m")) is errors.AbodeError


def test_results_cross_the_wire():
    resp = wire.outcome_from_pb(wire.outcome_to_pb(1, Response.json({"a": 1}, status=201)))
    assert resp.status == 201 and resp.body == b'{"a":1}'
    assert resp.headers["Content-Type"] == "application/json"
    assert wire.outcome_from_pb(wire.outcome_to_pb(2, b"\x90")) == b"\x90"


@pytest.mark.parametrize(("cls", "status"), HTTP_STATUS)
def test_http_status_table(cls, status):
    err = cls("m", "T") if issubclass(cls, errors.RemoteError) else cls("m")
    assert status_for(err) == status


@pytest.mark.parametrize(("err", "status", "body"), [
    (errors.Overloaded("overloaded"), 503, {"error": "overloaded"}),
    (errors.Unavailable("node down", retry_after=3), 503, {"error": "node down"}),
    (errors.CallTimeout("slow"), 504, {"error": "slow"}),
    (errors.InvalidId("bad id"), 400, {"error": "bad id"}),
    (errors.UnknownNamespace("no ns"), 404, {"error": "no ns"}),
    (errors.RequestTooLarge("big"), 413, {"error": "big"}),
    (errors.RemoteError("boom", "ValueError"), 500, {"error": "ValueError: boom"}),
])
async def test_error_responses_are_json(err, status, body):
    resp = error_to_response(err)
    assert resp.status == status
    assert await resp.json() == body
    if isinstance(err, errors.Refused):
        assert resp.headers["Retry-After"] == str(round(err.retry_after))
    else:
        assert "Retry-After" not in resp.headers


def test_refusals_mean_the_event_never_ran():
    assert issubclass(errors.Overloaded, errors.Refused)
    assert issubclass(errors.Unavailable, errors.Refused)
    assert not issubclass(errors.CallTimeout, errors.Refused)

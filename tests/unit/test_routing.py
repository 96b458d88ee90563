"""Default routing: which object a path addresses (DESIGN §2 Default routing, §5)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from abode.cluster import ids
from abode.cluster.errors import InvalidId, UnknownNamespace
from abode.cluster.routing import route_request

NAMESPACES = {"Room", "Counter"}
ROOM_ID = ids.id_from_name("Room", "lobby")


@pytest.mark.parametrize(("path", "name", "rest"), [
    ("/Room/lobby", "lobby", "/"),
    ("/Room/lobby/", "lobby", "/"),
    ("/Room/lobby/messages", "lobby", "/messages"),
    ("/Room/lobby/a/b/c", "lobby", "/a/b/c"),
    ("Room/lobby/x", "lobby", "/x"),
    ("/Room/a%2Fb/x", "a/b", "/x"),
    ("/Room/caf%C3%A9", "café", "/"),
    ("/Room/lobby/a%2Fb", "lobby", "/a%2Fb"),  # the object's path stays as sent
])
def test_names(path, name, rest):
    assert route_request(path, NAMESPACES) == ("Room", ids.id_from_name("Room", name), rest)


@pytest.mark.parametrize(("path", "rest"), [
    (f"/Room/id/{ROOM_ID.hex}", "/"),
    (f"/Room/id/{ROOM_ID.hex}/", "/"),
    (f"/Room/id/{ROOM_ID.hex.upper()}/x/y", "/x/y"),
])
def test_ids(path, rest):
    ns, oid, got_rest = route_request(path, NAMESPACES)
    assert (ns, oid, got_rest) == ("Room", ROOM_ID, rest)


@pytest.mark.parametrize("path", ["/", "", "/Nope/x", "/room/lobby", "/%20/x"])
def test_unknown_namespace(path):
    with pytest.raises(UnknownNamespace):
        route_request(path, NAMESPACES)


@pytest.mark.parametrize("path", [
    "/Room", "/Room/", "/Room//x",             # no name
    "/Room/id", "/Room/id/", "/Room/id//x",    # no hex
    "/Room/id/xyz", "/Room/id/" + "0" * 63,    # malformed
    "/Room/id/" + ids.id_from_name("Counter", "lobby").hex,  # another namespace's id
])
def test_bad_ids(path):
    with pytest.raises(InvalidId):
        route_request(path, NAMESPACES)


@given(name=st.text(alphabet=st.characters(blacklist_characters="/%", blacklist_categories=["Cs"]),
                    min_size=1, max_size=20).filter(lambda n: n != "id"),
       rest=st.lists(st.text(alphabet="abc-_.", max_size=5), max_size=3))
def test_any_name_and_rest(name, rest):
    from urllib.parse import quote

    path = "/Room/" + quote(name, safe="") + "".join("/" + r for r in rest)
    ns, oid, got_rest = route_request(path, NAMESPACES)
    assert oid == ids.id_from_name("Room", name)
    assert got_rest == "/" + "/".join(rest)

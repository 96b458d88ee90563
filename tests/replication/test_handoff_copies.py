"""A handoff moves an object's home, not its other copies (DESIGN §3, "Durability
across node loss").

When a node joins, it pulls the ranges it now owns from their old owners, which then
drop what they handed over. With ``--replicas 2`` an old owner often stays in the
object's preference list as its second copy: it must keep that copy, or the object
has one copy only until its next write, and the loss of the new home in between
serves it from an empty store.
"""

from __future__ import annotations

import os
import signal

import aiohttp
import pytest

from tests.cluster.harness import Cluster
from tests.harness import assert_eventually
from tests.replication.helpers import get_json, wait_caught_up, wait_healthy

pytestmark = pytest.mark.timeout(120)


async def test_an_old_owner_that_stays_a_copy_keeps_it_after_the_handoff(
    cluster: Cluster, http: aiohttp.ClientSession
) -> None:
    cluster.start_nodes("n1", "n2", "n3", replicas=2)
    cluster.start_router()
    url = cluster.router_urls[0]
    await wait_healthy(http, [url], live=3)
    await wait_caught_up(cluster, ["n1", "n2", "n3"])
    tag = os.urandom(3).hex()
    names = [f"h{i}-{tag}" for i in range(60)]
    for name in names:
        async with http.post(f"{url}/Ledger/{name}", params={"op": "a"}) as resp:
            assert resp.status == 200, await resp.text()

    cluster.start_node("n4", replicas=2)
    await wait_caught_up(cluster, ["n1", "n2", "n3", "n4"])

    async def handed_off() -> bool:
        infos = [await cluster.info(n) for n in ("n1", "n2", "n3", "n4")]
        return len({i.revision for i in infos}) == 1 and all(
            i.pending_ranges == 0 for i in infos)

    await assert_eventually(handed_off, timeout=30, interval=0.1)
    homes = {name: cluster.node_by_pid(int((await get_json(
        http, f"{url}/Ledger/{name}"))["pid"])) for name in names}
    moved = [n for n, home in homes.items() if home == "n4"]
    assert moved, homes

    # Nothing was written since the handoff: each moved object's other copy is the
    # one its old owner (or a replica) kept.
    cluster.kill("n4", signal.SIGKILL)
    for name in moved:
        body = await get_json(http, f"{url}/Ledger/{name}/ops", timeout=30)
        assert body["ops"] == {"a": 1}, (name, body)

"""The router–node stream must survive idleness: hibernated sockets ride it for hours.

With grpc's server default (a ping without data at most every 5 minutes, two strikes)
the node answered the router's 10 s keepalives with GOAWAY "too_many_pings" after
~30 s idle, and every WebSocket on the stream closed with 1012. Observing that takes
30 s, so this pins the setting instead.
"""

from abode.cluster.peer import CHANNEL_OPTIONS


def test_node_accepts_the_keepalive_pings_its_clients_send():
    options = dict(CHANNEL_OPTIONS)
    keepalive = options["grpc.keepalive_time_ms"]
    # GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS is spelled without "recv".
    assert options["grpc.http2.min_ping_interval_without_data_ms"] < keepalive
    assert options["grpc.keepalive_permit_without_calls"] == 1

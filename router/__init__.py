"""The edge router: HTTP and WebSocket ingress, routing objects to their home nodes."""

from router._server import RouterConfig, RouterServer

__all__ = ["RouterConfig", "RouterServer"]

"""The edge router: HTTP and WebSocket ingress, routing objects to their home nodes."""

from abode.router._server import RouterConfig, RouterServer

__all__ = ["RouterConfig", "RouterServer"]

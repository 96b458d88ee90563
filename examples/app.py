"""Every example in one app, so one process serves them all (``make run``).

    abode dev examples.app
    curl -X POST localhost:8787/Counter/clicks/increment
    curl -X POST localhost:8787/Tickets/gig/buy
    curl -X POST localhost:8787/Cart/ada/items -d '{"sku": "apple"}'
    curl -X POST localhost:8787/RateLimiter/ada
    curl localhost:8787/Document/notes

An app is just a module: abode serves every DurableObject subclass it can see in
the module's namespace, imported or defined there, each as the namespace named by
its class. Add an example by importing its classes here.
"""

from examples.cart import Cart
from examples.chat import ChatRoom, edge
from examples.counter import Counter
from examples.doc import Document
from examples.ratelimit import RateLimiter
from examples.tickets import Tickets

__all__ = ["Cart", "ChatRoom", "Counter", "Document", "RateLimiter", "Tickets", "edge"]

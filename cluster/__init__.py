"""What routers and nodes share: ids, codec, errors, HTTP types, env and stubs, the wire."""

"""The storage node: object runtime, storage on RocksDB, alarms, sockets, replication.

Internals of ``abode``; the authoring API is the package root, ``abode``.
"""

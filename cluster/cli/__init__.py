"""The ``abode`` command: the composition root that starts nodes and routers."""

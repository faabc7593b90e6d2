"""Streaming transports, one module per family, each a `StreamTransport` (see `base.py`).

`dial.registry` says which class serves which scheme; a module is imported only when its
scheme is dialled, so optional libraries stay optional. Databases live in `dial.databases`.
"""

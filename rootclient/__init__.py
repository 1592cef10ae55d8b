"""The one home of the root node's wire protocol: routes, JSON codecs, the client, the pinned log.

The server (``resolver``) and every client (the gateway, the CLI) import their codecs from here, so the
protocol is written once. It depends only on ``chain_lite`` and ``runtime``.
"""

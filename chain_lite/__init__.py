"""chain_lite: the pure verifiable core of edgeroot.

No sockets, files, clocks or asyncio: bytes and ints in, values out, or a typed
:class:`~chain_lite.errors.ChainError`. Every other part of edgeroot trusts this package.
"""

from chain_lite.errors import ChainError

__all__ = ["ChainError"]

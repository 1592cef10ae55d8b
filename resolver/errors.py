"""The one exception tree of resolver/: each error knows its HTTP status and Handle response code.

The web layer renders any :class:`ResolverError` generically as
``{"responseCode": <handle code>, "message": <reason>}`` with the error's HTTP status, as the Handle
REST API does (1 success, 2 error, 100 handle not found, 101 already exists, 102 invalid handle,
202 invalid value, 301 not responsible, 402 authentication needed, 40x other authentication errors).
"""

from __future__ import annotations


class ResolverError(Exception):
    status = 500
    handle_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class StorageError(ResolverError):
    """The database failed or cannot be reached (our failure, not the caller's)."""

    status = 503


class BadRequest(ResolverError):
    status = 400
    handle_code = 2


class InvalidHandle(BadRequest):
    handle_code = 102


class InvalidValue(BadRequest):
    handle_code = 202


class NotResponsible(BadRequest):
    """The identifier's prefix is not registered at this node."""

    handle_code = 301


class Delegated(NotResponsible):
    """The identifier is under a prefix this node delegated to another node (Handle's 301 "not served
    here"); ``referral`` is the delegation (docs/formats.md §12), shown in the answer so the caller can
    go to the child."""

    def __init__(self, message: str, referral: dict[str, object]) -> None:
        super().__init__(message)
        self.referral = referral


class HandleNotFound(ResolverError):
    status = 404
    handle_code = 100


class AlreadyExists(ResolverError):
    status = 409
    handle_code = 101


class AuthenticationNeeded(ResolverError):
    status = 401
    handle_code = 402


class AuthenticationFailed(ResolverError):
    """A signature that does not verify, an unknown admin key, or a replayed request."""

    status = 403
    handle_code = 403


class InsufficientPermissions(ResolverError):
    """A valid admin key acting outside its prefix."""

    status = 403
    handle_code = 401


class TooLarge(ResolverError):
    status = 413


class NotFound(ResolverError):
    """A non-handle resource (block, receipt, tile, checkpoint) does not exist (yet)."""

    status = 404
    handle_code = 2


class NotYetPublished(ResolverError):
    """A fresh node whose first checkpoint has not been through its witness round yet."""

    status = 503


class ViewBehind(ResolverError):
    """One worker of ``root run --workers N`` cannot move its view to a checkpoint another worker already
    served (the database failed): refused rather than answered as of an older checkpoint."""

    status = 503


class Conflict(ResolverError):
    """A gateway block conflicting with one already accepted: kept as fork evidence, refused."""

    status = 409
    handle_code = 2


class ChainRejected(ResolverError):
    """A gateway block that is badly signed, unlinked or whose body does not match its header."""

    status = 422
    handle_code = 2

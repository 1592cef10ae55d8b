"""The one exception tree of rootclient/: what went wrong talking to a root node or checking its answer."""

from __future__ import annotations

from pathlib import Path


class RootClientError(Exception):
    """Base of every error this package raises."""


class ClientError(RootClientError):
    """The node could not be reached or answered with an error."""

    def __init__(self, message: str, status: int = 0, handle_code: int = 2) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.handle_code = handle_code


class EquivocationDetected(ClientError):
    def __init__(self, message: str, evidence_file: Path) -> None:
        super().__init__(message)
        self.evidence_file = evidence_file

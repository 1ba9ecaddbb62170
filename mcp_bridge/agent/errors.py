"""The one error type the run service answers a refused request with."""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    """A request the service refuses: `code` for programs (busy, rate_limited, not_found, …), the message for
    people (what, why, what to do instead); `extra` travels with it (e.g. `retry_after`)."""

    def __init__(self, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.extra = extra

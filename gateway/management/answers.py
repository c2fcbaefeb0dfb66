"""What the management API answers are made of: JSON values as RabbitMQ's API writes them
(`jsonable`, `dumps`) and its errors (`ApiError`: an HTTP status and RabbitMQ's
`{"error", "reason"}` body). Shared by the router, the handlers and the shapes.
"""

from __future__ import annotations

import json
import math
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from gateway.web import Response


class ApiError(Exception):
    """An error answer: HTTP status and RabbitMQ's `{"error", "reason"}` body."""

    def __init__(self, status: int, reason: str, error: str | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.error = error or {400: "bad_request", 401: "not_authorised",
                               403: "access_refused", 404: "Object Not Found",
                               405: "method_not_allowed", 409: "conflict",
                               501: "not_implemented", 503: "service_unavailable"}.get(
                                   status, "error")

    def response(self) -> Response:
        body = json.dumps({"error": self.error, "reason": self.reason}).encode()
        headers = []
        if self.status == 401:
            headers.append(("www-authenticate", 'Basic realm="RabbitMQ Management"'))
        return Response(self.status, body, headers=headers)


def not_found() -> ApiError:
    return ApiError(404, "Not Found")


# -- JSON ----------------------------------------------------------------------------------


def jsonable(value: Any) -> Any:
    """AMQP field values as JSON: timestamps as integer seconds, bytes as text where they
    are UTF-8, decimals as numbers."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime):
        return int(value.timestamp())
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, bytes | bytearray | memoryview):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return bytes(value).hex()
    return str(value)


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()

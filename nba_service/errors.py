"""One error hierarchy; each class carries the gRPC status code the interceptor maps it to."""

from __future__ import annotations

import grpc


class NbaError(Exception):
    """Base of errors that are safe to show to clients: the message says what was wrong."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL


class InvalidArgument(NbaError):
    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


class NotFound(NbaError):
    code = grpc.StatusCode.NOT_FOUND


class Unavailable(NbaError):
    code = grpc.StatusCode.UNAVAILABLE


class ResourceExhausted(NbaError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPrecondition(NbaError):
    code = grpc.StatusCode.FAILED_PRECONDITION

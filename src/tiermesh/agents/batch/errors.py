"""Errors of the batch lane. Every one derives from :class:`BatchError`; the HTTP edge maps
them to statuses (:attr:`BatchError.status`)."""

from __future__ import annotations

__all__ = [
    "BatchError",
    "BatchNotFound",
    "BatchStateConflict",
    "FileNotFound",
    "InvalidBatchInput",
    "QueueUnavailable",
]


class BatchError(Exception):
    """Root of the batch lane's errors."""

    status = 500
    code = "batch_error"


class InvalidBatchInput(BatchError):
    """A file, a line or a batch request is malformed; ``where`` names the place (``line
    3``, ``input_file_id``) and ``problem`` what is wrong."""

    status = 400
    code = "invalid_request"

    def __init__(self, where: str, problem: str) -> None:
        self.where = where
        self.problem = problem
        super().__init__(f"{where}: {problem}")


class FileNotFound(BatchError):
    """No file with this id, or not the caller's."""

    status = 404
    code = "file_not_found"

    def __init__(self, file_id: str) -> None:
        self.file_id = file_id
        super().__init__(f"no file {file_id!r}")


class BatchNotFound(BatchError):
    """No batch with this id, or not the caller's."""

    status = 404
    code = "batch_not_found"

    def __init__(self, batch_id: str) -> None:
        self.batch_id = batch_id
        super().__init__(f"no batch {batch_id!r}")


class BatchStateConflict(BatchError):
    """The batch cannot do this in its state (cancel a completed batch)."""

    status = 409
    code = "invalid_state"

    def __init__(self, batch_id: str, state: str, action: str) -> None:
        self.batch_id = batch_id
        self.state = state
        super().__init__(f"batch {batch_id!r} is {state}: cannot {action}")


class QueueUnavailable(BatchError):
    """JetStream did not answer or refused a write; nothing was accepted."""

    status = 503
    code = "queue_unavailable"

    def __init__(self, action: str, reason: str) -> None:
        self.action = action
        self.reason = reason
        super().__init__(f"queue unavailable while trying to {action}: {reason}")

"""The JSON events an upload reports, one schema for all of them, locally and from Dask workers alike.

Every event is one JSON object with ``event`` (its kind) and ``time`` (Unix seconds):

* ``state``: the upload entered a phase (``state``: one of ``core.state.Phase``);
* ``part``: a part was acknowledged and recorded (``source``, ``partNumber``, ``bytes``, ``seconds``, ``attempts``);
* ``retry``: a request failed and will be tried again (``operation``, ``source``/``partNumber`` for parts,
  ``attempt``, ``error``, ``delay``);
* ``progress``: the statistics snapshot, once a second (``UploadStatistics.as_json()``);
* ``result``: the upload finished (``UploadResult.as_json()``);
* ``log``: a message meant for people (``level``, ``message``).

In a batch every event also carries ``row`` (the manifest's data row, from 1). ``EVENT_SCHEMA`` is the JSON
Schema of all of them; README.md shows an example of each.
"""

from __future__ import annotations

from typing import Any

from .config import Source
from .state import Phase
from .stats import UploadResult, UploadStatistics

__all__ = [
    "EVENT_SCHEMA",
    "log_event",
    "part_event",
    "progress_event",
    "result_event",
    "retry_event",
    "state_event",
]


def _stamp(kind: str, now: float, fields: dict[str, Any]) -> dict[str, Any]:
    return {"event": kind, "time": round(now, 3), **fields}


def state_event(state: str, now: float) -> dict[str, Any]:
    return _stamp("state", now, {"state": state})


def part_event(source: Source, number: int, nbytes: int, seconds: float, attempts: int, now: float) -> dict[str, Any]:
    return _stamp(
        "part",
        now,
        {
            "source": source.value,
            "partNumber": number,
            "bytes": nbytes,
            "seconds": round(seconds, 4),
            "attempts": attempts,
        },
    )


def retry_event(
    operation: str, source: Source | None, number: int | None, attempt: int, error: str, delay: float, now: float
) -> dict[str, Any]:
    return _stamp(
        "retry",
        now,
        {
            "operation": operation,
            "source": source.value if source is not None else None,
            "partNumber": number,
            "attempt": attempt,
            "error": error,
            "delay": round(delay, 3),
        },
    )


def progress_event(stats: UploadStatistics, now: float) -> dict[str, Any]:
    return _stamp("progress", now, stats.as_json())


def result_event(result: UploadResult, now: float) -> dict[str, Any]:
    return _stamp("result", now, result.as_json())


def log_event(level: str, message: str, now: float) -> dict[str, Any]:
    return _stamp("log", now, {"level": level, "message": message})


_INT = {"type": "integer", "minimum": 0}
_INT_OR_NULL = {"type": ["integer", "null"], "minimum": 0}
_NUMBER = {"type": "number", "minimum": 0}
_SOURCE = {"enum": [s.value for s in Source]}
_STATES = [phase.value for phase in Phase]


def _event(kind: str, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "event": {"const": kind},
            "time": _NUMBER,
            "row": {"type": "integer", "minimum": 1},
            **properties,
        },
        "required": ["event", "time", *required],
        "additionalProperties": False,
    }


_PER_SOURCE = {
    "type": "object",
    "properties": {
        "bytesDone": _INT,
        "bytesSent": _INT,
        "bytesTotal": _INT_OR_NULL,
        "partsDone": _INT,
        "partsTotal": _INT_OR_NULL,
        "partsInFlight": _INT,
    },
    "required": ["bytesDone", "bytesSent", "bytesTotal", "partsDone", "partsTotal", "partsInFlight"],
    "additionalProperties": False,
}
_PROGRESS = {
    "state": {"enum": _STATES},
    "bytesDone": _INT,
    "bytesSent": _INT,
    "bytesTotal": _INT_OR_NULL,
    "fraction": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
    "partsDone": _INT,
    "partsTotal": _INT_OR_NULL,
    "partsInFlight": _INT,
    "retries": _INT,
    "throttles": _INT,
    "rateLimit": {"type": ["number", "null"]},
    "resumedParts": _INT,
    "elapsed": _NUMBER,
    "phaseElapsed": _NUMBER,
    "bytesPerSecond": _NUMBER,
    "sources": {
        "type": "object",
        "propertyNames": _SOURCE,
        "additionalProperties": _PER_SOURCE,
        "minProperties": 1,
    },
}
_BY_SOURCE = {"type": "object", "propertyNames": _SOURCE, "additionalProperties": _INT}
_DIGESTS = {"type": "object", "propertyNames": _SOURCE, "additionalProperties": {"type": "string"}}
_VERIFICATION = {
    "type": "object",
    "properties": {
        "verified": {"type": "boolean"},
        "algorithm": {"type": ["string", "null"]},
        "local": _DIGESTS,
        "remote": _DIGESTS,
        "reads": _INT,
        "bases": _INT,
        "remoteReads": _INT_OR_NULL,
        "remoteBases": _INT_OR_NULL,
        "reason": {"type": "string"},
    },
    "required": ["verified", "algorithm", "local", "remote"],
    "additionalProperties": False,
}
_RESULT = {
    "readSetId": {"type": "string"},
    "uploadId": {"type": "string"},
    "storeId": {"type": "string"},
    "bytes": _BY_SOURCE,
    "parts": _BY_SOURCE,
    "seconds": _NUMBER,
    "transferSeconds": _NUMBER,
    "completeSeconds": _NUMBER,
    "storeSeconds": _NUMBER,
    "verifySeconds": _NUMBER,
    "transferMBps": _NUMBER,
    "retries": _INT,
    "throttles": _INT,
    "resumedParts": _INT,
    "status": {"type": "string"},
    "verified": {"type": ["boolean", "null"]},
    "verification": _VERIFICATION,
    "receipt": {"type": ["string", "null"]},
    "existing": {"type": "boolean"},
    "compressed": {
        "type": "object",
        "propertyNames": _SOURCE,
        "additionalProperties": {
            "type": "object",
            "properties": {"plainBytes": _INT, "ratio": _NUMBER},
            "required": ["plainBytes", "ratio"],
            "additionalProperties": False,
        },
    },
}

EVENT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "async-uploader event",
    "oneOf": [
        _event("state", {"state": {"enum": _STATES}}, ["state"]),
        _event(
            "part",
            {"source": _SOURCE, "partNumber": _INT, "bytes": _INT, "seconds": _NUMBER, "attempts": _INT},
            ["source", "partNumber", "bytes", "seconds", "attempts"],
        ),
        _event(
            "retry",
            {
                "operation": {"type": "string"},
                "source": {"enum": [*_SOURCE["enum"], None]},
                "partNumber": _INT_OR_NULL,
                "attempt": _INT,
                "error": {"type": "string"},
                "delay": _NUMBER,
            },
            ["operation", "source", "partNumber", "attempt", "error", "delay"],
        ),
        _event("progress", _PROGRESS, list(_PROGRESS)),
        _event("result", _RESULT, [key for key in _RESULT if key != "compressed"]),
        _event(
            "log",
            {"level": {"enum": ["debug", "info", "warning", "error"]}, "message": {"type": "string"}},
            ["level", "message"],
        ),
    ],
}
"""The JSON Schema (draft 2020-12) every event line validates against."""

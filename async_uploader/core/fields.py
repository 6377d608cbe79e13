"""Every field a request carries, checked as the service checks it, before anything is sent.

The rules are those of botocore's omics service model (API 2022-11-28): each field's shape, its length bounds and
its pattern, kept here as the model writes it. The model's text pattern,
``[\\p{L}||\\p{M}||\\p{Z}||\\p{S}||\\p{N}||\\p{P}]+``, admits letters, marks, separators (spaces), symbols,
numbers and punctuation: every Unicode general category but "other" (C: control and format characters, private
use, surrogates, unassigned). The patterns are Java regular expressions, run here by the ``regex`` module (Python's
``re`` knows no ``\\p{..}``, and ``unicodedata`` lags the Unicode versions ``regex`` follows), with Java's ``.``
(which stops at every line terminator, not only at ``\\n``). A pattern matches the whole value: a final newline is
not forgiven, as Python's ``$`` would. Lengths count code points. ``tests/test_fields.py`` holds this table against
the model itself, generatively, so the two cannot drift apart.

A value of printable ASCII, as nearly every one is, is checked without ``regex`` (ASCII's general categories are the
same in every Unicode version): that module (some 7 ms of start-up) is imported for the first value outside it.
"""

from __future__ import annotations

import enum
import functools
import unicodedata
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError

__all__ = ["MAX_TAGS", "RULES", "FieldRule", "Pattern", "check_field", "check_tags"]

_JAVA_DOT = "[^\\n\\r\\u0085\\u2028\\u2029]"
"""Java's ``.``: any character but a line terminator."""


class Pattern(enum.Enum):
    """A pattern of the model (its text as the model writes it) and how a message describes it."""

    TEXT = (
        "[\\p{L}||\\p{M}||\\p{Z}||\\p{S}||\\p{N}||\\p{P}]+",
        "letters, marks, spaces, symbols, numbers and punctuation",
    )
    DIGITS = ("[0-9]+", "digits 0-9")
    ARN = ("arn:.+", "an ARN (arn:...) on one line")
    ANY = (None, "any characters")

    def __init__(self, model: str | None, described: str) -> None:
        self.model = model
        self.described = described


@functools.cache
def _regex() -> Any:
    import regex  # noqa: PLC0415 (only for a value that is not all printable ASCII)

    return regex


@functools.cache
def _compiled(pattern: Pattern) -> Any:
    """The pattern compiled by ``regex``, Java's ``.`` and all (None for ANY)."""
    return None if pattern.model is None else _regex().compile(pattern.model.replace(".", _JAVA_DOT))


def _printable_ascii_matches(value: str, pattern: Pattern) -> bool:
    """True when ``value`` is printable ASCII that ``pattern`` matches whole; False when that takes ``regex``."""
    if not (value.isascii() and value.isprintable()):
        return False
    if pattern is Pattern.TEXT:  # every printable ASCII character is a letter, number, space, symbol or punctuation
        return value != ""
    if pattern is Pattern.DIGITS:
        return value.isdigit()
    if pattern is Pattern.ARN:
        return value.startswith("arn:") and len(value) > len("arn:")
    return True


@dataclass(frozen=True, slots=True)
class FieldRule:
    """One field: what users call it, the model's shape that types it, its length bounds and its pattern."""

    label: str
    shape: str
    minimum: int
    maximum: int
    pattern: Pattern


RULES: dict[str, FieldRule] = {
    "sequenceStoreId": FieldRule("sequence store id", "SequenceStoreId", 10, 36, Pattern.DIGITS),
    "uploadId": FieldRule("upload id", "UploadId", 10, 36, Pattern.DIGITS),
    "readSetId": FieldRule("read set id", "ReadSetId", 10, 36, Pattern.DIGITS),
    "subjectId": FieldRule("subject id", "SubjectId", 1, 127, Pattern.TEXT),
    "sampleId": FieldRule("sample id", "SampleId", 1, 127, Pattern.TEXT),
    "name": FieldRule("name", "ReadSetName", 1, 127, Pattern.TEXT),
    "generatedFrom": FieldRule("generatedFrom", "GeneratedFrom", 1, 127, Pattern.TEXT),
    "description": FieldRule("description", "ReadSetDescription", 1, 255, Pattern.TEXT),
    "referenceArn": FieldRule("reference ARN", "ReferenceArn", 1, 127, Pattern.ARN),
    "clientToken": FieldRule("client token", "ClientToken", 1, 127, Pattern.TEXT),
    "tagKey": FieldRule("tag key", "TagKey", 1, 128, Pattern.ANY),
    "tagValue": FieldRule("tag value", "TagValue", 0, 256, Pattern.ANY),
}
MAX_TAGS = 50
"""The model bounds no TagMap, but TagResource's tags map holds at most 50: the limit a read set's tags meet."""


def _refused(value: str, pattern: Pattern) -> str | None:
    """Why ``pattern`` does not match the whole of ``value``; None when it does."""
    if pattern.model is None or _printable_ascii_matches(value, pattern):
        return None
    compiled = _compiled(pattern)
    if compiled.fullmatch(value) is not None:
        return None
    if pattern is Pattern.ARN and not value.startswith("arn:"):
        return "it does not start with arn:"
    regex = _regex()
    single = regex.compile(pattern.model.removesuffix("+")) if pattern.model.endswith("]+") else None
    bad = next((ch for ch in value if single is not None and single.fullmatch(ch) is None), None)
    if bad is None:
        bad = next((ch for ch in value if regex.fullmatch(_JAVA_DOT, ch) is None), value[-1])
    return f"U+{ord(bad):04X} {unicodedata.name(bad, 'unnamed')}"


def check_field(field: str, value: str) -> str:
    """Return ``value`` unless the service would refuse it as ``field``; ConfigError saying why otherwise."""
    rule = RULES[field]
    if not rule.minimum <= len(value) <= rule.maximum:
        if not value:
            raise ConfigError(f"{rule.label} must not be empty")
        raise ConfigError(
            f"{rule.label} is {len(value)} characters long; the service allows {rule.minimum} to {rule.maximum}"
        )
    why = _refused(value, rule.pattern)
    if why is not None:
        raise ConfigError(f"{rule.label} {value!r} must be {rule.pattern.described} ({why})")
    return value


def check_tags(tags: dict[str, str]) -> None:
    """Raise ConfigError unless the service would accept ``tags``: at most 50, each key and value in bounds."""
    if len(tags) > MAX_TAGS:
        raise ConfigError(f"{len(tags)} tags given; the service allows at most {MAX_TAGS}")
    for key, value in tags.items():
        check_field("tagKey", key)
        try:
            check_field("tagValue", value)
        except ConfigError as exc:
            raise ConfigError(f"tag {key!r}: {exc}") from None

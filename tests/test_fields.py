"""Validation equals the service model's: the rules table against botocore's omics model, and every verdict against
the model's own pattern (run by the ``regex`` module, which speaks ``\\p{..}``), generatively."""

from __future__ import annotations

import botocore.session
import pytest
import regex
from botocore.model import MapShape, Shape
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from async_uploader import ConfigError, FileType, ReadSet
from async_uploader.core.fields import MAX_TAGS, RULES, check_field, check_tags

MODEL = botocore.session.get_session().get_service_model("omics")


def input_member(operation: str, name: str) -> Shape:
    """One member of an operation's input structure in the service model."""
    shape = MODEL.operation_model(operation).input_shape
    assert shape is not None, operation
    return shape.members[name]


def tag_map(operation: str) -> MapShape:
    tags = input_member(operation, "tags")
    assert isinstance(tags, MapShape), tags
    return tags


CREATE = "CreateMultipartReadSetUpload"
INPUT_FIELDS = {
    "sequenceStoreId": input_member(CREATE, "sequenceStoreId"),
    "uploadId": input_member("UploadReadSetPart", "uploadId"),
    "readSetId": input_member("GetReadSetMetadata", "id"),
    "subjectId": input_member(CREATE, "subjectId"),
    "sampleId": input_member(CREATE, "sampleId"),
    "name": input_member(CREATE, "name"),
    "generatedFrom": input_member(CREATE, "generatedFrom"),
    "description": input_member(CREATE, "description"),
    "referenceArn": input_member(CREATE, "referenceArn"),
    "clientToken": input_member(CREATE, "clientToken"),
    "tagKey": tag_map(CREATE).key,
    "tagValue": tag_map(CREATE).value,
}
# Characters validation is easy to get wrong on: controls, format characters, private use, separators, symbols,
# astral planes, combining marks, a final newline.
TRICKY = "a\n\r\t\x00\x7f\u0085\u00a0\u200b\u200d\u2028\u2029\ue000\U000f0000\ufeff\u0301é😀🧬²٣|'\"\\ "
SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def model_accepts(field: str, value: str) -> bool:
    """The service model's verdict: the length bounds and the whole value matching its (Java) pattern."""
    metadata = INPUT_FIELDS[field].metadata
    if not metadata.get("min", 0) <= len(value) <= metadata.get("max", 10**9):
        return False
    pattern = metadata.get("pattern")
    # Java's '.' stops at its line terminators; regex's '.' only at '\n' unless told otherwise.
    pattern = pattern and pattern.replace(".", "[^\\n\\r\\u0085\\u2028\\u2029]")
    return pattern is None or regex.fullmatch(pattern, value) is not None


def ours_accepts(field: str, value: str) -> bool:
    try:
        check_field(field, value)
    except ConfigError:
        return False
    return True


@pytest.mark.parametrize("field", sorted(RULES))
def test_the_rules_table_is_the_models(field: str) -> None:
    rule, shape = RULES[field], INPUT_FIELDS[field]
    assert rule.shape == shape.name
    assert (rule.minimum, rule.maximum) == (shape.metadata.get("min", 0), shape.metadata["max"])
    assert rule.pattern.model == shape.metadata.get("pattern")


def test_the_tag_count_is_the_tag_maps() -> None:
    assert tag_map("TagResource").metadata["max"] == MAX_TAGS


@pytest.mark.parametrize("field", sorted(RULES))
@SETTINGS
@given(value=st.text(alphabet=st.characters(codec="utf-8") | st.sampled_from(TRICKY), max_size=300))
@example(value="1234567890\n")
@example(value="subject\u200b")
@example(value="\ue000")
@example(value="🧬 sample")
@example(value="no\u00a0break")
@example(value="arn:aws:omics:us-east-1:123456789012:referenceStore/1\n")
def test_every_verdict_is_the_models(field: str, value: str) -> None:
    assert ours_accepts(field, value) == model_accepts(field, value), (field, value)


@pytest.mark.parametrize("field", sorted(RULES))
@SETTINGS
@given(value=st.text(alphabet=st.characters(max_codepoint=127), max_size=300))
def test_ascii_verdicts_without_the_regex_module_are_the_models(field: str, value: str) -> None:
    """Printable ASCII is checked without ``regex``: every ASCII value, controls among them, has the model's verdict."""
    assert ours_accepts(field, value) == model_accepts(field, value), (field, value)


@pytest.mark.parametrize("field", sorted(RULES))
def test_every_ascii_character_alone_and_in_a_value_gets_the_models_verdict(field: str) -> None:
    for code in range(128):
        for value in (chr(code), f"arn:{chr(code)}", f"12345678{chr(code)}90", f"name {chr(code)}"):
            assert ours_accepts(field, value) == model_accepts(field, value), (field, value)


@pytest.mark.parametrize(
    ("value", "accepted"),
    [
        ("1234567890\n", False),  # Python's $ would have let this through
        ("12345abcde", False),
        ("１２３４５６７８９０", False),  # fullwidth digits are digits, but not 0-9
        ("1234567890", True),
    ],
)
def test_store_ids(value: str, accepted: bool) -> None:
    assert ours_accepts("sequenceStoreId", value) is accepted


@pytest.mark.parametrize(
    ("subject", "accepted"),
    [("a\nb", False), ("a\u200bb", False), ("\ue000", False), ("😀", True), ("no\u00a0break", True), ("tab\t", False)],
)
def test_read_set_metadata_is_checked_on_creation(subject: str, accepted: bool) -> None:
    def make() -> ReadSet:
        return ReadSet("r1.fq.gz", FileType.FASTQ, subject, "sample", "name")  # type: ignore[arg-type]

    if accepted:
        assert make().subject_id == subject
    else:
        with pytest.raises(ConfigError, match=r"subject id .* must be letters, marks, spaces") as info:
            make()
        assert "\n" not in str(info.value)  # one line, whatever the input


def test_tags_count_and_bounds() -> None:
    check_tags({f"k{n}": "" for n in range(MAX_TAGS)})
    with pytest.raises(ConfigError, match=r"51 tags given; the service allows at most 50"):
        check_tags({f"k{n}": "v" for n in range(MAX_TAGS + 1)})
    with pytest.raises(ConfigError, match="tag key"):
        check_tags({"": "v"})
    with pytest.raises(ConfigError, match="tag 'k': tag value is 257 characters long"):
        check_tags({"k": "v" * 257})

"""Before Create, when no checkpoint knows the upload: does the store hold these files already?

A read set of the same name, subject and sample (ListReadSets filters), file type and source sizes (its
metadata's ``files``) is a candidate; it is these files when its ETag equals the files' hash (the verifier's,
computed as they upload; here it is waited for). Where no hash can be computed (BAM, CRAM, uBAM, or verification
switched off) what matched is said, and that it could not be verified.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..core.config import ReadSet
from ..core.protocol import ReadSetMetadata
from ..core.stats import Verification
from .calls import Requests
from .etag import Verifier

__all__ = ["CANDIDATES", "find_existing", "same_sizes"]

CANDIDATES = 20
"""The most read sets of the same name, subject and sample looked at."""


def same_sizes(shape: Mapping[str, tuple[int | None, int | None]], files: Mapping[str, object]) -> bool:
    """Whether a read set's ``files`` hold sources of the sizes in ``shape`` (the part sizes may differ)."""
    found = {
        name: info.get("contentLength")
        for name, info in files.items()
        if name.startswith("source") and isinstance(info, Mapping)
    }
    return found == {name: size for name, (size, _) in shape.items()}


async def find_existing(
    requests: Requests,
    store_id: str,
    read_set: ReadSet,
    shape: Mapping[str, tuple[int | None, int | None]],
    verifier: Verifier | None,
) -> tuple[str | None, str | None, Verification | None]:
    """(read set id, its status, the verification) of the read set that holds these files already, or Nones."""
    client = requests.client
    wanted = {"name": read_set.name, "sampleId": read_set.sample_id, "subjectId": read_set.subject_id}
    found = await requests("ListReadSets", lambda: client.find_read_sets(store_id, wanted))
    kinds = (read_set.file_type.value, "BAM" if read_set.file_type.value == "UBAM" else read_set.file_type.value)
    listed = [m for m in found if m.status in ("ACTIVE", "PROCESSING_UPLOAD") and m.file_type in kinds]
    for candidate in listed[:CANDIDATES]:
        metadata = await requests(
            "GetReadSetMetadata",
            lambda rid=candidate.id: client.get_read_set_metadata(store_id, rid),  # type: ignore[misc]
        )
        if not same_sizes(shape, metadata.files):
            continue
        verification = await _compare(metadata, read_set, verifier)
        if verification is not None:
            return metadata.id, metadata.status, verification
    return None, None, None


async def _compare(metadata: ReadSetMetadata, read_set: ReadSet, verifier: Verifier | None) -> Verification | None:
    """How the candidate is these files: verified (its ETag is their hash), or matched where no hash can be
    computed; None when a hash could be compared and was not equal (or the store has none yet to compare)."""
    matched = "same name, subject, sample, file type and sizes"
    if verifier is None or not verifier.applies:
        why = "verification is switched off" if verifier is None else f"a {read_set.file_type.value} ETag"
        return Verification(False, reason=f"already in the store ({matched}); not verified: {why} is not computed here")
    await verifier.hashed()
    verification = await verifier.compare(metadata, tuple(read_set.sources))
    return verification if verification.verified else None

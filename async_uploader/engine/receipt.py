"""The receipt of one upload, built from what its state and its verifier know (``core.receipt``)."""

from __future__ import annotations

import time
from collections.abc import Mapping

from ..core.config import ReadSet, Source
from ..core.fastq import FastqSummary
from ..core.receipt import Receipt, SourceReceipt
from ..core.state import UploadState
from ..core.version import VERSION

__all__ = ["build_receipt"]


def build_receipt(
    state: UploadState,
    read_set: ReadSet,
    *,
    store_id: str,
    endpoint: str | None,
    region: str | None,
    summaries: Mapping[Source, FastqSummary],
) -> Receipt:
    """The receipt as the upload stands: call it once Complete has made the read set."""
    sizes = {source: size for source, (size, _) in zip(state.sources, state.shape().values(), strict=True)}
    sources = []
    for source in state.sources:
        identity = state.identities.get(source)
        summary = summaries.get(source)
        sources.append(
            SourceReceipt(
                source,
                identity.path if identity is not None else None,
                identity.size if identity is not None else sizes.get(source) or 0,
                identity.mtime_ns if identity is not None else None,
                summary.family if summary is not None else None,
                summary.digest if summary is not None else None,
                summary.reads if summary is not None else None,
                summary.bases if summary is not None else None,
            )
        )
    verification = state.verification
    timings = state.timings()
    return Receipt(
        store_id=store_id,
        read_set_id=state.read_set_id or "",
        upload_id=state.upload_id or "",
        name=read_set.name,
        subject_id=read_set.subject_id,
        sample_id=read_set.sample_id,
        file_type=read_set.file_type.value,
        sources=tuple(sources),
        endpoint=endpoint,
        region=region,
        status=state.status,
        verified=verification.verified if verification is not None else None,
        reason=verification.reason if verification is not None else None,
        timings={
            "transferSeconds": timings.transfer,
            "completeSeconds": timings.complete,
            "storeSeconds": timings.store,
            "verifySeconds": timings.verify,
            "seconds": timings.total,
        },
        tool=f"async-uploader {VERSION}",
        written=time.time(),
    )

"""The Dask batch shares the record of done rows: a row whose file was replaced by other bytes of the same size is
not skipped on a rerun, it is refused (its checkpoint reads the file again) until --restart."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest.importorskip("distributed")

from async_uploader.core.manifest import RowOutcome
from async_uploader.emulator import LocalStore, StoreOptions
from async_uploader.engine.batch import RESTART_NEEDED
from async_uploader.fleet.dask_batch import run_batch_on_dask
from tests.helpers import fastq_gz
from tests.test_distributed import QUOTAS, STORE_ID, make_rows, service_for, upload_config

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120), pytest.mark.usefixtures("test_credentials")]


async def test_a_replaced_file_is_refused_on_a_dask_rerun(tmp_path: Path) -> None:
    rows = make_rows(tmp_path / "reads", 2)
    async with LocalStore(StoreOptions(data_dir=tmp_path / "store", quotas=QUOTAS)) as store:

        async def run(restart: bool = False) -> tuple[list[RowOutcome], list[str]]:
            results: list[RowOutcome] = []
            notes: list[str] = []
            await run_batch_on_dask(
                rows,
                address="local:1",
                store_id=STORE_ID,
                service=service_for(store),
                config=upload_config(),
                checkpoint_dir=tmp_path / "batch",
                on_result=results.append,
                restart=restart,
                note=notes.append,
            )
            return sorted(results, key=lambda outcome: outcome.row.row), notes

        first, _ = await run()
        assert [o.status for o in first] == ["done", "done"]
        source = tmp_path / "reads" / "rs0_1.fq.gz"
        temp = source.with_name("new")
        temp.write_bytes(fastq_gz(source.stat().st_size, seed=99))
        os.replace(temp, source)

        again, notes = await run()
        assert [o.status for o in again] == ["failed", "skipped"]
        assert again[0].result.get(RESTART_NEEDED) is True and "--restart" in (again[0].error or "")
        assert len(notes) == 1 and "row 1" in notes[0] and f"source1 {source}" in notes[0]

        restarted, _ = await run(restart=True)
        assert [o.status for o in restarted] == ["done", "skipped"]
        assert restarted[0].read_set_id != first[0].read_set_id

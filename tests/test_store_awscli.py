"""The AWS CLI v1 from PyPI (its own botocore, serializer and signer) drives a paired upload against ``serve --tls``.

The CLI lives in a venv of its own (``make test`` builds .venv/awscli): it pins an exact botocore.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.store_serve import ROOT, serve

AWS = ROOT / ".venv" / "awscli" / "bin" / "aws"
STORE_ID = "1234567890"

pytestmark = pytest.mark.skipif(not AWS.exists(), reason="the AWS CLI venv is missing: `make test` builds .venv/awscli")


class Cli:
    def __init__(self, url: str, ca_file: Path | None, tmp: Path) -> None:
        self.url = url
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        self.env.update(
            AWS_ACCESS_KEY_ID="test",
            AWS_SECRET_ACCESS_KEY="test",
            AWS_DEFAULT_REGION="us-east-1",
            AWS_CONFIG_FILE=os.devnull,
            AWS_SHARED_CREDENTIALS_FILE=os.devnull,
            AWS_EC2_METADATA_DISABLED="true",
            AWS_DISABLE_HOST_PREFIX_INJECTION="true",
            AWS_MAX_ATTEMPTS="1",
        )
        if ca_file is not None:
            self.env["AWS_CA_BUNDLE"] = str(ca_file)
        self.tmp = tmp

    def run(self, *argv: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(AWS), "--endpoint-url", self.url, "--output", "json", "omics", *argv],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert (done.returncode == 0) == ok, (argv, done.returncode, done.stderr)
        return done

    def json(self, *argv: str) -> Any:
        return json.loads(self.run(*argv).stdout)


def fastq(n: int, seed: str) -> bytes:
    rand = random.Random(seed)
    return "".join(f"@{seed}{i}\n{''.join(rand.choices('ACGT', k=80))}\n+\n{'F' * 80}\n" for i in range(n)).encode()


def test_aws_cli_paired_upload(tmp_path: Path) -> None:
    reads = {"SOURCE1": fastq(2500, "a"), "SOURCE2": fastq(2500, "b")}
    compressed = {source: gzip.compress(text) for source, text in reads.items()}
    with serve(tmp_path, "--tls") as served:
        cli = Cli(served.url, served.ca_file, tmp_path)
        store = ("--sequence-store-id", STORE_ID)
        created = cli.json(
            "create-multipart-read-set-upload", *store, "--source-file-type", "FASTQ",
            "--subject-id", "subject", "--sample-id", "sample", "--name", "cli-reads",
            "--client-token", "cli-token-1", "--generated-from", "aws-cli",
        )  # fmt: skip
        upload = created["uploadId"]
        upload_args = (*store, "--upload-id", upload)
        sent = {
            source: [data[i : i + 25_000] for i in range(0, len(data), 25_000)] for source, data in compressed.items()
        }
        assert [len(pieces) for pieces in sent.values()] == [3, 3]

        def upload_part(source: str, number: int) -> dict[str, Any]:
            path = tmp_path / f"{source}.{number}"
            path.write_bytes(sent[source][number - 1])
            reply = cli.json(
                "upload-read-set-part", *upload_args, "--part-source", source,
                "--part-number", str(number), "--payload", str(path),
            )  # fmt: skip
            return {"partSource": source, "partNumber": number, "checksum": reply["checksum"]}

        keys = [(source, number) for source, pieces in sent.items() for number in range(1, len(pieces) + 1)]
        with ThreadPoolExecutor(3) as pool:  # CLI processes start slowly: a few at a time
            parts = list(pool.map(lambda key: upload_part(*key), keys))
        # Listings with pagination: pages of 2 fetched by the CLI, then a manual page with --max-items.
        listed = cli.json("list-read-set-upload-parts", *upload_args, "--part-source", "SOURCE1", "--page-size", "2")
        assert [p["partNumber"] for p in listed["parts"]] == list(range(1, len(sent["SOURCE1"]) + 1))
        assert [p["partSize"] for p in listed["parts"]] == [len(p) for p in sent["SOURCE1"]]
        first = cli.json("list-read-set-upload-parts", *upload_args, "--part-source", "SOURCE2", "--max-items", "2")
        assert [p["partNumber"] for p in first["parts"]] == [1, 2] and first["NextToken"]
        rest = cli.json(
            "list-read-set-upload-parts",
            *upload_args,
            "--part-source",
            "SOURCE2",
            "--starting-token",
            first["NextToken"],
        )
        assert [p["partNumber"] for p in rest["parts"]] == [3]
        # The same clientToken with the same parameters: the same upload.
        again = cli.json(
            "create-multipart-read-set-upload", *store, "--source-file-type", "FASTQ",
            "--subject-id", "subject", "--sample-id", "sample", "--name", "cli-reads",
            "--client-token", "cli-token-1", "--generated-from", "aws-cli",
        )  # fmt: skip
        assert again["uploadId"] == upload
        other = cli.json(
            "create-multipart-read-set-upload", *store, "--source-file-type", "FASTQ",
            "--subject-id", "s", "--sample-id", "s", "--name", "to-abort",
        )  # fmt: skip
        uploads = cli.json("list-multipart-read-set-uploads", *store, "--page-size", "1")
        assert {u["uploadId"] for u in uploads["uploads"]} == {upload, other["uploadId"]}

        done = cli.json("complete-multipart-read-set-upload", *upload_args, "--parts", json.dumps(parts))
        read_set = done["readSetId"]
        for _ in range(200):
            meta = cli.json("get-read-set-metadata", *store, "--id", read_set)
            if meta["status"] != "PROCESSING_UPLOAD":
                break
        assert meta["status"] == "ACTIVE", meta
        assert meta["etag"] == {
            "algorithm": "FASTQ_MD5up",
            "source1": hashlib.md5(reads["SOURCE1"]).hexdigest(),
            "source2": hashlib.md5(reads["SOURCE2"]).hexdigest(),
        }
        assert meta["sequenceInformation"] == {
            "totalReadCount": 5000,
            "totalBaseCount": 400_000,
            "generatedFrom": "aws-cli",
        }

        def download(source: str, number: int) -> bytes:
            out = tmp_path / f"got-{source}-{number}"
            cli.run("get-read-set", *store, "--id", read_set, "--file", source, "--part-number", str(number), str(out))
            return out.read_bytes()

        for source, pieces in sent.items():
            info = meta["files"][source.lower()]
            assert (info["totalParts"], info["contentLength"]) == (len(pieces), len(compressed[source]))
        with ThreadPoolExecutor(3) as pool:
            got = dict(zip(keys, pool.map(lambda key: download(*key), keys), strict=True))
        for source, pieces in sent.items():
            assert [got[(source, n)] for n in range(1, len(pieces) + 1)] == pieces
            assert b"".join(pieces) == compressed[source]
        past = cli.run(
            "get-read-set", *store, "--id", read_set, "--file", "SOURCE1",
            "--part-number", str(len(sent["SOURCE1"]) + 1), str(tmp_path / "past"), ok=False,
        )  # fmt: skip
        assert "RangeNotSatisfiableException" in past.stderr

        cli.run("abort-multipart-read-set-upload", *store, "--upload-id", other["uploadId"])
        assert cli.json("list-multipart-read-set-uploads", *store)["uploads"] == []
        gone = cli.run("abort-multipart-read-set-upload", *store, "--upload-id", other["uploadId"], ok=False)
        assert "ResourceNotFoundException" in gone.stderr
    records = [json.loads(line) for line in served.log.read_text().splitlines()]
    assert {r["status"] for r in records} <= {200, 404, 416}
    assert {r["operation"] for r in records} >= {
        "CreateMultipartReadSetUpload",
        "UploadReadSetPart",
        "ListReadSetUploadParts",
        "ListMultipartReadSetUploads",
        "CompleteMultipartReadSetUpload",
        "GetReadSetMetadata",
        "GetReadSet",
        "AbortMultipartReadSetUpload",
    }

// A paired upload with the AWS SDK for JavaScript v3 (@aws-sdk/client-omics: its own serializer and SigV4),
// driven by tests/test_store_js_sdk.py: node store_js_client.cjs URL WORKDIR. Reads WORKDIR/SOURCE1.N and
// WORKDIR/SOURCE2.N, prints one JSON object of what the store answered.
"use strict";
const fs = require("node:fs");
const path = require("node:path");
const crypto = require("node:crypto");
const omics = require("@aws-sdk/client-omics");

const STORE = "1234567890";

async function main() {
  const [url, workdir] = process.argv.slice(2);
  const client = new omics.OmicsClient({
    region: "us-east-1",
    endpoint: url,
    credentials: { accessKeyId: "test", secretAccessKey: "test" },
    disableHostPrefix: true,
    maxAttempts: 1,
  });
  const created = await client.send(
    new omics.CreateMultipartReadSetUploadCommand({
      sequenceStoreId: STORE,
      sourceFileType: "FASTQ",
      subjectId: "subject",
      sampleId: "sample",
      name: "js-reads",
      clientToken: "js-token",
      tags: { client: "js" },
    }),
  );
  const uploadId = created.uploadId;
  const sources = { SOURCE1: [], SOURCE2: [] };
  for (const name of fs.readdirSync(workdir).sort()) {
    const [source, number] = name.split(".");
    if (source in sources) sources[source].push(Number(number));
  }
  const parts = [];
  for (const [source, numbers] of Object.entries(sources)) {
    for (const number of numbers.sort((a, b) => a - b)) {
      const payload = fs.readFileSync(path.join(workdir, `${source}.${number}`));
      const reply = await client.send(
        new omics.UploadReadSetPartCommand({
          sequenceStoreId: STORE,
          uploadId,
          partSource: source,
          partNumber: number,
          payload,
        }),
      );
      parts.push({ partSource: source, partNumber: number, checksum: reply.checksum });
    }
  }
  const pages = [];
  for await (const page of omics.paginateListReadSetUploadParts(
    { client, pageSize: 2 },
    { sequenceStoreId: STORE, uploadId, partSource: "SOURCE1" },
  )) {
    pages.push(page.parts.map((p) => [p.partNumber, p.partSize]));
  }
  const uploads = await client.send(new omics.ListMultipartReadSetUploadsCommand({ sequenceStoreId: STORE }));
  const done = await client.send(
    new omics.CompleteMultipartReadSetUploadCommand({ sequenceStoreId: STORE, uploadId, parts }),
  );
  let meta;
  for (let i = 0; i < 200; i++) {
    meta = await client.send(new omics.GetReadSetMetadataCommand({ sequenceStoreId: STORE, id: done.readSetId }));
    if (meta.status !== "PROCESSING_UPLOAD") break;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  const served = {};
  for (const [source, key] of [["SOURCE1", "source1"], ["SOURCE2", "source2"]]) {
    const chunks = [];
    for (let number = 1; number <= meta.files[key].totalParts; number++) {
      const got = await client.send(
        new omics.GetReadSetCommand({ sequenceStoreId: STORE, id: done.readSetId, file: source, partNumber: number }),
      );
      chunks.push(Buffer.from(await got.payload.transformToByteArray()));
    }
    served[source] = crypto.createHash("sha256").update(Buffer.concat(chunks)).digest("hex");
  }
  let pastLast = null;
  try {
    await client.send(
      new omics.GetReadSetCommand({ sequenceStoreId: STORE, id: done.readSetId, file: "SOURCE1", partNumber: 9999 }),
    );
  } catch (err) {
    pastLast = [err.name, err.$metadata.httpStatusCode];
  }
  const output = {
    uploadId,
    pages,
    inProgress: uploads.uploads.map((u) => u.uploadId),
    readSetId: done.readSetId,
    status: meta.status,
    files: meta.files,
    etag: meta.etag,
    sequenceInformation: meta.sequenceInformation,
    served,
    pastLast,
  };
  process.stdout.write(JSON.stringify(output) + "\n");
}

main().catch((err) => {
  process.stderr.write(`${err.name}: ${err.message}\n`);
  process.exit(1);
});

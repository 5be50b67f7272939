// The AWS SDK for JavaScript v3 against keyhold's S3 gateway and KMS: every step checks its
// result and throws on a difference; prints "ok" at the end. Endpoints and credentials come
// from the environment (KMS_ENDPOINT, S3_ENDPOINT).
import { createHash, randomBytes } from "node:crypto";
import {
  S3Client, CreateBucketCommand, PutObjectCommand, GetObjectCommand, HeadObjectCommand,
  ListObjectsV2Command, CopyObjectCommand, DeleteObjectsCommand, GetObjectTaggingCommand,
  PutBucketEncryptionCommand, DeleteBucketCommand, DeleteObjectCommand,
} from "@aws-sdk/client-s3";
import { KMSClient, CreateKeyCommand } from "@aws-sdk/client-kms";
import { Upload } from "@aws-sdk/lib-storage";
import { getSignedUrl } from "@aws-sdk/s3-request-presigner";

const credentials = { accessKeyId: "test", secretAccessKey: "test" };
const region = "us-east-1";
const s3 = new S3Client({ region, endpoint: process.env.S3_ENDPOINT, credentials, forcePathStyle: true });
const kms = new KMSClient({ region, endpoint: process.env.KMS_ENDPOINT, credentials });

function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
}

const Bucket = "js-sdk-bucket";
await s3.send(new CreateBucketCommand({ Bucket }));

// SSE-S3 by default, the MD5 ETag, a flexible checksum (CRC32 by default in SDK v3).
const body = randomBytes(200_000);
const put = await s3.send(new PutObjectCommand({ Bucket, Key: "a.bin", Body: body, Metadata: { team: "js" } }));
check(put.ServerSideEncryption === "AES256", "SSE-S3 by default");
check(put.ETag === `"${createHash("md5").update(body).digest("hex")}"`, "MD5 ETag");
const got = await s3.send(new GetObjectCommand({ Bucket, Key: "a.bin" }));
const bytes = Buffer.from(await got.Body.transformToByteArray());
check(bytes.equals(body), "round trip");
check(got.Metadata.team === "js", "user metadata");
const part = await s3.send(new GetObjectCommand({ Bucket, Key: "a.bin", Range: "bytes=65530-65545" }));
check(Buffer.from(await part.Body.transformToByteArray()).equals(body.subarray(65530, 65546)), "range");

// SSE-KMS under a customer key.
const key = (await kms.send(new CreateKeyCommand({ Description: "js" }))).KeyMetadata;
const kput = await s3.send(new PutObjectCommand({
  Bucket, Key: "k.txt", Body: "kms protected", ServerSideEncryption: "aws:kms", SSEKMSKeyId: key.KeyId,
}));
check(kput.SSEKMSKeyId === key.Arn, "SSE-KMS key");
const head = await s3.send(new HeadObjectCommand({ Bucket, Key: "k.txt" }));
check(head.ServerSideEncryption === "aws:kms" && head.ContentLength === 13, "head");

// A multipart upload through lib-storage (parts of 5 MiB, concurrently).
const big = randomBytes(12 * 1024 * 1024 + 17);
await new Upload({ client: s3, params: { Bucket, Key: "big.bin", Body: big }, partSize: 5 * 1024 * 1024, queueSize: 2 }).done();
const bigGot = Buffer.from(await (await s3.send(new GetObjectCommand({ Bucket, Key: "big.bin" }))).Body.transformToByteArray());
check(bigGot.equals(big), "multipart round trip");

// Copy into another mode, tagging, listing, presigned GET.
const cp = await s3.send(new CopyObjectCommand({
  Bucket, Key: "copy.bin", CopySource: `${Bucket}/a.bin`, ServerSideEncryption: "aws:kms",
  TaggingDirective: "REPLACE", Tagging: "stage=test",
}));
check(cp.ServerSideEncryption === "aws:kms", "copy re-encrypts");
const tags = await s3.send(new GetObjectTaggingCommand({ Bucket, Key: "copy.bin" }));
check(tags.TagSet.length === 1 && tags.TagSet[0].Value === "test", "tags");
const list = await s3.send(new ListObjectsV2Command({ Bucket, MaxKeys: 2 }));
check(list.IsTruncated && list.Contents.length === 2, "paged listing");
const rest = await s3.send(new ListObjectsV2Command({ Bucket, ContinuationToken: list.NextContinuationToken }));
check(rest.Contents.map((o) => o.Key).join(",") === "copy.bin,k.txt", "second page");
const url = await getSignedUrl(s3, new GetObjectCommand({ Bucket, Key: "k.txt" }), { expiresIn: 300 });
const fetched = await fetch(url);
check(fetched.status === 200 && (await fetched.text()) === "kms protected", "presigned GET");

// Errors have S3's codes.
try {
  await s3.send(new GetObjectCommand({ Bucket, Key: "missing" }));
  check(false, "missing key");
} catch (e) {
  check(e.name === "NoSuchKey", `NoSuchKey, got ${e.name}`);
}
try {
  await s3.send(new PutBucketEncryptionCommand({ Bucket, ServerSideEncryptionConfiguration: { Rules: [
    { ApplyServerSideEncryptionByDefault: { SSEAlgorithm: "AES256", KMSMasterKeyID: key.KeyId } }] } }));
  check(false, "AES256 with a KMS key");
} catch (e) {
  check(e.name === "InvalidArgument", `InvalidArgument, got ${e.name}`);
}

const del = await s3.send(new DeleteObjectsCommand({ Bucket, Delete: { Objects: [
  { Key: "a.bin" }, { Key: "k.txt" }, { Key: "big.bin" }] } }));
check(del.Deleted.length === 3, "delete objects");
await s3.send(new DeleteObjectCommand({ Bucket, Key: "copy.bin" }));
await s3.send(new DeleteBucketCommand({ Bucket }));
console.log("ok");

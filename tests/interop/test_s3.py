"""The S3 gateway through boto3 and the AWS CLI: every encryption mode, ranges, multipart,
copy, presigned URLs, accounts, tampering, a disabled key, bad input and a crash."""

import base64
import hashlib
import io
import json
import os
import pathlib
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest
from botocore.exceptions import ClientError

from conftest import REGION, Server, audit_events, aws_cli, err, init_data_dir, run_keyhold

MIB = 1024 * 1024
CHUNK = 64 * 1024


def status(excinfo):
    return excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"]


@pytest.fixture
def s3(dev):
    c = dev.s3()
    c.create_bucket(Bucket="bucket-one")
    return c


def test_dev_serves_s3_and_prints_its_endpoint(dev):
    assert dev.s3_endpoint.startswith("http://127.0.0.1:")
    assert any(l.startswith("export AWS_ENDPOINT_URL_S3=") for l in dev.banner)


def test_sse_s3_is_the_default_and_the_etag_is_the_md5(s3):
    body = os.urandom(100_000)
    put = s3.put_object(Bucket="bucket-one", Key="a/b.bin", Body=body, ContentType="app/x",
                        Metadata={"owner": "ci"})
    assert put["ServerSideEncryption"] == "AES256"
    assert put["ETag"] == '"%s"' % hashlib.md5(body).hexdigest()
    got = s3.get_object(Bucket="bucket-one", Key="a/b.bin")
    assert got["Body"].read() == body
    assert got["ServerSideEncryption"] == "AES256"
    assert got["ContentType"] == "app/x" and got["Metadata"] == {"owner": "ci"}
    head = s3.head_object(Bucket="bucket-one", Key="a/b.bin")
    assert head["ContentLength"] == len(body) and head["ETag"] == put["ETag"]


def stored_files(data_dir):
    return [p for p in (pathlib.Path(data_dir) / "objects" / "data").rglob("*") if p.is_file()]


def test_no_plaintext_reaches_the_disk(dev, s3):
    marker = b"PLAINTEXT-MARKER-" * 1000
    for mode in ({}, {"ServerSideEncryption": "aws:kms"}):
        s3.put_object(Bucket="bucket-one", Key="m", Body=marker, **mode)
        for f in stored_files(dev.data_dir):
            assert b"PLAINTEXT-MARKER" not in f.read_bytes()
    for f in (pathlib.Path(dev.data_dir)).rglob("*"):
        if f.is_file() and f.stat().st_size < 50 * MIB:
            assert b"PLAINTEXT-MARKER" not in f.read_bytes(), f


def test_sse_kms_with_aws_s3_and_with_a_customer_key(dev, s3):
    kms = dev.client()
    put = s3.put_object(Bucket="bucket-one", Key="k1", Body=b"secret", ServerSideEncryption="aws:kms")
    managed = kms.describe_key(KeyId="alias/aws/s3")["KeyMetadata"]
    assert put["ServerSideEncryption"] == "aws:kms"
    assert put["SSEKMSKeyId"] == managed["Arn"]
    assert put["ETag"] != '"%s"' % hashlib.md5(b"secret").hexdigest()
    key = kms.create_key(Description="artifacts")["KeyMetadata"]
    ctx = base64.b64encode(json.dumps({"project": "kh"}).encode()).decode()
    put = s3.put_object(Bucket="bucket-one", Key="k2", Body=b"more", ServerSideEncryption="aws:kms",
                        SSEKMSKeyId=key["KeyId"], SSEKMSEncryptionContext=ctx)
    assert put["SSEKMSKeyId"] == key["Arn"]
    got = s3.get_object(Bucket="bucket-one", Key="k2")
    assert got["Body"].read() == b"more" and got["SSEKMSKeyId"] == key["Arn"]

    # Every KMS call the gateway made is audited as the caller, invoked by S3, with the
    # object's ARN in its context; and every S3 request is audited too.
    events = audit_events(dev.data_dir)
    gdk = [e for e in events if e["eventName"] == "GenerateDataKey"
           and key["Arn"] in json.dumps(e.get("resources"))]
    assert gdk and gdk[-1]["userIdentity"]["invokedBy"] == "s3.amazonaws.com"
    assert gdk[-1]["requestParameters"]["encryptionContext"] == {
        "aws:s3:arn": "arn:aws:s3:::bucket-one/k2", "project": "kh"}
    dec = [e for e in events if e["eventName"] == "Decrypt" and key["Arn"] in json.dumps(e.get("resources"))]
    assert dec and dec[-1]["userIdentity"]["invokedBy"] == "s3.amazonaws.com"
    puts = [e for e in events if e["eventSource"] == "s3.amazonaws.com" and e["eventName"] == "PutObject"]
    assert len(puts) >= 2
    assert puts[-1]["requestParameters"]["key"] == "k2"
    assert puts[-1]["userIdentity"]["arn"] == "arn:aws:iam::111122223333:user/dev"

    # The managed key is usable only through S3.
    with pytest.raises(ClientError) as e:
        kms.encrypt(KeyId="alias/aws/s3", Plaintext=b"x")
    assert err(e) == "AccessDeniedException"


def test_bucket_keys_make_few_kms_calls(dev, s3):
    kms = dev.client()
    key = kms.create_key()["KeyMetadata"]
    s3.put_bucket_encryption(Bucket="bucket-one", ServerSideEncryptionConfiguration={"Rules": [{
        "ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key["KeyId"]},
        "BucketKeyEnabled": True}]})
    enc = s3.get_bucket_encryption(Bucket="bucket-one")["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert enc["BucketKeyEnabled"] is True
    for i in range(20):
        put = s3.put_object(Bucket="bucket-one", Key=f"o{i}", Body=b"x%d" % i)
        assert put["BucketKeyEnabled"] is True and put["SSEKMSKeyId"] == key["Arn"]
    for i in range(20):
        assert s3.get_object(Bucket="bucket-one", Key=f"o{i}")["Body"].read() == b"x%d" % i
    events = [e for e in audit_events(dev.data_dir) if key["Arn"] in json.dumps(e.get("resources"))]
    gdk = [e for e in events if e["eventName"] == "GenerateDataKey"]
    dec = [e for e in events if e["eventName"] == "Decrypt"]
    assert len(gdk) == 1 and len(dec) == 1, (len(gdk), len(dec))
    assert gdk[0]["requestParameters"]["encryptionContext"] == {"aws:s3:arn": "arn:aws:s3:::bucket-one"}
    s3.delete_bucket_encryption(Bucket="bucket-one")
    assert s3.put_object(Bucket="bucket-one", Key="p", Body=b"")["ServerSideEncryption"] == "AES256"


def test_range_reads_straddle_chunk_boundaries(s3):
    body = os.urandom(3 * CHUNK + 1234)
    s3.put_object(Bucket="bucket-one", Key="r", Body=body)
    for rng, (a, b) in [
        ("bytes=0-0", (0, 1)),
        (f"bytes={CHUNK - 6}-{CHUNK + 9}", (CHUNK - 6, CHUNK + 10)),
        (f"bytes={CHUNK}-{2 * CHUNK - 1}", (CHUNK, 2 * CHUNK)),
        (f"bytes={CHUNK - 1}-{3 * CHUNK}", (CHUNK - 1, 3 * CHUNK + 1)),
        ("bytes=-100", (len(body) - 100, len(body))),
        (f"bytes={len(body) - 5}-", (len(body) - 5, len(body))),
        (f"bytes=10-{len(body) * 2}", (10, len(body))),
    ]:
        got = s3.get_object(Bucket="bucket-one", Key="r", Range=rng)
        assert got["Body"].read() == body[a:b], rng
        assert got["ContentRange"] == f"bytes {a}-{b - 1}/{len(body)}"
        assert got["ResponseMetadata"]["HTTPStatusCode"] == 206
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket="bucket-one", Key="r", Range=f"bytes={len(body)}-")
    assert err(e) == "InvalidRange" and status(e) == 416


def test_tampered_stored_bytes_are_never_returned(dev, s3):
    body = os.urandom(2 * CHUNK + 10)
    s3.put_object(Bucket="bucket-one", Key="t", Body=body)
    [f] = stored_files(dev.data_dir)
    original = f.read_bytes()
    for damaged in (
        original[:100] + bytes([original[100] ^ 1]) + original[101:],   # a flipped bit
        original[:CHUNK + 16],                                          # truncated
        original + b"\0" * 16,                                          # extended
        original[CHUNK + 16:2 * (CHUNK + 16)] + original[:CHUNK + 16] + original[2 * (CHUNK + 16):],  # swapped
    ):
        f.write_bytes(damaged)
        with pytest.raises(ClientError) as e:
            s3.get_object(Bucket="bucket-one", Key="t")["Body"].read()
        assert status(e) == 500
    # Damage past the first window ends the body early: the client never gets altered bytes.
    big = os.urandom(40 * CHUNK)
    s3.put_object(Bucket="bucket-one", Key="t2", Body=big)
    f2 = [p for p in stored_files(dev.data_dir) if p != f][0]
    raw = bytearray(f2.read_bytes())
    raw[-100] ^= 1
    f2.write_bytes(bytes(raw))
    got = b""
    with pytest.raises(Exception):
        got = s3.get_object(Bucket="bucket-one", Key="t2")["Body"].read()
    assert got == b""
    f.write_bytes(original)
    assert s3.get_object(Bucket="bucket-one", Key="t")["Body"].read() == body


def test_a_disabled_key_stops_reads_and_writes(dev, s3):
    kms = dev.client()
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    s3.put_object(Bucket="bucket-one", Key="d", Body=b"data", ServerSideEncryption="aws:kms", SSEKMSKeyId=key)
    kms.disable_key(KeyId=key)
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket="bucket-one", Key="d")
    assert err(e) == "KMS.DisabledException" and status(e) == 400
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket="bucket-one", Key="d2", Body=b"x", ServerSideEncryption="aws:kms", SSEKMSKeyId=key)
    assert err(e) == "KMS.DisabledException"
    with pytest.raises(ClientError):
        s3.head_object(Bucket="bucket-one", Key="d2")
    kms.enable_key(KeyId=key)
    assert s3.get_object(Bucket="bucket-one", Key="d")["Body"].read() == b"data"
    kms.schedule_key_deletion(KeyId=key, PendingWindowInDays=7)
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket="bucket-one", Key="d")
    assert err(e) == "KMS.KMSInvalidStateException"


@pytest.fixture
def two_accounts(data_dir):
    admin = init_data_dir(data_dir)
    partner = json.loads(run_keyhold(
        "admin", "principal", "create", "--data-dir", str(data_dir),
        "--account", "444455556666", "--name", "partner", "--json").stdout)
    s = Server(["--data-dir", str(data_dir), "--s3-listen", "127.0.0.1:0"])
    s.data_dir = data_dir
    try:
        yield s, admin, partner
    finally:
        s.stop()


def test_another_account_is_refused_and_sse_c_works_over_tls(two_accounts):
    s, admin, partner = two_accounts
    assert s.s3_endpoint.startswith("https://")
    mine = s.s3(admin["access_key_id"], admin["secret_access_key"])
    theirs = s.s3(partner["access_key_id"], partner["secret_access_key"])
    mine.create_bucket(Bucket="private-bucket")
    mine.put_object(Bucket="private-bucket", Key="x", Body=b"mine")
    for call in (
        lambda: theirs.get_object(Bucket="private-bucket", Key="x"),
        lambda: theirs.put_object(Bucket="private-bucket", Key="y", Body=b"z"),
        lambda: theirs.list_objects_v2(Bucket="private-bucket"),
        lambda: theirs.delete_object(Bucket="private-bucket", Key="x"),
        lambda: theirs.delete_bucket(Bucket="private-bucket"),
    ):
        with pytest.raises(ClientError) as e:
            call()
        assert err(e) == "AccessDenied", call
    with pytest.raises(ClientError) as e:
        theirs.create_bucket(Bucket="private-bucket")
    assert err(e) == "BucketAlreadyExists"
    with pytest.raises(ClientError) as e:
        mine.create_bucket(Bucket="private-bucket")
    assert err(e) == "BucketAlreadyOwnedByYou"
    assert theirs.list_buckets()["Buckets"] == []
    # ExpectedBucketOwner: the right account passes, another is refused.
    assert mine.head_object(Bucket="private-bucket", Key="x", ExpectedBucketOwner="111122223333")
    with pytest.raises(ClientError) as e:
        mine.get_object(Bucket="private-bucket", Key="x", ExpectedBucketOwner="444455556666")
    assert err(e) == "AccessDenied"

    # SSE-C: the key is needed (and checked) on every read; it is never stored.
    key = os.urandom(32)
    other = os.urandom(32)
    sse_c = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": key}
    put = mine.put_object(Bucket="private-bucket", Key="c", Body=b"customer data", **sse_c)
    assert put["SSECustomerAlgorithm"] == "AES256"
    assert "ServerSideEncryption" not in put
    got = mine.get_object(Bucket="private-bucket", Key="c", **sse_c)
    assert got["Body"].read() == b"customer data"
    assert mine.head_object(Bucket="private-bucket", Key="c", **sse_c)["ContentLength"] == 13
    with pytest.raises(ClientError) as e:
        mine.get_object(Bucket="private-bucket", Key="c")
    assert err(e) == "InvalidRequest" and status(e) == 400
    with pytest.raises(ClientError) as e:
        mine.get_object(Bucket="private-bucket", Key="c", SSECustomerAlgorithm="AES256", SSECustomerKey=other)
    assert status(e) == 403
    with pytest.raises(ClientError) as e:
        mine.head_object(Bucket="private-bucket", Key="c")
    assert status(e) == 400
    with pytest.raises(ClientError) as e:
        mine.get_object(Bucket="private-bucket", Key="x", **sse_c)
    assert err(e) == "InvalidRequest"
    for f in pathlib.Path(s.data_dir).rglob("*"):
        if f.is_file():
            assert key not in f.read_bytes(), f
    # Bad SSE-C headers: a key of the wrong length, an MD5 that does not match, SSE-C with an
    # aws:kms header. Nothing is written.
    md5 = lambda k: base64.b64encode(hashlib.md5(k).digest()).decode()
    for extra in (
        {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": os.urandom(16)},
        {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": base64.b64encode(key).decode(),
         "SSECustomerKeyMD5": md5(other)},
        {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": key, "ServerSideEncryption": "aws:kms"},
    ):
        with pytest.raises(ClientError) as e:
            mine.put_object(Bucket="private-bucket", Key="bad-c", Body=b"x", **extra)
        assert (err(e), status(e)) == ("InvalidArgument", 400), extra
    with pytest.raises(ClientError) as e:
        mine.head_object(Bucket="private-bucket", Key="bad-c", **sse_c)
    assert status(e) == 404
    # Copy out of SSE-C into SSE-KMS, then back into SSE-C under another key.
    cp = mine.copy_object(Bucket="private-bucket", Key="c2", CopySource="private-bucket/c",
                          CopySourceSSECustomerAlgorithm="AES256", CopySourceSSECustomerKey=key,
                          ServerSideEncryption="aws:kms")
    assert cp["ServerSideEncryption"] == "aws:kms"
    assert mine.get_object(Bucket="private-bucket", Key="c2")["Body"].read() == b"customer data"
    mine.copy_object(Bucket="private-bucket", Key="c3", CopySource="private-bucket/c2",
                     SSECustomerAlgorithm="AES256", SSECustomerKey=other)
    assert mine.get_object(Bucket="private-bucket", Key="c3", SSECustomerAlgorithm="AES256",
                           SSECustomerKey=other)["Body"].read() == b"customer data"


def test_sse_c_over_plain_http_is_refused(s3):
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket="bucket-one", Key="c", Body=b"x",
                      SSECustomerAlgorithm="AES256", SSECustomerKey=os.urandom(32))
    assert err(e) == "InvalidRequest" and status(e) == 400
    with pytest.raises(ClientError):
        s3.head_object(Bucket="bucket-one", Key="c")


def test_multipart_copy_and_reencryption(dev, s3):
    body = os.urandom(13 * MIB + 5)
    s3.upload_fileobj(io.BytesIO(body), "bucket-one", "big", ExtraArgs={"ServerSideEncryption": "aws:kms"})
    head = s3.head_object(Bucket="bucket-one", Key="big")
    assert head["ContentLength"] == len(body) and head["ETag"].endswith('-2"')
    assert head["ServerSideEncryption"] == "aws:kms"
    out = io.BytesIO()
    s3.download_fileobj("bucket-one", "big", out)
    assert out.getvalue() == body
    # A range across the part boundary.
    boundary = 8 * MIB
    got = s3.get_object(Bucket="bucket-one", Key="big", Range=f"bytes={boundary - 10}-{boundary + 9}")
    assert got["Body"].read() == body[boundary - 10:boundary + 10]
    # Copy re-encrypts into another mode.
    cp = s3.copy_object(Bucket="bucket-one", Key="big-s3", CopySource={"Bucket": "bucket-one", "Key": "big"},
                        ServerSideEncryption="AES256")
    assert cp["ServerSideEncryption"] == "AES256"
    assert cp["CopyObjectResult"]["ETag"] == '"%s"' % hashlib.md5(body).hexdigest()
    assert s3.get_object(Bucket="bucket-one", Key="big-s3", Range="bytes=0-99")["Body"].read() == body[:100]
    # Copying onto itself without a change is refused; with a new mode it re-encrypts.
    with pytest.raises(ClientError) as e:
        s3.copy_object(Bucket="bucket-one", Key="big-s3", CopySource="bucket-one/big-s3")
    assert err(e) == "InvalidRequest"
    # UploadPartCopy, ListParts, ListMultipartUploads, Abort.
    up = s3.create_multipart_upload(Bucket="bucket-one", Key="assembled")["UploadId"]
    p1 = s3.upload_part_copy(Bucket="bucket-one", Key="assembled", UploadId=up, PartNumber=1,
                             CopySource="bucket-one/big", CopySourceRange=f"bytes=0-{5 * MIB - 1}")
    p2 = s3.upload_part(Bucket="bucket-one", Key="assembled", UploadId=up, PartNumber=2, Body=b"tail")
    parts = s3.list_parts(Bucket="bucket-one", Key="assembled", UploadId=up)["Parts"]
    assert [p["PartNumber"] for p in parts] == [1, 2] and parts[0]["Size"] == 5 * MIB
    uploads = s3.list_multipart_uploads(Bucket="bucket-one")["Uploads"]
    assert [u["UploadId"] for u in uploads] == [up]
    s3.complete_multipart_upload(Bucket="bucket-one", Key="assembled", UploadId=up, MultipartUpload={"Parts": [
        {"PartNumber": 1, "ETag": p1["CopyPartResult"]["ETag"]}, {"PartNumber": 2, "ETag": p2["ETag"]}]})
    assert s3.get_object(Bucket="bucket-one", Key="assembled")["Body"].read() == body[:5 * MIB] + b"tail"
    up = s3.create_multipart_upload(Bucket="bucket-one", Key="dropped")["UploadId"]
    s3.upload_part(Bucket="bucket-one", Key="dropped", UploadId=up, PartNumber=1, Body=b"x")
    s3.abort_multipart_upload(Bucket="bucket-one", Key="dropped", UploadId=up)
    with pytest.raises(ClientError) as e:
        s3.list_parts(Bucket="bucket-one", Key="dropped", UploadId=up)
    assert err(e) == "NoSuchUpload"
    assert "Uploads" not in s3.list_multipart_uploads(Bucket="bucket-one")


def test_listing_tagging_delete_and_conditions(s3):
    keys = ["a/1", "a/2", "a/b/3", "b", "c d+e", "é"]
    for k in keys:
        s3.put_object(Bucket="bucket-one", Key=k, Body=k.encode())
    page = s3.list_objects_v2(Bucket="bucket-one", Delimiter="/")
    assert [p["Prefix"] for p in page["CommonPrefixes"]] == ["a/"]
    assert [o["Key"] for o in page["Contents"]] == ["b", "c d+e", "é"]
    page = s3.list_objects_v2(Bucket="bucket-one", Prefix="a/", Delimiter="/")
    assert [o["Key"] for o in page["Contents"]] == ["a/1", "a/2"]
    assert [p["Prefix"] for p in page["CommonPrefixes"]] == ["a/b/"]
    seen, token = [], None
    while True:
        kw = {"ContinuationToken": token} if token else {}
        page = s3.list_objects_v2(Bucket="bucket-one", MaxKeys=2, **kw)
        seen += [o["Key"] for o in page.get("Contents", [])]
        if not page["IsTruncated"]:
            break
        token = page["NextContinuationToken"]
    assert seen == sorted(keys, key=lambda k: k.encode())
    assert [o["Key"] for o in s3.list_objects(Bucket="bucket-one", Marker="b")["Contents"]] == ["c d+e", "é"]
    assert s3.list_objects_v2(Bucket="bucket-one", StartAfter="b")["KeyCount"] == 2

    s3.put_object_tagging(Bucket="bucket-one", Key="b", Tagging={"TagSet": [{"Key": "env", "Value": "ci"}]})
    assert s3.get_object_tagging(Bucket="bucket-one", Key="b")["TagSet"] == [{"Key": "env", "Value": "ci"}]
    s3.put_object(Bucket="bucket-one", Key="tagged", Body=b"", Tagging="team=kh&stage=1")
    assert len(s3.get_object_tagging(Bucket="bucket-one", Key="tagged")["TagSet"]) == 2
    s3.delete_object_tagging(Bucket="bucket-one", Key="b")
    assert s3.get_object_tagging(Bucket="bucket-one", Key="b")["TagSet"] == []

    etag = s3.head_object(Bucket="bucket-one", Key="b")["ETag"]
    assert s3.get_object(Bucket="bucket-one", Key="b", IfMatch=etag)["Body"].read() == b"b"
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket="bucket-one", Key="b", IfMatch='"0000"')
    assert status(e) == 412
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket="bucket-one", Key="b", IfNoneMatch=etag)
    assert status(e) == 304
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket="bucket-one", Key="b", IfModifiedSince=time.time() + 3600)
    assert status(e) == 304

    r = s3.delete_objects(Bucket="bucket-one", Delete={"Objects": [{"Key": k} for k in keys + ["missing"]]})
    assert len(r["Deleted"]) == len(keys) + 1
    with pytest.raises(ClientError) as e:
        s3.delete_bucket(Bucket="bucket-one")
    assert err(e) == "BucketNotEmpty"
    s3.delete_object(Bucket="bucket-one", Key="tagged")
    s3.delete_bucket(Bucket="bucket-one")
    with pytest.raises(ClientError) as e:
        s3.head_bucket(Bucket="bucket-one")
    assert status(e) == 404


@pytest.mark.parametrize("version", [None, "s3v4"])
def test_presigned_get_and_put(dev, s3, version):
    # boto3's default presigned URLs use Signature Version 2; s3v4 ones Version 4.
    c = dev.s3(signature_version=version) if version else s3
    url = c.generate_presigned_url("put_object", Params={"Bucket": "bucket-one", "Key": "pre"}, ExpiresIn=300)
    assert ("X-Amz-Signature=" in url) == (version == "s3v4")
    # No Content-Type: a SigV2 signature covers it, and none was presigned.
    req = urllib.request.Request(url, data=b"presigned body", method="PUT", headers={"Content-Type": ""})
    assert urllib.request.urlopen(req).status == 200
    url = c.generate_presigned_url("get_object", Params={"Bucket": "bucket-one", "Key": "pre"}, ExpiresIn=300)
    assert urllib.request.urlopen(url).read() == b"presigned body"
    sig = url.split("Signature=")[1].split("&")[0]
    bad = url.replace(sig, sig[:-2] + ("00" if not sig.endswith("00") else "11"))
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(bad)
    assert e.value.code == 403 and b"SignatureDoesNotMatch" in e.value.read()
    expired = c.generate_presigned_url("get_object", Params={"Bucket": "bucket-one", "Key": "pre"}, ExpiresIn=1)
    time.sleep(2.5)
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(expired)
    assert e.value.code == 403


def test_bad_input_gets_s3_errors(dev, s3):
    kms = dev.client()
    cases = [
        (lambda: s3.get_object(Bucket="no-such-bucket", Key="x"), "NoSuchBucket", 404),
        (lambda: s3.get_object(Bucket="bucket-one", Key="missing"), "NoSuchKey", 404),
        (lambda: s3.put_object(Bucket="bucket-one", Key="x", Body=b"x", ServerSideEncryption="AES256",
                               SSEKMSKeyId="alias/aws/s3"), "InvalidArgument", 400),
        (lambda: s3.put_object(Bucket="bucket-one", Key="x", Body=b"x", ServerSideEncryption="aws:kms",
                               SSEKMSKeyId="alias/does-not-exist"), "KMS.NotFoundException", 400),
        (lambda: s3.put_object(Bucket="bucket-one", Key="x", Body=b"x", Metadata={"big": "v" * 3000}),
         "MetadataTooLarge", 400),
        (lambda: s3.put_object(Bucket="bucket-one", Key="k" * 1025, Body=b"x"), "KeyTooLongError", 400),
        (lambda: s3.put_object(Bucket="bucket-one", Key="x", Body=b"abc",
                               ContentMD5=base64.b64encode(hashlib.md5(b"abd").digest()).decode()),
         "BadDigest", 400),
        (lambda: s3.put_object(Bucket="bucket-one", Key="x", Body=b"abc", ChecksumSHA256=base64.b64encode(
            hashlib.sha256(b"abd").digest()).decode()), "BadDigest", 400),
    ]
    rsa = kms.create_key(KeySpec="RSA_2048", KeyUsage="ENCRYPT_DECRYPT")["KeyMetadata"]["KeyId"]
    cases.append((lambda: s3.put_object(Bucket="bucket-one", Key="x", Body=b"x", ServerSideEncryption="aws:kms",
                                        SSEKMSKeyId=rsa), "KMS.InvalidKeyUsageException", 400))
    for call, want, st in cases:
        with pytest.raises(ClientError) as e:
            call()
        assert (err(e), status(e)) == (want, st), want
    # None of them wrote anything.
    assert "Contents" not in s3.list_objects_v2(Bucket="bucket-one")

    # Multipart: parts out of order, too small, unknown.
    up = s3.create_multipart_upload(Bucket="bucket-one", Key="mp")["UploadId"]
    e1 = s3.upload_part(Bucket="bucket-one", Key="mp", UploadId=up, PartNumber=1, Body=b"small")["ETag"]
    e2 = s3.upload_part(Bucket="bucket-one", Key="mp", UploadId=up, PartNumber=2, Body=b"tail")["ETag"]
    for parts, want in [
        ([{"PartNumber": 2, "ETag": e2}, {"PartNumber": 1, "ETag": e1}], "InvalidPartOrder"),
        ([{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}], "EntityTooSmall"),
        ([{"PartNumber": 1, "ETag": e1}, {"PartNumber": 3, "ETag": e2}], "InvalidPart"),
        ([{"PartNumber": 1, "ETag": e2}], "InvalidPart"),
    ]:
        with pytest.raises(ClientError) as e:
            s3.complete_multipart_upload(Bucket="bucket-one", Key="mp", UploadId=up,
                                         MultipartUpload={"Parts": parts})
        assert err(e) == want
    with pytest.raises(ClientError) as e:
        s3.upload_part(Bucket="bucket-one", Key="mp", UploadId=up, PartNumber=10001, Body=b"x")
    assert err(e) == "InvalidArgument"
    with pytest.raises(ClientError) as e:
        s3.upload_part(Bucket="bucket-one", Key="mp", UploadId="nope", PartNumber=1, Body=b"x")
    assert err(e) == "NoSuchUpload"
    # A single (last) part may be small.
    s3.complete_multipart_upload(Bucket="bucket-one", Key="mp", UploadId=up,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}]})
    assert s3.get_object(Bucket="bucket-one", Key="mp")["Body"].read() == b"small"


def raw_request(endpoint, method, path, body=b"", headers=None, content_length=None):
    """A SigV4-signed request sent by hand (for bodies boto3 will not send)."""
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    url = endpoint + path
    req = AWSRequest(method=method, url=url, data=body, headers=headers or {})
    req.headers["x-amz-content-sha256"] = "UNSIGNED-PAYLOAD"
    S3SigV4Auth(Credentials("test", "test"), "s3", REGION).add_auth(req)
    host, port = endpoint.split("//")[1].split(":")
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}"]
    for k, v in req.headers.items():
        if k.lower() != "host":
            lines.append(f"{k}: {v}")
    lines.append(f"Content-Length: {content_length if content_length is not None else len(body)}")
    lines.append("Connection: close")
    with socket.create_connection((host, int(port)), timeout=15) as s:
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        if content_length is not None and content_length > len(body):
            s.shutdown(socket.SHUT_WR)
        out = b""
        while True:
            try:
                d = s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not d:
                break
            out += d
    return out


def test_malformed_xml_and_short_bodies(dev, s3):
    up = s3.create_multipart_upload(Bucket="bucket-one", Key="mx")["UploadId"]
    out = raw_request(dev.s3_endpoint, "POST", f"/bucket-one/mx?uploadId={up}", b"<CompleteMultipartUpload><Part>")
    assert b" 400 " in out.split(b"\r\n")[0] and b"MalformedXML" in out
    out = raw_request(dev.s3_endpoint, "POST", "/bucket-one?delete", b"<Delete><Object><Key>a</Key>")
    assert b" 400 " in out.split(b"\r\n")[0] and b"MalformedXML" in out
    # A body shorter than its Content-Length is not stored.
    raw_request(dev.s3_endpoint, "PUT", "/bucket-one/short", b"only part", content_length=1000)
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket="bucket-one", Key="short")
    assert status(e) == 404
    # An error answered (perhaps) before the body was read closes the connection, so an unread
    # body is never taken for the next request (boto3 sends Expect: 100-continue and may then
    # skip the body).
    out = raw_request(dev.s3_endpoint, "PUT", "/bucket-one/bad-sse", b"abc",
                      headers={"Expect": "100-continue", "x-amz-server-side-encryption": "bogus"})
    head = out.split(b"\r\n\r\n")[0].lower()
    assert b" 400 " in head.split(b"\r\n")[0] and b"connection: close" in head
    # The server is unaffected.
    s3.put_object(Bucket="bucket-one", Key="after", Body=b"ok")
    assert s3.get_object(Bucket="bucket-one", Key="after")["Body"].read() == b"ok"


def test_bad_signatures_and_anonymous_requests_are_refused(dev, s3):
    with pytest.raises(ClientError) as e:
        dev.s3(secret="wrong").list_buckets()
    assert err(e) == "SignatureDoesNotMatch" and status(e) == 403
    with pytest.raises(ClientError) as e:
        dev.s3(access_key="AKIANOSUCHKEY").list_buckets()
    assert err(e) == "InvalidAccessKeyId"
    req = urllib.request.Request(dev.s3_endpoint + "/bucket-one?AWSAccessKeyId=test&Signature=x&Expires=9999999999")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req)
    assert e.value.code == 403 and b"SignatureDoesNotMatch" in e.value.read()
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(dev.s3_endpoint + "/bucket-one")
    assert e.value.code == 403


def aws_s3(dev, *args, check=True):
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ENDPOINT_URL_S3": dev.s3_endpoint,
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "AWS_PAGER": "",
    }
    p = subprocess.run([aws_cli(), *args], capture_output=True, text=True, env=env)
    if check:
        assert p.returncode == 0, p.stderr
    return p


def test_aws_cli_cp_sync_ls_rm_with_a_customer_key(dev, tmp_path):
    key = dev.client().create_key(Description="build artifacts")["KeyMetadata"]
    src = tmp_path / "build"
    (src / "sub").mkdir(parents=True)
    (src / "app.tar").write_bytes(os.urandom(9 * MIB))
    (src / "sub" / "notes 1+1.txt").write_text("release notes")
    aws_s3(dev, "s3", "mb", "s3://artifacts")
    aws_s3(dev, "s3", "sync", str(src), "s3://artifacts/v1/", "--sse", "aws:kms", "--sse-kms-key-id", key["KeyId"])
    ls = aws_s3(dev, "s3", "ls", "--recursive", "s3://artifacts").stdout
    assert "v1/app.tar" in ls and "v1/sub/notes 1+1.txt" in ls
    head = json.loads(aws_s3(dev, "s3api", "head-object", "--bucket", "artifacts", "--key", "v1/app.tar").stdout)
    assert head["ServerSideEncryption"] == "aws:kms" and head["SSEKMSKeyId"] == key["Arn"]
    out = tmp_path / "out"
    aws_s3(dev, "s3", "cp", "--recursive", "s3://artifacts/v1/", str(out))
    assert (out / "app.tar").read_bytes() == (src / "app.tar").read_bytes()
    assert (out / "sub" / "notes 1+1.txt").read_text() == "release notes"
    aws_s3(dev, "s3", "rm", "--recursive", "s3://artifacts/v1/")
    aws_s3(dev, "s3", "rb", "s3://artifacts")
    p = aws_s3(dev, "s3", "ls", "s3://artifacts", check=False)
    assert p.returncode != 0 and "NoSuchBucket" in p.stderr


def test_a_kill_during_an_upload_leaves_nothing_visible(tmp_path):
    data = tmp_path / "data"
    s = Server(["--dev", "--data-dir", str(data)])
    s3 = s.s3()
    s3.create_bucket(Bucket="crash-bucket")
    s3.put_object(Bucket="crash-bucket", Key="kept", Body=b"acknowledged")
    host, port = s.s3_endpoint.split("//")[1].split(":")
    # Half an upload, then kill -9.
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    req = AWSRequest(method="PUT", url=s.s3_endpoint + "/crash-bucket/partial", data=b"")
    req.headers["x-amz-content-sha256"] = "UNSIGNED-PAYLOAD"
    S3SigV4Auth(Credentials("test", "test"), "s3", REGION).add_auth(req)
    head = [f"PUT /crash-bucket/partial HTTP/1.1", f"Host: {host}:{port}",
            f"Content-Length: {8 * MIB}"] + [f"{k}: {v}" for k, v in req.headers.items() if k.lower() != "host"]
    sock = socket.create_connection((host, int(port)))
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + os.urandom(3 * MIB))
    time.sleep(0.5)
    s.proc.send_signal(signal.SIGKILL)
    s.proc.wait()
    sock.close()
    s = Server(["--dev", "--data-dir", str(data)])
    try:
        s3 = s.s3()
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="crash-bucket")["Contents"]]
        assert keys == ["kept"]
        assert s3.get_object(Bucket="crash-bucket", Key="kept")["Body"].read() == b"acknowledged"
        assert list((data / "objects" / "tmp").iterdir()) == []
    finally:
        s.stop()


def test_virtual_hosted_style_requests(tmp_path):
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    s = Server(["--dev", "--data-dir", str(tmp_path / "d"), "--s3-domain", "s3.test"])
    try:
        s.s3().create_bucket(Bucket="vhost-bucket")
        port = s.s3_endpoint.rsplit(":", 1)[1]

        def send(method, path, body=b""):
            req = AWSRequest(method=method, url=f"http://vhost-bucket.s3.test:{port}{path}", data=body)
            req.headers["x-amz-content-sha256"] = hashlib.sha256(body).hexdigest()
            S3SigV4Auth(Credentials("test", "test"), "s3", REGION).add_auth(req)
            head = [f"{method} {path} HTTP/1.1", f"Host: vhost-bucket.s3.test:{port}",
                    f"Content-Length: {len(body)}", "Connection: close"]
            head += [f"{k}: {v}" for k, v in req.headers.items() if k.lower() != "host"]
            with socket.create_connection(("127.0.0.1", int(port))) as c:
                c.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body)
                out = b""
                while chunk := c.recv(65536):
                    out += chunk
            return out

        assert b" 200 " in send("PUT", "/v/key.txt", b"virtual").split(b"\r\n")[0]
        assert s.s3().get_object(Bucket="vhost-bucket", Key="v/key.txt")["Body"].read() == b"virtual"
        got = send("GET", "/v/key.txt")
        assert got.split(b"\r\n")[0].endswith(b"200 OK") and got.endswith(b"virtual")
    finally:
        s.stop()

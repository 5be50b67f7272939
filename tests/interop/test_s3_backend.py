"""The S3 gateway keeping its ciphertext in an S3 server nobody here wrote (moto's server), and
two keyhold nodes sharing PostgreSQL and that backend serving the same buckets."""

import io
import os
import shutil
import socket
import subprocess
import sys
import time

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from conftest import REGION, Server, two_node_dirs, wait_until

MIB = 1024 * 1024


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def moto():
    exe = shutil.which("moto_server") or os.path.join(os.path.dirname(sys.executable), "moto_server")
    if not os.path.exists(exe):
        pytest.skip("SKIP: moto_server is not installed")
    port = free_port()
    p = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"

    def up():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            return False

    assert wait_until(up, timeout=20), "moto_server did not start"
    raw = boto3.client("s3", endpoint_url=endpoint, region_name=REGION, aws_access_key_id="moto",
                       aws_secret_access_key="moto", config=Config(retries={"max_attempts": 2}))
    raw.create_bucket(Bucket="keyhold-backend")
    try:
        yield endpoint, raw
    finally:
        p.terminate()
        p.wait(timeout=10)


BACKEND_ENV = {
    "KEYHOLD_S3_BACKEND_ACCESS_KEY_ID": "moto",
    "KEYHOLD_S3_BACKEND_SECRET_ACCESS_KEY": "moto",
}


def backend_objects(raw):
    out = {}
    for page in raw.get_paginator("list_objects_v2").paginate(Bucket="keyhold-backend"):
        for o in page.get("Contents", []):
            out[o["Key"]] = raw.get_object(Bucket="keyhold-backend", Key=o["Key"])["Body"].read()
    return out


def test_the_backend_holds_only_ciphertext(moto, tmp_path):
    endpoint, raw = moto
    s = Server(["--dev", "--data-dir", str(tmp_path / "data"),
                "--s3-backend", f"{endpoint}/keyhold-backend/node"], env=BACKEND_ENV)
    try:
        s3 = s.s3()
        s3.create_bucket(Bucket="via-backend")
        marker = b"BACKEND-PLAINTEXT-" * 5000
        s3.put_object(Bucket="via-backend", Key="s3", Body=marker)
        s3.put_object(Bucket="via-backend", Key="kms", Body=marker, ServerSideEncryption="aws:kms")
        big = os.urandom(11 * MIB)
        s3.upload_fileobj(io.BytesIO(big), "via-backend", "big")
        stored = backend_objects(raw)
        assert len(stored) == 4 and all(k.startswith("node/") for k in stored)
        assert not any(b"BACKEND-PLAINTEXT" in v for v in stored.values())
        assert s3.get_object(Bucket="via-backend", Key="kms")["Body"].read() == marker
        got = s3.get_object(Bucket="via-backend", Key="big", Range=f"bytes={8 * MIB - 5}-{8 * MIB + 4}")
        assert got["Body"].read() == big[8 * MIB - 5:8 * MIB + 5]
        out = io.BytesIO()
        s3.download_fileobj("via-backend", "big", out)
        assert out.getvalue() == big
        # Tampering in the backend is caught.
        key = next(k for k, v in stored.items() if len(v) == len(marker) + 16 * 2)
        damaged = bytearray(stored[key])
        damaged[5] ^= 1
        raw.put_object(Bucket="keyhold-backend", Key=key, Body=bytes(damaged))
        bad = 0
        for k in ("s3", "kms"):
            try:
                s3.get_object(Bucket="via-backend", Key=k)["Body"].read()
            except ClientError as e:
                assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 500
                bad += 1
        assert bad == 1
        # Deleting removes the backend object.
        s3.delete_object(Bucket="via-backend", Key="big")
        assert len(backend_objects(raw)) == 2
    finally:
        s.stop()


def test_an_unreachable_backend_is_refused_at_start(tmp_path):
    from conftest import run_keyhold
    p = run_keyhold("serve", "--dev", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "d"),
                    "--s3-backend", f"http://127.0.0.1:{free_port()}/nope", env=BACKEND_ENV)
    assert p.returncode != 0 and "--s3-backend" in p.stderr


def test_two_nodes_serve_the_same_buckets(pg_url, moto, tmp_path):
    endpoint, raw = moto
    a_dir, b_dir, creds = two_node_dirs(pg_url, tmp_path)
    common = ["--store", pg_url, "--insecure-http", "--s3-listen", "127.0.0.1:0",
              "--s3-backend", f"{endpoint}/keyhold-backend"]
    a = Server(["--data-dir", str(a_dir), "--node-id", "a", *common], env=BACKEND_ENV)
    b = Server(["--data-dir", str(b_dir), "--node-id", "b", *common], env=BACKEND_ENV)
    try:
        sa = a.s3(creds["access_key_id"], creds["secret_access_key"])
        sb = b.s3(creds["access_key_id"], creds["secret_access_key"])
        sa.create_bucket(Bucket="shared-bucket")
        sa.put_object(Bucket="shared-bucket", Key="from-a", Body=b"written on a", ServerSideEncryption="aws:kms")
        assert sb.get_object(Bucket="shared-bucket", Key="from-a")["Body"].read() == b"written on a"
        up = sb.create_multipart_upload(Bucket="shared-bucket", Key="mp")["UploadId"]
        e1 = sa.upload_part(Bucket="shared-bucket", Key="mp", UploadId=up, PartNumber=1,
                            Body=b"a" * (5 * MIB))["ETag"]
        e2 = sb.upload_part(Bucket="shared-bucket", Key="mp", UploadId=up, PartNumber=2, Body=b"b")["ETag"]
        sa.complete_multipart_upload(Bucket="shared-bucket", Key="mp", UploadId=up, MultipartUpload={
            "Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]})
        assert sb.get_object(Bucket="shared-bucket", Key="mp", Range="bytes=5242879-5242880")["Body"].read() == b"ab"
        assert [o["Key"] for o in sb.list_objects_v2(Bucket="shared-bucket")["Contents"]] == ["from-a", "mp"]
    finally:
        a.stop()
        b.stop()

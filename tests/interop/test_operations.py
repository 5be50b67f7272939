"""What an operator's tools see: Prometheus metrics (on their own listener too), liveness and
readiness, and one JSON log line per request that never holds a secret."""

import json
import socket
import urllib.error
import urllib.request

from conftest import Server


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_metrics_health_and_request_logs(tmp_path):
    port = free_port()
    s = Server(["--dev", "--data-dir", str(tmp_path / "d"), "--log-format", "json",
                "--metrics-listen", f"127.0.0.1:{port}"])
    try:
        kms = s.client()
        key = kms.create_key()["KeyMetadata"]["KeyId"]
        kms.encrypt(KeyId=key, Plaintext=b"TOP-SECRET-PLAINTEXT")
        s3 = s.s3()
        s3.create_bucket(Bucket="ops-bucket")
        s3.put_object(Bucket="ops-bucket", Key="k", Body=b"TOP-SECRET-OBJECT")
        base = f"http://127.0.0.1:{port}"
        text = urllib.request.urlopen(base + "/metrics").read().decode()
        assert 'keyhold_requests_total{operation="Encrypt",code="OK"} 1' in text
        assert 'keyhold_s3_requests_total{operation="PutObject",code="OK"} 1' in text
        assert "keyhold_request_duration_seconds_bucket" in text
        assert "keyhold_requests_in_flight" in text
        assert urllib.request.urlopen(base + "/health/live").status == 200
        ready = json.loads(urllib.request.urlopen(base + "/health/ready").read())
        assert ready == {"status": "ready"}
        # With their own listener, metrics are not on the API port.
        try:
            urllib.request.urlopen(s.endpoint + "/metrics")
            raise AssertionError("metrics served on the API port")
        except urllib.error.HTTPError as e:
            assert e.code != 200
    finally:
        s.stop()
    lines = [json.loads(l) for l in s.proc.stderr.read().splitlines() if l.startswith("{")]
    requests = [l for l in lines if l.get("target") == "keyhold::request"]
    enc = [l for l in requests if l["fields"].get("operation") == "Encrypt"]
    assert len(enc) == 1
    f = enc[0]["fields"]
    assert f["status"] == 200 and f["error"] == "-" and f["key"].endswith(key)
    assert f["principal"] == "arn:aws:iam::111122223333:user/dev" and f["request_id"]
    assert int(f["latency_us"]) >= 0
    put = [l for l in requests if l["fields"].get("operation") == "PutObject"]
    assert put and put[0]["fields"]["resource"] == "arn:aws:s3:::ops-bucket/k"
    everything = "\n".join(json.dumps(l) for l in lines)
    for secret in ("TOP-SECRET", "VE9QLVNFQ1JFVC", '"test"'):
        assert secret not in everything, secret


def test_debug_logs_never_show_a_customer_key(tmp_path):
    import base64
    import os
    from botocore.exceptions import ClientError
    key = os.urandom(32)
    s = Server(["--dev", "--data-dir", str(tmp_path / "d")], env={"KEYHOLD_LOG": "debug"})
    try:
        s3 = s.s3()
        s3.create_bucket(Bucket="debug-bucket")
        try:
            s3.put_object(Bucket="debug-bucket", Key="c", Body=b"x",
                          SSECustomerAlgorithm="AES256", SSECustomerKey=key)
        except ClientError:
            pass  # refused over plain HTTP; the point is what reached the log
    finally:
        s.stop()
    log = s.proc.stderr.read()
    # s3s prints whole requests at debug; it is kept silent whatever the filter.
    assert "s3s" not in log
    assert base64.b64encode(key).decode() not in log
    assert "Signature=" not in log

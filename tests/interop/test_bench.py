"""`keyhold bench`: the load generator against a live server, over HTTP and HTTPS."""

import json

from conftest import Server, run_keyhold


def bench(*args, env=None, duration="1"):
    p = run_keyhold("bench", "--duration", duration, "--concurrency", "4", "--json", *args,
                    env=env)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_bench_encrypt_with_baseline(dev_server):
    out = bench("--endpoint", dev_server.endpoint, "--op", "encrypt", "--baseline")
    assert out["op"] == "Encrypt"
    assert out["target"]["requests"] > 0 and out["target"]["errors"] == {}
    assert out["baseline"]["requests"] > 0 and out["ratio"] > 0
    lat = out["target"]["latency_ms"]
    assert 0 < lat["p50"] <= lat["p99"] <= lat["max"]


def test_bench_each_op_over_http2(dev_server):
    for op in ["decrypt", "generate-data-key", "re-encrypt", "sign", "verify", "generate-mac", "mixed"]:
        out = bench("--endpoint", dev_server.endpoint, "--op", op, "--http2", duration="0.3")
        assert out["target"]["requests"] > 0 and out["target"]["errors"] == {}, (op, out)


def test_bench_over_tls(data_dir):
    p = run_keyhold("init", "--data-dir", str(data_dir), "--json")
    assert p.returncode == 0, p.stderr
    creds = json.loads(p.stdout)
    env = {"AWS_ACCESS_KEY_ID": creds["access_key_id"],
           "AWS_SECRET_ACCESS_KEY": creds["secret_access_key"]}
    s = Server(["--data-dir", str(data_dir)])
    try:
        assert s.endpoint.startswith("https://")
        out = bench("--endpoint", s.endpoint, "--ca-bundle", str(data_dir / "tls" / "ca.pem"),
                    "--baseline", env=env)
        assert out["target"]["requests"] > 0 and out["baseline"]["requests"] > 0
        no_ca = run_keyhold("bench", "--endpoint", s.endpoint, "--duration", "1", env=env)
        assert no_ca.returncode != 0 and "--ca-bundle" in no_ca.stderr
    finally:
        s.stop()


def test_bench_with_a_wrong_secret_says_why(dev_server):
    p = run_keyhold("bench", "--endpoint", dev_server.endpoint, "--duration", "1",
                    env={"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "wrong"})
    assert p.returncode != 0, p.stdout
    assert "CreateKey: HTTP 400" in p.stderr and "InvalidSignatureException" in p.stderr, p.stderr


def test_bench_open_loop_sends_at_the_rate_asked(dev_server):
    out = bench("--endpoint", dev_server.endpoint, "--rate", "200", duration="2")
    assert out["rate"] == 200
    # 400 due in two seconds; the last few may fall past the deadline on a busy machine.
    assert 300 <= out["target"]["requests"] <= 400, out
    bad = run_keyhold("bench", "--endpoint", dev_server.endpoint, "--rate", "0")
    assert bad.returncode != 0 and "--rate must be positive" in bad.stderr


def test_bench_reads_the_endpoint_from_the_aws_environment(dev_server):
    # No --endpoint: AWS_ENDPOINT_URL, as the AWS CLI and SDKs read it.
    out = bench("--op", "encrypt", duration="0.3", env={"AWS_ENDPOINT_URL": dev_server.endpoint})
    assert out["endpoint"] == dev_server.endpoint and out["target"]["requests"] > 0


def test_bench_s3_against_a_server_and_in_process(tmp_path):
    s = Server(["--dev", "--data-dir", str(tmp_path / "d")])
    try:
        for sse in ("s3", "kms", "kms-bucket-key"):
            out = bench("--s3", "put", "--sse", sse, "--object-size", "256K",
                        "--s3-endpoint", s.s3_endpoint, duration="0.5")
            assert out["target"]["requests"] > 0 and out["target"]["errors"] == {}, (sse, out)
        out = bench("--s3", "get", "--object-size", "1M", "--s3-endpoint", s.s3_endpoint,
                    duration="0.5")
        assert out["target"]["bytes"] == out["target"]["requests"] * 1024 * 1024
    finally:
        s.stop()
    out = bench("--s3", "get", "--sse", "kms-bucket-key", "--object-size", "1M", "--in-process",
                "--baseline", duration="0.5")
    assert out["ratio"] > 0 and out["baseline"]["errors"] == {} and out["peak_rss_mib"] > 0
    # Encryption off exists only on the benchmark's own gateway.
    p = run_keyhold("bench", "--s3", "put", "--sse", "none", "--duration", "0.2")
    assert p.returncode != 0 and "--in-process" in p.stderr

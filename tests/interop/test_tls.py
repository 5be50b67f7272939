"""TLS: the private CA, operator certificates, protocol versions, reloads and mutual TLS."""

import datetime
import json
import socket
import ssl
import time

import pytest
from botocore.config import Config
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conftest import Server, run_keyhold, wait_until


@pytest.fixture
def initialised(data_dir):
    creds = json.loads(run_keyhold("init", "--data-dir", str(data_dir), "--json").stdout)
    return data_dir, creds


def host_port(endpoint):
    hp = endpoint.split("://", 1)[1]
    host, port = hp.rsplit(":", 1)
    return host, int(port)


def peer_cert(endpoint, ca, **ctx_opts):
    ctx = ssl.create_default_context(cafile=ca)
    for k, v in ctx_opts.items():
        setattr(ctx, k, v)
    host, port = host_port(endpoint)
    with socket.create_connection((host, port), timeout=5) as sock:
        with ctx.wrap_socket(sock, server_hostname="localhost") as tls:
            return tls.getpeercert(binary_form=True), tls.version()


def self_signed(tmp_path, name, not_after_days=30, not_before_days=-1):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + datetime.timedelta(days=not_before_days))
        .not_valid_after(now + datetime.timedelta(days=not_after_days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    c = tmp_path / f"{name}.pem"
    k = tmp_path / f"{name}.key"
    c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    return c, k


def test_https_by_default_with_the_private_ca(initialised):
    data_dir, creds = initialised
    ca = run_keyhold("ca", "cert", "--data-dir", str(data_dir))
    assert ca.returncode == 0 and "BEGIN CERTIFICATE" in ca.stdout
    s = Server(["--data-dir", str(data_dir)])
    try:
        assert s.endpoint.startswith("https://")
        kms = s.client(creds["access_key_id"], creds["secret_access_key"])
        kms.create_key()
        out = s.cli("list-keys", access_key=creds["access_key_id"], secret=creds["secret_access_key"])
        assert len(out["Keys"]) == 1
        # TLS 1.3 and TLS 1.2 both work; HTTP/2 is offered by ALPN.
        _, v13 = peer_cert(s.endpoint, s.ca)
        assert v13 == "TLSv1.3"
        _, v12 = peer_cert(s.endpoint, s.ca, maximum_version=ssl.TLSVersion.TLSv1_2)
        assert v12 == "TLSv1.2"
        ctx = ssl.create_default_context(cafile=s.ca)
        ctx.set_alpn_protocols(["h2", "http/1.1"])
        host, port = host_port(s.endpoint)
        with socket.create_connection((host, port), timeout=5) as sock:
            with ctx.wrap_socket(sock, server_hostname="localhost") as tls:
                assert tls.selected_alpn_protocol() == "h2"
        # Old protocol versions are refused.
        with pytest.raises(ssl.SSLError):
            peer_cert(s.endpoint, s.ca, minimum_version=ssl.TLSVersion.TLSv1,
                      maximum_version=ssl.TLSVersion.TLSv1_1)
        # Plain HTTP sent to the TLS port gets no HTTP answer.
        with socket.create_connection((host, port), timeout=5) as sock:
            sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
            data = b""
            try:
                while chunk := sock.recv(4096):
                    data += chunk
            except (ConnectionResetError, socket.timeout):
                pass
        assert not data.startswith(b"HTTP/")
    finally:
        s.stop()


def test_insecure_http_only_on_loopback(initialised):
    data_dir, _ = initialised
    p = run_keyhold("serve", "--data-dir", str(data_dir), "--insecure-http", "--listen", "0.0.0.0:0")
    assert p.returncode != 0 and "non-loopback" in p.stderr
    s = Server(["--data-dir", str(data_dir), "--insecure-http"])
    try:
        assert s.endpoint.startswith("http://")
    finally:
        s.stop()


def test_ca_issue_and_operator_certificates_with_reload(initialised, tmp_path):
    data_dir, creds = initialised
    out = tmp_path / "certs"
    p = run_keyhold("ca", "issue", "--data-dir", str(data_dir), "--name", "localhost",
                    "--name", "127.0.0.1", "--days", "30", "--out", str(out))
    assert p.returncode == 0, p.stderr
    cert, key = out / "localhost.pem", out / "localhost.key"
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    ca = str(data_dir / "tls" / "ca.pem")
    s = Server(["--data-dir", str(data_dir), "--tls-cert", str(cert), "--tls-key", str(key)], ca=ca)
    try:
        kms = s.client(creds["access_key_id"], creds["secret_access_key"])
        kms.list_keys()
        first, _ = peer_cert(s.endpoint, ca)
        p = run_keyhold("ca", "issue", "--data-dir", str(data_dir), "--name", "localhost",
                        "--key-type", "ecdsa-p384", "--out", str(tmp_path / "new"))
        assert p.returncode == 0, p.stderr
        time.sleep(1.1)  # a different modification time
        (tmp_path / "new" / "localhost.key").replace(key)
        (tmp_path / "new" / "localhost.pem").replace(cert)
        assert wait_until(lambda: peer_cert(s.endpoint, ca)[0] != first, timeout=15)
        kms.list_keys()
    finally:
        s.stop()


def test_bad_operator_certificates_are_refused_at_start(initialised, tmp_path):
    data_dir, _ = initialised
    expired_c, expired_k = self_signed(tmp_path, "expired", not_after_days=-1, not_before_days=-10)
    good_c, _ = self_signed(tmp_path, "good")
    _, other_k = self_signed(tmp_path, "other")
    junk = tmp_path / "junk.pem"
    junk.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    for c, k, words in (
        (expired_c, expired_k, "expired"),
        (good_c, other_k, "does not match"),
        (junk, other_k, "certificate"),
        (tmp_path / "missing.pem", other_k, "missing.pem"),
    ):
        p = run_keyhold("serve", "--data-dir", str(data_dir), "--listen", "127.0.0.1:0",
                        "--tls-cert", str(c), "--tls-key", str(k))
        assert p.returncode != 0 and words in p.stderr, p.stderr


def test_mutual_tls(initialised, tmp_path):
    data_dir, creds = initialised
    ca = str(data_dir / "tls" / "ca.pem")
    p = run_keyhold("ca", "issue", "--data-dir", str(data_dir), "--name", "client-app",
                    "--out", str(tmp_path))
    assert p.returncode == 0, p.stderr
    good = (str(tmp_path / "client-app.pem"), str(tmp_path / "client-app.key"))
    foreign = tuple(str(x) for x in self_signed(tmp_path, "foreign"))
    s = Server(["--data-dir", str(data_dir), "--tls-client-ca", ca])
    try:
        import boto3

        def client(cert):
            return boto3.client(
                "kms", region_name="us-east-1", endpoint_url=s.endpoint, verify=ca,
                aws_access_key_id=creds["access_key_id"],
                aws_secret_access_key=creds["secret_access_key"],
                config=Config(retries={"max_attempts": 1}, client_cert=cert),
            )

        assert client(good).list_keys()["Keys"] == []
        for cert in (foreign, None):
            with pytest.raises(Exception):
                client(cert).list_keys()
    finally:
        s.stop()

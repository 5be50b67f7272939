"""The ACME server on keyhold's private CA: certbot and lego (Debian packages) get, renew and
revoke certificates with external account binding, and hand-made requests check the bad-input
paths (RFC 8555 problem documents, nothing issued)."""

import base64
import hashlib
import hmac
import http.server
import json
import os
import shutil
import socket
import subprocess
import threading

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa, utils
from cryptography.x509.oid import NameOID

from conftest import Server, run_keyhold


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def b64(b):
    return base64.urlsafe_b64encode(b).decode().rstrip("=")


@pytest.fixture
def acme(data_dir):
    run_keyhold("init", "--data-dir", str(data_dir), "--json")
    http01, tlsalpn = free_port(), free_port()
    s = Server([
        "--data-dir", str(data_dir),
        "--acme-http01-port", str(http01), "--acme-tlsalpn01-port", str(tlsalpn),
        "--acme-resolve", "svc.test=127.0.0.1", "--acme-resolve", "api.test=127.0.0.1",
        "--acme-resolve", "other.example=127.0.0.1", "--acme-resolve", "b.test=127.0.0.1",
    ])
    s.data_dir = data_dir
    s.http01, s.tlsalpn = http01, tlsalpn
    s.directory = s.endpoint.replace("127.0.0.1", "localhost") + "/acme/directory"
    try:
        yield s
    finally:
        s.stop()


def eab(server, *allow):
    args = ["admin", "acme-account", "create", "--data-dir", str(server.data_dir), "--json"]
    for a in allow:
        args += ["--allow", a]
    return json.loads(run_keyhold(*args).stdout)


def certs(server):
    out = run_keyhold("ca", "list", "--data-dir", str(server.data_dir), "--json").stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def audit_events(server):
    events = []
    for f in sorted((server.data_dir / "audit").glob("*.jsonl")):
        events += [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
    return events


def need(tool):
    if not shutil.which(tool):
        pytest.skip(f"SKIP: {tool} is not installed (the test command installs the Debian "
                    f"package {tool} when it runs as root)")


def certbot(server, tmp_path, *args):
    cb = tmp_path / "certbot"
    env = {**os.environ, "REQUESTS_CA_BUNDLE": server.ca}
    return subprocess.run(
        ["certbot", *args, "--config-dir", str(cb), "--work-dir", str(cb), "--logs-dir",
         str(cb), "--non-interactive"],
        capture_output=True, text=True, env=env, timeout=180,
    )


def test_certbot_gets_renews_and_revokes_a_certificate(acme, tmp_path):
    need("certbot")
    creds = eab(acme, "*.test")
    p = certbot(acme, tmp_path, "certonly", "--standalone", "--http-01-port", str(acme.http01),
                "--http-01-address", "127.0.0.1", "--server", acme.directory,
                "--eab-kid", creds["eab_kid"], "--eab-hmac-key", creds["eab_hmac_key"],
                "-d", "svc.test", "--register-unsafely-without-email", "--agree-tos")
    assert p.returncode == 0, p.stdout + p.stderr
    live = tmp_path / "certbot" / "live" / "svc.test"
    ca = tmp_path / "ca.pem"
    ca.write_text(run_keyhold("ca", "cert", "--data-dir", str(acme.data_dir)).stdout)
    v = subprocess.run(["openssl", "verify", "-CAfile", str(ca), str(live / "cert.pem")],
                       capture_output=True, text=True)
    assert v.returncode == 0, v.stdout + v.stderr
    cert = x509.load_pem_x509_certificate((live / "cert.pem").read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["svc.test"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]
    life = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert 29 <= life.days <= 30
    crl_url = cert.extensions.get_extension_for_class(
        x509.CRLDistributionPoints).value[0].full_name[0].value
    first = cert.serial_number
    p = certbot(acme, tmp_path, "renew", "--force-renewal", "--no-random-sleep-on-renew")
    assert p.returncode == 0, p.stdout + p.stderr
    renewed = x509.load_pem_x509_certificate((live / "cert.pem").read_bytes())
    second = renewed.serial_number
    assert second != first
    assert {int(c["serial"], 16) for c in certs(acme)} == {first, second}
    p = certbot(acme, tmp_path, "revoke", "--cert-name", "svc.test", "--reason",
                "keycompromise", "--no-delete-after-revoke")
    assert p.returncode == 0, p.stdout + p.stderr
    listed = {int(c["serial"], 16): c for c in certs(acme)}
    assert listed[second]["state"] == "revoked" and listed[second]["revoked"]["reason"] == 1
    assert listed[first]["state"] == "valid"
    crl = x509.load_der_x509_crl(requests.get(crl_url, verify=str(ca)).content)
    assert crl.is_signature_valid(
        x509.load_pem_x509_certificate(ca.read_bytes()).public_key())
    revoked = crl.get_revoked_certificate_by_serial_number(renewed.serial_number)
    assert revoked is not None
    assert crl.get_revoked_certificate_by_serial_number(cert.serial_number) is None
    names = [e["eventName"] for e in audit_events(acme)]
    assert names.count("AcmeIssueCertificate") == 2 and "AcmeRevokeCertificate" in names


def test_lego_uses_tls_alpn_01_and_http_01(acme, tmp_path):
    need("lego")
    creds = eab(acme, "api.test")
    env = {**os.environ, "LEGO_CA_CERTIFICATES": acme.ca}
    base = ["lego", "--server", acme.directory, "--email", "ops@example.com", "--accept-tos",
            "--eab", "--kid", creds["eab_kid"], "--hmac", creds["eab_hmac_key"],
            "--path", str(tmp_path / "lego"), "--domains", "api.test"]

    def lego(*args):
        return subprocess.run(base + list(args), capture_output=True, text=True, env=env,
                              timeout=180)

    p = lego("--tls", "--tls.port", f"127.0.0.1:{acme.tlsalpn}", "run")
    assert p.returncode == 0, p.stderr
    crt = tmp_path / "lego" / "certificates" / "api.test.crt"
    first = x509.load_pem_x509_certificate(crt.read_bytes())
    p = lego("--http", "--http.port", f"127.0.0.1:{acme.http01}", "renew", "--days", "90",
             "--no-random-sleep")
    assert p.returncode == 0, p.stderr
    second = x509.load_pem_x509_certificate(crt.read_bytes())
    assert second.serial_number != first.serial_number
    p = lego("revoke")
    assert p.returncode == 0, p.stderr
    state = {int(c["serial"], 16): c["state"] for c in certs(acme)}
    assert state[second.serial_number] == "revoked"
    # A name outside the binding's pattern: rejectedIdentifier, nothing issued.
    p = subprocess.run(
        [a if a != "api.test" else "other.example" for a in base]
        + ["--http", "--http.port", f"127.0.0.1:{acme.http01}", "run"],
        capture_output=True, text=True, env=env, timeout=180,
    )
    assert p.returncode != 0 and "rejectedIdentifier" in p.stderr, p.stderr
    assert len(certs(acme)) == 2


class Client:
    """A minimal ACME client for the bad-input paths (ES256 account key)."""

    def __init__(self, server, creds=None):
        self.server = server
        self.http = requests.Session()
        self.http.trust_env = False
        self.http.verify = server.ca
        self.dir = self.http.get(server.directory).json()
        self.key = ec.generate_private_key(ec.SECP256R1())
        n = self.key.public_key().public_numbers()
        self.jwk = {"crv": "P-256", "kty": "EC", "x": b64(n.x.to_bytes(32, "big")),
                    "y": b64(n.y.to_bytes(32, "big"))}
        self.kid = None
        self.creds = creds

    def nonce(self):
        return self.http.head(self.dir["newNonce"]).headers["Replay-Nonce"]

    def sign(self, url, payload, nonce=None, key=None, use_jwk=False, kid=None):
        protected = {"alg": "ES256", "nonce": nonce or self.nonce(), "url": url}
        if use_jwk or not (kid or self.kid):
            protected["jwk"] = self.jwk
        else:
            protected["kid"] = kid or self.kid
        p64 = b64(json.dumps(protected).encode())
        body = "" if payload is None else b64(json.dumps(payload).encode())
        der = (key or self.key).sign(f"{p64}.{body}".encode(), ec.ECDSA(hashes.SHA256()))
        r, s = utils.decode_dss_signature(der)
        return {"protected": p64, "payload": body,
                "signature": b64(r.to_bytes(32, "big") + s.to_bytes(32, "big"))}

    def post(self, url, payload, **kw):
        return self.http.post(url, data=json.dumps(self.sign(url, payload, **kw)),
                              headers={"Content-Type": "application/jose+json"})

    def eab_jws(self, url):
        protected = b64(json.dumps({"alg": "HS256", "kid": self.creds["eab_kid"],
                                    "url": url}).encode())
        payload = b64(json.dumps(self.jwk).encode())
        key = base64.urlsafe_b64decode(self.creds["eab_hmac_key"] + "==")
        tag = hmac.new(key, f"{protected}.{payload}".encode(), hashlib.sha256).digest()
        return {"protected": protected, "payload": payload, "signature": b64(tag)}

    def register(self):
        url = self.dir["newAccount"]
        r = self.post(url, {"termsOfServiceAgreed": True,
                            "externalAccountBinding": self.eab_jws(url)})
        assert r.status_code == 201, r.text
        self.kid = r.headers["Location"]
        return r

    def thumbprint(self):
        canon = json.dumps(self.jwk, sort_keys=True, separators=(",", ":")).encode()
        return b64(hashlib.sha256(canon).digest())


def problem(r):
    assert r.headers["Content-Type"].startswith("application/problem+json"), r.text
    return r.json()["type"].rsplit(":", 1)[1]


def csr_for(names, key=None):
    key = key or ec.generate_private_key(ec.SECP256R1())
    b = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
    b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                        critical=False)
    return b64(b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER))


def serve_challenge(port, token, body):
    """Answers http-01 for `token` on 127.0.0.1:`port` until stopped."""

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            ok = self.path == f"/.well-known/acme-challenge/{token}"
            self.send_response(200 if ok else 404)
            self.end_headers()
            if ok:
                self.wfile.write(body.encode())

        def log_message(self, *a):
            pass

    srv = http.server.HTTPServer(("127.0.0.1", port), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def test_bad_requests_are_problem_documents_and_issue_nothing(acme):
    c = Client(acme, eab(acme, "*.test"))
    new_account = c.dir["newAccount"]
    # No external account binding.
    r = c.post(new_account, {"termsOfServiceAgreed": True})
    assert r.status_code == 400 and problem(r) == "externalAccountRequired"
    assert "Replay-Nonce" in r.headers
    # A reused nonce, a URL other than the request's, a bad signature.
    n = c.nonce()
    r = c.post(new_account, {"externalAccountBinding": c.eab_jws(new_account)}, nonce=n)
    assert r.status_code == 201, r.text
    c.kid = r.headers["Location"]
    r = c.post(c.dir["newOrder"], {"identifiers": [{"type": "dns", "value": "svc.test"}]},
               nonce=n)
    assert problem(r) == "badNonce"
    r = c.http.post(c.dir["newOrder"],
                    data=json.dumps(c.sign(c.dir["newAccount"], {"identifiers": []})),
                    headers={"Content-Type": "application/jose+json"})
    assert problem(r) == "unauthorized"
    other = ec.generate_private_key(ec.SECP256R1())
    r = c.post(c.dir["newOrder"], {"identifiers": [{"type": "dns", "value": "svc.test"}]},
               key=other)
    assert problem(r) == "malformed" and "signature" in r.json()["detail"]
    # An unknown account.
    r = c.post(c.dir["newOrder"], {"identifiers": [{"type": "dns", "value": "svc.test"}]},
               kid=c.kid.rsplit("/", 1)[0] + "/nobody")
    assert problem(r) == "accountDoesNotExist"
    # The wrong content type.
    r = c.http.post(c.dir["newOrder"], data="{}", headers={"Content-Type": "application/json"})
    assert r.status_code == 415
    # Names the binding does not allow; types and wildcards not offered.
    for ident, kind in [({"type": "dns", "value": "other.example"}, "rejectedIdentifier"),
                        ({"type": "dns", "value": "*.svc.test"}, "rejectedIdentifier"),
                        ({"type": "ip", "value": "127.0.0.1"}, "unsupportedIdentifier")]:
        r = c.post(c.dir["newOrder"], {"identifiers": [ident]})
        assert r.status_code == 400 and problem(r) == kind, r.text
    # An order finalized before its names are proved.
    r = c.post(c.dir["newOrder"], {"identifiers": [{"type": "dns", "value": "svc.test"}]})
    assert r.status_code == 201
    order_url, order = r.headers["Location"], r.json()
    r = c.post(order["finalize"], {"csr": csr_for(["svc.test"])})
    assert r.status_code == 403 and problem(r) == "orderNotReady"
    # A failed challenge (nobody answers): the authorization and the order become invalid.
    authz = c.post(order["authorizations"][0], None).json()
    ch = next(x for x in authz["challenges"] if x["type"] == "http-01")
    r = c.post(ch["url"], {})
    assert r.json()["status"] == "invalid" and r.json()["error"]["type"].endswith(
        ":connection"), r.text
    assert c.post(order_url, None).json()["status"] == "invalid"
    # Proved, then CSRs that differ from the order or have weak keys: badCSR.
    r = c.post(c.dir["newOrder"], {"identifiers": [{"type": "dns", "value": "b.test"}]})
    order_url, order = r.headers["Location"], r.json()
    authz = c.post(order["authorizations"][0], None).json()
    ch = next(x for x in authz["challenges"] if x["type"] == "http-01")
    srv = serve_challenge(acme.http01, ch["token"], f"{ch['token']}.{c.thumbprint()}")
    try:
        r = c.post(ch["url"], {})
        assert r.json()["status"] == "valid", r.text
    finally:
        srv.shutdown()
        srv.server_close()
    assert c.post(order_url, None).json()["status"] == "ready"
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    for csr in [csr_for(["b.test", "svc.test"]), csr_for(["svc.test"]),
                csr_for(["b.test"], key=weak)]:
        r = c.post(order["finalize"], {"csr": csr})
        assert r.status_code == 400 and problem(r) == "badCSR", r.text
    assert certs(acme) == []
    # The right CSR is signed; the chain comes back as PEM.
    r = c.post(order["finalize"], {"csr": csr_for(["b.test"])})
    assert r.status_code == 200 and r.json()["status"] == "valid", r.text
    pem = c.post(r.json()["certificate"], None)
    assert pem.headers["Content-Type"] == "application/pem-certificate-chain"
    chain = x509.load_pem_x509_certificates(pem.content)
    assert len(chain) == 2 and len(certs(acme)) == 1
    # Renewal information: the window starts at two thirds of the certificate's life.
    aki = chain[0].extensions.get_extension_for_class(
        x509.AuthorityKeyIdentifier).value.key_identifier
    serial = chain[0].serial_number.to_bytes((chain[0].serial_number.bit_length() + 8) // 8,
                                             "big")
    ari = c.http.get(f"{c.dir['renewalInfo']}/{b64(aki)}.{b64(serial)}").json()
    assert ari["suggestedWindow"]["start"] < ari["suggestedWindow"]["end"]
    # Another account may not revoke it; an unknown reason is refused; then its owner does.
    der = b64(chain[0].public_bytes(serialization.Encoding.DER))
    d = Client(acme, eab(acme, "*.test"))
    d.register()
    r = d.post(d.dir["revokeCert"], {"certificate": der})
    assert problem(r) == "unauthorized"
    r = c.post(c.dir["revokeCert"], {"certificate": der, "reason": 7})
    assert problem(r) == "badRevocationReason"
    r = c.post(c.dir["revokeCert"], {"certificate": der, "reason": 4})
    assert r.status_code == 200, r.text
    r = c.post(c.dir["revokeCert"], {"certificate": der})
    assert problem(r) == "alreadyRevoked"
    # Account key change, then deactivation: the old key and the account stop working.
    new_key = ec.generate_private_key(ec.SECP256R1())
    n = new_key.public_key().public_numbers()
    new_jwk = {"crv": "P-256", "kty": "EC", "x": b64(n.x.to_bytes(32, "big")),
               "y": b64(n.y.to_bytes(32, "big"))}
    protected = {"alg": "ES256", "jwk": new_jwk, "url": c.dir["keyChange"]}
    p64 = b64(json.dumps(protected).encode())
    payload = b64(json.dumps({"account": c.kid, "oldKey": c.jwk}).encode())
    der_sig = new_key.sign(f"{p64}.{payload}".encode(), ec.ECDSA(hashes.SHA256()))
    r_, s_ = utils.decode_dss_signature(der_sig)
    inner = {"protected": p64, "payload": payload,
             "signature": b64(r_.to_bytes(32, "big") + s_.to_bytes(32, "big"))}
    r = c.post(c.dir["keyChange"], inner)
    assert r.status_code == 200, r.text
    r = c.post(c.kid, None)
    assert problem(r) == "malformed"
    c.key, c.jwk = new_key, new_jwk
    r = c.post(c.kid, {"status": "deactivated"})
    assert r.status_code == 200 and r.json()["status"] == "deactivated"
    r = c.post(c.dir["newOrder"], {"identifiers": [{"type": "dns", "value": "b.test"}]})
    assert problem(r) == "unauthorized"


def test_ca_list_shows_certificates_issued_by_hand(data_dir, tmp_path):
    run_keyhold("init", "--data-dir", str(data_dir), "--json")
    out = tmp_path / "issued"
    run_keyhold("ca", "issue", "--data-dir", str(data_dir), "--name", "db.internal",
                "--days", "3", "--out", str(out))
    cert = x509.load_pem_x509_certificate((out / "db.internal.pem").read_bytes())
    listed = json.loads(run_keyhold("ca", "list", "--data-dir", str(data_dir), "--json").stdout)
    assert int(listed["serial"], 16) == cert.serial_number
    assert listed["names"] == ["db.internal"] and listed["state"] == "expiring"
    table = run_keyhold("ca", "list", "--data-dir", str(data_dir)).stdout
    assert "db.internal" in table and "expiring" in table

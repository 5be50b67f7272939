"""`keyhold serve --seed FILE`: keys declared in YAML or JSON, created idempotently."""

import base64
import hashlib
import hmac

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from conftest import Server, run_keyhold

KEY_ID = "0b6a2f53-9c1e-4d2b-8f47-3a1d5e9c7b10"
HMAC_ID = "5d1c7e22-0a4b-4c8e-9b6f-2e7d1a3c9f40"
HMAC_KEY = b"0123456789abcdef0123456789abcdef"


def seed_yaml(ec_pkcs8_b64):
    return f"""
keys:
  - key_id: {KEY_ID}
    description: payments key
    aliases: [alias/payments, alias/payments-v2]
    tags:
      team: core
    rotation:
      enabled: true
      period_days: 180
  - key_id: {HMAC_ID}
    key_spec: HMAC_256
    key_usage: GENERATE_VERIFY_MAC
    material: {base64.b64encode(HMAC_KEY).decode()}
  - aliases: [alias/signer]
    key_spec: ECC_NIST_P256
    key_usage: SIGN_VERIFY
    material: {ec_pkcs8_b64}
    policy:
      Version: "2012-10-17"
      Statement:
        - Effect: Allow
          Principal: {{AWS: "arn:aws:iam::111122223333:root"}}
          Action: "kms:*"
          Resource: "*"
"""


def test_seeded_keys_are_ordinary_and_survive_restarts(tmp_path):
    private = ec.generate_private_key(ec.SECP256R1())
    pkcs8 = private.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())
    seed = tmp_path / "seed.yaml"
    seed.write_text(seed_yaml(base64.b64encode(pkcs8).decode()))
    data = tmp_path / "data"
    for start in range(2):
        s = Server(["--dev", "--data-dir", str(data), "--seed", str(seed)])
        try:
            kms = s.client()
            md = kms.describe_key(KeyId="alias/payments")["KeyMetadata"]
            assert md["KeyId"] == KEY_ID
            assert kms.describe_key(KeyId="alias/payments-v2")["KeyMetadata"]["KeyId"] == KEY_ID
            assert kms.list_resource_tags(KeyId=KEY_ID)["Tags"] == [{"TagKey": "team", "TagValue": "core"}]
            assert kms.get_key_rotation_status(KeyId=KEY_ID)["RotationPeriodInDays"] == 180
            mac = kms.generate_mac(KeyId=HMAC_ID, Message=b"m", MacAlgorithm="HMAC_SHA_256")["Mac"]
            assert mac == hmac.new(HMAC_KEY, b"m", hashlib.sha256).digest()
            sig = kms.sign(KeyId="alias/signer", Message=b"m", SigningAlgorithm="ECDSA_SHA_256")
            private.public_key().verify(sig["Signature"], b"m", ec.ECDSA(hashes.SHA256()))
            keys = kms.list_keys()["Keys"]
            assert len(keys) == 3, f"start {start}: seeding is idempotent"
            if start == 0:
                assert md["Description"] == "payments key"
                kms.update_key_description(KeyId=KEY_ID, Description="changed after seeding")
            else:
                assert md["Description"] == "changed after seeding", "seeding left it alone"
        finally:
            s.stop()


@pytest.mark.parametrize(
    "name,text,where",
    [
        ("bad.yaml", "keys:\n  - key_id: x\n    enabled: perhaps\n", "line 3"),
        ("bad2.yaml", "keys:\n  - aliases: [alias/a]\n  - aliases: [alias/b]\n    key_spec: RSA_1\n",
         "line 3"),
        ("bad.json", '{"keys": [{"aliases": ["alias/a"], "material": "!!!"}]}', "keys[0].material"),
        ("shared.yaml", "keys:\n  - aliases: [alias/a]\n  - aliases: [alias/b, alias/a]\n",
         "keys[0] and keys[1] both name alias alias/a"),
    ],
)
def test_malformed_seed_stops_the_start_and_changes_nothing(tmp_path, name, text, where):
    seed = tmp_path / name
    seed.write_text(text)
    data = tmp_path / "data"
    p = run_keyhold("serve", "--dev", "--data-dir", str(data), "--listen", "127.0.0.1:0",
                    "--seed", str(seed))
    assert p.returncode != 0
    assert where in p.stderr, p.stderr
    s = Server(["--dev", "--data-dir", str(data)])
    try:
        assert s.client().list_keys()["Keys"] == []
    finally:
        s.stop()


def test_nothing_is_seeded_when_the_port_cannot_be_bound(tmp_path):
    import socket
    seed = tmp_path / "seed.yaml"
    seed.write_text("keys:\n  - aliases: [alias/early]\n")
    data = tmp_path / "data"
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        port = busy.getsockname()[1]
        p = run_keyhold("serve", "--dev", "--data-dir", str(data), "--listen",
                        f"127.0.0.1:{port}", "--seed", str(seed))
        assert p.returncode != 0 and "--listen" in p.stderr, p.stderr
    finally:
        busy.close()
    s = Server(["--dev", "--data-dir", str(data)])
    try:
        assert s.client().list_keys()["Keys"] == []
    finally:
        s.stop()

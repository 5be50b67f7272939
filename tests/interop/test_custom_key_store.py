"""Custom key stores (AWS_CLOUDHSM over a PKCS#11 token, SoftHSM2 here) through boto3: the
store's life cycle, keys made and used inside the token, and AWS's errors."""

import base64
import json
import os
import shutil
import sqlite3
import subprocess

import pytest
from botocore.exceptions import ClientError

from conftest import Server, err, init_data_dir, run_keyhold, two_node_dirs, wait_until

MODULE = "/usr/lib/softhsm/libsofthsm2.so"
CLUSTER = "cluster-abcdefghijk"
OTHER = "cluster-bcdefghijkl"
PIN = "7654321"
ANCHOR = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


@pytest.fixture
def tokens(tmp_path):
    """Two SoftHSM2 tokens labelled as CloudHSM cluster ids, with the user PIN `PIN`."""
    if not shutil.which("softhsm2-util") or not os.path.exists(MODULE):
        pytest.skip("SKIP: SoftHSM2 is not installed")
    tokdir = tmp_path / "tokens"
    tokdir.mkdir()
    conf = tmp_path / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokdir}\nobjectstore.backend = file\n")
    env = {"SOFTHSM2_CONF": str(conf)}
    for label in (CLUSTER, OTHER):
        subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", label, "--pin", PIN,
                        "--so-pin", "87654321"], env={**os.environ, **env}, check=True,
                       capture_output=True)
    return env


def state(kms, store):
    return kms.describe_custom_key_stores(CustomKeyStoreId=store)["CustomKeyStores"][0]


def test_custom_key_store_end_to_end(tokens, data_dir):
    creds = init_data_dir(data_dir)
    s = Server(["--data-dir", str(data_dir)], env=tokens)
    try:
        kms = s.client(creds["access_key_id"], creds["secret_access_key"])
        store = kms.create_custom_key_store(
            CustomKeyStoreName="hsm-one", CloudHsmClusterId=CLUSTER,
            TrustAnchorCertificate=ANCHOR, KeyStorePassword=PIN)["CustomKeyStoreId"]
        assert store.startswith("cks-") and len(store) == 21
        entry = state(kms, store)
        assert entry["ConnectionState"] == "DISCONNECTED"
        assert entry["CloudHsmClusterId"] == CLUSTER and entry["CustomKeyStoreName"] == "hsm-one"
        assert entry["CustomKeyStoreType"] == "AWS_CLOUDHSM"
        assert entry["TrustAnchorCertificate"] == ANCHOR
        by_name = kms.describe_custom_key_stores(CustomKeyStoreName="hsm-one")["CustomKeyStores"]
        assert [e["CustomKeyStoreId"] for e in by_name] == [store]

        # Keys are made only in a connected store.
        with pytest.raises(ClientError) as e:
            kms.create_key(Origin="AWS_CLOUDHSM", CustomKeyStoreId=store)
        assert err(e) == "CustomKeyStoreInvalidStateException"
        kms.connect_custom_key_store(CustomKeyStoreId=store)
        assert state(kms, store)["ConnectionState"] == "CONNECTED"
        kms.connect_custom_key_store(CustomKeyStoreId=store)  # already connected: no-op

        meta = kms.create_key(Origin="AWS_CLOUDHSM", CustomKeyStoreId=store,
                              Description="in the token")["KeyMetadata"]
        assert meta["Origin"] == "AWS_CLOUDHSM"
        assert meta["CustomKeyStoreId"] == store and meta["CloudHsmClusterId"] == CLUSTER
        assert meta["KeyState"] == "Enabled"
        key = meta["KeyId"]

        ctx = {"purpose": "test"}
        ct = kms.encrypt(KeyId=key, Plaintext=b"sealed in the hsm",
                         EncryptionContext=ctx)["CiphertextBlob"]
        assert kms.decrypt(CiphertextBlob=ct, EncryptionContext=ctx)["Plaintext"] == \
            b"sealed in the hsm"
        with pytest.raises(ClientError) as e:
            kms.decrypt(CiphertextBlob=ct, EncryptionContext={"purpose": "other"})
        assert err(e) == "InvalidCiphertextException"
        bad = bytearray(ct)
        bad[-1] ^= 1
        with pytest.raises(ClientError) as e:
            kms.decrypt(CiphertextBlob=bytes(bad), EncryptionContext=ctx)
        assert err(e) == "InvalidCiphertextException"
        dk = kms.generate_data_key(KeyId=key, KeySpec="AES_256")
        assert kms.decrypt(CiphertextBlob=dk["CiphertextBlob"])["Plaintext"] == dk["Plaintext"]
        plain = kms.create_key()["KeyMetadata"]["KeyId"]
        moved = kms.re_encrypt(CiphertextBlob=ct, SourceEncryptionContext=ctx,
                               DestinationKeyId=plain)["CiphertextBlob"]
        back = kms.re_encrypt(CiphertextBlob=moved, DestinationKeyId=key)["CiphertextBlob"]
        assert kms.decrypt(CiphertextBlob=back)["Plaintext"] == b"sealed in the hsm"
        rnd = kms.generate_random(NumberOfBytes=24, CustomKeyStoreId=store)["Plaintext"]
        assert len(rnd) == 24

        # Only symmetric keys, never rotated, and Origin and store go together.
        with pytest.raises(ClientError) as e:
            kms.create_key(Origin="AWS_CLOUDHSM", CustomKeyStoreId=store, KeySpec="RSA_2048",
                           KeyUsage="SIGN_VERIFY")
        assert err(e) == "UnsupportedOperationException"
        with pytest.raises(ClientError) as e:
            kms.create_key(Origin="AWS_CLOUDHSM")
        assert err(e) == "ValidationException"
        with pytest.raises(ClientError) as e:
            kms.create_key(CustomKeyStoreId=store)
        assert err(e) == "ValidationException"
        with pytest.raises(ClientError) as e:
            kms.create_key(Origin="AWS_CLOUDHSM", CustomKeyStoreId="cks-00000000000000000")
        assert err(e) == "CustomKeyStoreNotFoundException"
        with pytest.raises(ClientError) as e:
            kms.enable_key_rotation(KeyId=key)
        assert err(e) == "UnsupportedOperationException"
    finally:
        s.stop()

    # The key's material is nowhere in the data dir, and the password not in the audit log.
    db = sqlite3.connect(data_dir / "keyhold.db")
    assert db.execute("SELECT COUNT(*) FROM key_versions WHERE key_id = ?", (key,)).fetchone()[0] == 0
    db.close()
    for f in (data_dir / "audit").iterdir():
        assert PIN.encode() not in f.read_bytes(), f

    # A new root key re-wraps the store's password too: the restarted server connects again.
    p = run_keyhold("admin", "rotate-root", "--data-dir", str(data_dir), "--to", "file")
    assert p.returncode == 0, p.stderr
    s = Server(["--data-dir", str(data_dir)], env=tokens)
    try:
        kms = s.client(creds["access_key_id"], creds["secret_access_key"])
        assert state(kms, store)["ConnectionState"] == "CONNECTED"
        assert kms.decrypt(CiphertextBlob=ct, EncryptionContext=ctx)["Plaintext"] == \
            b"sealed in the hsm"

        # Disconnected: its keys are Unavailable and refuse cryptography.
        kms.disconnect_custom_key_store(CustomKeyStoreId=store)
        assert state(kms, store)["ConnectionState"] == "DISCONNECTED"
        assert kms.describe_key(KeyId=key)["KeyMetadata"]["KeyState"] == "Unavailable"
        with pytest.raises(ClientError) as e:
            kms.encrypt(KeyId=key, Plaintext=b"x")
        assert err(e) == "KMSInvalidStateException"
        with pytest.raises(ClientError) as e:
            kms.decrypt(CiphertextBlob=ct, EncryptionContext=ctx)
        assert err(e) == "KMSInvalidStateException"
        with pytest.raises(ClientError) as e:
            kms.disconnect_custom_key_store(CustomKeyStoreId=store)
        assert err(e) == "CustomKeyStoreInvalidStateException"
        with pytest.raises(ClientError) as e:
            kms.delete_custom_key_store(CustomKeyStoreId=store)
        assert err(e) == "CustomKeyStoreHasCMKsException"

        # A wrong password: the connection FAILS with INVALID_CREDENTIALS until fixed.
        kms.update_custom_key_store(CustomKeyStoreId=store, KeyStorePassword="0000000")
        kms.connect_custom_key_store(CustomKeyStoreId=store)
        failed = state(kms, store)
        assert failed["ConnectionState"] == "FAILED"
        assert failed["ConnectionErrorCode"] == "INVALID_CREDENTIALS"
        with pytest.raises(ClientError) as e:
            kms.connect_custom_key_store(CustomKeyStoreId=store)
        assert err(e) == "CustomKeyStoreInvalidStateException"
        with pytest.raises(ClientError) as e:
            kms.update_custom_key_store(CustomKeyStoreId=store, KeyStorePassword=PIN)
        assert err(e) == "CustomKeyStoreInvalidStateException"
        kms.disconnect_custom_key_store(CustomKeyStoreId=store)
        kms.update_custom_key_store(CustomKeyStoreId=store, KeyStorePassword=PIN,
                                    NewCustomKeyStoreName="hsm-renamed")
        kms.connect_custom_key_store(CustomKeyStoreId=store)
        entry = state(kms, store)
        assert entry["ConnectionState"] == "CONNECTED"
        assert entry["CustomKeyStoreName"] == "hsm-renamed"
        assert kms.encrypt(KeyId=key, Plaintext=b"again")["KeyId"].endswith(key)
    finally:
        s.stop()


def test_custom_key_store_errors(tokens, data_dir):
    creds = init_data_dir(data_dir)
    s = Server(["--data-dir", str(data_dir)], env=tokens)
    try:
        kms = s.client(creds["access_key_id"], creds["secret_access_key"])
        args = {"TrustAnchorCertificate": ANCHOR, "KeyStorePassword": PIN}
        one = kms.create_custom_key_store(CustomKeyStoreName="one", CloudHsmClusterId=CLUSTER,
                                          **args)["CustomKeyStoreId"]
        with pytest.raises(ClientError) as e:
            kms.create_custom_key_store(CustomKeyStoreName="one", CloudHsmClusterId=OTHER, **args)
        assert err(e) == "CustomKeyStoreNameInUseException"
        with pytest.raises(ClientError) as e:
            kms.create_custom_key_store(CustomKeyStoreName="two", CloudHsmClusterId=CLUSTER, **args)
        assert err(e) == "CloudHsmClusterInUseException"
        with pytest.raises(ClientError) as e:
            kms.create_custom_key_store(CustomKeyStoreName="two",
                                        CloudHsmClusterId="cluster-zzzzzzzzzzz", **args)
        assert err(e) == "CloudHsmClusterNotFoundException"
        with pytest.raises(ClientError) as e:
            kms.create_custom_key_store(CustomKeyStoreName="two",
                                        CloudHsmClusterId="cluster-11111111111", **args)
        assert err(e) == "ValidationException"
        with pytest.raises(ClientError) as e:
            kms.create_custom_key_store(CustomKeyStoreName="two", CloudHsmClusterId=OTHER,
                                        TrustAnchorCertificate=ANCHOR)
        assert err(e) == "ValidationException"
        with pytest.raises(ClientError) as e:
            kms.create_custom_key_store(CustomKeyStoreName="xks",
                                        CustomKeyStoreType="EXTERNAL_KEY_STORE")
        assert err(e) == "UnsupportedOperationException"
        with pytest.raises(ClientError) as e:
            kms.describe_custom_key_stores(CustomKeyStoreId="cks-00000000000000000")
        assert err(e) == "CustomKeyStoreNotFoundException"
        with pytest.raises(ClientError) as e:
            kms.connect_custom_key_store(CustomKeyStoreId="cks-00000000000000000")
        assert err(e) == "CustomKeyStoreNotFoundException"

        two = kms.create_custom_key_store(CustomKeyStoreName="two", CloudHsmClusterId=OTHER,
                                          **args)["CustomKeyStoreId"]
        page = kms.describe_custom_key_stores(Limit=1)
        assert page["Truncated"] and len(page["CustomKeyStores"]) == 1
        rest = kms.describe_custom_key_stores(Limit=1, Marker=page["NextMarker"])
        assert {page["CustomKeyStores"][0]["CustomKeyStoreId"],
                rest["CustomKeyStores"][0]["CustomKeyStoreId"]} == {one, two}
        assert not rest["Truncated"]

        # Another account sees none of them.
        other = json.loads(run_keyhold("admin", "principal", "create", "--data-dir",
                                       str(data_dir), "--account", "444455556666", "--name",
                                       "eve", "--json").stdout)
        eve = s.client(other["access_key_id"], other["secret_access_key"])
        assert eve.describe_custom_key_stores()["CustomKeyStores"] == []
        with pytest.raises(ClientError) as e:
            eve.connect_custom_key_store(CustomKeyStoreId=one)
        assert err(e) == "CustomKeyStoreNotFoundException"

        # A connected store cannot be deleted; a disconnected empty one can.
        kms.connect_custom_key_store(CustomKeyStoreId=two)
        with pytest.raises(ClientError) as e:
            kms.delete_custom_key_store(CustomKeyStoreId=two)
        assert err(e) == "CustomKeyStoreInvalidStateException"
        kms.disconnect_custom_key_store(CustomKeyStoreId=two)
        kms.delete_custom_key_store(CustomKeyStoreId=two)
        ids = [e["CustomKeyStoreId"] for e in kms.describe_custom_key_stores()["CustomKeyStores"]]
        assert ids == [one]
    finally:
        s.stop()


def test_custom_key_store_across_nodes(tokens, pg_url, tmp_path):
    """Two nodes on one PostgreSQL store: a store connected through one node serves keys on
    the other, and a disconnect through one node reaches the other within its maintenance
    interval."""
    a_dir, b_dir, creds = two_node_dirs(pg_url, tmp_path)
    common = ["--store", pg_url, "--insecure-http", "--maintenance-secs", "1"]
    a = Server(["--data-dir", str(a_dir), "--node-id", "a", *common], env=tokens)
    b = Server(["--data-dir", str(b_dir), "--node-id", "b", *common], env=tokens)
    try:
        ka = a.client(creds["access_key_id"], creds["secret_access_key"])
        kb = b.client(creds["access_key_id"], creds["secret_access_key"])
        store = ka.create_custom_key_store(
            CustomKeyStoreName="shared", CloudHsmClusterId=CLUSTER,
            TrustAnchorCertificate=ANCHOR, KeyStorePassword=PIN)["CustomKeyStoreId"]
        ka.connect_custom_key_store(CustomKeyStoreId=store)
        key = ka.create_key(Origin="AWS_CLOUDHSM", CustomKeyStoreId=store)["KeyMetadata"]["KeyId"]
        ct = kb.encrypt(KeyId=key, Plaintext=b"either node")["CiphertextBlob"]
        assert ka.decrypt(CiphertextBlob=ct)["Plaintext"] == b"either node"
        assert state(kb, store)["ConnectionState"] == "CONNECTED"
        ka.disconnect_custom_key_store(CustomKeyStoreId=store)

        def refused():
            try:
                kb.encrypt(KeyId=key, Plaintext=b"x")
                return False
            except ClientError as e:
                return e.response["Error"]["Code"] == "KMSInvalidStateException"

        assert wait_until(refused, timeout=10)
    finally:
        a.stop()
        b.stop()


def test_custom_key_store_with_the_aws_cli(tokens, tmp_path):
    s = Server(["--dev"], env=tokens)
    try:
        store = s.cli("create-custom-key-store", "--custom-key-store-name", "cli-store",
                      "--cloud-hsm-cluster-id", CLUSTER, "--key-store-password", PIN,
                      "--trust-anchor-certificate", ANCHOR)["CustomKeyStoreId"]
        s.cli("connect-custom-key-store", "--custom-key-store-id", store)
        listed = s.cli("describe-custom-key-stores")["CustomKeyStores"]
        assert [(e["CustomKeyStoreId"], e["ConnectionState"]) for e in listed] == \
            [(store, "CONNECTED")]
        key = s.cli("create-key", "--origin", "AWS_CLOUDHSM",
                    "--custom-key-store-id", store)["KeyMetadata"]["KeyId"]
        pt, ct_file = tmp_path / "pt", tmp_path / "ct"
        pt.write_bytes(b"hello")
        ct = s.cli("encrypt", "--key-id", key, "--plaintext", f"fileb://{pt}")["CiphertextBlob"]
        ct_file.write_bytes(base64.b64decode(ct))
        out = s.cli("decrypt", "--ciphertext-blob", f"fileb://{ct_file}")
        assert base64.b64decode(out["Plaintext"]) == b"hello"
        p = s.cli("delete-custom-key-store", "--custom-key-store-id", store, check=False)
        assert p.returncode != 0 and "CustomKeyStoreInvalidStateException" in p.stderr
    finally:
        s.stop()


def test_a_token_deleted_while_running_makes_its_keys_unavailable(tokens, tmp_path):
    s = Server(["--dev"], env=tokens)
    try:
        kms = s.client()
        store = kms.create_custom_key_store(
            CustomKeyStoreName="doomed", CloudHsmClusterId=OTHER,
            TrustAnchorCertificate=ANCHOR, KeyStorePassword=PIN)["CustomKeyStoreId"]
        kms.connect_custom_key_store(CustomKeyStoreId=store)
        key = kms.create_key(Origin="AWS_CLOUDHSM", CustomKeyStoreId=store)["KeyMetadata"]["KeyId"]
        ct = kms.encrypt(KeyId=key, Plaintext=b"x")["CiphertextBlob"]
        subprocess.run(["softhsm2-util", "--delete-token", "--token", OTHER],
                       env={**os.environ, **tokens}, check=True, capture_output=True)
        for call in (lambda: kms.encrypt(KeyId=key, Plaintext=b"x"),
                     lambda: kms.decrypt(CiphertextBlob=ct)):
            with pytest.raises(ClientError) as e:
                call()
            assert err(e) == "KMSInvalidStateException"
        # Keys of other stores and of keyhold itself are unaffected.
        plain = kms.create_key()["KeyMetadata"]["KeyId"]
        assert kms.encrypt(KeyId=plain, Plaintext=b"fine")["KeyId"].endswith(plain)
    finally:
        s.stop()

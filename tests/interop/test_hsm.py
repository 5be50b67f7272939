"""The root key in an HSM (SoftHSM2 through PKCS#11)."""

import json
import shutil
import subprocess

import pytest

from conftest import Server, run_keyhold

MODULE = "/usr/lib/softhsm/libsofthsm2.so"


@pytest.fixture
def softhsm(tmp_path):
    if not shutil.which("softhsm2-util") or not __import__("os").path.exists(MODULE):
        pytest.skip("SKIP: SoftHSM2 is not installed")
    tokens = tmp_path / "tokens"
    tokens.mkdir()
    conf = tmp_path / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\n")
    env = {"SOFTHSM2_CONF": str(conf), "KEYHOLD_PKCS11_PIN": "4321"}
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "kh", "--pin", "4321",
                    "--so-pin", "8765"], env={**__import__("os").environ, **env}, check=True,
                   capture_output=True)
    return env


def test_hsm_root_key_end_to_end(softhsm, data_dir):
    p = run_keyhold("init", "--data-dir", str(data_dir), "--root-key", "pkcs11",
                    "--pkcs11-token", "kh", "--json", env=softhsm)
    assert p.returncode == 0, p.stderr
    creds = json.loads(p.stdout)
    assert not (data_dir / "root.key").exists()
    assert json.loads((data_dir / "root.json").read_text())["provider"] == "pkcs11"
    s = Server(["--data-dir", str(data_dir)], env=softhsm)
    try:
        kms = s.client(creds["access_key_id"], creds["secret_access_key"])
        key = kms.create_key()["KeyMetadata"]["KeyId"]
        ct = kms.encrypt(KeyId=key, Plaintext=b"in the hsm")["CiphertextBlob"]
    finally:
        s.stop()
    wrong = run_keyhold("serve", "--data-dir", str(data_dir), "--listen", "127.0.0.1:0",
                        env={**softhsm, "KEYHOLD_PKCS11_PIN": "0000"})
    assert wrong.returncode != 0 and "PIN" in wrong.stderr
    no_token = run_keyhold("serve", "--data-dir", str(data_dir), "--listen", "127.0.0.1:0",
                           env={**softhsm, "SOFTHSM2_CONF": "/nonexistent.conf"})
    assert no_token.returncode != 0 and "HSM" in no_token.stderr
    s = Server(["--data-dir", str(data_dir)], env=softhsm)
    try:
        kms = s.client(creds["access_key_id"], creds["secret_access_key"])
        assert kms.decrypt(CiphertextBlob=ct)["Plaintext"] == b"in the hsm"
    finally:
        s.stop()


def test_rotate_root_into_and_within_the_hsm(softhsm, data_dir):
    p = run_keyhold("init", "--data-dir", str(data_dir), "--json")
    assert p.returncode == 0, p.stderr
    creds = json.loads(p.stdout)
    s = Server(["--data-dir", str(data_dir)])
    try:
        kms = s.client(creds["access_key_id"], creds["secret_access_key"])
        key = kms.create_key()["KeyMetadata"]["KeyId"]
        ct = kms.encrypt(KeyId=key, Plaintext=b"moved into the hsm")["CiphertextBlob"]
    finally:
        s.stop()
    r = run_keyhold("admin", "rotate-root", "--data-dir", str(data_dir), "--to", "pkcs11",
                    "--pkcs11-token", "kh", "--pkcs11-key-label", "root-a", env=softhsm)
    assert r.returncode == 0, r.stderr
    assert not (data_dir / "root.key").exists()
    assert json.loads((data_dir / "root.json").read_text())["key_label"] == "root-a"
    # The same label again is refused; a new label in the same token works.
    same = run_keyhold("admin", "rotate-root", "--data-dir", str(data_dir), "--to", "pkcs11",
                       "--pkcs11-token", "kh", "--pkcs11-key-label", "root-a", env=softhsm)
    assert same.returncode != 0 and "another --pkcs11-key-label" in same.stderr
    r = run_keyhold("admin", "rotate-root", "--data-dir", str(data_dir), "--to", "pkcs11",
                    "--pkcs11-token", "kh", "--pkcs11-key-label", "root-b", env=softhsm)
    assert r.returncode == 0, r.stderr
    s = Server(["--data-dir", str(data_dir)], env=softhsm)
    try:
        kms = s.client(creds["access_key_id"], creds["secret_access_key"])
        assert kms.decrypt(CiphertextBlob=ct)["Plaintext"] == b"moved into the hsm"
    finally:
        s.stop()

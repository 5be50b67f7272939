"""Root-key providers: a passphrase-derived root key, and a wrong passphrase refused."""

import json

from conftest import Server, run_keyhold

PASS = {"KEYHOLD_PASSPHRASE": "a long enough passphrase"}


def test_passphrase_root_key(data_dir, tmp_path):
    p = run_keyhold("init", "--data-dir", str(data_dir), "--root-key", "passphrase", "--json", env=PASS)
    assert p.returncode == 0, p.stderr
    creds = json.loads(p.stdout)
    assert not (data_dir / "root.key").exists()
    config = json.loads((data_dir / "root.json").read_text())
    assert config["provider"] == "passphrase" and "a long enough" not in json.dumps(config)

    s = Server(["--data-dir", str(data_dir)], env=PASS)
    try:
        kms = s.client(creds["access_key_id"], creds["secret_access_key"])
        key = kms.create_key()["KeyMetadata"]["KeyId"]
        ct = kms.encrypt(KeyId=key, Plaintext=b"guarded")["CiphertextBlob"]
    finally:
        s.stop()

    wrong = run_keyhold("serve", "--data-dir", str(data_dir), "--listen", "127.0.0.1:0",
                        env={"KEYHOLD_PASSPHRASE": "not the passphrase at all"})
    assert wrong.returncode != 0 and "wrong passphrase" in wrong.stderr
    missing = run_keyhold("admin", "principal", "list", "--data-dir", str(data_dir),
                          env={"KEYHOLD_PASSPHRASE": "", "KEYHOLD_PASSPHRASE_FILE": ""})
    assert missing.returncode != 0 and "KEYHOLD_PASSPHRASE" in missing.stderr

    pass_file = tmp_path / "pass"
    pass_file.write_text("a long enough passphrase\n")
    s = Server(["--data-dir", str(data_dir)], env={"KEYHOLD_PASSPHRASE_FILE": str(pass_file)})
    try:
        kms = s.client(creds["access_key_id"], creds["secret_access_key"])
        assert kms.decrypt(CiphertextBlob=ct)["Plaintext"] == b"guarded"
    finally:
        s.stop()


def test_short_passphrase_is_refused(data_dir):
    p = run_keyhold("init", "--data-dir", str(data_dir), "--root-key", "passphrase",
                    env={"KEYHOLD_PASSPHRASE": "short"})
    assert p.returncode != 0 and "at least 12" in p.stderr


def test_rotate_root_rewraps_everything(data_dir):
    """file -> passphrase -> file: old ciphertexts, credentials, TLS and audit keep working."""
    p = run_keyhold("init", "--data-dir", str(data_dir), "--json")
    assert p.returncode == 0, p.stderr
    creds = json.loads(p.stdout)
    old_key_file = (data_dir / "root.key").read_bytes()

    s = Server(["--data-dir", str(data_dir)])
    try:
        kms = s.client(creds["access_key_id"], creds["secret_access_key"])
        key = kms.create_key()["KeyMetadata"]["KeyId"]
        kms.rotate_key_on_demand(KeyId=key)
        ct = kms.encrypt(KeyId=key, Plaintext=b"before rotation")["CiphertextBlob"]
        # A running server holds the data dir: the rotation is refused and changes nothing.
        busy = run_keyhold("admin", "rotate-root", "--data-dir", str(data_dir), "--to", "file")
        assert busy.returncode != 0 and "stop every keyhold server" in busy.stderr
        assert (data_dir / "root.key").read_bytes() == old_key_file
        assert not list(data_dir.glob("*.next"))
    finally:
        s.stop()

    weak = run_keyhold("admin", "rotate-root", "--data-dir", str(data_dir), "--to", "passphrase",
                       env={"KEYHOLD_NEW_PASSPHRASE": "short"})
    assert weak.returncode != 0 and "at least 12" in weak.stderr
    assert (data_dir / "root.key").read_bytes() == old_key_file
    assert json.loads((data_dir / "root.json").read_text())["provider"] == "file"

    r = run_keyhold("admin", "rotate-root", "--data-dir", str(data_dir), "--to", "passphrase",
                    env={"KEYHOLD_NEW_PASSPHRASE": "a brand new passphrase"})
    assert r.returncode == 0, r.stderr
    assert "re-wrapped 3 stored secrets" in r.stdout  # two key versions and one principal
    assert not (data_dir / "root.key").exists()
    assert json.loads((data_dir / "root.json").read_text())["provider"] == "passphrase"
    assert not list(data_dir.rglob("*.next"))

    new_pass = {"KEYHOLD_PASSPHRASE": "a brand new passphrase"}
    s = Server(["--data-dir", str(data_dir)], env=new_pass)
    try:
        kms = s.client(creds["access_key_id"], creds["secret_access_key"])
        assert kms.decrypt(CiphertextBlob=ct)["Plaintext"] == b"before rotation"
        assert kms.list_key_rotations(KeyId=key)["Rotations"]
    finally:
        s.stop()

    # And back to a key file.
    r = run_keyhold("admin", "rotate-root", "--data-dir", str(data_dir), "--to", "file", env=new_pass)
    assert r.returncode == 0, r.stderr
    assert (data_dir / "root.key").read_bytes() != old_key_file
    s = Server(["--data-dir", str(data_dir)])
    try:
        kms = s.client(creds["access_key_id"], creds["secret_access_key"])
        assert kms.decrypt(CiphertextBlob=ct)["Plaintext"] == b"before rotation"
    finally:
        s.stop()
    v = run_keyhold("audit", "verify", "--data-dir", str(data_dir))
    assert v.returncode == 0, v.stdout + v.stderr


def test_interrupted_rotation_before_commit_keeps_the_old_root(data_dir):
    p = run_keyhold("init", "--data-dir", str(data_dir), "--json")
    assert p.returncode == 0, p.stderr
    creds = json.loads(p.stdout)
    # What a crash after the new root was made, before the store changed, leaves behind.
    (data_dir / "root.key.next").write_bytes(b"\x07" * 32)
    (data_dir / "root.json.next").write_text(json.dumps({"provider": "file"}))
    s = Server(["--data-dir", str(data_dir)])
    try:
        kms = s.client(creds["access_key_id"], creds["secret_access_key"])
        assert kms.list_keys()["Keys"] == []
    finally:
        s.stop()
    assert not list(data_dir.glob("*.next"))

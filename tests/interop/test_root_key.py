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

"""`keyhold admin seed-keys`: many ordinary keys at once, listed page by page and usable."""

import json

from conftest import Server, run_keyhold


def test_seed_keys_creates_ordinary_keys(data_dir):
    p = run_keyhold("init", "--data-dir", str(data_dir), "--json")
    assert p.returncode == 0, p.stderr
    creds = json.loads(p.stdout)
    p = run_keyhold("admin", "seed-keys", "--data-dir", str(data_dir), "--count", "2500",
                    "--batch", "1000")
    assert p.returncode == 0, p.stderr
    assert "created 2500 keys" in p.stdout
    other = run_keyhold("admin", "seed-keys", "--data-dir", str(data_dir), "--count", "3",
                        "--account", "444455556666")
    assert other.returncode == 0, other.stderr

    s = Server(["--data-dir", str(data_dir)])
    try:
        kms = s.client(creds["access_key_id"], creds["secret_access_key"])
        ids = []
        for page in kms.get_paginator("list_keys").paginate(PaginationConfig={"PageSize": 1000}):
            ids += [k["KeyId"] for k in page["Keys"]]
        assert len(ids) == len(set(ids)) == 2500
        meta = kms.describe_key(KeyId=ids[1234])["KeyMetadata"]
        assert meta["KeySpec"] == "SYMMETRIC_DEFAULT" and meta["KeyState"] == "Enabled"
        ct = kms.encrypt(KeyId=ids[1234], Plaintext=b"seeded")["CiphertextBlob"]
        assert kms.decrypt(CiphertextBlob=ct)["Plaintext"] == b"seeded"
        assert "Statement" in json.loads(kms.get_key_policy(KeyId=ids[7])["Policy"])

        # The load generator spreads its requests over the seeded keys.
        env = {"AWS_ACCESS_KEY_ID": creds["access_key_id"],
               "AWS_SECRET_ACCESS_KEY": creds["secret_access_key"]}
        common = ["bench", "--endpoint", s.endpoint, "--ca-bundle",
                  str(data_dir / "tls" / "ca.pem"), "--duration", "1", "--concurrency", "4"]
        p = run_keyhold(*common, "--spread", "2500", "--json", env=env)
        assert p.returncode == 0, p.stderr
        out = json.loads(p.stdout)
        assert out["op"] == "Encrypt" and out["target"]["errors"] == {}
        assert out["target"]["requests"] > 0
        p = run_keyhold(*common, "--spread", "5000", env=env)
        assert p.returncode != 0 and "only 2500 keys" in p.stderr
        p = run_keyhold(*common, "--spread", "10", "--op", "sign", env=env)
        assert p.returncode != 0 and "--spread works with" in p.stderr
    finally:
        s.stop()


def test_seed_keys_refuses_a_bad_account(data_dir):
    assert run_keyhold("init", "--data-dir", str(data_dir)).returncode == 0
    p = run_keyhold("admin", "seed-keys", "--data-dir", str(data_dir), "--count", "5",
                    "--account", "12")
    assert p.returncode != 0 and "12-digit" in p.stderr


def test_progress_is_drawn_on_a_terminal_only(data_dir, tmp_path):
    """On a terminal (stderr a pty) long admin work draws a progress bar; in a pipe, nothing."""
    import os
    import subprocess

    from conftest import keyhold_bin

    assert run_keyhold("init", "--data-dir", str(data_dir)).returncode == 0
    piped = run_keyhold("admin", "seed-keys", "--data-dir", str(data_dir), "--count", "3000")
    assert piped.returncode == 0 and piped.stderr == "", piped.stderr
    primary, secondary = os.openpty()
    try:
        p = subprocess.run([keyhold_bin(), "admin", "backup", "--data-dir", str(data_dir),
                            "--to", str(tmp_path / "b.jsonl")],
                           stdout=subprocess.PIPE, stderr=secondary, timeout=120)
        os.close(secondary)
        drawn = b""
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:
                break
            if not chunk:
                break
            drawn += chunk
    finally:
        os.close(primary)
    assert p.returncode == 0
    assert b"rows backed up" in drawn, drawn[-500:]

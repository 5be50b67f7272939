"""Several stateless nodes sharing PostgreSQL (needs KEYHOLD_TEST_POSTGRES_URL)."""

import json
import os
import shutil
import subprocess
import time

import pytest
from botocore.exceptions import ClientError

from conftest import Server, run_keyhold, two_node_dirs, wait_until


def test_two_nodes_one_state(pg_url, tmp_path):
    # The second node shares the root key and the CA, not the audit log.
    a_dir, b_dir, creds = two_node_dirs(pg_url, tmp_path)
    a = Server(["--data-dir", str(a_dir), "--store", pg_url, "--insecure-http", "--node-id", "a"])
    b = Server(["--data-dir", str(b_dir), "--store", pg_url, "--insecure-http", "--node-id", "b"])
    try:
        ka = a.client(creds["access_key_id"], creds["secret_access_key"])
        kb = b.client(creds["access_key_id"], creds["secret_access_key"])
        key = ka.create_key(Description="shared")["KeyMetadata"]["KeyId"]
        ct = kb.encrypt(KeyId=key, Plaintext=b"across nodes")["CiphertextBlob"]
        assert ka.decrypt(CiphertextBlob=ct)["Plaintext"] == b"across nodes"
        # A change on one node is seen by the other within the staleness bound (1 s).
        ka.disable_key(KeyId=key)

        def refused():
            try:
                kb.encrypt(KeyId=key, Plaintext=b"x")
                return False
            except ClientError as e:
                return e.response["Error"]["Code"] == "DisabledException"

        started = time.time()
        assert wait_until(refused, timeout=5)
        assert time.time() - started < 2.5
        # Two nodes racing for one alias: one success, one AlreadyExistsException.
        ka.enable_key(KeyId=key)
        outcomes = []
        for client in (ka, kb):
            try:
                client.create_alias(AliasName="alias/race", TargetKeyId=key)
                outcomes.append("ok")
            except ClientError as e:
                outcomes.append(e.response["Error"]["Code"])
        assert sorted(outcomes) == ["AlreadyExistsException", "ok"]
        assert not (a_dir / "keyhold.db").exists(), "the state lives in PostgreSQL"
    finally:
        a.stop()
        b.stop()
    # Each node keeps its own audit chain; one command checks them all.
    p = run_keyhold("audit", "verify", "--data-dir", str(a_dir), "--node-data-dir", str(b_dir))
    assert p.returncode == 0, p.stdout + p.stderr
    assert str(b_dir) in p.stdout
    q = run_keyhold("audit", "query", "--data-dir", str(b_dir), "--event", "Encrypt")
    assert all(json.loads(l)["keyholdNode"] == "b" for l in q.stdout.splitlines())


def test_backup_from_sqlite_restore_into_postgres(pg_url, tmp_path):
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    creds = json.loads(run_keyhold("init", "--data-dir", str(a_dir), "--json").stdout)
    a = Server(["--data-dir", str(a_dir), "--insecure-http"])
    try:
        ka = a.client(creds["access_key_id"], creds["secret_access_key"])
        key = ka.create_key()["KeyMetadata"]["KeyId"]
        ka.create_alias(AliasName="alias/kept", TargetKeyId=key)
        ct = ka.encrypt(KeyId=key, Plaintext=b"backed up")["CiphertextBlob"]
        backup = tmp_path / "backup.json"
        p = run_keyhold("admin", "backup", "--data-dir", str(a_dir), "--to", str(backup))
        assert p.returncode == 0, p.stderr
    finally:
        a.stop()
    assert oct(backup.stat().st_mode & 0o777) == "0o600"
    assert b"backed up" not in backup.read_bytes()
    b_dir.mkdir()
    for f in ("root.key", "root.json"):
        shutil.copy(a_dir / f, b_dir / f)
    shutil.copytree(a_dir / "tls", b_dir / "tls")
    p = run_keyhold("admin", "restore", "--data-dir", str(b_dir), "--store", pg_url, "--from", str(backup))
    assert p.returncode == 0, p.stderr
    again = run_keyhold("admin", "restore", "--data-dir", str(b_dir), "--store", pg_url,
                        "--from", str(backup))
    assert again.returncode != 0 and "refusing" in again.stderr
    b = Server(["--data-dir", str(b_dir), "--store", pg_url, "--insecure-http"])
    try:
        kb = b.client(creds["access_key_id"], creds["secret_access_key"])
        assert kb.decrypt(CiphertextBlob=ct)["Plaintext"] == b"backed up"
        assert kb.describe_key(KeyId="alias/kept")["KeyMetadata"]["KeyId"] == key
    finally:
        b.stop()


def _pg_ctl(action):
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action],
                   check=True, capture_output=True)


def test_postgres_restart_and_a_killed_node(pg_url, tmp_path):
    if os.geteuid() != 0 or not shutil.which("pg_ctlcluster") or not os.path.isdir("/etc/postgresql"):
        pytest.skip("SKIP: cannot restart the local PostgreSQL here")
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    creds = json.loads(run_keyhold("init", "--data-dir", str(a_dir), "--store", pg_url, "--json").stdout)
    b_dir.mkdir()
    for f in ("root.key", "root.json"):
        shutil.copy(a_dir / f, b_dir / f)
    shutil.copytree(a_dir / "tls", b_dir / "tls")
    a = Server(["--data-dir", str(a_dir), "--store", pg_url, "--insecure-http", "--node-id", "a"])
    b = Server(["--data-dir", str(b_dir), "--store", pg_url, "--insecure-http", "--node-id", "b"])
    try:
        ka = a.client(creds["access_key_id"], creds["secret_access_key"])
        kb = b.client(creds["access_key_id"], creds["secret_access_key"])
        acknowledged = [ka.create_key(Description=f"k{i}")["KeyMetadata"]["KeyId"] for i in range(3)]
        _pg_ctl("stop")
        try:
            with pytest.raises(ClientError) as e:
                kb.create_key()
            assert e.value.response["Error"]["Code"] in (
                "DependencyTimeoutException", "KMSInternalException")
        finally:
            _pg_ctl("start")
        assert wait_until(lambda: _ok(lambda: kb.create_key()), timeout=20)
        for key in acknowledged:
            assert kb.describe_key(KeyId=key)["KeyMetadata"]["Description"].startswith("k")
        # A node killed mid-work: the other serves on, and nothing acknowledged is lost.
        made = ka.create_key()["KeyMetadata"]["KeyId"]
        a.proc.kill()
        a.proc.wait()
        assert kb.describe_key(KeyId=made)["KeyMetadata"]["KeyId"] == made
        ct = kb.encrypt(KeyId=made, Plaintext=b"after the crash")["CiphertextBlob"]
        assert kb.decrypt(CiphertextBlob=ct)["Plaintext"] == b"after the crash"
    finally:
        a.stop()
        b.stop()


def _ok(call):
    try:
        call()
        return True
    except ClientError:
        return False


def test_rotating_the_root_of_a_cluster(pg_url, tmp_path):
    """rotate-root on one node re-wraps the shared store; the other node refuses to start under
    its old root until `admin adopt-root` gives it the new one."""
    # The second node shares the root key and the CA, not the audit log.
    a_dir, b_dir, creds = two_node_dirs(pg_url, tmp_path)
    common = ["--store", pg_url, "--insecure-http"]
    a = Server(["--data-dir", str(a_dir), "--node-id", "a", *common])
    b = Server(["--data-dir", str(b_dir), "--node-id", "b", *common])
    try:
        ka = a.client(creds["access_key_id"], creds["secret_access_key"])
        key = ka.create_key()["KeyMetadata"]["KeyId"]
        ct = ka.encrypt(KeyId=key, Plaintext=b"before the rotation")["CiphertextBlob"]
        b.client(creds["access_key_id"], creds["secret_access_key"]).encrypt(
            KeyId=key, Plaintext=b"b writes its audit log")
    finally:
        a.stop()
        b.stop()
    old_key = (a_dir / "root.key").read_bytes()
    p = run_keyhold("admin", "rotate-root", "--data-dir", str(a_dir), "--store", pg_url,
                    "--to", "file")
    assert p.returncode == 0, p.stderr
    assert (a_dir / "root.key").read_bytes() != old_key

    refused = run_keyhold("serve", "--data-dir", str(b_dir), "--listen", "127.0.0.1:0",
                          *common)
    assert refused.returncode != 0 and "adopt-root" in refused.stderr
    wrong = run_keyhold("admin", "adopt-root", "--data-dir", str(tmp_path / "nowhere"),
                        "--from", str(a_dir), "--store", pg_url)
    assert wrong.returncode != 0
    p = run_keyhold("admin", "adopt-root", "--data-dir", str(b_dir), "--store", pg_url,
                    "--from", str(a_dir))
    assert p.returncode == 0, p.stderr
    assert (b_dir / "root.key").read_bytes() == (a_dir / "root.key").read_bytes()
    assert not list(b_dir.rglob("*.next"))

    a = Server(["--data-dir", str(a_dir), "--node-id", "a", *common])
    b = Server(["--data-dir", str(b_dir), "--node-id", "b", *common])
    try:
        kb = b.client(creds["access_key_id"], creds["secret_access_key"])
        assert kb.decrypt(CiphertextBlob=ct)["Plaintext"] == b"before the rotation"
        a.client(creds["access_key_id"], creds["secret_access_key"]).encrypt(
            KeyId=key, Plaintext=b"after")
    finally:
        a.stop()
        b.stop()
    # Both audit chains still verify: each node's signing key moved to the new root intact.
    for d in (a_dir, b_dir):
        p = run_keyhold("audit", "verify", "--data-dir", str(d))
        assert p.returncode == 0, p.stdout + p.stderr

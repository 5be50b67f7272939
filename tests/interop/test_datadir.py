"""A data dir is served by one process, for the store it was made for, and a restore checks
the backup opens under its root key before writing anything."""

import json
import shutil
import subprocess

from conftest import Server, init_data_dir, keyhold_bin, run_keyhold


def _serve_fails(*args):
    """Starts `keyhold serve ARGS`, expecting it to refuse; returns its stderr."""
    p = subprocess.run([keyhold_bin(), "serve", "--listen", "127.0.0.1:0", *args],
                       capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert p.returncode != 0, p.stdout
    return p.stderr


def test_a_data_dir_is_served_by_one_process_at_a_time(data_dir, pg_url):
    creds = init_data_dir(data_dir)
    s = Server(["--data-dir", str(data_dir), "--insecure-http"])
    try:
        # Whatever the flags: another store, another node id.
        err = _serve_fails("--data-dir", str(data_dir), "--insecure-http", "--node-id", "b")
        assert "already served by another keyhold process" in err, err
        err = _serve_fails("--data-dir", str(data_dir), "--insecure-http", "--store", pg_url)
        assert "already served" in err, err
        s.client(creds["access_key_id"], creds["secret_access_key"]).list_keys()
    finally:
        s.stop()
    # Once it stops, the data dir can be served again.
    s = Server(["--data-dir", str(data_dir), "--insecure-http"])
    s.stop()


def test_a_data_dir_refuses_a_store_it_was_not_made_for(tmp_path, pg_url):
    pg_dir, lite_dir = tmp_path / "pg", tmp_path / "lite"
    init_data_dir(pg_dir, "--store", pg_url)
    err = _serve_fails("--data-dir", str(pg_dir), "--insecure-http")
    assert "--store" in err and "PostgreSQL" in err, err
    assert not (pg_dir / "keyhold.db").exists(), "no empty SQLite store was made"
    init_data_dir(lite_dir)
    err = _serve_fails("--data-dir", str(lite_dir), "--insecure-http", "--store", pg_url)
    assert "drop --store" in err, err
    # With the right flags both serve.
    for args in (["--data-dir", str(pg_dir), "--store", pg_url], ["--data-dir", str(lite_dir)]):
        s = Server([*args, "--insecure-http"])
        s.stop()


def test_restore_checks_the_root_key_before_writing(tmp_path):
    a_dir, other, b_dir = tmp_path / "a", tmp_path / "other", tmp_path / "b"
    creds = init_data_dir(a_dir)
    a = Server(["--data-dir", str(a_dir), "--insecure-http"])
    try:
        c = a.client(creds["access_key_id"], creds["secret_access_key"])
        key = c.create_key()["KeyMetadata"]["KeyId"]
        ct = c.encrypt(KeyId=key, Plaintext=b"kept")["CiphertextBlob"]
    finally:
        a.stop()
    backup = tmp_path / "backup.json"
    assert run_keyhold("admin", "backup", "--data-dir", str(a_dir), "--to", str(backup)).returncode == 0

    # A data dir that does not exist: the message gives a working path, not `init`.
    p = run_keyhold("admin", "restore", "--data-dir", str(b_dir), "--from", str(backup))
    assert p.returncode != 0
    assert "root.key" in p.stderr and "run `keyhold init`" not in p.stderr.replace(
        "do not run `keyhold init`", ""), p.stderr

    # Another root key: refused before anything is written.
    init_data_dir(other)
    b_dir.mkdir()
    for f in ("root.key", "root.json"):
        shutil.copy(other / f, b_dir / f)
    p = run_keyhold("admin", "restore", "--data-dir", str(b_dir), "--from", str(backup))
    assert p.returncode != 0 and "another root key" in p.stderr, p.stderr

    # The right root key: the same data dir now takes the backup (nothing was written before).
    for f in ("root.key", "root.json"):
        shutil.copy(a_dir / f, b_dir / f)
    shutil.copytree(a_dir / "tls", b_dir / "tls")
    p = run_keyhold("admin", "restore", "--data-dir", str(b_dir), "--from", str(backup))
    assert p.returncode == 0, p.stderr
    b = Server(["--data-dir", str(b_dir), "--insecure-http"])
    try:
        c = b.client(creds["access_key_id"], creds["secret_access_key"])
        assert c.decrypt(CiphertextBlob=ct)["Plaintext"] == b"kept"
    finally:
        b.stop()
    assert json.loads((b_dir / "store.json").read_text()) == {"store": "sqlite"}


def _backed_up_dir(tmp_path):
    """A data dir with a key and its ciphertext, backed up; returns (dir, creds, ct, backup)."""
    a_dir = tmp_path / "a"
    creds = init_data_dir(a_dir)
    a = Server(["--data-dir", str(a_dir), "--insecure-http"])
    try:
        c = a.client(creds["access_key_id"], creds["secret_access_key"])
        key = c.create_key()["KeyMetadata"]["KeyId"]
        c.create_alias(AliasName="alias/kept", TargetKeyId=key)
        ct = c.encrypt(KeyId=key, Plaintext=b"kept")["CiphertextBlob"]
    finally:
        a.stop()
    backup = tmp_path / "backup.jsonl"
    p = run_keyhold("admin", "backup", "--data-dir", str(a_dir), "--to", str(backup))
    assert p.returncode == 0, p.stderr
    # Quiet in scripts: no progress bar drawn when stderr is not a terminal.
    assert p.stderr == "", p.stderr
    return a_dir, creds, ct, backup


def _fresh_dir_for(a_dir, b_dir):
    b_dir.mkdir()
    for f in ("root.key", "root.json"):
        shutil.copy(a_dir / f, b_dir / f)
    shutil.copytree(a_dir / "tls", b_dir / "tls")


def _decrypts(b_dir, creds, ct):
    b = Server(["--data-dir", str(b_dir), "--insecure-http"])
    try:
        c = b.client(creds["access_key_id"], creds["secret_access_key"])
        assert c.decrypt(CiphertextBlob=ct)["Plaintext"] == b"kept"
        assert "alias/kept" in [a["AliasName"] for a in c.list_aliases()["Aliases"]]
    finally:
        b.stop()


def test_a_damaged_backup_restores_nothing(tmp_path):
    """The backup is a stream of JSON lines closed by an end line: a truncated or altered file
    is refused and leaves the store empty, so the intact one still restores after."""
    a_dir, creds, ct, backup = _backed_up_dir(tmp_path)
    lines = backup.read_text().splitlines(keepends=True)
    assert json.loads(lines[0]) == {"format": "keyhold-backup", "version": 2}
    assert "End" in json.loads(lines[-1])
    b_dir = tmp_path / "b"
    _fresh_dir_for(a_dir, b_dir)
    damaged = tmp_path / "damaged.jsonl"
    for text, why in [
        ("".join(lines[:-1]), "ends early"),
        ("".join(lines[:-2] + lines[-1:]), "end line counts"),
        ("".join(lines[:2] + ["{not json\n"] + lines[2:]), "not a row"),
        ("".join(lines + ['{"Key": {}}\n']), "after the backup's end"),
    ]:
        damaged.write_text(text)
        p = run_keyhold("admin", "restore", "--data-dir", str(b_dir), "--from", str(damaged))
        assert p.returncode != 0 and why in p.stderr, (why, p.stderr)
    p = run_keyhold("admin", "restore", "--data-dir", str(b_dir), "--from", str(backup))
    assert p.returncode == 0, p.stderr
    _decrypts(b_dir, creds, ct)


def test_a_backup_of_the_single_document_format_restores(tmp_path):
    """Backups made before the streamed format (one JSON document) still restore."""
    a_dir, creds, ct, backup = _backed_up_dir(tmp_path)
    fields = {"Key": "keys", "Version": "versions", "Alias": "aliases", "Tag": "tags",
              "Grant": "grants", "Principal": "principals", "Usage": "usage",
              "CustomKeyStore": "custom_key_stores"}
    doc = {f: [] for f in fields.values()}
    for line in backup.read_text().splitlines()[1:-1]:
        (kind, row), = json.loads(line).items()
        doc[fields[kind]].append(row)
    old = tmp_path / "old.json"
    old.write_text(json.dumps(doc))
    b_dir = tmp_path / "b"
    _fresh_dir_for(a_dir, b_dir)
    p = run_keyhold("admin", "restore", "--data-dir", str(b_dir), "--from", str(old))
    assert p.returncode == 0, p.stderr
    _decrypts(b_dir, creds, ct)

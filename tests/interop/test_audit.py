"""The tamper-evident audit log through the CLI: verify, query, public key."""

import json
import pathlib

from conftest import Server, run_keyhold


def make_log(data_dir, fsync="interval"):
    creds = json.loads(run_keyhold("init", "--data-dir", str(data_dir), "--json").stdout)
    s = Server(["--data-dir", str(data_dir), "--insecure-http", "--audit-fsync", fsync])
    try:
        kms = s.client(creds["access_key_id"], creds["secret_access_key"])
        key = kms.create_key()["KeyMetadata"]["KeyId"]
        for _ in range(3):
            kms.encrypt(KeyId=key, Plaintext=b"x")
        try:
            kms.describe_key(KeyId="alias/missing")
        except kms.exceptions.NotFoundException:
            pass
    finally:
        s.stop()
    return key, creds


def segments(data_dir):
    return sorted((pathlib.Path(data_dir) / "audit").glob("segment-*.jsonl"))


def test_verify_an_intact_log_then_catch_an_edit(data_dir):
    key, _ = make_log(data_dir, fsync="always")
    p = run_keyhold("audit", "verify", "--data-dir", str(data_dir))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "the audit log is intact" in p.stdout
    pk = run_keyhold("audit", "public-key", "--data-dir", str(data_dir))
    assert pk.stdout.startswith("-----BEGIN PUBLIC KEY-----")
    seg = [s for s in segments(data_dir) if s.stat().st_size > 0][0]
    seg.write_text(seg.read_text().replace('"Encrypt"', '"Decrypt"', 1))
    p = run_keyhold("audit", "verify", "--data-dir", str(data_dir))
    assert p.returncode == 1
    assert "INVALID" in p.stdout and seg.name in p.stdout


def test_query_filters(data_dir):
    key, creds = make_log(data_dir)
    p = run_keyhold("audit", "query", "--data-dir", str(data_dir), "--event", "Encrypt", "--key", key)
    lines = [json.loads(l) for l in p.stdout.splitlines()]
    assert len(lines) == 3 and all(l["eventName"] == "Encrypt" for l in lines)
    p = run_keyhold("audit", "query", "--data-dir", str(data_dir), "--error", "NotFoundException",
                    "--principal", creds["arn"])
    assert len(p.stdout.splitlines()) == 1
    p = run_keyhold("audit", "query", "--data-dir", str(data_dir), "--from", "2999-01-01T00:00:00Z")
    assert p.stdout == ""
    p = run_keyhold("audit", "query", "--data-dir", str(data_dir), "--from", "yesterday")
    assert p.returncode != 0 and "RFC 3339" in p.stderr


def test_a_crash_is_a_recovery_not_tampering(data_dir):
    creds = json.loads(run_keyhold("init", "--data-dir", str(data_dir), "--json").stdout)
    args = ["--data-dir", str(data_dir), "--insecure-http", "--audit-fsync", "always"]
    s = Server(args)
    kms = s.client(creds["access_key_id"], creds["secret_access_key"])
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    for _ in range(3):
        kms.encrypt(KeyId=key, Plaintext=b"x")
    s.proc.kill()  # kill -9: no shutdown digest
    s.proc.wait()
    # Unsealed and no server: reported.
    p = run_keyhold("audit", "verify", "--data-dir", str(data_dir))
    assert p.returncode == 1, p.stdout
    # The next start seals what the crashed run wrote; while it runs its own new events are
    # pending, not tampering.
    s = Server(args)
    try:
        kms = s.client(creds["access_key_id"], creds["secret_access_key"])
        kms.encrypt(KeyId=key, Plaintext=b"y")
        p = run_keyhold("audit", "verify", "--data-dir", str(data_dir))
        assert p.returncode == 0, p.stdout
        assert "recovered" in p.stdout and "unclean stop" in p.stdout, p.stdout
        assert "pending" in p.stdout, p.stdout
    finally:
        s.stop()
    p = run_keyhold("audit", "verify", "--data-dir", str(data_dir))
    assert p.returncode == 0 and "the audit log is intact" in p.stdout, p.stdout
    assert "pending" not in p.stdout


def test_deleting_the_newest_segment_and_digest_is_caught(data_dir):
    make_log(data_dir, fsync="always")
    head = run_keyhold("audit", "head", "--data-dir", str(data_dir))
    assert head.returncode == 0, head.stderr
    h = json.loads(head.stdout)
    digests = sorted((pathlib.Path(data_dir) / "audit").glob("digest-*.json"))
    assert h["digest"] == int(digests[-1].stem.split("-")[1]) and h["node"] == "node-1"
    assert run_keyhold("audit", "verify", "--data-dir", str(data_dir)).returncode == 0
    # The newest segment holding events, and the newest digest, removed together.
    newest = [s for s in segments(data_dir) if s.stat().st_size > 0][-1]
    newest.unlink()
    digests[-1].unlink()
    p = run_keyhold("audit", "verify", "--data-dir", str(data_dir))
    assert p.returncode == 1, p.stdout
    assert "the store recorded" in p.stdout, p.stdout


def _events(data_dir, name):
    q = run_keyhold("audit", "query", "--data-dir", str(data_dir), "--event", name)
    return [json.loads(l) for l in q.stdout.splitlines()]


def test_administrative_actions_are_audited(data_dir):
    from conftest import wait_until
    json.loads(run_keyhold("init", "--data-dir", str(data_dir), "--json").stdout)
    # While no server runs: audited at the next start.
    p = run_keyhold("admin", "principal", "create", "--data-dir", str(data_dir),
                    "--account", "444455556666", "--name", "offline", "--json")
    assert p.returncode == 0, p.stderr
    offline = json.loads(p.stdout)
    s = Server(["--data-dir", str(data_dir), "--insecure-http", "--maintenance-secs", "1"])
    try:
        ev = _events(data_dir, "CreatePrincipal")
        assert [e["requestParameters"]["principal"] for e in ev] == [offline["arn"]]
        assert "secretAccessKey" not in json.dumps(ev) and offline["secret_access_key"] not in json.dumps(ev)
        # While a server runs: audited within a maintenance interval.
        p = run_keyhold("admin", "principal", "delete", "--data-dir", str(data_dir), offline["arn"])
        assert p.returncode == 0, p.stderr
        assert wait_until(lambda: len(_events(data_dir, "DeletePrincipal")) == 1, timeout=10)
        e = _events(data_dir, "DeletePrincipal")[0]
        assert e["sourceIPAddress"] == "keyhold-admin"
    finally:
        s.stop()
    assert run_keyhold("audit", "verify", "--data-dir", str(data_dir)).returncode == 0


def test_query_by_access_key_id_and_a_missing_path(data_dir, tmp_path):
    key, creds = make_log(data_dir)
    by_arn = run_keyhold("audit", "query", "--data-dir", str(data_dir), "--principal",
                         creds["arn"]).stdout.splitlines()
    by_akid = run_keyhold("audit", "query", "--data-dir", str(data_dir), "--principal",
                          creds["access_key_id"]).stdout.splitlines()
    assert by_arn and by_arn == by_akid
    p = run_keyhold("audit", "query", "--data-dir", str(tmp_path / "nowhere"))
    assert p.returncode != 0 and "nowhere" in p.stderr and "--data-dir" in p.stderr, p.stderr


def test_query_by_alias(data_dir):
    creds = json.loads(run_keyhold("init", "--data-dir", str(data_dir), "--json").stdout)
    s = Server(["--data-dir", str(data_dir), "--insecure-http", "--audit-fsync", "always"])
    try:
        kms = s.client(creds["access_key_id"], creds["secret_access_key"])
        key = kms.create_key()["KeyMetadata"]["KeyId"]
        kms.create_alias(AliasName="alias/queried", TargetKeyId=key)
        kms.encrypt(KeyId="alias/queried", Plaintext=b"x")
        kms.create_key()
    finally:
        s.stop()
    by_alias = run_keyhold("audit", "query", "--data-dir", str(data_dir), "--key", "alias/queried")
    by_id = run_keyhold("audit", "query", "--data-dir", str(data_dir), "--key", key)
    assert by_alias.returncode == 0, by_alias.stderr
    assert by_alias.stdout == by_id.stdout and "Encrypt" in by_alias.stdout
    missing = run_keyhold("audit", "query", "--data-dir", str(data_dir), "--key", "alias/none")
    assert missing.returncode != 0 and "no such alias" in missing.stderr

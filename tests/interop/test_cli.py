"""The AWS CLI against keyhold."""

import base64
import json
import os
import pathlib

from conftest import Server, run_keyhold


def test_cli_round_trip(dev_server, tmp_path):
    key = dev_server.cli("create-key", "--description", "cli")["KeyMetadata"]["KeyId"]
    dev_server.cli("create-alias", "--alias-name", "alias/cli", "--target-key-id", key)
    pt = tmp_path / "pt.bin"
    pt.write_bytes(b"from the cli")
    out = dev_server.cli(
        "encrypt", "--key-id", "alias/cli", "--plaintext", f"fileb://{pt}",
        "--encryption-context", "who=cli",
    )
    ct = tmp_path / "ct.bin"
    ct.write_bytes(base64.b64decode(out["CiphertextBlob"]))
    dec = dev_server.cli(
        "decrypt", "--ciphertext-blob", f"fileb://{ct}", "--encryption-context", "who=cli"
    )
    assert base64.b64decode(dec["Plaintext"]) == b"from the cli"
    bad = dev_server.cli(
        "decrypt", "--ciphertext-blob", f"fileb://{ct}", "--encryption-context", "who=other",
        check=False,
    )
    assert bad.returncode != 0 and "InvalidCiphertextException" in bad.stderr
    aliases = dev_server.cli("list-aliases")["Aliases"]
    assert any(a["AliasName"] == "alias/cli" for a in aliases)
    keys = dev_server.cli("list-keys")["Keys"]
    assert any(k["KeyId"] == key for k in keys)
    dk = dev_server.cli("generate-data-key", "--key-id", key, "--key-spec", "AES_128")
    assert len(base64.b64decode(dk["Plaintext"])) == 16
    tags = dev_server.cli("list-resource-tags", "--key-id", key)
    assert tags["Tags"] == []


def test_cli_errors(dev_server):
    p = dev_server.cli("describe-key", "--key-id", "alias/missing", check=False)
    assert p.returncode != 0 and "NotFoundException" in p.stderr
    p = dev_server.cli("generate-random", "--number-of-bytes", "2000", check=False)
    assert p.returncode != 0 and "ValidationException" in p.stderr


def test_init_serve_restart_keeps_state(data_dir, tmp_path):
    init = run_keyhold("init", "--data-dir", str(data_dir), "--json")
    assert init.returncode == 0, init.stderr
    creds = json.loads(init.stdout)
    assert set(creds) == {"access_key_id", "secret_access_key", "arn"}
    assert creds["arn"] == "arn:aws:iam::111122223333:user/admin"
    # The secret is stored wrapped, never in plaintext.
    for f in pathlib.Path(data_dir).rglob("*"):
        if f.is_file():
            assert creds["secret_access_key"].encode() not in f.read_bytes(), f
    assert oct(os.stat(data_dir / "root.key").st_mode & 0o777) == "0o600"

    s = Server(["--data-dir", str(data_dir)])
    try:
        c = s.client(creds["access_key_id"], creds["secret_access_key"])
        key = c.create_key(Description="durable")["KeyMetadata"]["KeyId"]
        c.create_alias(AliasName="alias/durable", TargetKeyId=key)
        c.tag_resource(KeyId=key, Tags=[{"TagKey": "k", "TagValue": "v"}])
        ct = c.encrypt(KeyId="alias/durable", Plaintext=b"survives")["CiphertextBlob"]
        # The dev credential does not exist on a non-dev server.
        try:
            s.client().list_keys()
            raise AssertionError("dev credential accepted")
        except c.exceptions.ClientError as e:
            assert e.response["Error"]["Code"] == "UnrecognizedClientException"
    finally:
        s.stop()

    s = Server(["--data-dir", str(data_dir)])
    try:
        c = s.client(creds["access_key_id"], creds["secret_access_key"])
        assert c.decrypt(CiphertextBlob=ct)["Plaintext"] == b"survives"
        assert c.describe_key(KeyId="alias/durable")["KeyMetadata"]["Description"] == "durable"
        assert c.list_resource_tags(KeyId=key)["Tags"] == [{"TagKey": "k", "TagValue": "v"}]
        # The AWS CLI with the printed credentials works too.
        out = s.cli("describe-key", "--key-id", key,
                    access_key=creds["access_key_id"], secret=creds["secret_access_key"])
        assert out["KeyMetadata"]["KeyId"] == key
    finally:
        s.stop()


def test_principals_managed_while_serving(data_dir):
    assert run_keyhold("init", "--data-dir", str(data_dir), "--json").returncode == 0
    s = Server(["--data-dir", str(data_dir)])
    try:
        made = run_keyhold(
            "admin", "principal", "create", "--data-dir", str(data_dir),
            "--account", "444455556666", "--name", "bob", "--json",
        )
        assert made.returncode == 0, made.stderr
        bob = json.loads(made.stdout)
        assert bob["arn"] == "arn:aws:iam::444455556666:user/bob"
        c = s.client(bob["access_key_id"], bob["secret_access_key"])
        md = c.create_key()["KeyMetadata"]
        assert md["AWSAccountId"] == "444455556666"
        listed = run_keyhold("admin", "principal", "list", "--data-dir", str(data_dir), "--json")
        arns = [p["arn"] for p in json.loads(listed.stdout)]
        assert "arn:aws:iam::444455556666:user/bob" in arns
        assert bob["secret_access_key"] not in listed.stdout
        gone = run_keyhold("admin", "principal", "delete", "--data-dir", str(data_dir), bob["arn"])
        assert gone.returncode == 0, gone.stderr
        # The credential cache lets a deleted principal live for at most a few seconds.
        from conftest import wait_until

        def refused():
            try:
                c.list_keys()
                return False
            except c.exceptions.ClientError as e:
                return e.response["Error"]["Code"] == "UnrecognizedClientException"

        assert wait_until(refused, timeout=10)
    finally:
        s.stop()


def test_serve_refuses_bad_setups(data_dir):
    p = run_keyhold("serve", "--data-dir", str(data_dir), "--listen", "127.0.0.1:0")
    assert p.returncode != 0 and "keyhold init" in p.stderr
    p = run_keyhold("serve", "--dev", "--listen", "0.0.0.0:0")
    assert p.returncode != 0 and "non-loopback" in p.stderr
    assert run_keyhold("init", "--data-dir", str(data_dir)).returncode == 0
    p = run_keyhold("init", "--data-dir", str(data_dir))
    assert p.returncode != 0 and "already initialised" in p.stderr


def test_listen_takes_a_host_name_and_names_the_flag_when_the_port_is_taken():
    import subprocess
    from conftest import keyhold_bin
    p = subprocess.Popen([keyhold_bin(), "serve", "--dev", "--listen", "localhost:0"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        assert "listening on http://127.0.0.1:" in line, line + p.stderr.read()
        port = line.split("http://127.0.0.1:")[1].split()[0]
        taken = run_keyhold("serve", "--dev", "--listen", f"127.0.0.1:{port}")
        assert taken.returncode != 0 and "--listen" in taken.stderr and "in use" in taken.stderr
    finally:
        p.terminate()
        p.wait(timeout=15)


def test_a_config_file_holds_serve_settings(tmp_path):
    cfg = tmp_path / "keyhold.toml"
    cfg.write_text('dev = true\nregion = "eu-west-1"\ndev-secret-access-key = "s3cr3t-value"\n'
                   'max-inflight = 77\n')
    # Flags win over the environment, which wins over the file.
    p = run_keyhold("config", "check", str(cfg), "--", "--region", "eu-central-1",
                    env={"KEYHOLD_MAX_INFLIGHT": "5"})
    assert p.returncode == 0, p.stderr
    assert "region = eu-central-1    # flag" in p.stdout
    assert "max-inflight = 5    # environment" in p.stdout
    assert "dev = true    # file" in p.stdout
    assert "s3cr3t-value" not in p.stdout and "(redacted)" in p.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text('lissen = "127.0.0.1:1"\n')
    p = run_keyhold("config", "check", str(bad))
    assert p.returncode != 0 and "lissen" in p.stderr
    # `serve --config FILE` serves with them: dev mode, the file's region and secret.
    s = Server(["--config", str(cfg)])
    try:
        assert "(region eu-west-1" in s.banner[0], s.banner
        import boto3
        kms = boto3.client("kms", region_name="eu-west-1", endpoint_url=s.endpoint,
                           aws_access_key_id="test", aws_secret_access_key="s3cr3t-value")
        assert kms.create_key()["KeyMetadata"]["Arn"].startswith("arn:aws:kms:eu-west-1:")
    finally:
        s.stop()


def test_logs_as_json_lines():
    import json as j
    import subprocess
    import time
    from conftest import keyhold_bin
    p = subprocess.Popen([keyhold_bin(), "serve", "--dev", "--listen", "127.0.0.1:0",
                          "--log-format", "json"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "listening on" in p.stdout.readline()
        time.sleep(0.3)
    finally:
        p.terminate()
        _, err = p.communicate(timeout=15)
    lines = [l for l in err.splitlines() if l.strip()]
    assert lines, "the server logged nothing"
    for line in lines:
        assert "level" in j.loads(line), line

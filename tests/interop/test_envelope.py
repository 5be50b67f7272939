"""`keyhold encrypt` / `keyhold decrypt` (the AWS Encryption SDK message format) against
keyhold, both ways with the AWS Encryption SDK for Python."""

import os
import shutil
import subprocess

import aws_encryption_sdk
import botocore.session
import pytest
from aws_encryption_sdk import CommitmentPolicy
from aws_encryption_sdk.identifiers import Algorithm

from conftest import keyhold_bin


@pytest.fixture
def env(dev_server, monkeypatch):
    values = {
        "AWS_ENDPOINT_URL": dev_server.endpoint,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    }
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_CA_BUNDLE", raising=False)
    return {**os.environ, **values}


def keyhold(env, *args, stdin=None):
    return subprocess.run([keyhold_bin(), *args], capture_output=True, env=env, input=stdin,
                          timeout=120)


def sdk():
    return aws_encryption_sdk.EncryptionSDKClient(
        commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT)


def provider(*arns):
    return aws_encryption_sdk.StrictAwsKmsMasterKeyProvider(
        key_ids=list(arns), botocore_session=botocore.session.Session())


def test_keyhold_messages_decrypt_in_the_python_sdk(env, kms, tmp_path):
    a = kms.create_key()["KeyMetadata"]["Arn"]
    kms.create_alias(AliasName="alias/backups", TargetKeyId=a)
    b = kms.create_key()["KeyMetadata"]["Arn"]
    plain = os.urandom(3 * 4096 + 17)
    (tmp_path / "in").write_bytes(plain)
    for signed in (False, True):
        out = tmp_path / f"out-{signed}"
        p = keyhold(env, "encrypt", "--key", "alias/backups", "--key", b, "--context",
                    "repo=r-123", str(tmp_path / "in"), "-o", str(out),
                    *(["--signed"] if signed else []))
        assert p.returncode == 0, p.stderr
        message = out.read_bytes()
        assert plain[:64] not in message
        # Either key alone opens it: the Python SDK with only the second key.
        pt, header = sdk().decrypt(source=message, key_provider=provider(b))
        assert pt == plain
        assert header.encryption_context["repo"] == "r-123"
        assert header.algorithm == (Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384
                                    if signed else Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY)
        # And keyhold itself, with the required context.
        back = tmp_path / f"back-{signed}"
        p = keyhold(env, "decrypt", "--context", "repo=r-123", str(out), "-o", str(back))
        assert p.returncode == 0, p.stderr
        assert back.read_bytes() == plain


def test_python_sdk_messages_decrypt_in_keyhold(env, kms, tmp_path):
    arn = kms.create_key()["KeyMetadata"]["Arn"]
    plain = b"made by the Python SDK " * 1000
    for alg in (Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY,
                Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384):
        ct, _ = sdk().encrypt(source=plain, key_provider=provider(arn), algorithm=alg,
                              encryption_context={"team": "web"})
        src = tmp_path / "msg"
        src.write_bytes(ct)
        # From a file to stdout, and from stdin to a file.
        p = keyhold(env, "decrypt", str(src), "-o", "-")
        assert p.returncode == 0 and p.stdout == plain, p.stderr
        out = tmp_path / "out"
        p = keyhold(env, "decrypt", "-", "-o", str(out), "--force", stdin=ct)
        assert p.returncode == 0 and out.read_bytes() == plain, p.stderr


def test_refusals_leave_no_plaintext(env, kms, tmp_path):
    arn = kms.create_key()["KeyMetadata"]["Arn"]
    src, msg, out = tmp_path / "in", tmp_path / "msg", tmp_path / "out"
    src.write_bytes(b"secret " * 5000)
    assert keyhold(env, "encrypt", "--key", arn, "--context", "repo=r-1", "--signed", str(src),
                   "-o", str(msg)).returncode == 0
    # No overwrite without --force.
    p = keyhold(env, "encrypt", "--key", arn, str(src), "-o", str(msg))
    assert p.returncode != 0 and b"--force" in p.stderr
    # A context the message does not hold.
    p = keyhold(env, "decrypt", "--context", "repo=r-2", str(msg), "-o", str(out))
    assert p.returncode != 0 and b"encryption context" in p.stderr
    assert not out.exists()
    # A damaged message (its signature's last bytes): refused, and no file appears.
    damaged = tmp_path / "damaged"
    data = msg.read_bytes()
    damaged.write_bytes(data[:-3] + bytes([data[-3] ^ 1]) + data[-2:])
    p = keyhold(env, "decrypt", str(damaged), "-o", str(out))
    assert p.returncode != 0 and b"does not authenticate" in p.stderr, p.stderr
    assert not out.exists()
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".keyhold-")]
    # Not a message at all.
    p = keyhold(env, "decrypt", str(src), "-o", str(out))
    assert p.returncode != 0 and b"not a valid message" in p.stderr
    # A disabled key cannot decrypt.
    kms.disable_key(KeyId=arn)
    p = keyhold(env, "decrypt", str(msg), "-o", str(out))
    assert p.returncode != 0 and b"DisabledException" in p.stderr, p.stderr
    assert not out.exists()
    # A key that does not exist cannot encrypt.
    p = keyhold(env, "encrypt", "--key", "alias/nope", str(src), "-o", str(tmp_path / "x"))
    assert p.returncode != 0 and b"NotFoundException" in p.stderr
    # Only the keys given are tried.
    kms.enable_key(KeyId=arn)
    other = kms.create_key()["KeyMetadata"]["Arn"]
    p = keyhold(env, "decrypt", "--key", other, str(msg), "-o", str(out))
    assert p.returncode != 0 and b"no KMS key you allowed" in p.stderr
    assert not out.exists()


def test_the_aws_encryption_cli_reads_and_writes_keyhold_messages(env, kms, tmp_path):
    cli = shutil.which("aws-encryption-cli")
    if not cli:
        pytest.skip("SKIP: aws-encryption-cli is not installed")
    arn = kms.create_key()["KeyMetadata"]["Arn"]
    plain = tmp_path / "plain"
    plain.write_bytes(os.urandom(10_000))
    common = ["--wrapping-keys", f"key={arn}", "--commitment-policy",
              "require-encrypt-require-decrypt", "-S"]
    # aws-encryption-cli encrypts, keyhold decrypts.
    theirs = tmp_path / "theirs.enc"
    p = subprocess.run([cli, "--encrypt", "-i", str(plain), "-o", str(theirs),
                        "--encryption-context", "repo=r-9", *common],
                       capture_output=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    out = tmp_path / "out1"
    p = keyhold(env, "decrypt", "--context", "repo=r-9", str(theirs), "-o", str(out))
    assert p.returncode == 0, p.stderr
    assert out.read_bytes() == plain.read_bytes()
    # keyhold encrypts, aws-encryption-cli decrypts.
    ours = tmp_path / "ours.enc"
    p = keyhold(env, "encrypt", "--key", arn, "--context", "repo=r-9", "--signed", str(plain),
                "-o", str(ours))
    assert p.returncode == 0, p.stderr
    out2 = tmp_path / "out2"
    p = subprocess.run([cli, "--decrypt", "-i", str(ours), "-o", str(out2),
                        "--encryption-context", "repo=r-9", *common],
                       capture_output=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    assert out2.read_bytes() == plain.read_bytes()


def test_the_js_sdk_reads_and_writes_keyhold_messages(env, kms, dev_server, tmp_path):
    js = os.path.join(os.path.dirname(__file__), "js")
    if not shutil.which("node") or not shutil.which("npm"):
        pytest.skip("SKIP: Node.js and npm are not installed")
    if not os.path.exists(os.path.join(js, "node_modules", "@aws-crypto", "client-node")):
        p = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=js, capture_output=True,
                           text=True, timeout=600)
        assert p.returncode == 0, p.stderr
    arn = kms.create_key()["KeyMetadata"]["Arn"]
    plain = tmp_path / "plain"
    plain.write_bytes(os.urandom(20_000))
    node_env = {**env, "KMS_ENDPOINT": dev_server.endpoint}

    def node(*args):
        p = subprocess.run(["node", "esdk.mjs", *args], cwd=js, capture_output=True, text=True,
                           env=node_env, timeout=120)
        assert p.returncode == 0 and p.stdout.strip() == "ok", p.stdout + p.stderr

    # The JS SDK encrypts (signed suite), keyhold decrypts.
    theirs, out = tmp_path / "theirs", tmp_path / "out"
    node("encrypt", arn, str(plain), str(theirs))
    p = keyhold(env, "decrypt", "--context", "repo=r-js", str(theirs), "-o", str(out))
    assert p.returncode == 0, p.stderr
    assert out.read_bytes() == plain.read_bytes()
    # keyhold encrypts, the JS SDK decrypts.
    ours, back = tmp_path / "ours", tmp_path / "back"
    p = keyhold(env, "encrypt", "--key", arn, "--context", "repo=r-js", str(plain), "-o", str(ours))
    assert p.returncode == 0, p.stderr
    node("decrypt", arn, str(ours), str(back))
    assert back.read_bytes() == plain.read_bytes()


def test_directories_and_metadata(env, kms, tmp_path):
    import json
    arn = kms.create_key()["KeyMetadata"]["Arn"]
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_bytes(b"alpha")
    (src / "sub" / "b.bin").write_bytes(os.urandom(5000))
    enc, dec, meta = tmp_path / "enc", tmp_path / "dec", tmp_path / "meta.jsonl"
    # A directory needs --recursive.
    p = keyhold(env, "encrypt", "--key", arn, str(src), "-o", str(enc))
    assert p.returncode != 0 and b"--recursive" in p.stderr
    p = keyhold(env, "encrypt", "--key", arn, "--context", "k=v", "--recursive", str(src),
                "-o", str(enc), "--metadata-output", str(meta))
    assert p.returncode == 0, p.stderr
    assert (enc / "a.txt.encrypted").exists() and (enc / "sub" / "b.bin.encrypted").exists()
    lines = [json.loads(l) for l in meta.read_text().splitlines()]
    assert len(lines) == 2 and all(l["mode"] == "encrypt" for l in lines)
    h = lines[0]["header"]
    assert h["algorithm"] == "AES_256_GCM_HKDF_SHA512_COMMIT_KEY"
    assert h["encryption_context"] == {"k": "v"} and h["frame_length"] == 4096
    assert h["encrypted_data_keys"][0]["key_provider"] == {"provider_id": "aws-kms",
                                                           "key_info": arn}
    p = keyhold(env, "decrypt", "-r", str(enc), "-o", str(dec), "--metadata-output", "-")
    assert p.returncode == 0, p.stderr
    assert (dec / "a.txt").read_bytes() == b"alpha"
    assert (dec / "sub" / "b.bin").read_bytes() == (src / "sub" / "b.bin").read_bytes()
    assert [json.loads(l)["mode"] for l in p.stdout.decode().splitlines()] == ["decrypt"] * 2
    # The Python SDK reads what was written.
    pt, _ = sdk().decrypt(source=(enc / "a.txt.encrypted").read_bytes(), key_provider=provider(arn))
    assert pt == b"alpha"


def test_an_unreachable_server_is_a_clear_error(env, tmp_path):
    src = tmp_path / "in"
    src.write_bytes(b"x")
    unreachable = {**env, "AWS_ENDPOINT_URL": "http://127.0.0.1:1"}
    p = keyhold(unreachable, "encrypt", "--key", "alias/any", str(src), "-o", str(tmp_path / "o"))
    assert p.returncode != 0 and b"cannot reach KMS" in p.stderr, p.stderr
    assert not (tmp_path / "o").exists()
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".keyhold-")]

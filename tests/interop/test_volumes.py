"""EBS-style volumes and the Clevis pin: keyhold's volume service driven by boto3's EC2 client
and the AWS CLI, `keyhold volume`, and LUKS2 images checked by Debian's cryptsetup and clevis
(no privileges needed: `cryptsetup open --test-passphrase` reads the header only)."""

import base64
import json
import os
import shutil
import subprocess

import pytest
from botocore.exceptions import ClientError

from conftest import REGION, aws_cli, err, keyhold_bin, run_keyhold, two_accounts


def cryptsetup():
    for p in (shutil.which("cryptsetup"), "/usr/sbin/cryptsetup", "/sbin/cryptsetup"):
        if p and os.path.exists(p):
            return p
    return None


@pytest.fixture(autouse=True)
def tools():
    if not cryptsetup():
        pytest.skip("SKIP: cryptsetup is not installed (the test command installs the Debian "
                    "package cryptsetup-bin when it runs as root)")


def ec2_client(server, access_key="test", secret="test"):
    return server.client(access_key, secret, service="ec2")


def aws_env(server, access_key="test", secret="test", **extra):
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": access_key,
        "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ENDPOINT_URL": server.endpoint,
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "AWS_PAGER": "",
        **extra,
    }
    env.pop("AWS_CA_BUNDLE", None)
    if server.ca:
        env["AWS_CA_BUNDLE"] = server.ca
    return env


def volume_cmd(server, *args, access_key="test", secret="test", input=None, check=True):
    p = subprocess.run(
        [keyhold_bin(), "volume", *args],
        capture_output=True,
        env=aws_env(server, access_key, secret),
        input=input,
    )
    if check:
        assert p.returncode == 0, p.stderr.decode()
    return p


def opens_with(image, passphrase):
    """`cryptsetup open --test-passphrase`: 0 when the passphrase opens a key slot."""
    return subprocess.run(
        [cryptsetup(), "open", "--test-passphrase", str(image), "--key-file", "-"],
        input=passphrase,
        capture_output=True,
    ).returncode


def image_of(data_dir, volume_id):
    return data_dir / "volumes" / "images" / f"{volume_id}.img"


@pytest.fixture
def accounts(data_dir):
    """`keyhold init` + `serve` (TLS), with a principal in a second account."""
    with two_accounts(data_dir) as s:
        yield s


def test_boto3_makes_an_encrypted_volume_under_aws_ebs_bound_to_its_id(dev):
    ec2 = ec2_client(dev)
    kms = dev.client()
    v = ec2.create_volume(Size=1, AvailabilityZone="us-east-1a", Encrypted=True, VolumeType="gp3")
    assert v["State"] == "available" and v["Encrypted"] and v["Size"] == 1
    # The account's AWS managed key, made on first use.
    ebs = kms.describe_key(KeyId="alias/aws/ebs")["KeyMetadata"]
    assert v["KmsKeyId"] == ebs["Arn"] and ebs["KeyManager"] == "AWS"
    image = image_of(dev.data_dir, v["VolumeId"])
    assert image.stat().st_size == 1 << 30
    dump = subprocess.run([cryptsetup(), "luksDump", str(image)], capture_output=True, text=True)
    assert "Version:       \t2" in dump.stdout and v["VolumeId"] in dump.stdout
    # The user cannot use aws/ebs directly: only through the volume service.
    with pytest.raises(ClientError) as e:
        kms.generate_data_key(KeyId="alias/aws/ebs", KeySpec="AES_256")
    assert err(e) == "AccessDeniedException"
    got = ec2.describe_volumes(VolumeIds=[v["VolumeId"]])["Volumes"]
    assert [x["VolumeId"] for x in got] == [v["VolumeId"]] and got[0]["Attachments"] == []
    # Attach, then the passphrase the volume service hands to this host opens the image.
    a = ec2.attach_volume(VolumeId=v["VolumeId"], InstanceId="i-0123456789abcdef0",
                          Device="/dev/sdf")
    assert a["State"] == "attached"
    got = ec2.describe_volumes(Filters=[{"Name": "status", "Values": ["in-use"]}])["Volumes"]
    assert got[0]["Attachments"][0]["InstanceId"] == "i-0123456789abcdef0"
    assert ec2.describe_volumes(Filters=[{"Name": "status", "Values": ["available"]}])[
        "Volumes"] == []


def test_keyhold_volume_attach_unlocks_only_while_the_key_is_enabled(dev):
    kms = dev.client()
    key = kms.create_key(Description="volumes")["KeyMetadata"]["Arn"]
    vol = volume_cmd(dev, "create", "--size", "1", "--key", key).stdout.decode().strip()
    assert vol.startswith("vol-")
    image = image_of(dev.data_dir, vol)
    p = volume_cmd(dev, "attach", vol, "--key-file", "-")
    assert opens_with(image, p.stdout) == 0
    assert opens_with(image, b"not the passphrase") != 0
    listed = volume_cmd(dev, "list").stdout.decode()
    assert vol in listed and "in-use" in listed and key in listed
    # The passphrase is the data key under the volume's id: `unlock` gives it again.
    again = volume_cmd(dev, "unlock", vol).stdout
    assert again == p.stdout
    volume_cmd(dev, "detach", vol)
    kms.disable_key(KeyId=key)
    p = volume_cmd(dev, "attach", vol, "--key-file", "-", check=False)
    assert p.returncode != 0 and p.stdout == b""
    assert b"InvalidKMSKey.InvalidState" in p.stderr, p.stderr
    kms.enable_key(KeyId=key)
    p = volume_cmd(dev, "attach", vol, "--key-file", "-")
    assert opens_with(image, p.stdout) == 0
    # An attached volume cannot be deleted; a detached one can, with its image.
    p = volume_cmd(dev, "delete", vol, check=False)
    assert p.returncode != 0 and b"VolumeInUse" in p.stderr
    volume_cmd(dev, "detach", vol)
    volume_cmd(dev, "delete", vol)
    assert not image.exists()
    p = volume_cmd(dev, "attach", vol, check=False)
    assert p.returncode != 0 and b"InvalidVolume.NotFound" in p.stderr


def test_attach_without_device_mapper_prints_the_unlock(dev):
    vol = volume_cmd(dev, "create", "--size", "1", "--encrypted").stdout.decode().strip()
    p = volume_cmd(dev, "attach", vol)
    lines = dict(
        line.split(":", 1) for line in p.stdout.decode().splitlines() if ":" in line
    )
    if "passphrase" not in lines:
        pytest.skip("SKIP: this machine has device-mapper; the volume was opened")
    assert lines["volume"].strip() == vol
    assert opens_with(lines["image"].strip(), lines["passphrase"].strip().encode()) == 0


def test_snapshots_stay_encrypted_under_the_same_key(dev):
    kms = dev.client()
    key = kms.create_key()["KeyMetadata"]["Arn"]
    vol = volume_cmd(dev, "create", "--size", "1", "--key", key).stdout.decode().strip()
    snap = volume_cmd(dev, "snapshot", vol, "--description", "nightly").stdout.decode().strip()
    ec2 = ec2_client(dev)
    s = ec2.describe_snapshots(SnapshotIds=[snap])["Snapshots"][0]
    assert s["Encrypted"] and s["KmsKeyId"] == key and s["VolumeId"] == vol
    assert s["Description"] == "nightly" and s["State"] == "completed"
    # A volume made from it is encrypted under the same key (without asking), and bigger.
    new = ec2.create_volume(SnapshotId=snap, AvailabilityZone="us-east-1b", Size=2)
    assert new["Encrypted"] and new["KmsKeyId"] == key and new["SnapshotId"] == snap
    image = image_of(dev.data_dir, new["VolumeId"])
    assert image.stat().st_size == 2 << 30
    p = volume_cmd(dev, "attach", new["VolumeId"], "--key-file", "-")
    assert opens_with(image, p.stdout) == 0
    with pytest.raises(ClientError) as e:
        ec2.create_volume(SnapshotId=snap, AvailabilityZone="us-east-1a", Size=0)
    assert err(e) == "InvalidParameterValue"
    ec2.delete_snapshot(SnapshotId=snap)
    with pytest.raises(ClientError) as e:
        ec2.describe_snapshots(SnapshotIds=[snap])
    assert err(e) == "InvalidSnapshot.NotFound"


def test_default_encryption_encrypts_every_new_volume(dev):
    ec2 = ec2_client(dev)
    assert not ec2.get_ebs_encryption_by_default()["EbsEncryptionByDefault"]
    plain = ec2.create_volume(Size=1, AvailabilityZone="us-east-1a")
    assert not plain["Encrypted"] and "KmsKeyId" not in plain
    assert ec2.enable_ebs_encryption_by_default()["EbsEncryptionByDefault"]
    assert ec2.get_ebs_default_kms_key_id()["KmsKeyId"] == "alias/aws/ebs"
    v = ec2.create_volume(Size=1, AvailabilityZone="us-east-1a", Encrypted=False)
    assert v["Encrypted"]
    # Another default key.
    key = dev.client().create_key()["KeyMetadata"]["Arn"]
    assert ec2.modify_ebs_default_kms_key_id(KmsKeyId=key)["KmsKeyId"] == key
    v = ec2.create_volume(Size=1, AvailabilityZone="us-east-1a")
    assert v["Encrypted"] and v["KmsKeyId"] == key
    out = volume_cmd(dev, "default-encryption").stdout.decode()
    assert "encryption by default: on" in out and key in out
    assert ec2.reset_ebs_default_kms_key_id()["KmsKeyId"] == "alias/aws/ebs"
    out = volume_cmd(dev, "default-encryption", "--disable").stdout.decode()
    assert "encryption by default: off" in out
    # An unencrypted snapshot cannot become an encrypted volume here: a clear refusal.
    snap = ec2.create_snapshot(VolumeId=plain["VolumeId"])["SnapshotId"]
    with pytest.raises(ClientError) as e:
        ec2.create_volume(SnapshotId=snap, AvailabilityZone="us-east-1a", Encrypted=True)
    assert err(e) == "UnsupportedOperation"


def test_bad_requests_get_ec2s_errors(dev):
    ec2 = ec2_client(dev)
    kms = dev.client()

    def code(**kw):
        with pytest.raises(ClientError) as e:
            ec2.create_volume(**kw)
        return err(e)

    assert code(Size=1, AvailabilityZone="eu-west-1a") == "InvalidZone.NotFound"
    assert code(AvailabilityZone="us-east-1a") == "MissingParameter"
    assert code(Size=0, AvailabilityZone="us-east-1a") == "InvalidParameterValue"
    assert code(Size=20000, AvailabilityZone="us-east-1a") == "InvalidParameterValue"
    assert code(Size=1, AvailabilityZone="us-east-1a", VolumeType="floppy") == \
        "InvalidParameterValue"
    assert code(Size=1, AvailabilityZone="us-east-1a", KmsKeyId="alias/x") == \
        "InvalidParameterDependency"
    assert code(Size=1, AvailabilityZone="us-east-1a", Encrypted=True,
                KmsKeyId="alias/missing") == "InvalidKMSKey.NotFound"
    rsa = kms.create_key(KeySpec="RSA_2048", KeyUsage="ENCRYPT_DECRYPT")["KeyMetadata"]["Arn"]
    assert code(Size=1, AvailabilityZone="us-east-1a", Encrypted=True, KmsKeyId=rsa) == \
        "InvalidParameterValue"
    off = kms.create_key()["KeyMetadata"]["Arn"]
    kms.disable_key(KeyId=off)
    assert code(Size=1, AvailabilityZone="us-east-1a", Encrypted=True, KmsKeyId=off) == \
        "InvalidKMSKey.InvalidState"
    assert code(Size=1, AvailabilityZone="us-east-1a", SnapshotId="snap-0123456789abcdef0") == \
        "InvalidSnapshot.NotFound"
    assert code(Size=1, AvailabilityZone="us-east-1a", DryRun=True) == "DryRunOperation"
    # No volume was made by any of these.
    assert ec2.describe_volumes()["Volumes"] == []
    assert list((dev.data_dir / "volumes" / "images").iterdir()) == []
    for call, kw, expected in [
        (ec2.describe_volumes, {"VolumeIds": ["vol-0123456789abcdef0"]}, "InvalidVolume.NotFound"),
        (ec2.describe_volumes, {"VolumeIds": ["../../../etc/passwd"]}, "InvalidVolume.NotFound"),
        (ec2.delete_volume, {"VolumeId": "vol-0123456789abcdef0"}, "InvalidVolume.NotFound"),
        (ec2.attach_volume, {"VolumeId": "vol-0123456789abcdef0", "InstanceId": "host",
                             "Device": "/dev/sdf"}, "InvalidInstanceID.Malformed"),
    ]:
        with pytest.raises(ClientError) as e:
            call(**kw)
        assert err(e) == expected, (call, kw)
    v = ec2.create_volume(Size=1, AvailabilityZone="us-east-1a")["VolumeId"]
    with pytest.raises(ClientError) as e:
        ec2.detach_volume(VolumeId=v)
    assert err(e) == "IncorrectState"
    ec2.attach_volume(VolumeId=v, InstanceId="i-0123456789abcdef0", Device="/dev/sdf")
    with pytest.raises(ClientError) as e:
        ec2.attach_volume(VolumeId=v, InstanceId="i-0123456789abcdef0", Device="/dev/sdg")
    assert err(e) == "VolumeInUse"
    with pytest.raises(ClientError) as e:
        ec2.detach_volume(VolumeId=v, InstanceId="i-00000000000000000")
    assert err(e) == "InvalidAttachment.NotFound"
    # A request signed with a wrong secret, and an action that does not exist.
    with pytest.raises(ClientError) as e:
        ec2_client(dev, secret="wrong").describe_volumes()
    assert err(e) == "AuthFailure"
    with pytest.raises(ClientError) as e:
        ec2.describe_instances()
    assert err(e) == "InvalidAction"


def test_the_aws_cli_and_cross_account_isolation_over_tls(accounts):
    s = accounts
    env = aws_env(s, *s.admin)
    p = subprocess.run(
        [aws_cli(), "ec2", "create-volume", "--size", "1", "--availability-zone", "us-east-1a",
         "--encrypted", "--output", "json"],
        capture_output=True, text=True, env=env,
    )
    assert p.returncode == 0, p.stderr
    vol = json.loads(p.stdout)
    assert vol["Encrypted"] and vol["KmsKeyId"].startswith("arn:aws:kms:us-east-1:")
    owner = ec2_client(s, *s.admin)
    other = ec2_client(s, *s.other)
    assert other.describe_volumes()["Volumes"] == []
    with pytest.raises(ClientError) as e:
        other.describe_volumes(VolumeIds=[vol["VolumeId"]])
    assert err(e) == "InvalidVolume.NotFound"
    with pytest.raises(ClientError) as e:
        other.attach_volume(VolumeId=vol["VolumeId"], InstanceId="i-0123456789abcdef0",
                            Device="/dev/sdf")
    assert err(e) == "InvalidVolume.NotFound"
    # Each account has its own aws/ebs key and its own defaults.
    mine = other.create_volume(Size=1, AvailabilityZone="us-east-1a", Encrypted=True)
    assert ":444455556666:key/" in mine["KmsKeyId"]
    owner.enable_ebs_encryption_by_default()
    assert not other.get_ebs_encryption_by_default()["EbsEncryptionByDefault"]
    # keyhold volume over HTTPS with the server's CA.
    image = image_of(s.data_dir, vol["VolumeId"])
    p = volume_cmd(s, "attach", vol["VolumeId"], "--key-file", "-",
                   access_key=s.admin[0], secret=s.admin[1])
    assert opens_with(image, p.stdout) == 0


def test_a_key_policy_that_denies_the_caller_refuses_the_volume(accounts):
    s = accounts
    kms = s.client(*s.admin)
    ec2 = ec2_client(s, *s.admin)
    key = kms.create_key()["KeyMetadata"]["Arn"]
    v = ec2.create_volume(Size=1, AvailabilityZone="us-east-1a", Encrypted=True, KmsKeyId=key)
    policy = json.loads(kms.get_key_policy(KeyId=key, PolicyName="default")["Policy"])
    policy["Statement"].append({
        "Sid": "no-ec2", "Effect": "Deny", "Principal": {"AWS": "*"},
        "Action": "kms:Decrypt", "Resource": "*",
        "Condition": {"StringEquals": {"kms:ViaService": "ec2.us-east-1.amazonaws.com"}},
    })
    kms.put_key_policy(KeyId=key, PolicyName="default", Policy=json.dumps(policy))
    with pytest.raises(ClientError) as e:
        ec2.attach_volume(VolumeId=v["VolumeId"], InstanceId="i-0123456789abcdef0",
                          Device="/dev/sdf")
    assert err(e) == "UnauthorizedOperation"
    assert ec2.describe_volumes(VolumeIds=[v["VolumeId"]])["Volumes"][0]["State"] == "available"
    # The audit trail has the refused Decrypt, made by the caller through EC2.
    events = []
    for f in sorted((s.data_dir / "audit").glob("*.jsonl")):
        events += [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
    denied = [e for e in events if e.get("eventName") == "Decrypt" and e.get("errorCode")]
    assert denied and denied[-1]["userIdentity"].get("invokedBy") == "ec2.amazonaws.com"
    attach = [e for e in events if e.get("eventName") == "AttachVolume"]
    assert attach[-1]["eventSource"] == "ec2.amazonaws.com"
    assert attach[-1]["errorCode"] == "UnauthorizedOperation"


# --- The Clevis pin -----------------------------------------------------------------------

@pytest.fixture
def pin(tmp_path, dev):
    for tool in ("clevis", "jose"):
        if not shutil.which(tool):
            pytest.skip(f"SKIP: {tool} is not installed (the test command installs the Debian "
                        "packages clevis, clevis-luks and jose when it runs as root)")
    bindir = tmp_path / "bin"
    run_keyhold("clevis", "install", "--dir", str(bindir))
    env = aws_env(dev)
    env["PATH"] = f"{bindir}:{env['PATH']}:/usr/sbin:/sbin"
    return env


def luks_image(tmp_path, name="disk.img"):
    image = tmp_path / name
    with open(image, "wb") as f:
        f.truncate(32 << 20)
    keyfile = tmp_path / f"{name}.key"
    keyfile.write_bytes(b"first passphrase")
    subprocess.run(
        [cryptsetup(), "luksFormat", "--type", "luks2", "--batch-mode", "--pbkdf", "pbkdf2",
         "--pbkdf-force-iterations", "1000", str(image), "--key-file", str(keyfile)],
        check=True, capture_output=True,
    )
    return image, keyfile


def clevis(env, *args, input=None):
    return subprocess.run(["clevis", *args], capture_output=True, env=env, input=input)


def test_a_luks2_volume_bound_with_the_keyhold_pin_unlocks_only_while_its_key_is_enabled(
    tmp_path, dev, pin
):
    kms = dev.client()
    key = kms.create_key(Description="disk")["KeyMetadata"]["Arn"]
    image, keyfile = luks_image(tmp_path)
    config = json.dumps({"key": key, "context": {"disk": "d1"}})
    p = clevis(pin, "luks", "bind", "-y", "-d", str(image), "-k", str(keyfile), "keyhold", config)
    assert p.returncode == 0, p.stderr
    p = clevis(pin, "luks", "pass", "-d", str(image), "-s", "1")
    assert p.returncode == 0, p.stderr
    assert opens_with(image, p.stdout) == 0
    # An independent JWE implementation (jose) opens the token with the data key KMS gives
    # its owner for the header's encrypted data key and context.
    token = json.loads(subprocess.run(
        [cryptsetup(), "token", "export", "--token-id", "0", str(image)],
        capture_output=True, check=True,
    ).stdout)
    jwe = token["jwe"]
    header = json.loads(base64.urlsafe_b64decode(jwe["protected"] + "=="))
    binding = header["clevis"]["keyhold"]
    assert header["clevis"]["pin"] == "keyhold" and binding["key"] == key
    assert binding["context"] == {"disk": "d1"}
    data_key = kms.decrypt(
        CiphertextBlob=base64.b64decode(binding["blob"]), EncryptionContext={"disk": "d1"}
    )["Plaintext"]
    jwk = json.dumps({"kty": "oct", "k": base64.urlsafe_b64encode(data_key).decode().rstrip("=")})
    dec = subprocess.run(["jose", "jwe", "dec", "-i-", "-k", "-"], capture_output=True,
                         input=(json.dumps(jwe)).encode(), env={**pin, "JWK": jwk})
    if dec.returncode != 0:
        (tmp_path / "jwk.json").write_text(jwk)
        (tmp_path / "jwe.json").write_text(json.dumps(jwe))
        dec = subprocess.run(["jose", "jwe", "dec", "-i", str(tmp_path / "jwe.json"),
                              "-k", str(tmp_path / "jwk.json")], capture_output=True)
    assert dec.returncode == 0, dec.stderr
    assert dec.stdout == p.stdout
    # Disabled: the unlock is refused, and says why.
    kms.disable_key(KeyId=key)
    p = clevis(pin, "luks", "pass", "-d", str(image), "-s", "1")
    assert p.returncode != 0 and p.stdout == b""
    assert b"DisabledException" in p.stderr, p.stderr
    kms.enable_key(KeyId=key)
    p = clevis(pin, "luks", "pass", "-d", str(image), "-s", "1")
    assert opens_with(image, p.stdout) == 0
    # A second bind of the same slot is refused, and the first binding still works.
    p = clevis(pin, "luks", "bind", "-y", "-d", str(image), "-k", str(keyfile), "-s", "1",
               "keyhold", config)
    assert p.returncode != 0
    p = clevis(pin, "luks", "pass", "-d", str(image), "-s", "1")
    assert opens_with(image, p.stdout) == 0
    # The unlocks are in the audit trail as Decrypts by the caller.
    events = []
    for f in sorted((dev.data_dir / "audit").glob("*.jsonl")):
        events += [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
    decrypts = [e for e in events if e.get("eventName") == "Decrypt"
                and e.get("requestParameters", {}).get("encryptionContext") == {"disk": "d1"}]
    assert len(decrypts) >= 3
    assert any(e.get("errorCode") == "DisabledException" for e in decrypts)


def test_the_pin_refuses_bad_input(tmp_path, dev, pin):
    kms = dev.client()
    key = kms.create_key()["KeyMetadata"]["Arn"]
    enc = ["clevis", "encrypt", "keyhold"]

    def run(args, input=b"secret", env=pin):
        return subprocess.run(args, capture_output=True, env=env, input=input)

    # A disk without a keyhold binding.
    image, _ = luks_image(tmp_path, "plain.img")
    p = clevis(pin, "luks", "pass", "-d", str(image), "-s", "0")
    assert p.returncode != 0 and p.stdout == b""
    # Malformed configurations.
    for config in ["not json", "{}", json.dumps({"key": key, "unknown": 1}),
                   json.dumps({"key": ""})]:
        p = run(enc + [config])
        assert p.returncode != 0 and p.stdout == b"", config
    # A key the caller may not use, or that does not exist.
    p = run(enc + [json.dumps({"key": "alias/does-not-exist"})])
    assert p.returncode != 0 and b"NotFoundException" in p.stderr
    # A good JWE round-trips through `clevis decrypt`; altered or foreign ones do not.
    jwe = run(enc + [json.dumps({"key": key})]).stdout
    assert run(["clevis", "decrypt"], input=jwe).stdout == b"secret"
    parts = jwe.decode().split(".")
    body = bytearray(base64.urlsafe_b64decode(parts[3] + "=="))
    body[0] ^= 1
    parts[3] = base64.urlsafe_b64encode(bytes(body)).decode().rstrip("=")
    p = run(["clevis", "decrypt"], input=".".join(parts).encode())
    assert p.returncode != 0 and p.stdout == b""
    p = run([keyhold_bin(), "clevis", "decrypt"], input=b"not a jwe")
    assert p.returncode != 0 and b"not a compact JWE" in p.stderr
    null_jwe = run(["clevis", "encrypt", "null", "{}"]).stdout
    p = run([keyhold_bin(), "clevis", "decrypt"], input=null_jwe)
    assert p.returncode != 0 and b"pin mismatch" in p.stderr
    # An unreachable server: a clear error, no output.
    p = run(["clevis", "decrypt"], input=jwe,
            env={**pin, "AWS_ENDPOINT_URL": "http://127.0.0.1:9"})
    assert p.returncode != 0 and p.stdout == b""
    assert b"cannot reach KMS" in p.stderr, p.stderr


def test_modify_volume_grows_the_image_and_keeps_it_openable(dev):
    ec2 = ec2_client(dev)
    v = ec2.create_volume(Size=1, AvailabilityZone="us-east-1a", Encrypted=True)["VolumeId"]
    m = ec2.modify_volume(VolumeId=v, Size=4, VolumeType="io2")["VolumeModification"]
    assert (m["OriginalSize"], m["TargetSize"], m["TargetVolumeType"]) == (1, 4, "io2")
    assert m["ModificationState"] == "completed"
    mods = ec2.describe_volumes_modifications(VolumeIds=[v])["VolumesModifications"]
    assert [x["TargetSize"] for x in mods] == [4]
    image = image_of(dev.data_dir, v)
    assert image.stat().st_size == 4 << 30
    p = volume_cmd(dev, "attach", v, "--key-file", "-")
    assert opens_with(image, p.stdout) == 0
    for kw in [{"Size": 3}, {"Size": 4, "VolumeType": "io2"}, {"VolumeType": "floppy"},
               {"Size": 100000}]:
        with pytest.raises(ClientError) as e:
            ec2.modify_volume(VolumeId=v, **kw)
        assert err(e) == "InvalidParameterValue", kw
    with pytest.raises(ClientError) as e:
        ec2.modify_volume(VolumeId="vol-0123456789abcdef0", Size=5)
    assert err(e) == "InvalidVolume.NotFound"


def test_tags_on_volumes_and_snapshots(dev):
    ec2 = ec2_client(dev)
    v = ec2.create_volume(
        Size=1, AvailabilityZone="us-east-1a",
        TagSpecifications=[{"ResourceType": "volume", "Tags": [{"Key": "Name", "Value": "db"}]}],
    )
    assert v["Tags"] == [{"Key": "Name", "Value": "db"}]
    other = ec2.create_volume(Size=1, AvailabilityZone="us-east-1a")["VolumeId"]
    got = ec2.describe_volumes(Filters=[{"Name": "tag:Name", "Values": ["db"]}])["Volumes"]
    assert [x["VolumeId"] for x in got] == [v["VolumeId"]]
    got = ec2.describe_volumes(Filters=[{"Name": "tag-key", "Values": ["Name"]}])["Volumes"]
    assert [x["VolumeId"] for x in got] == [v["VolumeId"]]
    snap = ec2.create_snapshot(
        VolumeId=v["VolumeId"],
        TagSpecifications=[{"ResourceType": "snapshot", "Tags": [{"Key": "k", "Value": "1"}]}],
    )["SnapshotId"]
    ec2.create_tags(Resources=[other, snap], Tags=[{"Key": "team", "Value": "ops"}])
    got = ec2.describe_snapshots(SnapshotIds=[snap])["Snapshots"][0]
    assert {t["Key"]: t["Value"] for t in got["Tags"]} == {"k": "1", "team": "ops"}
    ec2.delete_tags(Resources=[snap], Tags=[{"Key": "k", "Value": "not-its-value"}])
    ec2.delete_tags(Resources=[snap], Tags=[{"Key": "team"}])
    got = ec2.describe_snapshots(SnapshotIds=[snap])["Snapshots"][0]
    assert {t["Key"]: t["Value"] for t in got["Tags"]} == {"k": "1"}
    # An unknown resource among them: an error, and nothing tagged.
    with pytest.raises(ClientError) as e:
        ec2.create_tags(Resources=[other, "vol-0123456789abcdef0"], Tags=[{"Key": "x", "Value": "y"}])
    assert err(e) == "InvalidVolume.NotFound"
    got = ec2.describe_volumes(VolumeIds=[other])["Volumes"][0]
    assert {t["Key"] for t in got["Tags"]} == {"team"}
    for tags in [[{"Key": "aws:reserved", "Value": "x"}], [{"Key": "", "Value": "x"}]]:
        with pytest.raises(ClientError) as e:
            ec2.create_tags(Resources=[other], Tags=tags)
        assert err(e) == "InvalidParameterValue"
    with pytest.raises(ClientError) as e:
        ec2.create_volume(Size=1, AvailabilityZone="us-east-1a", TagSpecifications=[
            {"ResourceType": "instance", "Tags": [{"Key": "a", "Value": "b"}]}])
    assert err(e) == "InvalidParameterValue"

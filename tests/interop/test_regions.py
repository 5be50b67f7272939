"""Several Regions in one deployment, and multi-Region keys, driven by boto3 clients for two
Regions, the AWS CLI and the Terraform provider's aws_kms_replica_key: each Region behaves as
its own AWS Region, and a multi-Region key's ciphertext opens in every Region of its set."""

import base64
import json
import shutil

import pytest
from botocore.exceptions import ClientError

from conftest import (Server, audit_events, err, init_data_dir, run_keyhold, two_accounts,
                      two_node_dirs, wait_until)

US, EU = "us-east-1", "eu-west-1"


@pytest.fixture
def two_regions(data_dir):
    """`keyhold init` + `serve` over TLS for two Regions, with a principal in a second
    account."""
    with two_accounts(data_dir, "--regions", f"{US},{EU}") as s:
        yield s


def test_keys_aliases_and_managed_keys_are_per_region(dev):
    us, eu = dev.client(region=US), dev.client(region=EU)
    a = us.create_key(Description="in us")["KeyMetadata"]
    assert a["Arn"].startswith(f"arn:aws:kms:{US}:")
    assert a["MultiRegion"] is False and "MultiRegionConfiguration" not in a
    with pytest.raises(ClientError) as e:
        eu.describe_key(KeyId=a["KeyId"])
    assert err(e) == "NotFoundException"
    with pytest.raises(ClientError) as e:
        eu.encrypt(KeyId=a["Arn"], Plaintext=b"x")
    assert err(e) == "NotFoundException"
    b = eu.create_key(Description="in eu")["KeyMetadata"]
    assert b["Arn"].startswith(f"arn:aws:kms:{EU}:")
    assert [k["KeyId"] for k in eu.list_keys()["Keys"]] == [b["KeyId"]]
    assert b["KeyId"] not in [k["KeyId"] for k in us.list_keys()["Keys"]]
    # One alias name in each Region, each naming its own Region's key.
    us.create_alias(AliasName="alias/app", TargetKeyId=a["KeyId"])
    eu.create_alias(AliasName="alias/app", TargetKeyId=b["KeyId"])
    assert us.describe_key(KeyId="alias/app")["KeyMetadata"]["KeyId"] == a["KeyId"]
    assert eu.describe_key(KeyId="alias/app")["KeyMetadata"]["KeyId"] == b["KeyId"]
    [alias] = [x for x in eu.list_aliases()["Aliases"] if x["AliasName"] == "alias/app"]
    assert alias["AliasArn"] == f"arn:aws:kms:{EU}:{b['AWSAccountId']}:alias/app"
    # A ciphertext of one Region's key does not open in another.
    blob = us.encrypt(KeyId="alias/app", Plaintext=b"secret")["CiphertextBlob"]
    with pytest.raises(ClientError) as e:
        eu.decrypt(CiphertextBlob=blob)
    assert err(e) == "InvalidCiphertextException"
    # AWS managed keys are per account and Region.
    m_us = us.describe_key(KeyId="alias/aws/ebs")["KeyMetadata"]
    m_eu = eu.describe_key(KeyId="alias/aws/ebs")["KeyMetadata"]
    assert m_us["KeyId"] != m_eu["KeyId"]
    assert m_eu["Arn"].startswith(f"arn:aws:kms:{EU}:")
    assert "ec2.eu-west-1.amazonaws.com" in eu.get_key_policy(
        KeyId=m_eu["KeyId"], PolicyName="default")["Policy"]
    # --dev answers every commercial Region name.
    for region in ("ap-southeast-2", "sa-east-1", "eu-north-1"):
        assert dev.client(region=region).list_keys()["Keys"] == []
    # Each event names the Region it happened in.
    events = audit_events(dev.data_dir)
    made = {ev["awsRegion"] for ev in events if ev["eventName"] == "CreateKey"}
    assert made == {US, EU}


def test_a_region_not_served_is_refused(two_regions):
    s = two_regions
    bad = s.client(*s.admin, region="ap-south-1")
    with pytest.raises(ClientError) as e:
        bad.list_keys()
    assert err(e) == "InvalidSignatureException"
    assert "ap-south-1" in e.value.response["Error"]["Message"]
    # The two Regions served keep each account's keys apart as well.
    us_admin, eu_other = s.client(*s.admin, region=US), s.client(*s.other, region=EU)
    k = us_admin.create_key()["KeyMetadata"]
    assert eu_other.list_keys()["Keys"] == []
    with pytest.raises(ClientError) as e:
        eu_other.describe_key(KeyId=k["Arn"])
    assert err(e) == "NotFoundException"


def test_a_multi_region_key_across_two_regions(two_regions):
    s = two_regions
    us, eu = s.client(*s.admin, region=US), s.client(*s.admin, region=EU)
    md = us.create_key(MultiRegion=True, Description="primary")["KeyMetadata"]
    kid = md["KeyId"]
    assert kid.startswith("mrk-") and len(kid) == 36
    assert md["MultiRegion"] is True
    cfg = md["MultiRegionConfiguration"]
    assert cfg["MultiRegionKeyType"] == "PRIMARY"
    assert cfg["PrimaryKey"] == {"Arn": md["Arn"], "Region": US}
    assert cfg["ReplicaKeys"] == []
    before = us.encrypt(KeyId=kid, Plaintext=b"made in us",
                        EncryptionContext={"app": "x"})["CiphertextBlob"]

    rep = us.replicate_key(KeyId=kid, ReplicaRegion=EU, Description="replica",
                           Tags=[{"TagKey": "site", "TagValue": "dublin"}])
    rmd = rep["ReplicaKeyMetadata"]
    assert rmd["KeyId"] == kid and rmd["KeyState"] == "Creating"
    assert rmd["Arn"] == f"arn:aws:kms:{EU}:{md['AWSAccountId']}:key/{kid}"
    assert rep["ReplicaTags"] == [{"TagKey": "site", "TagValue": "dublin"}]
    assert json.loads(rep["ReplicaPolicy"])["Statement"]
    assert wait_until(lambda: eu.describe_key(KeyId=kid)["KeyMetadata"]["KeyState"] == "Enabled")
    emd = eu.describe_key(KeyId=kid)["KeyMetadata"]
    assert emd["Description"] == "replica"
    assert emd["MultiRegionConfiguration"]["MultiRegionKeyType"] == "REPLICA"
    assert emd["MultiRegionConfiguration"]["PrimaryKey"]["Region"] == US
    assert [r["Region"] for r in emd["MultiRegionConfiguration"]["ReplicaKeys"]] == [EU]
    assert us.describe_key(KeyId=kid)["KeyMetadata"]["MultiRegionConfiguration"][
        "ReplicaKeys"] == [{"Arn": rmd["Arn"], "Region": EU}]
    assert eu.list_resource_tags(KeyId=kid)["Tags"] == [{"TagKey": "site", "TagValue": "dublin"}]
    assert us.list_resource_tags(KeyId=kid)["Tags"] == []

    # Ciphertext made in either Region opens in the other, with no key named.
    out = eu.decrypt(CiphertextBlob=before, EncryptionContext={"app": "x"})
    assert out["Plaintext"] == b"made in us" and out["KeyId"] == rmd["Arn"]
    back = eu.encrypt(KeyId=kid, Plaintext=b"made in eu")["CiphertextBlob"]
    assert us.decrypt(CiphertextBlob=back)["Plaintext"] == b"made in eu"
    dk = eu.generate_data_key(KeyId=kid, KeySpec="AES_256")
    assert us.decrypt(CiphertextBlob=dk["CiphertextBlob"])["Plaintext"] == dk["Plaintext"]

    # Each Region's key has its own state, policy and aliases.
    eu.disable_key(KeyId=kid)
    assert us.encrypt(KeyId=kid, Plaintext=b"still")["CiphertextBlob"]
    with pytest.raises(ClientError) as e:
        eu.decrypt(CiphertextBlob=before, EncryptionContext={"app": "x"})
    assert err(e) == "DisabledException"
    eu.enable_key(KeyId=kid)
    eu.create_alias(AliasName="alias/dr", TargetKeyId=kid)
    with pytest.raises(ClientError) as e:
        us.describe_key(KeyId="alias/dr")
    assert err(e) == "NotFoundException"

    # Rotation is the primary's; its new material reaches the replica.
    us.enable_key_rotation(KeyId=kid)
    assert eu.get_key_rotation_status(KeyId=kid)["KeyRotationEnabled"] is True
    for op in (lambda: eu.rotate_key_on_demand(KeyId=kid),
               lambda: eu.enable_key_rotation(KeyId=kid)):
        with pytest.raises(ClientError) as e:
            op()
        assert err(e) == "UnsupportedOperationException"
    us.rotate_key_on_demand(KeyId=kid)
    assert len(eu.list_key_rotations(KeyId=kid)["Rotations"]) == 1
    after = us.encrypt(KeyId=kid, Plaintext=b"rotated")["CiphertextBlob"]
    assert eu.decrypt(CiphertextBlob=after)["Plaintext"] == b"rotated"
    assert eu.decrypt(CiphertextBlob=before, EncryptionContext={"app": "x"})["Plaintext"] == \
        b"made in us"

    # The primary moves to eu-west-1: the us key is now the replica.
    us.update_primary_region(KeyId=kid, PrimaryRegion=EU)
    assert eu.describe_key(KeyId=kid)["KeyMetadata"]["MultiRegionConfiguration"][
        "MultiRegionKeyType"] == "PRIMARY"
    ucfg = us.describe_key(KeyId=kid)["KeyMetadata"]["MultiRegionConfiguration"]
    assert ucfg["MultiRegionKeyType"] == "REPLICA" and ucfg["PrimaryKey"]["Region"] == EU
    assert [r["Region"] for r in ucfg["ReplicaKeys"]] == [US]
    eu.rotate_key_on_demand(KeyId=kid)
    with pytest.raises(ClientError) as e:
        us.rotate_key_on_demand(KeyId=kid)
    assert err(e) == "UnsupportedOperationException"
    newest = eu.encrypt(KeyId=kid, Plaintext=b"newest")["CiphertextBlob"]
    assert us.decrypt(CiphertextBlob=newest)["Plaintext"] == b"newest"

    # Deletion: the primary waits for its replica.
    sched = eu.schedule_key_deletion(KeyId=kid, PendingWindowInDays=7)
    assert sched["KeyState"] == "PendingReplicaDeletion" and "DeletionDate" not in sched
    pmd = eu.describe_key(KeyId=kid)["KeyMetadata"]
    assert pmd["KeyState"] == "PendingReplicaDeletion"
    assert pmd["PendingDeletionWindowInDays"] == 7
    assert us.schedule_key_deletion(KeyId=kid, PendingWindowInDays=7)["KeyState"] == \
        "PendingDeletion"
    assert eu.cancel_key_deletion(KeyId=kid)["KeyId"].startswith(f"arn:aws:kms:{EU}:")
    assert eu.describe_key(KeyId=kid)["KeyMetadata"]["KeyState"] == "Disabled"

    events = audit_events(s.data_dir)
    regions = {(ev["eventName"], ev["awsRegion"]) for ev in events}
    assert ("ReplicateKey", US) in regions and ("UpdatePrimaryRegion", US) in regions
    assert ("Decrypt", EU) in regions
    # The replica's Region records each synchronization with its primary: its creation, the
    # rotation setting and the rotation.
    syncs = [ev for ev in events
             if ev["eventName"] == "SynchronizeMultiRegionKey" and ev["awsRegion"] == EU]
    assert len(syncs) >= 3


@pytest.mark.parametrize("spec,usage", [
    ("RSA_2048", "SIGN_VERIFY"), ("ECC_NIST_P256", "SIGN_VERIFY"),
    ("RSA_3072", "ENCRYPT_DECRYPT"), ("HMAC_256", "GENERATE_VERIFY_MAC"),
])
def test_asymmetric_and_hmac_multi_region_keys(dev, spec, usage):
    us, eu = dev.client(region=US), dev.client(region=EU)
    kid = us.create_key(MultiRegion=True, KeySpec=spec, KeyUsage=usage)["KeyMetadata"]["KeyId"]
    assert kid.startswith("mrk-")
    us.replicate_key(KeyId=kid, ReplicaRegion=EU)
    assert eu.describe_key(KeyId=kid)["KeyMetadata"]["KeySpec"] == spec
    if usage == "SIGN_VERIFY":
        assert us.get_public_key(KeyId=kid)["PublicKey"] == eu.get_public_key(KeyId=kid)["PublicKey"]
        alg = "RSASSA_PSS_SHA_256" if spec.startswith("RSA") else "ECDSA_SHA_256"
        sig = us.sign(KeyId=kid, Message=b"m", SigningAlgorithm=alg)["Signature"]
        assert eu.verify(KeyId=kid, Message=b"m", Signature=sig,
                         SigningAlgorithm=alg)["SignatureValid"] is True
    elif usage == "ENCRYPT_DECRYPT":
        ct = eu.encrypt(KeyId=kid, Plaintext=b"rsa", EncryptionAlgorithm="RSAES_OAEP_SHA_256")
        assert us.decrypt(KeyId=kid, CiphertextBlob=ct["CiphertextBlob"],
                          EncryptionAlgorithm="RSAES_OAEP_SHA_256")["Plaintext"] == b"rsa"
    else:
        mac = us.generate_mac(KeyId=kid, Message=b"m", MacAlgorithm="HMAC_SHA_256")["Mac"]
        assert eu.verify_mac(KeyId=kid, Message=b"m", Mac=mac,
                             MacAlgorithm="HMAC_SHA_256")["MacValid"] is True


def test_bad_multi_region_requests_get_awss_errors_and_change_nothing(two_regions):
    s = two_regions
    us, eu = s.client(*s.admin, region=US), s.client(*s.admin, region=EU)
    single = us.create_key()["KeyMetadata"]["KeyId"]
    mrk = us.create_key(MultiRegion=True)["KeyMetadata"]["KeyId"]

    def fails(expected, fn, **kw):
        with pytest.raises(ClientError) as e:
            fn(**kw)
        assert err(e) == expected, e.value.response["Error"]

    fails("UnsupportedOperationException", us.replicate_key, KeyId=single, ReplicaRegion=EU)
    fails("ValidationException", us.replicate_key, KeyId=mrk, ReplicaRegion=US)
    fails("UnsupportedOperationException", us.replicate_key, KeyId=mrk, ReplicaRegion="ap-south-1")
    fails("ValidationException", us.replicate_key, KeyId=mrk, ReplicaRegion="Not_A_Region")
    fails("NotFoundException", us.update_primary_region, KeyId=mrk, PrimaryRegion=EU)
    # The multi-Region key id in an alias of a Region holding no replica of it.
    fails("NotFoundException", eu.create_alias, AliasName="alias/elsewhere", TargetKeyId=mrk)
    fails("NotFoundException", eu.encrypt, KeyId=mrk, Plaintext=b"x")
    cfg = us.describe_key(KeyId=mrk)["KeyMetadata"]["MultiRegionConfiguration"]
    assert cfg["ReplicaKeys"] == []
    assert eu.list_keys()["Keys"] == []
    assert [a for a in eu.list_aliases()["Aliases"]
            if not a["AliasName"].startswith("alias/aws/")] == []

    us.replicate_key(KeyId=mrk, ReplicaRegion=EU)
    fails("AlreadyExistsException", us.replicate_key, KeyId=mrk, ReplicaRegion=EU)
    # Only the primary replicates, and only from its own Region.
    fails("UnsupportedOperationException", eu.replicate_key, KeyId=mrk, ReplicaRegion=US)
    fails("UnsupportedOperationException", eu.update_primary_region, KeyId=mrk,
          PrimaryRegion=US)
    fails("ValidationException", us.update_primary_region, KeyId=mrk, PrimaryRegion=US)
    fails("UnsupportedOperationException", us.update_primary_region, KeyId=single,
          PrimaryRegion=EU)
    # Another account cannot replicate the key.
    other = s.client(*s.other, region=US)
    fails("NotFoundException", other.replicate_key, KeyId=mrk, ReplicaRegion=EU)
    fails("AccessDeniedException", other.replicate_key,
          KeyId=us.describe_key(KeyId=mrk)["KeyMetadata"]["Arn"], ReplicaRegion=EU)
    # A disabled primary does not replicate; nothing was made by any refusal.
    us.disable_key(KeyId=mrk)
    fails("DisabledException", us.replicate_key, KeyId=mrk, ReplicaRegion=EU)
    assert [k["KeyId"] for k in eu.list_keys()["Keys"]] == [mrk]
    assert [r["Region"] for r in us.describe_key(KeyId=mrk)["KeyMetadata"][
        "MultiRegionConfiguration"]["ReplicaKeys"]] == [EU]


def test_the_aws_cli_replicates_into_a_second_region(dev, tmp_path):
    md = dev.cli("create-key", "--multi-region")["KeyMetadata"]
    rep = dev.cli("replicate-key", "--key-id", md["KeyId"], "--replica-region", EU)
    assert rep["ReplicaKeyMetadata"]["Arn"].split(":")[3] == EU
    pt, ct = tmp_path / "pt", tmp_path / "ct"
    pt.write_bytes(b"cli")
    blob = dev.cli("encrypt", "--key-id", md["KeyId"], "--plaintext", f"fileb://{pt}")
    ct.write_bytes(base64.b64decode(blob["CiphertextBlob"]))
    out = dev.cli("decrypt", "--ciphertext-blob", f"fileb://{ct}", region=EU)
    assert base64.b64decode(out["Plaintext"]) == b"cli"
    assert out["KeyId"].split(":")[3] == EU


def test_every_postgres_node_serves_every_region(pg_url, tmp_path):
    a_dir, b_dir, creds = two_node_dirs(pg_url, tmp_path)
    common = ["--store", pg_url, "--insecure-http", "--regions", f"{US},{EU}"]
    a = Server(["--data-dir", str(a_dir), "--node-id", "a", *common])
    b = Server(["--data-dir", str(b_dir), "--node-id", "b", *common])
    try:
        key = (creds["access_key_id"], creds["secret_access_key"])
        a_us = a.client(*key, region=US)
        kid = a_us.create_key(MultiRegion=True)["KeyMetadata"]["KeyId"]
        a_us.replicate_key(KeyId=kid, ReplicaRegion=EU)
        blob = a_us.encrypt(KeyId=kid, Plaintext=b"pg")["CiphertextBlob"]
        b_eu = b.client(*key, region=EU)
        assert b_eu.decrypt(CiphertextBlob=blob)["Plaintext"] == b"pg"
        assert b_eu.describe_key(KeyId=kid)["KeyMetadata"]["MultiRegionConfiguration"][
            "MultiRegionKeyType"] == "REPLICA"
        # A change to the replica on one node reaches the other node's cache of it.
        a.client(*key, region=EU).disable_key(KeyId=kid)

        def refused():
            try:
                b_eu.decrypt(CiphertextBlob=blob)
                return False
            except ClientError as e:
                return e.response["Error"]["Code"] == "DisabledException"

        assert wait_until(refused, timeout=5)
        assert a_us.decrypt(CiphertextBlob=blob)["Plaintext"] == b"pg"
        # Keys made on one node in one Region are that Region's on the other node too.
        only_eu = a.client(*key, region=EU).create_key()["KeyMetadata"]["KeyId"]
        assert only_eu in [k["KeyId"] for k in b_eu.list_keys()["Keys"]]
        assert only_eu not in [k["KeyId"] for k in b.client(*key, region=US).list_keys()["Keys"]]
    finally:
        a.stop()
        b.stop()


def test_policies_see_the_replica_region_and_the_key_type(dev):
    us, eu = dev.client(region=US), dev.client(region=EU)
    kid = us.create_key(MultiRegion=True)["KeyMetadata"]["KeyId"]
    policy = json.loads(us.get_key_policy(KeyId=kid, PolicyName="default")["Policy"])
    policy["Statement"].append({
        "Sid": "NotToSydney", "Effect": "Deny", "Principal": {"AWS": "*"},
        "Action": "kms:ReplicateKey", "Resource": "*",
        "Condition": {"StringEquals": {"kms:ReplicaRegion": "ap-southeast-2"}},
    })
    us.put_key_policy(KeyId=kid, PolicyName="default", Policy=json.dumps(policy))
    with pytest.raises(ClientError) as e:
        us.replicate_key(KeyId=kid, ReplicaRegion="ap-southeast-2")
    assert err(e) == "AccessDeniedException"
    with pytest.raises(ClientError) as e:
        dev.client(region="ap-southeast-2").describe_key(KeyId=kid)
    assert err(e) == "NotFoundException"
    # The replica's own policy: no decryption by replicas (kms:MultiRegionKeyType).
    replica_policy = json.loads(us.get_key_policy(KeyId=kid, PolicyName="default")["Policy"])
    replica_policy["Statement"] = [s for s in replica_policy["Statement"] if s.get("Sid") != "NotToSydney"]
    replica_policy["Statement"].append({
        "Sid": "PrimaryOnly", "Effect": "Deny", "Principal": {"AWS": "*"},
        "Action": "kms:Decrypt", "Resource": "*",
        "Condition": {"StringEquals": {"kms:MultiRegionKeyType": "REPLICA"}},
    })
    us.replicate_key(KeyId=kid, ReplicaRegion=EU, Policy=json.dumps(replica_policy))
    blob = eu.encrypt(KeyId=kid, Plaintext=b"p")["CiphertextBlob"]
    with pytest.raises(ClientError) as e:
        eu.decrypt(CiphertextBlob=blob)
    assert err(e) == "AccessDeniedException"
    assert us.decrypt(CiphertextBlob=blob)["Plaintext"] == b"p"


def test_root_rotation_backup_and_restore_keep_every_regions_keys(data_dir, tmp_path):
    creds = init_data_dir(data_dir)
    key = (creds["access_key_id"], creds["secret_access_key"])
    args = ["--data-dir", str(data_dir), "--regions", f"{US},{EU}"]
    s = Server(args)
    try:
        us, eu = s.client(*key, region=US), s.client(*key, region=EU)
        kid = us.create_key(MultiRegion=True)["KeyMetadata"]["KeyId"]
        us.replicate_key(KeyId=kid, ReplicaRegion=EU)
        us.rotate_key_on_demand(KeyId=kid)
        eu_only = eu.create_key()["KeyMetadata"]["KeyId"]
        blob = us.encrypt(KeyId=kid, Plaintext=b"kept")["CiphertextBlob"]
        blob_eu = eu.encrypt(KeyId=eu_only, Plaintext=b"eu only")["CiphertextBlob"]
    finally:
        s.stop()
    r = run_keyhold("admin", "rotate-root", "--data-dir", str(data_dir), "--to", "file")
    assert r.returncode == 0, r.stderr
    backup = tmp_path / "backup.json"
    r = run_keyhold("admin", "backup", "--data-dir", str(data_dir), "--to", str(backup))
    assert r.returncode == 0, r.stderr
    restored = tmp_path / "restored"
    restored.mkdir()
    for f in ("root.key", "root.json"):
        shutil.copy(data_dir / f, restored / f)
    r = run_keyhold("admin", "restore", "--data-dir", str(restored), "--from", str(backup))
    assert r.returncode == 0, r.stderr
    for d in (data_dir, restored):
        s = Server(["--data-dir", str(d), "--insecure-http", "--regions", f"{US},{EU}"])
        try:
            us, eu = s.client(*key, region=US), s.client(*key, region=EU)
            assert eu.decrypt(CiphertextBlob=blob)["Plaintext"] == b"kept"
            assert us.decrypt(CiphertextBlob=blob)["Plaintext"] == b"kept"
            assert eu.decrypt(CiphertextBlob=blob_eu)["Plaintext"] == b"eu only"
            assert [k["KeyId"] for k in us.list_keys()["Keys"]] == [kid]
            assert sorted(k["KeyId"] for k in eu.list_keys()["Keys"]) == sorted([kid, eu_only])
        finally:
            s.stop()
    # The home Region stays first: naming another one first is refused, and says how to fix it.
    p = run_keyhold("serve", "--data-dir", str(data_dir), "--insecure-http", "--listen",
                    "127.0.0.1:0", "--regions", f"{EU},{US}")
    assert p.returncode != 0
    assert f"home Region is {US}" in p.stderr and f"--regions {US},{EU}" in p.stderr, p.stderr


def test_the_encryption_sdk_opens_a_message_with_the_replica_in_another_region(dev, monkeypatch):
    """The AWS Encryption SDK's multi-Region-key-aware provider: a message encrypted under the
    primary's ARN decrypts with a provider that knows only the replica's ARN, through the
    replica's Region (the primary is disabled meanwhile)."""
    import aws_encryption_sdk
    import botocore.session
    from aws_encryption_sdk import CommitmentPolicy
    from aws_encryption_sdk.key_providers.kms import MRKAwareStrictAwsKmsMasterKeyProvider

    for k, v in {
        "AWS_ENDPOINT_URL": dev.endpoint, "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": US,
        "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    }.items():
        monkeypatch.setenv(k, v)
    us = dev.client(region=US)
    md = us.create_key(MultiRegion=True)["KeyMetadata"]
    replica_arn = us.replicate_key(KeyId=md["KeyId"], ReplicaRegion=EU)[
        "ReplicaKeyMetadata"]["Arn"]
    client = aws_encryption_sdk.EncryptionSDKClient(
        commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT)

    def provider(cls, arn):
        return cls(key_ids=[arn], botocore_session=botocore.session.Session())

    message = b"disaster recovery " * 1000
    ct, _ = client.encrypt(
        source=message, encryption_context={"site": "primary"},
        key_provider=provider(MRKAwareStrictAwsKmsMasterKeyProvider, md["Arn"]))
    us.disable_key(KeyId=md["KeyId"])
    pt, header = client.decrypt(
        source=ct,
        key_provider=provider(MRKAwareStrictAwsKmsMasterKeyProvider, replica_arn))
    assert pt == message and header.encryption_context["site"] == "primary"
    # A provider that is not multi-Region-key aware wants the very ARN it encrypted with.
    with pytest.raises(Exception):
        client.decrypt(source=ct, key_provider=provider(
            aws_encryption_sdk.StrictAwsKmsMasterKeyProvider, replica_arn))
    decrypts = [ev["awsRegion"] for ev in audit_events(dev.data_dir)
                if ev["eventName"] == "Decrypt" and not ev.get("errorCode")]
    assert decrypts == [EU]


def test_a_multi_region_key_with_imported_material(dev):
    """Imported material is imported into each key of the set, and only that material."""
    import os

    from test_import import import_material

    us, eu = dev.client(region=US), dev.client(region=EU)
    md = us.create_key(MultiRegion=True, Origin="EXTERNAL")["KeyMetadata"]
    kid = md["KeyId"]
    assert kid.startswith("mrk-") and md["KeyState"] == "PendingImport"
    # Replicated before any material: the replica waits for its own import.
    rep = us.replicate_key(KeyId=kid, ReplicaRegion=EU)["ReplicaKeyMetadata"]
    assert rep["Origin"] == "EXTERNAL"
    assert eu.describe_key(KeyId=kid)["KeyMetadata"]["KeyState"] == "PendingImport"
    material = os.urandom(32)
    import_material(eu, kid, material)
    assert eu.describe_key(KeyId=kid)["KeyMetadata"]["KeyState"] == "Enabled"
    # Other material is refused in every key of the set, and changes nothing.
    with pytest.raises(ClientError) as e:
        import_material(us, kid, os.urandom(32))
    assert err(e) == "IncorrectKeyMaterialException"
    assert us.describe_key(KeyId=kid)["KeyMetadata"]["KeyState"] == "PendingImport"
    import_material(us, kid, material)
    blob = eu.encrypt(KeyId=kid, Plaintext=b"byok")["CiphertextBlob"]
    assert us.decrypt(CiphertextBlob=blob)["Plaintext"] == b"byok"
    # A replica made after the import takes the same material only.
    us.replicate_key(KeyId=kid, ReplicaRegion="ap-south-1")
    ap = dev.client(region="ap-south-1")
    with pytest.raises(ClientError) as e:
        import_material(ap, kid, os.urandom(32))
    assert err(e) == "IncorrectKeyMaterialException"
    import_material(ap, kid, material)
    assert ap.decrypt(CiphertextBlob=blob)["Plaintext"] == b"byok"
    # Each key's material is its own to delete; the others keep working.
    eu.delete_imported_key_material(KeyId=kid)
    with pytest.raises(ClientError) as e:
        eu.decrypt(CiphertextBlob=blob)
    assert err(e) == "KMSInvalidStateException"
    assert us.decrypt(CiphertextBlob=blob)["Plaintext"] == b"byok"
    # One material for the set: no new material, no on-demand rotation.
    with pytest.raises(ClientError) as e:
        import_material(us, kid, os.urandom(32), ImportType="NEW_KEY_MATERIAL")
    assert err(e) == "IncorrectKeyMaterialException"
    with pytest.raises(ClientError) as e:
        us.rotate_key_on_demand(KeyId=kid)
    assert err(e) == "UnsupportedOperationException"

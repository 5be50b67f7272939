"""Key policies, grants, rotation and AWS managed keys, through boto3, with principals in two
accounts on a persistent (`keyhold init` + `serve`) server."""

import json

import pytest
from botocore.exceptions import ClientError

from conftest import Server, err, run_keyhold


@pytest.fixture
def two_accounts(data_dir):
    admin = json.loads(run_keyhold("init", "--data-dir", str(data_dir), "--json").stdout)
    partner = json.loads(
        run_keyhold(
            "admin", "principal", "create", "--data-dir", str(data_dir),
            "--account", "444455556666", "--name", "partner", "--json",
        ).stdout
    )
    s = Server(["--data-dir", str(data_dir)])
    try:
        yield (
            s.client(admin["access_key_id"], admin["secret_access_key"]),
            s.client(partner["access_key_id"], partner["secret_access_key"]),
            partner["arn"],
        )
    finally:
        s.stop()


def test_policy_lets_the_other_account_in(two_accounts):
    owner, partner, partner_arn = two_accounts
    arn = owner.create_key()["KeyMetadata"]["Arn"]
    with pytest.raises(ClientError) as e:
        partner.encrypt(KeyId=arn, Plaintext=b"x")
    assert err(e) == "AccessDeniedException"
    assert "is not authorized to perform: kms:Encrypt" in str(e.value)
    policy = json.loads(owner.get_key_policy(KeyId=arn, PolicyName="default")["Policy"])
    policy["Statement"].append({
        "Sid": "partner-use", "Effect": "Allow", "Principal": {"AWS": partner_arn},
        "Action": ["kms:Encrypt", "kms:Decrypt"], "Resource": "*",
        "Condition": {"StringEquals": {"kms:EncryptionContext:tenant": "partner"}},
    })
    owner.put_key_policy(KeyId=arn, PolicyName="default", Policy=json.dumps(policy))
    ct = partner.encrypt(KeyId=arn, Plaintext=b"x", EncryptionContext={"tenant": "partner"})
    assert partner.decrypt(
        CiphertextBlob=ct["CiphertextBlob"], EncryptionContext={"tenant": "partner"}
    )["Plaintext"] == b"x"
    with pytest.raises(ClientError) as e:
        partner.encrypt(KeyId=arn, Plaintext=b"x", EncryptionContext={"tenant": "other"})
    assert err(e) == "AccessDeniedException"
    with pytest.raises(ClientError) as e:
        owner.put_key_policy(KeyId=arn, PolicyName="default", Policy='{"Statement": []}')
    assert err(e) == "MalformedPolicyDocumentException"


def test_grant_then_revoke(two_accounts):
    owner, partner, partner_arn = two_accounts
    arn = owner.create_key()["KeyMetadata"]["Arn"]
    g = owner.create_grant(KeyId=arn, GranteePrincipal=partner_arn,
                           Operations=["GenerateDataKey", "Decrypt"])
    dk = partner.generate_data_key(KeyId=arn, KeySpec="AES_256", GrantTokens=[g["GrantToken"]])
    assert partner.decrypt(CiphertextBlob=dk["CiphertextBlob"])["Plaintext"] == dk["Plaintext"]
    grants = owner.list_grants(KeyId=arn)["Grants"]
    assert [x["GrantId"] for x in grants] == [g["GrantId"]]
    with pytest.raises(ClientError) as e:
        partner.retire_grant(GrantToken=g["GrantToken"])
    assert err(e) == "AccessDeniedException"
    owner.revoke_grant(KeyId=arn, GrantId=g["GrantId"])
    with pytest.raises(ClientError) as e:
        partner.generate_data_key(KeyId=arn, KeySpec="AES_256")
    assert err(e) == "AccessDeniedException"
    with pytest.raises(ClientError) as e:
        owner.create_grant(KeyId=arn, GranteePrincipal=partner_arn, Operations=["Teleport"])
    assert err(e) == "ValidationException"


def test_rotation_keeps_old_ciphertext(kms):
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    old = kms.encrypt(KeyId=key, Plaintext=b"v1")["CiphertextBlob"]
    kms.rotate_key_on_demand(KeyId=key)
    kms.rotate_key_on_demand(KeyId=key)
    new = kms.encrypt(KeyId=key, Plaintext=b"v3")["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=old)["Plaintext"] == b"v1"
    assert kms.decrypt(CiphertextBlob=new)["Plaintext"] == b"v3"
    rotations = kms.list_key_rotations(KeyId=key)["Rotations"]
    assert [r["RotationType"] for r in rotations] == ["ON_DEMAND", "ON_DEMAND"]
    kms.enable_key_rotation(KeyId=key, RotationPeriodInDays=90)
    status = kms.get_key_rotation_status(KeyId=key)
    assert status["KeyRotationEnabled"] and status["RotationPeriodInDays"] == 90
    assert "NextRotationDate" in status
    re = kms.re_encrypt(CiphertextBlob=old, DestinationKeyId=key)
    assert re["SourceKeyMaterialId"] != re["DestinationKeyMaterialId"]
    usage = kms.get_key_last_usage(KeyId=key)
    assert usage["KeyLastUsage"]["Operation"] == "ReEncrypt"


def test_aws_managed_keys(kms):
    md = kms.describe_key(KeyId="alias/aws/s3")["KeyMetadata"]
    assert md["KeyManager"] == "AWS"
    assert md["KeyId"] == kms.describe_key(KeyId="alias/aws/s3")["KeyMetadata"]["KeyId"]
    aliases = {a["AliasName"]: a.get("TargetKeyId") for a in kms.list_aliases()["Aliases"]}
    assert aliases["alias/aws/s3"] == md["KeyId"]
    assert kms.get_key_rotation_status(KeyId=md["KeyId"])["KeyRotationEnabled"] is True
    for call in (
        lambda: kms.encrypt(KeyId="alias/aws/s3", Plaintext=b"x"),
        lambda: kms.disable_key(KeyId=md["KeyId"]),
        lambda: kms.schedule_key_deletion(KeyId=md["KeyId"]),
        lambda: kms.disable_key_rotation(KeyId=md["KeyId"]),
    ):
        with pytest.raises(ClientError) as e:
            call()
        assert err(e) == "AccessDeniedException"
    with pytest.raises(ClientError) as e:
        kms.create_alias(AliasName="alias/aws/mine", TargetKeyId=md["KeyId"])
    assert err(e) == "InvalidAliasNameException"

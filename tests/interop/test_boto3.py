"""boto3 against `keyhold serve --dev`."""


import pytest
from botocore.exceptions import ClientError

from conftest import err


def test_create_describe_list(kms):
    md = kms.create_key(Description="boto3", Tags=[{"TagKey": "t", "TagValue": "v"}])["KeyMetadata"]
    assert md["KeySpec"] == "SYMMETRIC_DEFAULT"
    assert md["KeyUsage"] == "ENCRYPT_DECRYPT"
    assert md["KeyState"] == "Enabled" and md["Enabled"] is True
    assert md["MultiRegion"] is False
    assert md["EncryptionAlgorithms"] == ["SYMMETRIC_DEFAULT"]
    assert md["Arn"] == f"arn:aws:kms:us-east-1:111122223333:key/{md['KeyId']}"
    assert kms.describe_key(KeyId=md["Arn"])["KeyMetadata"]["Description"] == "boto3"
    ids = [k["KeyId"] for k in kms.list_keys()["Keys"]]
    assert md["KeyId"] in ids


def test_list_keys_paginator(kms):
    made = {kms.create_key()["KeyMetadata"]["KeyId"] for _ in range(5)}
    seen = set()
    for page in kms.get_paginator("list_keys").paginate(PaginationConfig={"PageSize": 2}):
        seen |= {k["KeyId"] for k in page["Keys"]}
    assert made <= seen


def test_encrypt_decrypt_context(kms):
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    ct = kms.encrypt(KeyId=key, Plaintext=b"hello", EncryptionContext={"app": "x"})["CiphertextBlob"]
    out = kms.decrypt(CiphertextBlob=ct, EncryptionContext={"app": "x"})
    assert out["Plaintext"] == b"hello"
    assert out["KeyId"].endswith(key)
    with pytest.raises(ClientError) as e:
        kms.decrypt(CiphertextBlob=ct, EncryptionContext={"app": "y"})
    assert err(e) == "InvalidCiphertextException"
    bad = bytearray(ct)
    bad[-1] ^= 1
    with pytest.raises(ClientError) as e:
        kms.decrypt(CiphertextBlob=bytes(bad), EncryptionContext={"app": "x"})
    assert err(e) == "InvalidCiphertextException"


def test_data_keys_and_reencrypt(kms):
    k1 = kms.create_key()["KeyMetadata"]["KeyId"]
    k2 = kms.create_key()["KeyMetadata"]["KeyId"]
    dk = kms.generate_data_key(KeyId=k1, KeySpec="AES_256")
    assert len(dk["Plaintext"]) == 32
    wp = kms.generate_data_key_without_plaintext(KeyId=k1, NumberOfBytes=64)
    assert "Plaintext" not in wp
    re = kms.re_encrypt(CiphertextBlob=dk["CiphertextBlob"], DestinationKeyId=k2)
    assert re["SourceKeyId"].endswith(k1) and re["KeyId"].endswith(k2)
    assert kms.decrypt(CiphertextBlob=re["CiphertextBlob"])["Plaintext"] == dk["Plaintext"]
    assert len(kms.decrypt(CiphertextBlob=wp["CiphertextBlob"])["Plaintext"]) == 64
    assert len(kms.generate_random(NumberOfBytes=17)["Plaintext"]) == 17


def test_aliases_and_tags(kms):
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName="alias/boto", TargetKeyId=key)
    with pytest.raises(ClientError) as e:
        kms.create_alias(AliasName="alias/boto", TargetKeyId=key)
    assert err(e) == "AlreadyExistsException"
    with pytest.raises(ClientError) as e:
        kms.create_alias(AliasName="alias/aws/mine", TargetKeyId=key)
    assert err(e) == "InvalidAliasNameException"
    ct = kms.encrypt(KeyId="alias/boto", Plaintext=b"a")["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=ct, KeyId="alias/boto")["Plaintext"] == b"a"
    aliases = kms.list_aliases(KeyId=key)["Aliases"]
    assert [a["AliasName"] for a in aliases] == ["alias/boto"]
    kms.tag_resource(KeyId=key, Tags=[{"TagKey": "a", "TagValue": "1"}])
    kms.untag_resource(KeyId=key, TagKeys=["a"])
    assert kms.list_resource_tags(KeyId=key)["Tags"] == []
    kms.delete_alias(AliasName="alias/boto")
    with pytest.raises(ClientError) as e:
        kms.describe_key(KeyId="alias/boto")
    assert err(e) == "NotFoundException"


def test_states(kms):
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.disable_key(KeyId=key)
    with pytest.raises(ClientError) as e:
        kms.encrypt(KeyId=key, Plaintext=b"a")
    assert err(e) == "DisabledException"
    kms.enable_key(KeyId=key)
    out = kms.schedule_key_deletion(KeyId=key, PendingWindowInDays=7)
    assert out["KeyState"] == "PendingDeletion" and out["PendingWindowInDays"] == 7
    with pytest.raises(ClientError) as e:
        kms.encrypt(KeyId=key, Plaintext=b"a")
    assert err(e) == "KMSInvalidStateException"
    kms.cancel_key_deletion(KeyId=key)
    assert kms.describe_key(KeyId=key)["KeyMetadata"]["KeyState"] == "Disabled"


def test_validation_errors(kms):
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    with pytest.raises(ClientError) as e:
        kms.encrypt(KeyId=key, Plaintext=b"x" * 4097)
    assert err(e) == "ValidationException"
    with pytest.raises(ClientError) as e:
        kms.describe_key(KeyId="alias/nope")
    assert err(e) == "NotFoundException"
    k2 = kms.create_key()["KeyMetadata"]["KeyId"]
    ct = kms.encrypt(KeyId=key, Plaintext=b"x")["CiphertextBlob"]
    with pytest.raises(ClientError) as e:
        kms.decrypt(CiphertextBlob=ct, KeyId=k2)
    assert err(e) == "IncorrectKeyException"


def test_bad_credentials(dev_server):
    with pytest.raises(ClientError) as e:
        dev_server.client(access_key="nobody").list_keys()
    assert err(e) == "UnrecognizedClientException"
    with pytest.raises(ClientError) as e:
        dev_server.client(secret="wrong").list_keys()
    assert err(e) == "InvalidSignatureException"


def test_dev_banner_prints_endpoint_and_credentials(dev_server):
    text = "".join(dev_server.banner)
    assert dev_server.endpoint in text
    assert "arn:aws:iam::111122223333:user/dev" in text
    assert "AWS_ACCESS_KEY_ID=test" in text


def test_grants_to_service_principals(kms):
    """GranteeServicePrincipal, RetiringServicePrincipal and the SourceArn constraint, as
    botocore's model has them."""
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    volume = "arn:aws:ec2:us-east-1:000000000000:volume/vol-0123456789abcdef0"
    g = kms.create_grant(KeyId=key, GranteeServicePrincipal="ec2.amazonaws.com",
                         RetiringServicePrincipal="ec2.amazonaws.com",
                         Operations=["Decrypt", "GenerateDataKeyWithoutPlaintext"],
                         Constraints={"SourceArn": volume,
                                      "EncryptionContextSubset": {"volume": "vol-1"}})
    listed = kms.list_grants(KeyId=key)["Grants"]
    assert len(listed) == 1
    entry = listed[0]
    assert entry["GrantId"] == g["GrantId"]
    assert entry["GranteeServicePrincipal"] == "ec2.amazonaws.com"
    assert entry["RetiringServicePrincipal"] == "ec2.amazonaws.com"
    assert "GranteePrincipal" not in entry
    assert entry["Constraints"] == {"SourceArn": volume,
                                    "EncryptionContextSubset": {"volume": "vol-1"}}
    only = kms.list_grants(KeyId=key, GranteeServicePrincipal="ec2.amazonaws.com")["Grants"]
    assert [x["GrantId"] for x in only] == [g["GrantId"]]
    assert kms.list_grants(KeyId=key, GranteeServicePrincipal="s3.amazonaws.com")["Grants"] == []
    retirable = kms.list_retirable_grants(RetiringServicePrincipal="ec2.amazonaws.com")["Grants"]
    assert g["GrantId"] in [x["GrantId"] for x in retirable]
    # The grant lets the service, not the caller, use the key: the caller's own rights are
    # from the key policy, and a grant to a service never admits an IAM principal.
    for bad, code in [
        (dict(GranteePrincipal="arn:aws:iam::000000000000:user/x",
              GranteeServicePrincipal="ec2.amazonaws.com"), "ValidationException"),
        (dict(), "ValidationException"),
        (dict(GranteeServicePrincipal="not a service",
              Constraints={"SourceArn": volume}), "ValidationException"),
        # A service principal grant needs its resource.
        (dict(GranteeServicePrincipal="ec2.amazonaws.com"), "ValidationException"),
        (dict(GranteeServicePrincipal="ec2.amazonaws.com",
              Constraints={"SourceArn": "arn:aws:ec2:us-east-1:12:volume/v"}),
         "ValidationException"),
    ]:
        with pytest.raises(ClientError) as e:
            kms.create_grant(KeyId=key, Operations=["Decrypt"], **bad)
        assert e.value.response["Error"]["Code"] == code, bad
    with pytest.raises(ClientError) as e:
        kms.list_retirable_grants()
    assert e.value.response["Error"]["Code"] == "ValidationException"
    kms.revoke_grant(KeyId=key, GrantId=g["GrantId"])
    assert kms.list_grants(KeyId=key)["Grants"] == []

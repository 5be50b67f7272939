"""The AWS Encryption SDK (envelope encryption through GenerateDataKey/Decrypt) with keyhold."""

import aws_encryption_sdk
import botocore.session
import pytest
from aws_encryption_sdk import CommitmentPolicy


@pytest.fixture
def provider_env(dev_server, monkeypatch):
    for k, v in {
        "AWS_ENDPOINT_URL": dev_server.endpoint,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    }.items():
        monkeypatch.setenv(k, v)
    return dev_server


def test_encryption_sdk_round_trip(provider_env, kms):
    arn = kms.create_key()["KeyMetadata"]["Arn"]
    client = aws_encryption_sdk.EncryptionSDKClient(
        commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT
    )
    provider = aws_encryption_sdk.StrictAwsKmsMasterKeyProvider(
        key_ids=[arn], botocore_session=botocore.session.Session()
    )
    message = b"large message " * 10_000
    ct, header = client.encrypt(
        source=message, key_provider=provider, encryption_context={"purpose": "interop"}
    )
    assert message not in ct
    pt, dec_header = client.decrypt(source=ct, key_provider=provider)
    assert pt == message
    assert dec_header.encryption_context["purpose"] == "interop"

    # A provider for another key cannot open it.
    other = kms.create_key()["KeyMetadata"]["Arn"]
    wrong = aws_encryption_sdk.StrictAwsKmsMasterKeyProvider(
        key_ids=[other], botocore_session=botocore.session.Session()
    )
    with pytest.raises(Exception):
        client.decrypt(source=ct, key_provider=wrong)

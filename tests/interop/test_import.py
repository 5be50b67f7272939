"""Bring your own key: material wrapped by `cryptography`, imported with boto3."""

import os

import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.keywrap import aes_key_wrap_with_padding


def err(excinfo):
    return excinfo.value.response["Error"]["Code"]


def wrap(params, alg, material):
    pub = serialization.load_der_public_key(params["PublicKey"])
    h = hashes.SHA256() if alg.endswith("SHA_256") else hashes.SHA1()
    oaep = padding.OAEP(mgf=padding.MGF1(h), algorithm=h, label=None)
    if alg.startswith("RSA_AES_KEY_WRAP"):
        aes = os.urandom(32)
        return pub.encrypt(aes, oaep) + aes_key_wrap_with_padding(aes, material)
    return pub.encrypt(material, oaep)


@pytest.mark.parametrize("alg", ["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256",
                                 "RSA_AES_KEY_WRAP_SHA_1", "RSA_AES_KEY_WRAP_SHA_256"])
def test_symmetric_import(kms, alg):
    key = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]
    assert key["KeyState"] == "PendingImport" and key["Origin"] == "EXTERNAL"
    material = os.urandom(32)
    params = kms.get_parameters_for_import(KeyId=key["KeyId"], WrappingAlgorithm=alg,
                                           WrappingKeySpec="RSA_3072")
    kms.import_key_material(KeyId=key["KeyId"], ImportToken=params["ImportToken"],
                            EncryptedKeyMaterial=wrap(params, alg, material),
                            ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE")
    assert kms.describe_key(KeyId=key["KeyId"])["KeyMetadata"]["KeyState"] == "Enabled"
    ct = kms.encrypt(KeyId=key["KeyId"], Plaintext=b"byok")["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=ct)["Plaintext"] == b"byok"
    # Re-importing other material is refused.
    params = kms.get_parameters_for_import(KeyId=key["KeyId"], WrappingAlgorithm=alg,
                                           WrappingKeySpec="RSA_2048")
    with pytest.raises(ClientError) as e:
        kms.import_key_material(KeyId=key["KeyId"], ImportToken=params["ImportToken"],
                                EncryptedKeyMaterial=wrap(params, alg, os.urandom(32)),
                                ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE")
    assert err(e) == "IncorrectKeyMaterialException"


def test_ecc_private_key_import(kms):
    private = ec.generate_private_key(ec.SECP256R1())
    pkcs8 = private.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())
    key = kms.create_key(Origin="EXTERNAL", KeySpec="ECC_NIST_P256",
                         KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    params = kms.get_parameters_for_import(KeyId=key, WrappingAlgorithm="RSA_AES_KEY_WRAP_SHA_256",
                                           WrappingKeySpec="RSA_4096")
    kms.import_key_material(KeyId=key, ImportToken=params["ImportToken"],
                            EncryptedKeyMaterial=wrap(params, "RSA_AES_KEY_WRAP_SHA_256", pkcs8),
                            ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE")
    sig = kms.sign(KeyId=key, Message=b"m", SigningAlgorithm="ECDSA_SHA_256")["Signature"]
    private.public_key().verify(sig, b"m", ec.ECDSA(hashes.SHA256()))


def test_import_errors(kms):
    key = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]["KeyId"]
    other = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]["KeyId"]
    params = kms.get_parameters_for_import(KeyId=key, WrappingAlgorithm="RSAES_OAEP_SHA_256",
                                           WrappingKeySpec="RSA_2048")
    with pytest.raises(ClientError) as e:
        kms.import_key_material(KeyId=other, ImportToken=params["ImportToken"],
                                EncryptedKeyMaterial=wrap(params, "RSAES_OAEP_SHA_256", os.urandom(32)),
                                ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE")
    assert err(e) == "InvalidImportTokenException"
    with pytest.raises(ClientError) as e:
        kms.import_key_material(KeyId=key, ImportToken=params["ImportToken"],
                                EncryptedKeyMaterial=os.urandom(256),
                                ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE")
    assert err(e) == "InvalidCiphertextException"
    with pytest.raises(ClientError) as e:
        kms.encrypt(KeyId=key, Plaintext=b"x")
    assert err(e) == "KMSInvalidStateException"

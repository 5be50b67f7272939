"""Bring your own key: material wrapped by `cryptography`, imported with boto3."""

import os

import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.keywrap import aes_key_wrap_with_padding

from conftest import err


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


def import_material(kms, key, material, **extra):
    params = kms.get_parameters_for_import(KeyId=key, WrappingAlgorithm="RSAES_OAEP_SHA_256",
                                           WrappingKeySpec="RSA_2048")
    return kms.import_key_material(
        KeyId=key, ImportToken=params["ImportToken"],
        EncryptedKeyMaterial=wrap(params, "RSAES_OAEP_SHA_256", material), **extra)


def rotations(kms, key):
    return kms.list_key_rotations(KeyId=key, IncludeKeyMaterial="ALL_KEY_MATERIAL")["Rotations"]


def test_rotation_of_imported_material(kms):
    """New material imported (NEW_KEY_MATERIAL) waits in PENDING_ROTATION until RotateKeyOnDemand
    makes it current; old ciphertext still decrypts; each material is listed with its import
    state, and deleting one by id makes the key wait for it."""
    key = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]["KeyId"]
    first, second = os.urandom(32), os.urandom(32)
    m1 = import_material(kms, key, first, ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE",
                         KeyMaterialDescription="batch 1")["KeyMaterialId"]
    assert len(m1) == 64
    assert kms.describe_key(KeyId=key)["KeyMetadata"]["CurrentKeyMaterialId"] == m1
    old_ct = kms.encrypt(KeyId=key, Plaintext=b"old")["CiphertextBlob"]
    # Rotating needs new material first.
    with pytest.raises(ClientError) as e:
        kms.rotate_key_on_demand(KeyId=key)
    assert err(e) == "KMSInvalidStateException"
    # The same material as new material, or a material id with NEW_KEY_MATERIAL: refused.
    with pytest.raises(ClientError) as e:
        import_material(kms, key, first, ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE",
                        ImportType="NEW_KEY_MATERIAL")
    assert err(e) == "IncorrectKeyMaterialException"
    with pytest.raises(ClientError) as e:
        import_material(kms, key, second, ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE",
                        ImportType="NEW_KEY_MATERIAL", KeyMaterialId=m1)
    assert err(e) == "ValidationException"
    m2 = import_material(kms, key, second, ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE",
                         ImportType="NEW_KEY_MATERIAL",
                         KeyMaterialDescription="batch 2")["KeyMaterialId"]
    assert m2 != m1
    listed = {r["KeyMaterialId"]: r for r in rotations(kms, key)}
    assert listed[m1]["KeyMaterialState"] == "CURRENT"
    assert listed[m2]["KeyMaterialState"] == "PENDING_ROTATION"
    assert listed[m2]["ImportState"] == "IMPORTED"
    assert listed[m2]["KeyMaterialDescription"] == "batch 2"
    assert "RotationDate" not in listed[m2]
    # Only completed rotations by default.
    assert kms.list_key_rotations(KeyId=key)["Rotations"] == []
    # A second pending material is refused until the first is rotated in or deleted.
    with pytest.raises(ClientError) as e:
        import_material(kms, key, os.urandom(32), ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE",
                        ImportType="NEW_KEY_MATERIAL")
    assert err(e) == "KMSInvalidStateException"
    # Pending material encrypts nothing yet.
    assert kms.describe_key(KeyId=key)["KeyMetadata"]["CurrentKeyMaterialId"] == m1

    kms.rotate_key_on_demand(KeyId=key)
    md = kms.describe_key(KeyId=key)["KeyMetadata"]
    assert md["CurrentKeyMaterialId"] == m2 and md["KeyState"] == "Enabled"
    done = kms.list_key_rotations(KeyId=key)["Rotations"]
    assert [(r["KeyMaterialId"], r["RotationType"], r["KeyMaterialState"]) for r in done] == [
        (m2, "ON_DEMAND", "CURRENT")]
    new_ct = kms.encrypt(KeyId=key, Plaintext=b"new")["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=old_ct)["Plaintext"] == b"old"
    assert kms.decrypt(CiphertextBlob=new_ct)["Plaintext"] == b"new"

    # Deleting the non-current material by id: the key waits for it (PendingImport).
    deleted = kms.delete_imported_key_material(KeyId=key, KeyMaterialId=m1)
    assert deleted["KeyMaterialId"] == m1
    assert kms.describe_key(KeyId=key)["KeyMetadata"]["KeyState"] == "PendingImport"
    listed = {r["KeyMaterialId"]: r for r in rotations(kms, key)}
    assert listed[m1]["ImportState"] == "PENDING_IMPORT"
    with pytest.raises(ClientError) as e:
        kms.decrypt(CiphertextBlob=new_ct)
    assert err(e) == "KMSInvalidStateException"
    # Re-importing it (EXISTING_KEY_MATERIAL, the default now, with its id) restores the key.
    with pytest.raises(ClientError) as e:
        import_material(kms, key, os.urandom(32), ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE",
                        KeyMaterialId=m1)
    assert err(e) == "IncorrectKeyMaterialException"
    import_material(kms, key, first, ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE",
                    ImportType="EXISTING_KEY_MATERIAL", KeyMaterialId=m1)
    assert kms.describe_key(KeyId=key)["KeyMetadata"]["KeyState"] == "Enabled"
    listed = {r["KeyMaterialId"]: r for r in rotations(kms, key)}
    assert listed[m1]["KeyMaterialDescription"] == "batch 1"  # kept when not given again
    assert kms.decrypt(CiphertextBlob=old_ct)["Plaintext"] == b"old"
    # Unknown material ids.
    with pytest.raises(ClientError) as e:
        kms.delete_imported_key_material(KeyId=key, KeyMaterialId="0" * 64)
    assert err(e) == "NotFoundException"
    with pytest.raises(ClientError) as e:
        kms.delete_imported_key_material(KeyId=key, KeyMaterialId="X" * 64)
    assert err(e) == "ValidationException"


def test_pending_material_can_be_replaced(kms):
    key = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]["KeyId"]
    import_material(kms, key, os.urandom(32), ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE")
    pending = import_material(kms, key, os.urandom(32), ImportType="NEW_KEY_MATERIAL",
                              ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE")["KeyMaterialId"]
    # Material pending rotation is not part of the key yet: deleting it leaves the key usable.
    kms.delete_imported_key_material(KeyId=key, KeyMaterialId=pending)
    assert kms.describe_key(KeyId=key)["KeyMetadata"]["KeyState"] == "Enabled"
    assert pending not in [r["KeyMaterialId"] for r in rotations(kms, key)]
    other = import_material(kms, key, os.urandom(32), ImportType="NEW_KEY_MATERIAL",
                            ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE")["KeyMaterialId"]
    kms.rotate_key_on_demand(KeyId=key)
    assert kms.describe_key(KeyId=key)["KeyMetadata"]["CurrentKeyMaterialId"] == other


def test_new_material_only_for_symmetric_keys(kms):
    private = ec.generate_private_key(ec.SECP256R1())
    pkcs8 = private.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())
    key = kms.create_key(Origin="EXTERNAL", KeySpec="ECC_NIST_P256",
                         KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]

    def imp(material, **extra):
        params = kms.get_parameters_for_import(
            KeyId=key, WrappingAlgorithm="RSA_AES_KEY_WRAP_SHA_256", WrappingKeySpec="RSA_4096")
        return kms.import_key_material(
            KeyId=key, ImportToken=params["ImportToken"],
            EncryptedKeyMaterial=wrap(params, "RSA_AES_KEY_WRAP_SHA_256", material),
            ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE", **extra)

    imp(pkcs8)
    other = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    with pytest.raises(ClientError) as e:
        imp(other, ImportType="NEW_KEY_MATERIAL")
    assert err(e) == "UnsupportedOperationException"
    with pytest.raises(ClientError) as e:
        kms.rotate_key_on_demand(KeyId=key)
    assert err(e) == "UnsupportedOperationException"
    with pytest.raises(ClientError) as e:
        kms.list_key_rotations(KeyId=key)
    assert err(e) == "UnsupportedOperationException"

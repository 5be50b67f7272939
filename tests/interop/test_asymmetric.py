"""Asymmetric and HMAC keys through boto3; every result checked with `cryptography` and
`openssl` using the public key from GetPublicKey."""

import hashlib
import shutil
import subprocess

import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from conftest import err


HASHES = {"256": hashes.SHA256(), "384": hashes.SHA384(), "512": hashes.SHA512()}


@pytest.mark.parametrize(
    "spec,alg",
    [
        ("RSA_2048", "RSASSA_PSS_SHA_256"),
        ("RSA_2048", "RSASSA_PSS_SHA_512"),
        ("RSA_3072", "RSASSA_PKCS1_V1_5_SHA_384"),
        ("ECC_NIST_P256", "ECDSA_SHA_256"),
        ("ECC_NIST_P384", "ECDSA_SHA_384"),
        ("ECC_NIST_P521", "ECDSA_SHA_512"),
        ("ECC_SECG_P256K1", "ECDSA_SHA_256"),
        ("ECC_NIST_EDWARDS25519", "ED25519_SHA_512"),
    ],
)
def test_signatures_verify_with_cryptography(kms, spec, alg):
    key = kms.create_key(KeySpec=spec, KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    message = b"the release artifact"
    sig = kms.sign(KeyId=key, Message=message, MessageType="RAW", SigningAlgorithm=alg)["Signature"]
    der = kms.get_public_key(KeyId=key)["PublicKey"]
    pub = serialization.load_der_public_key(der)
    h = HASHES.get(alg[-3:])
    if alg.startswith("RSASSA_PSS"):
        pub.verify(sig, message, padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size), h)
    elif alg.startswith("RSASSA_PKCS1"):
        pub.verify(sig, message, padding.PKCS1v15(), h)
    elif alg.startswith("ECDSA"):
        pub.verify(sig, message, ec.ECDSA(h))
    else:
        assert isinstance(pub, ed25519.Ed25519PublicKey)
        pub.verify(sig, message)
    # DIGEST signing agrees with RAW for the hash-based algorithms (not pure Ed25519).
    if h is not None and not alg.startswith("ED25519"):
        digest = hashlib.new(h.name, message).digest()
        sig2 = kms.sign(KeyId=key, Message=digest, MessageType="DIGEST", SigningAlgorithm=alg)
        assert kms.verify(KeyId=key, Message=message, Signature=sig2["Signature"],
                          SigningAlgorithm=alg)["SignatureValid"]


def test_signature_verifies_with_openssl(kms, tmp_path):
    if not shutil.which("openssl"):
        pytest.skip("openssl not installed")
    key = kms.create_key(KeySpec="ECC_NIST_P384", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    (tmp_path / "msg").write_bytes(b"hello openssl")
    sig = kms.sign(KeyId=key, Message=b"hello openssl", SigningAlgorithm="ECDSA_SHA_384")["Signature"]
    (tmp_path / "sig").write_bytes(sig)
    (tmp_path / "pub.der").write_bytes(kms.get_public_key(KeyId=key)["PublicKey"])
    p = subprocess.run(
        ["openssl", "dgst", "-sha384", "-verify", str(tmp_path / "pub.der"), "-keyform", "DER",
         "-signature", str(tmp_path / "sig"), str(tmp_path / "msg")],
        capture_output=True, text=True,
    )
    assert p.returncode == 0 and "Verified OK" in p.stdout, p.stdout + p.stderr


def test_signatures_made_elsewhere_verify_in_kms_only_when_valid(kms):
    key = kms.create_key(KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    sig = kms.sign(KeyId=key, Message=b"m", SigningAlgorithm="RSASSA_PKCS1_V1_5_SHA_256")["Signature"]
    bad = bytearray(sig)
    bad[10] ^= 1
    with pytest.raises(ClientError) as e:
        kms.verify(KeyId=key, Message=b"m", Signature=bytes(bad),
                   SigningAlgorithm="RSASSA_PKCS1_V1_5_SHA_256")
    assert err(e) == "KMSInvalidSignatureException"
    with pytest.raises(ClientError) as e:
        kms.sign(KeyId=key, Message=b"m", SigningAlgorithm="ECDSA_SHA_256")
    assert err(e) == "InvalidKeyUsageException"


def test_rsa_encryption_interoperates_with_cryptography(kms):
    key = kms.create_key(KeySpec="RSA_2048", KeyUsage="ENCRYPT_DECRYPT")["KeyMetadata"]["KeyId"]
    pub = serialization.load_der_public_key(kms.get_public_key(KeyId=key)["PublicKey"])
    for alg, h in (("RSAES_OAEP_SHA_1", hashes.SHA1()), ("RSAES_OAEP_SHA_256", hashes.SHA256())):
        ct = pub.encrypt(b"encrypted outside", padding.OAEP(mgf=padding.MGF1(h), algorithm=h, label=None))
        out = kms.decrypt(KeyId=key, CiphertextBlob=ct, EncryptionAlgorithm=alg)
        assert out["Plaintext"] == b"encrypted outside"
        assert out["EncryptionAlgorithm"] == alg


def test_hmac_keys(kms):
    key = kms.create_key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]["KeyId"]
    mac = kms.generate_mac(KeyId=key, Message=b"msg", MacAlgorithm="HMAC_SHA_256")["Mac"]
    assert len(mac) == 32
    assert kms.verify_mac(KeyId=key, Message=b"msg", Mac=mac, MacAlgorithm="HMAC_SHA_256")["MacValid"]
    with pytest.raises(ClientError) as e:
        kms.verify_mac(KeyId=key, Message=b"msh", Mac=mac, MacAlgorithm="HMAC_SHA_256")
    assert err(e) == "KMSInvalidMacException"


def test_data_key_pair_private_key_is_usable(kms):
    sym = kms.create_key()["KeyMetadata"]["KeyId"]
    pair = kms.generate_data_key_pair(KeyId=sym, KeyPairSpec="RSA_2048")
    private = serialization.load_der_private_key(pair["PrivateKeyPlaintext"], password=None)
    public = serialization.load_der_public_key(pair["PublicKey"])
    assert isinstance(private, rsa.RSAPrivateKey)
    assert private.public_key().public_numbers() == public.public_numbers()
    back = kms.decrypt(CiphertextBlob=pair["PrivateKeyCiphertextBlob"])["Plaintext"]
    assert back == pair["PrivateKeyPlaintext"]


@pytest.mark.parametrize("spec", ["ECC_NIST_P256", "ECC_NIST_EDWARDS25519", "ECC_SECG_P256K1"])
def test_data_key_pair_private_keys_load_in_cryptography_and_openssl(kms, spec, tmp_path):
    # PKCS#8 v1 (RFC 5208), as AWS documents: what OpenSSL 3.0 and cryptography load.
    sym = kms.create_key()["KeyMetadata"]["KeyId"]
    pair = kms.generate_data_key_pair(KeyId=sym, KeyPairSpec=spec)
    der = pair["PrivateKeyPlaintext"]
    private = serialization.load_der_private_key(der, password=None)
    public = serialization.load_der_public_key(pair["PublicKey"])
    assert private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # Version 0 in the PrivateKeyInfo: v1, without the v2 public-key field.
    assert der[der.index(b"\x02\x01") + 2] == 0
    if shutil.which("openssl"):
        path = tmp_path / "key.der"
        path.write_bytes(der)
        p = subprocess.run(["openssl", "pkey", "-inform", "DER", "-in", str(path), "-noout"],
                           capture_output=True, text=True)
        assert p.returncode == 0, p.stderr


def test_derive_shared_secret_matches_cryptography(kms):
    key = kms.create_key(KeySpec="ECC_NIST_P384", KeyUsage="KEY_AGREEMENT")["KeyMetadata"]["KeyId"]
    mine = ec.generate_private_key(ec.SECP384R1())
    peer_der = mine.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    out = kms.derive_shared_secret(KeyId=key, KeyAgreementAlgorithm="ECDH", PublicKey=peer_der)
    kms_pub = serialization.load_der_public_key(kms.get_public_key(KeyId=key)["PublicKey"])
    assert out["SharedSecret"] == mine.exchange(ec.ECDH(), kms_pub)
    with pytest.raises(ClientError) as e:
        kms.derive_shared_secret(KeyId=key, KeyAgreementAlgorithm="ECDH", PublicKey=b"junk")
    assert err(e) == "ValidationException"


ML_DSA_PUBLIC_LEN = {"ML_DSA_44": 1312, "ML_DSA_65": 1952, "ML_DSA_87": 2592}


@pytest.mark.parametrize("spec", sorted(ML_DSA_PUBLIC_LEN))
def test_ml_dsa_external_mu_is_fips_204_mu(kms, spec):
    """An EXTERNAL_MU signature over mu computed here (FIPS 204: mu = SHAKE256(SHAKE256(pk, 64)
    || 0 || 0 || M, 64)) verifies as a RAW signature over M, and the other way round."""
    key = kms.create_key(KeySpec=spec, KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    spki = kms.get_public_key(KeyId=key)["PublicKey"]
    pk = spki[-ML_DSA_PUBLIC_LEN[spec]:]
    message = b"a message hashed on the client"
    tr = hashlib.shake_256(pk).digest(64)
    mu = hashlib.shake_256(tr + b"\x00\x00" + message).digest(64)
    alg = "ML_DSA_SHAKE_256"
    sig = kms.sign(KeyId=key, Message=mu, MessageType="EXTERNAL_MU", SigningAlgorithm=alg)
    assert sig["SigningAlgorithm"] == alg
    assert kms.verify(KeyId=key, Message=message, MessageType="RAW",
                      Signature=sig["Signature"], SigningAlgorithm=alg)["SignatureValid"]
    raw = kms.sign(KeyId=key, Message=message, MessageType="RAW", SigningAlgorithm=alg)
    assert kms.verify(KeyId=key, Message=mu, MessageType="EXTERNAL_MU",
                      Signature=raw["Signature"], SigningAlgorithm=alg)["SignatureValid"]
    other = hashlib.shake_256(tr + b"\x00\x00" + b"another message").digest(64)
    with pytest.raises(ClientError) as e:
        kms.verify(KeyId=key, Message=other, MessageType="EXTERNAL_MU",
                   Signature=raw["Signature"], SigningAlgorithm=alg)
    assert err(e) == "KMSInvalidSignatureException"
    with pytest.raises(ClientError) as e:
        kms.sign(KeyId=key, Message=mu[:32], MessageType="EXTERNAL_MU", SigningAlgorithm=alg)
    assert err(e) == "ValidationException"
    with pytest.raises(ClientError) as e:
        kms.sign(KeyId=key, Message=mu, MessageType="DIGEST", SigningAlgorithm=alg)
    assert err(e) in ("ValidationException", "InvalidKeyUsageException")


ML_KEM = {"ML_KEM_512": (800, 768), "ML_KEM_768": (1184, 1088), "ML_KEM_1024": (1568, 1568)}


def _kyber(spec):
    ml_kem = pytest.importorskip("kyber_py.ml_kem")
    return getattr(ml_kem, spec)


@pytest.mark.parametrize("spec", sorted(ML_KEM))
def test_ml_kem_interoperates_with_kyber_py(kms, spec):
    """FIPS 203 on both sides: kyber-py encapsulates to the public key from GetPublicKey and
    KMS decapsulates; KMS encapsulates and the returned secret matches Decapsulate."""
    kem = _kyber(spec)
    ek_len, ct_len = ML_KEM[spec]
    meta = kms.create_key(KeySpec=spec, KeyUsage="ENCAPSULATE_DECAPSULATE")["KeyMetadata"]
    assert meta["KeySpec"] == spec
    assert meta["KeyUsage"] == "ENCAPSULATE_DECAPSULATE"
    assert meta["EncapsulationAlgorithms"] == ["ML_KEM"]
    key = meta["KeyId"]
    pub = kms.get_public_key(KeyId=key)
    assert pub["EncapsulationAlgorithms"] == ["ML_KEM"]
    spki = pub["PublicKey"]
    ek = spki[-ek_len:]
    assert len(spki) == ek_len + 22
    secret, ct = kem.encaps(ek)
    out = kms.decapsulate(KeyId=key, SharedSecretCiphertextBlob=ct, EncapsulationAlgorithm="ML_KEM")
    assert out["SharedSecret"] == secret
    assert out["EncapsulationAlgorithm"] == "ML_KEM"
    enc = kms.encapsulate(KeyId=key, EncapsulationAlgorithm="ML_KEM")
    assert len(enc["SharedSecretCiphertextBlob"]) == ct_len
    assert len(enc["SharedSecret"]) == 32
    back = kms.decapsulate(KeyId=key, SharedSecretCiphertextBlob=enc["SharedSecretCiphertextBlob"],
                           EncapsulationAlgorithm="ML_KEM")
    assert back["SharedSecret"] == enc["SharedSecret"]


def test_ml_kem_bad_input(kms):
    key = kms.create_key(KeySpec="ML_KEM_768", KeyUsage="ENCAPSULATE_DECAPSULATE")["KeyMetadata"]["KeyId"]
    enc = kms.encapsulate(KeyId=key, EncapsulationAlgorithm="ML_KEM")
    ct = bytearray(enc["SharedSecretCiphertextBlob"])
    # A changed ciphertext still decapsulates (implicit rejection), to another secret.
    ct[5] ^= 1
    other = kms.decapsulate(KeyId=key, SharedSecretCiphertextBlob=bytes(ct),
                            EncapsulationAlgorithm="ML_KEM")["SharedSecret"]
    assert len(other) == 32 and other != enc["SharedSecret"]
    # A ciphertext of the wrong length does not.
    with pytest.raises(ClientError) as e:
        kms.decapsulate(KeyId=key, SharedSecretCiphertextBlob=bytes(ct[:-1]),
                        EncapsulationAlgorithm="ML_KEM")
    assert err(e) == "InvalidCiphertextException"
    with pytest.raises(ClientError) as e:
        kms.encapsulate(KeyId=key, EncapsulationAlgorithm="ECDH")
    assert err(e) == "ValidationException"
    with pytest.raises(ClientError) as e:
        kms.create_key(KeySpec="ML_KEM_768", KeyUsage="KEY_AGREEMENT")
    assert err(e) == "ValidationException"
    with pytest.raises(ClientError) as e:
        kms.sign(KeyId=key, Message=b"m", SigningAlgorithm="ML_DSA_SHAKE_256")
    assert err(e) == "InvalidKeyUsageException"
    sym = kms.create_key()["KeyMetadata"]["KeyId"]
    with pytest.raises(ClientError) as e:
        kms.encapsulate(KeyId=sym, EncapsulationAlgorithm="ML_KEM")
    assert err(e) == "InvalidKeyUsageException"
    kms.disable_key(KeyId=key)
    with pytest.raises(ClientError) as e:
        kms.encapsulate(KeyId=key, EncapsulationAlgorithm="ML_KEM")
    assert err(e) == "DisabledException"


def test_ml_kem_data_key_pair_decapsulates_with_kyber_py(kms):
    kem = _kyber("ML_KEM_512")
    sym = kms.create_key()["KeyMetadata"]["KeyId"]
    pair = kms.generate_data_key_pair(KeyId=sym, KeyPairSpec="ML_KEM_512")
    assert pair["KeyPairSpec"] == "ML_KEM_512"
    ek = pair["PublicKey"][-800:]
    dk = pair["PrivateKeyPlaintext"][-1632:]
    secret, ct = kem.encaps(ek)
    assert kem.decaps(dk, ct) == secret

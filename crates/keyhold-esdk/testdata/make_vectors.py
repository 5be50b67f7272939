"""Makes the known-answer messages in this directory with the AWS Encryption SDK for Python
(aws-encryption-sdk 4.x), under a raw AES-256 wrapping key, so the Rust tests can open them
without KMS. Run from the repository root: .venv/bin/python crates/keyhold-esdk/testdata/make_vectors.py
The fail_ files are copies of a good message with one thing wrong."""

import json
import pathlib
import struct

import aws_encryption_sdk
from aws_encryption_sdk import CommitmentPolicy
from aws_encryption_sdk.identifiers import Algorithm, EncryptionKeyType, WrappingAlgorithm
from aws_encryption_sdk.internal.crypto.wrapping_keys import WrappingKey
from aws_encryption_sdk.key_providers.raw import RawMasterKeyProvider

HERE = pathlib.Path(__file__).parent
WRAPPING_KEY = bytes(range(32))
KEY_ID = b"keyhold-test-key"
PROVIDER = "keyhold-test"


class StaticProvider(RawMasterKeyProvider):
    provider_id = PROVIDER

    def _get_raw_key(self, key_id):
        return WrappingKey(wrapping_algorithm=WrappingAlgorithm.AES_256_GCM_IV12_TAG16_NO_PADDING,
                           wrapping_key=WRAPPING_KEY, wrapping_key_type=EncryptionKeyType.SYMMETRIC)


def provider():
    p = StaticProvider()
    p.add_master_key(KEY_ID)
    return p


def plaintext(n):
    return bytes((i * 7 + 3) % 251 for i in range(n))


client = aws_encryption_sdk.EncryptionSDKClient(
    commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT)

cases = [
    ("python_committed_empty", Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY, 0, 4096, {}),
    ("python_committed_frames", Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY, 10000, 4096,
     {"repo": "r-123", "purpose": "test"}),
    ("python_committed_exact", Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY, 8192, 1024,
     {"a": "b"}),
    ("python_signed_frames", Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384, 9000, 4096,
     {"repo": "r-456"}),
]
index = {"wrapping_key_hex": WRAPPING_KEY.hex(), "key_id": KEY_ID.decode(),
         "provider_id": PROVIDER, "plaintext": "byte i = (7 i + 3) mod 251", "messages": {}}
for name, alg, size, frame, ctx in cases:
    ct, _ = client.encrypt(source=plaintext(size), key_provider=provider(),
                           encryption_context=ctx, algorithm=alg, frame_length=frame)
    pt, _ = client.decrypt(source=ct, key_provider=provider())
    assert pt == plaintext(size)
    (HERE / f"{name}.bin").write_bytes(ct)
    index["messages"][name] = {"size": size, "frame": frame, "context": ctx}


def header_len(m):
    """The header's length up to (not including) its 16-byte tag."""
    pos = 1 + 2 + 32
    aad_len, = struct.unpack(">H", m[pos:pos + 2])
    pos += 2 + aad_len
    n, = struct.unpack(">H", m[pos:pos + 2])
    pos += 2
    for _ in range(n):
        for _ in range(3):
            l, = struct.unpack(">H", m[pos:pos + 2])
            pos += 2 + l
    return pos + 1 + 4 + 32


good = (HERE / "python_committed_frames.bin").read_bytes()
h = header_len(good)
frames_at = h + 16
frame = 4 + 12 + 4096 + 16
first, second = good[frames_at:frames_at + frame], good[frames_at + frame:frames_at + 2 * frame]
fails = {
    # A context value changed in the header: the header tag fails.
    "fail_altered_header": good.replace(b"r-123", b"r-124", 1),
    # Frames 1 and 2 swapped.
    "fail_swapped_frames": good[:frames_at] + second + first + good[frames_at + 2 * frame:],
    # Frame 2 dropped (the final frame then comes out of order).
    "fail_dropped_frame": good[:frames_at + frame] + good[frames_at + 2 * frame:],
    # The message cut inside its final frame.
    "fail_truncated_body": good[:-10],
    # The commitment changed (the header tag cannot be checked before it).
    "fail_wrong_commitment": good[:h - 32] + bytes([good[h - 32] ^ 1]) + good[h - 31:],
    # A byte of frame 1's ciphertext flipped.
    "fail_altered_frame": good[:frames_at + 20] + bytes([good[frames_at + 20] ^ 1])
    + good[frames_at + 21:],
}
signed = (HERE / "python_signed_frames.bin").read_bytes()
fails["fail_bad_signature"] = signed[:-5] + bytes([signed[-5] ^ 1]) + signed[-4:]
for name, data in fails.items():
    (HERE / f"{name}.bin").write_bytes(data)
    try:
        client.decrypt(source=data, key_provider=provider())
    except Exception:
        pass
    else:
        raise SystemExit(f"{name} decrypted with the Python SDK")
index["fail"] = sorted(fails)
(HERE / "vectors.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
print("ok")

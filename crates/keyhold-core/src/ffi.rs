//! The one place keyhold calls into AWS-LC directly: Ed25519ph (RFC 8032 prehash) and ML-DSA
//! over an external mu (FIPS 204, section 6.2 with the message representative computed by the
//! caller), which the safe aws-lc-rs API does not expose. Every call is checked against
//! known-answer vectors.
#![allow(unsafe_code)]

use aws_lc_sys::{EVP_PKEY, EVP_PKEY_CTX};

/// Signs a SHA-512 digest with Ed25519ph (empty context). `private` is seed || public key.
pub fn ed25519ph_sign(private: &[u8; 64], digest: &[u8; 64]) -> Option<[u8; 64]> {
    let mut sig = [0u8; 64];
    // SAFETY: every pointer refers to a live, correctly sized Rust array for the whole call
    // (64-byte signature out, 64-byte digest, 64-byte private key); the context is empty, so
    // its pointer is never read. AWS-LC reads and writes only those lengths.
    let ok = unsafe {
        aws_lc_sys::ED25519ph_sign_digest(
            sig.as_mut_ptr(),
            digest.as_ptr(),
            private.as_ptr(),
            std::ptr::null(),
            0,
        )
    };
    (ok == 1).then_some(sig)
}

/// Verifies an Ed25519ph signature over a SHA-512 digest (empty context).
pub fn ed25519ph_verify(public: &[u8; 32], digest: &[u8; 64], signature: &[u8; 64]) -> bool {
    // SAFETY: as for signing: fixed-size arrays that outlive the call, an empty context.
    let ok = unsafe {
        aws_lc_sys::ED25519ph_verify_digest(
            digest.as_ptr(),
            signature.as_ptr(),
            public.as_ptr(),
            std::ptr::null(),
            0,
        )
    };
    ok == 1
}

/// Length of the ML-DSA message representative mu.
pub const MU_LEN: usize = 64;

/// An owned `EVP_PKEY`, freed on drop.
struct Pkey(*mut EVP_PKEY);

impl Drop for Pkey {
    fn drop(&mut self) {
        // SAFETY: the pointer came non-null from an AWS-LC parse function and is freed once.
        unsafe { aws_lc_sys::EVP_PKEY_free(self.0) }
    }
}

/// An owned `EVP_PKEY_CTX`, freed on drop.
struct PkeyCtx(*mut EVP_PKEY_CTX);

impl Drop for PkeyCtx {
    fn drop(&mut self) {
        // SAFETY: the pointer came non-null from EVP_PKEY_CTX_new and is freed once.
        unsafe { aws_lc_sys::EVP_PKEY_CTX_free(self.0) }
    }
}

/// Parses a DER PKCS#8 private key (`private`) or SubjectPublicKeyInfo into an ML-DSA key;
/// `None` when the DER is malformed or holds another kind of key.
fn parse_mldsa(der: &[u8], private: bool) -> Option<Pkey> {
    let mut cbs = std::mem::MaybeUninit::<aws_lc_sys::CBS>::uninit();
    // SAFETY: CBS_init fully initialises the CBS to borrow `der`, which outlives every use of
    // the CBS in this function; the parse functions only read `der.len()` bytes through it and
    // return a new owned key (or null) that does not borrow it.
    let key = unsafe {
        aws_lc_sys::CBS_init(cbs.as_mut_ptr(), der.as_ptr(), der.len());
        if private {
            aws_lc_sys::EVP_parse_private_key(cbs.as_mut_ptr())
        } else {
            aws_lc_sys::EVP_parse_public_key(cbs.as_mut_ptr())
        }
    };
    if key.is_null() {
        clear_errors();
        return None;
    }
    let key = Pkey(key);
    // SAFETY: `key.0` is a live EVP_PKEY owned by `key`.
    let id = unsafe { aws_lc_sys::EVP_PKEY_id(key.0) };
    (id == aws_lc_sys::EVP_PKEY_PQDSA).then_some(key)
}

fn clear_errors() {
    // SAFETY: clears this thread's AWS-LC error queue; no pointers involved.
    unsafe { aws_lc_sys::ERR_clear_error() }
}

/// A context for `key`, initialised for signing or verifying.
fn pkey_ctx(key: &Pkey, sign: bool) -> Option<PkeyCtx> {
    // SAFETY: `key.0` is live for the call; the new context takes its own reference to it.
    let ctx = unsafe { aws_lc_sys::EVP_PKEY_CTX_new(key.0, std::ptr::null_mut()) };
    if ctx.is_null() {
        clear_errors();
        return None;
    }
    let ctx = PkeyCtx(ctx);
    // SAFETY: `ctx.0` is a live context owned by `ctx`.
    let ok = unsafe {
        if sign {
            aws_lc_sys::EVP_PKEY_sign_init(ctx.0)
        } else {
            aws_lc_sys::EVP_PKEY_verify_init(ctx.0)
        }
    };
    if ok == 1 {
        Some(ctx)
    } else {
        clear_errors();
        None
    }
}

/// Signs the message representative `mu` with an ML-DSA private key given as PKCS#8 DER.
/// `max_len` is the signature length of the parameter set.
pub fn mldsa_sign_mu(pkcs8: &[u8], mu: &[u8; MU_LEN], max_len: usize) -> Option<Vec<u8>> {
    let key = parse_mldsa(pkcs8, true)?;
    let ctx = pkey_ctx(&key, true)?;
    let mut sig = vec![0u8; max_len];
    let mut len = sig.len();
    // SAFETY: `sig` has `len` writable bytes and AWS-LC writes at most `len` (it checks the
    // buffer length first and updates `len` to the bytes written); `mu` is MU_LEN readable
    // bytes; the context is live. EVP_PKEY_sign on an ML-DSA key treats its input as mu.
    let ok = unsafe {
        aws_lc_sys::EVP_PKEY_sign(ctx.0, sig.as_mut_ptr(), &mut len, mu.as_ptr(), MU_LEN)
    };
    if ok != 1 || len > sig.len() {
        clear_errors();
        return None;
    }
    sig.truncate(len);
    Some(sig)
}

/// Verifies an ML-DSA signature over the message representative `mu` with a public key given as
/// DER SubjectPublicKeyInfo. `None` when the key is not an ML-DSA public key.
pub fn mldsa_verify_mu(spki: &[u8], mu: &[u8; MU_LEN], signature: &[u8]) -> Option<bool> {
    let key = parse_mldsa(spki, false)?;
    let ctx = pkey_ctx(&key, false)?;
    // SAFETY: `signature` and `mu` are readable for the lengths passed; the context is live.
    let ok = unsafe {
        aws_lc_sys::EVP_PKEY_verify(
            ctx.0,
            signature.as_ptr(),
            signature.len(),
            mu.as_ptr(),
            MU_LEN,
        )
    };
    if ok != 1 {
        clear_errors();
    }
    Some(ok == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8032 section 7.3, test vector "abc" for Ed25519ph.
    #[test]
    fn rfc8032_ed25519ph_vector() {
        let seed = hex::decode("833fe62409237b9d62ec77587520911e9a759cec1d19755b7da901b96dca3d42")
            .unwrap();
        let public =
            hex::decode("ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf")
                .unwrap();
        let expected = hex::decode(
            "98a70222f0b8121aa9d30f813d683f809e462b469c7ff87639499bb94e6dae41\
             31f85042463c2a355a2003d062adf5aaa10b8c61e636062aaad11c2a26083406",
        )
        .unwrap();
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA512, b"abc");
        let mut private = [0u8; 64];
        private[..32].copy_from_slice(&seed);
        private[32..].copy_from_slice(&public);
        let mut d = [0u8; 64];
        d.copy_from_slice(digest.as_ref());
        let sig = ed25519ph_sign(&private, &d).unwrap();
        assert_eq!(sig.to_vec(), expected);
        let mut pk = [0u8; 32];
        pk.copy_from_slice(&public);
        assert!(ed25519ph_verify(&pk, &d, &sig));
        let mut bad = sig;
        bad[0] ^= 1;
        assert!(!ed25519ph_verify(&pk, &d, &bad));
    }
}

//! The one place keyhold calls into AWS-LC directly: Ed25519ph (RFC 8032 prehash), which the
//! safe aws-lc-rs API does not expose. Every call is checked against known-answer vectors.
#![allow(unsafe_code)]

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

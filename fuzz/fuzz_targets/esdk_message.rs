//! Any bytes given to `keyhold decrypt` (an AWS Encryption SDK message) are refused with an
//! error, never a panic, a hang or an allocation the message's lengths ask for; and a real
//! message with bytes changed never decrypts.
#![no_main]
use keyhold_esdk::{decrypt, encrypt, Context, Edk, Error, Keyring, Suite};
use libfuzzer_sys::fuzz_target;
use zeroize::Zeroizing;

/// Every message "opens" with one fixed data key, so the fuzzer reaches the body.
struct Fixed;

impl Keyring for Fixed {
    fn generate(&self, _: &Context) -> Result<(Zeroizing<Vec<u8>>, Vec<Edk>), Error> {
        Ok((
            Zeroizing::new(vec![7; 32]),
            vec![Edk {
                provider_id: "fuzz".into(),
                provider_info: b"k".to_vec(),
                ciphertext: vec![1],
            }],
        ))
    }
    fn decrypt(&self, _: &[Edk], _: &Context) -> Result<Zeroizing<Vec<u8>>, Error> {
        Ok(Zeroizing::new(vec![7; 32]))
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    if selector % 2 == 0 {
        let _ = decrypt(&Fixed, None, &mut &rest[..], &mut std::io::sink());
        return;
    }
    // Change one byte of a real message: it must not decrypt.
    let mut msg = Vec::new();
    let suite = if selector & 2 == 0 { Suite::Committed } else { Suite::CommittedSigned };
    encrypt(&Fixed, suite, &Context::new(), 64, &mut &rest[..], &mut msg).unwrap();
    let at = usize::from(selector) * 31 % msg.len();
    msg[at] ^= 0x80;
    assert!(decrypt(&Fixed, None, &mut &msg[..], &mut std::io::sink()).is_err());
});

//! Encrypt and decrypt throughput of a 16 MiB message, against the speed of AES-256-GCM on one
//! core over the same bytes (the limit: every frame is one AES-GCM call). Run with
//! `cargo bench -p keyhold-esdk`.
#![allow(clippy::unwrap_used)]

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use keyhold_esdk::{decrypt, encrypt, Context, Edk, Error, Keyring, Suite, DEFAULT_FRAME};
use zeroize::Zeroizing;

struct Fixed;

impl Keyring for Fixed {
    fn generate(&self, _: &Context) -> Result<(Zeroizing<Vec<u8>>, Vec<Edk>), Error> {
        let edk = Edk {
            provider_id: "bench".into(),
            provider_info: b"k".to_vec(),
            ciphertext: vec![1; 100],
        };
        Ok((Zeroizing::new(vec![9; 32]), vec![edk]))
    }
    fn decrypt(&self, _: &[Edk], _: &Context) -> Result<Zeroizing<Vec<u8>>, Error> {
        Ok(Zeroizing::new(vec![9; 32]))
    }
}

const SIZE: usize = 16 << 20;

fn bench(c: &mut Criterion) {
    let plain = vec![0x5au8; SIZE];
    let mut g = c.benchmark_group("esdk_16MiB");
    g.throughput(Throughput::Bytes(SIZE as u64));
    g.sample_size(10);
    let mut message = Vec::with_capacity(SIZE + SIZE / 100);
    encrypt(
        &Fixed,
        Suite::Committed,
        &Context::new(),
        DEFAULT_FRAME,
        &mut &plain[..],
        &mut message,
    )
    .unwrap();
    g.bench_function("aes_256_gcm_one_core_4KiB_frames", |b| {
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[9; 32]).unwrap());
        let mut buf = plain.clone();
        b.iter(|| {
            for (i, chunk) in buf.chunks_mut(DEFAULT_FRAME as usize).enumerate() {
                let mut iv = [0u8; 12];
                iv[8..].copy_from_slice(&(i as u32).to_be_bytes());
                let _tag = key
                    .seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(iv),
                        Aad::from(&[0u8; 72]),
                        chunk,
                    )
                    .unwrap();
            }
        })
    });
    g.bench_function("encrypt", |b| {
        let mut out = Vec::with_capacity(message.len());
        b.iter(|| {
            out.clear();
            encrypt(
                &Fixed,
                Suite::Committed,
                &Context::new(),
                DEFAULT_FRAME,
                &mut &plain[..],
                &mut out,
            )
            .unwrap()
        })
    });
    g.bench_function("decrypt", |b| {
        let mut out = Vec::with_capacity(SIZE);
        b.iter(|| {
            out.clear();
            decrypt(&Fixed, None, &mut &message[..], &mut out).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! The PKCS#11 root key against SoftHSM2 (skipped with a SKIP line when SoftHSM2 is absent).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use keyhold_hsm::{HsmError, Pkcs11Config, Pkcs11RootKey, Pkcs11Token, RootKey};

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// Makes a SoftHSM2 token in a fresh directory; `None` when SoftHSM2 is not installed.
fn token(dir: &Path, label: &str) -> Option<Pkcs11Config> {
    if !Path::new(MODULE).exists() {
        println!("SKIP: SoftHSM2 is not installed ({MODULE} missing)");
        return None;
    }
    let tokens = dir.join("tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\n",
            tokens.display()
        ),
    )
    .unwrap();
    // SAFETY of the environment: this test binary has a single test function.
    std::env::set_var("SOFTHSM2_CONF", &conf);
    let out = Command::new("softhsm2-util")
        .args([
            "--init-token",
            "--free",
            "--label",
            label,
            "--pin",
            "1234",
            "--so-pin",
            "5678",
        ])
        .env("SOFTHSM2_CONF", &conf)
        .output()
        .expect("softhsm2-util");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(Pkcs11Config {
        module: MODULE.into(),
        token_label: label.into(),
        key_label: "keyhold-root".into(),
    })
}

#[test]
fn softhsm_root_key() {
    let dir = tempfile::tempdir().unwrap();
    let Some(config) = token(dir.path(), "keyhold-test") else {
        return;
    };
    // A second token for the custom key store part, made before the module is loaded.
    token(dir.path(), "keyhold-cks").unwrap();
    // A wrong PIN is refused (checked first: login state is shared by all sessions of a token).
    let e = Pkcs11RootKey::create(&config, "0000").unwrap_err();
    assert!(e.to_string().contains("PIN"), "{e}");

    // Create, wrap, unwrap; the key cannot leave the HSM.
    let rk = Pkcs11RootKey::create(&config, "1234").unwrap();
    assert_eq!(rk.provider(), "pkcs11");
    let w = rk.wrap(b"key material", b"label").unwrap();
    assert!(!w.windows(12).any(|x| x == b"key material"));
    assert_eq!(
        rk.unwrap(&w, b"label").unwrap().expose_secret(),
        b"key material"
    );
    assert!(matches!(
        rk.unwrap(&w, b"other"),
        Err(HsmError::UnwrapFailed)
    ));
    assert!(rk.key_is_unextractable().unwrap());
    assert!(
        Pkcs11RootKey::create(&config, "1234").is_err(),
        "one root key per label"
    );

    // Reopen with the PIN; a missing token, key or module is refused.
    let again = Pkcs11RootKey::open(&config, "1234").unwrap();
    assert_eq!(
        again.unwrap(&w, b"label").unwrap().expose_secret(),
        b"key material"
    );
    let missing_token = Pkcs11Config {
        token_label: "no-such-token".into(),
        ..config.clone()
    };
    assert!(Pkcs11RootKey::open(&missing_token, "1234")
        .unwrap_err()
        .to_string()
        .contains("no HSM token"));
    let missing_key = Pkcs11Config {
        key_label: "no-such-key".into(),
        ..config.clone()
    };
    assert!(Pkcs11RootKey::open(&missing_key, "1234")
        .unwrap_err()
        .to_string()
        .contains("no root key"));
    let missing_module = Pkcs11Config {
        module: "/nonexistent/libpkcs11.so".into(),
        ..config.clone()
    };
    assert!(Pkcs11RootKey::open(&missing_module, "1234").is_err());

    // Keys of a custom key store: made and used inside the token, never readable.
    // A wrong PIN is refused while no session of this process is logged in to the token.
    assert!(matches!(
        Pkcs11Token::connect(&config.module, "keyhold-cks", "9999"),
        Err(HsmError::WrongPin)
    ));
    let token = Pkcs11Token::connect(&config.module, "keyhold-cks", "1234").unwrap();
    assert!(matches!(
        Pkcs11Token::connect(&config.module, "absent", "1234"),
        Err(HsmError::NoToken(_))
    ));
    assert!(!token.has_key("cks-key-1").unwrap());
    token.generate_aes_key("cks-key-1").unwrap();
    assert!(
        token.generate_aes_key("cks-key-1").is_err(),
        "labels are unique"
    );
    assert!(token.key_is_unextractable("cks-key-1").unwrap());
    let sealed = token.gcm_seal("cks-key-1", b"aad", b"data key").unwrap();
    assert_eq!(
        token
            .gcm_open("cks-key-1", b"aad", &sealed)
            .unwrap()
            .expose_secret(),
        b"data key"
    );
    assert!(matches!(
        token.gcm_open("cks-key-1", b"other aad", &sealed),
        Err(HsmError::UnwrapFailed)
    ));
    assert!(matches!(
        token.gcm_seal("absent-key", b"", b"x"),
        Err(HsmError::NoKey(_))
    ));
    token.destroy_key("cks-key-1").unwrap();
    assert!(!token.has_key("cks-key-1").unwrap());

    // The key deleted while running: every later wrap and unwrap fails, closed.
    let out = Command::new("softhsm2-util")
        .args(["--delete-token", "--token", "keyhold-test"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(again.unwrap(&w, b"label").is_err());
    assert!(again.wrap(b"x", b"label").is_err());
}

//! The PKCS#11 root key: a non-extractable AES-256 key inside an HSM token. Every secret keyhold
//! stores is wrapped by AES-GCM inside the HSM; the key never leaves it. Tested with SoftHSM2.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use cryptoki::context::{CInitializeArgs, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use keyhold_core::secret::{random_bytes, SecretBytes};

use crate::{HsmError, RootKey};

const FORMAT: u8 = 0x02;
const IV_LEN: usize = 12;

/// Where the root key lives in the HSM (no secret: the PIN is given separately).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Pkcs11Config {
    /// The PKCS#11 module (e.g. `/usr/lib/softhsm/libsofthsm2.so`).
    pub module: PathBuf,
    /// The token's label.
    pub token_label: String,
    /// The AES key's label.
    pub key_label: String,
}

fn hsm(what: &str) -> impl Fn(CkError) -> HsmError + '_ {
    move |e| HsmError::Hsm(format!("{what}: {e}"))
}

/// A root key in a PKCS#11 token.
pub struct Pkcs11RootKey {
    /// The module, initialised.
    ctx: Pkcs11,
    /// The token's slot.
    slot: Slot,
    /// The key's label.
    key_label: String,
    /// Logged-in sessions ready for use (a session is not shareable between threads).
    sessions: Mutex<Vec<Session>>,
    /// The user PIN, for sessions opened later (login is lost when every session closes).
    pin: AuthPin,
}

impl std::fmt::Debug for Pkcs11RootKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11RootKey")
            .field("key_label", &self.key_label)
            .finish_non_exhaustive()
    }
}

/// One initialised context per module for the whole process: a PKCS#11 library is initialised
/// once, and dropping a context would finalise it for every user.
fn module(path: &Path) -> Result<Pkcs11, HsmError> {
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let mut map = MODULES
        .get_or_init(|| Mutex::new(HashMap::new()))
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(ctx) = map.get(path) {
        return Ok(ctx.clone());
    }
    let ctx = Pkcs11::new(path).map_err(hsm("loading the PKCS#11 module"))?;
    match ctx.initialize(CInitializeArgs::OsThreads) {
        Ok(())
        | Err(CkError::AlreadyInitialized)
        | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(hsm("initialising the PKCS#11 module")(e)),
    }
    map.insert(path.to_path_buf(), ctx.clone());
    Ok(ctx)
}

fn key_template(label: &str) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Label(label.as_bytes().to_vec()),
    ]
}

impl Pkcs11RootKey {
    fn connect(config: &Pkcs11Config, pin: &str) -> Result<Self, HsmError> {
        if !Path::new(&config.module).exists() {
            return Err(HsmError::Hsm(format!(
                "PKCS#11 module {} not found",
                config.module.display()
            )));
        }
        let ctx = module(&config.module)?;
        let mut found = None;
        for slot in ctx.get_slots_with_token().map_err(hsm("listing slots"))? {
            let info = ctx.get_token_info(slot).map_err(hsm("reading a token"))?;
            if info.label().trim_end() == config.token_label {
                found = Some(slot);
                break;
            }
        }
        let slot = found.ok_or_else(|| {
            HsmError::Hsm(format!("no HSM token labelled {:?}", config.token_label))
        })?;
        Ok(Self {
            ctx,
            slot,
            key_label: config.key_label.clone(),
            sessions: Mutex::new(Vec::new()),
            pin: AuthPin::from(pin.to_string()),
        })
    }

    /// Connects to the token and checks that the root key is there.
    pub fn open(config: &Pkcs11Config, pin: &str) -> Result<Self, HsmError> {
        let rk = Self::connect(config, pin)?;
        let session = rk.session()?;
        let key = rk.find_key(&session);
        rk.give_back(session);
        key?;
        Ok(rk)
    }

    /// Creates the root key in the token (refusing if one with that label exists).
    pub fn create(config: &Pkcs11Config, pin: &str) -> Result<Self, HsmError> {
        let rk = Self::connect(config, pin)?;
        let session = rk.session()?;
        if rk.find_key(&session).is_ok() {
            rk.give_back(session);
            return Err(HsmError::Hsm(format!(
                "the token already holds a key labelled {:?}",
                config.key_label
            )));
        }
        let mut template = key_template(&config.key_label);
        template.extend([
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::ValueLen(32.into()),
        ]);
        let made = session
            .generate_key(&Mechanism::AesKeyGen, &template)
            .map_err(hsm("generating the root key in the HSM"));
        rk.give_back(session);
        made?;
        Ok(rk)
    }

    fn session(&self) -> Result<Session, HsmError> {
        if let Some(s) = self
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
        {
            return Ok(s);
        }
        let s = self
            .ctx
            .open_rw_session(self.slot)
            .map_err(hsm("opening an HSM session"))?;
        match s.login(UserType::User, Some(&self.pin)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(s),
            Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => {
                Err(HsmError::Hsm("the HSM refused the PIN".into()))
            }
            Err(e) => Err(hsm("logging in to the HSM")(e)),
        }
    }

    fn give_back(&self, s: Session) {
        let mut pool = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < 16 {
            pool.push(s);
        }
    }

    fn find_key(&self, s: &Session) -> Result<ObjectHandle, HsmError> {
        let found = s
            .find_objects(&key_template(&self.key_label))
            .map_err(hsm("finding the root key"))?;
        found.first().copied().ok_or_else(|| {
            HsmError::Hsm(format!(
                "the HSM token has no root key labelled {:?}",
                self.key_label
            ))
        })
    }

    /// True when the key's value cannot be read out of the HSM.
    pub fn key_is_unextractable(&self) -> Result<bool, HsmError> {
        let s = self.session()?;
        let result = (|| {
            let key = self.find_key(&s)?;
            let attrs = s
                .get_attributes(key, &[AttributeType::Extractable, AttributeType::Sensitive])
                .map_err(hsm("reading key attributes"))?;
            let mut extractable = true;
            let mut sensitive = false;
            for a in attrs {
                match a {
                    Attribute::Extractable(v) => extractable = v,
                    Attribute::Sensitive(v) => sensitive = v,
                    _ => {}
                }
            }
            let value = s
                .get_attributes(key, &[AttributeType::Value])
                .map_err(hsm("reading key attributes"))?;
            Ok(!extractable && sensitive && value.is_empty())
        })();
        self.give_back(s);
        result
    }

    fn with_key<T>(
        &self,
        f: impl FnOnce(&Session, ObjectHandle) -> Result<T, HsmError>,
    ) -> Result<T, HsmError> {
        let s = self.session()?;
        let result = self.find_key(&s).and_then(|k| f(&s, k));
        self.give_back(s);
        result
    }
}

impl RootKey for Pkcs11RootKey {
    fn wrap(&self, secret: &[u8], label: &[u8]) -> Result<Vec<u8>, HsmError> {
        let mut iv = random_bytes(IV_LEN).map_err(|_| HsmError::Crypto("rng"))?;
        let iv_copy = iv.clone();
        let sealed = self.with_key(|s, key| {
            let params =
                GcmParams::new(&mut iv, label, 128.into()).map_err(hsm("GCM parameters"))?;
            s.encrypt(&Mechanism::AesGcm(params), key, secret)
                .map_err(hsm("wrapping in the HSM"))
        })?;
        let mut out = Vec::with_capacity(1 + IV_LEN + sealed.len());
        out.push(FORMAT);
        out.extend_from_slice(&iv_copy);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    fn unwrap(&self, wrapped: &[u8], label: &[u8]) -> Result<SecretBytes, HsmError> {
        if wrapped.len() < 1 + IV_LEN + 16 || wrapped.first() != Some(&FORMAT) {
            return Err(HsmError::UnwrapFailed);
        }
        let mut iv = wrapped[1..1 + IV_LEN].to_vec();
        let body = &wrapped[1 + IV_LEN..];
        self.with_key(|s, key| {
            let params =
                GcmParams::new(&mut iv, label, 128.into()).map_err(hsm("GCM parameters"))?;
            match s.decrypt(&Mechanism::AesGcm(params), key, body) {
                Ok(plain) => Ok(SecretBytes::new(plain)),
                // SoftHSM reports a failed tag as a general error: either way, the value does
                // not unwrap.
                Err(CkError::Pkcs11(
                    RvError::EncryptedDataInvalid
                    | RvError::GeneralError
                    | RvError::EncryptedDataLenRange,
                    _,
                )) => Err(HsmError::UnwrapFailed),
                Err(e) => Err(hsm("unwrapping in the HSM")(e)),
            }
        })
    }

    fn provider(&self) -> &'static str {
        "pkcs11"
    }
}

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

/// The module at `module_path`, initialised, and the slot of its token labelled `token_label`
/// (`None` when it has no such token).
fn find_slot(module_path: &Path, token_label: &str) -> Result<(Pkcs11, Option<Slot>), HsmError> {
    if !module_path.exists() {
        return Err(HsmError::Hsm(format!(
            "PKCS#11 module {} not found",
            module_path.display()
        )));
    }
    let ctx = module(module_path)?;
    for slot in ctx.get_slots_with_token().map_err(hsm("listing slots"))? {
        let info = ctx.get_token_info(slot).map_err(hsm("reading a token"))?;
        if info.label().trim_end() == token_label {
            return Ok((ctx, Some(slot)));
        }
    }
    Ok((ctx, None))
}

/// A logged-in connection to one PKCS#11 token: a pool of sessions over which AES keys inside
/// the token are made and used. The root key and the custom key stores both use it.
pub struct Pkcs11Token {
    /// The module, initialised.
    ctx: Pkcs11,
    /// The token's slot.
    slot: Slot,
    /// Logged-in sessions ready for use (a session is not shareable between threads).
    sessions: Mutex<Vec<Session>>,
    /// The user PIN, for sessions opened later (login is lost when every session closes).
    pin: AuthPin,
}

impl std::fmt::Debug for Pkcs11Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Token")
            .field("slot", &self.slot)
            .finish_non_exhaustive()
    }
}

impl Pkcs11Token {
    /// Finds the token labelled `token_label` in `module` and logs in with `pin` (one session
    /// is opened now, so a wrong PIN is refused here).
    pub fn connect(module_path: &Path, token_label: &str, pin: &str) -> Result<Self, HsmError> {
        let (ctx, slot) = find_slot(module_path, token_label)?;
        let slot = slot.ok_or_else(|| HsmError::NoToken(token_label.to_string()))?;
        let token = Self {
            ctx,
            slot,
            sessions: Mutex::new(Vec::new()),
            pin: AuthPin::from(pin.to_string()),
        };
        let s = token.session()?;
        token.give_back(s);
        Ok(token)
    }

    /// Whether `module_path` has a token labelled `token_label` (no login).
    pub fn exists(module_path: &Path, token_label: &str) -> Result<bool, HsmError> {
        Ok(find_slot(module_path, token_label)?.1.is_some())
    }

    /// Random bytes from the token's generator.
    pub fn random(&self, len: usize) -> Result<Vec<u8>, HsmError> {
        let s = self.session()?;
        let r = s
            .generate_random_vec(u32::try_from(len).map_err(|_| HsmError::Crypto("length"))?)
            .map_err(hsm("generating random bytes in the HSM"));
        self.give_back(s);
        r
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
            Err(CkError::Pkcs11(RvError::PinIncorrect | RvError::PinLenRange, _)) => {
                Err(HsmError::WrongPin)
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

    fn find_key(&self, s: &Session, label: &str) -> Result<ObjectHandle, HsmError> {
        let found = s
            .find_objects(&key_template(label))
            .map_err(hsm("finding a key"))?;
        found
            .first()
            .copied()
            .ok_or_else(|| HsmError::NoKey(label.to_string()))
    }

    /// Runs `f` with a session and the AES key labelled `label`.
    fn with_key<T>(
        &self,
        label: &str,
        f: impl FnOnce(&Session, ObjectHandle) -> Result<T, HsmError>,
    ) -> Result<T, HsmError> {
        let s = self.session()?;
        let result = self.find_key(&s, label).and_then(|k| f(&s, k));
        self.give_back(s);
        result
    }

    /// True when the token holds an AES key labelled `label`.
    pub fn has_key(&self, label: &str) -> Result<bool, HsmError> {
        match self.with_key(label, |_, _| Ok(())) {
            Ok(()) => Ok(true),
            Err(HsmError::NoKey(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Generates a non-extractable AES-256 key labelled `label` inside the token, refusing if
    /// one with that label exists.
    pub fn generate_aes_key(&self, label: &str) -> Result<(), HsmError> {
        if self.has_key(label)? {
            return Err(HsmError::Hsm(format!(
                "the token already holds a key labelled {label:?}"
            )));
        }
        let mut template = key_template(label);
        template.extend([
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::ValueLen(32.into()),
        ]);
        let s = self.session()?;
        let made = s
            .generate_key(&Mechanism::AesKeyGen, &template)
            .map_err(hsm("generating a key in the HSM"));
        self.give_back(s);
        made.map(|_| ())
    }

    /// Destroys the AES key labelled `label` (nothing if there is none).
    pub fn destroy_key(&self, label: &str) -> Result<(), HsmError> {
        match self.with_key(label, |s, k| {
            s.destroy_object(k).map_err(hsm("destroying a key"))
        }) {
            Ok(()) | Err(HsmError::NoKey(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Encrypts with AES-256-GCM inside the token under the key `label`, with `aad`
    /// authenticated; returns a fresh 12-byte IV, the ciphertext and the 16-byte tag.
    pub fn gcm_seal(&self, label: &str, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, HsmError> {
        let mut iv = random_bytes(IV_LEN).map_err(|_| HsmError::Crypto("rng"))?;
        let iv_copy = iv.clone();
        let sealed = self.with_key(label, |s, key| {
            let params = GcmParams::new(&mut iv, aad, 128.into()).map_err(hsm("GCM parameters"))?;
            s.encrypt(&Mechanism::AesGcm(params), key, plaintext)
                .map_err(hsm("encrypting in the HSM"))
        })?;
        let mut out = Vec::with_capacity(IV_LEN + sealed.len());
        out.extend_from_slice(&iv_copy);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Opens what [`Pkcs11Token::gcm_seal`] made with the same key and `aad`;
    /// `UnwrapFailed` when it does not authenticate.
    pub fn gcm_open(
        &self,
        label: &str,
        aad: &[u8],
        sealed: &[u8],
    ) -> Result<SecretBytes, HsmError> {
        if sealed.len() < IV_LEN + 16 {
            return Err(HsmError::UnwrapFailed);
        }
        let mut iv = sealed[..IV_LEN].to_vec();
        let body = &sealed[IV_LEN..];
        self.with_key(label, |s, key| {
            let params = GcmParams::new(&mut iv, aad, 128.into()).map_err(hsm("GCM parameters"))?;
            match s.decrypt(&Mechanism::AesGcm(params), key, body) {
                Ok(plain) => Ok(SecretBytes::new(plain)),
                // SoftHSM reports a failed tag as a general error: either way, the value does
                // not open.
                Err(CkError::Pkcs11(
                    RvError::EncryptedDataInvalid
                    | RvError::GeneralError
                    | RvError::EncryptedDataLenRange,
                    _,
                )) => Err(HsmError::UnwrapFailed),
                Err(e) => Err(hsm("decrypting in the HSM")(e)),
            }
        })
    }

    /// True when the value of the key `label` cannot be read out of the token.
    pub fn key_is_unextractable(&self, label: &str) -> Result<bool, HsmError> {
        self.with_key(label, |s, key| {
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
        })
    }
}

/// A root key in a PKCS#11 token.
pub struct Pkcs11RootKey {
    /// The token.
    token: Pkcs11Token,
    /// The key's label.
    key_label: String,
}

impl std::fmt::Debug for Pkcs11RootKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11RootKey")
            .field("key_label", &self.key_label)
            .finish_non_exhaustive()
    }
}

impl Pkcs11RootKey {
    fn connect(config: &Pkcs11Config, pin: &str) -> Result<Self, HsmError> {
        Ok(Self {
            token: Pkcs11Token::connect(&config.module, &config.token_label, pin)?,
            key_label: config.key_label.clone(),
        })
    }

    /// Connects to the token and checks that the root key is there.
    pub fn open(config: &Pkcs11Config, pin: &str) -> Result<Self, HsmError> {
        let rk = Self::connect(config, pin)?;
        if !rk.token.has_key(&rk.key_label)? {
            return Err(HsmError::Hsm(format!(
                "the HSM token has no root key labelled {:?}",
                rk.key_label
            )));
        }
        Ok(rk)
    }

    /// Creates the root key in the token (refusing if one with that label exists).
    pub fn create(config: &Pkcs11Config, pin: &str) -> Result<Self, HsmError> {
        let rk = Self::connect(config, pin)?;
        rk.token.generate_aes_key(&rk.key_label)?;
        Ok(rk)
    }

    /// True when the key's value cannot be read out of the HSM.
    pub fn key_is_unextractable(&self) -> Result<bool, HsmError> {
        self.token.key_is_unextractable(&self.key_label)
    }
}

impl RootKey for Pkcs11RootKey {
    fn wrap(&self, secret: &[u8], label: &[u8]) -> Result<Vec<u8>, HsmError> {
        let sealed = self.token.gcm_seal(&self.key_label, label, secret)?;
        let mut out = Vec::with_capacity(1 + sealed.len());
        out.push(FORMAT);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    fn unwrap(&self, wrapped: &[u8], label: &[u8]) -> Result<SecretBytes, HsmError> {
        match wrapped.split_first() {
            Some((&FORMAT, sealed)) => self.token.gcm_open(&self.key_label, label, sealed),
            _ => Err(HsmError::UnwrapFailed),
        }
    }

    fn provider(&self) -> &'static str {
        "pkcs11"
    }
}

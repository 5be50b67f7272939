//! Seeding: keys, aliases, tags, rotation settings and policies declared in a YAML or JSON
//! file, created idempotently when a server starts (`keyhold serve --seed FILE`).
//!
//! The whole file is parsed and checked before anything is written: a malformed file changes
//! nothing. Each key is found again on later starts by its `key_id` or, if it has none, by its
//! first alias; a key that exists is left as it is (aliases missing from it are added).

use std::collections::BTreeMap;

use base64::Engine as _;
use keyhold_core::ids::{AliasName, KeyId};
use keyhold_core::key::{KeyManager, KeySpec, KeyState, KeyUsage, Origin};
use keyhold_core::policy::{default_key_policy, PolicyDocument};
use keyhold_core::secret::SecretBytes;
use keyhold_hsm::RootKey;
use keyhold_store::{AliasRecord, KeyRecord, KeyVersionRecord, Store, StoreError, Tag};
use serde::Deserialize;

use crate::clock::DAY_MS;
use crate::error::KmsError;
use crate::Engine;

/// A seed file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedFile {
    /// The keys to create.
    #[serde(default)]
    pub keys: Vec<SeedKey>,
}

/// Rotation settings of a seeded key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedRotation {
    /// Automatic rotation on or off.
    pub enabled: bool,
    /// Days between rotations (90–2560, default 365).
    #[serde(default)]
    pub period_days: Option<u32>,
}

/// One seeded key.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedKey {
    /// A fixed key id (UUID).
    #[serde(default)]
    pub key_id: Option<String>,
    /// Owning account (default `111122223333`).
    #[serde(default)]
    pub account: Option<String>,
    /// Key spec (default `SYMMETRIC_DEFAULT`).
    #[serde(default)]
    pub key_spec: Option<String>,
    /// Key usage (default: the spec's first usage).
    #[serde(default)]
    pub key_usage: Option<String>,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
    /// Base64 key material (32 bytes for symmetric keys, raw bytes for HMAC keys, PKCS#8 DER
    /// for asymmetric keys); generated when absent.
    #[serde(default)]
    pub material: Option<String>,
    /// Aliases (`alias/...`).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Rotation settings.
    #[serde(default)]
    pub rotation: Option<SeedRotation>,
    /// Key policy, as a JSON string or an inline document.
    #[serde(default)]
    pub policy: Option<serde_json::Value>,
    /// False to create the key disabled.
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

impl std::fmt::Debug for SeedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeedKey")
            .field("key_id", &self.key_id)
            .field("aliases", &self.aliases)
            .finish_non_exhaustive()
    }
}

/// Parses a seed file. JSON when `json`, else YAML. Errors name the line and field.
pub fn parse(text: &str, json: bool) -> Result<SeedFile, String> {
    if json {
        serde_json::from_str(text)
            .map_err(|e| format!("line {} column {}: {e}", e.line(), e.column()))
    } else {
        serde_norway::from_str(text).map_err(|e| match e.location() {
            Some(l) => format!("line {} column {}: {e}", l.line(), l.column()),
            None => e.to_string(),
        })
    }
}

/// A seeded key, checked and ready to write.
#[derive(Debug)]
struct Planned {
    key: KeyRecord,
    material: SecretBytes,
    aliases: Vec<AliasName>,
    tags: Vec<Tag>,
}

/// Refuses a file in which two entries name the same key id, or the same alias in one
/// account, before anything is written (it would otherwise be half applied).
fn check_unique(planned: &[Planned]) -> Result<(), String> {
    let mut ids = std::collections::HashMap::new();
    let mut aliases = std::collections::HashMap::new();
    for (i, p) in planned.iter().enumerate() {
        if let Some(j) = ids.insert(p.key.key_id, i) {
            return Err(format!(
                "keys[{j}] and keys[{i}] both name key id {}",
                p.key.key_id
            ));
        }
        for a in &p.aliases {
            if let Some(j) = aliases.insert((p.key.account.clone(), a.to_string()), i) {
                if j != i {
                    return Err(format!("keys[{j}] and keys[{i}] both name alias {a}"));
                }
            }
        }
    }
    Ok(())
}

/// Finds the line of the `index`th entry of `keys:` for error messages (best effort).
fn entry_line(text: &str, index: usize) -> Option<usize> {
    let mut seen = 0;
    let mut in_keys = false;
    for (n, line) in text.lines().enumerate() {
        let t = line.trim_start();
        if t.starts_with("keys:") || t.starts_with("\"keys\"") {
            in_keys = true;
            continue;
        }
        if in_keys && (t.starts_with("- ") || t == "-" || t.starts_with('{')) {
            if seen == index {
                return Some(n + 1);
            }
            seen += 1;
        }
    }
    None
}

fn plan(i: usize, k: &SeedKey, now: i64) -> Result<Planned, String> {
    let at = |field: &str, msg: String| format!("keys[{i}].{field}: {msg}");
    let key_id = match &k.key_id {
        Some(id) => {
            KeyId::parse(id).map_err(|_| at("key_id", format!("{id:?} is not a key id (UUID)")))?
        }
        None => KeyId::generate(),
    };
    if k.key_id.is_none() && k.aliases.is_empty() {
        return Err(at(
            "key_id",
            "a seeded key needs a key_id or at least one alias, so a restart finds it again".into(),
        ));
    }
    let account = k.account.clone().unwrap_or_else(|| "111122223333".into());
    if !keyhold_core::ids::is_account_id(&account) {
        return Err(at(
            "account",
            format!("{account:?} is not a 12-digit account id"),
        ));
    }
    let spec = match &k.key_spec {
        Some(s) => {
            KeySpec::parse(s).ok_or_else(|| at("key_spec", format!("unknown key spec {s:?}")))?
        }
        None => KeySpec::SymmetricDefault,
    };
    if spec == KeySpec::Sm2 {
        return Err(at("key_spec", "SM2 is not supported".into()));
    }
    let usage = match &k.key_usage {
        Some(u) => {
            KeyUsage::parse(u).ok_or_else(|| at("key_usage", format!("unknown key usage {u:?}")))?
        }
        None => *spec.usages().first().unwrap_or(&KeyUsage::EncryptDecrypt),
    };
    if !spec.usages().contains(&usage) {
        return Err(at(
            "key_usage",
            format!("{usage} is not compatible with {spec}"),
        ));
    }
    let material = match &k.material {
        Some(b64) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|_| at("material", "is not valid base64".into()))?;
            let m = SecretBytes::new(bytes);
            keyhold_core::asym::check_material(spec, &m)
                .map_err(|e| at("material", e.to_string()))?;
            m
        }
        None if spec == KeySpec::SymmetricDefault => {
            SecretBytes::random(32).map_err(|e| at("material", e.to_string()))?
        }
        None => keyhold_core::asym::generate(spec).map_err(|e| at("key_spec", e.to_string()))?,
    };
    let mut aliases = Vec::new();
    for (j, a) in k.aliases.iter().enumerate() {
        let name = AliasName::parse(a).map_err(|e| at(&format!("aliases[{j}]"), e.to_string()))?;
        if name.is_reserved() {
            return Err(at(
                &format!("aliases[{j}]"),
                "alias/aws/ is reserved".into(),
            ));
        }
        aliases.push(name);
    }
    let tags = crate::ops::seed_tags(&k.tags).map_err(|e| at("tags", e.message))?;
    let policy = match &k.policy {
        None => default_key_policy(&account),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    };
    PolicyDocument::parse(&policy).map_err(|e| at("policy", e.0))?;
    let (rotation_period_days, next_rotation_at) = match &k.rotation {
        Some(r) if r.enabled => {
            if spec != KeySpec::SymmetricDefault {
                return Err(at("rotation", format!("{spec} keys do not rotate")));
            }
            let days = r.period_days.unwrap_or(365);
            if !(90..=2560).contains(&days) {
                return Err(at(
                    "rotation.period_days",
                    format!("{days} is not within 90-2560"),
                ));
            }
            (Some(days), Some(now + i64::from(days) * DAY_MS))
        }
        _ => (None, None),
    };
    let description = k.description.clone().unwrap_or_default();
    if description.chars().count() > 8192 {
        return Err(at("description", "is longer than 8192 characters".into()));
    }
    Ok(Planned {
        key: KeyRecord {
            key_id,
            account,
            description,
            key_spec: spec,
            key_usage: usage,
            origin: Origin::AwsKms,
            state: if k.enabled {
                KeyState::Enabled
            } else {
                KeyState::Disabled
            },
            created_at: now,
            deletion_date: None,
            pending_window_days: None,
            current_version: 1,
            policy,
            key_manager: KeyManager::Customer,
            rotation_period_days,
            next_rotation_at,
            expiration_model: None,
            valid_to: None,
            material_digest: None,
            custom_key_store_id: None,
            multi_region: None,
        },
        material,
        aliases,
        tags,
    })
}

/// What seeding did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SeedReport {
    /// Keys created now.
    pub created: usize,
    /// Keys that already existed.
    pub existing: usize,
    /// Aliases added.
    pub aliases: usize,
}

/// Creates `count` symmetric encryption keys of `account` (default key policy, generated
/// material wrapped under `root`), `batch` keys per store transaction, calling `progress` with
/// the running total. For scale tests (`keyhold admin seed-keys`); the keys are ordinary
/// afterwards. Run it with the servers on the store stopped or accept that their caches do not
/// know the new keys until first use (which reads them from the store, as for any key).
pub fn bulk_create(
    root: &dyn RootKey,
    store: &dyn Store,
    account: &str,
    count: usize,
    batch: usize,
    now_ms: i64,
    mut progress: impl FnMut(usize),
) -> Result<(), String> {
    let batch = batch.max(1);
    let mut done = 0;
    while done < count {
        let n = batch.min(count - done);
        let mut rows = Vec::with_capacity(n);
        for i in done..done + n {
            let entry = SeedKey {
                key_id: Some(KeyId::generate().to_string()),
                account: Some(account.to_owned()),
                key_spec: None,
                key_usage: None,
                description: None,
                material: None,
                aliases: Vec::new(),
                tags: BTreeMap::new(),
                rotation: None,
                policy: None,
                enabled: true,
            };
            let p = plan(i, &entry, now_ms)?;
            let id = p.key.key_id;
            let wrapped_material = root
                .wrap(
                    p.material.expose_secret(),
                    &KeyVersionRecord::wrap_label(&id, 1),
                )
                .map_err(|e| e.to_string())?;
            rows.push((
                p.key,
                KeyVersionRecord {
                    key_id: id,
                    version: 1,
                    wrapped_material,
                    created_at: now_ms,
                    rotation_type: None,
                    imported: None,
                },
            ));
        }
        store.create_keys(&rows).map_err(|e| e.to_string())?;
        done += n;
        progress(done);
    }
    Ok(())
}

impl Engine {
    /// Checks every key of `file`, then creates those that do not exist yet. `text` is the
    /// file's text, for line numbers in errors.
    pub fn apply_seed(&self, file: &SeedFile, text: &str) -> Result<SeedReport, String> {
        let now = self.now_ms();
        let mut planned = Vec::new();
        for (i, k) in file.keys.iter().enumerate() {
            let p = plan(i, k, now).map_err(|e| match entry_line(text, i) {
                Some(line) => format!("line {line}: {e}"),
                None => e,
            })?;
            planned.push(p);
        }
        check_unique(&planned)?;
        let mut report = SeedReport::default();
        let internal = |e: KmsError| e.message;
        let store_err = |e: StoreError| e.to_string();
        for p in planned {
            let _guard = self.lock_writes();
            let existing = match self.store().get_key(&p.key.key_id).map_err(store_err)? {
                Some(k) => Some(k.key_id),
                None => match p.aliases.first() {
                    Some(a) => self
                        .store()
                        .get_alias(&p.key.account, a)
                        .map_err(store_err)?
                        .map(|a| a.target),
                    None => None,
                },
            };
            let target = match existing {
                Some(id) => {
                    report.existing += 1;
                    id
                }
                None => {
                    let version = KeyVersionRecord {
                        key_id: p.key.key_id,
                        version: 1,
                        wrapped_material: self
                            .wrap_material(&p.key.key_id, 1, &p.material)
                            .map_err(internal)?,
                        created_at: now,
                        rotation_type: None,
                        imported: None,
                    };
                    self.store()
                        .create_key(&p.key, Some(&version), &p.tags, None)
                        .map_err(store_err)?;
                    report.created += 1;
                    p.key.key_id
                }
            };
            for a in &p.aliases {
                if self
                    .store()
                    .get_alias(&p.key.account, a)
                    .map_err(store_err)?
                    .is_none()
                {
                    self.store()
                        .create_alias(&AliasRecord {
                            account: p.key.account.clone(),
                            name: a.clone(),
                            target,
                            created_at: now,
                            updated_at: now,
                        })
                        .map_err(store_err)?;
                    report.aliases += 1;
                }
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_type_errors_name_the_line() {
        let text = "keys:\n  - key_id: 11111111-2222-4333-8444-555555555555\n    enabled: maybe\n";
        let e = parse(text, false).unwrap_err();
        assert!(e.starts_with("line 3"), "{e}");
        let e = parse("keys:\n  - colour: blue\n", false).unwrap_err();
        assert!(e.contains("colour") && e.contains("line 2"), "{e}");
        let e = parse("{\"keys\": [ {\"key_id\": 5} ]}", true).unwrap_err();
        assert!(e.starts_with("line 1"), "{e}");
    }

    /// Every entry of a YAML seed file, planned.
    fn planned(text: &str) -> Vec<Planned> {
        let file = parse(text, false).unwrap();
        file.keys
            .iter()
            .enumerate()
            .map(|(i, k)| plan(i, k, 0).unwrap())
            .collect()
    }

    #[test]
    fn two_entries_sharing_an_alias_are_refused_before_anything_is_written() {
        let planned_keys =
            planned("keys:\n  - aliases: [alias/a]\n  - aliases: [alias/b, alias/a]\n");
        let e = check_unique(&planned_keys).unwrap_err();
        assert!(
            e.contains("keys[0] and keys[1]") && e.contains("alias/a"),
            "{e}"
        );
        let twice = planned(
            "keys:\n  - key_id: 11111111-2222-4333-8444-555555555555\n  - key_id: \
             11111111-2222-4333-8444-555555555555\n",
        );
        assert!(check_unique(&twice).unwrap_err().contains("key id"));
    }

    #[test]
    fn semantic_errors_name_the_entry_and_field() {
        let text =
            "keys:\n  - aliases: [alias/a]\n  - aliases: [alias/b]\n    key_spec: RSA_9999\n";
        let file = parse(text, false).unwrap();
        let e = plan(1, &file.keys[1], 0).unwrap_err();
        assert!(e.contains("keys[1].key_spec"), "{e}");
        assert_eq!(entry_line(text, 1), Some(3));
        let file = parse("keys:\n  - description: no handle\n", false).unwrap();
        assert!(plan(0, &file.keys[0], 0).unwrap_err().contains("key_id"));
    }
}

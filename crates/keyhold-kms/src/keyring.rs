//! The keyring: key records, unwrapped key material and alias targets held in memory so the
//! cryptographic hot path does not read the store. Every state change through the engine
//! invalidates the entries it affects; material is zeroized when its last user drops it.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use keyhold_core::ids::KeyId;
use keyhold_core::policy::PolicyDocument;
use keyhold_core::secret::SecretBytes;
use keyhold_store::{GrantRecord, KeyRecord};

/// Entries kept per map before the map is emptied (a coarse bound on memory).
const MAX_ENTRIES: usize = 100_000;

/// A bounded map behind a read-write lock, whose entries optionally expire.
struct BoundedMap<K, V> {
    /// Entries and when they were cached.
    map: RwLock<HashMap<K, (V, Instant)>>,
    /// How long an entry may be served (`None`: until invalidated).
    ttl: Option<Duration>,
}

impl<K: Eq + Hash, V: Clone> BoundedMap<K, V> {
    fn new(ttl: Option<Duration>) -> Self {
        Self {
            map: RwLock::new(HashMap::new()),
            ttl,
        }
    }

    fn get(&self, k: &K) -> Option<V> {
        let m = self.map.read().unwrap_or_else(|p| p.into_inner());
        let (v, at) = m.get(k)?;
        if self.ttl.is_some_and(|ttl| at.elapsed() >= ttl) {
            return None;
        }
        Some(v.clone())
    }

    fn insert(&self, k: K, v: V) {
        let mut m = self.map.write().unwrap_or_else(|p| p.into_inner());
        if m.len() >= MAX_ENTRIES {
            m.clear();
        }
        m.insert(k, (v, Instant::now()));
    }

    fn retain(&self, mut f: impl FnMut(&K, &mut V) -> bool) {
        self.map
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|k, (v, _)| f(k, v));
    }
}

/// The cache of key state and material.
pub struct Keyring {
    /// Key records by id.
    records: BoundedMap<KeyId, Arc<KeyRecord>>,
    /// Unwrapped material by key and version.
    materials: BoundedMap<(KeyId, u32), Arc<SecretBytes>>,
    /// Alias targets by (account, alias name).
    aliases: BoundedMap<(String, String), KeyId>,
    /// Parsed key policies by key id.
    policies: BoundedMap<KeyId, Arc<PolicyDocument>>,
    /// Grants by key id.
    grants: BoundedMap<KeyId, Arc<Vec<GrantRecord>>>,
}

impl Default for Keyring {
    fn default() -> Self {
        Self::with_staleness(None)
    }
}

impl Keyring {
    /// A keyring whose state entries (records, aliases, policies, grants) are served for at
    /// most `bound` after they were read, so changes made by other nodes sharing the store are
    /// seen within it. Key material never changes once written and is not bounded.
    pub fn with_staleness(bound: Option<Duration>) -> Self {
        Self {
            records: BoundedMap::new(bound),
            materials: BoundedMap::new(None),
            aliases: BoundedMap::new(bound),
            policies: BoundedMap::new(bound),
            grants: BoundedMap::new(bound),
        }
    }

    /// A cached key record.
    pub fn record(&self, id: &KeyId) -> Option<Arc<KeyRecord>> {
        self.records.get(id)
    }

    /// Caches a key record.
    pub fn put_record(&self, rec: Arc<KeyRecord>) {
        self.records.insert(rec.key_id, rec);
    }

    /// Cached material of one key version.
    pub fn material(&self, id: &KeyId, version: u32) -> Option<Arc<SecretBytes>> {
        self.materials.get(&(*id, version))
    }

    /// Caches unwrapped material.
    pub fn put_material(&self, id: KeyId, version: u32, m: Arc<SecretBytes>) {
        self.materials.insert((id, version), m);
    }

    /// A cached alias target.
    pub fn alias(&self, account: &str, name: &str) -> Option<KeyId> {
        self.aliases.get(&(account.to_string(), name.to_string()))
    }

    /// Caches an alias target.
    pub fn put_alias(&self, account: &str, name: &str, target: KeyId) {
        self.aliases
            .insert((account.to_string(), name.to_string()), target);
    }

    /// A cached parsed policy.
    pub fn policy(&self, id: &KeyId) -> Option<Arc<PolicyDocument>> {
        self.policies.get(id)
    }

    /// Caches a parsed policy.
    pub fn put_policy(&self, id: KeyId, p: Arc<PolicyDocument>) {
        self.policies.insert(id, p);
    }

    /// Cached grants of a key.
    pub fn grants(&self, id: &KeyId) -> Option<Arc<Vec<GrantRecord>>> {
        self.grants.get(id)
    }

    /// Caches the grants of a key.
    pub fn put_grants(&self, id: KeyId, g: Arc<Vec<GrantRecord>>) {
        self.grants.insert(id, g);
    }

    /// Forgets the grants of a key (after one was created, retired or revoked).
    pub fn invalidate_grants(&self, id: &KeyId) {
        self.grants.retain(|k, _| k != id);
    }

    /// Forgets a key's record and policy (after any change to it).
    pub fn invalidate_key(&self, id: &KeyId) {
        self.records.retain(|k, _| k != id);
        self.policies.retain(|k, _| k != id);
    }

    /// Forgets a key's record and every version of its material (imported material replaced
    /// or deleted).
    pub fn forget_material(&self, id: &KeyId) {
        self.invalidate_key(id);
        self.materials.retain(|(k, _), _| k != id);
    }

    /// Forgets everything about a destroyed key: record, material and aliases.
    pub fn forget_key(&self, id: &KeyId) {
        self.invalidate_key(id);
        self.invalidate_grants(id);
        self.materials.retain(|(k, _), _| k != id);
        self.aliases.retain(|_, target| target != id);
    }

    /// Forgets all cached state (not material): after changes this node may have missed.
    pub fn clear_state(&self) {
        self.records.retain(|_, _| false);
        self.aliases.retain(|_, _| false);
        self.policies.retain(|_, _| false);
        self.grants.retain(|_, _| false);
    }

    /// Forgets one alias (after it was changed or deleted).
    pub fn invalidate_alias(&self, account: &str, name: &str) {
        self.aliases
            .retain(|(a, n), _| !(a == account && n == name));
    }
}

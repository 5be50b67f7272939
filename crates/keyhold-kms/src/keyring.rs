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

    fn remove(&self, k: &K) {
        self.map
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(k);
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
    /// Parsed key policies by their text, so that keys with the same policy (most keys have
    /// their account's default one) share one parsed document.
    documents: BoundedMap<String, Arc<PolicyDocument>>,
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
            documents: BoundedMap::new(None),
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

    /// A parsed document of the policy `text`, shared by every key whose policy it is.
    pub fn document(&self, text: &str) -> Option<Arc<PolicyDocument>> {
        let m = self.documents.map.read().unwrap_or_else(|p| p.into_inner());
        m.get(text).map(|(d, _)| d.clone())
    }

    /// Keeps the parsed document of the policy `text`.
    pub fn put_document(&self, text: &str, d: Arc<PolicyDocument>) {
        self.documents.insert(text.to_owned(), d);
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
        self.grants.remove(id);
    }

    /// Forgets a key's record and policy (after any change to it).
    pub fn invalidate_key(&self, id: &KeyId) {
        self.records.remove(id);
        self.policies.remove(id);
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

#[cfg(test)]
mod tests {
    use super::*;
    use keyhold_core::policy::default_key_policy;

    #[test]
    fn keys_with_one_policy_share_its_parsed_document() {
        let ring = Keyring::default();
        let text = default_key_policy("111122223333");
        assert!(ring.document(&text).is_none());
        let doc = Arc::new(PolicyDocument::parse(&text).unwrap());
        ring.put_document(&text, doc.clone());
        let shared = ring.document(&text).unwrap();
        assert!(Arc::ptr_eq(&doc, &shared));
        assert!(ring.document(&default_key_policy("444455556666")).is_none());
        let (a, b) = (KeyId::generate(), KeyId::generate());
        ring.put_policy(a, shared.clone());
        ring.put_policy(b, shared);
        ring.invalidate_key(&a);
        assert!(ring.policy(&a).is_none());
        assert!(Arc::ptr_eq(&ring.policy(&b).unwrap(), &doc));
        // The document outlives the keys that used it: it depends on the text alone.
        assert!(ring.document(&text).is_some());
    }
}

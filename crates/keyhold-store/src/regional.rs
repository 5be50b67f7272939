//! One Region's view of a store that holds several Regions.
//!
//! A deployment serving several Regions keeps them all in one store, so backups, root-key
//! rotation, principals, the audit chain and several nodes sharing PostgreSQL work as they do
//! for one Region. What is regional is told apart in the rows themselves:
//!
//! - the *home* Region (the first one a server names, and the only one before a deployment
//!   served several) keeps its rows as they always were;
//! - every other Region's keys, aliases and custom key stores carry `ACCOUNT@REGION` in their
//!   account column, so a Region lists, names and counts only its own;
//! - a multi-Region key has the same id in every Region it is replicated to; each Region's
//!   record of it is stored under [`KeyId::stored_in_region`] (the home Region's under the id
//!   itself), and every key id crossing this view is translated both ways.
//!
//! Lookups by key id or grant check the row's Region and answer "not found" for another
//! Region's. Principals, audit heads, admin events, whole-store operations and the S3 catalog
//! are not regional and pass through.

use std::sync::{Arc, Mutex};

use keyhold_core::ids::{AliasName, KeyId};

use crate::{
    AliasRecord, AuditHead, BucketRecord, CustomKeyStoreRecord, GrantRecord, KeyLastUsage,
    KeyRecord, KeyVersionRecord, ObjectCatalog, ObjectRecord, PartRecord, PrincipalRecord,
    RecordSink, RecordSource, Store, StoreError, Tag, UploadRecord, WrappedChange,
};

/// The Region part of a stored account (`111122223333@eu-west-1`).
const SEPARATOR: char = '@';

/// One Region's view of a shared store.
pub struct RegionalStore {
    inner: Arc<dyn Store>,
    region: String,
    home: bool,
}

impl RegionalStore {
    /// The view of `region` over `inner`; `home` for the Region whose rows carry no Region.
    pub fn new(inner: Arc<dyn Store>, region: &str, home: bool) -> Self {
        Self {
            inner,
            region: region.to_string(),
            home,
        }
    }

    /// The shared store behind every Region's view.
    pub fn inner(&self) -> &Arc<dyn Store> {
        &self.inner
    }

    /// The id this Region's record of `id` is stored under.
    pub fn stored_id(&self, id: &KeyId) -> KeyId {
        if self.home {
            *id
        } else {
            id.stored_in_region(&self.region)
        }
    }

    /// The id a stored id stands for in this Region (the same translation: it is its own
    /// inverse).
    fn logical_id(&self, stored: &KeyId) -> KeyId {
        self.stored_id(stored)
    }

    fn account_in(&self, account: &str) -> String {
        if self.home {
            account.to_string()
        } else {
            format!("{account}{SEPARATOR}{}", self.region)
        }
    }

    /// The account of a stored row, when the row is this Region's.
    fn account_out(&self, stored: &str) -> Option<String> {
        match stored.split_once(SEPARATOR) {
            None if self.home => Some(stored.to_string()),
            Some((account, region)) if !self.home && region == self.region => {
                Some(account.to_string())
            }
            _ => None,
        }
    }

    fn key_in(&self, k: &KeyRecord) -> KeyRecord {
        let mut k = k.clone();
        k.key_id = self.stored_id(&k.key_id);
        k.account = self.account_in(&k.account);
        k
    }

    fn key_out(&self, mut k: KeyRecord) -> Option<KeyRecord> {
        k.account = self.account_out(&k.account)?;
        k.key_id = self.logical_id(&k.key_id);
        Some(k)
    }

    fn version_in(&self, v: &KeyVersionRecord) -> KeyVersionRecord {
        let mut v = v.clone();
        v.key_id = self.stored_id(&v.key_id);
        v
    }

    fn version_out(&self, mut v: KeyVersionRecord) -> KeyVersionRecord {
        v.key_id = self.logical_id(&v.key_id);
        v
    }

    fn alias_in(&self, a: &AliasRecord) -> AliasRecord {
        let mut a = a.clone();
        a.account = self.account_in(&a.account);
        a.target = self.stored_id(&a.target);
        a
    }

    fn alias_out(&self, mut a: AliasRecord) -> Option<AliasRecord> {
        a.account = self.account_out(&a.account)?;
        a.target = self.logical_id(&a.target);
        Some(a)
    }

    fn grant_in(&self, g: &GrantRecord) -> GrantRecord {
        let mut g = g.clone();
        g.key_id = self.stored_id(&g.key_id);
        g
    }

    fn grant_out(&self, mut g: GrantRecord) -> GrantRecord {
        g.key_id = self.logical_id(&g.key_id);
        g
    }

    fn store_in(&self, s: &CustomKeyStoreRecord) -> CustomKeyStoreRecord {
        let mut s = s.clone();
        s.account = self.account_in(&s.account);
        s
    }

    fn store_out(&self, mut s: CustomKeyStoreRecord) -> Option<CustomKeyStoreRecord> {
        s.account = self.account_out(&s.account)?;
        Some(s)
    }

    /// True when the key stored under `stored` is this Region's.
    fn owns_stored(&self, stored: &KeyId) -> Result<bool, StoreError> {
        Ok(self
            .inner
            .get_key(stored)?
            .is_some_and(|k| self.account_out(&k.account).is_some()))
    }

    /// The stored ids of this Region among `ids`, translated.
    fn own_ids(&self, ids: Vec<KeyId>) -> Result<Vec<KeyId>, StoreError> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if self.owns_stored(&id)? {
                out.push(self.logical_id(&id));
            }
        }
        Ok(out)
    }

    /// True when the custom key store `id` is this Region's.
    fn owns_key_store(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self
            .inner
            .list_custom_key_stores(None)?
            .iter()
            .any(|s| s.id == id && self.account_out(&s.account).is_some()))
    }
}

impl Store for RegionalStore {
    fn create_key(
        &self,
        key: &KeyRecord,
        version: Option<&KeyVersionRecord>,
        tags: &[Tag],
        alias: Option<&AliasRecord>,
    ) -> Result<(), StoreError> {
        let version = version.map(|v| self.version_in(v));
        let alias = alias.map(|a| self.alias_in(a));
        self.inner
            .create_key(&self.key_in(key), version.as_ref(), tags, alias.as_ref())
    }

    fn create_custom_key_store(&self, s: &CustomKeyStoreRecord) -> Result<(), StoreError> {
        self.inner.create_custom_key_store(&self.store_in(s))
    }

    fn list_custom_key_stores(
        &self,
        account: Option<&str>,
    ) -> Result<Vec<CustomKeyStoreRecord>, StoreError> {
        let stored = match account {
            Some(a) => self
                .inner
                .list_custom_key_stores(Some(&self.account_in(a)))?,
            None => self.inner.list_custom_key_stores(None)?,
        };
        Ok(stored
            .into_iter()
            .filter_map(|s| self.store_out(s))
            .collect())
    }

    fn update_custom_key_store(&self, s: &CustomKeyStoreRecord) -> Result<(), StoreError> {
        if !self.owns_key_store(&s.id)? {
            return Err(StoreError::NotFound);
        }
        self.inner.update_custom_key_store(&self.store_in(s))
    }

    fn delete_custom_key_store(&self, id: &str) -> Result<(), StoreError> {
        if !self.owns_key_store(id)? {
            return Err(StoreError::NotFound);
        }
        self.inner.delete_custom_key_store(id)
    }

    fn count_keys_in_custom_key_store(&self, id: &str) -> Result<u64, StoreError> {
        self.inner.count_keys_in_custom_key_store(id)
    }

    fn create_keys(&self, keys: &[(KeyRecord, KeyVersionRecord)]) -> Result<(), StoreError> {
        let keys: Vec<_> = keys
            .iter()
            .map(|(k, v)| (self.key_in(k), self.version_in(v)))
            .collect();
        self.inner.create_keys(&keys)
    }

    fn replace_material(
        &self,
        key: &KeyRecord,
        versions: &[KeyVersionRecord],
    ) -> Result<(), StoreError> {
        let versions: Vec<_> = versions.iter().map(|v| self.version_in(v)).collect();
        self.inner.replace_material(&self.key_in(key), &versions)
    }

    fn keys_due_for_expiry(&self, now_ms: i64) -> Result<Vec<KeyId>, StoreError> {
        self.own_ids(self.inner.keys_due_for_expiry(now_ms)?)
    }

    fn get_key(&self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
        Ok(self
            .inner
            .get_key(&self.stored_id(id))?
            .and_then(|k| self.key_out(k)))
    }

    fn update_key(&self, key: &KeyRecord) -> Result<(), StoreError> {
        if !self.owns_stored(&self.stored_id(&key.key_id))? {
            return Err(StoreError::NotFound);
        }
        self.inner.update_key(&self.key_in(key))
    }

    fn list_keys(
        &self,
        account: &str,
        after: Option<&KeyId>,
        limit: usize,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        // Stored ids order the listing; markers are stored ids turned back into this
        // Region's (a multi-Region id therefore sorts by its stored form here).
        let after = after.map(|a| self.stored_id(a));
        Ok(self
            .inner
            .list_keys(&self.account_in(account), after.as_ref(), limit)?
            .into_iter()
            .filter_map(|k| self.key_out(k))
            .collect())
    }

    fn get_key_version(
        &self,
        id: &KeyId,
        version: u32,
    ) -> Result<Option<KeyVersionRecord>, StoreError> {
        Ok(self
            .inner
            .get_key_version(&self.stored_id(id), version)?
            .map(|v| self.version_out(v)))
    }

    fn add_key_version(
        &self,
        key: &KeyRecord,
        version: &KeyVersionRecord,
    ) -> Result<(), StoreError> {
        self.inner
            .add_key_version(&self.key_in(key), &self.version_in(version))
    }

    fn list_key_versions(&self, id: &KeyId) -> Result<Vec<KeyVersionRecord>, StoreError> {
        Ok(self
            .inner
            .list_key_versions(&self.stored_id(id))?
            .into_iter()
            .map(|v| self.version_out(v))
            .collect())
    }

    fn keys_due_for_rotation(&self, now_ms: i64) -> Result<Vec<KeyId>, StoreError> {
        self.own_ids(self.inner.keys_due_for_rotation(now_ms)?)
    }

    fn keys_due_for_deletion(&self, now_ms: i64) -> Result<Vec<KeyId>, StoreError> {
        self.own_ids(self.inner.keys_due_for_deletion(now_ms)?)
    }

    fn delete_key(&self, id: &KeyId) -> Result<(), StoreError> {
        let stored = self.stored_id(id);
        if !self.owns_stored(&stored)? {
            return Err(StoreError::NotFound);
        }
        self.inner.delete_key(&stored)
    }

    fn create_alias(&self, alias: &AliasRecord) -> Result<(), StoreError> {
        self.inner.create_alias(&self.alias_in(alias))
    }

    fn update_alias(
        &self,
        account: &str,
        name: &AliasName,
        target: &KeyId,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.inner.update_alias(
            &self.account_in(account),
            name,
            &self.stored_id(target),
            now_ms,
        )
    }

    fn delete_alias(&self, account: &str, name: &AliasName) -> Result<(), StoreError> {
        self.inner.delete_alias(&self.account_in(account), name)
    }

    fn get_alias(
        &self,
        account: &str,
        name: &AliasName,
    ) -> Result<Option<AliasRecord>, StoreError> {
        Ok(self
            .inner
            .get_alias(&self.account_in(account), name)?
            .and_then(|a| self.alias_out(a)))
    }

    fn list_aliases(
        &self,
        account: &str,
        target: Option<&KeyId>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AliasRecord>, StoreError> {
        let target = target.map(|t| self.stored_id(t));
        Ok(self
            .inner
            .list_aliases(&self.account_in(account), target.as_ref(), after, limit)?
            .into_iter()
            .filter_map(|a| self.alias_out(a))
            .collect())
    }

    fn put_tags(&self, id: &KeyId, tags: &[Tag]) -> Result<(), StoreError> {
        self.inner.put_tags(&self.stored_id(id), tags)
    }

    fn watch(&self, on_change: Box<dyn Fn(Option<KeyId>) + Send + Sync>) {
        let home = self.home;
        let region = self.region.clone();
        self.inner.watch(Box::new(move |changed| {
            on_change(changed.map(|id| {
                if home {
                    id
                } else {
                    id.stored_in_region(&region)
                }
            }))
        }));
    }

    fn remove_tags(&self, id: &KeyId, keys: &[String]) -> Result<(), StoreError> {
        self.inner.remove_tags(&self.stored_id(id), keys)
    }

    fn list_tags(&self, id: &KeyId) -> Result<Vec<Tag>, StoreError> {
        self.inner.list_tags(&self.stored_id(id))
    }

    fn create_grant(&self, grant: &GrantRecord) -> Result<(), StoreError> {
        self.inner.create_grant(&self.grant_in(grant))
    }

    fn list_grants(&self, key: &KeyId) -> Result<Vec<GrantRecord>, StoreError> {
        Ok(self
            .inner
            .list_grants(&self.stored_id(key))?
            .into_iter()
            .map(|g| self.grant_out(g))
            .collect())
    }

    fn list_retirable_grants(&self, retiring: &str) -> Result<Vec<GrantRecord>, StoreError> {
        let mut out = Vec::new();
        for g in self.inner.list_retirable_grants(retiring)? {
            if self.owns_stored(&g.key_id)? {
                out.push(self.grant_out(g));
            }
        }
        Ok(out)
    }

    fn find_grant(
        &self,
        grant_id: Option<&str>,
        token: Option<&str>,
    ) -> Result<Option<GrantRecord>, StoreError> {
        match self.inner.find_grant(grant_id, token)? {
            Some(g) if self.owns_stored(&g.key_id)? => Ok(Some(self.grant_out(g))),
            _ => Ok(None),
        }
    }

    fn delete_grant(&self, grant_id: &str) -> Result<(), StoreError> {
        match self.inner.find_grant(Some(grant_id), None)? {
            Some(g) if self.owns_stored(&g.key_id)? => self.inner.delete_grant(grant_id),
            _ => Err(StoreError::NotFound),
        }
    }

    fn put_key_usage(&self, usage: &[KeyLastUsage]) -> Result<(), StoreError> {
        let usage: Vec<_> = usage
            .iter()
            .map(|u| KeyLastUsage {
                key_id: self.stored_id(&u.key_id),
                ..u.clone()
            })
            .collect();
        self.inner.put_key_usage(&usage)
    }

    fn get_key_usage(&self, id: &KeyId) -> Result<Option<KeyLastUsage>, StoreError> {
        Ok(self
            .inner
            .get_key_usage(&self.stored_id(id))?
            .map(|u| KeyLastUsage { key_id: *id, ..u }))
    }

    fn export_to(&self, sink: Arc<Mutex<dyn RecordSink>>) -> Result<(), StoreError> {
        self.inner.export_to(sink)
    }

    fn import_from(&self, source: Arc<Mutex<dyn RecordSource>>) -> Result<(), StoreError> {
        self.inner.import_from(source)
    }

    fn replace_wrapped(&self, changes: &[WrappedChange]) -> Result<(), StoreError> {
        self.inner.replace_wrapped(changes)
    }

    fn put_audit_head(&self, head: &AuditHead) -> Result<(), StoreError> {
        self.inner.put_audit_head(head)
    }

    fn get_audit_head(&self, node: &str) -> Result<Option<AuditHead>, StoreError> {
        self.inner.get_audit_head(node)
    }

    fn add_admin_event(&self, event: &crate::AdminEvent) -> Result<(), StoreError> {
        self.inner.add_admin_event(event)
    }

    fn list_admin_events(&self, limit: usize) -> Result<Vec<crate::AdminEvent>, StoreError> {
        self.inner.list_admin_events(limit)
    }

    fn delete_admin_event(&self, id: &str) -> Result<(), StoreError> {
        self.inner.delete_admin_event(id)
    }

    fn create_principal(&self, p: &PrincipalRecord) -> Result<(), StoreError> {
        self.inner.create_principal(p)
    }

    fn get_principal(&self, access_key_id: &str) -> Result<Option<PrincipalRecord>, StoreError> {
        self.inner.get_principal(access_key_id)
    }

    fn list_principals(&self) -> Result<Vec<PrincipalRecord>, StoreError> {
        self.inner.list_principals()
    }

    fn delete_principal(&self, access_key_id_or_arn: &str) -> Result<(), StoreError> {
        self.inner.delete_principal(access_key_id_or_arn)
    }
}

impl ObjectCatalog for RegionalStore {
    fn create_bucket(&self, bucket: &BucketRecord) -> Result<(), StoreError> {
        self.inner.create_bucket(bucket)
    }
    fn get_bucket(&self, name: &str) -> Result<Option<BucketRecord>, StoreError> {
        self.inner.get_bucket(name)
    }
    fn list_buckets(&self, account: &str) -> Result<Vec<BucketRecord>, StoreError> {
        self.inner.list_buckets(account)
    }
    fn update_bucket(&self, name: &str, meta: &str) -> Result<(), StoreError> {
        self.inner.update_bucket(name, meta)
    }
    fn delete_bucket(&self, name: &str) -> Result<(), StoreError> {
        self.inner.delete_bucket(name)
    }
    fn put_object(&self, object: &ObjectRecord) -> Result<Option<ObjectRecord>, StoreError> {
        self.inner.put_object(object)
    }
    fn update_object(&self, object: &ObjectRecord, expected: &str) -> Result<(), StoreError> {
        self.inner.update_object(object, expected)
    }
    fn get_object(&self, bucket: &str, key: &str) -> Result<Option<ObjectRecord>, StoreError> {
        self.inner.get_object(bucket, key)
    }
    fn delete_object(&self, bucket: &str, key: &str) -> Result<Option<ObjectRecord>, StoreError> {
        self.inner.delete_object(bucket, key)
    }
    fn list_objects(
        &self,
        bucket: &str,
        from: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ObjectRecord>, StoreError> {
        self.inner.list_objects(bucket, from, after, limit)
    }
    fn create_upload(&self, upload: &UploadRecord) -> Result<(), StoreError> {
        self.inner.create_upload(upload)
    }
    fn get_upload(&self, upload_id: &str) -> Result<Option<UploadRecord>, StoreError> {
        self.inner.get_upload(upload_id)
    }
    fn list_uploads(
        &self,
        bucket: &str,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Vec<UploadRecord>, StoreError> {
        self.inner.list_uploads(bucket, after, limit)
    }
    fn uploads_started_before(
        &self,
        before_ms: i64,
        limit: usize,
    ) -> Result<Vec<UploadRecord>, StoreError> {
        self.inner.uploads_started_before(before_ms, limit)
    }
    fn put_part(&self, part: &PartRecord) -> Result<Option<PartRecord>, StoreError> {
        self.inner.put_part(part)
    }
    fn list_parts(&self, upload_id: &str) -> Result<Vec<PartRecord>, StoreError> {
        self.inner.list_parts(upload_id)
    }
    fn delete_upload(&self, upload_id: &str) -> Result<Vec<PartRecord>, StoreError> {
        self.inner.delete_upload(upload_id)
    }
    fn complete_upload(
        &self,
        upload_id: &str,
        object: &ObjectRecord,
    ) -> Result<(Option<ObjectRecord>, Vec<PartRecord>), StoreError> {
        self.inner.complete_upload(upload_id, object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key of `account` with id `id`, and its first version holding `wrapped`.
    fn key_with(id: KeyId, account: &str, wrapped: &[u8]) -> (KeyRecord, KeyVersionRecord) {
        let (mut k, mut v) = crate::conformance::key(account);
        k.key_id = id;
        v.key_id = id;
        v.wrapped_material = wrapped.to_vec();
        (k, v)
    }

    fn views() -> (tempfile::TempDir, RegionalStore, RegionalStore) {
        let dir = tempfile::tempdir().unwrap();
        let inner: Arc<dyn Store> =
            Arc::new(crate::SqliteStore::open(&dir.path().join("k.db")).unwrap());
        let home = RegionalStore::new(inner.clone(), "us-east-1", true);
        let other = RegionalStore::new(inner, "eu-west-1", false);
        (dir, home, other)
    }

    const ACCOUNT: &str = "111122223333";

    #[test]
    fn each_region_sees_only_its_own_keys_and_aliases() {
        let (_d, home, other) = views();
        let a = KeyId::generate();
        let b = KeyId::generate();
        for (view, id) in [(&home, a), (&other, b)] {
            let (k, v) = key_with(id, ACCOUNT, b"w");
            view.create_key(&k, Some(&v), &[], None).unwrap();
        }
        assert!(home.get_key(&b).unwrap().is_none());
        assert!(other.get_key(&a).unwrap().is_none());
        assert_eq!(other.get_key(&b).unwrap().unwrap().account, ACCOUNT);
        let listed: Vec<_> = other
            .list_keys(ACCOUNT, None, 10)
            .unwrap()
            .into_iter()
            .map(|k| k.key_id)
            .collect();
        assert_eq!(listed, vec![b]);
        assert_eq!(home.list_keys(ACCOUNT, None, 10).unwrap().len(), 1);
        // The same alias name in both Regions, each to its own key.
        let name = AliasName::parse("alias/app").unwrap();
        for (view, id) in [(&home, a), (&other, b)] {
            view.create_alias(&AliasRecord {
                account: ACCOUNT.into(),
                name: name.clone(),
                target: id,
                created_at: 1,
                updated_at: 1,
            })
            .unwrap();
        }
        assert_eq!(home.get_alias(ACCOUNT, &name).unwrap().unwrap().target, a);
        assert_eq!(other.get_alias(ACCOUNT, &name).unwrap().unwrap().target, b);
        // Another Region's key cannot be changed or deleted through this view.
        assert!(matches!(
            home.update_key(&key_with(b, ACCOUNT, b"w").0),
            Err(StoreError::NotFound)
        ));
        assert!(matches!(home.delete_key(&b), Err(StoreError::NotFound)));
        assert!(other.get_key(&b).unwrap().is_some());
    }

    #[test]
    fn a_multi_region_key_has_one_record_per_region() {
        let (_d, home, other) = views();
        let id = KeyId::generate_multi_region();
        for (view, wrapped) in [(&home, b"one"), (&other, b"two")] {
            let (k, v) = key_with(id, ACCOUNT, wrapped);
            view.create_key(&k, Some(&v), &[], None).unwrap();
        }
        assert_eq!(home.get_key(&id).unwrap().unwrap().key_id, id);
        assert_eq!(other.get_key(&id).unwrap().unwrap().key_id, id);
        assert_eq!(
            other
                .get_key_version(&id, 1)
                .unwrap()
                .unwrap()
                .wrapped_material,
            b"two"
        );
        assert_eq!(
            home.get_key_version(&id, 1)
                .unwrap()
                .unwrap()
                .wrapped_material,
            b"one"
        );
        other.delete_key(&id).unwrap();
        assert!(other.get_key(&id).unwrap().is_none());
        assert!(home.get_key(&id).unwrap().is_some());
    }
}

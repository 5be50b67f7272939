//! One conformance suite for every backend: the same checks run against SQLite always, and
//! against PostgreSQL when `KEYHOLD_TEST_POSTGRES_URL` is set (each run in a fresh schema).

use keyhold_core::grant::GrantConstraint;
use keyhold_core::ids::{AliasName, KeyId};
use keyhold_core::key::{KeyManager, KeySpec, KeyState, KeyUsage, Origin};
use keyhold_core::policy::default_key_policy;

use crate::{
    AliasRecord, BucketRecord, CustomKeyStoreRecord, GrantRecord, KeyLastUsage, KeyRecord,
    KeyVersionRecord, ObjectRecord, PartRecord, PrincipalRecord, Store, StoreError, Tag,
    UploadRecord, WrappedChange,
};

const ACCT: &str = "111122223333";

/// A fresh enabled symmetric key of `account` and its first version (also for the backends'
/// own tests).
pub(crate) fn key(account: &str) -> (KeyRecord, KeyVersionRecord) {
    let id = KeyId::generate();
    (
        KeyRecord {
            key_id: id,
            account: account.into(),
            description: "d".into(),
            key_spec: KeySpec::SymmetricDefault,
            key_usage: KeyUsage::EncryptDecrypt,
            origin: Origin::AwsKms,
            state: KeyState::Enabled,
            created_at: 1,
            deletion_date: None,
            pending_window_days: None,
            current_version: 1,
            policy: default_key_policy(account),
            key_manager: KeyManager::Customer,
            rotation_period_days: None,
            next_rotation_at: None,
            expiration_model: None,
            valid_to: None,
            material_digest: None,
            custom_key_store_id: None,
            multi_region: None,
        },
        KeyVersionRecord {
            key_id: id,
            version: 1,
            wrapped_material: vec![1, 2, 3],
            created_at: 1,
            rotation_type: None,
            imported: None,
        },
    )
}

/// A grant on `k` with a constraint.
pub(crate) fn grant(k: &KeyRecord) -> GrantRecord {
    GrantRecord {
        grant_id: "a".repeat(64),
        key_id: k.key_id,
        name: Some("n".into()),
        grantee: "arn:aws:iam::444455556666:user/x".into(),
        retiring: Some("arn:aws:iam::111122223333:user/r".into()),
        issuing_account: ACCT.into(),
        operations: vec!["Decrypt".into(), "Encrypt".into()],
        constraints: Some(GrantConstraint::from_json(
            "{\"EncryptionContextSubset\":{\"a\":\"b\"}}",
        )),
        token: "khgt1.token".into(),
        created_at: 3,
        grantee_service: None,
        retiring_service: None,
        source_arn: Some("arn:aws:ec2:us-east-1:111122223333:volume/vol-1".into()),
    }
}

/// The PostgreSQL server the tests use (`KEYHOLD_TEST_POSTGRES_URL`). Outside CI the
/// PostgreSQL tests are skipped without one; in CI (`CI` set) its absence fails them, so a run
/// that could not test PostgreSQL never passes silently.
pub(crate) fn pg_url() -> Option<String> {
    match std::env::var("KEYHOLD_TEST_POSTGRES_URL") {
        Ok(url) => Some(url),
        Err(_) if std::env::var_os("CI").is_some() => {
            panic!("KEYHOLD_TEST_POSTGRES_URL is not set in CI: PostgreSQL must be tested")
        }
        Err(_) => {
            println!("SKIP: KEYHOLD_TEST_POSTGRES_URL is not set");
            None
        }
    }
}

fn alias(name: &str, target: KeyId) -> AliasRecord {
    AliasRecord {
        account: ACCT.into(),
        name: AliasName::parse(name).unwrap(),
        target,
        created_at: 1,
        updated_at: 1,
    }
}

fn tag(k: &str, v: &str) -> Tag {
    Tag {
        key: k.into(),
        value: v.into(),
    }
}

/// Backs up a populated store and restores it into an empty one (of any backend).
pub fn backup_and_restore(from: &dyn Store, into: &dyn Store) {
    let (k, v) = key(ACCT);
    from.create_key(
        &k,
        Some(&v),
        &[tag("t", "1")],
        Some(&alias("alias/bk", k.key_id)),
    )
    .unwrap();
    let (mut k2, v2) = key(ACCT);
    from.create_key(&k2, Some(&v2), &[], None).unwrap();
    k2.current_version = 2;
    from.add_key_version(
        &k2,
        &KeyVersionRecord {
            version: 2,
            rotation_type: Some("AUTOMATIC".into()),
            imported: None,
            ..v2.clone()
        },
    )
    .unwrap();
    from.create_principal(&PrincipalRecord {
        access_key_id: "AKIABACKUP".into(),
        arn: "arn:aws:iam::111122223333:user/b".into(),
        account: ACCT.into(),
        wrapped_secret: vec![1, 2],
        created_at: 1,
    })
    .unwrap();
    let snap = from.export().unwrap();
    let text = serde_json::to_string(&snap).unwrap();
    let back: crate::Snapshot = serde_json::from_str(&text).unwrap();
    assert_eq!(back, snap);
    into.import(&back).unwrap();
    assert_eq!(into.export().unwrap(), snap);
    assert!(matches!(into.import(&back), Err(StoreError::NotEmpty)));
}

/// Runs every check against a fresh, empty store.
pub fn run_all(make: &dyn Fn() -> Box<dyn Store>) {
    backup_and_restore(make().as_ref(), make().as_ref());
    keys(make().as_ref());
    bulk_keys(make().as_ref());
    export_in_pages(make().as_ref(), make().as_ref());
    custom_key_stores(make().as_ref());
    versions_and_deletion(make().as_ref());
    aliases(make().as_ref());
    tags(make().as_ref());
    grants_and_usage(make().as_ref());
    principals(make().as_ref());
    audit_heads(make().as_ref());
    replace_wrapped(make().as_ref());
    object_catalog(make().as_ref());
}

fn keys(s: &dyn Store) {
    let (mut k, v) = key(ACCT);
    s.create_key(&k, Some(&v), &[tag("a", "1")], None).unwrap();
    assert!(matches!(
        s.create_key(&k, Some(&v), &[], None),
        Err(StoreError::AlreadyExists)
    ));
    assert_eq!(s.get_key(&k.key_id).unwrap(), Some(k.clone()));
    k.description = "changed".into();
    k.state = KeyState::PendingDeletion;
    k.deletion_date = Some(50);
    k.pending_window_days = Some(7);
    k.rotation_period_days = Some(90);
    k.next_rotation_at = Some(60);
    k.valid_to = Some(70);
    k.expiration_model = Some("KEY_MATERIAL_EXPIRES".into());
    k.material_digest = Some("ab".into());
    s.update_key(&k).unwrap();
    assert_eq!(s.get_key(&k.key_id).unwrap(), Some(k.clone()));
    assert_eq!(s.keys_due_for_deletion(49).unwrap(), vec![]);
    assert_eq!(s.keys_due_for_deletion(50).unwrap(), vec![k.key_id]);
    assert_eq!(s.keys_due_for_expiry(70).unwrap(), vec![k.key_id]);
    assert_eq!(
        s.keys_due_for_rotation(100).unwrap(),
        vec![],
        "only enabled keys rotate"
    );
    let (missing, _) = key(ACCT);
    assert!(matches!(s.update_key(&missing), Err(StoreError::NotFound)));

    for _ in 0..4 {
        let (k, v) = key(ACCT);
        s.create_key(&k, Some(&v), &[], None).unwrap();
    }
    let (other, ov) = key("444455556666");
    s.create_key(&other, Some(&ov), &[], None).unwrap();
    let first = s.list_keys(ACCT, None, 3).unwrap();
    assert_eq!(first.len(), 3);
    let rest = s.list_keys(ACCT, Some(&first[2].key_id), 3).unwrap();
    assert_eq!(rest.len(), 2);
    assert!(rest[0].key_id > first[2].key_id);
}

fn bulk_keys(s: &dyn Store) {
    let batch: Vec<_> = (0..50).map(|_| key(ACCT)).collect();
    s.create_keys(&batch).unwrap();
    assert_eq!(s.list_keys(ACCT, None, 100).unwrap().len(), 50);
    for (k, v) in &batch {
        assert_eq!(s.get_key(&k.key_id).unwrap().as_ref(), Some(k));
        assert_eq!(s.get_key_version(&k.key_id, 1).unwrap().as_ref(), Some(v));
    }
    // One key already present: the whole batch is refused and nothing of it is inserted.
    let mut again: Vec<_> = (0..5).map(|_| key(ACCT)).collect();
    again.push(batch[0].clone());
    assert!(matches!(
        s.create_keys(&again),
        Err(StoreError::AlreadyExists)
    ));
    assert_eq!(s.get_key(&again[0].0.key_id).unwrap(), None);
    assert_eq!(s.list_keys(ACCT, None, 100).unwrap().len(), 50);
}

/// An export of more rows than one page streams every row once, in order; an import that
/// fails part way leaves nothing behind.
fn export_in_pages(s: &dyn Store, into: &dyn Store) {
    use crate::{Record, RecordSink, RecordSource};
    use std::sync::{Arc, Mutex};
    let mut batch: Vec<_> = (0..2 * super::sql::EXPORT_PAGE_FOR_TESTS + 7)
        .map(|_| key(ACCT))
        .collect();
    s.create_keys(&batch).unwrap();
    batch.sort_by_key(|(k, _)| k.key_id.to_string());
    struct Count(Vec<Record>, usize);
    impl RecordSink for Count {
        fn restart(&mut self) -> Result<(), StoreError> {
            self.0.clear();
            self.1 += 1;
            Ok(())
        }
        fn put(&mut self, r: Record) -> Result<(), StoreError> {
            self.0.push(r);
            Ok(())
        }
    }
    let sink = Arc::new(Mutex::new(Count(Vec::new(), 0)));
    s.export_to(sink.clone()).unwrap();
    let got = std::mem::take(&mut sink.lock().unwrap().0);
    let keys: Vec<_> = got
        .iter()
        .filter_map(|r| match r {
            Record::Key(k) => Some(k.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        keys,
        batch.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>()
    );
    assert_eq!(got.len(), 2 * batch.len());
    // A source that fails after some records: the import is undone.
    struct Failing(Vec<Record>, usize);
    impl RecordSource for Failing {
        fn rewind(&mut self) -> Result<(), StoreError> {
            self.1 = 0;
            Ok(())
        }
        fn next_record(&mut self) -> Result<Option<Record>, StoreError> {
            self.1 += 1;
            if self.1 > 100 {
                return Err(StoreError::Backend("truncated".into()));
            }
            Ok(self.0.get(self.1 - 1).cloned())
        }
    }
    let failing = Arc::new(Mutex::new(Failing(got, 0)));
    assert!(into.import_from(failing).is_err());
    assert!(into.list_keys(ACCT, None, 10).unwrap().is_empty());
}

fn cks(id: &str, account: &str, name: &str, cluster: &str) -> CustomKeyStoreRecord {
    CustomKeyStoreRecord {
        id: id.into(),
        account: account.into(),
        name: name.into(),
        cluster_id: cluster.into(),
        trust_anchor: "-----BEGIN CERTIFICATE-----".into(),
        password_wrapped: vec![1, 2, 3],
        connected: false,
        created_at: 5,
    }
}

fn custom_key_stores(s: &dyn Store) {
    let a = cks("cks-a", ACCT, "one", "cluster-aaaaaaaaaaa");
    s.create_custom_key_store(&a).unwrap();
    // Names are unique per account, clusters everywhere.
    assert!(matches!(
        s.create_custom_key_store(&cks("cks-b", ACCT, "one", "cluster-bbbbbbbbbbb")),
        Err(StoreError::AlreadyExists)
    ));
    assert!(matches!(
        s.create_custom_key_store(&cks("cks-b", "444455556666", "x", "cluster-aaaaaaaaaaa")),
        Err(StoreError::AlreadyExists)
    ));
    let b = cks("cks-b", "444455556666", "one", "cluster-bbbbbbbbbbb");
    s.create_custom_key_store(&b).unwrap();
    assert_eq!(
        s.list_custom_key_stores(Some(ACCT)).unwrap(),
        vec![a.clone()]
    );
    assert_eq!(
        s.list_custom_key_stores(None).unwrap(),
        vec![a.clone(), b.clone()]
    );
    let mut a2 = a.clone();
    a2.name = "renamed".into();
    a2.connected = true;
    a2.password_wrapped = vec![9];
    s.update_custom_key_store(&a2).unwrap();
    assert_eq!(
        s.list_custom_key_stores(Some(ACCT)).unwrap(),
        vec![a2.clone()]
    );
    let mut clash = a2.clone();
    clash.cluster_id = b.cluster_id.clone();
    assert!(matches!(
        s.update_custom_key_store(&clash),
        Err(StoreError::AlreadyExists)
    ));
    assert!(matches!(
        s.update_custom_key_store(&cks("cks-zz", ACCT, "z", "cluster-zzzzzzzzzzz")),
        Err(StoreError::NotFound)
    ));
    let (mut k, v) = key(ACCT);
    k.origin = Origin::AwsCloudhsm;
    k.custom_key_store_id = Some(a.id.clone());
    s.create_key(&k, Some(&v), &[], None).unwrap();
    assert_eq!(s.get_key(&k.key_id).unwrap(), Some(k.clone()));
    assert_eq!(s.count_keys_in_custom_key_store(&a.id).unwrap(), 1);
    assert_eq!(s.count_keys_in_custom_key_store(&b.id).unwrap(), 0);
    let snap = s.export().unwrap();
    assert_eq!(snap.custom_key_stores.len(), 2);
    s.delete_custom_key_store(&b.id).unwrap();
    assert_eq!(s.list_custom_key_stores(None).unwrap(), vec![a2]);
}

fn versions_and_deletion(s: &dyn Store) {
    let (mut k, v) = key(ACCT);
    s.create_key(
        &k,
        Some(&v),
        &[tag("t", "v")],
        Some(&alias("alias/x", k.key_id)),
    )
    .unwrap();
    k.current_version = 2;
    k.next_rotation_at = Some(9);
    let v2 = KeyVersionRecord {
        version: 2,
        rotation_type: Some("ON_DEMAND".into()),
        imported: None,
        ..v.clone()
    };
    s.add_key_version(&k, &v2).unwrap();
    assert_eq!(
        s.list_key_versions(&k.key_id).unwrap(),
        vec![v.clone(), v2.clone()]
    );
    assert_eq!(s.get_key(&k.key_id).unwrap().unwrap().current_version, 2);
    // Imported material replaced atomically (with what is known of each material), or
    // removed.
    let imported = KeyVersionRecord {
        imported: Some(crate::ImportedMaterial {
            material_id: "f".repeat(64),
            description: Some("batch 7".into()),
            expiration_model: "KEY_MATERIAL_EXPIRES".into(),
            valid_to: Some(99),
            present: true,
            pending_rotation: true,
        }),
        ..v2.clone()
    };
    s.replace_material(&k, &[v.clone(), imported.clone()])
        .unwrap();
    assert_eq!(
        s.list_key_versions(&k.key_id).unwrap(),
        vec![v.clone(), imported]
    );
    s.replace_material(&k, &[]).unwrap();
    assert!(s.list_key_versions(&k.key_id).unwrap().is_empty());
    // Deletion removes everything about the key.
    s.put_key_usage(&[KeyLastUsage {
        key_id: k.key_id,
        operation: "Encrypt".into(),
        used_at: 1,
        event_id: "e".into(),
    }])
    .unwrap();
    s.delete_key(&k.key_id).unwrap();
    assert_eq!(s.get_key(&k.key_id).unwrap(), None);
    assert_eq!(
        s.get_alias(ACCT, &AliasName::parse("alias/x").unwrap())
            .unwrap(),
        None
    );
    assert!(s.list_tags(&k.key_id).unwrap().is_empty());
    assert_eq!(s.get_key_usage(&k.key_id).unwrap(), None);
    assert!(matches!(s.delete_key(&k.key_id), Err(StoreError::NotFound)));
}

fn aliases(s: &dyn Store) {
    let (k1, v1) = key(ACCT);
    let (k2, v2) = key(ACCT);
    s.create_key(&k1, Some(&v1), &[], None).unwrap();
    s.create_key(&k2, Some(&v2), &[], None).unwrap();
    for n in ["alias/b", "alias/a", "alias/C", "alias/a-2"] {
        s.create_alias(&alias(n, k1.key_id)).unwrap();
    }
    assert!(matches!(
        s.create_alias(&alias("alias/a", k2.key_id)),
        Err(StoreError::AlreadyExists)
    ));
    let names: Vec<String> = s
        .list_aliases(ACCT, None, None, 10)
        .unwrap()
        .iter()
        .map(|a| a.name.to_string())
        .collect();
    assert_eq!(
        names,
        ["alias/C", "alias/a", "alias/a-2", "alias/b"],
        "byte order"
    );
    let page = s.list_aliases(ACCT, None, Some("alias/a"), 2).unwrap();
    assert_eq!(page[0].name.as_str(), "alias/a-2");
    let a = AliasName::parse("alias/a").unwrap();
    s.update_alias(ACCT, &a, &k2.key_id, 5).unwrap();
    let got = s.get_alias(ACCT, &a).unwrap().unwrap();
    assert_eq!((got.target, got.updated_at), (k2.key_id, 5));
    assert_eq!(
        s.list_aliases(ACCT, Some(&k2.key_id), None, 10)
            .unwrap()
            .len(),
        1
    );
    s.delete_alias(ACCT, &a).unwrap();
    assert!(matches!(
        s.delete_alias(ACCT, &a),
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        s.update_alias(ACCT, &a, &k2.key_id, 6),
        Err(StoreError::NotFound)
    ));
}

fn tags(s: &dyn Store) {
    let (k, v) = key(ACCT);
    s.create_key(&k, Some(&v), &[tag("b", "1")], None).unwrap();
    s.put_tags(&k.key_id, &[tag("a", "1"), tag("b", "2"), tag("C", "3")])
        .unwrap();
    let t = s.list_tags(&k.key_id).unwrap();
    assert_eq!(t, vec![tag("C", "3"), tag("a", "1"), tag("b", "2")]);
    s.remove_tags(&k.key_id, &["a".into(), "absent".into()])
        .unwrap();
    assert_eq!(s.list_tags(&k.key_id).unwrap().len(), 2);
}

fn grants_and_usage(s: &dyn Store) {
    let (k, v) = key(ACCT);
    s.create_key(&k, Some(&v), &[], None).unwrap();
    let g = grant(&k);
    s.create_grant(&g).unwrap();
    assert!(matches!(s.create_grant(&g), Err(StoreError::AlreadyExists)));
    assert_eq!(s.list_grants(&k.key_id).unwrap(), vec![g.clone()]);
    assert_eq!(
        s.find_grant(None, Some("khgt1.token")).unwrap(),
        Some(g.clone())
    );
    assert_eq!(
        s.find_grant(Some(&g.grant_id), None).unwrap(),
        Some(g.clone())
    );
    assert_eq!(s.find_grant(None, None).unwrap(), None);
    assert_eq!(
        s.list_retirable_grants("arn:aws:iam::111122223333:user/r")
            .unwrap()
            .len(),
        1
    );
    s.delete_grant(&g.grant_id).unwrap();
    assert!(matches!(
        s.delete_grant(&g.grant_id),
        Err(StoreError::NotFound)
    ));

    let use_at = |t: i64, op: &str| KeyLastUsage {
        key_id: k.key_id,
        operation: op.into(),
        used_at: t,
        event_id: format!("e{t}"),
    };
    s.put_key_usage(&[use_at(10, "Encrypt")]).unwrap();
    s.put_key_usage(&[use_at(5, "Decrypt")]).unwrap();
    assert_eq!(
        s.get_key_usage(&k.key_id).unwrap(),
        Some(use_at(10, "Encrypt"))
    );
    let (gone, _) = key(ACCT);
    s.put_key_usage(&[KeyLastUsage {
        key_id: gone.key_id,
        ..use_at(1, "Encrypt")
    }])
    .unwrap();
    assert_eq!(
        s.get_key_usage(&gone.key_id).unwrap(),
        None,
        "unknown keys are skipped"
    );
}

fn audit_heads(s: &dyn Store) {
    assert_eq!(s.get_audit_head("node-1").unwrap(), None);
    let head = |digest: u64, hash: &str| crate::AuditHead {
        node: "node-1".into(),
        digest,
        digest_hash: hash.into(),
        recorded_at: 7,
    };
    s.put_audit_head(&head(3, "c")).unwrap();
    s.put_audit_head(&head(5, "e")).unwrap();
    // Never back to an older digest.
    s.put_audit_head(&head(4, "d")).unwrap();
    assert_eq!(s.get_audit_head("node-1").unwrap(), Some(head(5, "e")));
    assert_eq!(s.get_audit_head("node-2").unwrap(), None);
    // Administrative actions wait in order until audited.
    let ev = |id: &str, at: i64| crate::AdminEvent {
        id: id.into(),
        event_name: "CreatePrincipal".into(),
        detail: "{}".into(),
        created_at: at,
    };
    s.add_admin_event(&ev("b", 2)).unwrap();
    s.add_admin_event(&ev("a", 1)).unwrap();
    assert_eq!(
        s.list_admin_events(10).unwrap(),
        vec![ev("a", 1), ev("b", 2)]
    );
    s.delete_admin_event("a").unwrap();
    s.delete_admin_event("a").unwrap();
    assert_eq!(s.list_admin_events(10).unwrap(), vec![ev("b", 2)]);
}

fn principals(s: &dyn Store) {
    let p = PrincipalRecord {
        access_key_id: "AKIAEXAMPLE".into(),
        arn: "arn:aws:iam::111122223333:user/alice".into(),
        account: ACCT.into(),
        wrapped_secret: vec![9],
        created_at: 1,
    };
    s.create_principal(&p).unwrap();
    assert!(matches!(
        s.create_principal(&p),
        Err(StoreError::AlreadyExists)
    ));
    assert_eq!(s.get_principal("AKIAEXAMPLE").unwrap(), Some(p.clone()));
    assert_eq!(s.list_principals().unwrap(), vec![p.clone()]);
    s.delete_principal(&p.arn).unwrap();
    assert!(matches!(
        s.delete_principal(&p.arn),
        Err(StoreError::NotFound)
    ));
}

fn replace_wrapped(s: &dyn Store) {
    let (k, v) = key(ACCT);
    s.create_key(&k, Some(&v), &[], None).unwrap();
    let p = PrincipalRecord {
        access_key_id: "AKIAROTATE".into(),
        arn: "arn:aws:iam::111122223333:user/rot".into(),
        account: ACCT.into(),
        wrapped_secret: vec![9],
        created_at: 1,
    };
    s.create_principal(&p).unwrap();
    let material = |old: Vec<u8>, new: Vec<u8>| WrappedChange::KeyMaterial {
        key_id: k.key_id,
        version: 1,
        old,
        new,
    };
    let secret = |old: Vec<u8>, new: Vec<u8>| WrappedChange::PrincipalSecret {
        access_key_id: p.access_key_id.clone(),
        old,
        new,
    };
    s.replace_wrapped(&[material(vec![1, 2, 3], vec![4]), secret(vec![9], vec![5])])
        .unwrap();
    assert_eq!(
        s.get_key_version(&k.key_id, 1)
            .unwrap()
            .unwrap()
            .wrapped_material,
        vec![4]
    );
    assert_eq!(
        s.get_principal("AKIAROTATE")
            .unwrap()
            .unwrap()
            .wrapped_secret,
        vec![5]
    );
    // A change that leaves a wrapped row out is refused whole.
    let partial = s.replace_wrapped(&[material(vec![4], vec![6])]);
    assert!(
        matches!(partial, Err(StoreError::Backend(_))),
        "{partial:?}"
    );
    // A stale expectation anywhere aborts the whole change: the first row stays as it was.
    let stale = s.replace_wrapped(&[material(vec![4], vec![6]), secret(vec![9], vec![7])]);
    assert!(matches!(stale, Err(StoreError::Backend(_))), "{stale:?}");
    assert_eq!(
        s.get_key_version(&k.key_id, 1)
            .unwrap()
            .unwrap()
            .wrapped_material,
        vec![4]
    );
    assert_eq!(
        s.get_principal("AKIAROTATE")
            .unwrap()
            .unwrap()
            .wrapped_secret,
        vec![5]
    );
}

#[test]
fn sqlite_passes_the_conformance_suite() {
    run_all(&|| Box::new(crate::SqliteStore::in_memory().unwrap()));
}

#[test]
fn postgres_passes_the_conformance_suite() {
    let Some(url) = pg_url() else {
        return;
    };
    run_all(&|| Box::new(fresh_pg(&url)));
}

/// A PostgreSQL store in a new, empty schema.
pub fn fresh_pg(url: &str) -> crate::PgStore {
    let schema = format!("kh_test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = postgres::Client::connect(url, postgres::NoTls).unwrap();
    admin
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .unwrap();
    let mut config: postgres::Config = url.parse().unwrap();
    config.options(&format!("-c search_path={schema}"));
    crate::PgStore::open_config(config).unwrap()
}

#[test]
fn backups_move_between_sqlite_and_postgres() {
    let Some(url) = pg_url() else {
        return;
    };
    let sqlite = crate::SqliteStore::in_memory().unwrap();
    let pg = fresh_pg(&url);
    backup_and_restore(&sqlite, &pg);
    let back = crate::SqliteStore::in_memory().unwrap();
    back.import(&pg.export().unwrap()).unwrap();
    assert_eq!(back.export().unwrap(), sqlite.export().unwrap());
}

#[test]
fn postgres_migrations_run_once_with_several_nodes_starting() {
    let Some(url) = pg_url() else {
        return;
    };
    let schema = format!("kh_test_{}", uuid::Uuid::new_v4().simple());
    postgres::Client::connect(&url, postgres::NoTls)
        .unwrap()
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .unwrap();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (url, schema) = (url.clone(), schema.clone());
            std::thread::spawn(move || {
                let mut config: postgres::Config = url.parse().unwrap();
                config.options(&format!("-c search_path={schema}"));
                crate::PgStore::open_config(config).map(|_| ())
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap().unwrap();
    }
    // Two nodes racing for one alias: one wins.
    let a = fresh_pg(&url);
    let (k, v) = key(ACCT);
    a.create_key(&k, Some(&v), &[], None).unwrap();
    let results: Vec<_> = (0..2)
        .map(|_| a.create_alias(&alias("alias/race", k.key_id)))
        .collect();
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
}

#[test]
fn postgres_overload_is_refused_not_queued() {
    let Some(url) = pg_url() else {
        return;
    };
    let config: postgres::Config = url.parse().unwrap();
    let store = std::sync::Arc::new(crate::PgStore::open_tuned(config, 1, 1).unwrap());
    // One call holds the only connection, then a second fills the one-place queue (started
    // apart, so the first has surely left the queue when the second arrives).
    let busy: Vec<_> = (0..2)
        .map(|_| {
            let s = store.clone();
            let t = std::thread::spawn(move || {
                s.call(|c| {
                    c.execute("SELECT pg_sleep(2)", &[])
                        .map(|_| ())
                        .map_err(|e| StoreError::Backend(e.to_string()))
                })
            });
            std::thread::sleep(std::time::Duration::from_millis(300));
            t
        })
        .collect();
    let started = std::time::Instant::now();
    let e = store.list_principals().unwrap_err();
    assert!(matches!(e, StoreError::Busy(_)), "{e}");
    assert!(
        started.elapsed() < std::time::Duration::from_millis(500),
        "answered at once"
    );
    for t in busy {
        t.join().unwrap().unwrap();
    }
}

#[test]
fn postgres_migrates_an_older_schema() {
    let Some(url) = pg_url() else {
        return;
    };
    let schema = format!("kh_test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    admin
        .batch_execute(&format!(
            "CREATE SCHEMA {schema}; SET search_path = {schema}; {} \
             CREATE TABLE schema_version (version BIGINT NOT NULL); \
             INSERT INTO schema_version VALUES (1); \
             INSERT INTO keys VALUES ('1234abcd-12ab-34cd-56ef-1234567890ab', '111122223333', \
             'old', 'SYMMETRIC_DEFAULT', 'ENCRYPT_DECRYPT', 'AWS_KMS', 'Enabled', 5, NULL, NULL, 1);",
            crate::sql::migration(crate::sql::Dialect::Postgres, 0).unwrap()
        ))
        .unwrap();
    let mut config: postgres::Config = url.parse().unwrap();
    config.options(&format!("-c search_path={schema}"));
    let s = crate::PgStore::open_config(config).unwrap();
    let k = s
        .get_key(&KeyId::parse("1234abcd-12ab-34cd-56ef-1234567890ab").unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(k.description, "old");
    assert!(k.policy.contains("arn:aws:iam::111122223333:root"));
    assert_eq!(k.key_manager, KeyManager::Customer);
}

#[test]
fn postgres_rows_that_cannot_be_read_are_errors_not_panics() {
    let Some(url) = pg_url() else {
        return;
    };
    let s = fresh_pg(&url);
    let (k, v) = key(ACCT);
    s.create_key(&k, Some(&v), &[], None).unwrap();
    let tamper = |sql: &'static str| {
        s.call(move |c| {
            c.batch_execute(sql)
                .map_err(|e| StoreError::Backend(e.to_string()))
        })
        .unwrap();
    };
    // Values keyhold never writes, put there behind its back.
    tamper("UPDATE key_versions SET version = 4294967296");
    assert!(matches!(
        s.list_key_versions(&k.key_id),
        Err(StoreError::Backend(_))
    ));
    tamper("UPDATE keys SET current_version = -1");
    assert!(matches!(s.get_key(&k.key_id), Err(StoreError::Backend(_))));
    tamper("UPDATE keys SET current_version = 1, state = 'Melted'");
    assert!(matches!(s.get_key(&k.key_id), Err(StoreError::Backend(_))));
    tamper("UPDATE keys SET state = 'Enabled'; UPDATE grants SET constraints = '[]'");
    assert!(s.get_key(&k.key_id).unwrap().is_some());
}

fn object(bucket: &str, key: &str, meta: &str) -> ObjectRecord {
    ObjectRecord {
        bucket: bucket.into(),
        key: key.into(),
        modified_at: 5,
        meta: meta.into(),
    }
}

fn object_catalog(s: &dyn Store) {
    let b = BucketRecord {
        name: "photos".into(),
        account: ACCT.into(),
        created_at: 1,
        meta: "{}".into(),
    };
    s.create_bucket(&b).unwrap();
    assert!(matches!(
        s.create_bucket(&b),
        Err(StoreError::AlreadyExists)
    ));
    assert_eq!(s.get_bucket("photos").unwrap(), Some(b.clone()));
    assert_eq!(s.list_buckets(ACCT).unwrap(), vec![b.clone()]);
    assert!(s.list_buckets("444455556666").unwrap().is_empty());
    s.update_bucket("photos", "{\"x\":1}").unwrap();
    assert!(matches!(
        s.update_bucket("nope", "{}"),
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        s.put_object(&object("nope", "k", "m")),
        Err(StoreError::NotFound)
    ));

    // Keys come back in byte order (upper case before lower case, multi-byte last).
    for k in ["b", "a/2", "a/1", "B", "é", "a"] {
        assert_eq!(s.put_object(&object("photos", k, "v1")).unwrap(), None);
    }
    let replaced = s.put_object(&object("photos", "a", "v2")).unwrap();
    assert_eq!(replaced.unwrap().meta, "v1");
    let keys = |from: &str, after: Option<&str>, limit| {
        s.list_objects("photos", from, after, limit)
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect::<Vec<_>>()
    };
    assert_eq!(keys("", None, 10), ["B", "a", "a/1", "a/2", "b", "é"]);
    assert_eq!(keys("a/", None, 2), ["a/1", "a/2"]);
    assert_eq!(keys("a", Some("a/1"), 10), ["a/2", "b", "é"]);
    assert!(matches!(
        s.delete_bucket("photos"),
        Err(StoreError::NotEmpty)
    ));

    // A conditional update applies only over the expected document.
    let o = object("photos", "b", "tagged");
    assert!(matches!(
        s.update_object(&o, "stale"),
        Err(StoreError::NotFound)
    ));
    s.update_object(&o, "v1").unwrap();
    assert_eq!(s.get_object("photos", "b").unwrap().unwrap().meta, "tagged");

    // Uploads: parts replace one another by number; completing takes them all at once.
    let u = UploadRecord {
        upload_id: "u1".into(),
        bucket: "photos".into(),
        key: "big".into(),
        created_at: 10,
        meta: "{}".into(),
    };
    s.create_upload(&u).unwrap();
    let part = |n, meta: &str| PartRecord {
        upload_id: "u1".into(),
        part_number: n,
        modified_at: 11,
        meta: meta.into(),
    };
    assert_eq!(s.put_part(&part(2, "p2")).unwrap(), None);
    assert_eq!(s.put_part(&part(1, "p1")).unwrap(), None);
    assert_eq!(s.put_part(&part(1, "p1b")).unwrap().unwrap().meta, "p1");
    let parts: Vec<_> = s
        .list_parts("u1")
        .unwrap()
        .into_iter()
        .map(|p| p.meta)
        .collect();
    assert_eq!(parts, ["p1b", "p2"]);
    assert_eq!(s.list_uploads("photos", None, 10).unwrap(), vec![u.clone()]);
    assert_eq!(s.uploads_started_before(11, 10).unwrap(), vec![u.clone()]);
    assert!(s.uploads_started_before(10, 10).unwrap().is_empty());
    let (old, parts) = s
        .complete_upload("u1", &object("photos", "big", "done"))
        .unwrap();
    assert_eq!((old, parts.len()), (None, 2));
    assert!(matches!(
        s.complete_upload("u1", &object("photos", "big", "again")),
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        s.put_part(&part(3, "late")),
        Err(StoreError::NotFound)
    ));
    assert_eq!(s.get_object("photos", "big").unwrap().unwrap().meta, "done");

    s.create_upload(&UploadRecord {
        upload_id: "u2".into(),
        ..u
    })
    .unwrap();
    assert!(s.delete_upload("u2").unwrap().is_empty());
    assert!(matches!(s.delete_upload("u2"), Err(StoreError::NotFound)));

    for k in ["b", "a/2", "a/1", "B", "é", "a", "big"] {
        assert!(s.delete_object("photos", k).unwrap().is_some());
    }
    assert_eq!(s.delete_object("photos", "a").unwrap(), None);
    s.delete_bucket("photos").unwrap();
    assert!(matches!(
        s.delete_bucket("photos"),
        Err(StoreError::NotFound)
    ));
}

//! The Regions one deployment serves.
//!
//! Each Region has its own [`Engine`] over its own view of the one store
//! ([`keyhold_store::RegionalStore`]): keys, aliases, grants, AWS managed keys and custom key
//! stores are per Region, ARNs and audit events (`awsRegion`) name it, exactly as if each
//! Region were its own service. Principals, the root key, the clock and the audit log are the
//! deployment's. The first Region named is the *home* Region: its rows are stored as a
//! single-Region deployment stores them, so a deployment that adds Regions keeps its keys.
//!
//! Engines reach one another through [`Regions`] for what AWS keeps in sync between Regions:
//! multi-Region keys (`ReplicateKey`, `UpdatePrimaryRegion`, rotation and deletion).

use std::collections::BTreeMap;
use std::sync::Arc;

use keyhold_hsm::RootKey;
use keyhold_store::{RegionalStore, Store};

use crate::audit::AuditSink;
use crate::clock::Clock;
use crate::principal::Credential;
use crate::Engine;

/// Every commercial AWS Region name (what `serve --dev` answers for, as local emulators do).
pub const COMMERCIAL_REGIONS: &[&str] = &[
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
    "af-south-1",
    "ap-east-1",
    "ap-east-2",
    "ap-south-1",
    "ap-south-2",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-southeast-3",
    "ap-southeast-4",
    "ap-southeast-5",
    "ap-southeast-6",
    "ap-southeast-7",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "ca-central-1",
    "ca-west-1",
    "eu-central-1",
    "eu-central-2",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "eu-south-1",
    "eu-south-2",
    "eu-north-1",
    "il-central-1",
    "me-south-1",
    "me-central-1",
    "mx-central-1",
    "sa-east-1",
];

/// What every Region's engine shares.
pub struct Shared {
    /// The one store.
    pub store: Arc<dyn Store>,
    /// The root key.
    pub root: Arc<dyn RootKey>,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// The audit log.
    pub audit: Arc<dyn AuditSink>,
    /// The `--dev` credential, if any.
    pub dev: Option<Credential>,
}

/// The Regions served, one engine each.
pub struct Regions {
    home: String,
    engines: BTreeMap<String, Arc<Engine>>,
}

impl std::fmt::Debug for Regions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Regions")
            .field("home", &self.home)
            .field("served", &self.engines.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Regions {
    /// Engines for `names` (the first is the home Region; duplicates are ignored), each
    /// finished by `configure` (cache staleness, the PKCS#11 module).
    pub fn new(
        names: &[String],
        shared: Shared,
        configure: impl Fn(Engine) -> Engine,
    ) -> Arc<Self> {
        let names = if names.is_empty() {
            vec!["us-east-1".to_string()]
        } else {
            names.to_vec()
        };
        let home = names[0].clone();
        Arc::new_cyclic(|weak| {
            let mut engines = BTreeMap::new();
            for name in &names {
                if engines.contains_key(name) {
                    continue;
                }
                let view = Arc::new(RegionalStore::new(
                    shared.store.clone(),
                    name,
                    *name == home,
                ));
                let engine = Engine::regional(
                    name.clone(),
                    view,
                    shared.root.clone(),
                    shared.clock.clone(),
                    shared.audit.clone(),
                    shared.dev.clone(),
                    weak.clone(),
                );
                engines.insert(name.clone(), Arc::new(configure(engine)));
            }
            Self { home, engines }
        })
    }

    /// Listens once for changes other nodes make to the shared store, and makes every
    /// Region's engine forget the cached state they touch at once (the staleness bound stays as
    /// the fallback).
    pub fn watch_store(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        self.home().store.inner().watch(Box::new(move |changed| {
            if let Some(regions) = weak.upgrade() {
                for engine in regions.all() {
                    engine.forget_changed(changed);
                }
            }
        }));
    }

    /// The home Region's engine (the one the S3 gateway, volumes, console and ACME use).
    pub fn home(&self) -> &Arc<Engine> {
        // The home Region is always among the engines: it is the first name given.
        &self.engines[&self.home]
    }

    /// The engine of a Region, if it is served.
    pub fn get(&self, region: &str) -> Option<&Arc<Engine>> {
        self.engines.get(region)
    }

    /// Every Region's engine, by Region name.
    pub fn all(&self) -> impl Iterator<Item = &Arc<Engine>> {
        self.engines.values()
    }

    /// How many Regions are served.
    pub fn len(&self) -> usize {
        self.engines.len()
    }

    /// Never true: a deployment serves at least its home Region.
    pub fn is_empty(&self) -> bool {
        self.engines.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::MemoryAuditLog;
    use crate::clock::{ManualClock, DAY_MS};
    use crate::error::ErrorCode;
    use crate::ops::{Operation, Request, Response};
    use crate::principal::Principal;
    use crate::RequestMeta;
    use serde_json::{json, Value};

    struct Fixture {
        _dir: Arc<tempfile::TempDir>,
        regions: Arc<Regions>,
        clock: Arc<ManualClock>,
        store: Arc<dyn Store>,
        root: Arc<dyn RootKey>,
    }

    /// Engines for three Regions over one store, root and clock.
    fn engines(
        store: &Arc<dyn Store>,
        root: &Arc<dyn RootKey>,
        clock: &Arc<ManualClock>,
    ) -> Arc<Regions> {
        Regions::new(
            &["us-east-1".into(), "eu-west-1".into(), "ap-south-1".into()],
            Shared {
                store: store.clone(),
                root: root.clone(),
                clock: clock.clone(),
                audit: Arc::new(MemoryAuditLog::default()),
                dev: None,
            },
            |e| e,
        )
    }

    impl Fixture {
        /// New engines over this fixture's store, root and clock, with nothing cached (as
        /// after a restart).
        fn restarted(&self) -> Fixture {
            Fixture {
                _dir: self._dir.clone(),
                regions: engines(&self.store, &self.root, &self.clock),
                clock: self.clock.clone(),
                store: self.store.clone(),
                root: self.root.clone(),
            }
        }
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(keyhold_store::SqliteStore::open(&dir.path().join("k.db")).unwrap());
        let root: Arc<dyn RootKey> =
            Arc::new(keyhold_hsm::FileRootKey::create(&dir.path().join("root.key")).unwrap());
        let clock = Arc::new(ManualClock::new(1_800_000_000_000));
        Fixture {
            _dir: Arc::new(dir),
            regions: engines(&store, &root, &clock),
            clock,
            store,
            root,
        }
    }

    fn caller() -> Principal {
        Principal {
            arn: "arn:aws:iam::111122223333:user/admin".into(),
            account: "111122223333".into(),
            access_key_id: "AKIDADMIN".into(),
        }
    }

    fn call(f: &Fixture, region: &str, op: &str, body: Value) -> Result<Value, ErrorCode> {
        let engine = f.regions.get(region).unwrap();
        let op = Operation::from_name(op).unwrap();
        let req = Request::from_json(op, body.to_string().as_bytes()).map_err(|e| e.code)?;
        let resp: Response = engine
            .call(&caller(), &RequestMeta::default(), req)
            .map_err(|e| e.code)?;
        Ok(serde_json::from_slice(&resp.to_json().unwrap()).unwrap())
    }

    /// A multi-Region key made in us-east-1 and replicated into eu-west-1; its id.
    fn replicated(f: &Fixture) -> String {
        let made = call(f, "us-east-1", "CreateKey", json!({"MultiRegion": true})).unwrap();
        let id = made["KeyMetadata"]["KeyId"].as_str().unwrap().to_string();
        let body = json!({"KeyId": id, "ReplicaRegion": "eu-west-1"});
        call(f, "us-east-1", "ReplicateKey", body).unwrap();
        id
    }

    fn state(f: &Fixture, region: &str, id: &str) -> String {
        call(f, region, "DescribeKey", json!({"KeyId": id})).unwrap()["KeyMetadata"]["KeyState"]
            .as_str()
            .unwrap()
            .to_string()
    }

    #[test]
    fn a_primary_is_deleted_only_after_its_replicas() {
        let f = fixture();
        let made = call(&f, "us-east-1", "CreateKey", json!({"MultiRegion": true})).unwrap();
        let id = made["KeyMetadata"]["KeyId"].as_str().unwrap().to_string();
        assert!(id.starts_with("mrk-"));
        for r in ["eu-west-1", "ap-south-1"] {
            let rep = call(
                &f,
                "us-east-1",
                "ReplicateKey",
                json!({"KeyId": id, "ReplicaRegion": r}),
            )
            .unwrap();
            assert_eq!(rep["ReplicaKeyMetadata"]["KeyState"], "Creating");
            assert_eq!(state(&f, r, &id), "Enabled");
        }
        let sched = call(
            &f,
            "us-east-1",
            "ScheduleKeyDeletion",
            json!({"KeyId": id, "PendingWindowInDays": 7}),
        )
        .unwrap();
        assert_eq!(sched["KeyState"], "PendingReplicaDeletion");
        assert!(sched.get("DeletionDate").is_none());
        for r in ["eu-west-1", "ap-south-1"] {
            call(
                &f,
                r,
                "ScheduleKeyDeletion",
                json!({"KeyId": id, "PendingWindowInDays": 7}),
            )
            .unwrap();
        }
        // A month on, the replicas are gone and the primary's own week starts only now.
        f.clock.advance_ms(8 * DAY_MS);
        for e in f.regions.all() {
            e.run_due_deletions().unwrap();
        }
        assert_eq!(
            call(&f, "eu-west-1", "DescribeKey", json!({"KeyId": id})).unwrap_err(),
            ErrorCode::NotFoundException
        );
        let md =
            &call(&f, "us-east-1", "DescribeKey", json!({"KeyId": id})).unwrap()["KeyMetadata"];
        assert_eq!(md["KeyState"], "PendingDeletion");
        assert_eq!(md["MultiRegionConfiguration"]["ReplicaKeys"], json!([]));
        f.clock.advance_ms(6 * DAY_MS);
        f.regions.home().run_due_deletions().unwrap();
        assert_eq!(state(&f, "us-east-1", &id), "PendingDeletion");
        f.clock.advance_ms(2 * DAY_MS);
        f.regions.home().run_due_deletions().unwrap();
        assert_eq!(
            call(&f, "us-east-1", "DescribeKey", json!({"KeyId": id})).unwrap_err(),
            ErrorCode::NotFoundException
        );
        assert!(f.store.export().unwrap().keys.is_empty());
    }

    #[test]
    fn automatic_rotation_of_the_primary_reaches_its_replicas() {
        let f = fixture();
        let id = replicated(&f);
        call(
            &f,
            "us-east-1",
            "EnableKeyRotation",
            json!({"KeyId": id, "RotationPeriodInDays": 90}),
        )
        .unwrap();
        let status = call(
            &f,
            "eu-west-1",
            "GetKeyRotationStatus",
            json!({"KeyId": id}),
        )
        .unwrap();
        assert_eq!(status["KeyRotationEnabled"], true);
        assert_eq!(
            call(&f, "eu-west-1", "EnableKeyRotation", json!({"KeyId": id})).unwrap_err(),
            ErrorCode::UnsupportedOperationException
        );
        f.clock.advance_ms(91 * DAY_MS);
        // The replica's Region is asked first: it leaves the rotation to the primary.
        assert_eq!(
            f.regions
                .get("eu-west-1")
                .unwrap()
                .run_due_rotations()
                .unwrap(),
            0
        );
        assert_eq!(f.regions.home().run_due_rotations().unwrap(), 1);
        let rotations = call(&f, "eu-west-1", "ListKeyRotations", json!({"KeyId": id})).unwrap()
            ["Rotations"]
            .as_array()
            .unwrap()
            .len();
        assert_eq!(rotations, 1);
        // New ciphertext of the primary opens in the replica's Region, and the other way.
        let blob = call(
            &f,
            "us-east-1",
            "Encrypt",
            json!({"KeyId": id, "Plaintext": "aGVsbG8="}),
        )
        .unwrap()["CiphertextBlob"]
            .clone();
        let plain = call(&f, "eu-west-1", "Decrypt", json!({"CiphertextBlob": blob})).unwrap();
        assert_eq!(plain["Plaintext"], "aGVsbG8=");
        assert!(plain["KeyId"]
            .as_str()
            .unwrap()
            .starts_with("arn:aws:kms:eu-west-1:"));
    }

    #[test]
    fn a_replica_left_creating_by_a_crash_is_finished_on_first_use() {
        let f = fixture();
        let id = replicated(&f);
        let key_id = keyhold_core::ids::KeyId::parse(&id).unwrap();
        // As a crash right after the replica's row was written: the replica is Creating and
        // its primary does not list it yet.
        let eu = RegionalStore::new(f.store.clone(), "eu-west-1", false);
        let mut replica = eu.get_key(&key_id).unwrap().unwrap();
        replica.state = keyhold_core::key::KeyState::Creating;
        eu.update_key(&replica).unwrap();
        let us = RegionalStore::new(f.store.clone(), "us-east-1", true);
        let mut primary = us.get_key(&key_id).unwrap().unwrap();
        primary.multi_region.as_mut().unwrap().replicas.clear();
        us.update_key(&primary).unwrap();
        // A restart: engines with nothing cached.
        let again = f.restarted();
        assert_eq!(state(&again, "eu-west-1", &id), "Enabled");
        let md = &call(&again, "us-east-1", "DescribeKey", json!({"KeyId": id})).unwrap()
            ["KeyMetadata"]["MultiRegionConfiguration"];
        assert_eq!(md["ReplicaKeys"][0]["Region"], "eu-west-1");
        let body = json!({"KeyId": id, "Plaintext": "eA=="});
        let blob = call(&again, "us-east-1", "Encrypt", body).unwrap()["CiphertextBlob"].clone();
        let plain = call(
            &again,
            "eu-west-1",
            "Decrypt",
            json!({"CiphertextBlob": blob}),
        )
        .unwrap();
        assert_eq!(plain["Plaintext"], "eA==");
    }

    #[test]
    fn a_handover_of_the_primary_stopped_half_way_is_finished_by_the_next_request() {
        for asked in ["us-east-1", "eu-west-1", "ap-south-1"] {
            let f = fixture();
            let id = replicated(&f);
            let body = json!({"KeyId": id, "ReplicaRegion": "ap-south-1"});
            call(&f, "us-east-1", "ReplicateKey", body).unwrap();
            let body = json!({"KeyId": id, "RotationPeriodInDays": 90});
            call(&f, "us-east-1", "EnableKeyRotation", body).unwrap();
            // As a crash right after UpdatePrimaryRegion's first write: the primary stepped
            // down, naming eu-west-1, and nothing else changed.
            let key_id = keyhold_core::ids::KeyId::parse(&id).unwrap();
            let us = RegionalStore::new(f.store.clone(), "us-east-1", true);
            let mut old = us.get_key(&key_id).unwrap().unwrap();
            old.multi_region = Some(keyhold_store::MultiRegion {
                primary: "eu-west-1".into(),
                replicas: vec!["us-east-1".into(), "ap-south-1".into()],
            });
            us.update_key(&old).unwrap();
            for e in f.regions.all() {
                e.keyring().clear_state();
            }
            // No Region rotates a key that no Region is primary of.
            f.clock.advance_ms(400 * DAY_MS);
            for e in f.regions.all() {
                assert_eq!(e.run_due_rotations().unwrap(), 0);
            }
            call(&f, asked, "DescribeKey", json!({"KeyId": id})).unwrap();
            let kind = |r: &str| {
                call(&f, r, "DescribeKey", json!({"KeyId": id})).unwrap()["KeyMetadata"]
                    ["MultiRegionConfiguration"]
                    .clone()
            };
            let eu = kind("eu-west-1");
            assert_eq!(eu["MultiRegionKeyType"], "PRIMARY", "asked {asked}");
            let regions: Vec<_> = eu["ReplicaKeys"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["Region"].as_str().unwrap().to_string())
                .collect();
            assert_eq!(regions, ["us-east-1", "ap-south-1"]);
            for r in ["us-east-1", "ap-south-1"] {
                let c = kind(r);
                assert_eq!(c["MultiRegionKeyType"], "REPLICA");
                assert_eq!(c["PrimaryKey"]["Region"], "eu-west-1");
            }
            // The new primary rotates (what was due meanwhile), and only it.
            let rotated: usize = f
                .regions
                .all()
                .map(|e| e.run_due_rotations().unwrap())
                .sum();
            assert_eq!(rotated, 1);
            let rotations = call(&f, "ap-south-1", "ListKeyRotations", json!({"KeyId": id}))
                .unwrap()["Rotations"]
                .as_array()
                .unwrap()
                .len();
            assert_eq!(rotations, 1);
        }
    }

    #[test]
    fn a_replica_missing_a_version_gets_it_from_its_primary() {
        let f = fixture();
        let id = replicated(&f);
        // The primary rotates while its replica's Region is not reachable from it (as after
        // a crash between the two writes): only the primary's row changes.
        let key_id = keyhold_core::ids::KeyId::parse(&id).unwrap();
        let lone = Engine::new(
            "us-east-1",
            f.store.clone(),
            f.root.clone(),
            f.clock.clone(),
            Arc::new(MemoryAuditLog::default()),
            None,
        );
        assert!(lone.rotate(&key_id, "ON_DEMAND").unwrap());
        let blob = call(
            &f,
            "us-east-1",
            "Encrypt",
            json!({"KeyId": id, "Plaintext": "eA=="}),
        )
        .unwrap()["CiphertextBlob"]
            .clone();
        let plain = call(&f, "eu-west-1", "Decrypt", json!({"CiphertextBlob": blob})).unwrap();
        assert_eq!(plain["Plaintext"], "eA==");
    }
}

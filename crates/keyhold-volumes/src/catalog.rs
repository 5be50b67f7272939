//! The volume service's records: volumes, snapshots and each account's default-encryption
//! setting, as JSON documents (`keyhold_core::docs`: a crash leaves the old document or the
//! new one), and the images in `DIR/images`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use keyhold_core::docs::Docs;
use serde::{Deserialize, Serialize};

/// Where an attached volume is attached.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Attachment {
    /// The instance (host) it is attached to.
    pub instance_id: String,
    /// The device name asked for.
    pub device: String,
    /// When, in milliseconds since the epoch.
    pub attach_time_ms: i64,
}

/// The encryption of a volume or snapshot.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Sealed {
    /// ARN of the KMS key the data key is encrypted under.
    pub key_arn: String,
    /// The data key, encrypted (a KMS ciphertext blob, base64).
    pub data_key: String,
    /// The volume id the data key is bound to (its `aws:ebs:id` encryption context).
    pub context_volume_id: String,
}

/// One volume.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Volume {
    /// `vol-` and 17 hex digits.
    pub id: String,
    /// The owning account.
    pub account: String,
    /// Size in GiB.
    pub size_gib: u64,
    /// Availability Zone.
    pub availability_zone: String,
    /// `gp2`, `gp3`, ...
    pub volume_type: String,
    /// The snapshot it was made from.
    pub snapshot_id: Option<String>,
    /// When it was made, in milliseconds since the epoch.
    pub create_time_ms: i64,
    /// Its encryption; `None` for an unencrypted volume.
    pub sealed: Option<Sealed>,
    /// Where it is attached.
    pub attachment: Option<Attachment>,
    /// Its last modification (ModifyVolume).
    #[serde(default)]
    pub modification: Option<Modification>,
    /// Its tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// A change of a volume's size or type.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Modification {
    /// Size before, GiB.
    pub original_size_gib: u64,
    /// Type before.
    pub original_type: String,
    /// Size after, GiB.
    pub target_size_gib: u64,
    /// Type after.
    pub target_type: String,
    /// When it was asked, ms since the epoch.
    pub start_ms: i64,
}

/// One snapshot.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Snapshot {
    /// `snap-` and 17 hex digits.
    pub id: String,
    /// The owning account.
    pub account: String,
    /// The volume it copies.
    pub volume_id: String,
    /// That volume's size in GiB.
    pub volume_size_gib: u64,
    /// Description given at creation.
    pub description: String,
    /// When it was taken, in milliseconds since the epoch.
    pub start_time_ms: i64,
    /// Its encryption (the volume's); `None` when the volume was unencrypted.
    pub sealed: Option<Sealed>,
    /// Its tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// An account's EBS encryption defaults in this Region.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Defaults {
    /// Every new volume is encrypted.
    pub encryption_by_default: bool,
    /// The key new encrypted volumes use when none is named (`alias/aws/ebs` when `None`).
    pub kms_key_id: Option<String>,
}

/// The catalog in a directory: records under `DIR/volumes`, `DIR/snapshots` and
/// `DIR/defaults`, images under `DIR/images`.
#[derive(Debug)]
pub struct Catalog {
    docs: Docs,
    images: PathBuf,
}

const VOLUMES: &str = "volumes";
const SNAPSHOTS: &str = "snapshots";
const DEFAULTS: &str = "defaults";

/// True for ids this service makes (`vol-`/`snap-` and 17 lowercase hex digits), so a client's
/// id is never used as a path before it is checked.
pub fn valid_id(id: &str, prefix: &str) -> bool {
    id.strip_prefix(prefix).is_some_and(|h| {
        h.len() == 17
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// A new id with `prefix` (`vol-`, `snap-`).
pub fn new_id(prefix: &str) -> String {
    let hex = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}{}", &hex[..17])
}

impl Catalog {
    /// Opens (and makes) the catalog under `dir`.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        let images = dir.join("images");
        std::fs::create_dir_all(&images)?;
        Ok(Self {
            docs: Docs::open(dir, &[VOLUMES, SNAPSHOTS, DEFAULTS])?,
            images,
        })
    }

    /// The image file of a volume or snapshot id.
    pub fn image(&self, id: &str) -> PathBuf {
        self.images.join(format!("{id}.img"))
    }

    /// A volume by id.
    pub fn volume(&self, id: &str) -> std::io::Result<Option<Volume>> {
        if !valid_id(id, "vol-") {
            return Ok(None);
        }
        self.docs.get(VOLUMES, id)
    }

    /// Writes a volume's record.
    pub fn put_volume(&self, v: &Volume) -> std::io::Result<()> {
        self.docs.put(VOLUMES, &v.id, v)
    }

    /// Deletes a volume's record, then its image.
    pub fn delete_volume(&self, id: &str) -> std::io::Result<()> {
        self.docs.remove(VOLUMES, id)?;
        remove_file(&self.image(id))
    }

    /// A snapshot by id.
    pub fn snapshot(&self, id: &str) -> std::io::Result<Option<Snapshot>> {
        if !valid_id(id, "snap-") {
            return Ok(None);
        }
        self.docs.get(SNAPSHOTS, id)
    }

    /// Writes a snapshot's record.
    pub fn put_snapshot(&self, s: &Snapshot) -> std::io::Result<()> {
        self.docs.put(SNAPSHOTS, &s.id, s)
    }

    /// Deletes a snapshot's record, then its image.
    pub fn delete_snapshot(&self, id: &str) -> std::io::Result<()> {
        self.docs.remove(SNAPSHOTS, id)?;
        remove_file(&self.image(id))
    }

    /// The volumes of an account, by id.
    pub fn volumes(&self, account: &str) -> std::io::Result<Vec<Volume>> {
        Ok(self
            .docs
            .all::<Volume>(VOLUMES)?
            .into_iter()
            .filter(|v| v.account == account)
            .collect())
    }

    /// The snapshots of an account, by id.
    pub fn snapshots(&self, account: &str) -> std::io::Result<Vec<Snapshot>> {
        Ok(self
            .docs
            .all::<Snapshot>(SNAPSHOTS)?
            .into_iter()
            .filter(|s| s.account == account)
            .collect())
    }

    /// An account's defaults.
    pub fn defaults(&self, account: &str) -> std::io::Result<Defaults> {
        Ok(self.docs.get(DEFAULTS, account)?.unwrap_or_default())
    }

    /// Writes an account's defaults.
    pub fn put_defaults(&self, account: &str, d: &Defaults) -> std::io::Result<()> {
        self.docs.put(DEFAULTS, account, d)
    }

    /// Images with no record (left by a crash between making an image and recording it),
    /// removed; how many.
    pub fn remove_orphan_images(&self) -> std::io::Result<usize> {
        let mut removed = 0;
        for entry in std::fs::read_dir(&self.images)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let id = name.strip_suffix(".img").unwrap_or(&name);
            let kind = if id.starts_with("snap-") {
                SNAPSHOTS
            } else {
                VOLUMES
            };
            if !self.docs.exists(kind, id) {
                remove_file(&entry.path())?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

fn remove_file(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn volume(id: &str, account: &str) -> Volume {
        Volume {
            id: id.into(),
            account: account.into(),
            size_gib: 1,
            availability_zone: "us-east-1a".into(),
            volume_type: "gp3".into(),
            snapshot_id: None,
            create_time_ms: 1,
            sealed: None,
            attachment: None,
            modification: None,
            tags: BTreeMap::new(),
        }
    }

    #[test]
    fn ids_are_checked_before_they_name_a_file() {
        let id = new_id("vol-");
        assert!(valid_id(&id, "vol-"), "{id}");
        assert!(!valid_id("vol-../../etc/passwd", "vol-"));
        assert!(!valid_id("vol-0123456789ABCDEF0", "vol-"));
        assert!(!valid_id("vol-0123456789abcdef", "vol-"));
        assert!(!valid_id(&id, "snap-"));
    }

    #[test]
    fn volumes_are_listed_per_account_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let c = Catalog::open(dir.path()).unwrap();
        let a = volume(&new_id("vol-"), "111111111111");
        let b = volume(&new_id("vol-"), "222222222222");
        c.put_volume(&a).unwrap();
        c.put_volume(&b).unwrap();
        let c = Catalog::open(dir.path()).unwrap();
        assert_eq!(c.volumes("111111111111").unwrap(), vec![a.clone()]);
        assert_eq!(c.volume(&b.id).unwrap(), Some(b));
        assert_eq!(c.volume("vol-../x").unwrap(), None);
        c.delete_volume(&a.id).unwrap();
        assert!(c.volumes("111111111111").unwrap().is_empty());
    }

    #[test]
    fn images_without_a_record_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let c = Catalog::open(dir.path()).unwrap();
        let kept = volume(&new_id("vol-"), "111111111111");
        c.put_volume(&kept).unwrap();
        std::fs::write(c.image(&kept.id), b"x").unwrap();
        std::fs::write(c.image(&new_id("vol-")), b"x").unwrap();
        assert_eq!(c.remove_orphan_images().unwrap(), 1);
        assert!(c.image(&kept.id).exists());
    }

    #[test]
    fn defaults_start_off_and_are_kept_per_account() {
        let dir = tempfile::tempdir().unwrap();
        let c = Catalog::open(dir.path()).unwrap();
        assert_eq!(c.defaults("111111111111").unwrap(), Defaults::default());
        let d = Defaults {
            encryption_by_default: true,
            kms_key_id: Some("alias/mine".into()),
        };
        c.put_defaults("111111111111", &d).unwrap();
        assert_eq!(c.defaults("111111111111").unwrap(), d);
        assert_eq!(c.defaults("222222222222").unwrap(), Defaults::default());
    }
}

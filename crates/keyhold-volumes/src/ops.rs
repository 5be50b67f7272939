//! The actions: volumes, attachments, snapshots and the account's encryption defaults, with
//! EC2's parameters, answers and errors, and KMS calls as the caller through EC2.

use std::collections::HashMap;

use base64::Engine as _;
use keyhold_kms::api::{DecryptRequest, GenerateDataKeyRequest, KeyIdRequest, ReEncryptRequest};
use keyhold_kms::error::{ErrorCode, KmsError};
use keyhold_kms::{Request, Response};
use zeroize::Zeroizing;

use crate::catalog::{new_id, Attachment, Defaults, Sealed, Snapshot, Volume};
use crate::image::{self, GIB};
use crate::query::{iso_time, Ec2Error, Params, Xml};
use crate::{Caller, VolumeService};

/// The actions served.
pub(crate) const ACTIONS: &[&str] = &[
    "CreateVolume",
    "DescribeVolumes",
    "DeleteVolume",
    "AttachVolume",
    "DetachVolume",
    "CreateTags",
    "DeleteTags",
    "ModifyVolume",
    "DescribeVolumesModifications",
    "UnlockVolume",
    "CreateSnapshot",
    "DescribeSnapshots",
    "DeleteSnapshot",
    "EnableEbsEncryptionByDefault",
    "DisableEbsEncryptionByDefault",
    "GetEbsEncryptionByDefault",
    "GetEbsDefaultKmsKeyId",
    "ModifyEbsDefaultKmsKeyId",
    "ResetEbsDefaultKmsKeyId",
];

/// Actions that change nothing (readOnly in their audit events).
pub(crate) fn read_only(action: &str) -> bool {
    action.starts_with("Describe") || action.starts_with("Get")
}

/// The AWS managed key of EBS.
const EBS_KEY: &str = "alias/aws/ebs";

/// The encryption context key that binds a data key to its volume.
const CONTEXT_KEY: &str = "aws:ebs:id";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn io(e: std::io::Error) -> Ec2Error {
    Ec2Error::internal(e)
}

/// EC2's answer to a refusal from KMS.
fn kms_error(key: &str, e: KmsError) -> Ec2Error {
    match e.code {
        ErrorCode::NotFoundException | ErrorCode::InvalidArnException => Ec2Error::new(
            "InvalidKMSKey.NotFound",
            format!("The KMS key '{key}' does not exist: {}", e.message),
        ),
        ErrorCode::DisabledException | ErrorCode::KMSInvalidStateException => Ec2Error::new(
            "InvalidKMSKey.InvalidState",
            format!(
                "The KMS key provided is in an incompatible state: {}",
                e.message
            ),
        ),
        ErrorCode::AccessDeniedException => Ec2Error::new(
            "UnauthorizedOperation",
            format!(
                "You are not authorized to use the KMS key '{key}': {}",
                e.message
            ),
        ),
        ErrorCode::InvalidKeyUsageException | ErrorCode::UnsupportedOperationException => {
            Ec2Error::invalid(format!(
                "The KMS key '{key}' cannot encrypt EBS volumes (a symmetric encryption key is \
                 needed): {}",
                e.message
            ))
        }
        ErrorCode::ThrottlingException => Ec2Error::new("RequestLimitExceeded", e.message),
        _ => Ec2Error::internal(format!("{}: {}", e.code.as_str(), e.message)),
    }
}

fn context(volume_id: &str) -> HashMap<String, String> {
    HashMap::from([(CONTEXT_KEY.to_string(), volume_id.to_string())])
}

fn volume_not_found(id: &str) -> Ec2Error {
    Ec2Error::new(
        "InvalidVolume.NotFound",
        format!("The volume '{id}' does not exist."),
    )
}

fn snapshot_not_found(id: &str) -> Ec2Error {
    Ec2Error::new(
        "InvalidSnapshot.NotFound",
        format!("The snapshot '{id}' does not exist."),
    )
}

/// Volume types and their sizes in GiB.
fn size_range(volume_type: &str) -> Option<(u64, u64)> {
    Some(match volume_type {
        "gp2" | "gp3" => (1, 16384),
        "io1" | "io2" => (4, 16384),
        "st1" | "sc1" => (125, 16384),
        "standard" => (1, 1024),
        _ => return None,
    })
}

impl VolumeService {
    pub(crate) fn run(
        &self,
        action: &str,
        caller: &Caller,
        p: &Params,
        audit: &mut serde_json::Map<String, serde_json::Value>,
    ) -> Result<String, Ec2Error> {
        let rid = caller.meta.request_id.as_str();
        if p.bool("DryRun")? == Some(true) {
            return Err(Ec2Error {
                code: "DryRunOperation",
                status: 412,
                message: "Request would have succeeded, but DryRun flag is set.".into(),
            });
        }
        match action {
            "CreateVolume" => self.create_volume(caller, p, audit),
            "DescribeVolumes" => self.describe_volumes(caller, p),
            "DeleteVolume" => {
                let id = p.required("VolumeId")?;
                audit.insert("volumeId".into(), id.into());
                let _w = self.lock();
                let v = self.own_volume(caller, id)?;
                if v.attachment.is_some() {
                    return Err(Ec2Error::new(
                        "VolumeInUse",
                        format!("Volume {id} is currently attached to {}", attached_to(&v)),
                    ));
                }
                self.catalog.delete_volume(id).map_err(io)?;
                let mut x = Xml::response(action, rid);
                x.text("return", "true");
                Ok(x.finish(action))
            }
            "AttachVolume" => self.attach(caller, p, audit),
            "ModifyVolume" => self.modify(caller, p, audit),
            "CreateTags" | "DeleteTags" => {
                let ids = p.list("ResourceId")?;
                if ids.is_empty() {
                    return Err(Ec2Error::missing("ResourceId"));
                }
                let tags = tag_list(p, "Tag")?;
                if action == "CreateTags" && tags.is_empty() {
                    return Err(Ec2Error::missing("Tag"));
                }
                audit.insert("resourceIds".into(), ids.clone().into());
                let _w = self.lock();
                // Every resource first, so an unknown one changes nothing.
                let mut volumes = Vec::new();
                let mut snapshots = Vec::new();
                for id in &ids {
                    if id.starts_with("snap-") {
                        snapshots.push(self.own_snapshot(caller, id)?);
                    } else {
                        volumes.push(self.own_volume(caller, id)?);
                    }
                }
                let apply = |t: &mut std::collections::BTreeMap<String, String>| {
                    for (k, v) in &tags {
                        if action == "CreateTags" {
                            t.insert(k.clone(), v.clone().unwrap_or_default());
                        } else if v.as_ref().is_none_or(|v| t.get(k) == Some(v)) {
                            t.remove(k);
                        }
                    }
                };
                for mut v in volumes {
                    apply(&mut v.tags);
                    if v.tags.len() > 50 {
                        return Err(Ec2Error::new(
                            "TagLimitExceeded",
                            "At most 50 tags per resource",
                        ));
                    }
                    self.catalog.put_volume(&v).map_err(io)?;
                }
                for mut sn in snapshots {
                    apply(&mut sn.tags);
                    if sn.tags.len() > 50 {
                        return Err(Ec2Error::new(
                            "TagLimitExceeded",
                            "At most 50 tags per resource",
                        ));
                    }
                    self.catalog.put_snapshot(&sn).map_err(io)?;
                }
                let mut x = Xml::response(action, rid);
                x.text("return", "true");
                Ok(x.finish(action))
            }
            "DescribeVolumesModifications" => {
                let all = self
                    .catalog
                    .volumes(&caller.principal.account)
                    .map_err(io)?;
                let chosen = select(
                    &all,
                    &p.list("VolumeId")?,
                    &p.filters()?,
                    |v| &v.id,
                    |id| {
                        Ec2Error::new(
                            "InvalidVolumeModification.NotFound",
                            format!("Modification for volume '{id}' does not exist."),
                        )
                    },
                    |v, name, _| match name {
                        "volume-id" => Some(v.id.clone()),
                        "modification-state" => Some("completed".into()),
                        _ => None,
                    },
                )?;
                let mut x = Xml::response(action, rid);
                x.open("volumeModificationSet");
                for v in chosen {
                    if let Some(m) = &v.modification {
                        x.open("item");
                        modification_fields(&mut x, &v.id, m);
                        x.close("item");
                    }
                }
                x.close("volumeModificationSet");
                Ok(x.finish(action))
            }
            "DetachVolume" => self.detach(caller, p, audit),
            "UnlockVolume" => self.unlock(caller, p, audit),
            "CreateSnapshot" => self.create_snapshot(caller, p, audit),
            "DescribeSnapshots" => self.describe_snapshots(caller, p),
            "DeleteSnapshot" => {
                let id = p.required("SnapshotId")?;
                audit.insert("snapshotId".into(), id.into());
                let _w = self.lock();
                self.own_snapshot(caller, id)?;
                self.catalog.delete_snapshot(id).map_err(io)?;
                let mut x = Xml::response(action, rid);
                x.text("return", "true");
                Ok(x.finish(action))
            }
            "EnableEbsEncryptionByDefault" | "DisableEbsEncryptionByDefault" => {
                let on = action.starts_with("Enable");
                let _w = self.lock();
                let account = &caller.principal.account;
                let mut d = self.catalog.defaults(account).map_err(io)?;
                d.encryption_by_default = on;
                self.catalog.put_defaults(account, &d).map_err(io)?;
                let mut x = Xml::response(action, rid);
                x.text("ebsEncryptionByDefault", if on { "true" } else { "false" });
                Ok(x.finish(action))
            }
            "GetEbsEncryptionByDefault" => {
                let d = self.defaults(caller)?;
                let mut x = Xml::response(action, rid);
                x.text(
                    "ebsEncryptionByDefault",
                    if d.encryption_by_default {
                        "true"
                    } else {
                        "false"
                    },
                );
                x.text("sseType", "sse-ebs");
                Ok(x.finish(action))
            }
            "GetEbsDefaultKmsKeyId" => {
                let d = self.defaults(caller)?;
                let mut x = Xml::response(action, rid);
                x.text("kmsKeyId", d.kms_key_id.as_deref().unwrap_or(EBS_KEY));
                Ok(x.finish(action))
            }
            "ModifyEbsDefaultKmsKeyId" => {
                let key = p.required("KmsKeyId")?;
                audit.insert("kmsKeyId".into(), key.into());
                let arn = self.check_key(caller, key)?;
                let _w = self.lock();
                let account = &caller.principal.account;
                let mut d = self.catalog.defaults(account).map_err(io)?;
                d.kms_key_id = Some(arn.clone());
                self.catalog.put_defaults(account, &d).map_err(io)?;
                let mut x = Xml::response(action, rid);
                x.text("kmsKeyId", &arn);
                Ok(x.finish(action))
            }
            "ResetEbsDefaultKmsKeyId" => {
                let _w = self.lock();
                let account = &caller.principal.account;
                let mut d = self.catalog.defaults(account).map_err(io)?;
                d.kms_key_id = None;
                self.catalog.put_defaults(account, &d).map_err(io)?;
                let mut x = Xml::response(action, rid);
                x.text("kmsKeyId", EBS_KEY);
                Ok(x.finish(action))
            }
            _ => Err(Ec2Error::new(
                "InvalidAction",
                format!("The action {action} is not valid for this web service."),
            )),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.writes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn defaults(&self, caller: &Caller) -> Result<Defaults, Ec2Error> {
        self.catalog.defaults(&caller.principal.account).map_err(io)
    }

    /// The caller's volume `id` (another account's is not found, as in EC2).
    fn own_volume(&self, caller: &Caller, id: &str) -> Result<Volume, Ec2Error> {
        match self.catalog.volume(id).map_err(io)? {
            Some(v) if v.account == caller.principal.account => Ok(v),
            _ => Err(volume_not_found(id)),
        }
    }

    fn own_snapshot(&self, caller: &Caller, id: &str) -> Result<Snapshot, Ec2Error> {
        match self.catalog.snapshot(id).map_err(io)? {
            Some(s) if s.account == caller.principal.account => Ok(s),
            _ => Err(snapshot_not_found(id)),
        }
    }

    fn kms(&self, caller: &Caller, key: &str, request: Request) -> Result<Response, Ec2Error> {
        self.engine
            .call(&caller.principal, &caller.meta, request)
            .map_err(|e| kms_error(key, e))
    }

    /// The ARN of a key the caller may use for EBS: a symmetric encryption key, enabled.
    fn check_key(&self, caller: &Caller, key: &str) -> Result<String, Ec2Error> {
        let req = KeyIdRequest {
            key_id: Some(key.to_string()),
            ..Default::default()
        };
        let Response::DescribeKey(r) = self.kms(caller, key, Request::DescribeKey(req))? else {
            return Err(Ec2Error::internal("unexpected KMS response"));
        };
        let m = r.key_metadata;
        if m.key_spec != "SYMMETRIC_DEFAULT" || m.key_usage != "ENCRYPT_DECRYPT" {
            return Err(Ec2Error::invalid(format!(
                "The KMS key '{key}' is not a symmetric encryption key ({} {}): Amazon EBS \
                 does not support asymmetric KMS keys",
                m.key_spec, m.key_usage
            )));
        }
        if m.key_state != "Enabled" {
            return Err(Ec2Error::new(
                "InvalidKMSKey.InvalidState",
                format!(
                    "The KMS key provided is in an incompatible state: {} is {}",
                    m.arn, m.key_state
                ),
            ));
        }
        Ok(m.arn)
    }

    /// A new data key for `volume_id` under `key_arn`, encrypted only.
    fn new_data_key(
        &self,
        caller: &Caller,
        key_arn: &str,
        volume_id: &str,
    ) -> Result<Sealed, Ec2Error> {
        let req = GenerateDataKeyRequest {
            key_id: Some(key_arn.to_string()),
            key_spec: Some("AES_256".into()),
            encryption_context: Some(context(volume_id)),
            ..Default::default()
        };
        let Response::GenerateDataKeyWithoutPlaintext(r) = self.kms(
            caller,
            key_arn,
            Request::GenerateDataKeyWithoutPlaintext(req),
        )?
        else {
            return Err(Ec2Error::internal("unexpected KMS response"));
        };
        Ok(Sealed {
            key_arn: r.key_id,
            data_key: b64(&r.ciphertext_blob),
            context_volume_id: volume_id.to_string(),
        })
    }

    /// The LUKS passphrase of a sealed volume: its data key, decrypted, in base64.
    fn passphrase(&self, caller: &Caller, s: &Sealed) -> Result<Zeroizing<Vec<u8>>, Ec2Error> {
        let req = DecryptRequest {
            ciphertext_blob: Some(s.data_key.clone()),
            key_id: Some(s.key_arn.clone()),
            encryption_context: Some(context(&s.context_volume_id)),
            ..Default::default()
        };
        let Response::Decrypt(r) = self.kms(caller, &s.key_arn, Request::Decrypt(req))? else {
            return Err(Ec2Error::internal("unexpected KMS response"));
        };
        Ok(Zeroizing::new(
            b64(r.plaintext.expose_secret()).into_bytes(),
        ))
    }

    fn create_volume(
        &self,
        caller: &Caller,
        p: &Params,
        audit: &mut serde_json::Map<String, serde_json::Value>,
    ) -> Result<String, Ec2Error> {
        let region = self.engine.region().to_string();
        let az = p.required("AvailabilityZone")?.to_string();
        audit.insert("availabilityZone".into(), az.as_str().into());
        let zone_ok = az.strip_prefix(&region).is_some_and(|s| {
            s.len() == 1 && ('a'..='f').contains(&s.chars().next().unwrap_or('z'))
        });
        if !zone_ok {
            return Err(Ec2Error::new(
                "InvalidZone.NotFound",
                format!("The zone '{az}' does not exist."),
            ));
        }
        let volume_type = p.get("VolumeType").unwrap_or("gp2").to_string();
        let Some((min, max)) = size_range(&volume_type) else {
            return Err(Ec2Error::invalid(format!(
                "Value ({volume_type}) for parameter volumeType is invalid. Valid values: \
                 standard, io1, io2, gp2, gp3, sc1, st1"
            )));
        };
        let encrypted_param = p.bool("Encrypted")?;
        let key_param = p.get("KmsKeyId").filter(|k| !k.is_empty());
        if key_param.is_some() && encrypted_param != Some(true) {
            return Err(Ec2Error::new(
                "InvalidParameterDependency",
                "The parameter KmsKeyId requires the parameter Encrypted to be set.",
            ));
        }
        let snapshot = match p.get("SnapshotId").filter(|s| !s.is_empty()) {
            Some(id) => {
                audit.insert("snapshotId".into(), id.into());
                Some(self.own_snapshot(caller, id)?)
            }
            None => None,
        };
        let size = match (p.int("Size")?, &snapshot) {
            (Some(s), snap) => {
                let s = u64::try_from(s).unwrap_or(0);
                if let Some(snap) = snap {
                    if s < snap.volume_size_gib {
                        return Err(Ec2Error::invalid(format!(
                            "Volume of {s}GiB is too small; minimum is {}GiB.",
                            snap.volume_size_gib
                        )));
                    }
                }
                s
            }
            (None, Some(snap)) => snap.volume_size_gib,
            (None, None) => {
                return Err(Ec2Error::new(
                    "MissingParameter",
                    "The request must contain the parameter size or snapshotId",
                ))
            }
        };
        if size < min || size > max {
            return Err(Ec2Error::invalid(format!(
                "Volume of {size}GiB is out of range for volume type {volume_type}: the size \
                 must be {min} to {max} GiB."
            )));
        }
        audit.insert("size".into(), size.into());
        let defaults = self.defaults(caller)?;
        let from_encrypted = snapshot.as_ref().and_then(|s| s.sealed.as_ref());
        let encrypted = encrypted_param == Some(true)
            || defaults.encryption_by_default
            || from_encrypted.is_some();
        audit.insert("encrypted".into(), encrypted.into());
        if encrypted && snapshot.is_none() && image::cryptsetup().is_none() {
            return Err(Ec2Error::new(
                "UnsupportedOperation",
                "This keyhold server cannot make encrypted volumes: cryptsetup is not installed \
                 on it (Debian: cryptsetup-bin)",
            ));
        }
        let id = new_id("vol-");
        let image = self.catalog.image(&id);
        let sealed = if encrypted {
            let key = key_param
                .map(str::to_string)
                .or_else(|| from_encrypted.map(|s| s.key_arn.clone()))
                .or(defaults.kms_key_id.clone())
                .unwrap_or_else(|| EBS_KEY.to_string());
            audit.insert("kmsKeyId".into(), key.as_str().into());
            let arn = self.check_key(caller, &key)?;
            match (&snapshot, from_encrypted) {
                (Some(_), Some(source)) => {
                    // The snapshot's data key, bound anew to this volume (and to the key asked
                    // for): the image copy opens with the same passphrase.
                    let req = ReEncryptRequest {
                        ciphertext_blob: Some(source.data_key.clone()),
                        source_key_id: Some(source.key_arn.clone()),
                        source_encryption_context: Some(context(&source.context_volume_id)),
                        destination_key_id: Some(arn.clone()),
                        destination_encryption_context: Some(context(&id)),
                        ..Default::default()
                    };
                    let Response::ReEncrypt(r) = self.kms(caller, &arn, Request::ReEncrypt(req))?
                    else {
                        return Err(Ec2Error::internal("unexpected KMS response"));
                    };
                    Some(Sealed {
                        key_arn: r.key_id,
                        data_key: b64(&r.ciphertext_blob),
                        context_volume_id: id.clone(),
                    })
                }
                (Some(s), None) => {
                    return Err(Ec2Error::new(
                        "UnsupportedOperation",
                        format!(
                            "The snapshot '{}' is unencrypted: keyhold makes encrypted volumes \
                             only from encrypted snapshots or empty",
                            s.id
                        ),
                    ))
                }
                (None, _) => Some(self.new_data_key(caller, &arn, &id)?),
            }
        } else {
            None
        };
        let made = match (&snapshot, &sealed) {
            (Some(s), _) => image::copy_sparse(&self.catalog.image(&s.id), &image, size * GIB)
                .map_err(|e| e.to_string()),
            (None, Some(s)) => {
                let pass = self.passphrase(caller, s)?;
                image::create_sparse(&image, size * GIB)
                    .map_err(|e| e.to_string())
                    .and_then(|()| image::luks_format(&image, &pass, &id))
            }
            (None, None) => image::create_sparse(&image, size * GIB).map_err(|e| e.to_string()),
        };
        if let Err(e) = made {
            let _ = std::fs::remove_file(&image);
            return Err(Ec2Error::internal(format!("making volume {id}: {e}")));
        }
        let v = Volume {
            id: id.clone(),
            account: caller.principal.account.clone(),
            size_gib: size,
            availability_zone: az,
            volume_type,
            snapshot_id: snapshot.map(|s| s.id),
            create_time_ms: now_ms(),
            sealed,
            attachment: None,
            modification: None,
            tags: tag_specifications(p, "volume")?,
        };
        if let Err(e) = self.catalog.put_volume(&v) {
            let _ = std::fs::remove_file(&image);
            return Err(io(e));
        }
        audit.insert("volumeId".into(), id.as_str().into());
        let mut x = Xml::response("CreateVolume", &caller.meta.request_id);
        volume_fields(&mut x, &v, "available");
        Ok(x.finish("CreateVolume"))
    }

    fn describe_volumes(&self, caller: &Caller, p: &Params) -> Result<String, Ec2Error> {
        let all = self
            .catalog
            .volumes(&caller.principal.account)
            .map_err(io)?;
        let chosen = select(
            &all,
            &p.list("VolumeId")?,
            &p.filters()?,
            |v| &v.id,
            volume_not_found,
            volume_field,
        )?;
        let mut x = Xml::response("DescribeVolumes", &caller.meta.request_id);
        x.open("volumeSet");
        for v in chosen {
            x.open("item");
            volume_fields(&mut x, v, state(v));
            x.open("attachmentSet");
            if let Some(a) = &v.attachment {
                x.open("item");
                attachment_fields(&mut x, &v.id, a, "attached");
                x.text("deleteOnTermination", "false");
                x.close("item");
            }
            x.close("attachmentSet");
            x.close("item");
        }
        x.close("volumeSet");
        Ok(x.finish("DescribeVolumes"))
    }

    fn attach(
        &self,
        caller: &Caller,
        p: &Params,
        audit: &mut serde_json::Map<String, serde_json::Value>,
    ) -> Result<String, Ec2Error> {
        let id = p.required("VolumeId")?;
        let instance = p.required("InstanceId")?;
        let device = p.required("Device")?;
        audit.insert("volumeId".into(), id.into());
        audit.insert("instanceId".into(), instance.into());
        audit.insert("device".into(), device.into());
        if !valid_instance(instance) {
            return Err(Ec2Error::new(
                "InvalidInstanceID.Malformed",
                format!("Invalid id: \"{instance}\""),
            ));
        }
        if device.is_empty()
            || device.len() > 64
            || !device
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'/' || b == b'-' || b == b'_')
        {
            return Err(Ec2Error::invalid(format!(
                "Value ({device}) for parameter device is invalid."
            )));
        }
        let _w = self.lock();
        let mut v = self.own_volume(caller, id)?;
        if v.attachment.is_some() {
            return Err(Ec2Error::new(
                "VolumeInUse",
                format!("{id} is already attached to an instance"),
            ));
        }
        // As EBS does at attach: the data key must decrypt now, or the attach fails.
        if let Some(s) = &v.sealed {
            self.passphrase(caller, s)?;
        }
        let a = Attachment {
            instance_id: instance.to_string(),
            device: device.to_string(),
            attach_time_ms: now_ms(),
        };
        v.attachment = Some(a.clone());
        self.catalog.put_volume(&v).map_err(io)?;
        let mut x = Xml::response("AttachVolume", &caller.meta.request_id);
        attachment_fields(&mut x, id, &a, "attached");
        Ok(x.finish("AttachVolume"))
    }

    /// ModifyVolume: a larger size (the image grows; LUKS2 maps the new space, the file system
    /// inside is the caller's to grow) or another type.
    fn modify(
        &self,
        caller: &Caller,
        p: &Params,
        audit: &mut serde_json::Map<String, serde_json::Value>,
    ) -> Result<String, Ec2Error> {
        let id = p.required("VolumeId")?;
        audit.insert("volumeId".into(), id.into());
        let _w = self.lock();
        let mut v = self.own_volume(caller, id)?;
        let size = match p.int("Size")? {
            Some(s) => u64::try_from(s).unwrap_or(0),
            None => v.size_gib,
        };
        let volume_type = p.get("VolumeType").unwrap_or(&v.volume_type).to_string();
        let Some((min, max)) = size_range(&volume_type) else {
            return Err(Ec2Error::invalid(format!(
                "Value ({volume_type}) for parameter volumeType is invalid."
            )));
        };
        if size < v.size_gib {
            return Err(Ec2Error::invalid(format!(
                "New size ({size}) cannot be smaller than the existing size ({}).",
                v.size_gib
            )));
        }
        if size < min || size > max {
            return Err(Ec2Error::invalid(format!(
                "Volume of {size}GiB is out of range for volume type {volume_type}: the size \
                 must be {min} to {max} GiB."
            )));
        }
        if size == v.size_gib && volume_type == v.volume_type {
            return Err(Ec2Error::invalid(
                "New configuration is the same as the existing one.",
            ));
        }
        audit.insert("size".into(), size.into());
        audit.insert("volumeType".into(), volume_type.as_str().into());
        let image = self.catalog.image(&v.id);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&image)
            .and_then(|f| {
                f.set_len(size * GIB)?;
                f.sync_all()
            })
            .map_err(io)?;
        let m = crate::catalog::Modification {
            original_size_gib: v.size_gib,
            original_type: v.volume_type.clone(),
            target_size_gib: size,
            target_type: volume_type.clone(),
            start_ms: now_ms(),
        };
        v.size_gib = size;
        v.volume_type = volume_type;
        v.modification = Some(m.clone());
        self.catalog.put_volume(&v).map_err(io)?;
        let mut x = Xml::response("ModifyVolume", &caller.meta.request_id);
        x.open("volumeModification");
        modification_fields(&mut x, &v.id, &m);
        x.close("volumeModification");
        Ok(x.finish("ModifyVolume"))
    }

    fn detach(
        &self,
        caller: &Caller,
        p: &Params,
        audit: &mut serde_json::Map<String, serde_json::Value>,
    ) -> Result<String, Ec2Error> {
        let id = p.required("VolumeId")?;
        audit.insert("volumeId".into(), id.into());
        let _w = self.lock();
        let mut v = self.own_volume(caller, id)?;
        let Some(a) = v.attachment.take() else {
            return Err(Ec2Error::new(
                "IncorrectState",
                format!("Volume '{id}' is in the 'available' state."),
            ));
        };
        if let Some(instance) = p.get("InstanceId") {
            if instance != a.instance_id {
                return Err(Ec2Error::new(
                    "InvalidAttachment.NotFound",
                    format!("Volume '{id}' is not attached to instance '{instance}'."),
                ));
            }
        }
        self.catalog.put_volume(&v).map_err(io)?;
        let mut x = Xml::response("DetachVolume", &caller.meta.request_id);
        attachment_fields(&mut x, id, &a, "detached");
        Ok(x.finish("DetachVolume"))
    }

    /// keyhold's own action: the passphrase of an attached volume, for the host it is
    /// attached to (`keyhold volume attach` opens the LUKS2 image with it).
    fn unlock(
        &self,
        caller: &Caller,
        p: &Params,
        audit: &mut serde_json::Map<String, serde_json::Value>,
    ) -> Result<String, Ec2Error> {
        let id = p.required("VolumeId")?;
        let instance = p.required("InstanceId")?;
        audit.insert("volumeId".into(), id.into());
        audit.insert("instanceId".into(), instance.into());
        let v = self.own_volume(caller, id)?;
        match &v.attachment {
            Some(a) if a.instance_id == instance => {}
            _ => {
                return Err(Ec2Error::new(
                    "IncorrectState",
                    format!("Volume '{id}' is not attached to instance '{instance}'."),
                ))
            }
        }
        let mut x = Xml::response("UnlockVolume", &caller.meta.request_id);
        x.text("volumeId", id);
        x.text("imagePath", &self.catalog.image(id).to_string_lossy());
        x.text(
            "encrypted",
            if v.sealed.is_some() { "true" } else { "false" },
        );
        if let Some(s) = &v.sealed {
            let pass = self.passphrase(caller, s)?;
            x.text("passphrase", &String::from_utf8_lossy(&pass));
        }
        Ok(x.finish("UnlockVolume"))
    }

    fn create_snapshot(
        &self,
        caller: &Caller,
        p: &Params,
        audit: &mut serde_json::Map<String, serde_json::Value>,
    ) -> Result<String, Ec2Error> {
        let id = p.required("VolumeId")?;
        let description = p.get("Description").unwrap_or_default();
        if description.len() > 255 {
            return Err(Ec2Error::invalid(
                "The description may be at most 255 characters long",
            ));
        }
        audit.insert("volumeId".into(), id.into());
        let v = self.own_volume(caller, id)?;
        let snap = Snapshot {
            id: new_id("snap-"),
            account: v.account.clone(),
            volume_id: v.id.clone(),
            volume_size_gib: v.size_gib,
            description: description.to_string(),
            start_time_ms: now_ms(),
            sealed: v.sealed.clone(),
            tags: tag_specifications(p, "snapshot")?,
        };
        let image = self.catalog.image(&snap.id);
        if let Err(e) = image::copy_sparse(&self.catalog.image(&v.id), &image, 0) {
            let _ = std::fs::remove_file(&image);
            return Err(Ec2Error::internal(format!("copying {}: {e}", v.id)));
        }
        if let Err(e) = self.catalog.put_snapshot(&snap) {
            let _ = std::fs::remove_file(&image);
            return Err(io(e));
        }
        audit.insert("snapshotId".into(), snap.id.as_str().into());
        let mut x = Xml::response("CreateSnapshot", &caller.meta.request_id);
        snapshot_fields(&mut x, &snap);
        Ok(x.finish("CreateSnapshot"))
    }

    fn describe_snapshots(&self, caller: &Caller, p: &Params) -> Result<String, Ec2Error> {
        let all = self
            .catalog
            .snapshots(&caller.principal.account)
            .map_err(io)?;
        let chosen = select(
            &all,
            &p.list("SnapshotId")?,
            &p.filters()?,
            |s| &s.id,
            snapshot_not_found,
            |s, name, values| {
                Some(match name {
                    "volume-id" => s.volume_id.clone(),
                    "snapshot-id" => s.id.clone(),
                    "encrypted" => s.sealed.is_some().to_string(),
                    "status" => "completed".into(),
                    _ => return tag_field(&s.tags, name, values),
                })
            },
        )?;
        let mut x = Xml::response("DescribeSnapshots", &caller.meta.request_id);
        x.open("snapshotSet");
        for s in chosen {
            x.open("item");
            snapshot_fields(&mut x, s);
            x.close("item");
        }
        x.close("snapshotSet");
        Ok(x.finish("DescribeSnapshots"))
    }
}

/// The records `ids` names (every record when it is empty; an id not among them is
/// `not_found`, as EC2 answers), kept when every filter matches: `field` gives a record's
/// value for a filter name, `None` for names this service does not know, which select
/// nothing out.
fn select<'a, T>(
    all: &'a [T],
    ids: &[String],
    filters: &[(String, Vec<String>)],
    id_of: impl Fn(&T) -> &String,
    not_found: impl Fn(&str) -> Ec2Error,
    field: impl Fn(&T, &str, &[String]) -> Option<String>,
) -> Result<Vec<&'a T>, Ec2Error> {
    if let Some(missing) = ids.iter().find(|id| !all.iter().any(|r| id_of(r) == *id)) {
        return Err(not_found(missing));
    }
    Ok(all
        .iter()
        .filter(|r| ids.is_empty() || ids.contains(id_of(r)))
        .filter(|r| {
            filters
                .iter()
                .all(|(name, values)| field(r, name, values).is_none_or(|v| values.contains(&v)))
        })
        .collect())
}

/// Tags `NAME.N.Key` / `NAME.N.Value` (a missing value is `None`).
fn tag_list(p: &Params, name: &str) -> Result<Vec<(String, Option<String>)>, Ec2Error> {
    let mut out = Vec::new();
    for i in 1..=51usize {
        let Some(k) = p.get(&format!("{name}.{i}.Key")) else {
            break;
        };
        if k.is_empty() || k.len() > 128 || k.starts_with("aws:") {
            return Err(Ec2Error::new(
                "InvalidParameterValue",
                format!("Tag key {k:?} is not allowed (1 to 128 characters, not aws:)"),
            ));
        }
        let v = p.get(&format!("{name}.{i}.Value")).map(str::to_string);
        if v.as_ref().is_some_and(|v| v.len() > 256) {
            return Err(Ec2Error::invalid(
                "A tag value may be at most 256 characters",
            ));
        }
        out.push((k.to_string(), v));
    }
    if out.len() > 50 {
        return Err(Ec2Error::new(
            "TagLimitExceeded",
            "At most 50 tags per resource",
        ));
    }
    Ok(out)
}

/// The tags of `TagSpecification.N` entries for `resource_type`.
fn tag_specifications(
    p: &Params,
    resource_type: &str,
) -> Result<std::collections::BTreeMap<String, String>, Ec2Error> {
    let mut tags = std::collections::BTreeMap::new();
    for i in 1..=10usize {
        let Some(t) = p.get(&format!("TagSpecification.{i}.ResourceType")) else {
            break;
        };
        if t != resource_type {
            return Err(Ec2Error::invalid(format!(
                "'{t}' is not a valid taggable resource type for this operation."
            )));
        }
        for (k, v) in tag_list(p, &format!("TagSpecification.{i}.Tag"))? {
            tags.insert(k, v.unwrap_or_default());
        }
    }
    Ok(tags)
}

fn tag_set(x: &mut Xml, tags: &std::collections::BTreeMap<String, String>) {
    if tags.is_empty() {
        return;
    }
    x.open("tagSet");
    for (k, v) in tags {
        x.open("item").text("key", k).text("value", v).close("item");
    }
    x.close("tagSet");
}

/// A tag filter's value: `tag:KEY` gives the tag's value, `tag-key` any key present.
fn tag_field(
    tags: &std::collections::BTreeMap<String, String>,
    name: &str,
    values: &[String],
) -> Option<String> {
    if let Some(key) = name.strip_prefix("tag:") {
        return Some(
            tags.get(key)
                .cloned()
                .unwrap_or_else(|| "\u{0}absent".into()),
        );
    }
    if name == "tag-key" {
        return Some(
            tags.keys()
                .find(|k| values.contains(k))
                .cloned()
                .unwrap_or_else(|| "\u{0}absent".into()),
        );
    }
    None
}

/// `i-` and 8 or 17 hex digits.
fn valid_instance(id: &str) -> bool {
    id.strip_prefix("i-").is_some_and(|h| {
        (h.len() == 8 || h.len() == 17) && h.bytes().all(|b| b.is_ascii_hexdigit())
    })
}

fn attached_to(v: &Volume) -> String {
    v.attachment
        .as_ref()
        .map_or_else(String::new, |a| a.instance_id.clone())
}

fn state(v: &Volume) -> &'static str {
    if v.attachment.is_some() {
        "in-use"
    } else {
        "available"
    }
}

/// A volume's value for a DescribeVolumes filter.
fn volume_field(v: &Volume, name: &str, values: &[String]) -> Option<String> {
    Some(match name {
        "volume-id" => v.id.clone(),
        "status" => state(v).into(),
        "encrypted" => v.sealed.is_some().to_string(),
        "availability-zone" => v.availability_zone.clone(),
        "volume-type" => v.volume_type.clone(),
        "size" => v.size_gib.to_string(),
        "snapshot-id" => v.snapshot_id.clone().unwrap_or_default(),
        "attachment.instance-id" => attached_to(v),
        _ => return tag_field(&v.tags, name, values),
    })
}

fn volume_fields(x: &mut Xml, v: &Volume, status: &str) {
    x.text("volumeId", &v.id)
        .text("size", &v.size_gib.to_string())
        .text("snapshotId", v.snapshot_id.as_deref().unwrap_or(""))
        .text("availabilityZone", &v.availability_zone)
        .text("status", status)
        .text("createTime", &iso_time(v.create_time_ms))
        .text("volumeType", &v.volume_type)
        .text(
            "encrypted",
            if v.sealed.is_some() { "true" } else { "false" },
        )
        .opt("kmsKeyId", v.sealed.as_ref().map(|s| s.key_arn.as_str()))
        .text("multiAttachEnabled", "false");
    tag_set(x, &v.tags);
}

fn modification_fields(x: &mut Xml, volume_id: &str, m: &crate::catalog::Modification) {
    x.text("volumeId", volume_id)
        .text("modificationState", "completed")
        .text("targetSize", &m.target_size_gib.to_string())
        .text("targetVolumeType", &m.target_type)
        .text("targetMultiAttachEnabled", "false")
        .text("originalSize", &m.original_size_gib.to_string())
        .text("originalVolumeType", &m.original_type)
        .text("originalMultiAttachEnabled", "false")
        .text("progress", "100")
        .text("startTime", &iso_time(m.start_ms))
        .text("endTime", &iso_time(m.start_ms));
}

fn attachment_fields(x: &mut Xml, volume_id: &str, a: &Attachment, status: &str) {
    x.text("volumeId", volume_id)
        .text("instanceId", &a.instance_id)
        .text("device", &a.device)
        .text("status", status)
        .text("attachTime", &iso_time(a.attach_time_ms));
}

fn snapshot_fields(x: &mut Xml, s: &Snapshot) {
    x.text("snapshotId", &s.id)
        .text("volumeId", &s.volume_id)
        .text("status", "completed")
        .text("startTime", &iso_time(s.start_time_ms))
        .text("progress", "100%")
        .text("ownerId", &s.account)
        .text("volumeSize", &s.volume_size_gib.to_string())
        .text("description", &s.description)
        .text(
            "encrypted",
            if s.sealed.is_some() { "true" } else { "false" },
        )
        .opt("kmsKeyId", s.sealed.as_ref().map(|x| x.key_arn.as_str()))
        .text("storageTier", "standard");
    tag_set(x, &s.tags);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_ids_have_ec2s_shape() {
        assert!(valid_instance("i-0123456789abcdef0"));
        assert!(valid_instance("i-12345678"));
        assert!(!valid_instance("i-123"));
        assert!(!valid_instance("host-1"));
    }

    #[test]
    fn sizes_depend_on_the_volume_type() {
        assert_eq!(size_range("gp3"), Some((1, 16384)));
        assert_eq!(size_range("st1"), Some((125, 16384)));
        assert_eq!(size_range("floppy"), None);
    }

    #[test]
    fn kms_refusals_become_ec2_errors() {
        let e = kms_error("k", KmsError::new(ErrorCode::DisabledException, "off"));
        assert_eq!(e.code, "InvalidKMSKey.InvalidState");
        let e = kms_error("k", KmsError::new(ErrorCode::AccessDeniedException, "no"));
        assert_eq!(e.code, "UnauthorizedOperation");
        let e = kms_error("k", KmsError::new(ErrorCode::NotFoundException, "gone"));
        assert_eq!(e.code, "InvalidKMSKey.NotFound");
    }
}

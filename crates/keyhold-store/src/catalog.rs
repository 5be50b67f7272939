//! The object catalog of the S3 gateway: buckets, objects, multipart uploads and their parts.
//!
//! The store keeps only names, owners and times in columns; everything else a record holds is
//! the gateway's own document (`meta`, JSON text) that the store never reads. An object's bytes
//! are not here: they live, encrypted, in the gateway's object store, and `meta` names them.

use crate::sql::{Backend, Tx, Value};
use crate::StoreError;

/// A bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketRecord {
    /// The bucket's name (global, as in S3).
    pub name: String,
    /// The account that owns it.
    pub account: String,
    /// When it was made, ms since the epoch.
    pub created_at: i64,
    /// The gateway's document (default encryption, ...).
    pub meta: String,
}

/// The current version of one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRecord {
    /// The bucket.
    pub bucket: String,
    /// The object key.
    pub key: String,
    /// When it was written, ms since the epoch.
    pub modified_at: i64,
    /// The gateway's document (size, ETag, encryption, the stored data it consists of).
    pub meta: String,
}

/// A multipart upload in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadRecord {
    /// The upload id.
    pub upload_id: String,
    /// The bucket.
    pub bucket: String,
    /// The object key it will complete into.
    pub key: String,
    /// When it was started, ms since the epoch.
    pub created_at: i64,
    /// The gateway's document (encryption, headers of the object to be).
    pub meta: String,
}

/// One uploaded part of a multipart upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartRecord {
    /// The upload.
    pub upload_id: String,
    /// The part number (1..=10000).
    pub part_number: u32,
    /// When it was uploaded, ms since the epoch.
    pub modified_at: i64,
    /// The gateway's document (size, ETag, the stored data).
    pub meta: String,
}

/// Buckets, objects and uploads. Every change is durable when the call returns.
pub trait ObjectCatalog: Send + Sync {
    /// Makes a bucket; `AlreadyExists` when the name is taken (by anyone).
    fn create_bucket(&self, bucket: &BucketRecord) -> Result<(), StoreError>;
    /// A bucket by name.
    fn get_bucket(&self, name: &str) -> Result<Option<BucketRecord>, StoreError>;
    /// The buckets of one account, by name.
    fn list_buckets(&self, account: &str) -> Result<Vec<BucketRecord>, StoreError>;
    /// Replaces a bucket's document; `NotFound` when it is gone.
    fn update_bucket(&self, name: &str, meta: &str) -> Result<(), StoreError>;
    /// Deletes a bucket that holds no object and no upload: `NotFound` when it is gone,
    /// `NotEmpty` when it is not empty.
    fn delete_bucket(&self, name: &str) -> Result<(), StoreError>;
    /// Writes an object's current version; returns the version it replaced. `NotFound` when
    /// the bucket is gone.
    fn put_object(&self, object: &ObjectRecord) -> Result<Option<ObjectRecord>, StoreError>;
    /// Replaces an object's document only if it still is `expected` (a tagging change, say);
    /// `NotFound` when the object is gone or changed meanwhile.
    fn update_object(&self, object: &ObjectRecord, expected: &str) -> Result<(), StoreError>;
    /// An object's current version.
    fn get_object(&self, bucket: &str, key: &str) -> Result<Option<ObjectRecord>, StoreError>;
    /// Deletes an object; returns what was deleted.
    fn delete_object(&self, bucket: &str, key: &str) -> Result<Option<ObjectRecord>, StoreError>;
    /// Objects of a bucket whose keys come after `after` (exclusive) and at or after `from`,
    /// in byte order of their keys, at most `limit`.
    fn list_objects(
        &self,
        bucket: &str,
        from: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ObjectRecord>, StoreError>;
    /// Starts a multipart upload; `NotFound` when the bucket is gone.
    fn create_upload(&self, upload: &UploadRecord) -> Result<(), StoreError>;
    /// An upload by id.
    fn get_upload(&self, upload_id: &str) -> Result<Option<UploadRecord>, StoreError>;
    /// The uploads of a bucket in progress, by key then upload id, after a marker pair.
    fn list_uploads(
        &self,
        bucket: &str,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Vec<UploadRecord>, StoreError>;
    /// Uploads started before `before_ms` (for the clean-up of abandoned uploads).
    fn uploads_started_before(
        &self,
        before_ms: i64,
        limit: usize,
    ) -> Result<Vec<UploadRecord>, StoreError>;
    /// Writes one part; returns the part it replaced. `NotFound` when the upload is gone.
    fn put_part(&self, part: &PartRecord) -> Result<Option<PartRecord>, StoreError>;
    /// The parts of an upload, by number.
    fn list_parts(&self, upload_id: &str) -> Result<Vec<PartRecord>, StoreError>;
    /// Ends an upload and returns its parts; `NotFound` when it is gone.
    fn delete_upload(&self, upload_id: &str) -> Result<Vec<PartRecord>, StoreError>;
    /// Completes an upload into `object` at once: the upload and its parts are gone and the
    /// object is written. Returns the object version replaced and the upload's parts.
    /// `NotFound` when the upload is gone (completed or aborted meanwhile).
    fn complete_upload(
        &self,
        upload_id: &str,
        object: &ObjectRecord,
    ) -> Result<(Option<ObjectRecord>, Vec<PartRecord>), StoreError>;
}

fn object_row(mut r: crate::sql::Row) -> Result<ObjectRecord, StoreError> {
    Ok(ObjectRecord {
        bucket: r.text(0)?,
        key: r.text(1)?,
        modified_at: r.i64(2)?,
        meta: r.text(3)?,
    })
}

fn upload_row(mut r: crate::sql::Row) -> Result<UploadRecord, StoreError> {
    Ok(UploadRecord {
        upload_id: r.text(0)?,
        bucket: r.text(1)?,
        key: r.text(2)?,
        created_at: r.i64(3)?,
        meta: r.text(4)?,
    })
}

fn part_row(mut r: crate::sql::Row) -> Result<PartRecord, StoreError> {
    Ok(PartRecord {
        upload_id: r.text(0)?,
        part_number: r.u32(1)?,
        modified_at: r.i64(2)?,
        meta: r.text(3)?,
    })
}

fn bucket_row(mut r: crate::sql::Row) -> Result<BucketRecord, StoreError> {
    Ok(BucketRecord {
        name: r.text(0)?,
        account: r.text(1)?,
        created_at: r.i64(2)?,
        meta: r.text(3)?,
    })
}

const OBJECT_COLS: &str = "bucket, object_key, modified_at, meta";
const UPLOAD_COLS: &str = "upload_id, bucket, object_key, created_at, meta";
const PART_COLS: &str = "upload_id, part_number, modified_at, meta";
const BUCKET_COLS: &str = "name, account, created_at, meta";

fn limit_value(limit: usize) -> Value {
    Value::from(i64::try_from(limit).unwrap_or(i64::MAX))
}

/// Writes `o` over the current version; the replaced version, if any.
fn upsert_object(
    c: &mut dyn crate::sql::Conn,
    o: &ObjectRecord,
) -> Result<Option<ObjectRecord>, StoreError> {
    let keys = [Value::from(&o.bucket), Value::from(&o.key)];
    if crate::sql::query_opt(c, "SELECT 1 FROM s3_buckets WHERE name = $1", &keys[..1])?.is_none() {
        return Err(StoreError::NotFound);
    }
    let old = crate::sql::query_opt(
        c,
        &format!("SELECT {OBJECT_COLS} FROM s3_objects WHERE bucket = $1 AND object_key = $2"),
        &keys,
    )?
    .map(object_row)
    .transpose()?;
    let params = [
        Value::from(&o.bucket),
        Value::from(&o.key),
        Value::from(o.modified_at),
        Value::from(&o.meta),
    ];
    c.execute(
        "INSERT INTO s3_objects (bucket, object_key, modified_at, meta) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (bucket, object_key) DO UPDATE SET modified_at = excluded.modified_at, \
         meta = excluded.meta",
        &params,
    )?;
    Ok(old)
}

impl<B: Backend> ObjectCatalog for B {
    fn create_bucket(&self, b: &BucketRecord) -> Result<(), StoreError> {
        let params = [
            Value::from(&b.name),
            Value::from(&b.account),
            Value::from(b.created_at),
            Value::from(&b.meta),
        ];
        self.run(Tx::Write, move |c| {
            if crate::sql::query_opt(c, "SELECT 1 FROM s3_buckets WHERE name = $1", &params[..1])?
                .is_some()
            {
                return Err(StoreError::AlreadyExists);
            }
            c.execute(
                "INSERT INTO s3_buckets (name, account, created_at, meta) VALUES ($1, $2, $3, $4)",
                &params,
            )
            .map(|_| ())
        })
    }

    fn get_bucket(&self, name: &str) -> Result<Option<BucketRecord>, StoreError> {
        let name = Value::from(name);
        self.run(Tx::Read, move |c| {
            crate::sql::query_opt(
                c,
                &format!("SELECT {BUCKET_COLS} FROM s3_buckets WHERE name = $1"),
                std::slice::from_ref(&name),
            )?
            .map(bucket_row)
            .transpose()
        })
    }

    fn list_buckets(&self, account: &str) -> Result<Vec<BucketRecord>, StoreError> {
        let account = Value::from(account);
        self.run(Tx::Read, move |c| {
            let rows = c.query(
                &format!("SELECT {BUCKET_COLS} FROM s3_buckets WHERE account = $1 ORDER BY name"),
                std::slice::from_ref(&account),
            )?;
            crate::sql::all(rows, bucket_row)
        })
    }

    fn update_bucket(&self, name: &str, meta: &str) -> Result<(), StoreError> {
        let params = [Value::from(name), Value::from(meta)];
        self.run(Tx::Write, move |c| {
            match c.execute("UPDATE s3_buckets SET meta = $2 WHERE name = $1", &params)? {
                0 => Err(StoreError::NotFound),
                _ => Ok(()),
            }
        })
    }

    fn delete_bucket(&self, name: &str) -> Result<(), StoreError> {
        let name = Value::from(name);
        self.run(Tx::Write, move |c| {
            let held = crate::sql::count(
                c,
                "SELECT (SELECT COUNT(*) FROM (SELECT 1 FROM s3_objects WHERE bucket = $1 LIMIT 1) o) \
                 + (SELECT COUNT(*) FROM (SELECT 1 FROM s3_uploads WHERE bucket = $1 LIMIT 1) u)",
                std::slice::from_ref(&name),
            )?;
            if held > 0 {
                return Err(StoreError::NotEmpty);
            }
            match c.execute(
                "DELETE FROM s3_buckets WHERE name = $1",
                std::slice::from_ref(&name),
            )? {
                0 => Err(StoreError::NotFound),
                _ => Ok(()),
            }
        })
    }

    fn put_object(&self, o: &ObjectRecord) -> Result<Option<ObjectRecord>, StoreError> {
        let o = o.clone();
        self.run(Tx::Write, move |c| upsert_object(c, &o))
    }

    fn update_object(&self, o: &ObjectRecord, expected: &str) -> Result<(), StoreError> {
        let params = [
            Value::from(&o.bucket),
            Value::from(&o.key),
            Value::from(&o.meta),
            Value::from(expected),
        ];
        self.run(Tx::Write, move |c| {
            match c.execute(
                "UPDATE s3_objects SET meta = $3 WHERE bucket = $1 AND object_key = $2 AND meta = $4",
                &params,
            )? {
                0 => Err(StoreError::NotFound),
                _ => Ok(()),
            }
        })
    }

    fn get_object(&self, bucket: &str, key: &str) -> Result<Option<ObjectRecord>, StoreError> {
        let params = [Value::from(bucket), Value::from(key)];
        self.run(Tx::Read, move |c| {
            crate::sql::query_opt(
                c,
                &format!(
                    "SELECT {OBJECT_COLS} FROM s3_objects WHERE bucket = $1 AND object_key = $2"
                ),
                &params,
            )?
            .map(object_row)
            .transpose()
        })
    }

    fn delete_object(&self, bucket: &str, key: &str) -> Result<Option<ObjectRecord>, StoreError> {
        let params = [Value::from(bucket), Value::from(key)];
        self.run(Tx::Write, move |c| {
            let old = crate::sql::query_opt(
                c,
                &format!(
                    "SELECT {OBJECT_COLS} FROM s3_objects WHERE bucket = $1 AND object_key = $2"
                ),
                &params,
            )?
            .map(object_row)
            .transpose()?;
            if old.is_some() {
                c.execute(
                    "DELETE FROM s3_objects WHERE bucket = $1 AND object_key = $2",
                    &params,
                )?;
            }
            Ok(old)
        })
    }

    fn list_objects(
        &self,
        bucket: &str,
        from: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ObjectRecord>, StoreError> {
        let params = [
            Value::from(bucket),
            Value::from(from),
            Value::from(after.unwrap_or("")),
            limit_value(limit),
        ];
        self.run(Tx::Read, move |c| {
            let rows = c.query(
                &format!(
                    "SELECT {OBJECT_COLS} FROM s3_objects WHERE bucket = $1 AND object_key >= $2 \
                     AND object_key > $3 ORDER BY object_key LIMIT $4"
                ),
                &params,
            )?;
            crate::sql::all(rows, object_row)
        })
    }

    fn create_upload(&self, u: &UploadRecord) -> Result<(), StoreError> {
        let params = [
            Value::from(&u.upload_id),
            Value::from(&u.bucket),
            Value::from(&u.key),
            Value::from(u.created_at),
            Value::from(&u.meta),
        ];
        self.run(Tx::Write, move |c| {
            if crate::sql::query_opt(c, "SELECT 1 FROM s3_buckets WHERE name = $1", &params[1..2])?
                .is_none()
            {
                return Err(StoreError::NotFound);
            }
            c.execute(
                "INSERT INTO s3_uploads (upload_id, bucket, object_key, created_at, meta) \
                 VALUES ($1, $2, $3, $4, $5)",
                &params,
            )
            .map(|_| ())
        })
    }

    fn get_upload(&self, upload_id: &str) -> Result<Option<UploadRecord>, StoreError> {
        let id = Value::from(upload_id);
        self.run(Tx::Read, move |c| {
            crate::sql::query_opt(
                c,
                &format!("SELECT {UPLOAD_COLS} FROM s3_uploads WHERE upload_id = $1"),
                std::slice::from_ref(&id),
            )?
            .map(upload_row)
            .transpose()
        })
    }

    fn list_uploads(
        &self,
        bucket: &str,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Vec<UploadRecord>, StoreError> {
        let (key, id) = after.unwrap_or(("", ""));
        let params = [
            Value::from(bucket),
            Value::from(key),
            Value::from(id),
            limit_value(limit),
        ];
        self.run(Tx::Read, move |c| {
            let rows = c.query(
                &format!(
                    "SELECT {UPLOAD_COLS} FROM s3_uploads WHERE bucket = $1 AND \
                     (object_key > $2 OR (object_key = $2 AND upload_id > $3)) \
                     ORDER BY object_key, upload_id LIMIT $4"
                ),
                &params,
            )?;
            crate::sql::all(rows, upload_row)
        })
    }

    fn uploads_started_before(
        &self,
        before_ms: i64,
        limit: usize,
    ) -> Result<Vec<UploadRecord>, StoreError> {
        let params = [Value::from(before_ms), limit_value(limit)];
        self.run(Tx::Read, move |c| {
            let rows = c.query(
                &format!(
                    "SELECT {UPLOAD_COLS} FROM s3_uploads WHERE created_at < $1 \
                     ORDER BY created_at LIMIT $2"
                ),
                &params,
            )?;
            crate::sql::all(rows, upload_row)
        })
    }

    fn put_part(&self, p: &PartRecord) -> Result<Option<PartRecord>, StoreError> {
        let params = [
            Value::from(&p.upload_id),
            Value::from(p.part_number),
            Value::from(p.modified_at),
            Value::from(&p.meta),
        ];
        self.run(Tx::Write, move |c| {
            if crate::sql::query_opt(
                c,
                "SELECT 1 FROM s3_uploads WHERE upload_id = $1",
                &params[..1],
            )?
            .is_none()
            {
                return Err(StoreError::NotFound);
            }
            let old = crate::sql::query_opt(
                c,
                &format!(
                    "SELECT {PART_COLS} FROM s3_parts WHERE upload_id = $1 AND part_number = $2"
                ),
                &params[..2],
            )?
            .map(part_row)
            .transpose()?;
            c.execute(
                "INSERT INTO s3_parts (upload_id, part_number, modified_at, meta) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (upload_id, part_number) DO UPDATE SET \
                 modified_at = excluded.modified_at, meta = excluded.meta",
                &params,
            )?;
            Ok(old)
        })
    }

    fn list_parts(&self, upload_id: &str) -> Result<Vec<PartRecord>, StoreError> {
        let id = Value::from(upload_id);
        self.run(Tx::Read, move |c| {
            let rows = c.query(
                &format!(
                    "SELECT {PART_COLS} FROM s3_parts WHERE upload_id = $1 ORDER BY part_number"
                ),
                std::slice::from_ref(&id),
            )?;
            crate::sql::all(rows, part_row)
        })
    }

    fn delete_upload(&self, upload_id: &str) -> Result<Vec<PartRecord>, StoreError> {
        let id = Value::from(upload_id);
        self.run(Tx::Write, move |c| take_upload(c, &id))
    }

    fn complete_upload(
        &self,
        upload_id: &str,
        object: &ObjectRecord,
    ) -> Result<(Option<ObjectRecord>, Vec<PartRecord>), StoreError> {
        let id = Value::from(upload_id);
        let object = object.clone();
        self.run(Tx::Write, move |c| {
            let parts = take_upload(c, &id)?;
            let old = upsert_object(c, &object)?;
            Ok((old, parts))
        })
    }
}

/// Removes an upload and its parts inside the caller's transaction; its parts.
fn take_upload(c: &mut dyn crate::sql::Conn, id: &Value) -> Result<Vec<PartRecord>, StoreError> {
    let rows = c.query(
        &format!("SELECT {PART_COLS} FROM s3_parts WHERE upload_id = $1 ORDER BY part_number"),
        std::slice::from_ref(id),
    )?;
    let parts = crate::sql::all(rows, part_row)?;
    c.execute(
        "DELETE FROM s3_parts WHERE upload_id = $1",
        std::slice::from_ref(id),
    )?;
    match c.execute(
        "DELETE FROM s3_uploads WHERE upload_id = $1",
        std::slice::from_ref(id),
    )? {
        0 => Err(StoreError::NotFound),
        _ => Ok(parts),
    }
}

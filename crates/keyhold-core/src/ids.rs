//! Identifiers: key ids, account ids, alias names, and the ways a caller may name a key.

use crate::CoreError;

/// A KMS key id: a UUID, shown in lowercase hyphenated form, or the id of a multi-Region key,
/// `mrk-` and 32 lowercase hex digits (the same 16 bytes in every Region it is replicated to).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId {
    bytes: uuid::Uuid,
    multi_region: bool,
}

/// The prefix of multi-Region key ids.
const MRK_PREFIX: &str = "mrk-";

impl KeyId {
    /// A fresh random (v4) key id.
    pub fn generate() -> Self {
        Self {
            bytes: uuid::Uuid::new_v4(),
            multi_region: false,
        }
    }

    /// A fresh random multi-Region key id (`mrk-...`).
    pub fn generate_multi_region() -> Self {
        Self {
            bytes: uuid::Uuid::new_v4(),
            multi_region: true,
        }
    }

    /// Parses the hyphenated UUID form AWS uses, or the `mrk-` form of multi-Region keys.
    pub fn parse(s: &str) -> Result<Self, CoreError> {
        let bad = || CoreError::InvalidKeyId(s.to_string());
        if let Some(hex) = s.strip_prefix(MRK_PREFIX) {
            if hex.len() != 32
                || !hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                return Err(bad());
            }
            return uuid::Uuid::try_parse(hex)
                .map(|bytes| Self {
                    bytes,
                    multi_region: true,
                })
                .map_err(|_| bad());
        }
        // Only the canonical 36-character form is a key id; the uuid crate also accepts
        // braced and URN forms, which AWS does not.
        if s.len() != 36 {
            return Err(bad());
        }
        uuid::Uuid::parse_str(s)
            .map(|bytes| Self {
                bytes,
                multi_region: false,
            })
            .map_err(|_| bad())
    }

    /// True for the id of a multi-Region key (`mrk-...`).
    pub fn is_multi_region(&self) -> bool {
        self.multi_region
    }

    /// The id a multi-Region key's record in `region` is stored under, where one store holds
    /// several Regions (the same id in every Region, so the store's rows need distinct ones):
    /// its bytes XOR the first 16 bytes of SHA-256 of the Region name. Applying it twice gives
    /// the id back. Single-Region ids are unique already and come back unchanged.
    pub fn stored_in_region(&self, region: &str) -> Self {
        if !self.multi_region {
            return *self;
        }
        let digest = aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            format!("keyhold:multi-region-key:{region}").as_bytes(),
        );
        let mut b = *self.bytes.as_bytes();
        for (x, m) in b.iter_mut().zip(digest.as_ref()) {
            *x ^= m;
        }
        Self {
            bytes: uuid::Uuid::from_bytes(b),
            multi_region: true,
        }
    }

    /// The 16 raw bytes, as written into ciphertext blobs.
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.bytes.as_bytes()
    }

    /// Rebuilds a key id from the 16 bytes of a blob header (and the blob format's word on
    /// whether it is a multi-Region key).
    pub fn from_bytes(b: [u8; 16], multi_region: bool) -> Self {
        Self {
            bytes: uuid::Uuid::from_bytes(b),
            multi_region,
        }
    }
}

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.multi_region {
            write!(f, "{MRK_PREFIX}{}", self.bytes.simple())
        } else {
            self.bytes.hyphenated().fmt(f)
        }
    }
}

/// A validated alias name (`alias/...`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AliasName(String);

impl AliasName {
    /// Parses an alias name as AWS accepts it: 1–256 characters of `[a-zA-Z0-9:/_-]`, starting
    /// with `alias/` and with something after it.
    pub fn parse(s: &str) -> Result<Self, CoreError> {
        if s.is_empty() || s.len() > 256 {
            return Err(CoreError::InvalidAliasName(format!(
                "Alias name must be between 1 and 256 characters: {s:?}"
            )));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'/' | b'_' | b'-'))
        {
            return Err(CoreError::InvalidAliasName(format!(
                "Alias name {s:?} must contain only alphanumeric characters, '/', '_', '-' or ':'"
            )));
        }
        match s.strip_prefix("alias/") {
            Some(rest) if !rest.is_empty() => Ok(Self(s.to_string())),
            _ => Err(CoreError::InvalidAliasName(format!(
                "Alias must start with the prefix \"alias/\": {s:?}"
            ))),
        }
    }

    /// True for the `alias/aws/` names that only AWS managed keys may carry.
    pub fn is_reserved(&self) -> bool {
        self.0.starts_with("alias/aws/")
    }

    /// The full name, `alias/...`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for AliasName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The way a request names a key: by id, key ARN, alias name or alias ARN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRef {
    /// A bare key id.
    Id(KeyId),
    /// `arn:PARTITION:kms:REGION:ACCOUNT:key/ID`.
    KeyArn {
        /// Region named by the ARN.
        region: String,
        /// Account named by the ARN.
        account: String,
        /// The key id.
        id: KeyId,
    },
    /// `alias/NAME`.
    Alias(AliasName),
    /// `arn:PARTITION:kms:REGION:ACCOUNT:alias/NAME`.
    AliasArn {
        /// Region named by the ARN.
        region: String,
        /// Account named by the ARN.
        account: String,
        /// The alias.
        alias: AliasName,
    },
}

impl KeyRef {
    /// Parses any of the four forms.
    pub fn parse(s: &str) -> Result<Self, CoreError> {
        if let Some(rest) = s.strip_prefix("arn:") {
            let parts: Vec<&str> = rest.splitn(5, ':').collect();
            let [_partition, service, region, account, resource] = parts.as_slice() else {
                return Err(CoreError::InvalidArn(s.to_string()));
            };
            if *service != "kms" || region.is_empty() || account.is_empty() {
                return Err(CoreError::InvalidArn(s.to_string()));
            }
            if let Some(id) = resource.strip_prefix("key/") {
                return Ok(Self::KeyArn {
                    region: region.to_string(),
                    account: account.to_string(),
                    id: KeyId::parse(id)?,
                });
            }
            if resource.starts_with("alias/") {
                return Ok(Self::AliasArn {
                    region: region.to_string(),
                    account: account.to_string(),
                    alias: AliasName::parse(resource)?,
                });
            }
            return Err(CoreError::InvalidArn(s.to_string()));
        }
        if s.starts_with("alias/") {
            return Ok(Self::Alias(AliasName::parse(s)?));
        }
        Ok(Self::Id(KeyId::parse(s)?))
    }

    /// True for the alias forms.
    pub fn is_alias(&self) -> bool {
        matches!(self, Self::Alias(_) | Self::AliasArn { .. })
    }
}

/// The ARN of a key.
pub fn key_arn(region: &str, account: &str, id: &KeyId) -> String {
    format!("arn:aws:kms:{region}:{account}:key/{id}")
}

/// The ARN of an alias.
pub fn alias_arn(region: &str, account: &str, alias: &AliasName) -> String {
    format!("arn:aws:kms:{region}:{account}:{alias}")
}

/// True for a Region name of the form AWS's models give it, `^([a-z]+-){2,3}\d+$`
/// (`us-east-1`, `us-gov-west-1`).
pub fn is_region_name(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    let Some((last, words)) = parts.split_last() else {
        return false;
    };
    (2..=3).contains(&words.len())
        && words
            .iter()
            .all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase()))
        && !last.is_empty()
        && last.bytes().all(|b| b.is_ascii_digit())
}

/// True for a 12-digit AWS account id.
pub fn is_account_id(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

impl serde::Serialize for KeyId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for KeyId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for AliasName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for AliasName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "1234abcd-12ab-34cd-56ef-1234567890ab";

    #[test]
    fn parses_all_four_key_forms() {
        assert!(matches!(KeyRef::parse(ID), Ok(KeyRef::Id(_))));
        let arn = format!("arn:aws:kms:us-east-1:111122223333:key/{ID}");
        assert!(matches!(KeyRef::parse(&arn), Ok(KeyRef::KeyArn { .. })));
        assert!(matches!(KeyRef::parse("alias/app"), Ok(KeyRef::Alias(_))));
        let alias_arn = "arn:aws:kms:us-east-1:111122223333:alias/app";
        assert!(matches!(
            KeyRef::parse(alias_arn),
            Ok(KeyRef::AliasArn { .. })
        ));
    }

    #[test]
    fn key_id_display_round_trips() {
        assert_eq!(KeyId::parse(ID).unwrap().to_string(), ID);
        let mrk = "mrk-1234abcd12ab34cd56ef1234567890ab";
        let id = KeyId::parse(mrk).unwrap();
        assert!(id.is_multi_region());
        assert_eq!(id.to_string(), mrk);
        let generated = KeyId::generate_multi_region();
        assert_eq!(KeyId::parse(&generated.to_string()).unwrap(), generated);
        let arn = format!("arn:aws:kms:eu-west-1:111122223333:key/{mrk}");
        assert!(matches!(KeyRef::parse(&arn), Ok(KeyRef::KeyArn { id: i, .. }) if i == id));
    }

    #[test]
    fn regional_storage_ids_differ_per_region_and_come_back() {
        let plain = KeyId::parse(ID).unwrap();
        assert_eq!(plain.stored_in_region("eu-west-1"), plain);
        let mrk = KeyId::generate_multi_region();
        let a = mrk.stored_in_region("eu-west-1");
        let b = mrk.stored_in_region("us-east-1");
        assert!(a != mrk && b != mrk && a != b);
        assert!(a.is_multi_region());
        assert_eq!(a.stored_in_region("eu-west-1"), mrk);
    }

    #[test]
    fn malformed_multi_region_ids_are_refused() {
        for bad in [
            "mrk-",
            "mrk-1234abcd12ab34cd56ef1234567890a",
            "mrk-1234abcd12ab34cd56ef1234567890abc",
            "mrk-1234ABCD12ab34cd56ef1234567890ab",
            "mrk-1234abcd-12ab-34cd-56ef-1234567890ab",
            "MRK-1234abcd12ab34cd56ef1234567890ab",
            "mrk-1234abcd12ab34cd56ef1234567890zz",
        ] {
            assert!(KeyId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rejects_malformed_names() {
        assert!(matches!(
            KeyRef::parse("not-a-key"),
            Err(CoreError::InvalidKeyId(_))
        ));
        assert!(matches!(
            KeyRef::parse("arn:aws:kms:us-east-1"),
            Err(CoreError::InvalidArn(_))
        ));
        assert!(matches!(
            KeyRef::parse("arn:aws:s3:us-east-1:111122223333:key/x"),
            Err(CoreError::InvalidArn(_))
        ));
        assert!(KeyId::parse(&format!("{{{ID}}}")).is_err());
    }

    #[test]
    fn alias_rules() {
        assert!(AliasName::parse("alias/ok_name-1:x/y").is_ok());
        assert!(AliasName::parse("alias/").is_err());
        assert!(AliasName::parse("noprefix").is_err());
        assert!(AliasName::parse("alias/sp ace").is_err());
        assert!(AliasName::parse(&format!("alias/{}", "a".repeat(251))).is_err());
        assert!(AliasName::parse("alias/aws/s3").unwrap().is_reserved());
        assert!(!AliasName::parse("alias/awsx").unwrap().is_reserved());
    }
}

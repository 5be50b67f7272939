//! Tags: TagResource, UntagResource, ListResourceTags.

use std::collections::BTreeMap;

use keyhold_store::Tag;

use super::empty;
use crate::api::{
    EmptyResponse, ListResourceTagsRequest, ListResourceTagsResponse, TagDto, TagResourceRequest,
    UntagResourceRequest,
};
use crate::authz::Conditions;
use crate::error::{ErrorCode, KmsError};
use crate::principal::Principal;
use crate::validate::{int_range, required, str_len};
use crate::{CallRecord, Engine};

/// Most tags one key may carry.
pub(crate) const MAX_TAGS: usize = 50;

fn tag_error(message: String) -> KmsError {
    KmsError::new(ErrorCode::TagException, message)
}

/// Validates tags from a request: keys 1–128 characters, values 0–256, no `aws:` prefix, no
/// key twice, at most [`MAX_TAGS`].
pub(crate) fn validate_tags(tags: Vec<TagDto>) -> Result<Vec<Tag>, KmsError> {
    let mut seen = BTreeMap::new();
    for t in tags {
        let key = required(t.tag_key, "tags.member.tagKey")?;
        let value = required(t.tag_value, "tags.member.tagValue")?;
        str_len(&key, "tags.member.tagKey", 1, 128)?;
        str_len(&value, "tags.member.tagValue", 0, 256)?;
        if key.to_ascii_lowercase().starts_with("aws:") {
            return Err(tag_error(format!(
                "Tag key {key:?} uses the reserved prefix aws:"
            )));
        }
        if seen.insert(key.clone(), value).is_some() {
            return Err(tag_error(format!("Duplicate tag key {key:?}")));
        }
    }
    if seen.len() > MAX_TAGS {
        return Err(tag_error(format!("A key can have at most {MAX_TAGS} tags")));
    }
    Ok(seen
        .into_iter()
        .map(|(key, value)| Tag { key, value })
        .collect())
}

pub(super) fn tag_resource(
    engine: &Engine,
    caller: &Principal,
    req: TagResourceRequest,
    rec: &mut CallRecord,
) -> Result<EmptyResponse, KmsError> {
    let key_id = required(req.key_id, "keyId")?;
    let tags = validate_tags(required(req.tags, "tags")?)?;
    let key = engine.resolve_for_change(caller, &key_id, rec, "kms:TagResource")?;
    let _guard = engine.lock_writes();
    let existing = engine.store().list_tags(&key.key_id)?;
    let new_keys = tags
        .iter()
        .filter(|t| !existing.iter().any(|e| e.key == t.key))
        .count();
    if existing.len() + new_keys > MAX_TAGS {
        return Err(KmsError::new(
            ErrorCode::LimitExceededException,
            format!("A key can have at most {MAX_TAGS} tags"),
        ));
    }
    engine.store().put_tags(&key.key_id, &tags)?;
    empty()
}

pub(super) fn untag_resource(
    engine: &Engine,
    caller: &Principal,
    req: UntagResourceRequest,
    rec: &mut CallRecord,
) -> Result<EmptyResponse, KmsError> {
    let key_id = required(req.key_id, "keyId")?;
    let keys = required(req.tag_keys, "tagKeys")?;
    for k in &keys {
        str_len(k, "tagKeys.member", 1, 128)?;
    }
    let key = engine.resolve_for_change(caller, &key_id, rec, "kms:UntagResource")?;
    let _guard = engine.lock_writes();
    engine.store().remove_tags(&key.key_id, &keys)?;
    empty()
}

pub(super) fn list_resource_tags(
    engine: &Engine,
    caller: &Principal,
    req: ListResourceTagsRequest,
    rec: &mut CallRecord,
) -> Result<ListResourceTagsResponse, KmsError> {
    let key_id = required(req.key_id, "keyId")?;
    let limit = req.limit.unwrap_or(50);
    int_range(limit, "limit", 1, 50)?;
    let key = engine.key_for(
        caller,
        rec,
        &key_id,
        false,
        "kms:ListResourceTags",
        &Conditions::default(),
    )?;
    let tags = engine.store().list_tags(&key.key_id)?;
    let start = match &req.marker {
        Some(m) => tags.iter().position(|t| &t.key > m).unwrap_or(tags.len()),
        None => 0,
    };
    let page: Vec<&Tag> = tags.iter().skip(start).take(limit as usize).collect();
    let truncated = start + page.len() < tags.len();
    let entries: Vec<TagDto> = page
        .iter()
        .map(|t| TagDto {
            tag_key: Some(t.key.clone()),
            tag_value: Some(t.value.clone()),
        })
        .collect();
    Ok(ListResourceTagsResponse {
        tags: entries,
        truncated,
        next_marker: page.last().filter(|_| truncated).map(|t| t.key.clone()),
    })
}

//! Request headers the gateway reads itself (s3s decodes the rest): `x-amz-tagging` and
//! `x-amz-copy-source-range`, checked as S3 checks them.

use s3s::{s3_error, S3Result};

/// Tags from `x-amz-tagging` (a URL query string).
pub fn parse_tagging_header(h: Option<&str>) -> S3Result<Vec<(String, String)>> {
    let Some(h) = h else { return Ok(Vec::new()) };
    let mut tags = Vec::new();
    for pair in h.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let dec = |s: &str| {
            percent_encoding::percent_decode_str(&s.replace('+', " "))
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| s3_error!(InvalidArgument, "The header 'x-amz-tagging' shall be encoded as UTF-8 then URLEncoded URL query parameters without tag name duplicates."))
        };
        tags.push((dec(k)?, dec(v)?));
    }
    check_tags(&tags)?;
    Ok(tags)
}

pub fn check_tags(tags: &[(String, String)]) -> S3Result<()> {
    if tags.len() > 10 {
        return Err(s3_error!(
            InvalidTag,
            "Object tags cannot be greater than 10"
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for (k, v) in tags {
        if k.is_empty()
            || k.chars().count() > 128
            || v.chars().count() > 256
            || k.starts_with("aws:")
        {
            return Err(s3_error!(
                InvalidTag,
                "The TagKey or TagValue you have provided is invalid"
            ));
        }
        if !seen.insert(k) {
            return Err(s3_error!(
                InvalidTag,
                "Cannot provide multiple Tags with the same key"
            ));
        }
    }
    Ok(())
}

/// `x-amz-copy-source-range: bytes=first-last` within an object of `size` bytes.
pub fn copy_range(r: &str, size: u64) -> S3Result<(u64, u64)> {
    let bad = || {
        s3_error!(
            InvalidArgument,
            "The x-amz-copy-source-range value must be of the form bytes=first-last where first \
             and last are the zero-based offsets of the first and last bytes to copy"
        )
    };
    let (a, b) = r
        .strip_prefix("bytes=")
        .and_then(|s| s.split_once('-'))
        .ok_or_else(bad)?;
    let first: u64 = a.parse().map_err(|_| bad())?;
    let last: u64 = b.parse().map_err(|_| bad())?;
    if first > last {
        return Err(bad());
    }
    if last >= size {
        return Err(s3_error!(
            InvalidRange,
            "The requested range is not satisfiable"
        ));
    }
    Ok((first, last + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_ranges_are_checked() {
        assert_eq!(copy_range("bytes=0-9", 10).unwrap(), (0, 10));
        assert_eq!(copy_range("bytes=5-5", 10).unwrap(), (5, 6));
        for bad in ["0-9", "bytes=9-0", "bytes=a-1", "bytes=1"] {
            assert_eq!(
                copy_range(bad, 10).unwrap_err().code().as_str(),
                "InvalidArgument"
            );
        }
        assert_eq!(
            copy_range("bytes=0-10", 10).unwrap_err().code().as_str(),
            "InvalidRange"
        );
    }

    #[test]
    fn tags_follow_s3_limits() {
        assert_eq!(
            parse_tagging_header(Some("a=1&b=two%20words")).unwrap(),
            vec![("a".into(), "1".into()), ("b".into(), "two words".into())]
        );
        assert!(parse_tagging_header(Some("a=1&a=2")).is_err());
        assert!(parse_tagging_header(Some("aws:x=1")).is_err());
        let many = (0..11)
            .map(|i| format!("k{i}=v"))
            .collect::<Vec<_>>()
            .join("&");
        assert!(parse_tagging_header(Some(&many)).is_err());
    }
}

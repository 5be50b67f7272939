//! The EC2 Query protocol: form-encoded parameters in (`Action=CreateVolume&Size=8&...`, lists
//! as `VolumeId.1`, `Filter.1.Name`, `Filter.1.Value.1`), XML out in the
//! `http://ec2.amazonaws.com/doc/2016-11-15/` namespace, errors as
//! `<Response><Errors><Error>...`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The API version every response names.
pub const XMLNS: &str = "http://ec2.amazonaws.com/doc/2016-11-15/";

/// An EC2 error: its code, HTTP status and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ec2Error {
    /// `InvalidVolume.NotFound`, ...
    pub code: &'static str,
    /// HTTP status.
    pub status: u16,
    /// What was wrong, with which value; never a secret.
    pub message: String,
}

impl Ec2Error {
    /// A 400 error.
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            status: 400,
            message: message.into(),
        }
    }

    /// `InvalidParameterValue`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new("InvalidParameterValue", message)
    }

    /// `MissingParameter` for `name`.
    pub fn missing(name: &str) -> Self {
        Self::new(
            "MissingParameter",
            format!("The request must contain the parameter {name}"),
        )
    }

    /// `InternalError` (500): a fault of this server, never the caller's.
    pub fn internal(why: impl std::fmt::Display) -> Self {
        tracing::error!(error = %why, "volume service fault");
        Self {
            code: "InternalError",
            status: 500,
            message: "An internal error has occurred".into(),
        }
    }
}

/// The parameters of one request.
#[derive(Debug, Default)]
pub struct Params(BTreeMap<String, String>);

impl Params {
    /// Parses a form-encoded body. A repeated name is refused (the protocol never repeats one).
    pub fn parse(body: &[u8]) -> Result<Self, Ec2Error> {
        let mut map = BTreeMap::new();
        for (k, v) in form_urlencoded::parse(body) {
            if map.insert(k.to_string(), v.to_string()).is_some() {
                return Err(Ec2Error::invalid(format!(
                    "The parameter {k} is given twice"
                )));
            }
        }
        Ok(Self(map))
    }

    /// A parameter.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// A required parameter.
    pub fn required(&self, name: &str) -> Result<&str, Ec2Error> {
        self.get(name)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| Ec2Error::missing(name))
    }

    /// A boolean parameter (`true`/`false`).
    pub fn bool(&self, name: &str) -> Result<Option<bool>, Ec2Error> {
        match self.get(name) {
            None => Ok(None),
            Some(v) if v.eq_ignore_ascii_case("true") => Ok(Some(true)),
            Some(v) if v.eq_ignore_ascii_case("false") => Ok(Some(false)),
            Some(v) => Err(Ec2Error::invalid(format!(
                "Invalid value '{v}' for {name}. Expected a boolean (true or false)."
            ))),
        }
    }

    /// An integer parameter.
    pub fn int(&self, name: &str) -> Result<Option<i64>, Ec2Error> {
        self.get(name)
            .map(|v| {
                v.parse::<i64>().map_err(|_| {
                    Ec2Error::invalid(format!(
                        "Invalid value '{v}' for {name}. Expected an integer."
                    ))
                })
            })
            .transpose()
    }

    /// A list parameter `NAME.1`, `NAME.2`, ... in order; at most 1000 members.
    pub fn list(&self, name: &str) -> Result<Vec<String>, Ec2Error> {
        let mut out = Vec::new();
        for i in 1..=1001usize {
            match self.get(&format!("{name}.{i}")) {
                Some(v) if i <= 1000 => out.push(v.to_string()),
                Some(_) => {
                    return Err(Ec2Error::invalid(format!(
                        "At most 1000 values may be given for {name}"
                    )))
                }
                None => break,
            }
        }
        Ok(out)
    }

    /// Filters `Filter.N.Name` / `Filter.N.Value.M`.
    pub fn filters(&self) -> Result<Vec<(String, Vec<String>)>, Ec2Error> {
        let mut out = Vec::new();
        for i in 1..=50usize {
            let Some(name) = self.get(&format!("Filter.{i}.Name")) else {
                break;
            };
            out.push((name.to_string(), self.list(&format!("Filter.{i}.Value"))?));
        }
        Ok(out)
    }
}

/// Escapes text for XML.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// An XML document under construction.
#[derive(Debug, Default)]
pub struct Xml(String);

impl Xml {
    /// A response document `<{action}Response xmlns=...><requestId>..</requestId>`.
    pub fn response(action: &str, request_id: &str) -> Self {
        let mut x = Self(String::with_capacity(512));
        let _ = write!(
            x.0,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<{action}Response xmlns=\"{XMLNS}\">"
        );
        x.text("requestId", request_id);
        x
    }

    /// `<name>text</name>`.
    pub fn text(&mut self, name: &str, value: &str) -> &mut Self {
        let _ = write!(self.0, "<{name}>{}</{name}>", escape(value));
        self
    }

    /// `<name>text</name>` when there is a value.
    pub fn opt(&mut self, name: &str, value: Option<&str>) -> &mut Self {
        if let Some(v) = value {
            self.text(name, v);
        }
        self
    }

    /// Opens an element.
    pub fn open(&mut self, name: &str) -> &mut Self {
        let _ = write!(self.0, "<{name}>");
        self
    }

    /// Closes an element.
    pub fn close(&mut self, name: &str) -> &mut Self {
        let _ = write!(self.0, "</{name}>");
        self
    }

    /// Ends the response document.
    pub fn finish(mut self, action: &str) -> String {
        let _ = write!(self.0, "</{action}Response>");
        self.0
    }
}

/// The error document.
pub fn error_document(e: &Ec2Error, request_id: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{}</Code>\
         <Message>{}</Message></Error></Errors><RequestID>{}</RequestID></Response>",
        escape(e.code),
        escape(&e.message),
        escape(request_id)
    )
}

/// ISO 8601 time with milliseconds, as EC2 writes it (`2026-11-30T10:00:00.000Z`).
pub fn iso_time(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_filters_come_in_order() {
        let p = Params::parse(
            b"Action=DescribeVolumes&VolumeId.2=vol-b&VolumeId.1=vol-a&Filter.1.Name=status\
              &Filter.1.Value.1=available&Filter.1.Value.2=in-use",
        )
        .unwrap();
        assert_eq!(p.list("VolumeId").unwrap(), vec!["vol-a", "vol-b"]);
        assert_eq!(
            p.filters().unwrap(),
            vec![(
                "status".to_string(),
                vec!["available".to_string(), "in-use".to_string()]
            )]
        );
    }

    #[test]
    fn bad_values_are_invalid_parameter_values() {
        let p = Params::parse(b"Size=big&Encrypted=maybe&Action=A&Action=B").unwrap_err();
        assert_eq!(p.code, "InvalidParameterValue");
        let p = Params::parse(b"Size=big&Encrypted=maybe").unwrap();
        assert_eq!(p.int("Size").unwrap_err().code, "InvalidParameterValue");
        assert_eq!(
            p.bool("Encrypted").unwrap_err().code,
            "InvalidParameterValue"
        );
        assert_eq!(p.required("VolumeId").unwrap_err().code, "MissingParameter");
    }

    #[test]
    fn text_is_escaped() {
        let mut x = Xml::response("DeleteVolume", "r<1>");
        x.text("description", "a&b'\"");
        let doc = x.finish("DeleteVolume");
        assert!(doc.contains("<requestId>r&lt;1&gt;</requestId>"), "{doc}");
        assert!(doc.contains("a&amp;b&apos;&quot;"), "{doc}");
    }

    #[test]
    fn times_are_iso_8601_with_milliseconds() {
        assert_eq!(iso_time(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }
}

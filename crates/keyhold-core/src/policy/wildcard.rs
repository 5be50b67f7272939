//! `*` and `?` wildcard matching, as IAM uses it.

/// True when `text` matches `pattern`, where `*` matches any run of characters (also none)
/// and `?` any one character.
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(c) if *c == '?' || *c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::wildcard_match;

    #[test]
    fn wildcards() {
        for (p, t, want) in [
            ("*", "", true),
            ("kms:*", "kms:Encrypt", true),
            ("kms:Gen*", "kms:GenerateDataKey", true),
            ("kms:Gen*", "kms:Encrypt", false),
            ("kms:?ncrypt", "kms:Encrypt", true),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("", "a", false),
            ("abc", "abc", true),
        ] {
            assert_eq!(wildcard_match(p, t), want, "{p} {t}");
        }
    }
}

//! Console sessions: created at sign-in, held server-side (the cookie carries only a random
//! id), ended by sign-out, by idleness or by age; each with its own CSRF token. Also the
//! slowing of repeated failed sign-ins from one address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use keyhold_kms::principal::Principal;

/// How long a session may go unused.
pub const IDLE: Duration = Duration::from_secs(30 * 60);
/// How long a session lasts at most.
pub const ABSOLUTE: Duration = Duration::from_secs(12 * 60 * 60);
/// Most sessions held at once; the oldest go first beyond it.
const MAX_SESSIONS: usize = 10_000;

/// A random token: 32 bytes, base64url.
pub fn token() -> String {
    let mut b = [0u8; 32];
    // The system RNG does not fail on the platforms keyhold runs on; an all-zero token would
    // be refused below as too short to have been issued.
    if aws_lc_rs::rand::fill(&mut b).is_err() {
        return String::new();
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// Constant-time equality of two secrets given as text.
pub fn same_secret(a: &str, b: &str) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a.as_bytes(), b.as_bytes()).is_ok()
}

/// One signed-in browser.
#[derive(Clone)]
pub struct Session {
    /// Who signed in.
    pub principal: Principal,
    /// The token every state-changing form must carry.
    pub csrf: String,
    created: Instant,
    last_seen: Instant,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("principal", &self.principal.arn)
            .finish_non_exhaustive()
    }
}

/// Why a session id did not give a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// No such session (never was, or signed out).
    Unknown,
    /// It was, but it expired.
    Expired,
}

/// Every session of this node.
#[derive(Debug, Default)]
pub struct Sessions {
    by_id: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    /// Starts a session for `principal`; returns its id.
    pub fn create(&self, principal: Principal) -> Option<String> {
        let id = token();
        let csrf = token();
        if id.len() < 43 || csrf.len() < 43 {
            return None;
        }
        let now = Instant::now();
        let mut map = self.by_id.lock().ok()?;
        if map.len() >= MAX_SESSIONS {
            map.retain(|_, s| !expired(s, now));
            if map.len() >= MAX_SESSIONS {
                let oldest = map
                    .iter()
                    .min_by_key(|(_, s)| s.last_seen)
                    .map(|(k, _)| k.clone());
                if let Some(k) = oldest {
                    map.remove(&k);
                }
            }
        }
        map.insert(
            id.clone(),
            Session {
                principal,
                csrf,
                created: now,
                last_seen: now,
            },
        );
        Some(id)
    }

    /// The live session `id` names, marked as used now.
    pub fn get(&self, id: &str) -> Result<Session, Lookup> {
        let now = Instant::now();
        let mut map = self.by_id.lock().map_err(|_| Lookup::Unknown)?;
        let Some(s) = map.get_mut(id) else {
            return Err(Lookup::Unknown);
        };
        if expired(s, now) {
            map.remove(id);
            return Err(Lookup::Expired);
        }
        s.last_seen = now;
        Ok(s.clone())
    }

    /// Ends session `id`.
    pub fn remove(&self, id: &str) {
        if let Ok(mut map) = self.by_id.lock() {
            map.remove(id);
        }
    }

    /// Makes session `id` look idle for `by` (tests of expiry).
    #[doc(hidden)]
    pub fn age(&self, id: &str, by: Duration) {
        if let Ok(mut map) = self.by_id.lock() {
            if let Some(s) = map.get_mut(id) {
                s.last_seen = s.last_seen.checked_sub(by).unwrap_or(s.last_seen);
                s.created = s.created.checked_sub(by).unwrap_or(s.created);
            }
        }
    }
}

fn expired(s: &Session, now: Instant) -> bool {
    now.duration_since(s.last_seen) > IDLE || now.duration_since(s.created) > ABSOLUTE
}

/// Failed sign-ins per client address, to slow guessing.
#[derive(Debug, Default)]
pub struct Failures {
    by_ip: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

/// How long failures are remembered.
const FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Failures from one address after which sign-ins from it are refused until the window ends.
pub const MAX_FAILURES: u32 = 20;

impl Failures {
    /// How many recent failures `ip` has.
    pub fn count(&self, ip: IpAddr) -> u32 {
        let now = Instant::now();
        let Ok(map) = self.by_ip.lock() else {
            return 0;
        };
        map.get(&ip)
            .filter(|(_, since)| now.duration_since(*since) < FAILURE_WINDOW)
            .map_or(0, |(n, _)| *n)
    }

    /// Notes a failure from `ip`; returns how long to delay the answer.
    pub fn fail(&self, ip: IpAddr) -> Duration {
        let now = Instant::now();
        let Ok(mut map) = self.by_ip.lock() else {
            return Duration::from_secs(1);
        };
        if map.len() > 100_000 {
            map.retain(|_, (_, since)| now.duration_since(*since) < FAILURE_WINDOW);
        }
        let e = map.entry(ip).or_insert((0, now));
        if now.duration_since(e.1) >= FAILURE_WINDOW {
            *e = (0, now);
        }
        e.0 += 1;
        delay(e.0)
    }

    /// Forgets `ip`'s failures (after a good sign-in).
    pub fn clear(&self, ip: IpAddr) {
        if let Ok(mut map) = self.by_ip.lock() {
            map.remove(&ip);
        }
    }
}

/// The delay after the `n`th failure in a row: 250 ms doubling, at most 8 s.
pub fn delay(n: u32) -> Duration {
    Duration::from_millis(250u64 << n.saturating_sub(1).min(5)).min(Duration::from_secs(8))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> Principal {
        Principal {
            arn: "arn:aws:iam::111122223333:user/a".into(),
            account: "111122223333".into(),
            access_key_id: "AKIA".into(),
        }
    }

    #[test]
    fn sessions_expire_when_idle_and_end_at_sign_out() {
        let s = Sessions::default();
        let id = s.create(p()).unwrap();
        let got = s.get(&id).unwrap();
        assert_eq!(got.principal, p());
        assert_eq!(got.csrf.len(), 43);
        s.age(&id, IDLE + Duration::from_secs(1));
        assert_eq!(s.get(&id).unwrap_err(), Lookup::Expired);
        assert_eq!(s.get(&id).unwrap_err(), Lookup::Unknown);
        let id = s.create(p()).unwrap();
        s.remove(&id);
        assert_eq!(s.get(&id).unwrap_err(), Lookup::Unknown);
        assert_eq!(s.get("forged").unwrap_err(), Lookup::Unknown);
    }

    #[test]
    fn failures_slow_down_and_reset() {
        let f = Failures::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(f.fail(ip), Duration::from_millis(250));
        assert_eq!(f.fail(ip), Duration::from_millis(500));
        for _ in 0..10 {
            f.fail(ip);
        }
        assert_eq!(f.count(ip), 12);
        assert_eq!(delay(12), Duration::from_secs(8));
        f.clear(ip);
        assert_eq!(f.count(ip), 0);
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "ab"));
    }
}

//! Cookie persistence (HAProxy's `cookie` directive): a client that carries the backend's
//! cookie goes back to the server the cookie names, bypassing the algorithm.
//!
//! - `insert`: the node sets `NAME=<server cookie>` (with `path=/` and the configured
//!   attributes) on a response — a 101 included — only when the client did not present a
//!   valid cookie for the server that served it; never re-sent otherwise. With `indirect`
//!   the cookie is removed from requests before they reach the server. With `maxidle` /
//!   `maxlife` the value also carries the last-seen and first-seen times
//!   (`srv|last|first`, seconds since the epoch in base 36); an expired cookie counts as
//!   absent, and one last seen more than half of `maxidle` ago is refreshed.
//! - `rewrite`: the server sets `NAME` itself; the node replaces its value with the
//!   server's cookie value.
//! - `prefix`: the server sets `NAME=v`; the client sees `NAME=<server cookie>~v`, and the
//!   server gets `NAME=v` back.
//!
//! `nocache` adds `Cache-Control: private` to a response that carries an inserted cookie,
//! so no shared cache stores it.

use http::header::{self, HeaderMap, HeaderValue};

use crate::clock::unix_s as now_s;
pub use crate::config::cookie::{CookiePlan, Mode};
use crate::config::{BackendPlan, ServerPlan};

/// What persistence says about one request to a backend.
#[derive(Debug)]
pub struct Persistence {
    /// The backend's cookie as the request presented it.
    pub presented: Option<Presented>,
    /// The server a valid cookie designates, when that server may take the request.
    pub server: Option<usize>,
    /// The request cookie's status as HAProxy logs it (the termination state's third
    /// character): `-` no persistence, `N` none, `I` names no server, `D` names a server
    /// that cannot take it, `V` valid, `E` expired.
    pub status: u8,
}

impl Default for Persistence {
    fn default() -> Self {
        Self {
            presented: None,
            server: None,
            status: b'-',
        }
    }
}

impl Persistence {
    /// Reads the backend's cookie from the request and removes what the server must not
    /// see (`indirect`, `prefix`).
    pub fn of_request(backend: &BackendPlan, headers: &mut HeaderMap) -> Self {
        let Some(c) = &backend.cookie else {
            return Self::default();
        };
        let presented = c.presented(headers);
        let named = presented.as_ref().filter(|p| p.fresh).map(|p| {
            backend
                .servers
                .iter()
                .position(|s| s.cookie.as_deref() == Some(p.server.as_str()))
        });
        let server = named
            .flatten()
            .filter(|&i| backend.servers[i].accepts_sticky());
        let status = match (&presented, named) {
            (None, _) => b'N',
            (Some(p), _) if !p.fresh => b'E',
            (Some(_), Some(None)) => b'I',
            (Some(_), _) if server.is_none() => b'D',
            _ => b'V',
        };
        c.strip_request(headers);
        Self {
            presented,
            server,
            status,
        }
    }

    /// The request cookie's status once `chosen` took the request: a valid cookie whose
    /// server did not get it (no free slot, or its connect failed) counts as `D`.
    pub fn status_for(&self, chosen: usize) -> u8 {
        match (self.status, self.server) {
            (b'V', Some(s)) if s != chosen => b'D',
            (status, _) => status,
        }
    }

    /// Sets or rewrites the cookie on the response of `server`, as the mode says, and
    /// returns what it did as HAProxy logs it (the termination state's fourth
    /// character): `-` no persistence, `N` nothing, `I` inserted, `U` refreshed, `R`
    /// the server's cookie rewritten.
    pub fn on_response(&self, backend: &BackendPlan, server: &ServerPlan, h: &mut HeaderMap) -> u8 {
        match (&backend.cookie, &server.cookie) {
            (Some(c), Some(value)) => c.on_response(h, value, self.presented.as_ref()),
            (Some(_), None) => b'N',
            (None, _) => b'-',
        }
    }
}

/// What a request's cookie says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presented {
    /// The server cookie value it names.
    pub server: String,
    /// Still valid (not past `maxidle`/`maxlife`).
    pub fresh: bool,
    /// Due for a refresh of its last-seen date.
    pub stale: bool,
    /// Its first-seen date, when it carries dates.
    first: Option<u64>,
}

fn b36(mut n: u64) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

/// The `name=value` pairs of all `Cookie` headers.
fn pairs(h: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
}

impl CookiePlan {
    /// The cookie the request carries, if any.
    pub fn presented(&self, h: &HeaderMap) -> Option<Presented> {
        let (_, value) = pairs(h).find(|(k, _)| *k == self.name)?;
        let value = match self.mode {
            Mode::Prefix => value.split_once('~').map_or(value, |(srv, _)| srv),
            _ => value,
        };
        let mut parts = value.split('|');
        let server = parts.next().unwrap_or("").to_string();
        let dates = |s: Option<&str>| s.and_then(|d| u64::from_str_radix(d, 36).ok());
        let (last, first) = (dates(parts.next()), dates(parts.next()));
        let now = now_s();
        let mut fresh = true;
        let mut stale = false;
        if let Some(idle) = self.maxidle_s {
            match last {
                Some(l) if now.saturating_sub(l) <= idle => {
                    stale = now.saturating_sub(l) > idle / 2
                }
                _ => fresh = false,
            }
        }
        if let Some(life) = self.maxlife_s {
            match first {
                Some(f) if now.saturating_sub(f) <= life => {}
                _ => fresh = false,
            }
        }
        Some(Presented {
            server,
            fresh,
            stale,
            first,
        })
    }

    /// Takes the persistence cookie out of the request (`indirect`), or the server prefix
    /// off it (`prefix`), so the server sees what it set itself.
    pub fn strip_request(&self, h: &mut HeaderMap) {
        let strip = match self.mode {
            Mode::Insert => self.indirect,
            Mode::Prefix => true,
            Mode::Rewrite => false,
        };
        if !strip || !h.contains_key(header::COOKIE) {
            return;
        }
        let kept: Vec<String> = pairs(h)
            .filter_map(|(k, v)| {
                if k != self.name {
                    return Some(format!("{k}={v}"));
                }
                match self.mode {
                    Mode::Prefix => v.split_once('~').map(|(_, rest)| format!("{k}={rest}")),
                    _ => None,
                }
            })
            .collect();
        h.remove(header::COOKIE);
        if !kept.is_empty() {
            if let Ok(v) = HeaderValue::from_str(&kept.join("; ")) {
                h.insert(header::COOKIE, v);
            }
        }
    }

    /// Adjusts a response from `server_cookie`'s server: inserts the cookie when the
    /// client did not present a valid one for it, or rewrites/prefixes the server's own.
    pub fn on_response(
        &self,
        h: &mut HeaderMap,
        server_cookie: &str,
        presented: Option<&Presented>,
    ) -> u8 {
        match self.mode {
            Mode::Insert => {
                let valid = presented.is_some_and(|p| p.server == server_cookie && p.fresh);
                if valid && !presented.is_some_and(|p| p.stale) {
                    return b'N';
                }
                let now = now_s();
                let value = if self.maxidle_s.is_some() || self.maxlife_s.is_some() {
                    // The first-seen date survives refreshes of a valid cookie.
                    let first = presented
                        .filter(|_| valid)
                        .and_then(|p| p.first)
                        .unwrap_or(now);
                    format!("{server_cookie}|{}|{}", b36(now), b36(first))
                } else {
                    server_cookie.to_string()
                };
                let cookie = format!("{}={value}{}", self.name, self.attributes);
                match HeaderValue::from_str(&cookie) {
                    Ok(v) => {
                        h.append(header::SET_COOKIE, v);
                        if self.nocache {
                            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private"));
                        }
                        if valid {
                            b'U'
                        } else {
                            b'I'
                        }
                    }
                    Err(_) => b'N',
                }
            }
            Mode::Rewrite | Mode::Prefix => {
                let values: Vec<HeaderValue> =
                    h.get_all(header::SET_COOKIE).iter().cloned().collect();
                if values.is_empty() {
                    return b'N';
                }
                h.remove(header::SET_COOKIE);
                let mut done = b'N';
                for v in values {
                    let rewritten = v.to_str().ok().and_then(|s| {
                        let (pair, rest) = s.split_once(';').map_or((s, ""), |(p, r)| (p, r));
                        let (k, val) = pair.split_once('=')?;
                        if k.trim() != self.name {
                            return None;
                        }
                        let new = match self.mode {
                            Mode::Prefix => format!("{server_cookie}~{}", val.trim()),
                            _ => server_cookie.to_string(),
                        };
                        let sep = if rest.is_empty() { "" } else { ";" };
                        HeaderValue::from_str(&format!("{}={new}{sep}{rest}", k.trim())).ok()
                    });
                    if rewritten.is_some() {
                        done = b'R';
                    }
                    h.append(header::SET_COOKIE, rewritten.unwrap_or(v));
                }
                done
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_proto::v1 as pb;

    fn plan(mode: pb::CookieMode, indirect: bool) -> CookiePlan {
        CookiePlan::from(&pb::Cookie {
            name: "WSID".into(),
            mode: mode as i32,
            indirect,
            nocache: true,
            httponly: true,
            secure: false,
            samesite: pb::SameSite::Strict as i32,
            maxidle_ms: None,
            maxlife_ms: None,
            domain: String::new(),
        })
    }

    fn cookies(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn insert_indirect_strips_and_inserts_only_when_needed() {
        let p = plan(pb::CookieMode::Insert, true);
        let mut req = cookies("a=1; WSID=ws02; b=2");
        let presented = p.presented(&req);
        assert_eq!(presented.as_ref().unwrap().server, "ws02");
        p.strip_request(&mut req);
        assert_eq!(req.get(header::COOKIE).unwrap(), "a=1; b=2");

        let mut resp = HeaderMap::new();
        p.on_response(&mut resp, "ws02", presented.as_ref());
        assert!(
            resp.get(header::SET_COOKIE).is_none(),
            "valid cookie: not re-sent"
        );
        p.on_response(&mut resp, "ws01", presented.as_ref());
        assert_eq!(
            resp.get(header::SET_COOKIE).unwrap(),
            "WSID=ws01; path=/; HttpOnly; SameSite=Strict"
        );
        assert_eq!(resp.get(header::CACHE_CONTROL).unwrap(), "private");
    }

    #[test]
    fn prefix_mode_round_trips_the_servers_value() {
        let p = plan(pb::CookieMode::Prefix, false);
        let mut resp = HeaderMap::new();
        resp.insert(
            header::SET_COOKIE,
            HeaderValue::from_static("WSID=abc; Path=/app"),
        );
        p.on_response(&mut resp, "s1", None);
        assert_eq!(
            resp.get(header::SET_COOKIE).unwrap(),
            "WSID=s1~abc; Path=/app"
        );
        let mut req = cookies("WSID=s1~abc");
        assert_eq!(p.presented(&req).unwrap().server, "s1");
        p.strip_request(&mut req);
        assert_eq!(req.get(header::COOKIE).unwrap(), "WSID=abc");
    }

    #[test]
    fn expired_cookies_count_as_absent() {
        let mut p = plan(pb::CookieMode::Insert, true);
        p.maxidle_s = Some(60);
        let old = now_s() - 120;
        let h = cookies(&format!("WSID=ws01|{}|{}", b36(old), b36(old)));
        assert!(!p.presented(&h).unwrap().fresh);
        let h = cookies(&format!("WSID=ws01|{}|{}", b36(now_s()), b36(old)));
        assert!(p.presented(&h).unwrap().fresh);
        assert!(
            !p.presented(&cookies("WSID=ws01")).unwrap().fresh,
            "no date: expired"
        );
    }
}

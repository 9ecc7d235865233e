//! A backend's cookie persistence settings (HAProxy's `cookie` directive), compiled once;
//! what a request's cookie means and what a response gets is `balance::cookie`.

use sluice_proto::v1 as pb;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Insert,
    Rewrite,
    Prefix,
}

#[derive(Debug)]
pub struct CookiePlan {
    pub name: String,
    pub mode: Mode,
    pub indirect: bool,
    pub nocache: bool,
    /// `; path=/; Domain=…; HttpOnly; Secure; SameSite=…`, rendered once.
    pub attributes: String,
    pub maxidle_s: Option<u64>,
    pub maxlife_s: Option<u64>,
}

impl From<&pb::Cookie> for CookiePlan {
    fn from(c: &pb::Cookie) -> Self {
        let mut attributes = String::from("; path=/");
        if !c.domain.is_empty() {
            attributes.push_str(&format!("; Domain={}", c.domain));
        }
        if c.httponly {
            attributes.push_str("; HttpOnly");
        }
        if c.secure {
            attributes.push_str("; Secure");
        }
        match c.samesite() {
            pb::SameSite::Strict => attributes.push_str("; SameSite=Strict"),
            pb::SameSite::Lax => attributes.push_str("; SameSite=Lax"),
            pb::SameSite::None => attributes.push_str("; SameSite=None"),
            pb::SameSite::Unspecified => {}
        }
        Self {
            name: c.name.clone(),
            mode: match c.mode() {
                pb::CookieMode::Rewrite => Mode::Rewrite,
                pb::CookieMode::Prefix => Mode::Prefix,
                _ => Mode::Insert,
            },
            indirect: c.indirect,
            nocache: c.nocache,
            attributes,
            maxidle_s: c.maxidle_ms.map(|ms| (ms / 1000).max(1)),
            maxlife_s: c.maxlife_ms.map(|ms| (ms / 1000).max(1)),
        }
    }
}

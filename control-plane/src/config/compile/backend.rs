//! A backend: servers (addresses, weights, states, checks), balancing, persistence
//! cookie, timeouts and retries.

use std::collections::HashSet;

use sluice_proto::v1 as pb;

use super::health::health_check;
use super::*;

pub(super) fn compile_backend(errs: &mut Errors, field: &str, b: &Backend) -> pb::Backend {
    use pb::BalanceAlgorithm as A;
    let balance_text = b.balance.as_deref().unwrap_or("roundrobin");
    let (name, arg) = call(balance_text);
    let algorithm = match (name, arg) {
        ("roundrobin", None) => A::Roundrobin,
        ("leastconn", None) => A::Leastconn,
        ("source", None) => A::Source,
        ("uri", None) => A::Uri,
        ("random", None) => A::Random,
        ("hdr", Some(h)) if !h.is_empty() => A::Hdr,
        ("url_param", Some(p)) if !p.is_empty() => A::UrlParam,
        _ => {
            errs.add(
                format!("{field}.balance"),
                format!(
                    "{balance_text:?} is not a balance algorithm \
                     (roundrobin, leastconn, source, uri, random, hdr(name), url_param(name))"
                ),
            );
            A::Roundrobin
        }
    };
    let hash_type = match b.hash_type.as_deref() {
        None | Some("map-based") => pb::HashType::MapBased,
        Some("consistent") => pb::HashType::Consistent,
        Some(other) => {
            errs.add(
                format!("{field}.hash_type"),
                format!("{other:?} is not map-based or consistent"),
            );
            pb::HashType::MapBased
        }
    };
    let cookie = b.cookie.as_ref().map(|c| {
        let cfield = format!("{field}.cookie");
        if c.name.is_empty() || http_header_name_invalid(&c.name) {
            errs.add(
                format!("{cfield}.name"),
                format!("{:?} is not a valid cookie name", c.name),
            );
        }
        let mode = match c.mode.as_deref() {
            None | Some("insert") => pb::CookieMode::Insert,
            Some("rewrite") => pb::CookieMode::Rewrite,
            Some("prefix") => pb::CookieMode::Prefix,
            Some(other) => {
                errs.add(
                    format!("{cfield}.mode"),
                    format!("{other:?} is not insert, rewrite or prefix"),
                );
                pb::CookieMode::Insert
            }
        };
        let samesite = match c.samesite.as_deref() {
            None => pb::SameSite::Unspecified,
            Some("strict") => pb::SameSite::Strict,
            Some("lax") => pb::SameSite::Lax,
            Some("none") => pb::SameSite::None,
            Some(other) => {
                errs.add(
                    format!("{cfield}.samesite"),
                    format!("{other:?} is not strict, lax or none"),
                );
                pb::SameSite::Unspecified
            }
        };
        pb::Cookie {
            name: c.name.clone(),
            mode: mode as i32,
            indirect: c.indirect,
            nocache: c.nocache,
            httponly: c.httponly,
            secure: c.secure,
            samesite: samesite as i32,
            maxidle_ms: duration(errs, format!("{cfield}.maxidle"), &c.maxidle),
            maxlife_ms: duration(errs, format!("{cfield}.maxlife"), &c.maxlife),
            domain: c.domain.clone().unwrap_or_default(),
        }
    });
    let health_check = b
        .health_check
        .as_ref()
        .map(|h| health_check(errs, &format!("{field}.health_check"), h));

    let mut servers = Vec::new();
    let mut names = HashSet::new();
    let mut cookies = HashSet::new();
    for (k, s) in b.servers.iter().enumerate() {
        let sfield = format!("{field}.servers[{k}]");
        check_name(errs, format!("{sfield}.name"), &s.name);
        if !names.insert(s.name.as_str()) {
            errs.add(
                format!("{sfield}.name"),
                format!("duplicate server name {:?}", s.name),
            );
        }
        check_server_address(errs, &format!("{sfield}.address"), &s.address);
        let weight = s.weight.unwrap_or(1);
        if weight > 256 {
            errs.add(format!("{sfield}.weight"), format!("{weight} is over 256"));
        }
        if let Some(c) = &s.cookie {
            if c.is_empty() || c.contains([';', ',', ' ', '"']) {
                errs.add(
                    format!("{sfield}.cookie"),
                    format!("{c:?} is not a valid cookie value"),
                );
            } else if !cookies.insert(c.as_str()) {
                errs.add(
                    format!("{sfield}.cookie"),
                    format!("cookie value {c:?} is used twice"),
                );
            }
        }
        let state = match s.state.as_deref() {
            None | Some("ready") => pb::ServerState::Ready,
            Some("drain") => pb::ServerState::Drain,
            Some("maint") => pb::ServerState::Maint,
            Some(other) => {
                errs.add(
                    format!("{sfield}.state"),
                    format!("{other:?} is not ready, drain or maint"),
                );
                pb::ServerState::Ready
            }
        };
        let check = s.check.as_ref().map(|c| {
            let f = format!("{sfield}.check");
            if c.fall == Some(0) {
                errs.add(format!("{f}.fall"), "fall must be at least 1");
            }
            if c.rise == Some(0) {
                errs.add(format!("{f}.rise"), "rise must be at least 1");
            }
            if c.port == Some(0) {
                errs.add(format!("{f}.port"), "port must be 1-65535");
            }
            pb::ServerCheck {
                inter_ms: duration(errs, format!("{f}.inter"), &c.inter).unwrap_or(2_000),
                fall: c.fall.unwrap_or(3),
                rise: c.rise.unwrap_or(2),
                port: c.port.map(u32::from),
            }
        });
        servers.push(pb::Server {
            name: s.name.clone(),
            address: s.address.clone(),
            weight,
            maxconn: s.maxconn.unwrap_or(0),
            cookie: s.cookie.clone().unwrap_or_default(),
            backup: s.backup,
            state: state as i32,
            check,
        });
    }

    pb::Backend {
        name: b.name.clone(),
        balance: Some(pb::Balance {
            algorithm: algorithm as i32,
            arg: arg.unwrap_or_default().to_string(),
            hash_type: hash_type as i32,
        }),
        cookie,
        timeouts: b
            .timeouts
            .as_ref()
            .map(|t| timeouts(errs, &format!("{field}.timeouts"), t)),
        health_check,
        servers,
        retries: b.retries,
        redispatch: b.redispatch,
        http_server_close: b.http_server_close,
    }
}

pub(super) fn check_server_address(errs: &mut Errors, field: &str, address: &str) {
    let Some((host, port)) = address.rsplit_once(':') else {
        errs.add(field, format!("{address:?} is not host:port"));
        return;
    };
    match port.parse::<u16>() {
        Ok(p) if p > 0 => {}
        _ => errs.add(field, format!("{address:?}: port must be 1-65535")),
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let is_ip = host.parse::<std::net::IpAddr>().is_ok();
    let is_hostname = !host.is_empty()
        && host
            .split('.')
            .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    if !is_ip && !is_hostname {
        errs.add(
            field,
            format!("{address:?}: {host:?} is not an IP address or host name"),
        );
    }
}

//! Backend directives: balancing, cookie persistence, health checks (`option httpchk`,
//! `http-check`), servers.

use serde_json::{json, Map, Value};

use super::super::lexer::Line;
use super::super::NoteKind;
use super::Importer;

impl Importer<'_> {
    /// `balance ALGORITHM [ARGUMENTS]`: the algorithms Sluice has, `url_param NAME` as
    /// `url_param(NAME)`; `static-rr` as `roundrobin` (noted), arguments that tune an
    /// algorithm noted; an algorithm Sluice lacks is reported and the backend keeps its
    /// default (roundrobin).
    pub(super) fn balance(&mut self, line: &Line) {
        let words: Vec<&str> = line.words[1..].iter().map(|w| w.text.as_str()).collect();
        let Some(&algo) = words.first() else {
            return self.unsupported(line, 1, "balance needs an algorithm");
        };
        let (value, used) = match algo {
            "roundrobin" | "leastconn" | "source" | "uri" | "random" => (algo.to_string(), 1),
            a if a.starts_with("hdr(") && a.ends_with(')') => (a.to_string(), 1),
            "url_param" => match words.get(1) {
                Some(name) => (format!("url_param({name})"), 2),
                None => return self.unsupported(line, 2, "url_param needs a parameter name"),
            },
            "static-rr" => {
                self.note(
                    line,
                    2,
                    NoteKind::Difference,
                    "as roundrobin: weights may change at runtime (drain, weight 0) in Sluice",
                );
                ("roundrobin".to_string(), 1)
            }
            a if a.starts_with("random(") => {
                self.note(
                    line,
                    2,
                    NoteKind::Difference,
                    "as random: Sluice draws two servers and takes the less loaded",
                );
                ("random".to_string(), 1)
            }
            _ => {
                return self.unsupported(
                    line,
                    2,
                    "no such algorithm in Sluice (roundrobin, leastconn, source, uri, random, hdr(name), url_param(name)); the backend balances roundrobin",
                )
            }
        };
        if words.len() > used {
            self.note(
                line,
                used + 2,
                NoteKind::Unsupported,
                format!(
                    "{:?}: the algorithm's arguments are not taken",
                    words[used..].join(" ")
                ),
            );
        }
        if let Some(b) = self.settings(true) {
            b.insert("balance".into(), json!(value));
        }
    }

    pub(super) fn cookie(&mut self, line: &Line) {
        let Some(name) = line.word(1) else {
            return self.unsupported(line, 1, "cookie needs a name");
        };
        let mut c = json!({ "name": name });
        let words: Vec<&str> = line.words[2..].iter().map(|w| w.text.as_str()).collect();
        let mut i = 0;
        while i < words.len() {
            let arg = words.get(i + 1).copied();
            match (words[i], arg) {
                (m @ ("insert" | "rewrite" | "prefix"), _) => c["mode"] = json!(m),
                (f @ ("indirect" | "nocache" | "httponly" | "secure"), _) => c[f] = json!(true),
                (k @ ("domain" | "maxidle" | "maxlife"), Some(v)) => {
                    c[k] = json!(v);
                    i += 1;
                }
                ("samesite", Some(v)) => {
                    c["samesite"] = json!(v.to_ascii_lowercase());
                    i += 1;
                }
                (other, _) => self.note(
                    line,
                    2,
                    NoteKind::Unsupported,
                    format!("cookie option {other:?} has no equivalent"),
                ),
            }
            i += 1;
        }
        if let Some(b) = self.backend() {
            b.insert("cookie".into(), c);
        }
    }

    /// The backend's health check object.
    pub(super) fn check_object(&mut self) -> Option<&mut Map<String, Value>> {
        let b = self.backend()?;
        b.entry("health_check")
            .or_insert_with(|| json!({ "type": "http" }))
            .as_object_mut()
    }

    /// `option httpchk [METH URI [VER]]` (the old form; the headers of the 2.2+ form
    /// come with `http-check send`).
    pub(super) fn httpchk(&mut self, line: &Line) {
        let words: Vec<String> = line.words[2..].iter().map(|w| w.text.clone()).collect();
        let Some(check) = self.check_object() else {
            return self.unsupported(line, 2, "health checks are set per backend");
        };
        let (meth, uri, ver) = match words.as_slice() {
            [] => (None, None, None),
            [uri] => (None, Some(uri.clone()), None),
            [m, u] => (Some(m.clone()), Some(u.clone()), None),
            [m, u, v, ..] => (Some(m.clone()), Some(u.clone()), Some(v.clone())),
        };
        check.insert(
            "method".into(),
            json!(meth.unwrap_or_else(|| "OPTIONS".into())),
        );
        check.insert("uri".into(), json!(uri.unwrap_or_else(|| "/".into())));
        if let Some(v) = ver {
            // The old form may carry headers after the version: "HTTP/1.1\r\nHost:\ x".
            let mut parts = v.split("\r\n");
            check.insert("version".into(), json!(parts.next()));
            for h in parts.filter(|h| !h.is_empty()) {
                if let Some((k, val)) = h.split_once(':') {
                    let headers = check.entry("headers").or_insert_with(|| json!({}));
                    headers[k.trim()] = json!(val.trim());
                }
            }
        }
    }

    pub(super) fn http_check(&mut self, line: &Line) {
        let words: Vec<String> = line.words[1..].iter().map(|w| w.text.clone()).collect();
        match words.first().map(String::as_str) {
            Some("connect") if words.len() == 1 => {}
            Some("send") => {
                let mut notes = Vec::new();
                let Some(check) = self.check_object() else {
                    return self.unsupported(line, 2, "health checks are set per backend");
                };
                let mut i = 1;
                while i + 1 < words.len() {
                    match words[i].as_str() {
                        "meth" => check.insert("method".into(), json!(words[i + 1])),
                        "uri" => check.insert("uri".into(), json!(words[i + 1])),
                        "ver" => check.insert("version".into(), json!(words[i + 1])),
                        "hdr" if i + 2 < words.len() => {
                            let headers = check.entry("headers").or_insert_with(|| json!({}));
                            headers[&words[i + 1]] = json!(words[i + 2]);
                            i += 1;
                            None
                        }
                        other => {
                            notes.push(format!(
                                "http-check send argument {other:?} has no equivalent"
                            ));
                            None
                        }
                    };
                    i += 2;
                }
                for n in notes {
                    self.note(line, 2, NoteKind::Unsupported, n);
                }
            }
            Some("expect") => match (words.get(1).map(String::as_str), words.get(2)) {
                (Some("status"), Some(code)) => {
                    let expect = match code.parse::<u16>() {
                        Ok(c) => json!(c),
                        Err(_) => json!(code),
                    };
                    match self.check_object() {
                        Some(check) => {
                            check.insert("expect_status".into(), expect);
                        }
                        None => self.unsupported(line, 2, "health checks are set per backend"),
                    }
                }
                _ => self.unsupported(line, 3, "only `http-check expect status` has an equivalent"),
            },
            _ => self.unsupported(line, 2, "no equivalent in Sluice"),
        }
    }

    pub(super) fn server(&mut self, line: &Line) {
        let (Some(name), Some(addr)) = (line.word(1), line.word(2)) else {
            return self.unsupported(line, 1, "server needs a name and an address");
        };
        let mut server = json!({ "name": name, "address": addr });
        let mut check = Map::new();
        let mut has_check = false;
        let words: Vec<&str> = line.words[3..].iter().map(|w| w.text.as_str()).collect();
        let mut i = 0;
        while i < words.len() {
            let arg = words.get(i + 1).copied();
            let num = arg.and_then(|a| a.parse::<u32>().ok());
            match (words[i], arg) {
                ("check", _) => has_check = true,
                ("backup", _) => server["backup"] = json!(true),
                ("disabled", _) => server["state"] = json!("maint"),
                ("inter", Some(v)) => {
                    check.insert("inter".into(), json!(v));
                    i += 1;
                }
                (k @ ("fall" | "rise"), Some(_)) if num.is_some() => {
                    check.insert(k.into(), json!(num));
                    i += 1;
                }
                ("port", Some(_)) if num.is_some() => {
                    check.insert("port".into(), json!(num));
                    i += 1;
                }
                (k @ ("maxconn" | "weight"), Some(_)) if num.is_some() => {
                    server[k] = json!(num);
                    i += 1;
                }
                ("cookie", Some(v)) => {
                    server["cookie"] = json!(v);
                    i += 1;
                }
                (other, _) => self.note(
                    line,
                    2,
                    NoteKind::Unsupported,
                    format!("server option {other:?} has no equivalent"),
                ),
            }
            i += 1;
        }
        if has_check {
            server["check"] = Value::Object(check);
        } else if !check.is_empty() {
            self.note(
                line,
                2,
                NoteKind::Difference,
                "inter/fall/rise without `check`: the server is not checked",
            );
        }
        match self.backend() {
            Some(b) => {
                let servers = b.entry("servers").or_insert_with(|| json!([]));
                servers.as_array_mut().expect("a list").push(server);
            }
            None => self.unsupported(line, 1, "servers belong to a backend"),
        }
    }
}

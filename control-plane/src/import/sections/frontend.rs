//! Frontend directives: binds (with TLS), ACLs, `use_backend`, request and response
//! rules, stick tables and `tcp-request` tracking.

use serde_json::{json, Map, Value};

use super::super::lexer::Line;
use super::super::NoteKind;
use super::{address, certificate_name, size, Importer};

impl Importer<'_> {
    pub(super) fn bind(&mut self, line: &Line) {
        let Some(addr) = line.word(1) else {
            return self.unsupported(line, 1, "bind needs an address");
        };
        let mut bind = json!({ "address": address(addr) });
        let words: Vec<&str> = line.words[2..].iter().map(|w| w.text.as_str()).collect();
        let mut tls = Map::new();
        let mut ssl = false;
        let mut i = 0;
        while i < words.len() {
            let arg = words.get(i + 1).copied();
            match (words[i], arg) {
                ("ssl", _) => ssl = true,
                ("crt", Some(path)) => {
                    let name = certificate_name(path);
                    let list = tls.entry("certificates").or_insert_with(|| json!([]));
                    list.as_array_mut().expect("a list").push(json!(name));
                    self.note(line, 2, NoteKind::Action, format!("upload the certificate and key of {path} as certificate {name:?} (POST /api/v1/certificates)"));
                    i += 1;
                }
                ("alpn", Some(list)) => {
                    tls.insert("alpn".into(), json!(list.split(',').collect::<Vec<_>>()));
                    i += 1;
                }
                ("ssl-min-ver", Some(v)) => {
                    tls.insert("min_version".into(), json!(v));
                    i += 1;
                }
                (kind @ ("ciphers" | "ciphersuites"), Some(list)) => {
                    if let Some(known) = self.ciphers(line, 2, list, kind == "ciphersuites") {
                        tls.insert("ciphers".into(), known);
                    }
                    i += 1;
                }
                ("no-tls-tickets", _) => {
                    tls.insert("session_tickets".into(), json!(false));
                }
                (other, _) => self.note(
                    line,
                    2,
                    NoteKind::Unsupported,
                    format!("bind option {other:?} has no equivalent"),
                ),
            }
            i += 1;
        }
        if ssl {
            for (k, v) in &self.tls_defaults {
                tls.entry(k.clone()).or_insert_with(|| v.clone());
            }
            bind["tls"] = Value::Object(tls);
        }
        if let Some(f) = self.frontend() {
            let binds = f.entry("binds").or_insert_with(|| json!([]));
            binds.as_array_mut().expect("a list").push(bind);
        }
    }

    pub(super) fn acl(&mut self, line: &Line) {
        let (Some(name), expr) = (line.word(1).map(str::to_string), line.rest(2)) else {
            return self.unsupported(line, 1, "acl needs a name");
        };
        if let Some(f) = self.frontend() {
            let acls = f.entry("acls").or_insert_with(|| json!([]));
            acls.as_array_mut()
                .expect("a list")
                .push(json!({ "name": name, "expr": expr }));
        } else {
            self.unsupported(
                line,
                1,
                "ACLs of a backend have no equivalent: Sluice routes in frontends",
            );
        }
    }

    /// `if COND` / `unless COND` from word `i` on, into the rule.
    pub(super) fn condition(line: &Line, i: usize, rule: &mut Value) -> bool {
        match line.word(i) {
            Some(kw @ ("if" | "unless")) => {
                rule[kw] = json!(line.rest(i + 1));
                true
            }
            None => true,
            Some(_) => false,
        }
    }

    pub(super) fn use_backend(&mut self, line: &Line) {
        let Some(backend) = line.word(1) else {
            return self.unsupported(line, 1, "use_backend needs a backend");
        };
        let mut rule = json!({ "backend": backend });
        if !Self::condition(line, 2, &mut rule) {
            return self.unsupported(line, 2, "expected if or unless after the backend");
        }
        if let Some(f) = self.frontend() {
            let list = f.entry("use_backend").or_insert_with(|| json!([]));
            list.as_array_mut().expect("a list").push(rule);
        }
    }

    /// `http-request`/`http-response`/`http-after-response` rules and the old
    /// `redirect` directive.
    pub(super) fn rule(&mut self, line: &Line, kw: &str) {
        let (field, first) = match kw {
            "http-request" => ("http_request", 1),
            "http-response" => ("http_response", 1),
            "http-after-response" => ("http_after_response", 1),
            _ => ("http_request", 0),
        };
        let Some(action) = line.word(first).map(str::to_string) else {
            return self.unsupported(line, 1, "a rule needs an action");
        };
        let mut rule = json!({ "action": action });
        let mut i = first + 1;
        let words: Vec<String> = line.words.iter().map(|w| w.text.clone()).collect();
        let arg = |i: usize| words.get(i).cloned();
        match action.as_str() {
            "set-header" | "add-header" => {
                rule["name"] = json!(arg(i));
                rule["value"] = json!(arg(i + 1));
                i += 2;
            }
            "del-header" => {
                rule["name"] = json!(arg(i));
                i += 1;
            }
            "redirect" => {
                while let Some(w) = arg(i) {
                    match w.as_str() {
                        "scheme" | "location" | "prefix" => rule[w.as_str()] = json!(arg(i + 1)),
                        "code" => {
                            rule["code"] = json!(arg(i + 1).and_then(|c| c.parse::<u16>().ok()))
                        }
                        _ => break,
                    }
                    i += 2;
                }
            }
            "deny" | "return" => {
                while let Some(w) = arg(i) {
                    match w.as_str() {
                        "deny_status" | "status" => {
                            rule["status"] = json!(arg(i + 1).and_then(|c| c.parse::<u16>().ok()))
                        }
                        "content-type" => rule["content_type"] = json!(arg(i + 1)),
                        "string" | "lf-string" => rule["body"] = json!(arg(i + 1)),
                        _ => break,
                    }
                    i += 2;
                }
            }
            a if a.starts_with("track-sc") => {
                rule["key"] = json!(arg(i));
                i += 1;
            }
            // HAProxy's replacement has back-references (`\1`) and no `$` syntax: a `$`
            // is doubled to stay literal here.
            "replace-path" => {
                rule["regex"] = json!(arg(i));
                rule["replacement"] = json!(arg(i + 1).map(|r| r.replace('$', "$$")));
                i += 2;
            }
            "replace-header" => {
                rule["name"] = json!(arg(i));
                rule["regex"] = json!(arg(i + 1));
                rule["replacement"] = json!(arg(i + 2).map(|r| r.replace('$', "$$")));
                i += 3;
            }
            "set-path" => {
                rule["path"] = json!(arg(i));
                i += 1;
            }
            _ => return self.unsupported(line, first + 1, "no such action in Sluice"),
        }
        if let Value::Object(m) = &mut rule {
            m.retain(|_, v| !v.is_null());
        }
        if !Self::condition(line, i, &mut rule) {
            return self.unsupported(line, first + 1, &format!("unexpected {:?}", words[i]));
        }
        match self.frontend() {
            Some(f) => {
                let list = f.entry(field).or_insert_with(|| json!([]));
                list.as_array_mut().expect("a list").push(rule);
            }
            None => self.unsupported(
                line,
                first + 1,
                "rules run in frontends in Sluice; a backend's rules have no equivalent",
            ),
        }
    }

    pub(super) fn stick_table(&mut self, line: &Line) {
        let mut table = Map::new();
        let words: Vec<&str> = line.words[1..].iter().map(|w| w.text.as_str()).collect();
        let mut i = 0;
        while i + 1 < words.len() {
            match words[i] {
                "type" => table.insert("type".into(), json!(words[i + 1])),
                "size" => table.insert("size".into(), json!(size(words[i + 1]))),
                "expire" => table.insert("expire".into(), json!(words[i + 1])),
                "store" => table.insert(
                    "store".into(),
                    json!(words[i + 1].split(',').collect::<Vec<_>>()),
                ),
                other => {
                    self.note(
                        line,
                        1,
                        NoteKind::Unsupported,
                        format!("stick-table argument {other:?} has no equivalent"),
                    );
                    None
                }
            };
            i += 2;
        }
        if let Some(f) = self.frontend() {
            f.insert("stick_table".into(), Value::Object(table));
        } else {
            self.unsupported(line, 1, "stick tables live in frontends in Sluice");
        }
    }

    pub(super) fn tcp_request(&mut self, line: &Line) {
        match (line.word(1), line.word(2)) {
            (Some("connection" | "content"), Some(a)) if a.starts_with("track-sc") => {
                self.note(line, 3, NoteKind::Difference, "tracked when the request's head is read (an http-request rule), not at the connection");
                let mut rule = json!({ "action": a, "key": line.word(3) });
                if Self::condition(line, 4, &mut rule) {
                    if let Some(f) = self.frontend() {
                        let list = f.entry("http_request").or_insert_with(|| json!([]));
                        list.as_array_mut().expect("a list").push(rule);
                    }
                }
            }
            _ => self.unsupported(
                line,
                2,
                "tcp-request rules other than track-sc have no equivalent",
            ),
        }
    }
}

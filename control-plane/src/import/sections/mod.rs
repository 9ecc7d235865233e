//! The mapping of haproxy.cfg sections and directives onto the document, one directive
//! at a time, with a note for whatever does not map exactly: sections, `global`,
//! `defaults` and what every proxy shares here; [`frontend`] and [`backend`] directives
//! in their own files.

use serde_json::{json, Map, Value};

mod backend;
mod frontend;

use super::lexer::Line;
use super::{Imported, Note, NoteKind};

/// Where the directives being read go.
#[derive(Debug, Clone, Copy)]
enum Section {
    None,
    Global,
    Defaults,
    Frontend(usize),
    Backend(usize),
    /// `listen`: a frontend and a backend of the same name.
    Listen(usize, usize),
}

pub struct Importer<'a> {
    read_file: &'a dyn Fn(&str) -> Option<String>,
    notes: Vec<Note>,
    section: Section,
    /// `ssl-default-bind-*` from `global`, applied to every TLS bind.
    tls_defaults: Map<String, Value>,
    /// The `defaults` section in effect.
    current: Map<String, Value>,
    /// The document's defaults: those in effect for the first proxy.
    document_defaults: Option<Map<String, Value>>,
    frontends: Vec<Map<String, Value>>,
    backends: Vec<Map<String, Value>>,
}

/// `timeout` names and their document fields.
const TIMEOUTS: &[(&str, &str)] = &[
    ("connect", "connect"),
    ("client", "client"),
    ("server", "server"),
    ("tunnel", "tunnel"),
    ("http-request", "http_request"),
    ("queue", "queue"),
    ("check", "check"),
    ("client-fin", "client_fin"),
    ("server-fin", "server_fin"),
];

/// HAProxy sizes: `200k`, `1m`, `2g`.
fn size(text: &str) -> Option<u64> {
    let (digits, mult) = match text.chars().last()? {
        'k' | 'K' => (&text[..text.len() - 1], 1_000),
        'm' | 'M' => (&text[..text.len() - 1], 1_000_000),
        'g' | 'G' => (&text[..text.len() - 1], 1_000_000_000),
        _ => (text, 1),
    };
    digits.parse::<u64>().ok().map(|n| n * mult)
}

/// `*:443`, `:80`, `[::]:443`, `10.0.0.1:80` as the document writes addresses.
fn address(text: &str) -> String {
    match text.rsplit_once(':') {
        Some(("" | "*", port)) => format!("0.0.0.0:{port}"),
        _ => text.to_string(),
    }
}

/// The certificate name a `crt` path becomes: its file name without the extension.
fn certificate_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    file.strip_suffix(".pem").unwrap_or(file).to_string()
}

impl<'a> Importer<'a> {
    pub fn new(read_file: &'a dyn Fn(&str) -> Option<String>) -> Importer<'a> {
        Importer {
            read_file,
            notes: Vec::new(),
            section: Section::None,
            tls_defaults: Map::new(),
            current: Map::new(),
            document_defaults: None,
            frontends: Vec::new(),
            backends: Vec::new(),
        }
    }

    fn note(&mut self, line: &Line, words: usize, kind: NoteKind, message: impl Into<String>) {
        let directive = line
            .words
            .iter()
            .take(words.max(1))
            .map(|w| w.text.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        self.notes.push(Note {
            line: line.no,
            directive,
            kind,
            message: message.into(),
        });
    }

    fn unsupported(&mut self, line: &Line, words: usize, why: &str) {
        self.note(line, words, NoteKind::Unsupported, why);
    }

    pub fn run(mut self, lines: &[Line]) -> Imported {
        for line in lines {
            let kw = line.words[0].text.as_str();
            match kw {
                "global" => self.section = Section::Global,
                "defaults" => {
                    // A new defaults section starts from nothing, as in HAProxy.
                    self.current = Map::new();
                    self.section = Section::Defaults;
                }
                "frontend" | "backend" | "listen" => self.open_proxy(line),
                _ => self.directive(line),
            }
        }
        let defaults = self
            .document_defaults
            .take()
            .unwrap_or(self.current.clone());
        let document = json!({
            "defaults": Value::Object(defaults),
            "frontends": self.frontends.into_iter().map(Value::Object).collect::<Vec<_>>(),
            "backends": self.backends.into_iter().map(Value::Object).collect::<Vec<_>>(),
        });
        Imported {
            document,
            report: self.notes,
        }
    }

    fn open_proxy(&mut self, line: &Line) {
        let Some(name) = line.word(1).map(str::to_string) else {
            self.unsupported(line, 1, "a section without a name: skipped");
            self.section = Section::None;
            return;
        };
        if self.document_defaults.is_none() {
            self.document_defaults = Some(self.current.clone());
        }
        let differs = self.document_defaults.as_ref() != Some(&self.current);
        let kw = line.words[0].text.as_str();
        let new_frontend = |me: &mut Self| {
            me.frontends
                .push(Map::from_iter([("name".to_string(), json!(name))]));
            me.frontends.len() - 1
        };
        let new_backend = |me: &mut Self| {
            me.backends
                .push(Map::from_iter([("name".to_string(), json!(name))]));
            me.backends.len() - 1
        };
        self.section = match kw {
            "frontend" => Section::Frontend(new_frontend(self)),
            "backend" => Section::Backend(new_backend(self)),
            _ => {
                let (f, b) = (new_frontend(self), new_backend(self));
                self.frontends[f].insert("default_backend".into(), json!(name));
                Section::Listen(f, b)
            }
        };
        if differs {
            self.inherit(line);
        }
    }

    /// A proxy under a `defaults` section other than the first: what differs from the
    /// document's defaults goes on the proxy itself.
    fn inherit(&mut self, line: &Line) {
        let base = self.document_defaults.clone().unwrap_or_default();
        let current = self.current.clone();
        let base_t = base
            .get("timeouts")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let cur_t = current
            .get("timeouts")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let mut timeouts = Map::new();
        for (k, v) in &cur_t {
            if base_t.get(k) != Some(v) {
                timeouts.insert(k.clone(), v.clone());
            }
        }
        let mut lost = Vec::new();
        for k in base_t.keys().filter(|k| !cur_t.contains_key(*k)) {
            lost.push(format!("no timeout {k}"));
        }
        let mut keys: Vec<&String> = current.keys().chain(base.keys()).collect();
        keys.sort();
        keys.dedup();
        for k in keys {
            if k == "timeouts" || base.get(k) == current.get(k) {
                continue;
            }
            // A flag the later section does not set is off for its proxies.
            let v = match current.get(k) {
                Some(v) => v.clone(),
                None if base.get(k).is_some_and(Value::is_boolean) => json!(false),
                None => {
                    lost.push(format!("no {k}"));
                    continue;
                }
            };
            let (k, v) = (k.clone(), &v);
            match (k.as_str(), self.section) {
                ("forwardfor" | "maxconn", Section::Frontend(f) | Section::Listen(f, _)) => {
                    self.frontends[f].insert(k.clone(), v.clone());
                }
                (
                    "http_server_close" | "redispatch" | "retries",
                    Section::Backend(b) | Section::Listen(_, b),
                ) => {
                    self.backends[b].insert(k.clone(), v.clone());
                }
                ("forwardfor" | "maxconn", _)
                | ("http_server_close" | "redispatch" | "retries", _) => {}
                _ => lost.push(k.clone()),
            }
        }
        if !timeouts.is_empty() {
            for map in self.proxies() {
                map.insert("timeouts".into(), Value::Object(timeouts.clone()));
            }
        }
        if !lost.is_empty() {
            self.note(
                line,
                2,
                NoteKind::Difference,
                format!(
                    "this proxy follows a later defaults section; {} of it cannot be set per proxy and the document's defaults apply",
                    lost.join(", ")
                ),
            );
        }
    }

    /// The objects the current section writes to.
    fn proxies(&mut self) -> Vec<&mut Map<String, Value>> {
        match self.section {
            Section::Frontend(f) => vec![&mut self.frontends[f]],
            Section::Backend(b) => vec![&mut self.backends[b]],
            Section::Listen(f, b) => {
                let (fe, be) = (&mut self.frontends[f], &mut self.backends[b]);
                vec![fe, be]
            }
            _ => Vec::new(),
        }
    }

    fn frontend(&mut self) -> Option<&mut Map<String, Value>> {
        match self.section {
            Section::Frontend(f) | Section::Listen(f, _) => Some(&mut self.frontends[f]),
            _ => None,
        }
    }

    fn backend(&mut self) -> Option<&mut Map<String, Value>> {
        match self.section {
            Section::Backend(b) | Section::Listen(_, b) => Some(&mut self.backends[b]),
            _ => None,
        }
    }

    /// Where proxy-wide settings go: the defaults section or the proxy.
    fn settings(&mut self, backend_side: bool) -> Option<&mut Map<String, Value>> {
        match self.section {
            Section::Defaults => Some(&mut self.current),
            _ if backend_side => self.backend(),
            _ => self.frontend(),
        }
    }

    fn directive(&mut self, line: &Line) {
        let kw = line.words[0].text.clone();
        match self.section {
            Section::None => self.unsupported(line, 1, "outside any section: ignored"),
            Section::Global => self.global(line, &kw),
            _ => self.proxy_directive(line, &kw),
        }
    }

    fn global(&mut self, line: &Line, kw: &str) {
        match kw {
            "ssl-default-bind-ciphers" | "ssl-default-bind-ciphersuites" => {
                let suites = kw.ends_with("ciphersuites");
                if let Some(list) = self.ciphers(line, 1, &line.rest(1), suites) {
                    self.tls_defaults.insert("ciphers".into(), list);
                }
            }
            "ssl-default-bind-options" => {
                let words: Vec<&str> = line.words[1..].iter().map(|w| w.text.as_str()).collect();
                self.tls_options(line, &words, true);
            }
            "maxconn" => self.note(line, 1, NoteKind::Difference, "a process-wide limit has no equivalent; each frontend's maxconn (from defaults) limits its connections"),
            "log" => self.note(line, 1, NoteKind::Difference, "nodes write their access log to standard output, in HAProxy's format"),
            "busy-polling" => self.note(line, 1, NoteKind::Action, "busy polling is each node's own: start sluice-dp with --busy-polling"),
            "user" | "group" | "daemon" | "chroot" | "pidfile" | "nbthread" | "nbproc" | "master-worker" | "stats" => {
                self.unsupported(line, 1, "process management is the service manager's and the node's command line's (--worker-threads)")
            }
            k if k.starts_with("tune.") => self.unsupported(line, 1, "no tunable of this kind; the node sizes its buffers itself"),
            _ => self.unsupported(line, 1, "no equivalent in Sluice"),
        }
    }

    /// An OpenSSL cipher list (`A:B:C`) as the TLS 1.2 suites Sluice offers; the others
    /// are reported. A TLS 1.3 list (`ciphersuites`) is reported and not taken: rustls's
    /// TLS 1.3 suites are always on. `None`: nothing to set (the default list stays).
    fn ciphers(&mut self, line: &Line, at: usize, list: &str, suites: bool) -> Option<Value> {
        use crate::config::compile::TLS12_CIPHERS;
        if suites {
            self.note(
                line,
                at,
                NoteKind::Difference,
                "TLS 1.3 suites are always on (AES-128-GCM, AES-256-GCM, CHACHA20-POLY1305): the list is not taken",
            );
            return None;
        }
        let (known, other): (Vec<&str>, Vec<&str>) = list
            .split(':')
            .filter(|c| !c.is_empty())
            .partition(|c| TLS12_CIPHERS.contains(c));
        if !other.is_empty() {
            self.note(
                line,
                at,
                NoteKind::Unsupported,
                format!(
                    "not offered by Sluice: {} (its TLS 1.2 suites: {})",
                    other.join(", "),
                    TLS12_CIPHERS.join(", ")
                ),
            );
        }
        (!known.is_empty()).then(|| json!(known))
    }

    /// TLS options (`ssl-min-ver`, `no-tls-tickets`, ...) into a TLS object.
    fn tls_options(&mut self, line: &Line, words: &[&str], global: bool) -> Map<String, Value> {
        let mut tls = Map::new();
        let mut i = 0;
        while i < words.len() {
            match words[i] {
                "ssl-min-ver" if i + 1 < words.len() => {
                    tls.insert("min_version".into(), json!(words[i + 1]));
                    i += 1;
                }
                "no-tls-tickets" => {
                    tls.insert("session_tickets".into(), json!(false));
                }
                "no-sslv3" | "no-tlsv10" | "no-tlsv11" => {}
                other => self.note(
                    line,
                    1,
                    NoteKind::Unsupported,
                    format!("TLS option {other:?} has no equivalent (rustls chooses)"),
                ),
            }
            i += 1;
        }
        if global {
            self.tls_defaults.extend(tls.clone());
        }
        tls
    }

    fn proxy_directive(&mut self, line: &Line, kw: &str) {
        let in_defaults = matches!(self.section, Section::Defaults);
        match kw {
            "mode" => match line.word(1) {
                Some("http") => {}
                _ => self.unsupported(
                    line,
                    2,
                    "only mode http: Sluice is an HTTP and WebSocket proxy",
                ),
            },
            "timeout" => self.timeout(line),
            "maxconn" => match line.word(1).and_then(|n| n.parse::<u32>().ok()) {
                Some(n) => match self.section {
                    Section::Backend(_) => self.unsupported(
                        line,
                        1,
                        "a backend-wide maxconn has no equivalent; set maxconn on its servers",
                    ),
                    _ => {
                        if let Some(m) = self.settings(false) {
                            m.insert("maxconn".into(), json!(n));
                        }
                    }
                },
                None => self.unsupported(line, 1, "not a number"),
            },
            "retries" => match line.word(1).and_then(|n| n.parse::<u32>().ok()) {
                Some(n) => {
                    if let Some(m) = self.settings(true) {
                        m.insert("retries".into(), json!(n));
                    }
                }
                None => self.unsupported(line, 1, "not a number"),
            },
            "option" => self.option(line),
            "log" => self.note(
                line,
                1,
                NoteKind::Difference,
                "nodes write their access log to standard output, in HAProxy's format",
            ),
            "errorfile" => self.errorfile(line),
            "bind" if !in_defaults => self.bind(line),
            "acl" if !in_defaults => self.acl(line),
            "use_backend" if !in_defaults => self.use_backend(line),
            "default_backend" => match line.word(1) {
                Some(b) if !in_defaults => {
                    let b = b.to_string();
                    if let Some(f) = self.frontend() {
                        f.insert("default_backend".into(), json!(b));
                    }
                }
                _ => self.unsupported(line, 1, "a default backend belongs to a frontend"),
            },
            "http-request" | "http-response" | "http-after-response" if !in_defaults => {
                self.rule(line, kw)
            }
            "redirect" if !in_defaults => self.rule(line, "redirect"),
            "stick-table" if !in_defaults => self.stick_table(line),
            "tcp-request" if !in_defaults => self.tcp_request(line),
            "balance" => self.balance(line),
            "hash-type" => {
                let v = line.rest(1);
                if let Some(b) = self.settings(true) {
                    b.insert("hash_type".into(), json!(v));
                }
            }
            "cookie" if !in_defaults => self.cookie(line),
            "http-check" => self.http_check(line),
            "server" if !in_defaults => self.server(line),
            _ => self.unsupported(line, 1, "no equivalent in Sluice"),
        }
    }

    fn timeout(&mut self, line: &Line) {
        let (Some(name), Some(value)) = (line.word(1), line.word(2)) else {
            return self.unsupported(line, 2, "a timeout needs a name and a value");
        };
        let Some((_, field)) = TIMEOUTS.iter().find(|(n, _)| *n == name) else {
            let why = if name == "http-keep-alive" {
                "an idle kept-alive client connection is governed by timeout client"
            } else {
                "no such timeout in Sluice"
            };
            return self.unsupported(line, 2, why);
        };
        let (field, value) = (field.to_string(), json!(value));
        let targets: Vec<&mut Map<String, Value>> = match self.section {
            Section::Defaults => vec![&mut self.current],
            _ => self.proxies(),
        };
        for m in targets {
            let t = m.entry("timeouts").or_insert_with(|| json!({}));
            t[&field] = value.clone();
        }
    }

    fn option(&mut self, line: &Line) {
        let Some(name) = line.word(1) else {
            return self.unsupported(line, 1, "an option needs a name");
        };
        let (field, backend_side) = match name {
            "forwardfor" => ("forwardfor", false),
            "http-server-close" => ("http_server_close", true),
            "redispatch" => ("redispatch", true),
            "httplog" | "dontlognull" | "http-keep-alive" => {
                let why = match name {
                    "httplog" => "nodes always write HTTP access logs, in HAProxy's format",
                    "dontlognull" => "connections that send nothing are not logged (their 408 is)",
                    _ => "keep-alive is the default",
                };
                return self.note(line, 2, NoteKind::Difference, why);
            }
            "httpchk" => return self.httpchk(line),
            _ => return self.unsupported(line, 2, "no equivalent in Sluice"),
        };
        if line.words.len() > 2 && name == "forwardfor" {
            self.note(line, 2, NoteKind::Unsupported, "forwardfor arguments (except, header, if-none) have no equivalent: X-Forwarded-For is always set");
        }
        if let Some(m) = self.settings(backend_side) {
            m.insert(field.into(), json!(true));
        } else if field == "forwardfor" {
            // In a backend: HAProxy applies it there; Sluice sets it on frontends.
            self.note(
                line,
                2,
                NoteKind::Difference,
                "set on frontends in Sluice; ignored in a backend",
            );
        }
    }

    fn errorfile(&mut self, line: &Line) {
        let (Some(code), Some(path)) = (
            line.word(1).and_then(|c| c.parse::<u16>().ok()),
            line.word(2),
        ) else {
            return self.unsupported(line, 1, "errorfile needs a status and a file");
        };
        let Some(text) = (self.read_file)(path) else {
            return self.note(
                line,
                1,
                NoteKind::Action,
                format!("could not read {path}: add the page to errorfiles by hand"),
            );
        };
        // An errorfile is a whole HTTP response: keep its Content-Type and body.
        let (head, body) = text
            .split_once("\r\n\r\n")
            .or_else(|| text.split_once("\n\n"))
            .unwrap_or(("", &text));
        let content_type = head.lines().find_map(|h| {
            let (k, v) = h.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_string())
        });
        let mut page = json!({ "status": code, "body": body });
        if let Some(ct) = content_type {
            page["content_type"] = json!(ct);
        }
        let target = match self.section {
            Section::Defaults => Some(&mut self.current),
            _ => self.frontend(),
        };
        match target {
            Some(m) => {
                let list = m.entry("errorfiles").or_insert_with(|| json!([]));
                list.as_array_mut().expect("a list").push(page);
            }
            None => self.unsupported(line, 1, "errorfiles are set on frontends and defaults"),
        }
    }
}

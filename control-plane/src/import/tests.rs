//! The importer on the article's configuration (`docs/examples/article.haproxy.cfg`,
//! against the hand-written `docs/examples/article.json`) and by directive family.

use serde_json::{json, Value};

use super::*;
use crate::config::ConfigDocument;

const ARTICLE: &str = include_str!("../../../docs/examples/article.haproxy.cfg");
const ARTICLE_JSON: &str = include_str!("../../../docs/examples/article.json");

fn no_files(_: &str) -> Option<String> {
    None
}

/// The document passes the checks of `PUT /api/v1/config`.
fn valid(doc: &Value) {
    let document: ConfigDocument = serde_json::from_value(doc.clone()).unwrap();
    let config = crate::config::Configuration {
        document,
        certificates: Vec::new(),
    };
    if let Err(e) = crate::config::snapshot(&config) {
        panic!("{e:?}: {doc:#}");
    }
}

fn kinds(report: &[Note], kind: NoteKind) -> Vec<String> {
    report
        .iter()
        .filter(|n| n.kind == kind)
        .map(|n| n.directive.clone())
        .collect()
}

#[test]
fn the_articles_configuration_imports_as_the_hand_written_document() {
    let got = import(ARTICLE, &no_files).unwrap();
    let doc: ConfigDocument = serde_json::from_value(got.document.clone())
        .unwrap_or_else(|e| panic!("{e}: {:#}", got.document));
    let want: Value = serde_json::from_str(ARTICLE_JSON).unwrap();
    let d = &got.document;
    // Routing, rules, limits and persistence as the hand-written document has them.
    let fe = &d["frontends"][0];
    for key in [
        "acls",
        "http_request",
        "http_response",
        "use_backend",
        "default_backend",
        "stick_table",
    ] {
        assert_eq!(fe[key], want["frontends"][0][key], "frontends[0].{key}");
    }
    let tls = &fe["binds"][0]["tls"];
    assert_eq!(tls["alpn"], json!(["h2", "http/1.1"]));
    assert_eq!(tls["min_version"], "TLSv1.2");
    assert_eq!(tls["session_tickets"], false);
    assert_eq!(
        tls["ciphers"],
        want["frontends"][0]["binds"][0]["tls"]["ciphers"]
    );
    assert_eq!(tls["certificates"], json!(["solvethenetwork.com"]));
    assert_eq!(fe["binds"][0]["address"], "0.0.0.0:443");
    assert!(fe["binds"][1].get("tls").is_none());
    for (i, b) in want["backends"].as_array().unwrap().iter().enumerate() {
        let g = &d["backends"][i];
        for key in ["name", "balance", "cookie", "timeouts", "health_check"] {
            assert_eq!(g[key], b[key], "backends[{i}].{key}");
        }
        for (j, s) in b["servers"].as_array().unwrap().iter().enumerate() {
            for key in ["name", "check", "cookie", "maxconn"] {
                assert_eq!(
                    g["servers"][j][key], s[key],
                    "backends[{i}].servers[{j}].{key}"
                );
            }
        }
    }
    assert_eq!(doc.defaults.maxconn, Some(10000));
    assert!(doc.defaults.forwardfor && doc.defaults.http_server_close);
    assert_eq!(doc.defaults.timeouts.tunnel.as_deref(), Some("3600s"));

    // Every line that does not map is reported, with its line number.
    let unsupported = kinds(&got.report, NoteKind::Unsupported);
    for d in [
        "user",
        "group",
        "daemon",
        "tune.ssl.default-dh-param",
        "tune.maxrewrite",
    ] {
        assert!(unsupported.iter().any(|u| u == d), "{d} in {unsupported:?}");
    }
    let actions = kinds(&got.report, NoteKind::Action);
    assert!(
        actions.iter().any(|a| a.starts_with("bind *:443")),
        "{actions:?}"
    );
    assert_eq!(
        actions
            .iter()
            .filter(|a| a.starts_with("errorfile"))
            .count(),
        7
    );
    let prefer = got
        .report
        .iter()
        .find(|n| n.message.contains("prefer-client-ciphers"))
        .unwrap();
    assert_eq!(prefer.line, 9);
}

#[test]
fn acls_of_several_lines_quoting_and_comments() {
    let cfg = r#"
frontend web   # the only one
    bind :8080
    acl api path_beg /api   # first line
    acl api path_beg "/v2 api"
    http-response set-header X-Note "a \"quoted\" value"
    use_backend be if api !{ src 10.0.0.0/8 }
    default_backend be
backend be
    server s1 127.0.0.1:9000 weight 5 backup
"#;
    let got = import(cfg, &no_files).unwrap();
    let fe = &got.document["frontends"][0];
    assert_eq!(fe["binds"][0]["address"], "0.0.0.0:8080");
    assert_eq!(
        fe["acls"][0],
        json!({ "name": "api", "expr": "path_beg /api" })
    );
    assert_eq!(
        fe["acls"][1],
        json!({ "name": "api", "expr": "path_beg \"/v2 api\"" })
    );
    assert_eq!(fe["http_response"][0]["value"], "a \"quoted\" value");
    assert_eq!(fe["use_backend"][0]["if"], "api !{ src 10.0.0.0/8 }");
    let s = &got.document["backends"][0]["servers"][0];
    assert_eq!(
        (s["weight"].as_u64(), s["backup"].as_bool()),
        (Some(5), Some(true))
    );
    assert!(got.report.is_empty(), "{:?}", got.report);
    valid(&got.document);
}

#[test]
fn a_defaults_section_later_in_the_file_applies_to_the_proxies_after_it() {
    let cfg = "
defaults
    timeout client 30s
    timeout server 30s
    option forwardfor
frontend a
    bind :80
    default_backend a
backend a
    server s 127.0.0.1:1
defaults
    timeout client 10s
    timeout server 30s
    retries 5
frontend b
    bind :81
    default_backend b
backend b
    server s 127.0.0.1:2
";
    let got = import(cfg, &no_files).unwrap();
    let d = &got.document;
    assert_eq!(d["defaults"]["timeouts"]["client"], "30s");
    assert!(d["frontends"][0].get("timeouts").is_none());
    assert_eq!(d["frontends"][1]["timeouts"], json!({ "client": "10s" }));
    // The later defaults have no forwardfor: frontend b is not left with it.
    assert_eq!(d["frontends"][1]["forwardfor"], false);
    assert_eq!(d["backends"][1]["retries"], 5);
    assert!(d["backends"][0].get("retries").is_none());
    assert!(got.report.is_empty(), "{:?}", got.report);
    valid(d);
}

#[test]
fn listen_sections_old_checks_errorfiles_and_what_does_not_map() {
    let cfg = "
listen app
    bind 127.0.0.1:8080
    mode tcp
    balance uri
    hash-type consistent
    option httpchk GET /health HTTP/1.1\\r\\nHost:\\ example.com
    errorfile 503 /errors/503.http
    server s1 127.0.0.1:9000 check inter 2s fall 3 rise 2 port 9100 slowstart 10s
    tcp-request connection track-sc0 src
    frobnicate yes
    stick-table type ip size 1m expire 60s store conn_cur
";
    let read = |p: &str| {
        (p == "/errors/503.http").then(|| {
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/html\r\n\r\n<h1>busy</h1>"
                .to_string()
        })
    };
    let got = import(cfg, &read).unwrap();
    let d = &got.document;
    assert_eq!(d["frontends"][0]["default_backend"], "app");
    assert_eq!(d["backends"][0]["balance"], "uri");
    assert_eq!(d["backends"][0]["hash_type"], "consistent");
    assert_eq!(
        d["backends"][0]["health_check"],
        json!({ "type": "http", "method": "GET", "uri": "/health", "version": "HTTP/1.1", "headers": { "Host": "example.com" } })
    );
    assert_eq!(
        d["frontends"][0]["errorfiles"][0],
        json!({ "status": 503, "body": "<h1>busy</h1>", "content_type": "text/html" })
    );
    assert_eq!(
        d["backends"][0]["servers"][0]["check"],
        json!({ "inter": "2s", "fall": 3, "rise": 2, "port": 9100 })
    );
    assert_eq!(
        d["frontends"][0]["http_request"][0],
        json!({ "action": "track-sc0", "key": "src" })
    );
    assert_eq!(d["frontends"][0]["stick_table"]["size"], 1_000_000);
    let lines: Vec<(usize, NoteKind)> = got.report.iter().map(|n| (n.line, n.kind)).collect();
    assert!(
        lines.contains(&(4, NoteKind::Unsupported)),
        "mode tcp: {lines:?}"
    );
    assert!(
        lines.contains(&(9, NoteKind::Unsupported)),
        "slowstart: {lines:?}"
    );
    assert!(
        lines.contains(&(10, NoteKind::Difference)),
        "tcp-request: {lines:?}"
    );
    assert!(
        lines.contains(&(11, NoteKind::Unsupported)),
        "frobnicate: {lines:?}"
    );
    valid(d);
}

#[test]
fn garbage_is_a_clear_error_or_a_report_never_a_panic() {
    let e = import("frontend x\n  bind \"unterminated\n", &no_files).unwrap_err();
    assert_eq!((e.line, e.column), (2, 8));
    for junk in [
        "",
        "\\",
        "frontend",
        "backend b\n server",
        "server s 1.2.3.4:5",
        "bind",
        "\u{0}\u{1}\"",
        "frontend f\n http-request",
        "frontend f\n http-request redirect code x",
        "frontend f\n use_backend b junk",
        "backend b\n cookie",
        "backend b\n http-check send hdr",
        "frontend f\n stick-table type",
        "global\n ssl-default-bind-options ssl-min-ver",
        "frontend f\n timeout",
        "defaults\n errorfile x",
        "listen\n",
    ] {
        let _ = import(junk, &no_files);
    }
}

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

/// The document passes the checks of `PUT /api/v1/config`, with the certificates its
/// TLS binds name uploaded.
fn valid(doc: &Value) {
    let document: ConfigDocument = serde_json::from_value(doc.clone()).unwrap();
    let names: Vec<String> = doc["frontends"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|f| f["binds"].as_array().into_iter().flatten())
        .flat_map(|b| b["tls"]["certificates"].as_array().into_iter().flatten())
        .filter_map(|c| c.as_str().map(str::to_string))
        .collect();
    let certificates = names
        .into_iter()
        .map(|name| {
            let k = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
            crate::config::Certificate {
                name,
                cert_pem: k.cert.pem(),
                key_pem: k.key_pair.serialize_pem(),
                created_unix_ms: 0,
            }
        })
        .collect();
    let config = crate::config::Configuration {
        document,
        certificates,
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

/// Each directive family, as the issue of HAProxy users' configurations lists them: the
/// document field it lands in.
#[test]
fn each_directive_family_maps_onto_its_field() {
    let cfg = r#"
global
    ssl-default-bind-ciphers ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384
    ssl-default-bind-options ssl-min-ver TLSv1.2 no-tls-tickets
defaults
    mode http
    option http-server-close
    option redispatch
    option forwardfor
    timeout connect 4s
    timeout client 31s
    timeout server 32s
    timeout tunnel 1h
    timeout http-request 9s
    timeout queue 7s
    retries 4
    maxconn 3000
frontend fe
    bind 127.0.0.1:443 ssl crt /c/site.pem alpn h2,http/1.1 ssl-min-ver TLSv1.3
    bind 127.0.0.1:80
    maxconn 500
    http-request deny deny_status 403 if { path_beg /admin }
    http-request return status 200 content-type text/plain string ok if { path /ping }
    http-request set-path /v2 if { path /old }
    http-request replace-path ^/a/(.*)$ /b/\1$
    http-request replace-header X-Region ^(eu|us)-(.*)$ \2.\1
    redirect scheme https code 302 if !{ ssl_fc }
    http-after-response add-header X-Served-By sluice
    use_backend src_be unless { hdr(host) -i www.example }
    default_backend rr
backend rr
    balance roundrobin
    server r1 127.0.0.1:1 maxconn 10 weight 20
backend src_be
    balance source
    cookie SRV insert indirect nocache httponly secure
    option httpchk
    http-check send meth GET uri /ws ver HTTP/1.1 hdr Host a.example hdr Upgrade websocket
    http-check expect status 101
    server s1 127.0.0.1:2 check cookie one
    server s2 127.0.0.1:3 check cookie two backup
backend hdr_be
    balance hdr(X-Tenant)
    server h1 127.0.0.1:4
backend param_be
    balance url_param session_id
    hash-type map-based
    server p1 127.0.0.1:5
"#;
    let got = import(cfg, &no_files).unwrap();
    let d = &got.document;
    let at = |pointer: &str| d.pointer(pointer).cloned().unwrap_or(Value::Null);
    let table: &[(&str, Value)] = &[
        // defaults: timeouts, options, retries, maxconn
        (
            "/defaults/timeouts",
            json!({ "connect": "4s", "client": "31s", "server": "32s", "tunnel": "1h", "http_request": "9s", "queue": "7s" }),
        ),
        ("/defaults/http_server_close", json!(true)),
        ("/defaults/redispatch", json!(true)),
        ("/defaults/forwardfor", json!(true)),
        ("/defaults/retries", json!(4)),
        ("/defaults/maxconn", json!(3000)),
        // bind ssl: the global defaults, the bind's own ssl-min-ver over them
        ("/frontends/0/binds/0/tls/certificates", json!(["site"])),
        ("/frontends/0/binds/0/tls/alpn", json!(["h2", "http/1.1"])),
        ("/frontends/0/binds/0/tls/min_version", json!("TLSv1.3")),
        (
            "/frontends/0/binds/0/tls/ciphers",
            json!(["ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384"]),
        ),
        ("/frontends/0/binds/0/tls/session_tickets", json!(false)),
        ("/frontends/0/binds/1", json!({ "address": "127.0.0.1:80" })),
        ("/frontends/0/maxconn", json!(500)),
        // http-request rules, the old redirect, http-after-response
        (
            "/frontends/0/http_request/0",
            json!({ "action": "deny", "status": 403, "if": "{ path_beg /admin }" }),
        ),
        (
            "/frontends/0/http_request/1",
            json!({ "action": "return", "status": 200, "content_type": "text/plain", "body": "ok", "if": "{ path /ping }" }),
        ),
        (
            "/frontends/0/http_request/2",
            json!({ "action": "set-path", "path": "/v2", "if": "{ path /old }" }),
        ),
        (
            "/frontends/0/http_request/3",
            json!({ "action": "replace-path", "regex": "^/a/(.*)$", "replacement": "/b/\\1$$" }),
        ),
        (
            "/frontends/0/http_request/4",
            json!({ "action": "replace-header", "name": "X-Region", "regex": "^(eu|us)-(.*)$", "replacement": "\\2.\\1" }),
        ),
        (
            "/frontends/0/http_request/5",
            json!({ "action": "redirect", "scheme": "https", "code": 302, "if": "!{ ssl_fc }" }),
        ),
        (
            "/frontends/0/http_after_response/0",
            json!({ "action": "add-header", "name": "X-Served-By", "value": "sluice" }),
        ),
        (
            "/frontends/0/use_backend/0",
            json!({ "backend": "src_be", "unless": "{ hdr(host) -i www.example }" }),
        ),
        ("/frontends/0/default_backend", json!("rr")),
        // balance with its arguments, hash-type, cookie, the 2.2+ check, server options
        ("/backends/0/balance", json!("roundrobin")),
        (
            "/backends/0/servers/0",
            json!({ "name": "r1", "address": "127.0.0.1:1", "weight": 20, "maxconn": 10 }),
        ),
        ("/backends/1/balance", json!("source")),
        (
            "/backends/1/cookie",
            json!({ "name": "SRV", "mode": "insert", "indirect": true, "nocache": true, "httponly": true, "secure": true }),
        ),
        (
            "/backends/1/health_check",
            json!({ "type": "http", "method": "GET", "uri": "/ws", "version": "HTTP/1.1", "headers": { "Host": "a.example", "Upgrade": "websocket" }, "expect_status": 101 }),
        ),
        (
            "/backends/1/servers/1",
            json!({ "name": "s2", "address": "127.0.0.1:3", "cookie": "two", "backup": true, "check": {} }),
        ),
        ("/backends/2/balance", json!("hdr(X-Tenant)")),
        ("/backends/3/balance", json!("url_param(session_id)")),
        ("/backends/3/hash_type", json!("map-based")),
    ];
    for (pointer, want) in table {
        assert_eq!(&at(pointer), want, "{pointer}");
    }
    // Only the certificate to upload is reported.
    assert_eq!(
        got.report
            .iter()
            .map(|n| (n.line, n.kind))
            .collect::<Vec<_>>(),
        [(19, NoteKind::Action)]
    );
    valid(d);
}

#[test]
fn cipher_lists_keep_what_sluice_offers_and_report_the_rest() {
    let cfg = "
global
    ssl-default-bind-ciphers ECDHE-RSA-AES128-GCM-SHA256:AES128-SHA:HIGH
    ssl-default-bind-ciphersuites TLS_AES_128_GCM_SHA256
frontend fe
    bind :443 ssl crt /c/a.pem
    bind :8443 ssl crt /c/a.pem ciphers HIGH:!aNULL
    default_backend b
backend b
    balance static-rr
    server s 127.0.0.1:1
backend c
    balance first
    server s 127.0.0.1:2
backend d
    balance uri whole
    server s 127.0.0.1:3
";
    let got = import(cfg, &no_files).unwrap();
    let d = &got.document;
    let binds = &d["frontends"][0]["binds"];
    assert_eq!(
        binds[0]["tls"]["ciphers"],
        json!(["ECDHE-RSA-AES128-GCM-SHA256"])
    );
    // Nothing it names is offered: the bind keeps the global list.
    assert_eq!(
        binds[1]["tls"]["ciphers"],
        json!(["ECDHE-RSA-AES128-GCM-SHA256"])
    );
    assert_eq!(d["backends"][0]["balance"], "roundrobin");
    assert!(d["backends"][1].get("balance").is_none());
    assert_eq!(d["backends"][2]["balance"], "uri");
    let notes: Vec<(usize, NoteKind)> = got
        .report
        .iter()
        .filter(|n| n.kind != NoteKind::Action)
        .map(|n| (n.line, n.kind))
        .collect();
    assert_eq!(
        notes,
        [
            (3, NoteKind::Unsupported),
            (4, NoteKind::Difference),
            (7, NoteKind::Unsupported),
            (10, NoteKind::Difference),
            (13, NoteKind::Unsupported),
            (16, NoteKind::Unsupported),
        ]
    );
    assert!(
        got.report[0].message.contains("AES128-SHA, HIGH"),
        "{:?}",
        got.report[0]
    );
    valid(d);
}

#[test]
fn busy_polling_is_reported_as_the_nodes_command_line_option() {
    let cfg = "global\n    busy-polling\nfrontend fe\n    bind 127.0.0.1:80\n    default_backend be\nbackend be\n    server s1 127.0.0.1:1\n";
    let got = import(cfg, &no_files).unwrap();
    let notes: Vec<(usize, NoteKind, &str)> = got
        .report
        .iter()
        .map(|n| (n.line, n.kind, n.message.as_str()))
        .collect();
    assert_eq!(
        notes,
        [(
            2,
            NoteKind::Action,
            "busy polling is each node's own: start sluice-dp with --busy-polling"
        )]
    );
    valid(&got.document);
}

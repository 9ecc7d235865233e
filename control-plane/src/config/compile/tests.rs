//! Whole-document validation: the article example, and errors that name their field.

use super::*;
use frontend::ERRORFILE_MAX;

fn article() -> ConfigDocument {
    let text = include_str!("../../../../docs/examples/article.json");
    serde_json::from_str(text).expect("the article example parses")
}

#[test]
fn article_example_compiles() {
    let snap = compile(&article()).expect("valid");
    assert_eq!(snap.frontends.len(), 1);
    assert_eq!(snap.backends.len(), 4);
    let fe = &snap.frontends[0];
    assert_eq!(fe.use_backend.len(), 3);
    assert_eq!(fe.http_request.len(), 7);
    assert_eq!(
        snap.defaults.unwrap().timeouts.unwrap().tunnel_ms,
        Some(3_600_000)
    );
}

#[test]
fn errors_name_the_field() {
    let mut doc = article();
    doc.frontends[0].use_backend[1].backend = "ws_chatt".into();
    doc.backends[0].servers[0].address = "127.0.0.1:0".into();
    doc.defaults.timeouts.connect = Some("5 parsecs".into());
    doc.frontends[0].http_request[5].cond_if = Some("is_websockt".into());
    let Invalid(errors) = compile(&doc).unwrap_err();
    let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
    assert!(
        fields.contains(&"frontends[0].use_backend[1].backend"),
        "{errors:?}"
    );
    assert!(fields.contains(&"backends[0].servers[0].address"));
    assert!(fields.contains(&"defaults.timeouts.connect"));
    assert!(errors.iter().any(|e| e.to_string()
        == "frontends[0].http_request[5].if: unknown ACL \"is_websockt\" at column 1"));
}

#[test]
fn duplicate_names_and_binds_are_rejected() {
    let mut doc = article();
    doc.backends.push(doc.backends[0].clone());
    let mut fe = doc.frontends[0].clone();
    fe.name = "other".into();
    fe.binds.truncate(1);
    fe.binds[0].address = "0.0.0.0:8080".into();
    doc.frontends.push(fe);
    let Invalid(errors) = compile(&doc).unwrap_err();
    assert!(errors.iter().any(|e| e.field == "backends[4].name"));
    assert!(
        errors
            .iter()
            .any(|e| e.field == "frontends[1].binds[0].address"
                && e.message.contains("already bound"))
    );
}

#[test]
fn errorfiles_and_after_response_rules_are_checked() {
    let mut doc = article();
    let page = |status: u16, content_type: Option<&str>, body: String| ErrorFile {
        status,
        content_type: content_type.map(str::to_string),
        body,
    };
    doc.defaults.errorfiles = vec![
        page(503, None, "<p>down</p>".into()),
        page(302, None, "x".into()),
        page(503, None, "again".into()),
    ];
    doc.frontends[0].errorfiles = vec![
        page(403, Some("text/plain\r\nX-Evil: 1"), "no".into()),
        page(429, None, "x".repeat(ERRORFILE_MAX + 1)),
    ];
    doc.frontends[0].http_after_response = vec![serde_json::from_value(
        serde_json::json!({ "action": "set-header", "name": "X-A", "value": "1", "if": "is_websockt" }),
    )
    .unwrap()];
    let Invalid(errors) = compile(&doc).unwrap_err();
    let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "defaults.errorfiles[1].status",
            "defaults.errorfiles[2].status",
            "frontends[0].http_after_response[0].if",
            "frontends[0].errorfiles[0].content_type",
            "frontends[0].errorfiles[1].body",
        ],
        "{errors:?}"
    );

    let mut doc = article();
    doc.defaults.errorfiles = vec![page(503, None, "<p>down</p>".into())];
    let snap = compile(&doc).unwrap();
    let files = &snap.defaults.unwrap().errorfiles;
    assert_eq!(files[0].status, 503);
    assert_eq!(files[0].body, "<p>down</p>");
}

#[test]
fn control_characters_are_refused_wherever_they_would_reach_a_wire() {
    let base = serde_json::to_value(article()).unwrap();
    let rule = |r: serde_json::Value| {
        let mut d = base.clone();
        d["frontends"][0]["http_request"]
            .as_array_mut()
            .unwrap()
            .push(r);
        (d, "frontends[0].http_request[7]")
    };
    let check = |key: &str, v: serde_json::Value| {
        let mut d = base.clone();
        d["backends"][1]["health_check"][key] = v;
        d
    };
    let cases = [
        (
            check("method", "GET / HTTP/1.1\r\nHost: victim\r\n\r\nGET".into()),
            "backends[1].health_check.method".to_string(),
        ),
        (
            check("uri", "/healthz HTTP/1.1\r\nHost: victim".into()),
            "backends[1].health_check.uri".into(),
        ),
        (
            check(
                "headers",
                serde_json::json!({ "Host": "a\r\nX-Injected: 1" }),
            ),
            "backends[1].health_check.headers.Host".into(),
        ),
        (
            check("version", "HTTP/1.1\r\nX: y".into()),
            "backends[1].health_check.version".into(),
        ),
        {
            let (d, f) = rule(
                serde_json::json!({ "action": "redirect", "location": "/x\r\nSet-Cookie: a=b" }),
            );
            (d, format!("{f}.location"))
        },
        {
            let (d, f) =
                rule(serde_json::json!({ "action": "redirect", "prefix": "https://a\nb" }));
            (d, format!("{f}.prefix"))
        },
        {
            let (d, f) = rule(serde_json::json!({ "action": "set-path", "path": "/a\r\nb" }));
            (d, format!("{f}.path"))
        },
        {
            let (d, f) = rule(
                serde_json::json!({ "action": "return", "content_type": "text/plain\r\nX: y" }),
            );
            (d, format!("{f}.content_type"))
        },
        {
            let (d, f) = rule(
                serde_json::json!({ "action": "set-header", "name": "X-A", "value": "a\u{0}b" }),
            );
            (d, format!("{f}.value"))
        },
    ];
    for (doc, field) in cases {
        let doc: ConfigDocument = serde_json::from_value(doc).unwrap();
        let Invalid(errors) = compile(&doc).expect_err(&field);
        assert!(
            errors.iter().any(|e| e.field == field),
            "{field} not named in {errors:?}"
        );
    }
    // A tab is fine in a header value.
    let mut d = base.clone();
    d["backends"][1]["health_check"]["headers"] = serde_json::json!({ "X-Tab": "a\tb" });
    compile(&serde_json::from_value(d).unwrap()).expect("a tab in a header value");
}

#[test]
fn a_timeout_of_zero_is_refused() {
    for (at_backend, key, value) in [
        (false, "tunnel", "0"),
        (false, "client", "0s"),
        (true, "server", "0ms"),
        (true, "tunnel", "0"),
    ] {
        let mut doc = serde_json::to_value(article()).unwrap();
        let (target, field) = if at_backend {
            (
                &mut doc["backends"][0],
                format!("backends[0].timeouts.{key}"),
            )
        } else {
            (&mut doc["defaults"], format!("defaults.timeouts.{key}"))
        };
        target["timeouts"][key] = serde_json::json!(value);
        let Invalid(errors) = compile(&serde_json::from_value(doc).unwrap()).unwrap_err();
        assert!(
            errors
                .iter()
                .any(|e| e.field == field && e.message.contains("0 is not allowed")),
            "{field}: {errors:?}"
        );
    }
}

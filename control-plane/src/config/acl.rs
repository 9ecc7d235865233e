//! Parser for HAProxy ACL expressions and conditions.
//!
//! An ACL expression is `fetch[(arg)] [flags] [operator] [values...]`, e.g.
//! `hdr(Upgrade) -i websocket`, `path_beg /ws/chat`, `sc_conn_cur(0) gt 100`, `ssl_fc`.
//! A condition is ACL names and inline `{ expr }` blocks, each optionally negated with
//! `!`, ANDed by juxtaposition, with `or`/`||` between groups. Parsing happens once, on
//! the control plane, at write time; nodes receive the structured result. Errors carry the
//! 1-based column of the offending token.

use sluice_proto::v1::{
    condition_term::Term, AclExpr, Condition, ConditionGroup, ConditionTerm, Fetch, FetchKind,
    IntOp, Match, MatchKind,
};

/// A syntax or semantic error at a column of the source text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based character column.
    pub column: usize,
    pub message: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at column {}", self.message, self.column)
    }
}

#[derive(Debug, Clone)]
struct Token {
    text: String,
    /// 1-based column of the first character.
    column: usize,
    /// Byte span in the source.
    start: usize,
    end: usize,
}

fn err(column: usize, message: impl Into<String>) -> ParseError {
    ParseError {
        column,
        message: message.into(),
    }
}

/// Splits on whitespace, honouring single and double quotes (quotes are removed).
fn tokenize(src: &str) -> Result<Vec<Token>, ParseError> {
    let mut tokens = Vec::new();
    let mut chars = src.char_indices().peekable();
    let column_of = |byte: usize| src[..byte].chars().count() + 1;
    while let Some(&(i, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let start = i;
        let mut text = String::new();
        let mut end = i;
        while let Some(&(j, c)) = chars.peek() {
            if c.is_whitespace() {
                break;
            }
            chars.next();
            end = j + c.len_utf8();
            if c == '"' || c == '\'' {
                let quote = c;
                let mut closed = false;
                for (k, q) in chars.by_ref() {
                    end = k + q.len_utf8();
                    if q == quote {
                        closed = true;
                        break;
                    }
                    text.push(q);
                }
                if !closed {
                    return Err(err(column_of(j), "unterminated quote"));
                }
            } else if c == '\\' {
                if let Some((k, n)) = chars.next() {
                    end = k + n.len_utf8();
                    text.push(n);
                }
            } else {
                text.push(c);
            }
        }
        tokens.push(Token {
            text,
            column: column_of(start),
            start,
            end,
        });
    }
    Ok(tokens)
}

/// What a fetch name means: which sample, and which matcher it implies.
fn fetch_by_name(name: &str) -> Option<(FetchKind, MatchKind)> {
    use FetchKind as F;
    use MatchKind as M;
    let fixed = match name {
        "hdr_cnt" => Some((F::HdrCnt, M::Int)),
        "query" => Some((F::Query, M::Str)),
        "host" => Some((F::Host, M::Str)),
        "method" => Some((F::Method, M::Str)),
        "src" => Some((F::Src, M::Ip)),
        "dst_port" => Some((F::DstPort, M::Int)),
        "ssl_fc" => Some((F::SslFc, M::Bool)),
        "ssl_fc_alpn" => Some((F::SslFcAlpn, M::Str)),
        "sc_conn_cur" | "sc0_conn_cur" | "sc1_conn_cur" | "sc2_conn_cur" => {
            Some((F::ScConnCur, M::Int))
        }
        "sc_conn_rate" | "sc0_conn_rate" | "sc1_conn_rate" | "sc2_conn_rate" => {
            Some((F::ScConnRate, M::Int))
        }
        "sc_http_req_rate" | "sc0_http_req_rate" | "sc1_http_req_rate" | "sc2_http_req_rate" => {
            Some((F::ScHttpReqRate, M::Int))
        }
        _ => None,
    };
    if fixed.is_some() {
        return fixed;
    }
    // Families with matcher suffixes: hdr_beg, path_reg, url_param_sub, cookie_len...
    const BASES: [(&str, FetchKind); 7] = [
        ("url_param", F::UrlParam),
        ("urlp", F::UrlParam),
        ("hdr", F::Hdr),
        ("path", F::Path),
        ("url", F::Url),
        ("cookie", F::Cookie),
        ("cook", F::Cookie),
    ];
    for (base, kind) in BASES {
        let Some(rest) = name.strip_prefix(base) else {
            continue;
        };
        let matcher = match rest {
            "" => M::Str,
            "_beg" => M::Beg,
            "_end" => M::End,
            "_sub" => M::Sub,
            "_reg" => M::Reg,
            "_len" => M::Len,
            "_dir" => M::Dir,
            "_dom" => M::Dom,
            "_found" => M::Found,
            _ => continue,
        };
        return Some((kind, matcher));
    }
    None
}

fn matcher_by_name(name: &str) -> Option<MatchKind> {
    Some(match name {
        "str" => MatchKind::Str,
        "beg" => MatchKind::Beg,
        "end" => MatchKind::End,
        "sub" => MatchKind::Sub,
        "reg" => MatchKind::Reg,
        "found" => MatchKind::Found,
        "len" => MatchKind::Len,
        "int" => MatchKind::Int,
        "ip" => MatchKind::Ip,
        "bool" => MatchKind::Bool,
        "dir" => MatchKind::Dir,
        "dom" => MatchKind::Dom,
        _ => return None,
    })
}

fn int_op_by_name(name: &str) -> Option<IntOp> {
    Some(match name {
        "eq" => IntOp::Eq,
        "gt" => IntOp::Gt,
        "ge" => IntOp::Ge,
        "lt" => IntOp::Lt,
        "le" => IntOp::Le,
        _ => return None,
    })
}

/// Parses one ACL expression, e.g. `hdr(Upgrade) -i websocket`.
pub fn parse_acl_expr(src: &str) -> Result<AclExpr, ParseError> {
    let tokens = tokenize(src)?;
    if tokens.is_empty() {
        return Err(err(1, "empty ACL expression"));
    }
    expr_from_tokens(src, &tokens)
}

fn expr_from_tokens(src: &str, tokens: &[Token]) -> Result<AclExpr, ParseError> {
    let first = &tokens[0];
    let (name, arg) = match first.text.find('(') {
        Some(open) => {
            if !first.text.ends_with(')') {
                return Err(err(
                    first.column,
                    format!("missing ')' in {:?}", first.text),
                ));
            }
            (
                &first.text[..open],
                first.text[open + 1..first.text.len() - 1]
                    .trim()
                    .to_string(),
            )
        }
        None => (first.text.as_str(), String::new()),
    };
    let (kind, mut matcher) =
        fetch_by_name(name).ok_or_else(|| err(first.column, format!("unknown fetch {name:?}")))?;
    let mut arg = arg;
    match kind {
        FetchKind::UrlParam | FetchKind::Cookie if arg.is_empty() => {
            return Err(err(
                first.column,
                format!("{name} needs a name in parentheses"),
            ));
        }
        FetchKind::ScConnCur | FetchKind::ScConnRate | FetchKind::ScHttpReqRate => {
            let implied = name.as_bytes().get(2).filter(|b| b.is_ascii_digit());
            if let Some(d) = implied {
                arg = (*d as char).to_string();
            }
            if arg.is_empty() {
                arg = "0".into();
            }
            if !matches!(arg.as_str(), "0" | "1" | "2") {
                return Err(err(
                    first.column,
                    format!("stick counter must be 0, 1 or 2, not {arg:?}"),
                ));
            }
        }
        _ => {}
    }
    let mut case_insensitive = false;
    let mut i = 1;
    while i < tokens.len() && tokens[i].text.starts_with('-') {
        let t = &tokens[i];
        match t.text.as_str() {
            "-i" => case_insensitive = true,
            "-m" => {
                i += 1;
                let m = tokens
                    .get(i)
                    .ok_or_else(|| err(t.column, "-m needs a match method"))?;
                matcher = matcher_by_name(&m.text)
                    .ok_or_else(|| err(m.column, format!("unknown match method {:?}", m.text)))?;
            }
            "--" => {
                i += 1;
                break;
            }
            other => return Err(err(t.column, format!("unknown flag {other:?}"))),
        }
        i += 1;
    }
    let mut int_op = IntOp::Unspecified;
    if matches!(matcher, MatchKind::Int | MatchKind::Len) {
        if let Some(op) = tokens.get(i).and_then(|t| int_op_by_name(&t.text)) {
            int_op = op;
            i += 1;
        }
    }
    let values: Vec<&Token> = tokens[i..].iter().collect();
    let last_column = tokens.last().map(|t| t.column).unwrap_or(1);
    match matcher {
        MatchKind::Found | MatchKind::Bool => {
            if let Some(v) = values.first() {
                return Err(err(
                    v.column,
                    format!("{name} takes no value here, found {:?}", v.text),
                ));
            }
        }
        _ if values.is_empty() => {
            return Err(err(last_column, format!("{name} needs a value to match")));
        }
        MatchKind::Int | MatchKind::Len => {
            if int_op != IntOp::Unspecified && values.len() != 1 {
                return Err(err(
                    values[1].column,
                    "an integer comparison takes one value",
                ));
            }
            for v in &values {
                if v.text.parse::<i64>().is_err() {
                    return Err(err(v.column, format!("{:?} is not an integer", v.text)));
                }
            }
        }
        MatchKind::Ip => {
            for v in &values {
                parse_ip_or_cidr(&v.text).map_err(|m| err(v.column, m.to_string()))?;
            }
        }
        MatchKind::Reg => {
            for v in &values {
                let pattern = if case_insensitive {
                    format!("(?i){}", v.text)
                } else {
                    v.text.clone()
                };
                regex::Regex::new(&pattern)
                    .map_err(|e| err(v.column, format!("invalid regex {:?}: {e}", v.text)))?;
            }
        }
        _ => {}
    }
    let span_end = tokens.last().map(|t| t.end).unwrap_or(0);
    Ok(AclExpr {
        source: src[tokens[0].start..span_end].to_string(),
        fetch: Some(Fetch {
            kind: kind as i32,
            arg,
        }),
        r#match: Some(Match {
            kind: matcher as i32,
            values: values.iter().map(|t| t.text.clone()).collect(),
            case_insensitive,
            int_op: int_op as i32,
        }),
    })
}

/// What is wrong with an address in an `ip` match.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("{0:?} is not an IP address or CIDR")]
    NotAnAddress(String),
    #[error("{0:?} has an invalid prefix length")]
    Prefix(String),
}

/// Accepts `1.2.3.4`, `10.0.0.0/8`, `::1`, `2001:db8::/32`.
pub fn parse_ip_or_cidr(text: &str) -> Result<(), AddressError> {
    let (ip, prefix) = match text.split_once('/') {
        Some((ip, p)) => (ip, Some(p)),
        None => (text, None),
    };
    let addr: std::net::IpAddr = ip
        .parse()
        .map_err(|_| AddressError::NotAnAddress(text.to_string()))?;
    if let Some(p) = prefix {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        match p.parse::<u8>() {
            Ok(n) if n <= max => {}
            _ => return Err(AddressError::Prefix(text.to_string())),
        }
    }
    Ok(())
}

/// Parses a condition. `acl_exists` tells whether a named ACL is defined.
pub fn parse_condition(
    src: &str,
    unless: bool,
    acl_exists: &dyn Fn(&str) -> bool,
) -> Result<Condition, ParseError> {
    let tokens = tokenize(src)?;
    if tokens.is_empty() {
        return Err(err(1, "empty condition"));
    }
    let mut groups = vec![ConditionGroup::default()];
    let mut i = 0;
    while i < tokens.len() {
        let t = &tokens[i];
        if t.text == "or" || t.text == "||" {
            if groups.last().is_some_and(|g| g.terms.is_empty()) {
                return Err(err(
                    t.column,
                    format!("{:?} without a condition before it", t.text),
                ));
            }
            groups.push(ConditionGroup::default());
            i += 1;
            continue;
        }
        let (negate, rest, rest_column) = if t.text == "!" {
            i += 1;
            match tokens.get(i) {
                Some(n) => (true, n.text.as_str(), n.column),
                None => return Err(err(t.column, "'!' must be followed by an ACL")),
            }
        } else if let Some(r) = t.text.strip_prefix('!') {
            (true, r, t.column + 1)
        } else {
            (false, t.text.as_str(), t.column)
        };
        let term = if rest == "{" {
            let open = i;
            let close = tokens[open + 1..]
                .iter()
                .position(|t| t.text == "}")
                .map(|p| open + 1 + p)
                .ok_or_else(|| err(rest_column, "'{' without a matching '}'"))?;
            if close == open + 1 {
                return Err(err(rest_column, "empty inline ACL '{ }'"));
            }
            let expr = expr_from_tokens(src, &tokens[open + 1..close])?;
            i = close + 1;
            Term::Inline(expr)
        } else if rest == "}" {
            return Err(err(rest_column, "'}' without a matching '{'"));
        } else {
            if !acl_exists(rest) {
                return Err(err(rest_column, format!("unknown ACL {rest:?}")));
            }
            i += 1;
            Term::Acl(rest.to_string())
        };
        groups
            .last_mut()
            .expect("there is always a group")
            .terms
            .push(ConditionTerm {
                negate,
                term: Some(term),
            });
    }
    if groups.last().is_some_and(|g| g.terms.is_empty()) {
        let last = tokens.last().expect("not empty");
        return Err(err(
            last.column,
            format!("{:?} without a condition after it", last.text),
        ));
    }
    Ok(Condition {
        source: src.trim().to_string(),
        unless,
        groups,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(name: &str) -> bool {
        ["is_websocket", "is_ws_connection", "ws_path_chat"].contains(&name)
    }

    #[test]
    fn parses_article_acls() {
        let e = parse_acl_expr("hdr(Upgrade) -i websocket").unwrap();
        let f = e.fetch.unwrap();
        assert_eq!(f.kind(), FetchKind::Hdr);
        assert_eq!(f.arg, "Upgrade");
        let m = e.r#match.unwrap();
        assert_eq!(m.kind(), MatchKind::Str);
        assert!(m.case_insensitive);
        assert_eq!(m.values, vec!["websocket"]);

        let e = parse_acl_expr("hdr_sub(Connection) -i upgrade").unwrap();
        assert_eq!(e.r#match.unwrap().kind(), MatchKind::Sub);
        let e = parse_acl_expr("path_beg /ws/chat").unwrap();
        assert_eq!(e.fetch.unwrap().kind(), FetchKind::Path);
        assert_eq!(e.r#match.unwrap().kind(), MatchKind::Beg);
        let e = parse_acl_expr("sc_conn_cur(0) gt 100").unwrap();
        let m = e.r#match.unwrap();
        assert_eq!((m.kind(), m.int_op()), (MatchKind::Int, IntOp::Gt));
        let e = parse_acl_expr("ssl_fc").unwrap();
        assert_eq!(e.r#match.unwrap().kind(), MatchKind::Bool);
        parse_acl_expr("src 10.0.0.0/8 ::1 192.168.1.1").unwrap();
    }

    #[test]
    fn rejects_bad_acls_with_column() {
        let e = parse_acl_expr("hdrx(Upgrade) websocket").unwrap_err();
        assert_eq!(e.column, 1);
        assert!(e.message.contains("unknown fetch"));
        let e = parse_acl_expr("path_beg").unwrap_err();
        assert!(e.message.contains("needs a value"));
        let e = parse_acl_expr("src 10.0.0.0/33").unwrap_err();
        assert_eq!(e.column, 5);
        let e = parse_acl_expr("path_reg ^/(ws").unwrap_err();
        assert!(e.message.contains("invalid regex"));
        let e = parse_acl_expr("sc_conn_cur(0) gt many").unwrap_err();
        assert!(e.message.contains("not an integer"));
    }

    #[test]
    fn parses_conditions() {
        let c =
            parse_condition("is_websocket is_ws_connection ws_path_chat", false, &known).unwrap();
        assert_eq!(c.groups.len(), 1);
        assert_eq!(c.groups[0].terms.len(), 3);

        let c = parse_condition(
            "{ hdr(Upgrade) -i websocket } { sc_conn_cur(0) gt 100 }",
            false,
            &known,
        )
        .unwrap();
        assert_eq!(c.groups[0].terms.len(), 2);
        assert!(matches!(c.groups[0].terms[0].term, Some(Term::Inline(_))));

        let c = parse_condition(
            "!is_websocket or ! ws_path_chat || { ssl_fc }",
            true,
            &known,
        )
        .unwrap();
        assert_eq!(c.groups.len(), 3);
        assert!(c.groups[0].terms[0].negate && c.groups[1].terms[0].negate);
        assert!(c.unless);
    }

    #[test]
    fn condition_errors_name_the_column() {
        let e = parse_condition("is_websockt", false, &known).unwrap_err();
        assert_eq!(e.to_string(), "unknown ACL \"is_websockt\" at column 1");
        let e = parse_condition("is_websocket or", false, &known).unwrap_err();
        assert_eq!(e.column, 14);
        let e = parse_condition("{ ssl_fc", false, &known).unwrap_err();
        assert!(e.message.contains("matching"));
        let e = parse_condition("is_websocket !nope", false, &known).unwrap_err();
        assert_eq!(e.column, 15);
    }

    /// Operators type these strings: whatever they type, the parsers answer with a
    /// value or an error, never a panic. Random mixes of the language's own pieces and
    /// stray characters, from a fixed seed.
    #[test]
    fn parsers_never_panic_on_arbitrary_input() {
        use rand::{Rng, SeedableRng};
        const PIECES: &[&str] = &[
            "hdr(",
            "Upgrade",
            ")",
            "-i",
            "-m",
            "beg",
            "reg",
            "found",
            "len",
            "gt",
            "ge",
            "lt",
            "eq",
            "src",
            "10.0.0.0/8",
            "::1",
            "/33",
            "path_beg",
            "/ws",
            "{",
            "}",
            "!",
            "or",
            "||",
            "sc_conn_cur(",
            "0",
            "9",
            "url_param(",
            "cookie(",
            "ssl_fc",
            "^(",
            "[",
            "\\",
            "\"",
            "'",
            " ",
            "  ",
            "\t",
            "é",
            "✓",
            "\u{0}",
            "--",
            "(",
            ")(",
            "is_ws",
            "hdr_cnt(",
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let exists = |n: &str| n == "is_ws";
        for _ in 0..20_000 {
            let n = rng.random_range(0..8);
            let text: String = (0..n)
                .map(|_| PIECES[rng.random_range(0..PIECES.len())])
                .collect::<Vec<_>>()
                .join(if rng.random_bool(0.7) { " " } else { "" });
            let _ = parse_acl_expr(&text);
            let _ = parse_condition(&text, false, &exists);
            let _ = parse_condition(&text, true, &exists);
        }
    }
}

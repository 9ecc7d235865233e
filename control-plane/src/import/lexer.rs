//! haproxy.cfg lines into words, as HAProxy reads them: `#` starts a comment, words are
//! separated by blanks, `"…"` quotes weakly (backslash escapes inside), `'…'` strongly,
//! and a backslash outside quotes escapes the next character (`\r`, `\n`, `\t` and
//! `\xNN` are the characters they name, as in HAProxy). Each word keeps the
//! column it starts at (1-based), and each line its raw text, so a directive can take
//! the rest of its line as written (ACL expressions, conditions).

/// A syntax error, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {message}")]
pub struct SyntaxError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// One word of a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    pub text: String,
    /// Byte offset of its first character in the line.
    pub at: usize,
}

/// One line with at least one word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// 1-based.
    pub no: usize,
    pub raw: String,
    pub words: Vec<Word>,
}

impl Line {
    /// The line's text from word `i` on, as written (comment and trailing blanks
    /// dropped); "" when there is no such word.
    pub fn rest(&self, i: usize) -> String {
        let Some(w) = self.words.get(i) else {
            return String::new();
        };
        let last = self.words.last().expect("a line has words");
        let end = last.at + raw_len(&self.raw[last.at..]);
        self.raw[w.at..end].trim_end().to_string()
    }

    pub fn word(&self, i: usize) -> Option<&str> {
        self.words.get(i).map(|w| w.text.as_str())
    }
}

/// The length in the raw line of the word starting at its beginning (quotes and escapes
/// included).
fn raw_len(s: &str) -> usize {
    let mut quote = None;
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match (quote, c) {
            (None, ' ' | '\t' | '#') => return i,
            (None, '\\') | (Some('"'), '\\') => {
                chars.next();
            }
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            _ => {}
        }
    }
    s.len()
}

/// Every line with words; comments and blank lines dropped.
pub fn lex(text: &str) -> Result<Vec<Line>, SyntaxError> {
    let mut out = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let words = words(raw, n + 1)?;
        if !words.is_empty() {
            out.push(Line {
                no: n + 1,
                raw: raw.to_string(),
                words,
            });
        }
    }
    Ok(out)
}

fn words(raw: &str, no: usize) -> Result<Vec<Word>, SyntaxError> {
    let err = |at: usize, message: &str| SyntaxError {
        line: no,
        column: raw[..at].chars().count() + 1,
        message: message.into(),
    };
    let mut out = Vec::new();
    let mut cur: Option<Word> = None;
    let mut quote: Option<(char, usize)> = None;
    let mut chars = raw.char_indices();
    while let Some((i, c)) = chars.next() {
        match quote {
            Some((q, _)) if c == q => quote = None,
            Some(('"', _)) if c == '\\' => match escaped(&mut chars) {
                Ok(e) => push_escaped(&mut cur, i, e),
                Err(why) => return Err(err(i, why)),
            },
            Some(_) => push(&mut cur, i, c),
            None => match c {
                ' ' | '\t' => {
                    if let Some(w) = cur.take() {
                        out.push(w);
                    }
                }
                '#' => break,
                '"' | '\'' => {
                    quote = Some((c, i));
                    cur.get_or_insert(Word {
                        text: String::new(),
                        at: i,
                    });
                }
                '\\' => match escaped(&mut chars) {
                    Ok(e) => push_escaped(&mut cur, i, e),
                    Err(why) => return Err(err(i, why)),
                },
                c => push(&mut cur, i, c),
            },
        }
    }
    if let Some((q, at)) = quote {
        return Err(err(at, &format!("unterminated {q} quote")));
    }
    out.extend(cur);
    Ok(out)
}

/// What a backslash stands for with the characters after it (the backslash already
/// read), as HAProxy reads it: `\\`, `\ `, `\#`, `\'`, `\"`, `\$`, `\t`, `\n`, `\r` and
/// `\xHH` are replaced; any other pair (a regex back-reference `\1`, `\d`) is kept as
/// written.
fn escaped(chars: &mut std::str::CharIndices<'_>) -> Result<Escaped, &'static str> {
    let (_, c) = chars.next().ok_or("a backslash ends the line")?;
    Ok(match c {
        'r' => Escaped::One('\r'),
        'n' => Escaped::One('\n'),
        't' => Escaped::One('\t'),
        ' ' | '\\' | '#' | '\'' | '"' | '$' => Escaped::One(c),
        'x' => {
            let hex: String = chars.clone().take(2).map(|(_, h)| h).collect();
            match u8::from_str_radix(&hex, 16) {
                Ok(b) if hex.len() == 2 && hex.chars().all(|h| h.is_ascii_hexdigit()) => {
                    chars.nth(1);
                    Escaped::One(char::from(b))
                }
                _ => return Err("invalid or incomplete \\x sequence"),
            }
        }
        c => Escaped::Kept(c),
    })
}

enum Escaped {
    /// The character the pair stands for.
    One(char),
    /// No escape: the backslash and this character stay.
    Kept(char),
}

fn push_escaped(cur: &mut Option<Word>, at: usize, e: Escaped) {
    match e {
        Escaped::One(c) => push(cur, at, c),
        Escaped::Kept(c) => {
            push(cur, at, '\\');
            push(cur, at, c);
        }
    }
}

fn push(cur: &mut Option<Word>, at: usize, c: char) {
    cur.get_or_insert(Word {
        text: String::new(),
        at,
    })
    .text
    .push(c);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(line: &str) -> Vec<String> {
        lex(line).unwrap()[0]
            .words
            .iter()
            .map(|w| w.text.clone())
            .collect()
    }

    #[test]
    fn words_quotes_escapes_and_comments() {
        assert_eq!(
            texts("  bind *:443 ssl   crt /a.pem # tls"),
            ["bind", "*:443", "ssl", "crt", "/a.pem"]
        );
        assert_eq!(
            texts(r#"http-response set-header X "max-age=1; preload""#),
            ["http-response", "set-header", "X", "max-age=1; preload"]
        );
        assert_eq!(
            texts(r#"x "a\"b" 'c\d' e\ f \#g"#),
            ["x", "a\"b", "c\\d", "e f", "#g"]
        );
        assert_eq!(
            texts(r"v HTTP/1.1\r\nHost:\ a\x41"),
            ["v", "HTTP/1.1\r\nHost: aA"]
        );
        // Other pairs stay as written: regex back-references reach the document intact.
        assert_eq!(
            texts(r"http-request replace-path ^/a/(.*)$ /b/\1\d\$"),
            ["http-request", "replace-path", "^/a/(.*)$", r"/b/\1\d$"]
        );
        let e = lex("x a\\xZ1").unwrap_err();
        assert_eq!((e.line, e.column), (1, 4));
        assert!(lex("# only a comment\n\n   \n").unwrap().is_empty());
        let l = &lex("  acl is_ws  hdr(Upgrade) -i websocket  # c").unwrap()[0];
        assert_eq!(l.rest(2), "hdr(Upgrade) -i websocket");
        assert_eq!(l.rest(9), "");
    }

    #[test]
    fn an_unterminated_quote_names_its_line_and_column() {
        let e = lex("global\n  log \"/dev/log local0\n").unwrap_err();
        assert_eq!((e.line, e.column), (2, 7));
        assert!(e
            .to_string()
            .starts_with("line 2, column 7: unterminated \" quote"));
    }
}

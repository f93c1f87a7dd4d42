//! Prometheus-style label selectors: `{service="api", comm=~"post.*", pid!="1"}`.
//!
//! Operators: `=` (equal), `!=` (not equal), `=~` (regex matches the whole value), `!~` (regex
//! does not match). Values are double-quoted with `\"`, `\\`, `\n` and `\t` escapes. The braces
//! are optional, and an empty selector selects everything. A missing label reads as "", as in
//! Prometheus, so `{exe!="x"}` also selects samples without an `exe`.
//!
//! A selector comes from anyone who can reach the API, so its cost is bounded before any work:
//! at most [`MAX_SELECTOR_BYTES`] of text and [`MAX_TERMS`] terms, counted before a regular
//! expression is compiled, and each expression within [`MAX_REGEX_BYTES`] once compiled.

use std::fmt;

use regex::{Regex, RegexBuilder};

/// Longest selector text accepted, bytes.
pub const MAX_SELECTOR_BYTES: usize = 4096;
/// Most terms in one selector.
pub const MAX_TERMS: usize = 32;
/// Largest compiled regular expression of one term, bytes (the `regex` crate's size limit):
/// `\w{200}`, Unicode word characters 200 times, is over it.
pub const MAX_REGEX_BYTES: usize = 256 * 1024;

/// A comparison of one label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatchOp {
    /// `=`
    Equal,
    /// `!=`
    NotEqual,
    /// `=~`
    Regex,
    /// `!~`
    NotRegex,
}

impl MatchOp {
    /// The operator as written.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Equal => "=",
            Self::NotEqual => "!=",
            Self::Regex => "=~",
            Self::NotRegex => "!~",
        }
    }
}

/// One `label op "value"` term.
#[derive(Clone, Debug)]
pub struct Matcher {
    /// The label name.
    pub label: String,
    /// The comparison.
    pub op: MatchOp,
    /// The value as written (unescaped).
    pub value: String,
    regex: Option<Regex>,
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        self.label == other.label && self.op == other.op && self.value == other.value
    }
}

impl Matcher {
    /// The term `label="value"`.
    pub fn equal(label: &str, value: &str) -> Matcher {
        Matcher {
            label: label.to_owned(),
            op: MatchOp::Equal,
            value: value.to_owned(),
            regex: None,
        }
    }

    /// Whether a label value (or its absence, read as "") satisfies this term.
    pub fn matches(&self, value: Option<&str>) -> bool {
        let value = value.unwrap_or("");
        match self.op {
            MatchOp::Equal => value == self.value,
            MatchOp::NotEqual => value != self.value,
            MatchOp::Regex => self.regex.as_ref().is_some_and(|r| r.is_match(value)),
            MatchOp::NotRegex => !self.regex.as_ref().is_some_and(|r| r.is_match(value)),
        }
    }
}

/// A parsed selector: all its terms must hold.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Selector {
    /// The terms, in the order written.
    pub matchers: Vec<Matcher>,
}

/// A selector that does not parse, with the byte position of the problem.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid selector at position {position}: {message}")]
pub struct SelectorError {
    /// Byte offset in the selector text.
    pub position: usize,
    /// What is wrong there.
    pub message: String,
}

impl Selector {
    /// Parses a selector.
    ///
    /// # Errors
    /// A [`SelectorError`] naming the position and the problem.
    ///
    /// ```
    /// use critpath_analyzer::query::Selector;
    /// let s = Selector::parse(r#"{service="api", comm=~"post.*"}"#).unwrap();
    /// let labels = |name: &str| match name {
    ///     "service" => Some("api"),
    ///     "comm" => Some("postgres"),
    ///     _ => None,
    /// };
    /// assert!(s.matches(labels));
    /// assert_eq!(Selector::parse("{pid=1}").unwrap_err().position, 5);
    /// ```
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        if text.len() > MAX_SELECTOR_BYTES {
            return Err(SelectorError {
                position: MAX_SELECTOR_BYTES,
                message: format!(
                    "the selector is {} bytes; at most {MAX_SELECTOR_BYTES} are accepted",
                    text.len()
                ),
            });
        }
        let mut selector = Parser { text, pos: 0 }.selector()?;
        for (m, position) in &mut selector.matchers {
            if matches!(m.op, MatchOp::Regex | MatchOp::NotRegex) {
                let regex = RegexBuilder::new(&format!("^(?:{})$", m.value))
                    .size_limit(MAX_REGEX_BYTES)
                    .dfa_size_limit(MAX_REGEX_BYTES)
                    .build()
                    .map_err(|e| SelectorError {
                        position: *position,
                        message: format!("invalid regular expression: {e}"),
                    })?;
                m.regex = Some(regex);
            }
        }
        Ok(Selector {
            matchers: selector.matchers.into_iter().map(|(m, _)| m).collect(),
        })
    }

    /// Whether labels (looked up by name) satisfy every term.
    pub fn matches<'a>(&self, labels: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.matchers.iter().all(|m| m.matches(labels(&m.label)))
    }

    /// True when it selects everything.
    pub fn is_empty(&self) -> bool {
        self.matchers.is_empty()
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, m) in self.matchers.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}{}{:?}", m.label, m.op.as_str(), m.value)?;
        }
        f.write_str("}")
    }
}

struct Parser<'a> {
    text: &'a str,
    pos: usize,
}

/// What the parser read: each term with the byte position of its value.
struct Parsed {
    matchers: Vec<(Matcher, usize)>,
}

impl Parser<'_> {
    fn error<T>(&self, position: usize, message: impl Into<String>) -> Result<T, SelectorError> {
        Err(SelectorError {
            position,
            message: message.into(),
        })
    }

    fn rest(&self) -> &str {
        &self.text[self.pos..]
    }

    fn skip_space(&mut self) {
        let trimmed = self.rest().trim_start();
        self.pos = self.text.len() - trimmed.len();
    }

    fn eat(&mut self, token: &str) -> bool {
        if self.rest().starts_with(token) {
            self.pos += token.len();
            true
        } else {
            false
        }
    }

    /// The terms with the positions of their values, regular expressions not yet compiled.
    fn selector(mut self) -> Result<Parsed, SelectorError> {
        self.skip_space();
        let braced = self.eat("{");
        let mut matchers = Vec::new();
        loop {
            self.skip_space();
            if self.rest().is_empty() || self.rest().starts_with('}') {
                break;
            }
            if matchers.len() == MAX_TERMS {
                return self.error(
                    self.pos,
                    format!("more than {MAX_TERMS} terms; at most {MAX_TERMS} are accepted"),
                );
            }
            matchers.push(self.matcher()?);
            self.skip_space();
            if !self.eat(",") {
                break;
            }
        }
        self.skip_space();
        if braced && !self.eat("}") {
            return self.error(self.pos, "expected `,` or a closing `}`");
        }
        self.skip_space();
        if !self.rest().is_empty() {
            let what = if braced {
                "unexpected text after the closing `}`"
            } else {
                "expected `,` between terms"
            };
            return self.error(self.pos, what);
        }
        Ok(Parsed { matchers })
    }

    fn matcher(&mut self) -> Result<(Matcher, usize), SelectorError> {
        let start = self.pos;
        let name_len = self
            .rest()
            .char_indices()
            .take_while(|&(i, c)| {
                c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())
            })
            .count();
        if name_len == 0 {
            return self.error(start, "expected a label name");
        }
        let label = self.rest()[..name_len].to_owned();
        self.pos += name_len;
        self.skip_space();
        let op_pos = self.pos;
        let op = if self.eat("=~") {
            MatchOp::Regex
        } else if self.eat("!~") {
            MatchOp::NotRegex
        } else if self.eat("!=") {
            MatchOp::NotEqual
        } else if self.eat("=") {
            MatchOp::Equal
        } else {
            return self.error(
                op_pos,
                format!("expected `=`, `!=`, `=~` or `!~` after `{label}`"),
            );
        };
        self.skip_space();
        let value_pos = self.pos;
        let value = self.string()?;
        Ok((
            Matcher {
                label,
                op,
                value,
                regex: None,
            },
            value_pos,
        ))
    }

    fn string(&mut self) -> Result<String, SelectorError> {
        let start = self.pos;
        if !self.eat("\"") {
            return self.error(start, "expected a double-quoted value");
        }
        let mut out = String::new();
        let mut chars = self.rest().char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.pos += i + 1;
                    return Ok(out);
                }
                '\\' => match chars.next() {
                    Some((_, '"')) => out.push('"'),
                    Some((_, '\\')) => out.push('\\'),
                    Some((_, 'n')) => out.push('\n'),
                    Some((_, 't')) => out.push('\t'),
                    Some((j, other)) => {
                        return self.error(self.pos + j - 1, format!("unknown escape `\\{other}`"));
                    }
                    None => break,
                },
                c => out.push(c),
            }
        }
        self.error(start, "unterminated string")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(name: &str) -> Option<&'static str> {
        match name {
            "service" => Some("api"),
            "comm" => Some("postgres"),
            "pid" => Some("42"),
            _ => None,
        }
    }

    fn sel(text: &str) -> Selector {
        Selector::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn err(text: &str) -> SelectorError {
        Selector::parse(text).expect_err(text)
    }

    /// `=` and `!=` compare whole values; a missing label reads as "".
    #[test]
    fn equality_operators() {
        assert!(sel(r#"{service="api"}"#).matches(labels));
        assert!(!sel(r#"{service="web"}"#).matches(labels));
        assert!(sel(r#"{service!="web"}"#).matches(labels));
        assert!(!sel(r#"{pid!="42"}"#).matches(labels));
        assert!(sel(r#"{exe=""}"#).matches(labels));
        assert!(sel(r#"{exe!="x"}"#).matches(labels));
    }

    /// `=~` and `!~` are anchored regular expressions, as in Prometheus.
    #[test]
    fn regex_operators() {
        assert!(sel(r#"{comm=~"post.*"}"#).matches(labels));
        assert!(
            !sel(r#"{comm=~"post"}"#).matches(labels),
            "anchored at both ends"
        );
        assert!(sel(r#"{comm!~"redis|nginx"}"#).matches(labels));
        assert!(!sel(r#"{comm!~"p.*s"}"#).matches(labels));
    }

    /// Several terms must all hold; braces, spaces and a trailing comma are optional; empty
    /// selects everything.
    #[test]
    fn conjunction_and_forms() {
        assert!(sel(r#"{service="api", comm=~"post.*", pid!="1"}"#).matches(labels));
        assert!(!sel(r#"{service="api", pid="1"}"#).matches(labels));
        assert_eq!(sel(r#"service="api",comm="postgres""#).matchers.len(), 2);
        assert_eq!(sel(r#"{ service = "api" , }"#).matchers.len(), 1);
        assert!(sel("").is_empty() && sel("{}").is_empty() && sel("  { } ").is_empty());
        assert!(sel("").matches(labels));
    }

    /// Escapes in values are decoded; Display writes a selector that parses back the same.
    #[test]
    fn escapes_and_display() {
        let s = sel(r#"{comm="a\"b\\c"}"#);
        assert_eq!(s.matchers[0].value, "a\"b\\c");
        assert_eq!(sel(&s.to_string()), s);
    }

    /// Errors name the byte position of the problem.
    #[test]
    fn errors_name_the_position() {
        assert_eq!(err("{pid=1}").position, 5);
        assert!(err("{pid=1}").message.contains("double-quoted"));
        assert_eq!(err(r#"{pid "1"}"#).position, 5);
        assert!(err(r#"{pid "1"}"#).message.contains("`=`"));
        assert_eq!(err(r#"{="1"}"#).position, 1);
        assert_eq!(err(r#"{pid="1""#).position, 8);
        assert_eq!(err(r#"{pid="1"} x"#).position, 10);
        assert_eq!(err(r#"{pid="1}"#).position, 5);
        assert!(err(r#"{pid="1}"#).message.contains("unterminated"));
        assert_eq!(err(r#"{comm=~"("}"#).position, 7);
        assert!(err(r#"{comm=~"("}"#).message.contains("regular expression"));
        assert_eq!(err(r#"{comm="\q"}"#).position, 7);
        assert_eq!(err(r#"a="1" b="2""#).position, 6);
        assert_eq!(err("{9pid=\"1\"}").position, 1);
    }

    /// A hostile selector is refused before it costs anything: too long, too many terms
    /// (counted before any expression is compiled), or an expression too large once compiled.
    /// Selectors as people write them still parse.
    #[test]
    fn hostile_selectors_are_bounded() {
        let term = r#"comm=~"\\w{200}""#;
        let many = format!("{{{}}}", vec![term; MAX_TERMS + 1].join(","));
        assert!(many.len() < MAX_SELECTOR_BYTES, "{}", many.len());
        let started = std::time::Instant::now();
        let e = err(&many);
        assert!(e.message.contains("terms"), "{e}");
        // The terms were not compiled: one such expression alone is refused for its size.
        let e = err(&format!("{{{term}}}"));
        assert!(e.message.contains("size limit"), "{e}");
        assert_eq!(e.position, 7);
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        let long = format!(r#"{{comm="{}"}}"#, "x".repeat(MAX_SELECTOR_BYTES));
        assert!(err(&long).message.contains("bytes"));
        let fine = vec![r#"comm=~"post(gres|master)|nginx.*""#; MAX_TERMS].join(",");
        assert_eq!(sel(&fine).matchers.len(), MAX_TERMS);
        assert!(
            sel(r#"{exe=~"/usr/(s)?bin/[a-z0-9_-]{1,64}"}"#)
                .matches(|_| Some("/usr/bin/redis-server"))
        );
    }
}

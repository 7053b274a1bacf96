//! Problems found in a client body: where (a JSON path such as `$.items[0].quantity`), what is
//! wrong, and what was expected and found. Validation collects every problem of a body at once.

use serde::Serialize;
use std::fmt;

/// One thing wrong with a client body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// Where, as a JSON path from the body's root: `$`, `$.email`, `$.items[0].quantity`.
    pub path: String,
    /// What is wrong, lowercase, e.g. "required field is missing".
    pub message: String,
    /// What the schema or rule expects at that path, when that helps (e.g. "int").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    /// What the body has at that path, when there is something (e.g. `string "two"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub found: Option<String>,
}

impl Problem {
    /// A problem at `path` with a message and neither expected nor found.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            path: path.into(),
            message: message.into(),
            expected: None,
            found: None,
        }
    }

    /// Sets what was expected.
    pub fn expected(mut self, expected: impl Into<String>) -> Problem {
        self.expected = Some(expected.into());
        self
    }

    /// Sets what was found.
    pub fn found(mut self, found: impl Into<String>) -> Problem {
        self.found = Some(found.into());
        self
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)?;
        if let Some(expected) = &self.expected {
            write!(f, " (expected {expected}")?;
            match &self.found {
                Some(found) => write!(f, ", found {found})")?,
                None => write!(f, ")")?,
            }
        } else if let Some(found) = &self.found {
            write!(f, " (found {found})")?;
        }
        Ok(())
    }
}

/// Every problem of one body, in the order they were found (schema problems first, then rules).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    /// Whether there are no problems.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many problems there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The problems as a slice.
    pub fn iter(&self) -> std::slice::Iter<'_, Problem> {
        self.0.iter()
    }

    /// The first problem at `path`, if any (handy in tests and error messages).
    pub fn at(&self, path: &str) -> Option<&Problem> {
        self.0.iter().find(|p| p.path == path)
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                write!(f, "; ")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

impl<'a> IntoIterator for &'a Problems {
    type Item = &'a Problem;
    type IntoIter = std::slice::Iter<'a, Problem>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// A JSON path under construction, rendered as `$.a.b[0]` only when a problem names it. Each
/// step borrows its parent, so walking a body allocates nothing.
#[derive(Debug, Clone, Copy)]
pub(crate) enum JsonPath<'a> {
    /// `$`.
    Root,
    /// The parent path followed by an object key.
    Key(&'a JsonPath<'a>, &'a str),
    /// The parent path followed by an array index.
    Index(&'a JsonPath<'a>, usize),
}

impl<'a> JsonPath<'a> {
    /// The root, `$`.
    pub(crate) fn root() -> JsonPath<'static> {
        JsonPath::Root
    }

    /// This path followed by an object key.
    pub(crate) fn key<'b>(&'b self, key: &'b str) -> JsonPath<'b> {
        JsonPath::Key(self, key)
    }

    /// This path followed by an array index.
    pub(crate) fn index<'b>(&'b self, index: usize) -> JsonPath<'b> {
        JsonPath::Index(self, index)
    }
}

fn is_identifier(key: &str) -> bool {
    let mut chars = key.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl fmt::Display for JsonPath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JsonPath::Root => write!(f, "$"),
            JsonPath::Key(parent, key) if is_identifier(key) => write!(f, "{parent}.{key}"),
            JsonPath::Key(parent, key) => {
                write!(
                    f,
                    "{parent}[{}]",
                    serde_json::Value::String(key.to_string())
                )
            }
            JsonPath::Index(parent, i) => write!(f, "{parent}[{i}]"),
        }
    }
}

/// A short description of a JSON value for `found`: its type and, for scalars, the value
/// (strings cut at 40 characters).
pub(crate) fn describe_json(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Null => "null".to_string(),
        serde_json::Value::Bool(b) => format!("boolean {b}"),
        serde_json::Value::Number(n) => format!("number {n}"),
        serde_json::Value::String(s) => {
            let cut: String = s.chars().take(40).collect();
            if cut.len() < s.len() {
                format!("string {:?}…", cut)
            } else {
                format!("string {s:?}")
            }
        }
        serde_json::Value::Array(a) => format!("array of {} elements", a.len()),
        serde_json::Value::Object(_) => "object".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_render_like_json_path() {
        let root = JsonPath::root();
        let items = root.key("items");
        let first = items.index(0);
        let path = first.key("quantity");
        assert_eq!(path.to_string(), "$.items[0].quantity");
        assert_eq!(JsonPath::root().to_string(), "$");
        assert_eq!(JsonPath::root().key("a b").to_string(), "$[\"a b\"]");
    }

    #[test]
    fn problem_display_names_expected_and_found() {
        let p = Problem::new("$.x", "wrong type")
            .expected("int")
            .found("string \"a\"");
        assert_eq!(
            p.to_string(),
            "$.x: wrong type (expected int, found string \"a\")"
        );
    }
}

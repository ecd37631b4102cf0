//! Structural diff of two JSON documents (pure).
//!
//! Objects are compared key by key and arrays index by index, recursively; each difference is
//! reported at its JSON Pointer path (RFC 6901), so `{"db":{"port":1}}` vs `{"db":{"port":2}}`
//! reports one change at `/db/port`.

use serde::Serialize;
use serde_json::Value;

/// The differences between two JSON documents.
#[derive(Debug, Default, PartialEq, Serialize)]
pub struct JsonDiff {
    /// Paths present only in the newer document, with their values.
    pub added: Vec<PathValue>,
    /// Paths present only in the older document, with their values.
    pub removed: Vec<PathValue>,
    /// Paths present in both with different values.
    pub changed: Vec<PathChange>,
}

/// A path and the value found there.
#[derive(Debug, PartialEq, Serialize)]
pub struct PathValue {
    /// JSON Pointer to the value.
    pub path: String,
    /// The value.
    pub value: Value,
}

/// A path whose value differs between the two documents.
#[derive(Debug, PartialEq, Serialize)]
pub struct PathChange {
    /// JSON Pointer to the value.
    pub path: String,
    /// The value in the older document.
    pub from: Value,
    /// The value in the newer document.
    pub to: Value,
}

impl JsonDiff {
    /// True when the documents are equal (the tests' check; the service compares values).
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// Compares `old` with `new`.
pub fn diff(old: &Value, new: &Value) -> JsonDiff {
    let mut out = JsonDiff::default();
    walk(&mut String::new(), old, new, &mut out);
    out
}

fn walk(path: &mut String, old: &Value, new: &Value, out: &mut JsonDiff) {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, old_value) in a {
                let len = push_segment(path, key);
                match b.get(key) {
                    Some(new_value) => walk(path, old_value, new_value, out),
                    None => out.removed.push(PathValue {
                        path: path.clone(),
                        value: old_value.clone(),
                    }),
                }
                path.truncate(len);
            }
            for (key, new_value) in b {
                if !a.contains_key(key) {
                    let len = push_segment(path, key);
                    out.added.push(PathValue {
                        path: path.clone(),
                        value: new_value.clone(),
                    });
                    path.truncate(len);
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for i in 0..a.len().max(b.len()) {
                let len = push_segment(path, &i.to_string());
                match (a.get(i), b.get(i)) {
                    (Some(x), Some(y)) => walk(path, x, y, out),
                    (Some(x), None) => out.removed.push(PathValue {
                        path: path.clone(),
                        value: x.clone(),
                    }),
                    (None, Some(y)) => out.added.push(PathValue {
                        path: path.clone(),
                        value: y.clone(),
                    }),
                    (None, None) => {}
                }
                path.truncate(len);
            }
        }
        (a, b) if a == b => {}
        (a, b) => out.changed.push(PathChange {
            path: path.clone(),
            from: a.clone(),
            to: b.clone(),
        }),
    }
}

/// Appends `/segment` (escaped per RFC 6901) and returns the length to truncate back to.
fn push_segment(path: &mut String, segment: &str) -> usize {
    let len = path.len();
    path.push('/');
    for c in segment.chars() {
        match c {
            '~' => path.push_str("~0"),
            '/' => path.push_str("~1"),
            c => path.push(c),
        }
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nested_changes_are_reported_at_their_paths() {
        let old =
            json!({"db": {"host": "a", "port": 1}, "tags": ["x", "y"], "gone": true, "a/b": 1});
        let new = json!({"db": {"host": "a", "port": 2, "tls": true}, "tags": ["x"], "a/b": 1});
        let d = diff(&old, &new);
        assert_eq!(
            d.changed,
            vec![PathChange {
                path: "/db/port".into(),
                from: json!(1),
                to: json!(2)
            }]
        );
        assert_eq!(
            d.added,
            vec![PathValue {
                path: "/db/tls".into(),
                value: json!(true)
            }]
        );
        let removed: Vec<_> = d.removed.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(removed, vec!["/gone", "/tags/1"]);
        assert!(!d.is_empty());
    }

    #[test]
    fn equal_documents_have_no_diff_and_roots_can_change_type() {
        assert!(
            diff(
                &json!({"a": [1, {"b": null}]}),
                &json!({"a": [1, {"b": null}]})
            )
            .is_empty()
        );
        let d = diff(&json!(1), &json!("1"));
        assert_eq!(d.changed.len(), 1);
        assert_eq!(d.changed[0].path, "");
        let d = diff(&json!({"a~b": 1}), &json!({}));
        assert_eq!(d.removed[0].path, "/a~0b");
    }
}

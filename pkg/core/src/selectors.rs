//! Label selectors (equality- and set-based) and field selectors, with upstream's grammar.

use crate::{Error, Result};
use serde_json::Value;
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Equals,
    NotEquals,
    In,
    NotIn,
    Exists,
    DoesNotExist,
    Gt,
    Lt,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub op: Op,
    pub values: Vec<String>,
}

/// A parsed label selector. The empty selector matches everything.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LabelSelector {
    pub requirements: Vec<Requirement>,
}

impl LabelSelector {
    /// Parses the `labelSelector` query parameter syntax.
    pub fn parse(s: &str) -> Result<LabelSelector> {
        let mut p = Parser {
            s: s.as_bytes(),
            i: 0,
        };
        let mut requirements = Vec::new();
        p.skip_ws();
        if p.eof() {
            return Ok(LabelSelector::default());
        }
        loop {
            requirements.push(p.requirement()?);
            p.skip_ws();
            if p.eof() {
                break;
            }
            if !p.eat(",") {
                return Err(Error::InvalidSelector(format!(
                    "found '{}', expected: ',' or 'end of string'",
                    p.rest()
                )));
            }
        }
        Ok(LabelSelector { requirements })
    }

    /// Builds a selector from a metav1.LabelSelector object (`matchLabels` + `matchExpressions`).
    pub fn from_object(sel: &Value) -> Result<LabelSelector> {
        let mut requirements = Vec::new();
        if let Some(m) = sel.get("matchLabels").and_then(Value::as_object) {
            for (k, v) in m {
                requirements.push(Requirement {
                    key: k.clone(),
                    op: Op::Equals,
                    values: vec![v.as_str().unwrap_or_default().to_string()],
                });
            }
        }
        if let Some(exprs) = sel.get("matchExpressions").and_then(Value::as_array) {
            for e in exprs {
                let key = e
                    .get("key")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let values: Vec<String> = e
                    .get("values")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default();
                let op = match e
                    .get("operator")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                {
                    "In" => Op::In,
                    "NotIn" => Op::NotIn,
                    "Exists" => Op::Exists,
                    "DoesNotExist" => Op::DoesNotExist,
                    other => {
                        return Err(Error::InvalidSelector(format!(
                            "{other:?} is not a valid label selector operator"
                        )));
                    }
                };
                requirements.push(Requirement { key, op, values });
            }
        }
        Ok(LabelSelector { requirements })
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements
            .iter()
            .all(|r| r.matches(labels.get(&r.key).map(String::as_str)))
    }

    /// Matches against `metadata.labels` of a raw object.
    pub fn matches_object(&self, obj: &Value) -> bool {
        if self.is_empty() {
            return true;
        }
        let labels = obj
            .pointer("/metadata/labels")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        self.matches(&labels)
    }
}

impl std::fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .requirements
            .iter()
            .map(|r| match r.op {
                Op::Equals => format!("{}={}", r.key, r.values.join("")),
                Op::NotEquals => format!("{}!={}", r.key, r.values.join("")),
                Op::In => format!("{} in ({})", r.key, r.values.join(",")),
                Op::NotIn => format!("{} notin ({})", r.key, r.values.join(",")),
                Op::Exists => r.key.clone(),
                Op::DoesNotExist => format!("!{}", r.key),
                Op::Gt => format!("{}>{}", r.key, r.values.join("")),
                Op::Lt => format!("{}<{}", r.key, r.values.join("")),
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

impl Requirement {
    fn matches(&self, value: Option<&str>) -> bool {
        match self.op {
            Op::Equals | Op::In => value.is_some_and(|v| self.values.iter().any(|x| x == v)),
            Op::NotEquals | Op::NotIn => value.is_none_or(|v| !self.values.iter().any(|x| x == v)),
            Op::Exists => value.is_some(),
            Op::DoesNotExist => value.is_none(),
            Op::Gt | Op::Lt => {
                let (Some(v), Some(bound)) = (
                    value.and_then(|v| v.parse::<i64>().ok()),
                    self.values.first().and_then(|b| b.parse::<i64>().ok()),
                ) else {
                    return false;
                };
                if self.op == Op::Gt {
                    v > bound
                } else {
                    v < bound
                }
            }
        }
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn eof(&self) -> bool {
        self.i >= self.s.len()
    }
    fn rest(&self) -> String {
        String::from_utf8_lossy(&self.s[self.i.min(self.s.len())..]).into_owned()
    }
    fn skip_ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }
    fn eat(&mut self, tok: &str) -> bool {
        if self.s[self.i.min(self.s.len())..].starts_with(tok.as_bytes()) {
            self.i += tok.len();
            true
        } else {
            false
        }
    }
    fn ident(&mut self) -> String {
        let start = self.i;
        while self.i < self.s.len() {
            let c = self.s[self.i];
            if c.is_ascii_whitespace() || b",=!()<>".contains(&c) {
                break;
            }
            self.i += 1;
        }
        String::from_utf8_lossy(&self.s[start..self.i]).into_owned()
    }
    fn word_is(&self, w: &str) -> bool {
        let rest = &self.s[self.i.min(self.s.len())..];
        rest.starts_with(w.as_bytes())
            && rest
                .get(w.len())
                .is_none_or(|c| c.is_ascii_whitespace() || *c == b'(')
    }
    fn requirement(&mut self) -> Result<Requirement> {
        self.skip_ws();
        if self.eat("!") {
            self.skip_ws();
            let key = self.ident();
            validate_key(&key)?;
            return Ok(Requirement {
                key,
                op: Op::DoesNotExist,
                values: vec![],
            });
        }
        let key = self.ident();
        validate_key(&key)?;
        self.skip_ws();
        if self.eof() || self.s[self.i] == b',' {
            return Ok(Requirement {
                key,
                op: Op::Exists,
                values: vec![],
            });
        }
        let op = if self.eat("==") || self.eat("=") {
            Op::Equals
        } else if self.eat("!=") {
            Op::NotEquals
        } else if self.eat(">") {
            Op::Gt
        } else if self.eat("<") {
            Op::Lt
        } else if self.word_is("notin") {
            self.i += 5;
            Op::NotIn
        } else if self.word_is("in") {
            self.i += 2;
            Op::In
        } else {
            return Err(Error::InvalidSelector(format!(
                "found '{}', expected: in, notin, =, ==, !=, gt, lt",
                self.rest()
            )));
        };
        self.skip_ws();
        let values = if matches!(op, Op::In | Op::NotIn) {
            if !self.eat("(") {
                return Err(Error::InvalidSelector(format!(
                    "found '{}', expected: '('",
                    self.rest()
                )));
            }
            let mut vals = Vec::new();
            loop {
                self.skip_ws();
                if self.eat(")") {
                    break;
                }
                let v = self.ident();
                validate_value(&v)?;
                vals.push(v);
                self.skip_ws();
                if self.eat(",") {
                    continue;
                }
                if self.eat(")") {
                    break;
                }
                return Err(Error::InvalidSelector(format!(
                    "found '{}', expected: ',' or ')'",
                    self.rest()
                )));
            }
            vals
        } else {
            let v = self.ident();
            validate_value(&v)?;
            if matches!(op, Op::Gt | Op::Lt) && v.parse::<i64>().is_err() {
                return Err(Error::InvalidSelector(format!(
                    "for 'Gt', 'Lt' operators, the value must be an integer: {v}"
                )));
            }
            vec![v]
        };
        Ok(Requirement { key, op, values })
    }
}

fn validate_key(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::InvalidSelector("key must not be empty".into()));
    }
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix
        && (p.is_empty() || p.len() > 253 || !crate::names::is_dns1123_subdomain(p))
    {
        return Err(Error::InvalidSelector(format!(
            "invalid label key {key:?}: prefix part must be a DNS-1123 subdomain"
        )));
    }
    if !crate::names::is_qualified_name_part(name) {
        return Err(Error::InvalidSelector(format!(
            "invalid label key {key:?}: name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
        )));
    }
    Ok(())
}

fn validate_value(v: &str) -> Result<()> {
    if v.is_empty() || crate::names::is_label_value(v) {
        Ok(())
    } else {
        Err(Error::InvalidSelector(format!(
            "invalid label value: {v:?}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
        )))
    }
}

/// A parsed field selector: a conjunction of `field=value` / `field!=value` terms.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldSelector {
    pub terms: Vec<(String, bool, String)>,
}

impl FieldSelector {
    pub fn parse(s: &str) -> Result<FieldSelector> {
        let mut terms = Vec::new();
        for part in split_unescaped(s, ',') {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let (field, eq, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, true, v)
            } else {
                return Err(Error::InvalidSelector(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                )));
            };
            terms.push((field.trim().to_string(), eq, unescape(value.trim())));
        }
        Ok(FieldSelector { terms })
    }

    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// Checks every field against the resource's supported field labels.
    pub fn check_supported(&self, supported: &[&str]) -> Result<()> {
        for (f, _, _) in &self.terms {
            if f != "metadata.name" && f != "metadata.namespace" && !supported.contains(&f.as_str())
            {
                return Err(Error::UnsupportedField(f.clone()));
            }
        }
        Ok(())
    }

    /// Matches against a raw object; a missing field compares as the empty string
    /// (booleans and numbers compare by their text, as upstream's field sets do).
    pub fn matches_object(&self, obj: &Value) -> bool {
        self.terms.iter().all(|(field, eq, want)| {
            let got = field_value(obj, field);
            (got == *want) == *eq
        })
    }
}

/// The text of a dotted field path of an object (`spec.nodeName`), "" when absent.
pub fn field_value(obj: &Value, field: &str) -> String {
    let mut cur = obj;
    for part in field.split('.') {
        match cur.get(part) {
            Some(v) => cur = v,
            None => return String::new(),
        }
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            cur.push('\\');
            cur.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    out.push(cur);
    out
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            out.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn equality_and_set_based_requirements_combine() {
        let s =
            LabelSelector::parse("app=web, tier in (front,back),!legacy,env!=prod").expect("parse");
        assert_eq!(s.requirements.len(), 4);
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "front")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "db")])));
        assert!(!s.matches(&labels(&[
            ("app", "web"),
            ("tier", "front"),
            ("legacy", "")
        ])));
        assert!(!s.matches(&labels(&[
            ("app", "web"),
            ("tier", "front"),
            ("env", "prod")
        ])));
    }

    #[test]
    fn exists_notin_and_gt_work() {
        let s = LabelSelector::parse("app,env notin (prod),n>3").expect("parse");
        assert!(s.matches(&labels(&[("app", "x"), ("n", "4")])));
        assert!(!s.matches(&labels(&[("app", "x"), ("n", "3")])));
        assert!(!s.matches(&labels(&[("n", "4")])));
    }

    #[test]
    fn malformed_selectors_are_errors() {
        assert!(LabelSelector::parse("app in (a").is_err());
        assert!(LabelSelector::parse("app=a b").is_err());
        assert!(LabelSelector::parse("-bad=x").is_err());
        assert!(LabelSelector::parse("n>abc").is_err());
    }

    #[test]
    fn empty_selector_matches_everything() {
        assert!(
            LabelSelector::parse("")
                .expect("parse")
                .matches(&BTreeMap::new())
        );
    }

    #[test]
    fn label_selector_object_form_is_understood() {
        let s = LabelSelector::from_object(&json!({"matchLabels":{"app":"web"},"matchExpressions":[{"key":"tier","operator":"In","values":["a"]}]})).expect("sel");
        assert!(s.matches_object(&json!({"metadata":{"labels":{"app":"web","tier":"a"}}})));
        assert!(!s.matches_object(&json!({"metadata":{"labels":{"app":"web"}}})));
    }

    #[test]
    fn field_selectors_match_nested_fields() {
        let f = FieldSelector::parse("spec.nodeName=n1,status.phase!=Failed").expect("parse");
        let pod = json!({"spec":{"nodeName":"n1"},"status":{"phase":"Running"}});
        assert!(f.matches_object(&pod));
        let f = FieldSelector::parse("spec.nodeName=").expect("parse");
        assert!(f.matches_object(&json!({"spec":{}})));
        assert!(f.check_supported(&["spec.nodeName"]).is_ok());
        assert!(
            FieldSelector::parse("foo=bar")
                .expect("parse")
                .check_supported(&[])
                .is_err()
        );
    }
}

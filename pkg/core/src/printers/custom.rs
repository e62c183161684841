//! Custom resources: columns from a CRD version's `additionalPrinterColumns`, cells via a
//! small JSONPath subset (fields, `['quoted']` keys, indexes, `[*]`, `[?(@.a.b=="x")]`).

use serde_json::{Value, json};

use super::Column;
use super::util::{AGE_DESC, name_cell, name_col, since};

/// Upstream's columns when a CRD version declares none: Age of `.metadata.creationTimestamp`.
fn default_specs() -> Vec<Value> {
    vec![
        json!({"name": "Age", "type": "date", "description": AGE_DESC,
                "jsonPath": ".metadata.creationTimestamp"}),
    ]
}

fn specs(additional_printer_columns: &Value) -> Vec<Value> {
    match additional_printer_columns.as_array() {
        Some(a) if !a.is_empty() => a.clone(),
        _ => default_specs(),
    }
}

fn json_path(spec: &Value) -> &str {
    spec.get("jsonPath")
        .or_else(|| spec.get("JSONPath"))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn text<'a>(spec: &'a Value, key: &str) -> &'a str {
    spec.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// Table columns of a CRD version: Name, then each `additionalPrinterColumns` entry (or Age when
/// there are none, as upstream serves by default).
pub fn custom_columns(additional_printer_columns: &Value) -> Vec<Column> {
    let mut cols = vec![name_col()];
    for spec in specs(additional_printer_columns) {
        let description = match text(&spec, "description") {
            "" => format!(
                "Custom resource definition column (in JSONPath format): {}",
                json_path(&spec)
            ),
            d => d.to_string(),
        };
        cols.push(Column {
            name: text(&spec, "name").to_string(),
            type_: text(&spec, "type").to_string(),
            format: text(&spec, "format").to_string(),
            description,
            priority: spec
                .get("priority")
                .and_then(Value::as_i64)
                .and_then(|p| i32::try_from(p).ok())
                .unwrap_or(0),
        });
    }
    cols
}

/// Cells of a custom resource for the columns of [`custom_columns`] (same `columns_spec`).
/// Missing values are `null`; `date` cells are ages ("5m"), "<invalid>" when unparsable.
pub fn custom_row(columns_spec: &Value, obj: &Value) -> Vec<Value> {
    let mut row = vec![name_cell(obj)];
    for spec in specs(columns_spec) {
        let value = parse(json_path(&spec)).and_then(|path| eval(&path, obj));
        row.push(match value {
            Some(v) => cell(text(&spec, "type"), v),
            None => Value::Null,
        });
    }
    row
}

/// Upstream's `cellForJSONValue`, plus JSONPath text printing for string columns.
fn cell(type_: &str, v: &Value) -> Value {
    match (type_, v) {
        (_, Value::Null) => Value::Null,
        ("string", Value::String(_)) => v.clone(),
        ("string", Value::Number(n)) => match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 1e15 => json!(format!("{f:.0}")),
            _ => json!(n.to_string()),
        },
        ("string", Value::Bool(b)) => json!(b.to_string()),
        ("string", _) => json!(v.to_string()),
        ("integer", Value::Number(n)) => match n.as_i64() {
            Some(i) => json!(i),
            None => n.as_f64().map_or(Value::Null, |f| json!(f.trunc() as i64)),
        },
        ("number", Value::Number(n)) => n.as_f64().map_or(Value::Null, |f| json!(f)),
        ("boolean", Value::Bool(_)) => v.clone(),
        ("date", Value::String(s)) if s.is_empty() => json!("<unknown>"),
        ("date", Value::String(s)) => match crate::meta::parse_time(s) {
            Some(_) => json!(since(Some(s))),
            None => json!("<invalid>"),
        },
        _ => Value::Null,
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Seg {
    Field(String),
    Index(i64),
    All,
    /// `[?(@.path op literal)]`; `op` is None for an existence test.
    Filter(Vec<Seg>, Option<(bool, Value)>),
}

/// Parses a simple JSONPath (optionally wrapped in `{}`); None if unsupported.
fn parse(path: &str) -> Option<Vec<Seg>> {
    let p = path.trim();
    let p = p
        .strip_prefix('{')
        .and_then(|p| p.strip_suffix('}'))
        .unwrap_or(p)
        .trim();
    let p = p.strip_prefix('$').unwrap_or(p);
    parse_segs(p)
}

fn parse_segs(mut p: &str) -> Option<Vec<Seg>> {
    let mut segs = Vec::new();
    while !p.is_empty() {
        if let Some(rest) = p.strip_prefix('.') {
            // A field name, where `\.` escapes a dot.
            let mut name = String::new();
            let mut chars = rest.char_indices().peekable();
            let mut end = rest.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            name.push(n);
                        }
                    }
                    '.' | '[' => {
                        end = i;
                        break;
                    }
                    c => name.push(c),
                }
            }
            if !name.is_empty() {
                segs.push(Seg::Field(name));
            }
            p = &rest[end..];
        } else if let Some(rest) = p.strip_prefix('[') {
            let close = matching_bracket(rest)?;
            let inner = rest[..close].trim();
            p = &rest[close + 1..];
            segs.push(parse_bracket(inner)?);
        } else {
            return None;
        }
    }
    Some(segs)
}

/// Index of the `]` closing a bracket whose content starts `s`, skipping quoted text.
fn matching_bracket(s: &str) -> Option<usize> {
    let mut quote: Option<char> = None;
    let mut depth = 0usize;
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '[' | '(') => depth += 1,
            (None, ')') => depth = depth.saturating_sub(1),
            (None, ']') if depth == 0 => return Some(i),
            (None, ']') => depth -= 1,
            _ => {}
        }
    }
    None
}

fn unquote(s: &str) -> Option<&str> {
    let s = s.trim();
    s.strip_prefix('\'')
        .and_then(|s| s.strip_suffix('\''))
        .or_else(|| s.strip_prefix('"').and_then(|s| s.strip_suffix('"')))
}

fn parse_bracket(inner: &str) -> Option<Seg> {
    if inner == "*" {
        return Some(Seg::All);
    }
    if let Some(key) = unquote(inner) {
        return Some(Seg::Field(key.to_string()));
    }
    if let Ok(i) = inner.parse::<i64>() {
        return Some(Seg::Index(i));
    }
    let expr = inner.strip_prefix('?')?.trim();
    let expr = expr.strip_prefix('(')?.strip_suffix(')')?.trim();
    let (lhs, op) = match (expr.find("=="), expr.find("!=")) {
        (Some(i), _) => (&expr[..i], Some((true, &expr[i + 2..]))),
        (None, Some(i)) => (&expr[..i], Some((false, &expr[i + 2..]))),
        (None, None) => (expr, None),
    };
    let path = parse_segs(lhs.trim().strip_prefix('@')?)?;
    let op = match op {
        None => None,
        Some((eq, lit)) => {
            let lit = lit.trim();
            let value = match unquote(lit) {
                Some(s) => json!(s),
                None => serde_json::from_str(lit).ok()?,
            };
            Some((eq, value))
        }
    };
    Some(Seg::Filter(path, op))
}

/// All values a path selects, in document order.
fn select<'a>(segs: &[Seg], root: &'a Value) -> Vec<&'a Value> {
    let mut cur = vec![root];
    for seg in segs {
        let mut next = Vec::new();
        for v in cur {
            match seg {
                Seg::Field(f) => next.extend(v.get(f.as_str())),
                Seg::Index(i) => {
                    if let Some(a) = v.as_array() {
                        let idx = if *i < 0 { a.len() as i64 + i } else { *i };
                        next.extend(usize::try_from(idx).ok().and_then(|i| a.get(i)));
                    }
                }
                Seg::All => match v {
                    Value::Array(a) => next.extend(a.iter()),
                    Value::Object(m) => next.extend(m.values()),
                    _ => {}
                },
                Seg::Filter(path, op) => {
                    let items: Vec<&Value> = match v {
                        Value::Array(a) => a.iter().collect(),
                        other => vec![other],
                    };
                    for item in items {
                        let found = select(path, item);
                        let keep = match op {
                            None => !found.is_empty(),
                            Some((true, lit)) => found.first().is_some_and(|f| loose_eq(f, lit)),
                            Some((false, lit)) => found.first().is_some_and(|f| !loose_eq(f, lit)),
                        };
                        if keep {
                            next.push(item);
                        }
                    }
                }
            }
        }
        cur = next;
    }
    cur
}

fn loose_eq(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// The first value a path selects, as upstream's table convertor uses it.
fn eval<'a>(segs: &[Seg], obj: &'a Value) -> Option<&'a Value> {
    select(segs, obj).into_iter().next()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn spec() -> Value {
        json!([
            {"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"},
            {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas", "priority": 1},
            {"name": "Image", "type": "string", "jsonPath": ".spec.containers[0].image", "description": "img"},
            {"name": "App", "type": "string", "jsonPath": ".metadata.labels.app\\.kubernetes\\.io/name"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ])
    }

    #[test]
    fn crd_columns_follow_additional_printer_columns() {
        let cols = custom_columns(&spec());
        let names: Vec<_> = cols
            .iter()
            .map(|c| (c.name.as_str(), c.type_.as_str(), c.priority))
            .collect();
        assert_eq!(
            names,
            [
                ("Name", "string", 0),
                ("Ready", "string", 0),
                ("Replicas", "integer", 1),
                ("Image", "string", 0),
                ("App", "string", 0),
                ("Age", "date", 0)
            ]
        );
        assert_eq!(cols[0].format, "name");
        assert_eq!(cols[3].description, "img");
        assert_eq!(
            cols[2].description,
            "Custom resource definition column (in JSONPath format): .spec.replicas"
        );
    }

    #[test]
    fn crd_without_printer_columns_gets_age() {
        let cols = custom_columns(&Value::Null);
        assert_eq!(
            cols.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
            ["Name", "Age"]
        );
        let row = custom_row(&json!([]), &json!({"metadata": {"name": "w"}}));
        assert_eq!(row, [json!("w"), Value::Null]);
    }

    #[test]
    fn crd_cells_evaluate_json_paths() {
        let obj = json!({"metadata": {"name": "w1", "labels": {"app.kubernetes.io/name": "shop"},
                "creationTimestamp": "2020-01-01T00:00:00Z"},
            "spec": {"replicas": 3, "containers": [{"image": "nginx:1"}]},
            "status": {"conditions": [{"type": "Synced", "status": "False"}, {"type": "Ready", "status": "True"}]}});
        let row = custom_row(&spec(), &obj);
        assert_eq!(
            row[..5],
            [
                json!("w1"),
                json!("True"),
                json!(3),
                json!("nginx:1"),
                json!("shop")
            ]
        );
        assert!(row[5].as_str().unwrap().ends_with('y'));
    }

    #[test]
    fn missing_values_are_null_and_bad_dates_invalid() {
        let row = custom_row(
            &spec(),
            &json!({"metadata": {"creationTimestamp": "yesterday"}}),
        );
        assert_eq!(
            row[1..],
            [
                Value::Null,
                Value::Null,
                Value::Null,
                Value::Null,
                json!("<invalid>")
            ]
        );
    }

    #[test]
    fn json_path_subset_parses_quoted_keys_wildcards_and_braces() {
        let obj = json!({"a": {"b.c": [1, 2, 3]}, "items": [{"n": 1}, {"n": 2}]});
        let p = parse("{.a['b.c'][-1]}").unwrap();
        assert_eq!(eval(&p, &obj), Some(&json!(3)));
        let p = parse(".items[*].n").unwrap();
        assert_eq!(select(&p, &obj), [&json!(1), &json!(2)]);
        let p = parse(".items[?(@.n==2)].n").unwrap();
        assert_eq!(eval(&p, &obj), Some(&json!(2)));
        assert_eq!(cell("string", &json!({"x": 1})), json!("{\"x\":1}"));
    }
}

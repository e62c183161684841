//! Accessors for `metadata` of raw JSON objects, and upstream's timestamp format.

use serde_json::{Map, Value};

/// `metadata.<field>` as a string, if present.
pub fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

pub fn name(obj: &Value) -> Option<&str> {
    meta_str(obj, "name")
}

pub fn namespace(obj: &Value) -> Option<&str> {
    meta_str(obj, "namespace")
}

/// The `metadata` map, created if absent (and replacing a non-object value).
pub fn metadata_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.is_object() {
        *obj = Value::Object(Map::new());
    }
    let Value::Object(root) = obj else {
        unreachable!("made an object above")
    };
    let meta = root
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    match meta {
        Value::Object(m) => m,
        _ => unreachable!("made an object above"),
    }
}

/// Sets `metadata.<field>`; `Value::Null` removes it.
pub fn set_meta(obj: &mut Value, field: &str, value: Value) {
    let meta = metadata_mut(obj);
    if value.is_null() {
        meta.remove(field);
    } else {
        meta.insert(field.to_string(), value);
    }
}

/// `metadata.labels` / `metadata.annotations` entry.
pub fn map_entry<'a>(obj: &'a Value, map: &str, key: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(map)?.get(key)?.as_str()
}

/// `metadata.finalizers` as strings.
pub fn finalizers(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Current time as upstream formats metav1.Time: RFC 3339, second precision, UTC ("Z").
pub fn now_rfc3339() -> String {
    format_time(jiff::Timestamp::now())
}

pub fn format_time(ts: jiff::Timestamp) -> String {
    ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Current time with microseconds, as metav1.MicroTime.
pub fn now_micro_rfc3339() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

/// Parses an RFC 3339 timestamp.
pub fn parse_time(s: &str) -> Option<jiff::Timestamp> {
    s.parse::<jiff::Timestamp>().ok()
}

/// Go's `time.Duration.String()` of a count of nanoseconds (`1h2m0.5s`, `1.5ms`, `0s`).
pub fn go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let n = nanos.unsigned_abs();
    let frac = |value: u64, unit: u64| -> String {
        let whole = value / unit;
        let rest = value % unit;
        if rest == 0 {
            return whole.to_string();
        }
        let digits = unit.ilog10() as usize;
        let f = format!("{rest:0digits$}");
        format!("{whole}.{}", f.trim_end_matches('0'))
    };
    if n < 1_000 {
        return format!("{sign}{n}ns");
    }
    if n < 1_000_000 {
        return format!("{sign}{}µs", frac(n, 1_000));
    }
    if n < 1_000_000_000 {
        return format!("{sign}{}ms", frac(n, 1_000_000));
    }
    let secs = frac(n % 60_000_000_000, 1_000_000_000);
    let mins = n / 60_000_000_000;
    if mins == 0 {
        return format!("{sign}{secs}s");
    }
    let (h, m) = (mins / 60, mins % 60);
    if h == 0 {
        format!("{sign}{m}m{secs}s")
    } else {
        format!("{sign}{h}h{m}m{secs}s")
    }
}

/// Upstream's short human duration ("5s", "3m20s", "4h", "2d"), as kubectl's AGE column.
pub fn human_duration(secs: i64) -> String {
    let secs = secs.max(0);
    if secs < 120 {
        return format!("{secs}s");
    }
    let mins = secs / 60;
    if mins < 10 {
        let s = secs % 60;
        return if s == 0 {
            format!("{mins}m")
        } else {
            format!("{mins}m{s}s")
        };
    }
    if mins < 180 {
        return format!("{mins}m");
    }
    let hours = secs / 3600;
    if hours < 8 {
        let m = mins % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    let days = hours / 24;
    if days < 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{days}d")
        } else {
            format!("{days}d{h}h")
        };
    }
    if days < 365 * 2 {
        return format!("{days}d");
    }
    format!("{}y", days / 365)
}

/// Age of an object (`metadata.creationTimestamp`) in upstream's short form, "<unknown>" if unset.
pub fn age(obj: &Value) -> String {
    match meta_str(obj, "creationTimestamp").and_then(parse_time) {
        Some(t) => human_duration(jiff::Timestamp::now().as_second() - t.as_second()),
        None => "<unknown>".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn set_meta_creates_metadata_and_null_removes() {
        let mut o = json!({});
        set_meta(&mut o, "name", json!("a"));
        assert_eq!(name(&o), Some("a"));
        set_meta(&mut o, "name", Value::Null);
        assert_eq!(name(&o), None);
    }

    #[test]
    fn go_durations_print_like_go() {
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(1_500_000), "1.5ms");
        assert_eq!(go_duration(90_000_000_000), "1m30s");
        assert_eq!(go_duration(3_600_000_000_000), "1h0m0s");
        assert_eq!(go_duration(-2_500_000_000), "-2.5s");
    }

    #[test]
    fn human_durations_follow_kubectl() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(200), "3m20s");
        assert_eq!(human_duration(3600 * 5), "5h");
        assert_eq!(human_duration(86400 * 3), "3d");
    }

    #[test]
    fn timestamps_are_second_precision_utc() {
        let s = now_rfc3339();
        assert!(s.ends_with('Z') && s.len() == 20, "{s}");
        assert!(parse_time(&s).is_some());
    }
}

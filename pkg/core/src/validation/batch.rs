//! batch/v1 Job and CronJob validation, with a robfig/cron-compatible schedule check.

use super::meta::{go_label_selector, go_string_map, validate_label_selector};
use super::pod::validate_template;
use super::{FieldError, child, immutable, index, non_negative, one_of, s};
use crate::selectors::LabelSelector;
use serde_json::{Value, json};

const RESTART_DETAIL: &str = "valid values: \"OnFailure\", \"Never\"";

/// Job spec rules shared by Job (`spec`) and CronJob (`spec.jobTemplate.spec`).
fn validate_job_spec(
    errs: &mut Vec<FieldError>,
    spec: &Value,
    path: &str,
    selector_required: bool,
) {
    for f in [
        "parallelism",
        "completions",
        "activeDeadlineSeconds",
        "backoffLimit",
        "ttlSecondsAfterFinished",
    ] {
        non_negative(errs, spec.get(f), &format!("{path}.{f}"));
    }
    one_of(
        errs,
        spec.get("completionMode"),
        &format!("{path}.completionMode"),
        &["NonIndexed", "Indexed"],
    );
    if s(spec, "completionMode") == "Indexed" && spec.get("completions").is_none_or(Value::is_null)
    {
        errs.push(FieldError::required(
            &format!("{path}.completions"),
            "when completion mode is Indexed",
        ));
    }
    one_of(
        errs,
        spec.get("podReplacementPolicy"),
        &format!("{path}.podReplacementPolicy"),
        &["Failed", "TerminatingOrFailed"],
    );
    let tpath = format!("{path}.template");
    match spec.get("selector").filter(|v| v.is_object()) {
        None if selector_required => {
            errs.push(FieldError::required(&format!("{path}.selector"), ""))
        }
        None => {}
        Some(sel) => {
            let before = errs.len();
            validate_label_selector(errs, Some(sel), &format!("{path}.selector"));
            if errs.len() == before {
                let labels = spec
                    .pointer("/template/metadata/labels")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default();
                let ok = LabelSelector::from_object(sel)
                    .is_ok_and(|s| s.matches_object(&json!({"metadata": {"labels": labels}})));
                if !ok {
                    errs.push(FieldError::invalid_raw(
                        &format!("{tpath}.metadata.labels"),
                        &go_string_map(&labels),
                        "`selector` does not match template `labels`",
                    ));
                }
            }
        }
    }
    validate_template(errs, spec.get("template"), &tpath, &[]);
    validate_failure_handling(errs, spec, path);
    validate_success_policy(errs, spec, path);
    let rp = spec
        .pointer("/template/spec/restartPolicy")
        .and_then(Value::as_str)
        .unwrap_or("");
    if rp != "OnFailure" && rp != "Never" && spec.get("template").is_some() {
        errs.push(FieldError::required(
            &format!("{tpath}.spec.restartPolicy"),
            RESTART_DETAIL,
        ));
    }
}

/// Upstream's limits on `successPolicy`.
const MAX_SUCCESS_RULES: usize = 20;
const MAX_SUCCEEDED_INDEXES_BYTES: usize = 64 * 1024;

/// `successPolicy`: Indexed Jobs only, 1–20 rules each naming succeededIndexes (a valid
/// interval list below `completions`) and/or a succeededCount that fits, upstream's messages.
fn validate_success_policy(errs: &mut Vec<FieldError>, spec: &Value, path: &str) {
    let Some(policy) = spec.get("successPolicy").filter(|v| !v.is_null()) else {
        return;
    };
    let ppath = child(path, "successPolicy");
    if s(spec, "completionMode") != "Indexed" {
        errs.push(FieldError::invalid(
            &ppath,
            policy,
            "requires indexed completion mode",
        ));
        return;
    }
    let rules = policy
        .get("rules")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let rpath = child(&ppath, "rules");
    if rules.is_empty() {
        errs.push(FieldError::required(
            &rpath,
            "at least one rules must be specified when the successPolicy is specified",
        ));
    }
    if rules.len() > MAX_SUCCESS_RULES {
        errs.push(FieldError::too_many(&rpath, rules.len(), MAX_SUCCESS_RULES));
    }
    let completions = spec.get("completions").and_then(Value::as_i64).unwrap_or(0);
    for (i, rule) in rules.iter().enumerate() {
        let rule_path = index(&rpath, i);
        let indexes = rule.get("succeededIndexes").and_then(Value::as_str);
        let count = rule.get("succeededCount").filter(|v| !v.is_null());
        if indexes.is_none() && count.is_none() {
            errs.push(FieldError::required(
                &rule_path,
                "at least one of succeededCount or succeededIndexes must be specified",
            ));
        }
        let mut total = 0;
        if let Some(ix) = indexes {
            let ipath = child(&rule_path, "succeededIndexes");
            if ix.len() > MAX_SUCCEEDED_INDEXES_BYTES {
                errs.push(FieldError::too_long(&ipath, MAX_SUCCEEDED_INDEXES_BYTES));
            }
            match count_indexes(ix, completions) {
                Ok(n) => total = n,
                Err(e) => errs.push(FieldError::invalid_str(
                    &ipath,
                    ix,
                    &format!("error parsing succeededIndexes: {e}"),
                )),
            }
        }
        if let Some(c) = count {
            let cpath = child(&rule_path, "succeededCount");
            non_negative(errs, Some(c), &cpath);
            let n = c.as_i64().unwrap_or(0);
            if n > completions {
                errs.push(FieldError::invalid(
                    &cpath,
                    c,
                    &format!(
                        "must be less than or equal to {completions} (the number of specified completions)"
                    ),
                ));
            }
            if indexes.is_some() && n > total {
                errs.push(FieldError::invalid(
                    &cpath,
                    c,
                    &format!(
                        "must be less than or equal to {total} (the number of indexes in the specified succeededIndexes field)"
                    ),
                ));
            }
        }
    }
}

/// How many indexes an interval list such as `0,2-4` names; upstream's format errors for
/// parts that are malformed, not increasing, or not below `completions`.
fn count_indexes(list: &str, completions: i64) -> Result<i64, String> {
    if list.is_empty() {
        return Ok(0);
    }
    let number = |p: &str| {
        p.parse::<i64>()
            .map_err(|_| format!("cannot convert string to integer for index: {p:?}"))
            .and_then(|n| {
                if n >= completions {
                    Err(format!("too large index: {p:?}"))
                } else {
                    Ok(n)
                }
            })
    };
    let mut last: Option<i64> = None;
    let mut total = 0;
    for interval in list.split(',') {
        let parts: Vec<&str> = interval.split('-').collect();
        if parts.len() > 2 {
            return Err(format!(
                "the fragment {interval:?} violates the requirement that an index interval can have at most two parts separated by '-'"
            ));
        }
        let x = number(parts[0])?;
        let y = match parts.get(1) {
            Some(p) => {
                let y = number(p)?;
                if x >= y {
                    return Err(format!("non-increasing order, previous: {x}, current: {y}"));
                }
                y
            }
            None => x,
        };
        if let Some(l) = last.filter(|l| *l >= x) {
            return Err(format!("non-increasing order, previous: {l}, current: {x}"));
        }
        total += y - x + 1;
        last = Some(y);
    }
    Ok(total)
}

/// Upstream's limits on `podFailurePolicy`.
const MAX_POLICY_RULES: usize = 20;
const MAX_EXIT_CODES: usize = 255;
const MAX_POD_CONDITIONS: usize = 20;

/// `podFailurePolicy`, `backoffLimitPerIndex`/`maxFailedIndexes` and what they require of
/// the rest of the spec, with upstream's messages.
fn validate_failure_handling(errs: &mut Vec<FieldError>, spec: &Value, path: &str) {
    let indexed = s(spec, "completionMode") == "Indexed";
    let per_index = spec.get("backoffLimitPerIndex").filter(|v| !v.is_null());
    non_negative(errs, per_index, &format!("{path}.backoffLimitPerIndex"));
    if let Some(v) = per_index
        && !indexed
    {
        errs.push(FieldError::invalid(
            &format!("{path}.backoffLimitPerIndex"),
            v,
            "requires indexed completion mode",
        ));
    }
    if let Some(m) = spec.get("maxFailedIndexes").filter(|v| !v.is_null()) {
        non_negative(errs, Some(m), &format!("{path}.maxFailedIndexes"));
        if per_index.is_none() {
            errs.push(FieldError::required(
                &format!("{path}.backoffLimitPerIndex"),
                "when maxFailedIndexes is specified",
            ));
        }
        if let (Some(max), Some(c)) = (m.as_i64(), spec.get("completions").and_then(Value::as_i64))
            && max > c
        {
            errs.push(FieldError::invalid(
                &format!("{path}.maxFailedIndexes"),
                m,
                "must be less than or equal to completions",
            ));
        }
    }
    let Some(policy) = spec.get("podFailurePolicy").filter(|v| !v.is_null()) else {
        return;
    };
    let rp = spec
        .pointer("/template/spec/restartPolicy")
        .and_then(Value::as_str)
        .unwrap_or("");
    if rp != "Never" {
        errs.push(FieldError::invalid_str(
            &format!("{path}.template.spec.restartPolicy"),
            rp,
            "only \"Never\" is supported when podFailurePolicy is specified",
        ));
    }
    if let Some(v) = spec
        .get("podReplacementPolicy")
        .filter(|v| v.as_str().is_some_and(|p| p != "Failed"))
    {
        errs.push(FieldError::not_supported(
            &format!("{path}.podReplacementPolicy"),
            v,
            &["Failed"],
        ));
    }
    let containers: Vec<&str> = ["containers", "initContainers"]
        .iter()
        .filter_map(|k| spec.pointer(&format!("/template/spec/{k}")))
        .filter_map(Value::as_array)
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    let rules_path = format!("{path}.podFailurePolicy.rules");
    let rules = policy
        .get("rules")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if rules.len() > MAX_POLICY_RULES {
        errs.push(FieldError::too_many(
            &rules_path,
            rules.len(),
            MAX_POLICY_RULES,
        ));
    }
    for (i, rule) in rules.iter().enumerate() {
        let rule_path = format!("{rules_path}[{i}]");
        let action_path = format!("{rule_path}.action");
        match s(rule, "action") {
            "" => errs.push(FieldError::required(
                &action_path,
                "valid values: [\"Count\" \"FailIndex\" \"FailJob\" \"Ignore\"]",
            )),
            "FailIndex" if per_index.is_none() => errs.push(FieldError::invalid_str(
                &action_path,
                "FailIndex",
                "requires the backoffLimitPerIndex to be set",
            )),
            "FailIndex" | "FailJob" | "Ignore" | "Count" => {}
            other => errs.push(FieldError::not_supported(
                &action_path,
                &json!(other),
                &["Count", "FailIndex", "FailJob", "Ignore"],
            )),
        }
        let exit_codes = rule.get("onExitCodes").filter(|v| !v.is_null());
        let conditions = rule
            .get("onPodConditions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let both = exit_codes.is_some() && !conditions.is_empty();
        let neither = exit_codes.is_none() && conditions.is_empty();
        if both || neither {
            let detail = if both {
                "specifying both OnExitCodes and OnPodConditions is not supported"
            } else {
                "specifying one of OnExitCodes and OnPodConditions is required"
            };
            errs.push(FieldError::new(
                "FieldValueInvalid",
                &rule_path,
                format!("Invalid value: {detail}"),
            ));
        }
        if let Some(req) = exit_codes {
            validate_on_exit_codes(errs, req, &format!("{rule_path}.onExitCodes"), &containers);
        }
        let cpath = format!("{rule_path}.onPodConditions");
        if conditions.len() > MAX_POD_CONDITIONS {
            errs.push(FieldError::too_many(
                &cpath,
                conditions.len(),
                MAX_POD_CONDITIONS,
            ));
        }
        for (j, pattern) in conditions.iter().enumerate() {
            let ppath = format!("{cpath}[{j}]");
            if s(pattern, "type").is_empty() {
                errs.push(FieldError::required(&format!("{ppath}.type"), ""));
            }
            one_of(
                errs,
                pattern.get("status"),
                &format!("{ppath}.status"),
                &["False", "True", "Unknown"],
            );
        }
    }
}

fn validate_on_exit_codes(
    errs: &mut Vec<FieldError>,
    req: &Value,
    path: &str,
    containers: &[&str],
) {
    if let Some(name) = req.get("containerName").and_then(Value::as_str)
        && !containers.contains(&name)
    {
        errs.push(FieldError::invalid_str(
            &format!("{path}.containerName"),
            name,
            "must be one of the container or initContainer names in the pod template",
        ));
    }
    let op = s(req, "operator");
    if op != "In" && op != "NotIn" {
        errs.push(FieldError::not_supported(
            &format!("{path}.operator"),
            &json!(op),
            &["In", "NotIn"],
        ));
    }
    let vpath = format!("{path}.values");
    let values: Vec<i64> = req
        .get("values")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_i64)
        .collect();
    if values.is_empty() {
        errs.push(FieldError::invalid_raw(
            &vpath,
            "[]int32(nil)",
            "at least one value is required",
        ));
    }
    if values.len() > MAX_EXIT_CODES {
        errs.push(FieldError::too_many(&vpath, values.len(), MAX_EXIT_CODES));
    }
    for (j, v) in values.iter().enumerate() {
        let at = format!("{vpath}[{j}]");
        if values[..j].contains(v) {
            errs.push(FieldError::duplicate(&at, &json!(v)));
        }
        if op == "In" && *v == 0 {
            errs.push(FieldError::invalid(
                &at,
                &json!(v),
                "must not be 0 for the In operator",
            ));
        }
        if j > 0 && values[j - 1] > *v {
            errs.push(FieldError::invalid(&at, &json!(v), "must be ordered"));
        }
    }
}

pub(crate) fn validate_job(errs: &mut Vec<FieldError>, obj: &Value, old: Option<&Value>) {
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    validate_job_spec(errs, spec, "spec", true);
    let manual = spec.get("manualSelector").and_then(Value::as_bool) == Some(true);
    let uid = crate::meta::meta_str(obj, "uid").unwrap_or("");
    if old.is_none()
        && !manual
        && !uid.is_empty()
        && let Some(sel) = spec.get("selector").filter(|v| v.is_object())
        && sel
            .pointer("/matchLabels/batch.kubernetes.io~1controller-uid")
            .and_then(Value::as_str)
            != Some(uid)
    {
        errs.push(FieldError::invalid_raw(
            "spec.selector",
            &go_label_selector(Some(sel)),
            "`selector` not auto-generated",
        ));
    }
    let Some(old_spec) = old.and_then(|o| o.get("spec")) else {
        return;
    };
    if spec.get("selector") != old_spec.get("selector") {
        errs.push(FieldError::invalid_raw(
            "spec.selector",
            &go_label_selector(spec.get("selector")),
            "field is immutable",
        ));
    }
    immutable(
        errs,
        spec.get("completionMode"),
        old_spec.get("completionMode"),
        "spec.completionMode",
    );
    for f in [
        "podFailurePolicy",
        "backoffLimitPerIndex",
        "managedBy",
        "successPolicy",
    ] {
        immutable(errs, spec.get(f), old_spec.get(f), &format!("spec.{f}"));
    }
    let indexed = s(spec, "completionMode") == "Indexed";
    if !indexed {
        immutable(
            errs,
            spec.get("completions"),
            old_spec.get("completions"),
            "spec.completions",
        );
    }
    // A suspended Job that never started may change its scheduling directives.
    let never_started = old
        .and_then(|o| o.pointer("/status/startTime"))
        .is_none_or(Value::is_null);
    let mutable = old_spec.get("suspend").and_then(Value::as_bool) == Some(true) && never_started;
    let strip = |t: Option<&Value>| {
        let mut t = t.cloned().unwrap_or(Value::Null);
        if mutable {
            if let Some(m) = t.get_mut("metadata").and_then(Value::as_object_mut) {
                m.remove("labels");
                m.remove("annotations");
            }
            if let Some(m) = t.get_mut("spec").and_then(Value::as_object_mut) {
                for f in ["nodeSelector", "tolerations", "schedulingGates"] {
                    m.remove(f);
                }
            }
        }
        t
    };
    if strip(spec.get("template")) != strip(old_spec.get("template")) {
        let shown = spec
            .get("template")
            .map(Value::to_string)
            .unwrap_or_default();
        errs.push(FieldError::invalid_raw(
            "spec.template",
            &shown,
            "field is immutable",
        ));
    }
}

pub(crate) fn validate_cron_job(errs: &mut Vec<FieldError>, obj: &Value, old: Option<&Value>) {
    let name = crate::meta::name(obj).unwrap_or("");
    if name.len() > 52 {
        errs.push(FieldError::invalid_str(
            "metadata.name",
            name,
            "must be no more than 52 characters",
        ));
    }
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    let schedule = s(spec, "schedule");
    let time_zone = spec.get("timeZone").and_then(Value::as_str);
    // An object that already had TZ in its schedule may keep it (upstream's AllowTZInSchedule).
    let allow_tz = old
        .and_then(|o| o.pointer("/spec/schedule"))
        .and_then(Value::as_str)
        .is_some_and(|s| s.contains("TZ"));
    if schedule.is_empty() {
        errs.push(FieldError::required("spec.schedule", ""));
    } else {
        if let Err(e) = parse_schedule(schedule) {
            errs.push(FieldError::invalid_str("spec.schedule", schedule, &e));
        }
        if schedule.contains("TZ") {
            if !allow_tz {
                errs.push(FieldError::invalid_str(
                    "spec.schedule",
                    schedule,
                    "cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
                ));
            } else if time_zone.is_some() {
                errs.push(FieldError::invalid_str(
                    "spec.schedule",
                    schedule,
                    "cannot use both timeZone field and TZ or CRON_TZ in schedule",
                ));
            }
        }
    }
    if let Some(tz) = time_zone {
        validate_time_zone(errs, tz);
    }
    one_of(
        errs,
        spec.get("concurrencyPolicy"),
        "spec.concurrencyPolicy",
        &["Allow", "Forbid", "Replace"],
    );
    for f in [
        "startingDeadlineSeconds",
        "successfulJobsHistoryLimit",
        "failedJobsHistoryLimit",
    ] {
        non_negative(errs, spec.get(f), &format!("spec.{f}"));
    }
    match spec.pointer("/jobTemplate/spec") {
        Some(js) => validate_job_spec(errs, js, "spec.jobTemplate.spec", false),
        None => errs.push(FieldError::required("spec.jobTemplate.spec.template", "")),
    }
}

const FIELDS: [(&str, u32, u32); 5] = [
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("dom", 1, 31),
    ("month", 1, 12),
    ("dow", 0, 6),
];
const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// upstream's `validateTimeZone`: an IANA name that loads (`Local` is refused), each part of
/// at most 14 characters out of `[A-Za-z.-_0-9+]`.
fn validate_time_zone(errs: &mut Vec<FieldError>, tz: &str) {
    if tz.is_empty() {
        errs.push(FieldError::invalid_str(
            "spec.timeZone",
            tz,
            "timeZone must be nil or non-empty string",
        ));
        return;
    }
    let bad_part = |p: &str| {
        p == "."
            || p == ".."
            || p.starts_with('-')
            || p.is_empty()
            || p.len() > 14
            || !p
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-_+".contains(&b))
    };
    if tz.split('/').any(bad_part) {
        errs.push(FieldError::invalid_str(
            "spec.timeZone",
            tz,
            &format!("unknown time zone {tz}"),
        ));
        return;
    }
    if tz.eq_ignore_ascii_case("Local") {
        errs.push(FieldError::invalid_str(
            "spec.timeZone",
            tz,
            "timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones",
        ));
    } else if jiff::tz::TimeZone::get(tz).is_err() {
        errs.push(FieldError::invalid_str(
            "spec.timeZone",
            tz,
            &format!("unknown time zone {tz}"),
        ));
    }
}

/// Splits robfig/cron's `TZ=<zone> ` or `CRON_TZ=<zone> ` prefix off a schedule.
pub fn split_tz_prefix(spec: &str) -> Option<(&str, &str)> {
    let rest = spec
        .strip_prefix("TZ=")
        .or_else(|| spec.strip_prefix("CRON_TZ="))?;
    let (zone, schedule) = rest.split_once(' ').unwrap_or((rest, ""));
    Some((zone, schedule.trim()))
}

/// Checks a cron schedule as upstream's `cron.ParseStandard`: five fields or a descriptor,
/// optionally behind a `TZ=`/`CRON_TZ=` prefix. Errors use robfig/cron's wording.
pub fn parse_schedule(spec: &str) -> Result<(), String> {
    let mut spec = spec.trim();
    if spec.is_empty() {
        return Err("empty spec string".into());
    }
    if let Some((zone, rest)) = split_tz_prefix(spec) {
        if jiff::tz::TimeZone::get(zone).is_err() {
            return Err(format!(
                "provided bad location {zone}: unknown time zone {zone}"
            ));
        }
        spec = rest;
    }
    if let Some(d) = spec.strip_prefix('@') {
        if let Some(dur) = d.strip_prefix("every ") {
            return parse_go_duration(dur.trim()).map(|_| ()).ok_or_else(|| {
                format!(
                    "failed to parse duration {spec}: time: invalid duration {}",
                    super::quote(dur.trim())
                )
            });
        }
        return match d {
            "yearly" | "annually" | "monthly" | "weekly" | "daily" | "midnight" | "hourly" => {
                Ok(())
            }
            _ => Err(format!("unrecognized descriptor: {spec}")),
        };
    }
    let fields: Vec<&str> = spec.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!(
            "expected exactly 5 fields, found {}: [{}]",
            fields.len(),
            fields.join(" ")
        ));
    }
    for (i, f) in fields.iter().enumerate() {
        let (_, min, max) = FIELDS[i];
        let names: &[&str] = match i {
            3 => &MONTHS,
            4 => &DAYS,
            _ => &[],
        };
        for part in f.split(',') {
            parse_range(part, min, max, names)?;
        }
    }
    Ok(())
}

fn parse_value(s: &str, names: &[&str], offset: u32) -> Result<u32, String> {
    if let Some(pos) = names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
        return Ok(pos as u32 + offset);
    }
    s.parse::<u32>().map_err(|_| {
        format!(
            "failed to parse int from {s}: strconv.Atoi: parsing {}: invalid syntax",
            super::quote(s)
        )
    })
}

fn parse_range(expr: &str, min: u32, max: u32, names: &[&str]) -> Result<(), String> {
    let offset = if names.len() == 12 { 1 } else { 0 };
    let mut slash = expr.split('/');
    let range = slash.next().unwrap_or("");
    let step = slash.next();
    if slash.next().is_some() {
        return Err(format!("too many slashes: {expr}"));
    }
    let bounds: Vec<&str> = range.split('-').collect();
    let (start, end) = match bounds.as_slice() {
        ["*"] | ["?"] => (min, max),
        [one] => {
            let v = parse_value(one, names, offset)?;
            (v, if step.is_some() { max } else { v })
        }
        [a, b] => (
            parse_value(a, names, offset)?,
            parse_value(b, names, offset)?,
        ),
        _ => return Err(format!("too many hyphens: {expr}")),
    };
    if let Some(st) = step {
        let n = st.parse::<u32>().map_err(|_| {
            format!(
                "failed to parse int from {st}: strconv.Atoi: parsing {}: invalid syntax",
                super::quote(st)
            )
        })?;
        if n == 0 {
            return Err(format!("step of range should be a positive number: {expr}"));
        }
    }
    if start < min {
        return Err(format!(
            "beginning of range ({start}) below minimum ({min}): {expr}"
        ));
    }
    if end > max {
        return Err(format!(
            "end of range ({end}) above maximum ({max}): {expr}"
        ));
    }
    if start > end {
        return Err(format!(
            "beginning of range ({start}) beyond end of range ({end}): {expr}"
        ));
    }
    Ok(())
}

/// A Go duration like `1h30m`, `90s`, `1.5h` (`time.ParseDuration` without signs).
pub fn parse_go_duration(s: &str) -> Option<std::time::Duration> {
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    let mut nanos = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .bytes()
            .take_while(|c| c.is_ascii_digit() || *c == b'.')
            .count();
        let number: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let (unit, scale) = [
            ("ns", 1e0),
            ("us", 1e3),
            ("µs", 1e3),
            ("ms", 1e6),
            ("s", 1e9),
            ("m", 60e9),
            ("h", 3600e9),
        ]
        .into_iter()
        .filter(|(u, _)| rest.starts_with(u))
        .max_by_key(|(u, _)| u.len())?;
        rest = &rest[unit.len()..];
        nanos += number * scale;
    }
    Some(std::time::Duration::from_nanos(nanos as u64))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::parse_schedule;
    use crate::validation::{FieldError, validate};
    use serde_json::{Value, json};

    fn job(spec: Value) -> Value {
        json!({"metadata": {"name": "pi", "namespace": "default", "uid": "u1"}, "spec": spec})
    }

    fn good_job_spec() -> Value {
        json!({"selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "u1"}},
            "template": {"metadata": {"labels": {"batch.kubernetes.io/controller-uid": "u1"}},
                "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}]}}})
    }

    fn fields(e: &[FieldError]) -> Vec<&str> {
        e.iter().map(|e| e.field.as_str()).collect()
    }

    #[test]
    fn pod_failure_policies_are_checked_with_upstreams_messages() {
        let mut s = good_job_spec();
        s["podFailurePolicy"] = json!({"rules": [
            {"action": "FailJob", "onExitCodes": {"containerName": "c", "operator": "In", "values": [42]}},
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        ]});
        assert!(validate("batch", "v1", "Job", &job(s.clone()), None).is_empty());

        let mut bad = s.clone();
        bad["template"]["spec"]["restartPolicy"] = json!("OnFailure");
        bad["podReplacementPolicy"] = json!("TerminatingOrFailed");
        bad["podFailurePolicy"]["rules"][0]["onExitCodes"] =
            json!({"containerName": "x", "operator": "In", "values": [0, 3, 1, 3]});
        bad["podFailurePolicy"]["rules"][1]["action"] = json!("FailIndex");
        bad["podFailurePolicy"]["rules"]
            .as_array_mut()
            .unwrap()
            .push(json!({"action": "Count"}));
        let e = validate("batch", "v1", "Job", &job(bad), None);
        let msgs: Vec<String> = e
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect();
        for want in [
            "spec.template.spec.restartPolicy: Invalid value: \"OnFailure\": only \"Never\" is supported when podFailurePolicy is specified",
            "spec.podReplacementPolicy: Unsupported value: \"TerminatingOrFailed\": supported values: \"Failed\"",
            "spec.podFailurePolicy.rules[0].onExitCodes.containerName: Invalid value: \"x\": must be one of the container or initContainer names in the pod template",
            "spec.podFailurePolicy.rules[0].onExitCodes.values[0]: Invalid value: 0: must not be 0 for the In operator",
            "spec.podFailurePolicy.rules[0].onExitCodes.values[2]: Invalid value: 1: must be ordered",
            "spec.podFailurePolicy.rules[0].onExitCodes.values[3]: Duplicate value: 3",
            "spec.podFailurePolicy.rules[1].action: Invalid value: \"FailIndex\": requires the backoffLimitPerIndex to be set",
            "spec.podFailurePolicy.rules[2]: Invalid value: specifying one of OnExitCodes and OnPodConditions is required",
        ] {
            assert!(
                msgs.iter().any(|m| m == want),
                "missing {want:?} in {msgs:#?}"
            );
        }

        let mut many = s.clone();
        many["podFailurePolicy"]["rules"] =
            json!(vec![s["podFailurePolicy"]["rules"][1].clone(); 21]);
        let e = validate("batch", "v1", "Job", &job(many), None);
        assert_eq!(e[0].message, "Too many: 21: must have at most 20 items");
    }

    #[test]
    fn per_index_limits_need_indexed_jobs() {
        let mut s = good_job_spec();
        s["backoffLimitPerIndex"] = json!(1);
        s["maxFailedIndexes"] = json!(5);
        s["completions"] = json!(3);
        let e = validate("batch", "v1", "Job", &job(s.clone()), None);
        assert_eq!(
            fields(&e),
            ["spec.backoffLimitPerIndex", "spec.maxFailedIndexes"],
            "{e:?}"
        );
        assert_eq!(
            e[0].message,
            "Invalid value: 1: requires indexed completion mode"
        );
        s["completionMode"] = json!("Indexed");
        s["maxFailedIndexes"] = json!(2);
        assert!(validate("batch", "v1", "Job", &job(s), None).is_empty());
    }

    #[test]
    fn success_policies_need_indexed_jobs_and_fitting_rules() {
        let mut s = good_job_spec();
        s["completions"] = json!(5);
        s["successPolicy"] = json!({"rules": [{"succeededIndexes": "0,2-4", "succeededCount": 3}]});
        let e = validate("batch", "v1", "Job", &job(s.clone()), None);
        assert_eq!(fields(&e), ["spec.successPolicy"], "{e:?}");
        assert!(e[0].message.ends_with("requires indexed completion mode"));
        s["completionMode"] = json!("Indexed");
        let good = job(s.clone());
        assert!(validate("batch", "v1", "Job", &good, None).is_empty());

        let msgs = |spec: &Value| -> Vec<String> {
            validate("batch", "v1", "Job", &job(spec.clone()), None)
                .iter()
                .map(|e| format!("{}: {}", e.field, e.message))
                .collect()
        };
        let mut bad = s.clone();
        bad["successPolicy"]["rules"] = json!([
            {},
            {"succeededIndexes": "1-1"},
            {"succeededIndexes": "3,1"},
            {"succeededIndexes": "0-9"},
            {"succeededIndexes": "x"},
            {"succeededIndexes": "1-2-3"},
            {"succeededIndexes": "1-2", "succeededCount": 3},
            {"succeededCount": 6},
        ]);
        let got = msgs(&bad);
        for want in [
            "spec.successPolicy.rules[0]: Required value: at least one of succeededCount or succeededIndexes must be specified",
            "spec.successPolicy.rules[1].succeededIndexes: Invalid value: \"1-1\": error parsing succeededIndexes: non-increasing order, previous: 1, current: 1",
            "spec.successPolicy.rules[2].succeededIndexes: Invalid value: \"3,1\": error parsing succeededIndexes: non-increasing order, previous: 3, current: 1",
            "spec.successPolicy.rules[3].succeededIndexes: Invalid value: \"0-9\": error parsing succeededIndexes: too large index: \"9\"",
            "spec.successPolicy.rules[4].succeededIndexes: Invalid value: \"x\": error parsing succeededIndexes: cannot convert string to integer for index: \"x\"",
            "spec.successPolicy.rules[5].succeededIndexes: Invalid value: \"1-2-3\": error parsing succeededIndexes: the fragment \"1-2-3\" violates the requirement that an index interval can have at most two parts separated by '-'",
            "spec.successPolicy.rules[6].succeededCount: Invalid value: 3: must be less than or equal to 2 (the number of indexes in the specified succeededIndexes field)",
            "spec.successPolicy.rules[7].succeededCount: Invalid value: 6: must be less than or equal to 5 (the number of specified completions)",
        ] {
            assert!(
                got.iter().any(|m| m == want),
                "missing {want:?} in {got:#?}"
            );
        }
        assert_eq!(got.len(), 8, "{got:#?}");
        bad["successPolicy"]["rules"] = json!([]);
        assert_eq!(
            msgs(&bad),
            [
                "spec.successPolicy.rules: Required value: at least one rules must be specified when the successPolicy is specified"
            ]
        );
        bad["successPolicy"]["rules"] = json!(vec![json!({"succeededCount": 1}); 21]);
        assert_eq!(
            msgs(&bad),
            ["spec.successPolicy.rules: Too many: 21: must have at most 20 items"]
        );

        // Immutable once created, like podFailurePolicy.
        let mut changed = good.clone();
        changed["spec"]["successPolicy"]["rules"][0]["succeededCount"] = json!(2);
        let e = validate("batch", "v1", "Job", &changed, Some(&good));
        assert_eq!(fields(&e), ["spec.successPolicy"], "{e:?}");
    }

    #[test]
    fn schedules_accept_five_fields_and_descriptors() {
        for ok in [
            "* * * * *",
            "*/5 0-23 1,15 jan-dec mon-fri",
            "0 0 * * 0",
            "@hourly",
            "@every 1h30m",
            "5/10 * * * ?",
        ] {
            assert!(parse_schedule(ok).is_ok(), "{ok}");
        }
        assert_eq!(
            parse_schedule("* * *").unwrap_err(),
            "expected exactly 3 fields, found 3: [* * *]".replace("exactly 3", "exactly 5")
        );
        assert_eq!(
            parse_schedule("60 * * * *").unwrap_err(),
            "end of range (60) above maximum (59): 60"
        );
        assert_eq!(
            parse_schedule("@sometimes").unwrap_err(),
            "unrecognized descriptor: @sometimes"
        );
        assert!(parse_schedule("* * * * 7").is_err());
        assert!(parse_schedule("*/0 * * * *").is_err());
    }

    #[test]
    fn a_generated_job_is_valid() {
        let e = validate("batch", "v1", "Job", &job(good_job_spec()), None);
        assert!(e.is_empty(), "{e:?}");
    }

    #[test]
    fn job_restart_policy_must_be_never_or_on_failure() {
        let mut s = good_job_spec();
        s["template"]["spec"]["restartPolicy"] = json!("Always");
        let e = validate("batch", "v1", "Job", &job(s), None);
        assert_eq!(fields(&e), vec!["spec.template.spec.restartPolicy"]);
        assert_eq!(
            e[0].message,
            "Required value: valid values: \"OnFailure\", \"Never\""
        );
    }

    #[test]
    fn job_selector_and_template_are_immutable_unless_suspended() {
        let old = job(good_job_spec());
        let mut s = good_job_spec();
        s["template"]["spec"]["nodeSelector"] = json!({"a": "b"});
        let e = validate("batch", "v1", "Job", &job(s.clone()), Some(&old));
        assert_eq!(fields(&e), vec!["spec.template"]);
        let mut old_susp = good_job_spec();
        old_susp["suspend"] = json!(true);
        s["suspend"] = json!(true);
        assert!(validate("batch", "v1", "Job", &job(s), Some(&job(old_susp))).is_empty());
        let mut s = good_job_spec();
        s["selector"] = json!({"matchLabels": {"x": "y"}});
        let e = validate("batch", "v1", "Job", &job(s), Some(&old));
        assert!(fields(&e).contains(&"spec.selector"));
    }

    #[test]
    fn indexed_jobs_need_completions() {
        let mut s = good_job_spec();
        s["completionMode"] = json!("Indexed");
        let e = validate("batch", "v1", "Job", &job(s), None);
        assert_eq!(
            e[0].message,
            "Required value: when completion mode is Indexed"
        );
    }

    #[test]
    fn cronjobs_check_schedule_policy_and_template() {
        let cj = json!({"metadata": {"name": "c", "namespace": "d"}, "spec": {"schedule": "bad", "concurrencyPolicy": "Sometimes",
            "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "Always", "containers": [{"name": "c", "image": "x"}]}}}}}});
        let e = validate("batch", "v1", "CronJob", &cj, None);
        assert_eq!(
            fields(&e),
            vec![
                "spec.schedule",
                "spec.concurrencyPolicy",
                "spec.jobTemplate.spec.template.spec.restartPolicy"
            ]
        );
        assert_eq!(
            e[0].message,
            "Invalid value: \"bad\": expected exactly 5 fields, found 1: [bad]"
        );
    }

    #[test]
    fn cronjob_names_are_limited_to_52_characters() {
        let cj = json!({"metadata": {"name": "a".repeat(53)}, "spec": {"schedule": "@daily",
            "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}]}}}}}});
        let e = validate("batch", "v1", "CronJob", &cj, None);
        assert_eq!(fields(&e), vec!["metadata.name"]);
    }

    fn cron_job(schedule: &str, tz: Option<&str>) -> Value {
        let mut cj = json!({"metadata": {"name": "c", "namespace": "d"}, "spec": {"schedule": schedule,
            "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}]}}}}}});
        if let Some(tz) = tz {
            cj["spec"]["timeZone"] = json!(tz);
        }
        cj
    }

    #[test]
    fn cronjob_time_zones_must_be_known_iana_names() {
        for ok in ["Europe/Berlin", "America/New_York", "UTC", "Etc/GMT+5"] {
            let e = validate(
                "batch",
                "v1",
                "CronJob",
                &cron_job("@daily", Some(ok)),
                None,
            );
            assert!(e.is_empty(), "{ok}: {e:?}");
        }
        for (bad, msg) in [
            ("", "timeZone must be nil or non-empty string"),
            ("Mars/Olympus", "unknown time zone Mars/Olympus"),
            ("../etc/passwd", "unknown time zone ../etc/passwd"),
            (
                "America/Argentina_Buenos_Aires",
                "unknown time zone America/Argentina_Buenos_Aires",
            ),
            (
                "local",
                "timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones",
            ),
        ] {
            let e = validate(
                "batch",
                "v1",
                "CronJob",
                &cron_job("@daily", Some(bad)),
                None,
            );
            assert_eq!(fields(&e), vec!["spec.timeZone"], "{bad}");
            assert!(e[0].message.ends_with(msg), "{bad}: {}", e[0].message);
        }
    }

    #[test]
    fn tz_in_a_schedule_is_refused_unless_the_object_already_had_it() {
        let sched = "CRON_TZ=Europe/Berlin 0 3 * * *";
        let e = validate("batch", "v1", "CronJob", &cron_job(sched, None), None);
        assert_eq!(fields(&e), vec!["spec.schedule"]);
        assert!(
            e[0].message.ends_with("use timeZone field instead"),
            "{}",
            e[0].message
        );
        let old = cron_job("TZ=UTC 0 * * * *", None);
        let e = validate("batch", "v1", "CronJob", &cron_job(sched, None), Some(&old));
        assert!(e.is_empty(), "{e:?}");
        let e = validate(
            "batch",
            "v1",
            "CronJob",
            &cron_job(sched, Some("UTC")),
            Some(&old),
        );
        assert!(
            e[0].message
                .ends_with("cannot use both timeZone field and TZ or CRON_TZ in schedule")
        );
        let e = validate(
            "batch",
            "v1",
            "CronJob",
            &cron_job("TZ=Nowhere/Land 0 * * * *", None),
            Some(&old),
        );
        assert_eq!(
            e[0].message,
            "Invalid value: \"TZ=Nowhere/Land 0 * * * *\": provided bad location Nowhere/Land: unknown time zone Nowhere/Land"
        );
    }

    #[test]
    fn go_durations_have_values() {
        use super::parse_go_duration;
        use std::time::Duration;
        assert_eq!(parse_go_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_go_duration("90"), None);
        assert_eq!(parse_go_duration("1d"), None);
    }
}

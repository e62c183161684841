//! Resource quantities (`100m`, `1.5Gi`, `2e3`): parsing into thousandths of the base unit.

/// The value of a Kubernetes quantity in thousandths of its unit (`"250m"` → 250,
/// `"1Ki"` → 1,024,000), rounded up as upstream rounds requests. `None` if malformed.
pub fn parse_milli(s: &str) -> Option<i128> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    if num.is_empty() || num == "+" || num == "-" {
        return None;
    }
    let (neg, digits) = match num.as_bytes()[0] {
        b'-' => (true, &num[1..]),
        b'+' => (false, &num[1..]),
        _ => (false, num),
    };
    let (int_part, frac_part) = digits.split_once('.').unwrap_or((digits, ""));
    if int_part.is_empty() && frac_part.is_empty()
        || !int_part.bytes().all(|b| b.is_ascii_digit())
        || !frac_part.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    // value = mantissa / 10^scale
    let mantissa: i128 = format!("{int_part}{frac_part}").parse().ok()?;
    let scale = frac_part.len() as i32;
    let (mult_num, mult_den, exp10): (i128, i128, i32) = match suffix {
        "" => (1, 1, 0),
        "n" => (1, 1, -9),
        "u" => (1, 1, -6),
        "m" => (1, 1, -3),
        "k" => (1, 1, 3),
        "M" => (1, 1, 6),
        "G" => (1, 1, 9),
        "T" => (1, 1, 12),
        "P" => (1, 1, 15),
        "E" => (1, 1, 18),
        "Ki" => (1 << 10, 1, 0),
        "Mi" => (1 << 20, 1, 0),
        "Gi" => (1 << 30, 1, 0),
        "Ti" => (1 << 40, 1, 0),
        "Pi" => (1 << 50, 1, 0),
        "Ei" => (1 << 60, 1, 0),
        e if e.starts_with(['e', 'E']) => (1, 1, e[1..].parse::<i32>().ok()?),
        _ => return None,
    };
    // milli = mantissa * mult * 10^(exp10 + 3 - scale), rounded up.
    let p = exp10 + 3 - scale;
    let base = mantissa.checked_mul(mult_num)? / mult_den;
    let v = if p >= 0 {
        base.checked_mul(10i128.checked_pow(p as u32)?)?
    } else {
        let d = 10i128.checked_pow((-p) as u32)?;
        (base + d - 1) / d
    };
    Some(if neg { -v } else { v })
}

#[cfg(test)]
mod tests {
    use super::parse_milli;

    #[test]
    fn quantities_parse_into_thousandths() {
        assert_eq!(parse_milli("250m"), Some(250));
        assert_eq!(parse_milli("1"), Some(1000));
        assert_eq!(parse_milli("1.5"), Some(1500));
        assert_eq!(parse_milli("2k"), Some(2_000_000));
        assert_eq!(parse_milli("1Ki"), Some(1_024_000));
        assert_eq!(parse_milli("128Mi"), Some(128 * 1024 * 1024 * 1000));
        assert_eq!(parse_milli("1e3"), Some(1_000_000));
        assert_eq!(parse_milli("100n"), Some(1));
        assert_eq!(parse_milli("0"), Some(0));
        assert_eq!(parse_milli("-1"), Some(-1000));
    }

    #[test]
    fn malformed_quantities_are_refused() {
        for s in ["", "m", "1x", "1.2.3", "Ki", "--1"] {
            assert_eq!(parse_milli(s), None, "{s}");
        }
    }
}

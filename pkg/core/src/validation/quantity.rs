//! Resource quantities (`100m`, `1Gi`, `1e3`, `0.5`) with upstream's canonical form.

use std::cmp::Ordering;

/// Upstream's error text for an unparsable quantity.
pub const QUANTITY_FORMAT_ERROR: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";

/// How a quantity was written; the canonical form keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Power-of-1024 suffixes (Ki, Mi, ...).
    BinarySI,
    /// Power-of-1000 suffixes (n, u, m, k, M, ...), or none.
    DecimalSI,
    /// `e<exp>` notation.
    DecimalExponent,
}

/// A parsed quantity, exact to the nano unit (smaller fractions are rounded up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity {
    /// The value in units of 10^-9.
    pub nanos: i128,
    pub format: Format,
}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Quantity {
    fn cmp(&self, other: &Self) -> Ordering {
        self.nanos.cmp(&other.nanos)
    }
}

const NANO: i128 = 1_000_000_000;

/// Parses a quantity string as upstream's `resource.ParseQuantity`; None if malformed or too
/// large to represent.
pub fn parse_quantity(s: &str) -> Option<Quantity> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut negative = false;
    if let Some(&c) = b.first()
        && (c == b'+' || c == b'-')
    {
        negative = c == b'-';
        i = 1;
    }
    let mut int: i128 = 0;
    let mut digits = 0usize;
    let mut frac = 0i32;
    let mut seen_dot = false;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_digit() {
            int = int.checked_mul(10)?.checked_add(i128::from(c - b'0'))?;
            digits += 1;
            if seen_dot {
                frac += 1;
            }
        } else if c == b'.' && !seen_dot {
            seen_dot = true;
        } else {
            break;
        }
        i += 1;
    }
    if digits == 0 {
        return None;
    }
    let suffix = &s[i..];
    let (format, exp10, bin_mult): (Format, i32, i128) = match suffix {
        "" => (Format::DecimalSI, 0, 1),
        "n" => (Format::DecimalSI, -9, 1),
        "u" => (Format::DecimalSI, -6, 1),
        "m" => (Format::DecimalSI, -3, 1),
        "k" => (Format::DecimalSI, 3, 1),
        "M" => (Format::DecimalSI, 6, 1),
        "G" => (Format::DecimalSI, 9, 1),
        "T" => (Format::DecimalSI, 12, 1),
        "P" => (Format::DecimalSI, 15, 1),
        "E" => (Format::DecimalSI, 18, 1),
        "Ki" => (Format::BinarySI, 0, 1 << 10),
        "Mi" => (Format::BinarySI, 0, 1 << 20),
        "Gi" => (Format::BinarySI, 0, 1 << 30),
        "Ti" => (Format::BinarySI, 0, 1 << 40),
        "Pi" => (Format::BinarySI, 0, 1 << 50),
        "Ei" => (Format::BinarySI, 0, 1 << 60),
        other => {
            let rest = other.strip_prefix(['e', 'E'])?;
            let digits = rest.strip_prefix(['+', '-']).unwrap_or(rest);
            if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) || digits.len() > 4
            {
                return None;
            }
            (Format::DecimalExponent, rest.parse::<i32>().ok()?, 1)
        }
    };
    let numerator = int.checked_mul(bin_mult)?;
    let t = 9 + exp10 - frac;
    let nanos = if t >= 0 {
        numerator.checked_mul(10i128.checked_pow(u32::try_from(t).ok()?)?)?
    } else {
        let div = u32::try_from(-t).ok().and_then(|p| 10i128.checked_pow(p));
        match div {
            Some(d) => (numerator + d - 1) / d,
            None => i128::from(numerator > 0),
        }
    };
    Some(Quantity {
        nanos: if negative { -nanos } else { nanos },
        format,
    })
}

impl Quantity {
    /// Upstream's canonical string (`Quantity.String()`): 1500m, 1Gi, 1536Mi, 1k, 12e6, 0.
    pub fn canonical(&self) -> String {
        if self.nanos == 0 {
            return "0".into();
        }
        let sign = if self.nanos < 0 { "-" } else { "" };
        let abs = self.nanos.unsigned_abs();
        if self.format == Format::BinarySI
            && abs >= 1024 * NANO as u128
            && abs.is_multiple_of(NANO as u128)
        {
            let mut n = abs / NANO as u128;
            let mut k = 0;
            while k < 6 && n.is_multiple_of(1024) {
                n /= 1024;
                k += 1;
            }
            let suffix = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][k];
            return format!("{sign}{n}{suffix}");
        }
        // Largest exponent (multiple of 3, -9..=18) that divides the value exactly.
        let mut n = abs;
        let mut e = -9i32;
        while e < 18 && n.is_multiple_of(1000) {
            n /= 1000;
            e += 3;
        }
        match self.format {
            Format::DecimalExponent => {
                if e == 0 {
                    format!("{sign}{n}")
                } else {
                    format!("{sign}{n}e{e}")
                }
            }
            _ => {
                let suffix = match e {
                    -9 => "n",
                    -6 => "u",
                    -3 => "m",
                    0 => "",
                    3 => "k",
                    6 => "M",
                    9 => "G",
                    12 => "T",
                    15 => "P",
                    _ => "E",
                };
                format!("{sign}{n}{suffix}")
            }
        }
    }

    /// Whether the value is below zero.
    pub fn is_negative(&self) -> bool {
        self.nanos < 0
    }
}

impl std::fmt::Display for Quantity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.canonical())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn canon(s: &str) -> String {
        parse_quantity(s).unwrap().canonical()
    }

    #[test]
    fn quantities_parse_suffixes_and_fractions() {
        assert_eq!(parse_quantity("100m").unwrap().nanos, 100_000_000);
        assert_eq!(parse_quantity("1Gi").unwrap().nanos, (1i128 << 30) * NANO);
        assert_eq!(parse_quantity("1e3").unwrap().nanos, 1000 * NANO);
        assert_eq!(parse_quantity("0.5").unwrap().nanos, NANO / 2);
        assert_eq!(parse_quantity(".5").unwrap().nanos, NANO / 2);
        assert_eq!(parse_quantity("-2k").unwrap().nanos, -2000 * NANO);
    }

    #[test]
    fn malformed_quantities_are_rejected() {
        for bad in ["", "abc", "1x", "1.2.3", "Gi", "1e", "1 Gi", "1Gb"] {
            assert!(parse_quantity(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn canonical_forms_match_upstream() {
        assert_eq!(canon("100m"), "100m");
        assert_eq!(canon("0.5"), "500m");
        assert_eq!(canon("1000m"), "1");
        assert_eq!(canon("1.5"), "1500m");
        assert_eq!(canon("1000"), "1k");
        assert_eq!(canon("1.5k"), "1500");
        assert_eq!(canon("1Gi"), "1Gi");
        assert_eq!(canon("1024Mi"), "1Gi");
        assert_eq!(canon("1.5Gi"), "1536Mi");
        assert_eq!(canon("0.5Ki"), "512");
        assert_eq!(canon("1e3"), "1e3");
        assert_eq!(canon("12e6"), "12e6");
        assert_eq!(canon("0"), "0");
        assert_eq!(canon("0Gi"), "0");
        assert_eq!(canon("-1"), "-1");
        assert_eq!(canon("0.1n"), "1n");
    }

    #[test]
    fn quantities_compare_by_value() {
        assert!(parse_quantity("500m").unwrap() < parse_quantity("1").unwrap());
        assert!(parse_quantity("1Gi").unwrap() > parse_quantity("1G").unwrap());
    }
}

//! Durations written as strings in attributes: `"20ms"`, `"1s"`, `"2m"`.

use syn::LitStr;

/// A duration in nanoseconds, checked at compile time.
pub fn parse(lit: &LitStr) -> syn::Result<u64> {
    let text = lit.value();
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let unit = unit.trim();
    let bad = || {
        let fix = if let Some(whole) = whole(text) {
            format!("durations are whole numbers of a unit, so write \"{whole}\"")
        } else if !text.is_empty() && unit.is_empty() {
            format!(
                "it has no unit; write \"{text}ms\" or \"{text}s\" (units: ns, us, ms, s, m, h)"
            )
        } else {
            "write a whole number and a unit, such as \"250ms\" or \"2s\" (units: ns, us, ms, s, m, h)".to_string()
        };
        syn::Error::new(lit.span(), format!("invalid duration `{text}`: {fix}"))
    };
    let n: u64 = number.parse().map_err(|_| bad())?;
    let scale = scale(unit).ok_or_else(bad)?;
    n.checked_mul(scale)
        .ok_or_else(|| syn::Error::new(lit.span(), format!("duration `{text}` is too long")))
}

fn scale(unit: &str) -> Option<u64> {
    Some(match unit {
        "ns" => 1,
        "us" | "µs" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" | "min" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return None,
    })
}

/// `"1.5s"` written as a whole number of a smaller unit (`"1500ms"`).
fn whole(text: &str) -> Option<String> {
    let split = text.find(|c: char| !c.is_ascii_digit() && c != '.')?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let nanos = number * scale(unit.trim())? as f64;
    // Within a thousandth of a nanosecond: `0.1s` is not exact in binary.
    if !(1.0..u64::MAX as f64).contains(&nanos) || (nanos - nanos.round()).abs() > 1e-3 {
        return None;
    }
    let nanos = nanos.round() as u64;
    ["h", "m", "s", "ms", "us", "ns"].into_iter().find_map(|u| {
        let s = scale(u)?;
        nanos.is_multiple_of(s).then(|| format!("{}{u}", nanos / s))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nanos(s: &str) -> syn::Result<u64> {
        parse(&LitStr::new(s, proc_macro2::Span::call_site()))
    }

    #[test]
    fn units() {
        assert_eq!(nanos("20ms").unwrap(), 20_000_000);
        assert_eq!(nanos("1s").unwrap(), 1_000_000_000);
        assert_eq!(nanos("2m").unwrap(), 120_000_000_000);
        assert_eq!(nanos("5 us").unwrap(), 5_000);
    }

    #[test]
    fn rejects_garbage() {
        assert!(nanos("fast").is_err());
        assert!(nanos("1.5s").is_err());
        assert!(nanos("10").is_err());
        assert!(nanos("99999999999999h").is_err());
    }

    #[test]
    fn suggests_whole_numbers() {
        assert_eq!(whole("1.5s").as_deref(), Some("1500ms"));
        assert_eq!(whole("0.5m").as_deref(), Some("30s"));
        assert_eq!(whole("2.5ms").as_deref(), Some("2500us"));
        assert_eq!(whole("0.1s").as_deref(), Some("100ms"));
        assert_eq!(whole("fast"), None);
        assert_eq!(whole("10"), None);
        let message = nanos("1.5s").unwrap_err().to_string();
        assert!(message.contains("write \"1500ms\""), "{message}");
    }
}

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
        syn::Error::new(
            lit.span(),
            format!(
                "invalid duration `{text}`: write a whole number and a unit, such as \"250ms\" or \"2s\" (units: ns, us, ms, s, m, h)"
            ),
        )
    };
    let n: u64 = number.parse().map_err(|_| bad())?;
    let scale: u64 = match unit {
        "ns" => 1,
        "us" | "µs" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" | "min" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return Err(bad()),
    };
    n.checked_mul(scale)
        .ok_or_else(|| syn::Error::new(lit.span(), format!("duration `{text}` is too long")))
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
}

//! Kubernetes resource quantities (`500m`, `64Mi`, `1.5Gi`, `1e9`) as apimachinery's
//! resource.Quantity reads them: a signed decimal number, then a binary suffix (Ki … Ei),
//! a decimal one (n, u, m, k, M, G, T, P, E) or an exponent (`e3`, `E-2`).

/// A quantity in billionths of its unit: exact for anything a manifest says, ordered by
/// value (`1` = `1000m`), rounded up below a billionth as kube-apiserver rounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Quantity(i128);

const BINARY: [(&str, u32); 6] = [("Ki", 10), ("Mi", 20), ("Gi", 30), ("Ti", 40), ("Pi", 50), ("Ei", 60)];
const DECIMAL: [(&str, i32); 9] =
    [("n", -9), ("u", -6), ("m", -3), ("k", 3), ("M", 6), ("G", 9), ("T", 12), ("P", 15), ("E", 18)];

impl Quantity {
    pub fn parse(text: &str) -> Option<Quantity> {
        let (negative, rest) = match text.as_bytes().first()? {
            b'-' => (true, &text[1..]),
            b'+' => (false, &text[1..]),
            _ => (false, text),
        };
        let number_end = rest.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(rest.len());
        let (number, suffix) = rest.split_at(number_end);
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && fraction.is_empty() || fraction.contains('.') {
            return None;
        }
        let digits = format!("{whole}{fraction}");
        let significant = digits.trim_start_matches('0');
        let mantissa: i128 = if significant.is_empty() { 0 } else { significant.parse().ok()? };
        let (binary, exponent) = match suffix {
            "" => (0, 0),
            // `E` alone is exa; an exponent has digits after it.
            s if s.len() > 1 && s.starts_with(['e', 'E']) => (0, s[1..].parse::<i32>().ok()?),
            s => match BINARY.iter().find(|(name, _)| *name == s) {
                Some((_, shift)) => (*shift, 0),
                None => (0, DECIMAL.iter().find(|(name, _)| *name == s)?.1),
            },
        };
        let scaled = mantissa.checked_mul(1i128.checked_shl(binary)?)?;
        let power = 9 + exponent - fraction.len() as i32;
        let nanos = if power >= 0 {
            scaled.checked_mul(10i128.checked_pow(power as u32)?)?
        } else {
            let divisor = 10i128.checked_pow((-power) as u32)?;
            (scaled + divisor - 1) / divisor
        };
        Some(Quantity(if negative { -nanos } else { nanos }))
    }

    /// In billionths.
    pub fn from_nanos(nanos: i128) -> Quantity {
        Quantity(nanos)
    }

    pub fn nanos(self) -> i128 {
        self.0
    }

    pub fn is_negative(self) -> bool {
        self.0 < 0
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// In whole units, rounded up (bytes of a memory quantity).
    pub fn units(self) -> i128 {
        (self.0 + 999_999_999).div_euclid(1_000_000_000)
    }

    /// In thousandths, rounded up (millicores of a CPU quantity).
    pub fn millis(self) -> i128 {
        (self.0 + 999_999).div_euclid(1_000_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(text: &str) -> Quantity {
        Quantity::parse(text).unwrap_or_else(|| panic!("{text}"))
    }

    #[test]
    fn quantities_as_apimachinery_reads_them() {
        assert_eq!(q("1"), q("1000m"));
        assert_eq!(q("1.5Gi").units(), 3 << 29);
        assert_eq!(q("500M").units(), 500_000_000);
        assert_eq!(q("1e3"), q("1k"));
        assert_eq!(q("2E"), q("2000P"), "E alone is exa");
        assert_eq!(q("250m").millis(), 250);
        assert_eq!(q("0.5").millis(), 500);
        assert_eq!(q("1n").millis(), 1, "rounded up");
        assert!(q("-1Mi").is_negative() && q("0").is_zero() && q("0.0").is_zero());
        assert!(q("2Gi") > q("2G") && q("100m") < q("1"));
        for bad in ["", "lots", "1.2.3", "1Ki2", "Mi", "1 Gi", "1ki", "."] {
            assert!(Quantity::parse(bad).is_none(), "{bad}");
        }
    }
}

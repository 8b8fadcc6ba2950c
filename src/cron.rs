//! Cron schedules as CronJobs write them (the standard five fields, or a descriptor such
//! as `@hourly`), parsed as robfig/cron's ParseStandard parses them, errors worded alike.

/// The minutes, hours, days of the month, months and days of the week a schedule fires
/// on, one bit each.
#[derive(Debug, PartialEq, Eq)]
pub struct Schedule {
    pub minutes: u64,
    pub hours: u64,
    pub days_of_month: u64,
    pub months: u64,
    pub days_of_week: u64,
}

struct Field {
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const MINUTES: Field = Field { min: 0, max: 59, names: &[] };
const HOURS: Field = Field { min: 0, max: 23, names: &[] };
const DAYS_OF_MONTH: Field = Field { min: 1, max: 31, names: &[] };
const MONTHS: Field = Field {
    min: 1,
    max: 12,
    names: &["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"],
};
const DAYS_OF_WEEK: Field = Field { min: 0, max: 6, names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"] };

impl Schedule {
    pub fn parse(spec: &str) -> Result<Schedule, String> {
        if spec.is_empty() {
            return Err("empty spec string".into());
        }
        let spec = match spec.trim() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            other if other.starts_with('@') => return Err(format!("unrecognized descriptor: {other}")),
            other => other,
        };
        let fields: Vec<&str> = spec.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(format!("expected exactly 5 fields, found {}: [{}]", fields.len(), fields.join(" ")));
        }
        Ok(Schedule {
            minutes: bits(fields[0], &MINUTES)?,
            hours: bits(fields[1], &HOURS)?,
            days_of_month: bits(fields[2], &DAYS_OF_MONTH)?,
            months: bits(fields[3], &MONTHS)?,
            days_of_week: bits(fields[4], &DAYS_OF_WEEK)?,
        })
    }
}

/// A field's bits: comma-separated ranges (`*`, `?`, `n`, `a-b`), each with an optional
/// `/step`.
fn bits(field: &str, bounds: &Field) -> Result<u64, String> {
    let mut all = 0;
    for range in field.split(',') {
        let (span, step) = match range.split_once('/') {
            Some((span, step)) => {
                (span, Some(step.parse::<u32>().map_err(|_| format!("failed to parse int from {step}"))?))
            }
            None => (range, None),
        };
        let (start, end) = match span {
            "*" | "?" => (bounds.min, bounds.max),
            _ => match span.split_once('-') {
                Some((a, b)) => (value(a, bounds)?, value(b, bounds)?),
                // `n/step` runs from n to the end.
                None if step.is_some() => (value(span, bounds)?, bounds.max),
                None => {
                    let v = value(span, bounds)?;
                    (v, v)
                }
            },
        };
        if start < bounds.min {
            return Err(format!("beginning of range ({start}) below minimum ({}): {range}", bounds.min));
        }
        if end > bounds.max {
            return Err(format!("end of range ({end}) above maximum ({}): {range}", bounds.max));
        }
        if start > end {
            return Err(format!("beginning of range ({start}) beyond end of range ({end}): {range}"));
        }
        let step = step.unwrap_or(1);
        if step == 0 {
            return Err(format!("step of range should be a positive number: {range}"));
        }
        all |= (start..=end).step_by(step as usize).fold(0, |b, v| b | 1 << v);
    }
    Ok(all)
}

fn value(text: &str, bounds: &Field) -> Result<u32, String> {
    if let Some(i) = bounds.names.iter().position(|n| n.eq_ignore_ascii_case(text)) {
        return Ok(bounds.min + i as u32);
    }
    text.parse().map_err(|_| format!("failed to parse int from {text}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_as_robfig_cron_reads_them() {
        let every_5 = Schedule::parse("*/5 * * * *").unwrap();
        assert_eq!(every_5.minutes, (0..60).step_by(5).fold(0, |b, v| b | 1 << v));
        assert_eq!(Schedule::parse("@hourly").unwrap(), Schedule::parse("0 * * * *").unwrap());
        let weekdays = Schedule::parse("30 9 * JAN-mar mon-fri").unwrap();
        assert_eq!((weekdays.months, weekdays.days_of_week), (0b1110, 0b111110));
        assert_eq!(Schedule::parse("0 0 1,15 * ?").unwrap().days_of_month, 1 << 1 | 1 << 15);
        assert_eq!(Schedule::parse("foo").unwrap_err(), "expected exactly 5 fields, found 1: [foo]");
        assert_eq!(Schedule::parse("60 * * * *").unwrap_err(), "end of range (60) above maximum (59): 60");
        assert!(Schedule::parse("* * 0 * *").is_err());
        assert!(Schedule::parse("@sometimes").is_err());
    }
}

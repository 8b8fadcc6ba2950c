//! Cron schedules as CronJobs write them (the standard five fields, or a descriptor such
//! as `@hourly`), parsed as robfig/cron's ParseStandard parses them, errors worded alike;
//! and the minutes they fire at, in a time zone.

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

    /// Whether it fires at this minute. As robfig/cron: when both the day of the month and
    /// the day of the week are restricted, either one matching is enough.
    pub fn matches(&self, time: &jiff::Zoned) -> bool {
        let bit = |bits: u64, v: i8| bits & (1 << v) != 0;
        let all_days_of_month = (1..=31).all(|d| bit(self.days_of_month, d));
        let all_days_of_week = (0..=6).all(|d| bit(self.days_of_week, d));
        let day_of_month = bit(self.days_of_month, time.day());
        let day_of_week = bit(self.days_of_week, time.weekday().to_sunday_zero_offset());
        let day = if all_days_of_month || all_days_of_week {
            day_of_month && day_of_week
        } else {
            day_of_month || day_of_week
        };
        bit(self.minutes, time.minute()) && bit(self.hours, time.hour()) && bit(self.months, time.month()) && day
    }

    /// The latest minute it fired at in (`after`, `until`], if any (looking back a year at
    /// most).
    pub fn last(
        &self,
        after: jiff::Timestamp,
        until: jiff::Timestamp,
        zone: &jiff::tz::TimeZone,
    ) -> Option<jiff::Timestamp> {
        let mut minute = until.as_second() / 60 * 60;
        let oldest = after.as_second().max(until.as_second() - 366 * 24 * 3600);
        while minute > oldest {
            let time = jiff::Timestamp::from_second(minute).ok()?;
            if self.matches(&time.to_zoned(zone.clone())) {
                return Some(time);
            }
            minute -= 60;
        }
        None
    }

    /// The first minute it fires at after `after` (looking ahead five years at most).
    pub fn next(&self, after: jiff::Timestamp, zone: &jiff::tz::TimeZone) -> Option<jiff::Timestamp> {
        let start = after.as_second() / 60 * 60 + 60;
        (0..5 * 366 * 24 * 60).map(|i| start + i * 60).find_map(|second| {
            let time = jiff::Timestamp::from_second(second).ok()?;
            self.matches(&time.to_zoned(zone.clone())).then_some(time)
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

    #[test]
    fn times_match_as_cron_fires_in_the_schedule_zone() {
        let utc = jiff::tz::TimeZone::UTC;
        let at = |text: &str| text.parse::<jiff::Timestamp>().unwrap();
        // 2026-01-05 is a Monday.
        let mondays = Schedule::parse("0 9 * * mon").unwrap();
        assert!(mondays.matches(&at("2026-01-05T09:00:00Z").to_zoned(utc.clone())));
        assert!(!mondays.matches(&at("2026-01-06T09:00:00Z").to_zoned(utc.clone())));
        // Both days restricted: either one matching fires.
        let either = Schedule::parse("0 0 1 * mon").unwrap();
        assert!(either.matches(&at("2026-01-05T00:00:00Z").to_zoned(utc.clone())));
        assert!(either.matches(&at("2026-02-01T00:00:00Z").to_zoned(utc.clone())));
        assert_eq!(mondays.next(at("2026-01-05T09:00:00Z"), &utc), Some(at("2026-01-12T09:00:00Z")));
        assert_eq!(
            mondays.last(at("2026-01-01T00:00:00Z"), at("2026-01-07T00:00:00Z"), &utc),
            Some(at("2026-01-05T09:00:00Z"))
        );
        assert_eq!(mondays.last(at("2026-01-06T00:00:00Z"), at("2026-01-07T00:00:00Z"), &utc), None);
        if let Ok(paris) = jiff::tz::TimeZone::get("Europe/Paris") {
            // 09:00 in Paris in winter is 08:00 UTC.
            assert_eq!(mondays.next(at("2026-01-05T00:00:00Z"), &paris), Some(at("2026-01-05T08:00:00Z")));
        }
    }
}

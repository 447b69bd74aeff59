//! UTC calendar arithmetic: retention periods, snapshot names, RFC 3339 dates. Pure and
//! dependency-free (civil-from-days, Howard Hinnant's algorithm), so planning never depends
//! on the machine's time zone: hourly/daily/weekly/monthly/yearly periods are UTC periods.

/// The clock, in Unix seconds (0 if it reads before 1970).
pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// A point in time broken into UTC calendar fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Civil {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
}

/// Unix seconds to UTC calendar fields.
pub fn civil(secs: i64) -> Civil {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    Civil { year, month, day, hour: (rem / 3600) as u32, minute: (rem % 3600 / 60) as u32, second: (rem % 60) as u32 }
}

/// `YYYY-MM-DD HH:MM`, for tables.
pub fn minutes(secs: i64) -> String {
    let c = civil(secs);
    format!("{:04}-{:02}-{:02} {:02}:{:02}", c.year, c.month, c.day, c.hour, c.minute)
}

/// `YYYY-MM-DDTHH:MM:SSZ` (RFC 3339), as S3 takes retention dates.
pub fn rfc3339(secs: i64) -> String {
    let c = civil(secs);
    format!("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z", c.year, c.month, c.day, c.hour, c.minute, c.second)
}

/// A retention period: which calendar bucket a time falls in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Period {
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

impl Period {
    pub const ALL: [Period; 5] = [Period::Hourly, Period::Daily, Period::Weekly, Period::Monthly, Period::Yearly];

    pub fn name(self) -> &'static str {
        match self {
            Period::Hourly => "hourly",
            Period::Daily => "daily",
            Period::Weekly => "weekly",
            Period::Monthly => "monthly",
            Period::Yearly => "yearly",
        }
    }

    pub fn parse(text: &str) -> Option<Period> {
        Period::ALL.into_iter().find(|p| p.name() == text)
    }

    /// A number that is equal for two times exactly when they fall in the same period.
    /// Weeks start on Monday (ISO 8601); 1970-01-01 was a Thursday.
    pub fn bucket(self, secs: i64) -> i64 {
        match self {
            Period::Hourly => secs.div_euclid(3600),
            Period::Daily => secs.div_euclid(86_400),
            Period::Weekly => (secs.div_euclid(86_400) + 3).div_euclid(7),
            Period::Monthly => {
                let c = civil(secs);
                c.year * 12 + i64::from(c.month) - 1
            }
            Period::Yearly => civil(secs).year,
        }
    }

    /// The period a time falls in, for people: `2026-11-30 14h`, `2026-11-30`,
    /// `week of 2026-11-30`, `2026-11`, `2026`.
    pub fn label(self, secs: i64) -> String {
        let c = civil(secs);
        match self {
            Period::Hourly => format!("{:04}-{:02}-{:02} {:02}h", c.year, c.month, c.day, c.hour),
            Period::Daily => format!("{:04}-{:02}-{:02}", c.year, c.month, c.day),
            Period::Weekly => {
                let monday = self.bucket(secs) * 7 - 3;
                let m = civil(monday * 86_400);
                format!("week of {:04}-{:02}-{:02}", m.year, m.month, m.day)
            }
            Period::Monthly => format!("{:04}-{:02}", c.year, c.month),
            Period::Yearly => format!("{:04}", c.year),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(minutes(0), "1970-01-01 00:00");
        assert_eq!(minutes(1_795_425_269), "2026-11-23 09:14");
        assert_eq!(minutes(951_782_400), "2000-02-29 00:00");
        assert_eq!(minutes(-60), "1969-12-31 23:59");
        assert_eq!(rfc3339(1_795_425_269), "2026-11-23T09:14:29Z");
    }

    #[test]
    fn periods() {
        let mon = 1_795_392_000; // 2026-11-23 00:00 UTC, a Monday
        let sun = mon - 1; // 2026-11-22 23:59:59, Sunday
        assert_eq!(Period::Weekly.bucket(mon), Period::Weekly.bucket(mon + 6 * 86_400 + 86_399));
        assert_ne!(Period::Weekly.bucket(mon), Period::Weekly.bucket(sun));
        assert_eq!(Period::Weekly.label(mon + 3 * 86_400), "week of 2026-11-23");
        assert_eq!(Period::Daily.label(sun), "2026-11-22");
        assert_eq!(Period::Hourly.label(sun), "2026-11-22 23h");
        assert_eq!(Period::Monthly.bucket(sun), Period::Monthly.bucket(mon));
        assert_ne!(Period::Monthly.bucket(1_796_083_200 - 1), Period::Monthly.bucket(1_796_083_200)); // Dec 1
        assert_eq!(Period::Yearly.label(mon), "2026");
        assert_eq!(Period::parse("weekly"), Some(Period::Weekly));
        assert_eq!(Period::parse("fortnightly"), None);
    }
}

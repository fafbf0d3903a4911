//! When a task is due: a 5-field cron pattern (`*/15 * * * *`), a macro (`@hourly`,
//! `@daily`, …), or `@every <duration>` (`@every 10m`), in a time zone (default UTC).

use chrono::{DateTime, Utc};
use jiff::tz::TimeZone;
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex, OnceLock};

/// Why a schedule is not taken.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScheduleError {
    #[error("unknown time zone `{0}`")]
    UnknownZone(String),
    #[error("`{0}`: @every needs a duration such as 10m")]
    EveryWithoutDuration(String),
    #[error("`{text}` has {fields} fields; a cron schedule has 5 (minute hour day month weekday)")]
    FieldCount { text: String, fields: usize },
    #[error("`{text}`: {reason}")]
    Cron { text: String, reason: String },
}

#[derive(Clone, Debug)]
pub enum Schedule {
    Cron {
        cron: Arc<croner::Cron>,
        zone: Zone,
        text: String,
    },
    Every {
        secs: i64,
    },
}

/// A named time zone: its rules, and the name it was given (for messages).
#[derive(Clone, Debug)]
pub struct Zone {
    rules: TimeZone,
    name: String,
}

impl Zone {
    /// An IANA zone (`Europe/Zurich`) from the system's zoneinfo, or jiff's bundled copy.
    pub fn named(name: &str) -> Result<Zone, ScheduleError> {
        let rules = jiff::tz::db()
            .get(name)
            .map_err(|_| ScheduleError::UnknownZone(name.to_string()))?;
        Ok(Zone {
            rules,
            name: name.to_string(),
        })
    }

    fn utc() -> Zone {
        Zone {
            rules: TimeZone::UTC,
            name: "UTC".to_string(),
        }
    }
}

/// Parsed patterns, shared: a parsed cron pattern takes about 5 KB (croner keeps a bit
/// field per component, years included), and thousands of tasks use a handful of patterns.
fn interned(text: &str) -> Result<Arc<croner::Cron>, ScheduleError> {
    static PATTERNS: OnceLock<Mutex<HashMap<String, Arc<croner::Cron>>>> = OnceLock::new();
    let patterns = PATTERNS.get_or_init(Default::default);
    if let Some(c) = patterns.lock().unwrap_or_else(|p| p.into_inner()).get(text) {
        return Ok(c.clone());
    }
    let cron = croner::Cron::from_str(text).map_err(|e| ScheduleError::Cron {
        text: text.to_string(),
        reason: e.to_string(),
    })?;
    let cron = Arc::new(cron);
    patterns
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(text.to_string(), cron.clone());
    Ok(cron)
}

/// A positive span: `30s`, `10m`, `2h`, `1d`, or plain seconds.
pub fn parse_duration(text: &str) -> Option<i64> {
    credkeeper_core::parse_seconds(text).filter(|v| *v > 0)
}

impl Schedule {
    pub fn parse(text: &str, zone: Option<&str>) -> Result<Schedule, ScheduleError> {
        let text = text.trim();
        let zone = match zone {
            None => Zone::utc(),
            Some(z) => Zone::named(z)?,
        };
        if let Some(every) = text.strip_prefix("@every") {
            let secs = parse_duration(every)
                .ok_or_else(|| ScheduleError::EveryWithoutDuration(text.to_string()))?;
            return Ok(Schedule::Every { secs });
        }
        let fields = text.split_whitespace().count();
        if !text.starts_with('@') && fields != 5 {
            return Err(ScheduleError::FieldCount {
                text: text.to_string(),
                fields,
            });
        }
        let cron = interned(text)?;
        Ok(Schedule::Cron {
            cron,
            zone,
            text: text.to_string(),
        })
    }

    /// The first due time strictly after `after`. `@every` counts from the Unix epoch, so
    /// every scheduler agrees on the slots (and a restart keeps them).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Every { secs } => {
                let t = after.timestamp();
                let next = (t.div_euclid(*secs) + 1) * secs;
                DateTime::from_timestamp(next, 0)
            }
            Schedule::Cron { cron, zone, .. } => {
                let after =
                    jiff::Timestamp::new(after.timestamp(), after.timestamp_subsec_nanos() as i32)
                        .ok()?
                        .to_zoned(zone.rules.clone());
                let next = cron.find_next_occurrence(&after, false).ok()?.timestamp();
                DateTime::from_timestamp(next.as_second(), next.subsec_nanosecond() as u32)
            }
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Schedule::Every { secs } => format!("@every {secs}s"),
            Schedule::Cron { text, zone, .. } => format!("{text} ({})", zone.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn cron_macros_every_and_zones_give_the_next_run() {
        let q = Schedule::parse("*/15 * * * *", None).unwrap();
        assert_eq!(
            q.next_after(at("2026-12-01T10:07:00Z")),
            Some(at("2026-12-01T10:15:00Z"))
        );
        assert_eq!(
            q.next_after(at("2026-12-01T10:15:00Z")),
            Some(at("2026-12-01T10:30:00Z"))
        );
        let h = Schedule::parse("@hourly", None).unwrap();
        assert_eq!(
            h.next_after(at("2026-12-01T10:07:00Z")),
            Some(at("2026-12-01T11:00:00Z"))
        );
        let e = Schedule::parse("@every 10m", None).unwrap();
        assert_eq!(
            e.next_after(at("2026-12-01T10:07:00Z")),
            Some(at("2026-12-01T10:10:00Z"))
        );
        // 09:00 in Zurich (UTC+1 in December).
        let z = Schedule::parse("0 9 * * *", Some("Europe/Zurich")).unwrap();
        assert_eq!(
            z.next_after(at("2026-12-01T07:00:00Z")),
            Some(Utc.with_ymd_and_hms(2026, 12, 1, 8, 0, 0).unwrap())
        );
    }

    #[test]
    fn a_zone_s_daylight_saving_changes_neither_skip_nor_repeat_a_daily_run() {
        let z = Schedule::parse("30 2 * * *", Some("America/New_York")).unwrap();
        // 2026-03-08: clocks go from 02:00 EST to 03:00 EDT, so 02:30 does not exist that
        // day; the run still happens once, at the first wall time after the gap.
        let spring = z.next_after(at("2026-03-08T06:00:00Z")).unwrap();
        assert_eq!(spring, at("2026-03-08T07:00:00Z"));
        assert_eq!(z.next_after(spring), Some(at("2026-03-09T06:30:00Z")));
        // 2026-11-01: 01:00–02:00 happens twice; a 01:30 run happens once, at the first.
        let once = Schedule::parse("30 1 * * *", Some("America/New_York")).unwrap();
        let fall = once.next_after(at("2026-11-01T04:00:00Z")).unwrap();
        assert_eq!(fall, at("2026-11-01T05:30:00Z"));
        assert_eq!(once.next_after(fall), Some(at("2026-11-02T06:30:00Z")));
        assert_eq!(once.describe(), "30 1 * * * (America/New_York)");
    }

    #[test]
    fn bad_schedules_say_what_is_wrong() {
        let err = |text, zone| Schedule::parse(text, zone).unwrap_err().to_string();
        assert_eq!(
            Schedule::parse("* * * *", None).unwrap_err(),
            ScheduleError::FieldCount {
                text: "* * * *".into(),
                fields: 4
            }
        );
        assert!(err("* * * *", None).contains("has 4 fields"));
        assert!(matches!(
            Schedule::parse("61 * * * *", None),
            Err(ScheduleError::Cron { .. })
        ));
        assert!(err("@every often", None).contains("needs a duration"));
        assert_eq!(
            err("@hourly", Some("Mars/Olympus")),
            "unknown time zone `Mars/Olympus`"
        );
        assert_eq!(parse_duration("90"), Some(90));
        assert_eq!(parse_duration("2h"), Some(7200));
        assert_eq!(parse_duration("0s"), None);
    }
}

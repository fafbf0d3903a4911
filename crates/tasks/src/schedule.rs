//! When a task is due: a 5-field cron pattern (`*/15 * * * *`), a macro (`@hourly`,
//! `@daily`, …), or `@every <duration>` (`@every 10m`), in a time zone (default UTC).

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex, OnceLock};

#[derive(Clone, Debug)]
pub enum Schedule {
    Cron {
        cron: Arc<croner::Cron>,
        zone: Tz,
        text: String,
    },
    Every {
        secs: i64,
    },
}

/// Parsed patterns, shared: a parsed cron pattern takes about 5 KB (croner keeps a bit
/// field per component, years included), and thousands of tasks use a handful of patterns.
fn interned(text: &str) -> Result<Arc<croner::Cron>, String> {
    static PATTERNS: OnceLock<Mutex<HashMap<String, Arc<croner::Cron>>>> = OnceLock::new();
    let patterns = PATTERNS.get_or_init(Default::default);
    if let Some(c) = patterns.lock().unwrap_or_else(|p| p.into_inner()).get(text) {
        return Ok(c.clone());
    }
    let cron = Arc::new(croner::Cron::from_str(text).map_err(|e| format!("`{text}`: {e}"))?);
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
    pub fn parse(text: &str, zone: Option<&str>) -> Result<Schedule, String> {
        let text = text.trim();
        let zone: Tz = match zone {
            None => Tz::UTC,
            Some(z) => Tz::from_str(z).map_err(|_| format!("unknown time zone `{z}`"))?,
        };
        if let Some(every) = text.strip_prefix("@every") {
            let secs = parse_duration(every)
                .ok_or_else(|| format!("`{text}`: @every needs a duration such as 10m"))?;
            return Ok(Schedule::Every { secs });
        }
        let fields = text.split_whitespace().count();
        if !text.starts_with('@') && fields != 5 {
            return Err(format!(
                "`{text}` has {fields} fields; a cron schedule has 5 (minute hour day month weekday)"
            ));
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
            Schedule::Cron { cron, zone, .. } => cron
                .find_next_occurrence(&after.with_timezone(zone), false)
                .ok()
                .map(|t| t.with_timezone(&Utc)),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Schedule::Every { secs } => format!("@every {secs}s"),
            Schedule::Cron { text, zone, .. } => format!("{text} ({zone})"),
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
    fn bad_schedules_say_what_is_wrong() {
        assert!(
            Schedule::parse("* * * *", None)
                .unwrap_err()
                .contains("has 4 fields")
        );
        assert!(Schedule::parse("61 * * * *", None).is_err());
        assert!(
            Schedule::parse("@every often", None)
                .unwrap_err()
                .contains("needs a duration")
        );
        assert!(
            Schedule::parse("@hourly", Some("Mars/Olympus"))
                .unwrap_err()
                .contains("unknown time zone")
        );
        assert_eq!(parse_duration("90"), Some(90));
        assert_eq!(parse_duration("2h"), Some(7200));
        assert_eq!(parse_duration("0s"), None);
    }
}

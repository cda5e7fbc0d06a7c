//! Card expiry (wallet rules): a card with `exp_month` and `exp_year` in its metadata
//! expires when its expiry month ends, at midnight UTC of the next month's first day.

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{Map, Value};

/// The first instant at which the card described by `metadata` is expired, or `None`
/// when it carries no usable expiry (then it never expires).
///
/// Months are 1–12; years are four digits, or two (`30` is 2030) as cards print them.
/// Numbers may come as JSON numbers or digit strings (`"07"`).
pub fn expires_at(metadata: &Map<String, Value>) -> Option<DateTime<Utc>> {
    let month = number(metadata.get("exp_month")?)?;
    let year = number(metadata.get("exp_year")?)?;
    let year = match year {
        0..=99 => 2000 + year,
        1000..=9999 => year,
        _ => return None,
    };
    if !(1..=12).contains(&month) {
        return None;
    }
    let (next_year, next_month) = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    let first = NaiveDate::from_ymd_opt(
        i32::try_from(next_year).ok()?,
        u32::try_from(next_month).ok()?,
        1,
    )?;
    Some(first.and_hms_opt(0, 0, 0)?.and_utc())
}

/// Whether a card expiring at `expires_at` is expired at `now`.
pub fn is_expired(expires_at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
    expires_at.is_some_and(|at| now >= at)
}

fn number(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s)
            if !s.is_empty() && s.len() <= 4 && s.bytes().all(|b| b.is_ascii_digit()) =>
        {
            s.parse().ok()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, Duration, TimeZone};
    use proptest::prelude::*;
    use serde_json::json;

    fn card(month: Value, year: Value) -> Map<String, Value> {
        json!({ "exp_month": month, "exp_year": year })
            .as_object()
            .cloned()
            .unwrap()
    }

    #[test]
    fn a_card_expires_when_its_month_ends() {
        let at = expires_at(&card(json!(2), json!(2028))).unwrap();
        assert_eq!(at, Utc.with_ymd_and_hms(2028, 3, 1, 0, 0, 0).unwrap());
        // the last second of the leap day is still valid
        let leap_day_end = Utc.with_ymd_and_hms(2028, 2, 29, 23, 59, 59).unwrap();
        assert!(!is_expired(Some(at), leap_day_end));
        assert!(is_expired(Some(at), at));
    }

    #[test]
    fn december_cards_expire_at_new_year() {
        let at = expires_at(&card(json!(12), json!(2030))).unwrap();
        assert_eq!(at, Utc.with_ymd_and_hms(2031, 1, 1, 0, 0, 0).unwrap());
    }

    #[test]
    fn strings_and_two_digit_years_are_understood() {
        assert_eq!(
            expires_at(&card(json!("07"), json!("30"))),
            expires_at(&card(json!(7), json!(2030)))
        );
    }

    #[test]
    fn missing_or_nonsense_expiry_never_expires() {
        assert_eq!(expires_at(&Map::new()), None);
        assert_eq!(expires_at(&card(json!(13), json!(2030))), None);
        assert_eq!(expires_at(&card(json!(0), json!(2030))), None);
        assert_eq!(expires_at(&card(json!("x"), json!(2030))), None);
        assert_eq!(expires_at(&card(json!(5), json!(123456))), None);
        assert_eq!(expires_at(&card(json!(-1), json!(2030))), None);
        assert!(!is_expired(None, Utc::now()));
    }

    proptest! {
        /// Every second of the expiry month is valid; the first second after it is not.
        #[test]
        fn valid_through_the_last_second_of_the_month(year in 2000i32..2100, month in 1u32..=12) {
            let at = expires_at(&card(json!(month), json!(year))).unwrap();
            let first_of_month = Utc.with_ymd_and_hms(year, month, 1, 0, 0, 0).unwrap();
            let last_second = at - Duration::seconds(1);
            prop_assert!(!is_expired(Some(at), first_of_month));
            prop_assert!(!is_expired(Some(at), last_second));
            prop_assert_eq!(last_second.month(), month);
            prop_assert_eq!(last_second.year(), year);
            prop_assert!(is_expired(Some(at), at));
            prop_assert_eq!(at.day(), 1);
            // month lengths: 28/29 for February (leap years), 30 or 31 otherwise
            let days = (at - first_of_month).num_days();
            let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
            let expected = match month { 2 if leap => 29, 2 => 28, 4 | 6 | 9 | 11 => 30, _ => 31 };
            prop_assert_eq!(days, expected);
        }

        /// Expiry only moves forward with the card's date.
        #[test]
        fn later_cards_expire_later(y1 in 2000i32..2100, m1 in 1u32..=12, y2 in 2000i32..2100, m2 in 1u32..=12) {
            let a = expires_at(&card(json!(m1), json!(y1))).unwrap();
            let b = expires_at(&card(json!(m2), json!(y2))).unwrap();
            prop_assert_eq!((y1, m1).cmp(&(y2, m2)), a.cmp(&b));
        }
    }
}

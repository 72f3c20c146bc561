//! The calendar date the server serves as "today": OpenStack versions dated later are not
//! listed yet.

use std::fmt;

/// A UTC calendar date. The binary reads it from the wall clock (the core reads no clock) and
/// moves it on with each reload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    /// The year, e.g. 2026.
    pub year: u16,
    /// The month, 1 to 12.
    pub month: u8,
    /// The day of the month, 1 to 31.
    pub day: u8,
}

impl Date {
    /// The date `year-month-day` (not checked: the binary derives it from a clock).
    pub const fn new(year: u16, month: u8, day: u8) -> Date {
        Date { year, month, day }
    }
}

/// ISO 8601 (`2026-11-25`), the spelling of OpenStack's version names.
impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

#[cfg(test)]
mod tests {
    use super::Date;

    #[test]
    fn iso_spelling() {
        assert_eq!(Date::new(2016, 6, 30).to_string(), "2016-06-30");
        assert_eq!(Date::new(987, 12, 1).to_string(), "0987-12-01");
        assert!(Date::new(2016, 6, 30) < Date::new(2016, 10, 6));
    }
}

//! A gateway's circuit breaker as people see it (`gateway list`, the console): read from
//! the shared `circuit_open_until` column, the same for every replica.

use chrono::{DateTime, Utc};
use serde::{Serialize, Serializer};
use std::fmt;

/// Where a gateway's circuit stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CircuitState {
    /// Calls go through.
    Closed,
    /// Calls are kept away from the gateway until the cool-down ends.
    Open,
    /// The cool-down ended: the next call tries the gateway, and its answer closes the
    /// circuit or opens it again.
    HalfOpen,
}

impl CircuitState {
    /// The state of a circuit that is open until `open_until` (if ever), at `now`.
    pub fn at(open_until: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Self {
        match open_until {
            Some(until) if until > now => Self::Open,
            Some(_) => Self::HalfOpen,
            None => Self::Closed,
        }
    }

    /// The name `gateway list`, its JSON and the console show.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half-open",
        }
    }
}

impl fmt::Display for CircuitState {
    /// Pads like a string, so tables can align it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl Serialize for CircuitState {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::CircuitState;
    use chrono::{Duration, Utc};

    #[test]
    fn a_circuit_is_open_until_its_cool_down_ends() {
        let now = Utc::now();
        assert_eq!(CircuitState::at(None, now), CircuitState::Closed);
        let later = now + Duration::seconds(5);
        assert_eq!(CircuitState::at(Some(later), now), CircuitState::Open);
        assert_eq!(CircuitState::at(Some(now), now), CircuitState::HalfOpen);
    }

    #[test]
    fn it_shows_and_serializes_as_before() {
        assert_eq!(format!("{:<10}|", CircuitState::HalfOpen), "half-open |");
        let json = serde_json::to_value([CircuitState::Closed, CircuitState::Open]).unwrap();
        assert_eq!(json, serde_json::json!(["closed", "open"]));
    }
}

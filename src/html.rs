//! HTML for people, shared by the ops console and the load-test report: escaping, and
//! charts drawn as inline SVG in Rust (no script, no external asset).

pub mod chart;
pub mod text;

pub use chart::{LineChart, Series, line_chart};
pub use text::{escape, query_value};

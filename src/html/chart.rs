//! Line charts as inline SVG (the ops console's and the load-test report's; the
//! report's bar chart is drawn beside the report, in the tools). Every point is an element with its value in
//! `data-x` / `data-y` (and a tooltip), so a browser test can count what was drawn and a
//! person can hover over it. Styling uses presentation attributes only, never a
//! `style` attribute, so the console's Content-Security-Policy needs no exception.

use super::text::escape;
use std::fmt::Write as _;

/// One line of a [`LineChart`].
#[derive(Debug, Clone)]
pub struct Series<'a> {
    /// Shown in the legend; `data-series` of its group.
    pub name: &'a str,
    /// Any SVG colour.
    pub color: &'a str,
    /// `(x, y)` with `x` ascending.
    pub points: Vec<(f64, f64)>,
}

/// A chart of one or more series against a shared x axis, y from zero.
#[derive(Debug, Clone)]
pub struct LineChart<'a> {
    /// `data-chart` of the `<svg>`: how tests and style sheets find it.
    pub id: &'a str,
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub width: u32,
    pub height: u32,
    /// A dot per point, carrying its value; without, only the lines.
    pub dots: bool,
    /// The x axis' ends; from the points when `None`.
    pub x_range: Option<(f64, f64)>,
    pub series: Vec<Series<'a>>,
}

const LEFT: f64 = 56.0;
const RIGHT: f64 = 16.0;
/// Room above the plot for the title; the load-test report's bar chart shares it.
pub(crate) const TOP: f64 = 34.0;
const BOTTOM: f64 = 38.0;
/// Axis and label text, shared with the bar chart so both read alike.
pub(crate) const FONT: &str = r##"font-family="system-ui, sans-serif" font-size="11" fill="#555""##;

/// The chart as an `<svg>` element.
pub fn line_chart(chart: &LineChart<'_>) -> String {
    let (w, h) = (f64::from(chart.width), f64::from(chart.height));
    let all = || chart.series.iter().flat_map(|s| s.points.iter());
    let x_min = all().map(|p| p.0).fold(f64::INFINITY, f64::min);
    let x_max = all().map(|p| p.0).fold(f64::NEG_INFINITY, f64::max);
    let (x_min, x_max) = match chart.x_range {
        Some(range) => range,
        None if x_min.is_finite() => (x_min, if x_max > x_min { x_max } else { x_min + 1.0 }),
        None => (0.0, 1.0),
    };
    let highest = all().map(|p| p.1).fold(0.0, f64::max);
    let y_step = nice_step(highest.max(1.0) / 4.0);
    let y_max = (highest / y_step).ceil().max(1.0) * y_step;
    let plot = Plot {
        x0: LEFT,
        x1: w - RIGHT,
        y0: h - BOTTOM,
        y1: TOP,
        x_min,
        x_max,
        y_max,
        y_step,
    };
    let mut svg = format!(
        r##"<svg class="chart" data-chart="{id}" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="{title}" xmlns="http://www.w3.org/2000/svg">"##,
        id = escape(chart.id),
        title = escape(chart.title),
    );
    let _ = write!(
        svg,
        r##"<text x="{LEFT}" y="14" {FONT} font-size="13" font-weight="600" fill="#222">{}</text>"##,
        escape(chart.title)
    );
    legend(&mut svg, chart, w);
    axes(&mut svg, chart, &plot);
    for series in &chart.series {
        draw_series(&mut svg, series, &plot, chart);
    }
    svg.push_str("</svg>");
    svg
}

/// Where data lands on the canvas.
struct Plot {
    x0: f64,
    x1: f64,
    /// The bottom (y = 0) and the top (y = `y_max`) in canvas coordinates.
    y0: f64,
    y1: f64,
    x_min: f64,
    x_max: f64,
    y_max: f64,
    /// Between two horizontal grid lines.
    y_step: f64,
}

impl Plot {
    fn x(&self, x: f64) -> f64 {
        self.x0 + (x - self.x_min) / (self.x_max - self.x_min) * (self.x1 - self.x0)
    }

    fn y(&self, y: f64) -> f64 {
        self.y0 - y / self.y_max * (self.y0 - self.y1)
    }
}

fn legend(svg: &mut String, chart: &LineChart<'_>, width: f64) {
    let mut x = width - RIGHT;
    for series in chart.series.iter().rev() {
        let label_width = 7.0 * series.name.chars().count() as f64 + 26.0;
        x -= label_width;
        let _ = write!(
            svg,
            r##"<rect x="{x:.1}" y="6" width="12" height="10" rx="2" fill="{color}"/><text x="{tx:.1}" y="15" {FONT}>{name}</text>"##,
            color = escape(series.color),
            tx = x + 16.0,
            name = escape(series.name),
        );
    }
}

fn axes(svg: &mut String, chart: &LineChart<'_>, plot: &Plot) {
    let lines = (plot.y_max / plot.y_step).round() as u32;
    for i in 0..=lines {
        let value = plot.y_step * f64::from(i);
        let y = plot.y(value);
        let _ = write!(
            svg,
            r##"<line x1="{x0}" y1="{y:.1}" x2="{x1}" y2="{y:.1}" stroke="#e3e6ea" stroke-width="1"/><text x="{tx}" y="{ty:.1}" text-anchor="end" {FONT}>{label}</text>"##,
            x0 = plot.x0,
            x1 = plot.x1,
            tx = plot.x0 - 6.0,
            ty = y + 4.0,
            label = short(value),
        );
    }
    let x_step = nice_step((plot.x_max - plot.x_min) / 6.0);
    let first = (plot.x_min / x_step).ceil() as i64;
    let last = (plot.x_max / x_step + 1e-9).floor() as i64;
    for i in first..=last {
        let value = i as f64 * x_step;
        let x = plot.x(value);
        let _ = write!(
            svg,
            r##"<line x1="{x:.1}" y1="{y0}" x2="{x:.1}" y2="{y2}" stroke="#9aa3ad"/><text x="{x:.1}" y="{ty}" text-anchor="middle" {FONT}>{label}</text>"##,
            y0 = plot.y0,
            y2 = plot.y0 + 4.0,
            ty = plot.y0 + 16.0,
            label = short(value),
        );
    }
    let _ = write!(
        svg,
        r##"<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="#9aa3ad"/><text x="{mid:.1}" y="{by}" text-anchor="middle" {FONT}>{x_label}</text><text x="12" y="{my:.1}" text-anchor="middle" transform="rotate(-90 12 {my:.1})" {FONT}>{y_label}</text>"##,
        x0 = plot.x0,
        x1 = plot.x1,
        y0 = plot.y0,
        mid = (plot.x0 + plot.x1) / 2.0,
        by = plot.y0 + 32.0,
        my = (plot.y0 + plot.y1) / 2.0,
        x_label = escape(chart.x_label),
        y_label = escape(chart.y_label),
    );
}

fn draw_series(svg: &mut String, series: &Series<'_>, plot: &Plot, chart: &LineChart<'_>) {
    let color = escape(series.color);
    let _ = write!(
        svg,
        r##"<g class="series" data-series="{}">"##,
        escape(series.name)
    );
    if !series.points.is_empty() {
        let mut path = String::new();
        for (i, (x, y)) in series.points.iter().enumerate() {
            let verb = if i == 0 { 'M' } else { 'L' };
            let _ = write!(path, "{verb}{:.1} {:.1} ", plot.x(*x), plot.y(*y));
        }
        let _ = write!(
            svg,
            r##"<path d="{}" fill="none" stroke="{color}" stroke-width="2" stroke-linejoin="round"/>"##,
            path.trim_end()
        );
    }
    if chart.dots {
        for (x, y) in &series.points {
            let _ = write!(
                svg,
                r##"<circle cx="{cx:.1}" cy="{cy:.1}" r="2.6" fill="{color}" data-x="{x}" data-y="{y}"><title>{name}: {label} at {x_label} {xs}</title></circle>"##,
                cx = plot.x(*x),
                cy = plot.y(*y),
                name = escape(series.name),
                label = short(*y),
                x_label = escape(chart.x_label),
                xs = short(*x),
            );
        }
    }
    svg.push_str("</g>");
}

/// The smallest 1, 2, 2.5 or 5 × 10ⁿ at or above `value`: a round distance between ticks.
fn nice_step(value: f64) -> f64 {
    if !(value.is_finite() && value > 0.0) {
        return 1.0;
    }
    let magnitude = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|candidate| *candidate >= value)
        .unwrap_or(10.0 * magnitude)
}

/// A number as a person reads it on an axis: `12k`, `3.5`, `120`.
pub fn short(value: f64) -> String {
    let abs = value.abs();
    let text = if abs >= 10_000.0 {
        format!("{:.0}k", value / 1000.0)
    } else if abs >= 100.0 || value.fract() == 0.0 {
        format!("{value:.0}")
    } else if abs >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    };
    if text.contains('.') && !text.ends_with('k') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_point_is_drawn_with_its_value() {
        let chart = LineChart {
            id: "t",
            title: "A <title>",
            x_label: "s",
            y_label: "n",
            width: 400,
            height: 200,
            dots: true,
            x_range: None,
            series: vec![Series {
                name: "a",
                color: "#123456",
                points: vec![(0.0, 1.0), (1.0, 3.0), (2.0, 2.0)],
            }],
        };
        let svg = line_chart(&chart);
        assert_eq!(svg.matches("<circle").count(), 3);
        assert!(svg.contains(r##"data-x="1" data-y="3""##), "{svg}");
        assert!(svg.contains("A &lt;title&gt;") && !svg.contains("<title>A <"));
        assert!(!svg.contains("style="));
    }

    #[test]
    fn ticks_are_round_numbers() {
        assert_eq!(nice_step(0.0), 1.0);
        assert_eq!(nice_step(1.5), 2.0);
        assert_eq!(nice_step(0.575), 1.0);
        assert_eq!(nice_step(180.0), 200.0);
        assert_eq!(nice_step(2100.0), 2500.0);
        assert_eq!(short(12_500.0), "12k");
        assert_eq!(short(3.50), "3.5");
        assert_eq!(short(42.0), "42");
    }
}

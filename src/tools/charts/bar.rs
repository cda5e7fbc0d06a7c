//! Horizontal bar charts as inline SVG, for the load-test report's outcome mix; the same
//! conventions as [`crate::html::chart`] (values in `data-*` attributes, no `style`).

use crate::html::chart::{FONT, TOP, short};
use crate::html::escape;
use std::fmt::Write as _;

/// One bar of a [`bar_chart`].
#[derive(Debug, Clone)]
pub struct Bar<'a> {
    pub label: String,
    pub value: f64,
    pub color: &'a str,
}

/// Horizontal bars, one per row, longest = widest; `data-label` / `data-value` on each.
pub fn bar_chart(id: &str, title: &str, bars: &[Bar<'_>], width: u32) -> String {
    const ROW: f64 = 24.0;
    const LABEL: f64 = 230.0;
    let w = f64::from(width);
    let h = TOP + ROW * bars.len().max(1) as f64 + 8.0;
    let max = bars.iter().map(|b| b.value).fold(0.0, f64::max).max(1.0);
    let mut svg = format!(
        r##"<svg class="chart" data-chart="{id}" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="{title}" xmlns="http://www.w3.org/2000/svg"><text x="8" y="14" {FONT} font-size="13" font-weight="600" fill="#222">{title}</text>"##,
        id = escape(id),
        title = escape(title),
    );
    let span = w - LABEL - 70.0;
    for (i, bar) in bars.iter().enumerate() {
        let y = TOP + ROW * i as f64;
        let length = (bar.value / max * span).max(if bar.value > 0.0 { 2.0 } else { 0.0 });
        let _ = write!(
            svg,
            r##"<text x="{lx}" y="{ty:.1}" text-anchor="end" {FONT}>{label}</text><rect x="{LABEL}" y="{y:.1}" width="{length:.1}" height="{bh}" rx="3" fill="{color}" data-label="{label}" data-value="{raw}"><title>{label}: {value}</title></rect><text x="{vx:.1}" y="{ty:.1}" {FONT}>{value}</text>"##,
            lx = LABEL - 8.0,
            ty = y + 13.0,
            bh = ROW - 8.0,
            label = escape(&bar.label),
            color = escape(bar.color),
            value = short(bar.value),
            raw = bar.value,
            vx = LABEL + length + 6.0,
        );
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_carry_label_and_value() {
        let bars = [
            Bar {
                label: "saved".into(),
                value: 10.0,
                color: "green",
            },
            Bar {
                label: "missing".into(),
                value: 0.0,
                color: "red",
            },
        ];
        let svg = bar_chart("mix", "Outcomes", &bars, 600);
        assert_eq!(svg.matches("<rect").count(), 2);
        assert!(
            svg.contains(r##"data-label="saved" data-value="10""##),
            "{svg}"
        );
    }
}

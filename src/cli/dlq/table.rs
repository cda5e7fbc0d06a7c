//! How `dlq list` and `dlq show` print dead letters: a table whose column widths are
//! fixed by the first rows (so it streams), a JSON array written element by element,
//! and one dead letter in full. Every secret is masked ([`crate::dead_letter_view`]).

use crate::dead_letter_view::{self as view, DisplayBody, or_dash};
use crate::store::dead_letters::{DeadLetter, time_text};
use anyhow::Context;
use std::fmt::Write as _;
use std::io::Write as _;

/// Rows the table reads before it fixes its column widths.
const WIDTH_SAMPLE: usize = 100;

const COLUMNS: usize = 8;

const HEADER: [&str; COLUMNS] = [
    "ID",
    "MESSAGE ID",
    "TYPE",
    "ERROR",
    "ATTEMPTS",
    "DEAD-LETTERED AT",
    "BYTES",
    "DETAIL",
];

/// Where `list` writes, entry by entry.
pub struct Output {
    json: bool,
    out: std::io::BufWriter<std::io::Stdout>,
    sample: Vec<[String; COLUMNS]>,
    widths: Option<[usize; COLUMNS]>,
    written: u64,
    error: Option<std::io::Error>,
}

impl Output {
    pub fn new(json: bool) -> Self {
        Self {
            json,
            out: std::io::BufWriter::new(std::io::stdout()),
            sample: Vec::new(),
            widths: None,
            written: 0,
            error: None,
        }
    }

    pub fn entry(&mut self, letter: &DeadLetter) {
        if self.json {
            let sep = if self.written == 0 { "[\n" } else { ",\n" };
            let text = serde_json::to_string_pretty(&view::to_json(letter)).unwrap_or_default();
            self.write(&format!("{sep}{text}"));
            self.written += 1;
            return;
        }
        let row = row(letter);
        match self.widths {
            Some(widths) => {
                let line = line(&row.each_ref().map(String::as_str), &widths);
                self.write(&line);
            }
            None => {
                self.sample.push(row);
                if self.sample.len() >= WIDTH_SAMPLE {
                    self.flush_sample();
                }
            }
        }
    }

    fn flush_sample(&mut self) {
        if self.widths.is_some() || self.sample.is_empty() {
            return;
        }
        let widths = widths(&self.sample);
        self.widths = Some(widths);
        let mut text = line(&HEADER, &widths);
        for row in std::mem::take(&mut self.sample) {
            text.push_str(&line(&row.each_ref().map(String::as_str), &widths));
        }
        self.write(&text);
    }

    fn write(&mut self, text: &str) {
        if self.error.is_none()
            && let Err(err) = self.out.write_all(text.as_bytes())
        {
            self.error = Some(err);
        }
    }

    pub fn finish(mut self) -> anyhow::Result<()> {
        if self.json {
            let end = if self.written == 0 { "[]\n" } else { "\n]\n" };
            self.write(end);
        } else {
            self.flush_sample();
        }
        if let Some(err) = self.error.take() {
            return Err(err).context("cannot write the listing");
        }
        self.out.flush().context("cannot write the listing")
    }
}

fn row(letter: &DeadLetter) -> [String; COLUMNS] {
    [
        letter.id.to_string(),
        or_dash(letter.message_id.as_deref()),
        or_dash(letter.routing_key.as_deref()),
        letter.error.clone(),
        view::attempts(letter),
        time_text(letter.dead_lettered_at),
        letter.body.len().to_string(),
        letter.detail.clone(),
    ]
}

fn widths(rows: &[[String; COLUMNS]]) -> [usize; COLUMNS] {
    let mut widths = HEADER.map(|h| h.chars().count());
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    widths
}

fn line(cells: &[&str; COLUMNS], widths: &[usize; COLUMNS]) -> String {
    let mut text = String::new();
    for (i, cell) in cells.iter().enumerate() {
        let _ = match i {
            7 => write!(text, "{cell}"),
            0 | 4 | 6 => write!(text, "{cell:>w$}  ", w = widths[i]),
            _ => write!(text, "{cell:<w$}  ", w = widths[i]),
        };
    }
    let mut text = text.trim_end().to_owned();
    text.push('\n');
    text
}

/// The `list` table of `letters` (header and rows), as the command prints it.
pub fn table(letters: &[DeadLetter]) -> String {
    let rows: Vec<[String; COLUMNS]> = letters.iter().map(row).collect();
    let widths = widths(&rows);
    let mut out = line(&HEADER, &widths);
    for row in &rows {
        out.push_str(&line(&row.each_ref().map(String::as_str), &widths));
    }
    out
}

/// `show`: one dead letter with what is known of it, its properties, headers and body.
pub fn details(letter: &DeadLetter) -> String {
    let mut out = format!("dead letter {}\n", letter.id);
    let replayed = match (&letter.replayed_at, &letter.replayed_by) {
        (Some(at), by) => format!("{} by {}", time_text(*at), or_dash(by.as_deref())),
        (None, _) => "no".to_owned(),
    };
    let summary = [
        ("message id", or_dash(letter.message_id.as_deref())),
        ("type", or_dash(letter.routing_key.as_deref())),
        ("error", letter.error.clone()),
        ("detail", letter.detail.clone()),
        ("attempts", view::attempts(letter)),
        ("dead-lettered at", time_text(letter.dead_lettered_at)),
        ("stored at", time_text(letter.ingested_at)),
        ("failure group", letter.group_key.clone()),
        ("order", or_dash(letter.order_id.as_deref())),
        ("customer", or_dash(letter.customer_id.as_deref())),
        ("replayed", replayed),
        ("body size", format!("{} bytes", letter.body.len())),
    ];
    for (name, value) in summary {
        let _ = writeln!(out, "  {name:<18} {value}");
    }
    out.push_str("properties\n");
    for (name, value) in view::properties(letter) {
        let _ = writeln!(out, "  {name:<18} {value}");
    }
    out.push_str("headers\n");
    for (name, value) in view::headers(letter) {
        let _ = writeln!(out, "  {name:<30} {value}");
    }
    match view::body(letter, true) {
        DisplayBody::Text(text) => out.push_str(&format!("body\n{text}\n")),
        DisplayBody::Base64(encoded) => {
            out.push_str(&format!("body (not UTF-8, base64)\n{encoded}\n"))
        }
    }
    out
}

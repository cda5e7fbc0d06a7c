//! The frame every console page shares (header, navigation, notices) and the action
//! buttons: each a POST form carrying the form token.

use super::auth::FormToken;
use crate::html::escape;
use axum::response::Html;
use serde::Deserialize;

/// The pages in the navigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Overview,
    DeadLetters,
    History,
}

/// A whole page.
pub fn page(title: &str, nav: Nav, notice: &Notice, body: &str) -> Html<String> {
    let link = |target: Nav, href: &str, text: &str| {
        let current = if target == nav {
            r#" aria-current="page""#
        } else {
            ""
        };
        format!(r#"<a href="{href}"{current}>{text}</a>"#)
    };
    Html(format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · wallet-worker</title>
<link rel="stylesheet" href="/ui/assets/console.css">
<script src="/ui/assets/console.js" defer></script>
</head>
<body>
<header class="top">
<span class="brand">wallet-worker</span>
<nav>{overview}{dead_letters}{history}</nav>
<span class="version">v{version}</span>
</header>
<main>
<h1>{title}</h1>
{notice}{body}
</main>
</body>
</html>
"#,
        title = escape(title),
        overview = link(Nav::Overview, "/ui/", "Overview"),
        dead_letters = link(Nav::DeadLetters, "/ui/dlq", "Dead letters"),
        history = link(Nav::History, "/ui/dlq/history", "History"),
        version = env!("CARGO_PKG_VERSION"),
        notice = notice.html(),
    ))
}

/// A button that POSTs `fields` to `action`; with `confirm`, the page asks first.
/// The replay and purge buttons of the dead letters with message id `id`, styled
/// `small` in lists and as the page's main actions on a dead letter's own page.
pub fn dead_letter_actions(id: &str, small: bool, form_token: &FormToken) -> String {
    let (replay_class, purge_class) = if small {
        ("small", "small danger")
    } else {
        ("primary", "danger")
    };
    let confirm = format!("Purge the dead letters with message id {id}?");
    format!(
        "{}{}",
        action(
            "/ui/dlq/replay",
            &[("id", id)],
            "Replay",
            replay_class,
            None,
            form_token
        ),
        action(
            "/ui/dlq/purge",
            &[("id", id)],
            "Purge",
            purge_class,
            Some(&confirm),
            form_token
        ),
    )
}

pub fn action(
    action: &str,
    fields: &[(&str, &str)],
    label: &str,
    class: &str,
    confirm: Option<&str>,
    form_token: &FormToken,
) -> String {
    let mut hidden = format!(
        r#"<input type="hidden" name="form_token" value="{}">"#,
        escape(form_token.value())
    );
    for (name, value) in fields {
        hidden.push_str(&format!(
            r#"<input type="hidden" name="{}" value="{}">"#,
            escape(name),
            escape(value)
        ));
    }
    let confirm = confirm.map_or_else(String::new, |text| {
        format!(r#" data-confirm="{}""#, escape(text))
    });
    format!(
        r#"<form class="inline" method="post" action="{action}"{confirm}>{hidden}<button type="submit" class="{class}" data-action="{verb}">{label}</button></form>"#,
        action = escape(action),
        class = escape(class),
        verb = escape(
            label
                .split_whitespace()
                .next()
                .unwrap_or(label)
                .to_lowercase()
                .as_str()
        ),
        label = escape(label),
    )
}

/// What the page after an action reports, from its query string. Only known words and
/// numbers are shown, so a crafted link cannot put text of its choosing on the page.
#[derive(Debug, Default, Deserialize)]
pub struct Notice {
    /// `replayed`, `purged` or `reset`.
    done: Option<String>,
    /// How many.
    n: Option<u64>,
    /// Selected but not replayed.
    failed: Option<u64>,
    /// `database`, `nothing` or `unknown_gateway`.
    problem: Option<String>,
}

impl Notice {
    pub fn done(done: &str, n: u64, failed: u64) -> String {
        format!("done={done}&n={n}&failed={failed}")
    }

    pub fn problem(problem: &str) -> String {
        format!("problem={problem}")
    }

    /// A notice of `problem` (one of the codes above) on the page being rendered.
    pub fn showing(problem: &str) -> Self {
        Self {
            problem: Some(problem.to_owned()),
            ..Self::default()
        }
    }

    pub fn html(&self) -> String {
        let n = self.n.unwrap_or(0);
        let letters = |n: u64| format!("{n} dead letter{}", if n == 1 { "" } else { "s" });
        let done = match self.done.as_deref() {
            Some("replayed") => Some(format!("Replayed {}.", letters(n))),
            Some("purged") => Some(format!("Purged {}.", letters(n))),
            Some("reset") => Some("Circuit closed.".to_owned()),
            _ => None,
        };
        let failed = self.failed.filter(|f| *f > 0).map(|f| {
            format!(
                " {} could not be replayed (no queue of the worker takes their type) and stay in the store.",
                letters(f)
            )
        });
        let problem = match self.problem.as_deref() {
            Some("database") => Some("The database did not answer; see the worker's logs."),
            Some("nothing") => Some("No dead letter matched; nothing changed."),
            Some("unknown_gateway") => Some("No such gateway."),
            _ => None,
        };
        let mut out = String::new();
        if let Some(done) = done {
            let class = if failed.is_some() { "warn" } else { "ok" };
            out.push_str(&format!(
                r#"<p class="notice {class}" role="status" data-notice="{}">{done}{}</p>"#,
                escape(self.done.as_deref().unwrap_or_default()),
                failed.unwrap_or_default()
            ));
        }
        if let Some(problem) = problem {
            out.push_str(&format!(
                r#"<p class="notice bad" role="alert" data-problem="{}">{problem}</p>"#,
                escape(self.problem.as_deref().unwrap_or_default())
            ));
        }
        out
    }
}

/// `-` for what is not known.
pub fn or_dash(value: Option<&str>) -> String {
    value.map_or_else(|| "-".to_owned(), escape)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_notices_are_shown() {
        let crafted = Notice {
            done: Some("<script>".into()),
            problem: Some("call 555".into()),
            ..Notice::default()
        };
        assert_eq!(crafted.html(), "");
        let done = Notice {
            done: Some("replayed".into()),
            n: Some(2),
            failed: Some(0),
            problem: None,
        };
        assert!(done.html().contains("Replayed 2 dead letters."));
    }

    #[test]
    fn actions_carry_the_form_token_and_escape_values() {
        let token = FormToken::random();
        let form = action(
            "/ui/dlq/replay",
            &[("id", r#""><x"#)],
            "Replay",
            "primary",
            None,
            &token,
        );
        assert!(form.contains(token.value()));
        assert!(form.contains("&quot;&gt;&lt;x"));
        assert!(form.contains(r#"data-action="replay""#));
    }
}

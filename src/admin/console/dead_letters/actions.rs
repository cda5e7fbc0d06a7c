//! `POST /ui/dlq/replay` and `/ui/dlq/purge`: the dead letters with one message id,
//! error kind or type (never "all"), then back to the list with what was done.

use super::{Problem, close, connect};
use crate::admin::console::layout::Notice;
use crate::admin::console::{Console, forbidden};
use crate::broker::dlq::{self, ReplayOptions, Selection};
use axum::Form;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

/// `POST /ui/dlq/replay` and `/ui/dlq/purge`: one of `id`, `error` or `type`.
#[derive(Debug, Deserialize)]
pub struct ActionForm {
    form_token: String,
    id: Option<String>,
    error: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

impl ActionForm {
    /// The dead letters the form names: exactly one criterion, never "all".
    fn selection(&self) -> Option<Selection> {
        let given = |v: &Option<String>| v.clone().filter(|v| !v.is_empty());
        match (given(&self.id), given(&self.error), given(&self.kind)) {
            (Some(id), None, None) => Some(Selection::ids([id])),
            (None, Some(error), None) => Some(Selection::of_error(&error)),
            (None, None, Some(kind)) => Some(Selection::of_type(&kind)),
            _ => None,
        }
    }
}

/// Why an action's form is refused.
enum Refused {
    /// Not from a console page (no or a wrong form token).
    NotOurs,
    /// No, or more than one, criterion.
    Unclear,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self {
            Self::NotOurs => forbidden(),
            Self::Unclear => (
                StatusCode::BAD_REQUEST,
                "name the dead letters by exactly one of id, error or type\n",
            )
                .into_response(),
        }
    }
}

/// Checks the form, or says why it is refused.
fn checked(console: &Console, form: &ActionForm) -> Result<Selection, Refused> {
    if !console.form_is_ours(&form.form_token) {
        return Err(Refused::NotOurs);
    }
    form.selection().ok_or(Refused::Unclear)
}

pub async fn replay(State(console): State<Console>, Form(form): Form<ActionForm>) -> Response {
    let selection = match checked(&console, &form) {
        Ok(selection) => selection,
        Err(refused) => return refused.into_response(),
    };
    let replayed = match connect(&console).await {
        Ok(connection) => {
            let topology = &console.admin.topology;
            let options = ReplayOptions::default();
            let report = dlq::replay(&connection, topology, &selection, options, |_| {}).await;
            close(connection).await;
            report.map_err(Problem::from)
        }
        Err(problem) => Err(problem),
    };
    let notice = match replayed {
        Ok(report) if report.replayed + report.failed == 0 => Notice::problem("nothing"),
        Ok(report) => {
            tracing::info!(
                ?selection,
                replayed = report.replayed,
                failed = report.failed,
                "console: dead letters replayed"
            );
            Notice::done("replayed", report.replayed, report.failed)
        }
        Err(problem) => Notice::problem(problem.code()),
    };
    Redirect::to(&format!("/ui/dlq?{notice}")).into_response()
}

pub async fn purge(State(console): State<Console>, Form(form): Form<ActionForm>) -> Response {
    let selection = match checked(&console, &form) {
        Ok(selection) => selection,
        Err(refused) => return refused.into_response(),
    };
    let purged = match connect(&console).await {
        Ok(connection) => {
            let report = dlq::purge(&connection, &console.admin.topology, &selection).await;
            close(connection).await;
            report.map_err(Problem::from)
        }
        Err(problem) => Err(problem),
    };
    let notice = match purged {
        Ok(report) if report.purged == 0 => Notice::problem("nothing"),
        Ok(report) => {
            tracing::info!(
                ?selection,
                purged = report.purged,
                "console: dead letters purged"
            );
            Notice::done("purged", report.purged, 0)
        }
        Err(problem) => Notice::problem(problem.code()),
    };
    Redirect::to(&format!("/ui/dlq?{notice}")).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_form_names_exactly_one_criterion() {
        let form = |id: Option<&str>, error: Option<&str>, kind: Option<&str>| ActionForm {
            form_token: String::new(),
            id: id.map(Into::into),
            error: error.map(Into::into),
            kind: kind.map(Into::into),
        };
        assert_eq!(
            form(Some("m1"), None, Some("")).selection(),
            Some(Selection::ids(["m1"]))
        );
        assert_eq!(
            form(None, Some("malformed"), None).selection(),
            Some(Selection::of_error("malformed"))
        );
        assert_eq!(form(None, None, None).selection(), None);
        assert_eq!(form(Some("m1"), Some("malformed"), None).selection(), None);
    }
}

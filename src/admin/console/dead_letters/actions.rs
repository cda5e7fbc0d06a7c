//! `POST /ui/dlq/replay` and `/ui/dlq/purge`: the dead letters with one message id,
//! error kind, type or failure group (never "all"), batch by batch as the CLI does,
//! recorded in the audit log under the HTTP Basic user name; then back to the groups
//! with what was done. A replay's batches go to this worker's relay, which publishes
//! them at once.

use crate::admin::console::layout::Notice;
use crate::admin::console::{Console, auth, forbidden};
use crate::domain::MessageType;
use crate::error_chain::ErrorChain;
use crate::store::audit;
use crate::store::dead_letters::replay::{self, By};
use crate::store::dead_letters::{Cursor, Filter, purge};
use axum::Form;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

/// Dead letters per transaction.
const BATCH: i64 = 500;

/// `POST /ui/dlq/replay` and `/ui/dlq/purge`: one of `id`, `error`, `type`, `group`.
#[derive(Debug, Deserialize)]
pub struct ActionForm {
    form_token: String,
    id: Option<String>,
    error: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    group: Option<String>,
}

impl ActionForm {
    /// The dead letters the form names: exactly one criterion, never "all".
    fn selection(&self) -> Option<Filter> {
        let given = |v: &Option<String>| v.clone().filter(|v| !v.is_empty());
        let named = [
            given(&self.id),
            given(&self.error),
            given(&self.kind),
            given(&self.group),
        ];
        if named.iter().flatten().count() != 1 {
            return None;
        }
        let [id, error, kind, group] = named;
        Some(Filter {
            ids: id.into_iter().collect(),
            error,
            kind,
            group,
            ..Filter::default()
        })
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
                "name the dead letters by exactly one of id, error, type or group\n",
            )
                .into_response(),
        }
    }
}

/// Checks the form, or says why it is refused.
fn checked(console: &Console, form: &ActionForm) -> Result<Filter, Refused> {
    if !console.form_is_ours(&form.form_token) {
        return Err(Refused::NotOurs);
    }
    form.selection().ok_or(Refused::Unclear)
}

pub async fn replay(
    State(console): State<Console>,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Response {
    let filter = match checked(&console, &form) {
        Ok(filter) => filter,
        Err(refused) => return refused.into_response(),
    };
    let actor = auth::user_name(&headers);
    let notice = match replay_all(&console, &filter, &actor).await {
        Ok((0, 0)) => Notice::problem("nothing"),
        Ok((replayed, failed)) => {
            tracing::info!(
                ?filter,
                replayed,
                failed,
                actor,
                "console: dead letters replayed"
            );
            Notice::done("replayed", replayed, failed)
        }
        Err(err) => {
            tracing::error!(error = %ErrorChain(&err), "console: replay failed");
            Notice::problem("database")
        }
    };
    Redirect::to(&format!("/ui/dlq?{notice}")).into_response()
}

/// Replays batch by batch; returns (replayed, not replayable).
async fn replay_all(console: &Console, filter: &Filter, actor: &str) -> sqlx::Result<(u64, u64)> {
    let pool = &console.admin.pool;
    let target = serde_json::to_value(filter).unwrap_or_default();
    let audit_id = audit::open(pool, actor, audit::Via::Console, "dlq.replay", &target).await?;
    let by = By { actor, audit_id };
    let (mut replayed, mut failed, mut cursor) = (0, 0, None::<Cursor>);
    loop {
        let batch = replay::batch(
            pool,
            &console.admin.keys,
            by,
            filter,
            cursor.as_ref(),
            BATCH,
            &MessageType::NAMES,
        )
        .await?;
        let Some(next) = batch.next else { break };
        cursor = Some(next);
        replayed += batch.replayed.len() as u64;
        failed += batch.not_replayable.len() as u64;
        if !batch.events.is_empty() {
            // A relay gone away leaves them to a sweep.
            let _ = console.admin.committed.send(batch.events);
        }
    }
    audit::finish(pool, audit_id).await?;
    Ok((replayed, failed))
}

pub async fn purge(
    State(console): State<Console>,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Response {
    let filter = match checked(&console, &form) {
        Ok(filter) => filter,
        Err(refused) => return refused.into_response(),
    };
    let actor = auth::user_name(&headers);
    let notice = match purge_all(&console, &filter, &actor).await {
        Ok(0) => Notice::problem("nothing"),
        Ok(purged) => {
            tracing::info!(?filter, purged, actor, "console: dead letters purged");
            Notice::done("purged", purged, 0)
        }
        Err(err) => {
            tracing::error!(error = %ErrorChain(&err), "console: purge failed");
            Notice::problem("database")
        }
    };
    Redirect::to(&format!("/ui/dlq?{notice}")).into_response()
}

async fn purge_all(console: &Console, filter: &Filter, actor: &str) -> sqlx::Result<u64> {
    let pool = &console.admin.pool;
    let target = serde_json::to_value(filter).unwrap_or_default();
    let audit_id = audit::open(pool, actor, audit::Via::Console, "dlq.purge", &target).await?;
    let (mut purged, mut cursor) = (0, None::<Cursor>);
    loop {
        let (n, next) = purge::batch(pool, audit_id, filter, cursor.as_ref(), 2 * BATCH).await?;
        purged += n;
        match next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    audit::finish(pool, audit_id).await?;
    Ok(purged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_form_names_exactly_one_criterion() {
        let form = |id: Option<&str>, error: Option<&str>, group: Option<&str>| ActionForm {
            form_token: String::new(),
            id: id.map(Into::into),
            error: error.map(Into::into),
            kind: Some(String::new()),
            group: group.map(Into::into),
        };
        let ids = form(Some("m1"), None, None).selection().unwrap();
        assert_eq!(ids.ids, ["m1"]);
        let group = form(None, None, Some("0123456789abcdef"))
            .selection()
            .unwrap();
        assert_eq!(group.group.as_deref(), Some("0123456789abcdef"));
        assert_eq!(form(None, None, None).selection(), None);
        assert_eq!(form(Some("m1"), Some("malformed"), None).selection(), None);
    }
}

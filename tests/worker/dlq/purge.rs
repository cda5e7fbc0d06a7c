//! Purge: deletes only what it names, in batches, recorded in the audit log; `--dry-run`
//! changes nothing; `--all` asks first and refuses without a terminal unless `--yes`.

use super::{dlq_cli, fill, human, listed, strings};
use crate::helpers::*;
use serde_json::{Value, json};

#[tokio::test]
async fn each_selector_purges_only_what_it_names_and_the_audit_log_counts_it() {
    let w = spawn_worker().await;
    fill(&w, 12).await;
    let summary: Value =
        serde_json::from_str(&dlq_cli(&w, &["summary", "--json"]).await.stdout).unwrap();
    let group = summary["by_group"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["error"] == "order_not_found" && g["type"] == "wallet.save")
        .unwrap()["group"]
        .as_str()
        .unwrap()
        .to_owned();
    let dry = dlq_cli(&w, &["purge", "--type", "order.placed", "--dry-run"]).await;
    assert!(dry.success, "{}", dry.stderr);
    assert!(
        dry.stdout
            .starts_with("would purge d-01 (order.placed, malformed)\n"),
        "{}",
        dry.stdout
    );
    assert!(
        dry.stdout
            .ends_with("would purge 6 dead letters (dry run: nothing changed)\n"),
        "{}",
        dry.stdout
    );
    assert_eq!(w.dead_letter_count().await, 12);

    let steps: [(Vec<&str>, &str); 4] = [
        (
            vec!["--type", "order.placed", "--since", "2026-11-01T00:00:06Z"],
            "purged 3 dead letters from the dead-letter store\n",
        ),
        (
            vec!["--group", &group],
            "purged 2 dead letters from the dead-letter store\n",
        ),
        (
            vec!["--error", "malformed", "--customer", "cus-4"],
            "purged 1 dead letter from the dead-letter store\n",
        ),
        (
            vec!["--id", "d-02", "d-05"],
            "purged 2 dead letters from the dead-letter store\n",
        ),
    ];
    for (selector, printed) in steps {
        let mut args = vec!["purge", "--actor", "ops-bo"];
        args.extend(&selector);
        let out = dlq_cli(&w, &args).await;
        assert!(out.success, "{selector:?}: {}", out.stderr);
        assert_eq!(out.stdout, printed, "{selector:?}");
    }
    // Purged: 7, 9, 11 (placed since 6); 0, 6 (the group); 4 (malformed of cus-4);
    // 2, 5. Left: 1, 3, 8, 10.
    let left = listed(&dlq_cli(&w, &["list", "--json"]).await);
    assert_eq!(left, strings(&["d-01", "d-03", "d-08", "d-10"]));
    let summary: Value =
        serde_json::from_str(&dlq_cli(&w, &["summary", "--json"]).await.stdout).unwrap();
    assert_eq!(summary["total"], 4, "the groups follow");
    assert_eq!(
        summary["by_error"],
        json!({"gateway_unavailable": 1, "malformed": 2, "order_not_found": 1})
    );
    let audit: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT actor, action, count FROM audit_log ORDER BY id")
            .fetch_all(&w.pool)
            .await
            .unwrap();
    let expected: Vec<(String, String, i64)> = [3, 2, 1, 2]
        .into_iter()
        .map(|n| ("ops-bo".to_owned(), "dlq.purge".to_owned(), n))
        .collect();
    assert_eq!(audit, expected);
    let none = dlq_cli(&w, &["purge", "--type", "wallet.attach"]).await;
    assert_eq!(
        human(&none.stderr),
        "wallet-worker: no dead letter of type wallet.attach"
    );
    w.stop().await;
}

#[tokio::test]
async fn purge_all_asks_first_and_refuses_without_a_terminal_unless_told_yes() {
    let w = spawn_worker().await;
    fill(&w, 3).await;
    // The test's stdin is not a terminal.
    let refused = dlq_cli(&w, &["purge", "--all"]).await;
    assert!(!refused.success);
    assert_eq!(
        human(&refused.stderr),
        "wallet-worker: dlq purge --all asks for confirmation and stdin is not a terminal; add --yes to purge every dead letter"
    );
    assert_eq!(w.dead_letter_count().await, 3);
    let dry = dlq_cli(&w, &["purge", "--all", "--dry-run"]).await;
    assert!(
        dry.stdout
            .ends_with("would purge 3 dead letters (dry run: nothing changed)\n"),
        "{}",
        dry.stdout
    );
    let out = dlq_cli(&w, &["purge", "--all", "--yes"]).await;
    assert_eq!(
        out.stdout, "purged 3 dead letters from the dead-letter store\n",
        "{}",
        out.stderr
    );
    assert_eq!(w.dead_letter_count().await, 0);
    assert_eq!(w.count("SELECT count(*) FROM dead_letter_groups").await, 0);
    let (actor, target): (String, Value) = sqlx::query_as("SELECT actor, target FROM audit_log")
        .fetch_one(&w.pool)
        .await
        .unwrap();
    assert_eq!(
        (actor.as_str(), target),
        ("unknown", json!({})),
        "no USER: unknown; --all: no filter"
    );
    w.stop().await;
}

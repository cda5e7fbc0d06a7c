//! Graceful shutdown: SIGTERM with messages in flight exits 0 and loses none of them.

use crate::helpers::*;
use crate::process::WorkerProcess;
use std::time::Duration;
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

#[tokio::test]
async fn sigterm_with_200_in_flight_exits_0_and_all_complete_after_restart() {
    let mut args = test_args();
    args.prefetch = 256;
    args.shutdown_grace_secs = 1;
    // The in-process worker only provides the harness (database, stub, event queue):
    // it is stopped at once and the real process does the work.
    let mut w = spawn_worker_with(args.clone()).await;
    w.pause_in_process_worker().await;
    // A gateway slow enough that 200 saves are in flight when SIGTERM arrives.
    let slow = Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(503).set_delay(Duration::from_secs(3)))
        .mount_as_scoped(&w.gateway)
        .await;
    let worker = WorkerProcess::start(&args);
    let ids: Vec<String> = publish_saves(&w, "sig", 200).await;
    // Wait until all 200 are in flight at the gateway.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while w.gateway_requests().await.len() < 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "200 never reached the gateway"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = worker.terminate().await;
    assert!(status.success(), "exit status {status:?}");
    assert_eq!(w.count("SELECT count(*) FROM processed_messages").await, 0);

    drop(slow);
    w.gateway_accepts().await;
    let worker = WorkerProcess::start(&args);
    let mut done = std::collections::HashSet::new();
    while done.len() < ids.len() {
        let event = w.next_event().await;
        assert_eq!(event.routing_key, "wallet.saved");
        done.insert(event.body["causation_id"].as_str().unwrap().to_owned());
    }
    assert!(ids.iter().all(|id| done.contains(id)));
    assert!(worker.terminate().await.success());
    w.stop().await;
}

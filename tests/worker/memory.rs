//! Memory stays bounded whatever the input: a publisher naming endless unknown gateways
//! does not grow the worker (its gateway cache is bounded and evicts what expired).

use crate::helpers::*;
use crate::process::WorkerProcess;

/// Orders after the warm-up; `WALLET_TEST_UNKNOWN_GATEWAYS=100000` for the full run.
fn message_count() -> usize {
    std::env::var("WALLET_TEST_UNKNOWN_GATEWAYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

fn resident_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

async fn publish_unknown_gateways(w: &TestWorker, tag: &str, count: usize) {
    for i in 0..count {
        let mut msg = order_placed(&format!("ord_{tag}_{i}"), "cus_m", "tok_m", true);
        msg["data"]["order"]["payment_source"]["gateway_id"] = format!("gw_{tag}_{i}").into();
        w.publish("order.placed", &msg).await;
    }
}

/// The worker's RSS once `processed` messages are committed and every event they made
/// is published: what a round leaves behind, not what is still on its way (on a loaded
/// machine the relay can trail the commits by thousands of events).
async fn resident_once_idle(w: &TestWorker, process: &WorkerProcess, processed: usize) -> u64 {
    w.wait_for_count("SELECT count(*) FROM processed_messages", processed as i64)
        .await;
    w.wait_for_count("SELECT count(*) FROM outbox", 0).await;
    resident_kib(process.pid())
}

#[tokio::test]
async fn orders_naming_endless_unknown_gateways_leave_the_worker_memory_flat() {
    let count = message_count();
    let warm_up = 5_000;
    let mut args = test_args();
    args.prefetch = 64;
    let mut w = spawn_worker_with(args).await;
    w.pause_in_process_worker().await;
    let process = WorkerProcess::start(&w.args);
    publish_unknown_gateways(&w, "warm", warm_up).await;
    w.wait_for_count("SELECT count(*) FROM processed_messages", warm_up as i64)
        .await;
    // Two equal rounds: the first lets the allocator and the queues reach the size a
    // burst of `count` messages needs (on a loaded machine more messages wait, and RSS
    // climbs once), the second must then add nothing. A cache that kept every gateway
    // grows by the same ~7 MiB in both.
    publish_unknown_gateways(&w, "first", count).await;
    let before = resident_once_idle(&w, &process, warm_up + count).await;
    publish_unknown_gateways(&w, "second", count).await;
    let after = resident_once_idle(&w, &process, warm_up + 2 * count).await;
    let growth = after.saturating_sub(before);
    println!(
        "[memory] unknown_gateways={count} rss_before_kib={before} rss_after_kib={after} growth_kib={growth}"
    );
    // Unbounded, the cache grew by ~360 bytes per unknown gateway (~7 MiB a round).
    assert!(
        growth < 3 * 1024,
        "RSS grew by {growth} KiB in the second round"
    );
    assert!(process.terminate().await.success());
    w.stop().await;
}

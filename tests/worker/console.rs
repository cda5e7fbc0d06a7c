//! The ops console (`/ui/`, docs/interface.md, admin HTTP) as people use it — in a real headless browser,
//! the admin token as the HTTP Basic password — and what it refuses: a wrong token, no
//! token configured, a POST from another origin or without the console's form token.

mod report;

use crate::browser::Browser;
use crate::dlq::{Dead, put};
use crate::helpers::*;
use lapin::BasicProperties;
use reqwest::StatusCode;
use std::time::Duration;

/// Any user name will do; the token is the password.
const USER: &str = "ops";

fn url(w: &TestWorker, path: &str) -> String {
    format!("http://{}{path}", w.admin_addr)
}

/// The console URL with the credentials in it, as a browser's first visit uses it.
fn url_with_token(w: &TestWorker, path: &str) -> String {
    format!("http://{USER}:{ADMIN_TOKEN}@{}{path}", w.admin_addr)
}

fn props(message_id: &str) -> BasicProperties {
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_message_id(message_id.into())
}

/// A `wallet.save` of an order not placed yet: retried, then dead-lettered
/// `order_not_found`. Returns its message id.
async fn dead_letter_save(w: &TestWorker, order_id: &str) -> String {
    let msg = wallet_save(order_id);
    let id = msg["id"].as_str().expect("id").to_owned();
    let before = w.dead_letter_count().await;
    w.publish_raw(
        "wallet.save",
        &serde_json::to_vec(&msg).unwrap(),
        props(&id),
    )
    .await;
    w.wait_for_dead_letters(before + 1).await;
    id
}

/// A broken `order.placed` that carries a payment token: dead-lettered `malformed`.
async fn dead_letter_malformed(w: &TestWorker, token: &str) -> String {
    let id = unique("msg_bad");
    let body = format!(
        r#"{{"id":"{id}","type":"order.placed","data":{{"order":{{"payment_source_token":"{token}""#
    );
    let before = w.dead_letter_count().await;
    w.publish_raw("order.placed", body.as_bytes(), props(&id))
        .await;
    w.wait_for_dead_letters(before + 1).await;
    id
}

/// Dead letters of two more causes, as the worker writes them: five orders whose gateway
/// never answered, two attaches that hit the broker's delivery limit.
async fn more_dead_letters(w: &TestWorker) {
    let ids: Vec<String> = (0..7).map(|i| unique(&format!("msg_more{i}"))).collect();
    let details: Vec<String> = (0..5)
        .map(|i| format!("gateway acme-pay answered 503 for order ord-{i}"))
        .collect();
    let dead: Vec<Dead<'_>> = (0..7)
        .map(|i| Dead {
            id: &ids[i],
            kind: if i < 5 {
                "order.placed"
            } else {
                "wallet.attach"
            },
            error: if i < 5 {
                "gateway_unavailable"
            } else {
                "delivery_limit"
            },
            detail: if i < 5 {
                &details[i]
            } else {
                "dead-lettered by the broker from wallet-worker (delivery_limit)"
            },
            at: "2026-11-27T16:00:00.000Z",
            data: serde_json::json!({ "order": { "id": format!("ord-{i}") } }),
        })
        .collect();
    put(w, &dead).await;
}

async fn place_order(w: &TestWorker, order_id: &str, customer_id: &str) {
    w.publish(
        "order.placed",
        &order_placed(order_id, customer_id, &unique("tok"), false),
    )
    .await;
    w.wait_for_count(
        &format!("SELECT count(*) FROM orders WHERE id = '{order_id}'"),
        1,
    )
    .await;
}

/// Nothing a page may never show: the admin token, the gateway secret, the broker's
/// password, a payment token.
fn assert_no_secret(page: &str, token: &str) {
    for secret in [ADMIN_TOKEN, GATEWAY_SECRET, "guest:guest", token] {
        assert!(!page.contains(secret), "a page shows {secret}");
    }
}

#[tokio::test]
async fn console_in_a_browser_shows_a_dead_letter_replays_it_and_counts_its_outcome() {
    let mut w = spawn_worker().await;
    w.gateway_accepts().await;
    // Some traffic for the figures, then two dead letters: one to replay once its
    // order exists, one malformed with a token in its body.
    for wave in 0..4 {
        let saves = publish_saves(&w, &format!("console{wave}"), 12).await;
        for id in &saves {
            w.event_caused_by(id).await;
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    let save_id = dead_letter_save(&w, "ord_console_late").await;
    let token = "tok_console_secret_7781";
    let bad_id = dead_letter_malformed(&w, token).await;
    more_dead_letters(&w).await;
    place_order(&w, "ord_console_late", "cus_console").await;
    let browser = Browser::start().await;
    let mut pages = Vec::new();

    browser.goto(&url_with_token(&w, "/ui/")).await;
    browser.find(r#"#live [data-ready="true"]"#).await;
    browser.find("#gateways tr[data-gateway]").await;
    pages.push(browser.source().await);

    browser
        .find(r#"header nav a[href="/ui/dlq"]"#)
        .await
        .click()
        .await
        .unwrap();
    // The failure groups, largest first, and the totals by error kind and type.
    let count = |row: &str| format!(r#"{row} td[data-count]"#);
    let unavailable = browser
        .find(&count(r#"#by-error tr[data-error="gateway_unavailable"]"#))
        .await;
    assert_eq!(unavailable.text().await.unwrap(), "5");
    for kind in ["order_not_found", "malformed"] {
        let row = format!(r#"#by-error tr[data-error="{kind}"]"#);
        assert_eq!(browser.find(&count(&row)).await.text().await.unwrap(), "1");
    }
    assert_eq!(browser.count("#groups tr[data-group]").await, 4);
    let largest = browser.find("#groups tr[data-group] td.num").await;
    assert_eq!(largest.text().await.unwrap(), "5", "largest group first");
    pages.push(browser.source().await);
    browser.screenshot("console-dlq-groups").await;

    // The malformed one's group, its list, then the dead letter in full: its token masked.
    let group_of =
        |id: &str| format!("SELECT group_key FROM dead_letters WHERE message_id = '{id}'");
    let group: String = sqlx::query_scalar(&group_of(&bad_id))
        .fetch_one(&w.pool)
        .await
        .unwrap();
    let link = format!(r#"#groups tr[data-group="{group}"] td.detail a"#);
    browser.find(&link).await.click().await.unwrap();
    assert_eq!(browser.path().await, "/ui/dlq/list");
    let show = format!(r#"tr[data-message-id="{bad_id}"] a.button"#);
    browser.find(&show).await.click().await.unwrap();
    let body = browser.find("pre[data-body]").await.text().await.unwrap();
    assert!(body.contains("[redacted]"), "{body}");
    let source = browser.source().await;
    assert!(source.contains("x-wallet-error"), "headers are shown");
    pages.push(source);

    // The late save: listed by its error kind, shown, replayed, gone from the groups.
    browser
        .goto(&url(&w, "/ui/dlq/list?error=order_not_found"))
        .await;
    let show = format!(r#"tr[data-message-id="{save_id}"] a.button"#);
    browser.find(&show).await.click().await.unwrap();
    let body = browser.find("pre[data-body]").await.text().await.unwrap();
    assert!(body.contains("ord_console_late"), "{body}");
    pages.push(browser.source().await);
    browser
        .find(r#"div.actions button[data-action="replay"]"#)
        .await
        .click()
        .await
        .unwrap();
    let notice = browser.find(r#"[data-notice="replayed"]"#).await;
    assert_eq!(notice.text().await.unwrap(), "Replayed 1 dead letter.");
    assert_eq!(browser.path().await, "/ui/dlq");
    assert_eq!(
        browser
            .count(r#"#by-error tr[data-error="order_not_found"]"#)
            .await,
        0,
        "the replayed one left the groups"
    );
    browser
        .find(&format!(r#"#groups tr[data-group="{group}"]"#))
        .await;
    pages.push(browser.source().await);
    let saved = w.event_caused_by(&save_id).await;
    assert_eq!(saved.routing_key, "wallet.saved");
    // Who did it, in the history.
    browser
        .find(r#"header nav a[href="/ui/dlq/history"]"#)
        .await
        .click()
        .await
        .unwrap();
    let replayed = browser
        .find(r#"#history tr[data-action="dlq.replay"][data-actor="ops"] td[data-count]"#)
        .await;
    assert_eq!(replayed.text().await.unwrap(), "1");
    pages.push(browser.source().await);

    // Its outcome counted on the overview (sampled every 2 s), and the dead letters
    // left in the store (counted every 5 s).
    let outcome = r#"#by-type tr[data-type="wallet.save"] [data-outcome="saved"]"#;
    let depth = r#"[data-card="dead-letters"] .value"#;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        browser.goto(&url(&w, "/ui/")).await;
        if browser.count(outcome).await == 1
            && browser.find(depth).await.text().await.unwrap() == "8"
        {
            let counted = browser
                .find(outcome)
                .await
                .attr("data-count")
                .await
                .unwrap();
            assert_eq!(counted.as_deref(), Some("1"));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the replayed save was not counted"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    browser.find(r#"svg[data-chart="live-throughput"]"#).await;
    pages.push(browser.source().await);
    let png = browser.screenshot("console").await;
    // console.js refreshes the live panel (the Content-Security-Policy lets it).
    browser.find("#live[data-refreshed-at]").await;
    assert!(png.len() < 300 * 1024, "screenshot of {} bytes", png.len());
    for page in &pages {
        assert_no_secret(page, token);
    }
    browser.close().await;
    w.stop().await;
}

/// A client that shows redirects instead of following them.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

#[tokio::test]
async fn console_asks_for_the_admin_token_as_the_basic_password() {
    let w = spawn_worker().await;
    let get = |user: &str, password: Option<&str>| {
        client()
            .get(url(&w, "/ui/"))
            .basic_auth(user, password)
            .send()
    };
    for response in [
        client().get(url(&w, "/ui/")).send().await.unwrap(),
        get(USER, Some("wrong")).await.unwrap(),
        get(USER, None).await.unwrap(),
        client()
            .get(url(&w, "/ui/dlq"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap(),
    ] {
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response.headers()["www-authenticate"],
            r#"Basic realm="wallet-worker""#
        );
    }
    let page = get("anyone", Some(ADMIN_TOKEN)).await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.starts_with("default-src 'self'"), "{csp}");
    assert!(!csp.contains("unsafe-inline") && csp.contains("frame-ancestors 'none'"));
    assert_eq!(page.headers()["x-content-type-options"], "nosniff");
    let body = page.text().await.unwrap();
    assert!(body.contains(r#"id="live""#));
    assert_eq!(
        body.matches("<script").count(),
        body.matches(r#"<script src="/ui/assets/"#).count(),
        "no inline script"
    );
    assert!(!body.contains("style="), "no inline style");
    assert!(!body.contains(r#"src="http"#) && !body.contains(r#"href="http"#));
    assert_no_secret(&body, ADMIN_TOKEN);
    for asset in ["/ui/assets/console.css", "/ui/assets/console.js"] {
        let response = client()
            .get(url(&w, asset))
            .basic_auth(USER, Some(ADMIN_TOKEN))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{asset}");
    }
    w.stop().await;
}

#[tokio::test]
async fn console_is_off_without_an_admin_token() {
    for token in [None, Some("")] {
        let mut args = test_args();
        args.admin_token = token.map(wallet_worker::domain::Secret::new);
        let w = spawn_worker_with(args).await;
        for path in ["/ui/", "/ui/dlq"] {
            let response = client()
                .get(url(&w, path))
                .basic_auth(USER, token)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        }
        w.stop().await;
    }
}

const FORM: &str = "application/x-www-form-urlencoded";

/// `pairs` as a form body.
fn form(pairs: &[(&str, &str)]) -> String {
    let encode = wallet_worker::html::query_value;
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The form token of the console page at `path`.
async fn form_token(w: &TestWorker, path: &str) -> String {
    let page = client()
        .get(url(w, path))
        .basic_auth(USER, Some(ADMIN_TOKEN))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let (_, rest) = page
        .split_once(r#"name="form_token" value=""#)
        .expect("a form on the page");
    rest.split('"').next().unwrap().to_owned()
}

#[tokio::test]
async fn console_refuses_a_post_from_another_origin_or_without_its_form_token() {
    let w = spawn_worker().await;
    let bad_id = dead_letter_malformed(&w, "tok_console_cross_1").await;
    let good = form_token(&w, "/ui/dlq").await;
    let own_origin = format!("http://{}", w.admin_addr);
    let purge = |origin: Option<&str>, token: &str, password: &str| {
        let mut request = client()
            .post(url(&w, "/ui/dlq/purge"))
            .basic_auth(USER, Some(password))
            .header("Content-Type", FORM)
            .body(form(&[("id", bad_id.as_str()), ("form_token", token)]));
        if let Some(origin) = origin {
            request = request.header("Origin", origin);
        }
        request.send()
    };
    let refused = [
        (
            Some("http://evil.example"),
            good.as_str(),
            StatusCode::FORBIDDEN,
        ),
        (Some("null"), good.as_str(), StatusCode::FORBIDDEN),
        (None, good.as_str(), StatusCode::FORBIDDEN),
        (Some(own_origin.as_str()), "forged", StatusCode::FORBIDDEN),
    ];
    for (origin, token, status) in refused {
        let response = purge(origin, token, ADMIN_TOKEN).await.unwrap();
        assert_eq!(
            response.status(),
            status,
            "origin {origin:?}, token {token}"
        );
    }
    let response = purge(Some(&own_origin), &good, "wrong").await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(w.dead_letter_count().await, 1, "nothing was purged");

    let response = purge(Some(&own_origin), &good, ADMIN_TOKEN).await.unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        response.headers()["location"],
        "/ui/dlq?done=purged&n=1&failed=0"
    );
    assert_eq!(w.dead_letter_count().await, 0);
    w.stop().await;
}

#[tokio::test]
async fn console_closes_an_open_gateway_circuit() {
    let w = spawn_worker().await;
    sqlx::query(
        "UPDATE gateways SET consecutive_failures = 9,
             circuit_open_until = now() + interval '1 hour' WHERE id = $1",
    )
    .bind(GATEWAY_ID)
    .execute(&w.pool)
    .await
    .unwrap();
    let page = client()
        .get(url(&w, "/ui/"))
        .basic_auth(USER, Some(ADMIN_TOKEN))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains(r#"data-circuit="open""#), "{page}");
    let response = client()
        .post(url(&w, "/ui/gateways/reset"))
        .basic_auth(USER, Some(ADMIN_TOKEN))
        .header("Origin", format!("http://{}", w.admin_addr))
        .header("Content-Type", FORM)
        .body(form(&[
            ("id", GATEWAY_ID),
            ("form_token", &form_token(&w, "/ui/").await),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let open = w
        .count("SELECT count(*) FROM gateways WHERE circuit_open_until IS NOT NULL OR consecutive_failures > 0")
        .await;
    assert_eq!(open, 0);
    w.stop().await;
}

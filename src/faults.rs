//! Fail points for the fault-injection tests (`--features failpoints`); without the
//! feature every function here is a no-op the compiler removes.
//!
//! Names in use, each configured as `return(MESSAGE_ID)` to act on one message:
//! `commit.before` (hold the message between its handler and its commit),
//! `delivery.panic` (its handler panics on every delivery) and `delivery.crash` (the
//! process aborts on every delivery); `committer.panic` (configured as `panic`: a
//! commit loop dies); `intake.batch` (configured as `return(MS)`: the dead-letter intake
//! waits that long before each batch) and `intake.after_commit` (configured as
//! `return`: the process aborts after storing an intake batch, before acking it);
//! `plaintext.sealed` as `return(TABLE)` aborts the process after sealing a batch of
//! that table's plaintext rows (an upgrade killed mid-way).

/// Waits here while the fail point `name` is configured as `return(ID)` with `id`.
/// Tests use it to hold a message between its handler's reads and its commit;
/// [`reached`] says when one is waiting.
pub async fn pause_for(name: &str, id: &str) {
    #[cfg(feature = "failpoints")]
    {
        let mut announced = false;
        while fail::eval(name, |arg| arg).is_some_and(|target| target.as_deref() == Some(id)) {
            if !announced {
                announced = true;
                reached::mark(name);
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
    #[cfg(not(feature = "failpoints"))]
    let _ = (name, id);
}

/// Whether a task has waited at the fail point `name` (see [`pause_for`]).
pub fn reached(name: &str) -> bool {
    #[cfg(feature = "failpoints")]
    {
        reached::get(name)
    }
    #[cfg(not(feature = "failpoints"))]
    {
        let _ = name;
        false
    }
}

/// Panics when the fail point `name` is configured with `panic`.
pub fn panic_point(name: &str) {
    #[cfg(feature = "failpoints")]
    fail::fail_point!(name);
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}

/// Panics when the fail point `name` is configured as `return(ID)` and `id` is ID: a
/// message that breaks its handler on every delivery.
pub fn panic_for(name: &str, id: &str) {
    #[cfg(feature = "failpoints")]
    if let Some(Some(target)) = fail::eval(name, |arg| arg)
        && target == id
    {
        panic!("injected panic for message {id}");
    }
    #[cfg(not(feature = "failpoints"))]
    let _ = (name, id);
}

/// Aborts the process when the fail point `name` is configured as `return(ID)` and `id`
/// is ID: a message that crashes the worker on every delivery.
pub fn crash_for(name: &str, id: &str) {
    #[cfg(feature = "failpoints")]
    if let Some(Some(target)) = fail::eval(name, |arg| arg)
        && target == id
    {
        std::process::abort();
    }
    #[cfg(not(feature = "failpoints"))]
    let _ = (name, id);
}

/// Waits `MS` milliseconds when the fail point `name` is configured as `return(MS)`: a
/// loop slowed down, so a test can stop the process in the middle of it.
pub async fn delay(name: &str) {
    #[cfg(feature = "failpoints")]
    if let Some(Some(ms)) = fail::eval(name, |arg| arg)
        && let Ok(ms) = ms.parse()
    {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}

/// Aborts the process when the fail point `name` is configured as `return`: a crash at
/// exactly that place (between a commit and its ack, say).
pub fn crash_point(name: &str) {
    #[cfg(feature = "failpoints")]
    if fail::eval(name, |_| ()).is_some() {
        std::process::abort();
    }
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}

#[cfg(feature = "failpoints")]
mod reached {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};

    fn points() -> &'static Mutex<HashSet<String>> {
        static POINTS: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
        POINTS.get_or_init(Default::default)
    }

    pub fn mark(name: &str) {
        points()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_owned());
    }

    pub fn get(name: &str) -> bool {
        points()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(name)
    }
}

/// Configures the fail point `name` (`return(ID)`, `panic`, `off`): for tests.
#[cfg(feature = "failpoints")]
pub fn configure(name: &str, action: &str) {
    fail::cfg(name, action).expect("a valid fail point action");
}

/// Removes the fail point `name`: what it held goes on.
#[cfg(feature = "failpoints")]
pub fn release(name: &str) {
    fail::remove(name);
}

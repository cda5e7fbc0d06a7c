//! The tools that ship beside the worker in the same binary, fenced off from it: the
//! load generator (`loadgen`), the local gateway (`gateway-sim`), the load-test report's
//! HTML charts and the `demo`. They drive the worker from outside — over AMQP, HTTP and
//! its public entry points — as a user or a test would.
//!
//! The fence runs one way: tools import the worker library, the worker never imports
//! anything from here (only `src/cli/` and `main.rs` do). A unit test below reads the
//! source tree and fails when that changes, and when a module outside the command line
//! imports its clap structs.

pub mod charts;
pub mod demo;
pub mod gateway_sim;
pub mod loadgen;

#[cfg(test)]
mod fence {
    use std::path::{Path, PathBuf};

    /// Every `.rs` file under `dir`, with its path relative to `src/`.
    fn sources(src: &Path, dir: &Path, found: &mut Vec<(String, String)>) {
        let entries = std::fs::read_dir(dir).expect("src/ is readable");
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                sources(src, &path, found);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                let text = std::fs::read_to_string(&path).expect("a source file is UTF-8");
                let relative = path.strip_prefix(src).expect("under src/");
                found.push((relative.to_string_lossy().replace('\\', "/"), text));
            }
        }
    }

    fn tree() -> Vec<(String, String)> {
        let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut found = Vec::new();
        sources(&src, &src, &mut found);
        assert!(found.len() > 50, "the walk found the source tree");
        found
    }

    /// Files of the command line: they may use both sides.
    fn is_command_line(path: &str) -> bool {
        path == "main.rs" || path == "config.rs" || path.starts_with("cli/")
    }

    #[test]
    fn the_worker_library_never_imports_the_tools() {
        let offenders: Vec<String> = tree()
            .into_iter()
            .filter(|(path, _)| {
                !is_command_line(path) && path != "tools.rs" && !path.starts_with("tools/")
            })
            .filter(|(_, text)| text.contains("tools::"))
            .map(|(path, _)| path)
            .collect();
        assert!(
            offenders.is_empty(),
            "worker modules mention tools:: (the tools sit beside the worker; move what \
             both need into the library): {offenders:?}"
        );
    }

    #[test]
    fn only_the_command_line_imports_its_clap_structs() {
        let offenders: Vec<String> = tree()
            .into_iter()
            .filter(|(path, _)| !is_command_line(path))
            .filter(|(_, text)| text.contains(concat!("crate", "::config")))
            .map(|(path, _)| path)
            .collect();
        assert!(
            offenders.is_empty(),
            "library modules import the command line (take plain settings, converted in \
             src/cli/): {offenders:?}"
        );
    }
}

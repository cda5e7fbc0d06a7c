//! Every message the tests publish and every event the worker emits is checked against
//! its JSON Schema in `docs/schemas/` (the interface documented in the repository).

use serde_json::Value;
use std::collections::HashMap;
use std::sync::OnceLock;

fn validators() -> &'static HashMap<String, jsonschema::Validator> {
    static VALIDATORS: OnceLock<HashMap<String, jsonschema::Validator>> = OnceLock::new();
    VALIDATORS.get_or_init(|| {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/schemas");
        std::fs::read_dir(dir)
            .expect("docs/schemas")
            .map(|entry| {
                let path = entry.expect("schema file").path();
                let kind = path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .expect("schema name")
                    .to_owned();
                let schema: Value =
                    serde_json::from_slice(&std::fs::read(&path).expect("read schema"))
                        .expect("schemas are JSON");
                let validator = jsonschema::options()
                    .should_validate_formats(true)
                    .build(&schema)
                    .unwrap_or_else(|err| panic!("{}: {err}", path.display()));
                (kind, validator)
            })
            .collect()
    })
}

/// Panics unless `message` satisfies the schema of its `type`.
pub fn assert_valid(kind: &str, message: &Value) {
    let validator = validators()
        .get(kind)
        .unwrap_or_else(|| panic!("no schema docs/schemas/{kind}.json"));
    let errors: Vec<String> = validator
        .iter_errors(message)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{kind} does not match docs/schemas/{kind}.json: {errors:?}\n{message}"
    );
}

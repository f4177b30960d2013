//! Prints what `dotenvy::from_path` (what `dotenvy::dotenv()` does for a found
//! file) leaves in the process environment, as JSON on stdout:
//! `{"values": {KEY: VALUE, ...}, "error": null | "message", "kept": [KEY, ...]}`.
//! `values` holds the variables that the call added. dotenvy never overrides
//! a variable that is already set: `kept` lists the keys that the file
//! defines (before any failing line) but that the call left as they were.
//! Run it with a cleared environment (generate.py does).
use std::collections::{BTreeMap, BTreeSet};
use std::env;

fn main() {
    let path = env::args_os().nth(1).expect("usage: dotenvy-oracle FILE");
    let before: BTreeSet<_> = env::vars_os().map(|(k, _)| k).collect();
    let result = dotenvy::from_path(&path);
    let mut values = serde_json::Map::new();
    let after: BTreeMap<_, _> = env::vars_os().collect();
    for (k, v) in after {
        if before.contains(&k) {
            continue;
        }
        values.insert(
            k.to_string_lossy().into_owned(),
            serde_json::Value::String(v.to_string_lossy().into_owned()),
        );
    }
    // Keys the file defines that were already set (so from_path kept them).
    let mut kept = Vec::new();
    if let Ok(iter) = dotenvy::from_path_iter(&path) {
        for item in iter {
            let Ok((k, _)) = item else { break };
            if before.contains(std::ffi::OsStr::new(&k)) && !kept.contains(&k) {
                kept.push(k);
            }
        }
    }
    let error = match result {
        Ok(()) => serde_json::Value::Null,
        Err(e) => serde_json::Value::String(e.to_string()),
    };
    let out = serde_json::json!({ "values": values, "error": error, "kept": kept });
    println!("{out}");
}

//! The file as written: serde structs mirroring `agent.yaml` one to one,
//! and the multi-pass parse that collects type errors per section.
//!
//! Every field is optional here (`null` and absent both mean "default"), so
//! serde never reports a missing field; required keys are checked in
//! `validate.rs`, where the enclosing mapping's position is known. Values
//! that need checking later keep their position via [`Spanned`].

use std::cell::Cell;
use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_saphyr::{Location, Spanned};

use super::{ConfigError, ConfigErrors};

/// A string-valued YAML node with its position.
pub(crate) type SStr = Spanned<String>;

/// `agent:`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default, rename = "agent settings")]
pub(crate) struct RawAgent {
    pub id: Option<SStr>,
    pub socket: Option<SStr>,
    pub socket_mode: Option<SStr>,
    pub state_dir: Option<SStr>,
    pub debounce: Option<SStr>,
    pub reconcile_interval: Option<SStr>,
    pub shutdown_timeout: Option<SStr>,
    pub log_format: Option<SStr>,
    pub log_level: Option<SStr>,
    pub max_file_size: Option<SStr>,
    pub metrics_listen: Option<SStr>,
}

/// `control:`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default, rename = "control settings")]
pub(crate) struct RawControl {
    pub allow_uids: Option<Vec<u32>>,
    pub allow_groups: Option<Vec<SStr>>,
}

/// `aws:`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default, rename = "aws settings")]
pub(crate) struct RawAws {
    pub region: Option<SStr>,
    pub profile: Option<SStr>,
    pub role_arn: Option<SStr>,
    pub external_id: Option<SStr>,
    pub endpoint_url: Option<SStr>,
    pub max_write_tps: Option<Spanned<i64>>,
    pub max_read_tps: Option<Spanned<i64>>,
    pub call_timeout: Option<SStr>,
}

/// One element of `syncs:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default, rename = "sync")]
pub(crate) struct RawSync {
    pub name: Option<SStr>,
    pub description: Option<String>,
    pub enabled: Option<bool>,
    pub auto_sync: Option<bool>,
    pub source: Option<Spanned<RawSource>>,
    pub destination: Option<Spanned<RawDestination>>,
    pub options: Option<Spanned<RawOptions>>,
}

/// `syncs[].source:`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default, rename = "source settings")]
pub(crate) struct RawSource {
    pub files: Option<Spanned<Vec<SStr>>>,
    pub format: Option<SStr>,
    pub environment: Option<SStr>,
    pub include: Option<Spanned<Vec<SStr>>>,
    pub exclude: Option<Vec<SStr>>,
    pub expand: Option<bool>,
}

/// `syncs[].destination:`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default, rename = "destination settings")]
pub(crate) struct RawDestination {
    pub region: Option<SStr>,
    pub mapping: Option<SStr>,
    pub secret_name: Option<SStr>,
    pub key_schema: Option<SStr>,
    pub kms_key_id: Option<SStr>,
    pub description: Option<SStr>,
    pub tags: Option<Spanned<SpannedMap>>,
    pub sync_metadata_as_tags: Option<bool>,
    pub replica_regions: Option<Vec<SStr>>,
    pub profile: Option<SStr>,
    pub role_arn: Option<SStr>,
    pub external_id: Option<SStr>,
    pub recovery_window_days: Option<Spanned<i64>>,
    pub adopt_existing: Option<bool>,
}

/// `syncs[].options:`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default, rename = "sync options")]
pub(crate) struct RawOptions {
    pub initial_sync: Option<SStr>,
    pub disable_secret_deletion: Option<bool>,
    pub max_delete_fraction: Option<Spanned<f64>>,
}

/// A string-to-string mapping that keeps each key's and value's position,
/// in file order (duplicate keys are rejected by the YAML layer).
#[derive(Debug, Default)]
pub(crate) struct SpannedMap(pub Vec<(SStr, SStr)>);

impl<'de> Deserialize<'de> for SpannedMap {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MapVisitor;
        impl<'de> Visitor<'de> for MapVisitor {
            type Value = SpannedMap;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping of strings to strings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SpannedMap, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry::<SStr, SStr>()? {
                    out.push(entry);
                }
                Ok(SpannedMap(out))
            }
        }
        deserializer.deserialize_map(MapVisitor)
    }
}

/// The whole file after the typed passes: every section that parsed.
#[derive(Debug, Default)]
pub(crate) struct RawRoot {
    pub agent: Option<Spanned<RawAgent>>,
    pub control: Option<Spanned<RawControl>>,
    pub aws: Option<Spanned<RawAws>>,
    /// Syncs that parsed, in file order.
    pub syncs: Vec<Spanned<RawSync>>,
    /// Top-level keys other than agent/control/aws/syncs.
    pub unknown_keys: Vec<SStr>,
    /// `aws:` had a type error, so its values are unknown; checks that
    /// depend on them (the region) stay quiet rather than cascade.
    pub aws_failed: bool,
}

/// A part of the file that is deserialized (and can fail) on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Section {
    Agent,
    Control,
    Aws,
    /// `syncs:` itself (e.g. not a list).
    SyncList,
    /// One element of `syncs:`.
    Sync(usize),
}

/// What one typed pass should skip, and where it failed.
#[derive(Default)]
struct Pass {
    skipped: BTreeSet<Section>,
    failed: Cell<Option<Section>>,
}

impl Pass {
    /// Records the innermost failing section (the first one recorded wins,
    /// so `Sync(3)` is not overwritten by the enclosing `SyncList`).
    fn fail(&self, section: Section) {
        if self.failed.get().is_none() {
            self.failed.set(Some(section));
        }
    }
}

/// Stop adding type errors (and parse passes) after this many; the file is
/// then far enough from valid that more lines would not help.
const MAX_TYPE_ERRORS: usize = 50;

fn yaml_options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    // A config has hundreds of nodes; these caps keep alias bombs and deep
    // nesting cheap even though the file may be parsed several times.
    budget.max_events = 200_000;
    budget.max_nodes = 100_000;
    budget.max_aliases = 1_000;
    budget.max_anchors = 1_000;
    budget.max_recorded_anchor_events = 100_000;
    budget.max_recorded_anchor_bytes = 4 * 1024 * 1024;
    budget.max_depth = 32;
    budget.max_documents = 2;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options.alias_limits.max_total_replayed_events = 100_000;
    options.alias_limits.max_replay_stack_depth = 16;
    options.with_snippet = false;
    options
}

/// Parses `text` into the raw model, returning it with the type errors of
/// the sections that failed. A syntax-level problem (or a structure that
/// cannot be split into sections) is returned as `Err` on its own.
pub(crate) fn parse(path: &Path, text: &str) -> Result<(RawRoot, Vec<ConfigError>), ConfigErrors> {
    // Pass 0: syntax, duplicate keys, anchors, budget; no types involved.
    match serde_saphyr::from_str_with_options::<Option<IgnoredAny>>(text, yaml_options()) {
        Ok(Some(_)) => {}
        Ok(None) => {
            return Err(ConfigErrors(vec![ConfigError::new(
                path,
                1,
                1,
                "config file is empty; expected a mapping with agent, control, aws and syncs",
            )]));
        }
        Err(e) => return Err(ConfigErrors(vec![yaml_error(path, &e)])),
    }

    let mut pass = Pass::default();
    let mut errors = Vec::new();
    loop {
        pass.failed.set(None);
        let result =
            serde_saphyr::with_deserializer_from_str_with_options(text, yaml_options(), |de| {
                RootSeed { pass: &pass }.deserialize(de)
            });
        match result {
            Ok(mut root) => {
                root.aws_failed = pass.skipped.contains(&Section::Aws);
                for key in &root.unknown_keys {
                    let (line, column) = line_col(&key.referenced);
                    errors.push(ConfigError::new(
                        path,
                        line,
                        column,
                        format!(
                            "unknown key `{}`, expected one of agent, control, aws, syncs",
                            key.value
                        ),
                    ));
                }
                return Ok((root, errors));
            }
            Err(e) => {
                errors.push(yaml_error(path, &e));
                match pass.failed.get() {
                    Some(section) if !pass.skipped.contains(&section) => {
                        pass.skipped.insert(section);
                    }
                    // Not attributable to a section (e.g. the top level is not
                    // a mapping): nothing more can be learned.
                    _ => return Err(ConfigErrors(errors)),
                }
                if errors.len() >= MAX_TYPE_ERRORS {
                    errors.push(ConfigError::new(
                        path,
                        1,
                        1,
                        format!("too many errors ({MAX_TYPE_ERRORS}); fix these first"),
                    ));
                    return Err(ConfigErrors(errors));
                }
            }
        }
    }
}

/// Converts a YAML-layer error into `PATH:LINE:COL: message` form.
pub(crate) fn yaml_error(path: &Path, error: &serde_saphyr::Error) -> ConfigError {
    let (line, column) = error
        .location()
        .filter(|l| l.line() > 0)
        .map_or((1, 1), |l| (l.line(), l.column().max(1)));
    let message = serde_saphyr::MessageFormatter::format_message(
        &serde_saphyr::UserMessageFormatter,
        error.without_snippet(),
    );
    ConfigError::new(path, line, column, friendly(&message))
}

/// Rewords the YAML layer's terse type messages in config terms.
fn friendly(message: &str) -> String {
    let table: &[(&str, &str)] = &[
        (
            "expected mapping start",
            "expected a mapping (key: value pairs)",
        ),
        ("expected sequence start", "expected a list"),
        ("expected string scalar", "expected a string"),
        ("invalid boolean", "expected true or false"),
        ("invalid u32", "expected a whole number 0..=4294967295"),
        ("invalid i64", "expected a whole number"),
        ("invalid f64", "expected a number"),
        ("invalid floating point", "expected a number"),
        (
            "null is not allowed here",
            "a value is required here (found null or nothing)",
        ),
    ];
    for (from, to) in table {
        if message == *from {
            return (*to).to_string();
        }
    }
    if let Some(rest) = message.strip_prefix("unknown field ") {
        return format!("unknown key {rest}");
    }
    message.to_string()
}

/// Location of a node for messages; 1:1 if the YAML layer had none.
pub(crate) fn line_col(location: &Location) -> (u64, u64) {
    if location.line() == 0 {
        (1, 1)
    } else {
        (location.line(), location.column().max(1))
    }
}

struct RootSeed<'p> {
    pass: &'p Pass,
}

impl<'de> DeserializeSeed<'de> for RootSeed<'_> {
    type Value = RawRoot;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<RawRoot, D::Error> {
        deserializer.deserialize_map(RootVisitor { pass: self.pass })
    }
}

struct RootVisitor<'p> {
    pass: &'p Pass,
}

impl<'de> Visitor<'de> for RootVisitor<'_> {
    type Value = RawRoot;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping with agent, control, aws and syncs")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawRoot, A::Error> {
        let pass = self.pass;
        let mut root = RawRoot::default();
        while let Some(key) = map.next_key::<SStr>()? {
            match key.value.as_str() {
                "agent" => root.agent = section(&mut map, pass, Section::Agent)?,
                "control" => root.control = section(&mut map, pass, Section::Control)?,
                "aws" => root.aws = section(&mut map, pass, Section::Aws)?,
                "syncs" => {
                    if pass.skipped.contains(&Section::SyncList) {
                        map.next_value::<IgnoredAny>()?;
                    } else {
                        root.syncs = map
                            .next_value_seed(SyncsSeed { pass })
                            .inspect_err(|_| pass.fail(Section::SyncList))?;
                    }
                }
                _ => {
                    // Recorded rather than returned: an error would end the
                    // pass, and the value is ignored anyway.
                    root.unknown_keys.push(key);
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(root)
    }
}

fn section<'de, A, T>(map: &mut A, pass: &Pass, section: Section) -> Result<Option<T>, A::Error>
where
    A: MapAccess<'de>,
    T: Deserialize<'de>,
{
    if pass.skipped.contains(&section) {
        map.next_value::<IgnoredAny>()?;
        return Ok(None);
    }
    map.next_value::<Option<T>>()
        .inspect_err(|_| pass.fail(section))
}

struct SyncsSeed<'p> {
    pass: &'p Pass,
}

impl<'de> DeserializeSeed<'de> for SyncsSeed<'_> {
    type Value = Vec<Spanned<RawSync>>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_option(SyncsVisitor { pass: self.pass })
    }
}

struct SyncsVisitor<'p> {
    pass: &'p Pass,
}

impl<'de> Visitor<'de> for SyncsVisitor<'_> {
    type Value = Vec<Spanned<RawSync>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of syncs")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        let mut index = 0;
        loop {
            let section = Section::Sync(index);
            if self.pass.skipped.contains(&section) {
                if seq.next_element::<IgnoredAny>()?.is_none() {
                    break;
                }
            } else {
                match seq
                    .next_element::<Spanned<RawSync>>()
                    .inspect_err(|_| self.pass.fail(section))?
                {
                    Some(sync) => out.push(sync),
                    None => break,
                }
            }
            index += 1;
        }
        Ok(out)
    }
}

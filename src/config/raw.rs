//! The file as written: serde structs mirroring `agent.yaml` one to one,
//! read leniently so that one bad value hides nothing else, plus a schema
//! walk that reports unknown keys.
//!
//! Every field is optional here (`null` and absent both mean "default"), so
//! serde never reports a missing field; required keys are checked in
//! `validate.rs`, where the enclosing mapping's position is known. Values
//! that need checking later keep their position via [`Spanned`].
//!
//! The structs ignore keys they do not know; [`unknown_keys`] reports them
//! in a separate pass over the document that never fails on types, so every
//! unknown key is found even next to (or inside) a value that is wrong.
//!
//! # The lenient read
//!
//! Each field is a [`Field`] and each list element a [`Lenient`]: a node that
//! is either read or marked `Invalid`. serde cannot carry on after an error
//! (the deserializer stops partway through a node), so the read is a loop
//! of passes over the text. When a pass fails, the innermost lenient node
//! around the error is remembered and the next pass skips it: the node is
//! consumed as [`IgnoredAny`] and becomes `Invalid`, while everything around
//! it is read normally. The loop ends with the first pass that succeeds, so
//! every type error is reported, each at its own position, and semantic
//! checks then see every value that did parse. A pass costs one parse of a
//! file of at most [`super::MAX_CONFIG_BYTES`], and at most
//! [`MAX_TYPE_ERRORS`] passes fail.
//!
//! A lenient node is identified by its path of sibling indexes: its index
//! among the lenient nodes read directly inside its parent lenient node,
//! and so on up to the root. Skipping a node does not change the index of
//! any other node, so paths stay valid from one pass to the next. The
//! derive-generated code has no way to hand context to a field's
//! `Deserialize`, so the state of the current pass lives in a thread-local
//! that [`run_pass`] installs and always clears again.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor,
};
use serde::{Deserialize, Deserializer};
use serde_saphyr::{Location, Spanned};

use super::{ConfigError, ConfigErrors};

/// A string-valued YAML node with its position.
pub(crate) type SStr = Spanned<String>;

/// `agent:`
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RawAgent {
    pub id: Field<SStr>,
    pub socket: Field<SStr>,
    pub socket_mode: Field<SStr>,
    pub state_dir: Field<SStr>,
    pub debounce: Field<SStr>,
    pub reconcile_interval: Field<SStr>,
    pub start_jitter: Field<SStr>,
    pub shutdown_timeout: Field<SStr>,
    pub log_format: Field<SStr>,
    pub log_level: Field<SStr>,
    pub max_file_size: Field<SStr>,
    pub metrics_listen: Field<SStr>,
}

/// `control:`
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RawControl {
    pub allow_uids: Field<Vec<Lenient<u32>>>,
    pub allow_groups: Field<Vec<Lenient<SStr>>>,
}

/// `aws:`
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RawAws {
    pub region: Field<SStr>,
    pub profile: Field<SStr>,
    pub role_arn: Field<SStr>,
    pub external_id: Field<SStr>,
    pub endpoint_url: Field<SStr>,
    pub max_write_tps: Field<Spanned<i64>>,
    pub max_read_tps: Field<Spanned<i64>>,
    pub call_timeout: Field<SStr>,
}

/// One element of `syncs:`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RawSync {
    pub name: Field<SStr>,
    pub description: Field<String>,
    pub enabled: Field<bool>,
    pub auto_sync: Field<bool>,
    pub source: Field<Spanned<RawSource>>,
    pub destination: Field<Spanned<RawDestination>>,
    pub options: Field<Spanned<RawOptions>>,
}

/// `syncs[].source:`
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RawSource {
    pub files: Field<Spanned<Vec<Lenient<SStr>>>>,
    pub format: Field<SStr>,
    pub environment: Field<SStr>,
    pub include: Field<Spanned<Vec<Lenient<SStr>>>>,
    pub exclude: Field<Vec<Lenient<SStr>>>,
    pub expand: Field<bool>,
}

/// `syncs[].destination:`
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RawDestination {
    pub region: Field<SStr>,
    pub mapping: Field<SStr>,
    pub secret_name: Field<SStr>,
    pub key_schema: Field<SStr>,
    pub kms_key_id: Field<SStr>,
    pub description: Field<SStr>,
    pub tags: Field<Spanned<SpannedMap>>,
    pub sync_metadata_as_tags: Field<bool>,
    pub replica_regions: Field<Vec<Lenient<SStr>>>,
    pub profile: Field<SStr>,
    pub role_arn: Field<SStr>,
    pub external_id: Field<SStr>,
    pub recovery_window_days: Field<Spanned<i64>>,
    pub adopt_existing: Field<bool>,
}

/// `syncs[].options:`
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RawOptions {
    pub initial_sync: Field<SStr>,
    pub disable_secret_deletion: Field<bool>,
    pub max_delete_fraction: Field<Spanned<f64>>,
}

/// The whole file: every section, each as far as it parsed.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RawRoot {
    pub agent: Field<Spanned<RawAgent>>,
    pub control: Field<Spanned<RawControl>>,
    pub aws: Field<Spanned<RawAws>>,
    /// The syncs in file order, including those that did not parse.
    pub syncs: Field<Vec<Lenient<Spanned<RawSync>>>>,
    /// `aws:` has an unknown key, perhaps a misspelled `region`; a missing
    /// region is then not reported as well.
    #[serde(skip)]
    pub aws_has_unknown_keys: bool,
}

/// A string-to-string mapping that keeps each key's and value's position,
/// in file order (duplicate keys are rejected by the YAML layer). A value of
/// the wrong type is `Invalid` on its own.
#[derive(Debug, Default)]
pub(crate) struct SpannedMap(pub Vec<(SStr, Lenient<SStr>)>);

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
                while let Some(entry) = map.next_entry::<SStr, Lenient<SStr>>()? {
                    out.push(entry);
                }
                Ok(SpannedMap(out))
            }
        }
        deserializer.deserialize_map(MapVisitor)
    }
}

// ------------------------------------------------------- lenient nodes --

/// A field of a mapping: absent (or `null`), present but not readable as
/// `T` (the type error is already reported), or read.
#[derive(Debug, Default)]
pub(crate) enum Field<T> {
    #[default]
    Absent,
    Invalid,
    Set(T),
}

impl<T> Field<T> {
    /// The value if it was read; `None` when absent or invalid.
    pub fn get(&self) -> Option<&T> {
        match self {
            Field::Set(v) => Some(v),
            Field::Absent | Field::Invalid => None,
        }
    }

    /// Like [`Field::get`], by value.
    pub fn into_option(self) -> Option<T> {
        match self {
            Field::Set(v) => Some(v),
            Field::Absent | Field::Invalid => None,
        }
    }

    /// Whether the key is there but its value had a type error.
    pub fn is_invalid(&self) -> bool {
        matches!(self, Field::Invalid)
    }
}

impl<'de, T: Deserialize<'de> + Expecting> Deserialize<'de> for Field<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(match Option::<Lenient<T>>::deserialize(deserializer)? {
            None => Field::Absent,
            Some(Lenient::Invalid) => Field::Invalid,
            Some(Lenient::Valid(v)) => Field::Set(v),
        })
    }
}

/// A node that is read on its own: a type error inside it makes it
/// `Invalid` (in a later pass) instead of failing its parent.
#[derive(Debug)]
pub(crate) enum Lenient<T> {
    Valid(T),
    Invalid,
}

impl<T> Lenient<T> {
    /// The value if it was read.
    pub fn get(&self) -> Option<&T> {
        match self {
            Lenient::Valid(v) => Some(v),
            Lenient::Invalid => None,
        }
    }

    /// Like [`Lenient::get`], by value.
    pub fn into_option(self) -> Option<T> {
        match self {
            Lenient::Valid(v) => Some(v),
            Lenient::Invalid => None,
        }
    }
}

impl<'de, T: Deserialize<'de> + Expecting> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let Some(skip) = PASS.with_borrow_mut(|pass| pass.as_mut().map(PassState::enter)) else {
            // Outside a pass (not reached from `parse`): a plain read.
            return T::deserialize(deserializer).map(Lenient::Valid);
        };
        let result = if skip {
            IgnoredAny::deserialize(deserializer).map(|_| Lenient::Invalid)
        } else {
            T::deserialize(deserializer).map(Lenient::Valid)
        };
        PASS.with_borrow_mut(|pass| {
            if let Some(pass) = pass {
                pass.leave(result.is_err().then_some(T::EXPECTED));
            }
        });
        result
    }
}

/// What a type error in a value of this type says is expected, after
/// "expected ". The YAML layer's own wording does not know the target type
/// (a list where `true`/`false` belongs reads "expected a string").
pub(crate) trait Expecting {
    const EXPECTED: &'static str;
}

macro_rules! expecting {
    ($($t:ty => $what:literal),* $(,)?) => {$(
        impl Expecting for $t {
            const EXPECTED: &'static str = $what;
        }
    )*};
}

expecting! {
    bool => "true or false",
    u32 => "a whole number 0..=4294967295",
    i64 => "a whole number",
    f64 => "a number",
    String => "a string",
    SpannedMap => "a mapping of tag names to values",
    RawAgent => "a mapping (key: value pairs)",
    RawControl => "a mapping (key: value pairs)",
    RawAws => "a mapping (key: value pairs)",
    RawSync => "a mapping (key: value pairs)",
    RawSource => "a mapping (key: value pairs)",
    RawDestination => "a mapping (key: value pairs)",
    RawOptions => "a mapping (key: value pairs)",
}

impl<T: Expecting> Expecting for Spanned<T> {
    const EXPECTED: &'static str = T::EXPECTED;
}

impl<T> Expecting for Vec<T> {
    const EXPECTED: &'static str = "a list";
}

/// Sibling indexes from the root down to one lenient node.
type NodePath = Vec<u32>;

/// The state of one typed pass.
#[derive(Debug, Default)]
struct PassState {
    /// Path of the lenient node being read (empty at the root).
    path: NodePath,
    /// Index the next lenient node gets at each open level; one entry more
    /// than `path`.
    next: Vec<u32>,
    /// Nodes that failed in earlier passes.
    skip: BTreeSet<NodePath>,
    /// The innermost node that failed in this pass, and what it expects.
    failed: Option<(NodePath, &'static str)>,
}

impl PassState {
    fn new(skip: BTreeSet<NodePath>) -> Self {
        Self {
            path: Vec::new(),
            next: vec![0],
            skip,
            failed: None,
        }
    }

    /// Opens the next node at the current level; returns whether to skip it.
    fn enter(&mut self) -> bool {
        let index = self.next.last_mut().map_or(0, |n| {
            let index = *n;
            *n += 1;
            index
        });
        self.path.push(index);
        self.next.push(0);
        self.skip.contains(&self.path)
    }

    /// Closes the current node; `failed` says what it expected if it
    /// failed. The first failure recorded is the innermost one: enclosing
    /// nodes fail only because it did.
    fn leave(&mut self, failed: Option<&'static str>) {
        if let (Some(expected), None) = (failed, &self.failed) {
            self.failed = Some((self.path.clone(), expected));
        }
        self.path.pop();
        self.next.pop();
    }
}

thread_local! {
    /// The pass running on this thread, if any (see the module docs).
    static PASS: RefCell<Option<PassState>> = const { RefCell::new(None) };
}

/// Runs one typed pass that skips `skip`; returns its result, the skip set
/// back, and the node that failed (with what it expects), if the failure is
/// attributable to one.
fn run_pass<T>(
    skip: BTreeSet<NodePath>,
    read: impl FnOnce() -> T,
) -> (T, BTreeSet<NodePath>, Option<(NodePath, &'static str)>) {
    /// Clears the pass state even if `read` panics.
    struct Clear;
    impl Drop for Clear {
        fn drop(&mut self) {
            PASS.set(None);
        }
    }
    PASS.set(Some(PassState::new(skip)));
    let clear = Clear;
    let result = read();
    let state = PASS.take().unwrap_or_default();
    drop(clear);
    (result, state.skip, state.failed)
}

// ---------------------------------------------------------------- parse --

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

/// Parses `text` into the raw model, returning it with every type error and
/// unknown key found. A syntax-level problem (or a type error that cannot be
/// attributed to a part of the file, such as a top level that is not a
/// mapping) is returned as `Err`, together with what was found before it.
pub(crate) fn parse(path: &Path, text: &str) -> Result<(RawRoot, Vec<ConfigError>), ConfigErrors> {
    // Syntax, duplicate keys, anchors, budget; no types involved.
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
        Err(e) => return Err(ConfigErrors(vec![yaml_error(path, &e, None)])),
    }

    let unknown = unknown_keys(text);
    // A list or mapping used as a key also fails the typed read of its
    // mapping; the walk's message says what is wrong, so it is the one kept.
    let odd_keys: Vec<(u64, u64)> = unknown
        .iter()
        .filter(|u| u.key.is_none())
        .map(|u| line_col(&u.at))
        .collect();

    let aws_has_unknown_keys = unknown.iter().any(|u| std::ptr::eq(u.shape, &AWS));
    let unknown_errors: Vec<ConfigError> = unknown
        .iter()
        .map(|unknown| {
            let (line, column) = line_col(&unknown.at);
            let key = match &unknown.key {
                Some(key) => format!("unknown key `{key}`"),
                None => "unknown key (a list or mapping used as a key)".to_string(),
            };
            ConfigError::new(
                path,
                line,
                column,
                format!(
                    "{key}, expected one of {}",
                    (unknown.shape.keys)().join(", ")
                ),
            )
        })
        .collect();
    // Giving up early still reports every unknown key: one of them may be
    // the only explanation of the type error that stopped the read (its
    // own message is dropped in favour of the key's, above).
    let give_up = |mut errors: Vec<ConfigError>, last: Option<ConfigError>| {
        errors.extend(unknown_errors.iter().cloned());
        errors.sort_by_key(|e| (e.line, e.column));
        errors.extend(last);
        ConfigErrors(errors)
    };

    let mut errors = Vec::new();
    let mut skip = BTreeSet::new();
    let mut failed_passes = 0;
    let mut root = loop {
        let (result, skipped, failed) = run_pass(skip, || {
            serde_saphyr::from_str_with_options::<RawRoot>(text, yaml_options())
        });
        skip = skipped;
        match result {
            Ok(root) => break root,
            Err(e) => {
                let error = yaml_error(path, &e, failed.as_ref().map(|(_, what)| *what));
                if !odd_keys.contains(&(error.line, error.column)) {
                    errors.push(error);
                }
                match failed {
                    Some((node, _)) if !skip.contains(&node) => {
                        skip.insert(node);
                    }
                    // Not attributable to a node: nothing more can be learned.
                    _ => return Err(give_up(errors, None)),
                }
                failed_passes += 1;
                if failed_passes >= MAX_TYPE_ERRORS {
                    let stop = ConfigError::new(
                        path,
                        1,
                        1,
                        format!("too many errors ({MAX_TYPE_ERRORS}); fix these first"),
                    );
                    return Err(give_up(errors, Some(stop)));
                }
            }
        }
    };

    root.aws_has_unknown_keys = aws_has_unknown_keys;
    errors.extend(unknown_errors);
    Ok((root, errors))
}

/// Converts a YAML-layer error into `PATH:LINE:COL: message` form;
/// `expected` describes the value that failed to read, when known.
fn yaml_error(path: &Path, error: &serde_saphyr::Error, expected: Option<&str>) -> ConfigError {
    let (line, column) = error
        .location()
        .filter(|l| l.line() > 0)
        .map_or((1, 1), |l| (l.line(), l.column().max(1)));
    let message = serde_saphyr::MessageFormatter::format_message(
        &serde_saphyr::UserMessageFormatter,
        error.without_snippet(),
    );
    ConfigError::new(path, line, column, friendly(&message, expected))
}

/// Rewords the YAML layer's terse type messages in config terms, and keeps
/// values from the file out of them: a config can hold secrets in odd
/// places, and the position already says which value is meant.
fn friendly(message: &str, expected: Option<&str>) -> String {
    // Type mismatches ("expected sequence start", "invalid boolean", serde's
    // "invalid type: ...") are said in terms of the value that failed.
    if let Some(what) = expected
        && (message.starts_with("expected ") || message.starts_with("invalid "))
    {
        return format!("expected {what}");
    }
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
    // serde's own wording quotes the value: "invalid type: string \"x\",
    // expected a boolean". Keep only the kinds.
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(prefix) {
            let found = rest.split([' ', ',']).next().unwrap_or("value");
            return match rest.rfind(", expected ") {
                Some(i) => format!(
                    "expected {}, found {found}",
                    &rest[i + ", expected ".len()..]
                ),
                None => format!("wrong type of value ({found})"),
            };
        }
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

// ---------------------------------------------------------- schema walk --

/// The keys a mapping allows, and which of them hold mappings (or lists of
/// mappings) whose keys are checked too.
struct Shape {
    /// The field names of the raw struct for this mapping.
    keys: fn() -> &'static [&'static str],
    nested: &'static [(&'static str, Nested)],
}

#[derive(Clone, Copy)]
enum Nested {
    Map(&'static Shape),
    ListOfMaps(&'static Shape),
}

static ROOT: Shape = Shape {
    keys: fields_of::<RawRoot>,
    nested: &[
        ("agent", Nested::Map(&AGENT)),
        ("control", Nested::Map(&CONTROL)),
        ("aws", Nested::Map(&AWS)),
        ("syncs", Nested::ListOfMaps(&SYNC)),
    ],
};
static AGENT: Shape = Shape {
    keys: fields_of::<RawAgent>,
    nested: &[],
};
static CONTROL: Shape = Shape {
    keys: fields_of::<RawControl>,
    nested: &[],
};
static AWS: Shape = Shape {
    keys: fields_of::<RawAws>,
    nested: &[],
};
static SYNC: Shape = Shape {
    keys: fields_of::<RawSync>,
    nested: &[
        ("source", Nested::Map(&SOURCE)),
        ("destination", Nested::Map(&DESTINATION)),
        ("options", Nested::Map(&OPTIONS)),
    ],
};
static SOURCE: Shape = Shape {
    keys: fields_of::<RawSource>,
    nested: &[],
};
// `tags` is not nested: its keys are the user's.
static DESTINATION: Shape = Shape {
    keys: fields_of::<RawDestination>,
    nested: &[],
};
static OPTIONS: Shape = Shape {
    keys: fields_of::<RawOptions>,
    nested: &[],
};

/// The field names serde's derive gives `T`, in declaration order: `T` is
/// offered a deserializer that only records the list it asks for.
fn fields_of<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Recorder<'a>(&'a mut &'static [&'static str]);

    impl<'de> Deserializer<'de> for Recorder<'_> {
        type Error = de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("only records struct fields"))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("only records struct fields"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }

    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Recorder(&mut fields));
    fields
}

/// A key that no raw struct knows.
pub(crate) struct UnknownKey {
    /// The key as text; `None` for a list or mapping used as a key.
    pub key: Option<String>,
    pub at: Location,
    /// The mapping it is in.
    shape: &'static Shape,
}

/// Every unknown key in the document, at any depth, in file order. Values
/// of the wrong shape are passed over (the typed pass reports them), so an
/// unknown key is found wherever it is. Keys brought in by a YAML merge
/// (`<<`) are checked like the others.
pub(crate) fn unknown_keys(text: &str) -> Vec<UnknownKey> {
    let found = RefCell::new(Vec::new());
    // The syntax pass already succeeded, so an error here could only come
    // from an exotic node (e.g. a tag the walk cannot take); the keys found
    // up to it are still reported.
    let _ = serde_saphyr::with_deserializer_from_str_with_options(text, yaml_options(), |de| {
        Walk {
            expect: Expect::Map(&ROOT),
            found: &found,
        }
        .deserialize(de)
    });
    found.into_inner()
}

/// What the walk expects of a node.
#[derive(Clone, Copy)]
enum Expect {
    Map(&'static Shape),
    ListOfMaps(&'static Shape),
    /// Nothing: the node is a value, or somebody else's keys.
    Any,
}

impl From<Nested> for Expect {
    fn from(nested: Nested) -> Self {
        match nested {
            Nested::Map(shape) => Expect::Map(shape),
            Nested::ListOfMaps(shape) => Expect::ListOfMaps(shape),
        }
    }
}

struct Walk<'a> {
    expect: Expect,
    found: &'a RefCell<Vec<UnknownKey>>,
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        match self.expect {
            Expect::Any => IgnoredAny::deserialize(deserializer).map(|_| ()),
            Expect::Map(_) | Expect::ListOfMaps(_) => deserializer.deserialize_any(self),
        }
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_i128<E: de::Error>(self, _: i128) -> Result<(), E> {
        Ok(())
    }
    fn visit_u128<E: de::Error>(self, _: u128) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        DeserializeSeed::deserialize(self, deserializer)
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        DeserializeSeed::deserialize(self, deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let element = match self.expect {
            Expect::ListOfMaps(shape) => Expect::Map(shape),
            Expect::Map(_) | Expect::Any => Expect::Any,
        };
        let found = self.found;
        while seq
            .next_element_seed(Walk {
                expect: element,
                found,
            })?
            .is_some()
        {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let found = self.found;
        let Expect::Map(shape) = self.expect else {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            return Ok(());
        };
        let keys = (shape.keys)();
        while let Some(key) = map.next_key::<Spanned<KeyText>>()? {
            let known = key.value.0.as_deref().filter(|k| keys.contains(k));
            let expect = match known {
                Some(k) => shape
                    .nested
                    .iter()
                    .find(|(name, _)| *name == k)
                    .map_or(Expect::Any, |(_, nested)| Expect::from(*nested)),
                None => {
                    found.borrow_mut().push(UnknownKey {
                        key: key.value.0,
                        at: key.referenced,
                        shape,
                    });
                    Expect::Any
                }
            };
            map.next_value_seed(Walk { expect, found })?;
        }
        Ok(())
    }
}

/// A mapping key as text, whatever its YAML type; `None` for a list or
/// mapping used as a key.
struct KeyText(Option<String>);

impl<'de> Deserialize<'de> for KeyText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = KeyText;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping key")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<KeyText, E> {
                Ok(KeyText(Some(v.to_string())))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<KeyText, E> {
                Ok(KeyText(Some(v.to_string())))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<KeyText, E> {
                Ok(KeyText(Some(v.to_string())))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<KeyText, E> {
                Ok(KeyText(Some(v.to_string())))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<KeyText, E> {
                Ok(KeyText(Some(v.to_string())))
            }
            fn visit_unit<E: de::Error>(self) -> Result<KeyText, E> {
                Ok(KeyText(Some("null".to_string())))
            }
            fn visit_none<E: de::Error>(self) -> Result<KeyText, E> {
                self.visit_unit()
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<KeyText, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(KeyText(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<KeyText, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(KeyText(None))
            }
        }
        deserializer.deserialize_any(KeyVisitor)
    }
}

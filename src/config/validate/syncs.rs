//! Per-sync checks: source, destination (naming, tags, credentials) and options.

#[allow(unused_imports)]
use super::*;

// ---------------------------------------------------------------- syncs --

pub(super) struct SyncCtx<'a> {
    pub(super) base: &'a Path,
    pub(super) agent_id: &'a str,
    pub(super) aws: &'a AwsSettings,
    pub(super) aws_locs: &'a AwsLocations,
}

pub(super) fn resolve_sync(
    report: &mut Report<'_>,
    ctx: &SyncCtx<'_>,
    raw: Spanned<RawSync>,
    seen_names: &mut HashMap<String, u64>,
) -> (SyncConfig, Option<Namespace>) {
    let at = raw.referenced;
    let (line, _) = line_col(&at);
    let raw = raw.value;

    // The name feeds templates; an invalid one is replaced by a neutral
    // stand-in so that it does not cause a second, misleading error.
    let mut name_ok = false;
    let name = match &raw.name {
        Field::Absent => {
            report.at(&at, "missing required key `name`");
            String::new()
        }
        Field::Invalid => String::new(),
        Field::Set(n) => {
            match validate_slug(&n.value) {
                Err(e) => report.at(&n.referenced, format!("sync name {e}")),
                Ok(()) => {
                    name_ok = true;
                    let (name_line, _) = line_col(&n.referenced);
                    if let Some(first) = seen_names.get(&n.value) {
                        report.at(
                            &n.referenced,
                            format!("duplicate sync name (first defined at line {first})"),
                        );
                    } else {
                        seen_names.insert(n.value.clone(), name_line);
                    }
                }
            }
            n.value.clone()
        }
    };
    let template_name = if name_ok { name.as_str() } else { "sync" };

    // A source.environment of the wrong type is stood in for like the name,
    // so templates that use it do not report it as unset.
    let environment_invalid = raw
        .source
        .get()
        .is_some_and(|s| s.value.environment.is_invalid());
    let source = match raw.source {
        Field::Absent => {
            report.at(&at, "missing required key `source`");
            None
        }
        Field::Invalid => None,
        Field::Set(s) => resolve_source(report, ctx.base, s),
    };
    let source_ok = source.is_some() && !environment_invalid;
    let source = source.unwrap_or_else(|| SourceSettings {
        files: Vec::new(),
        format: FormatSetting::Auto,
        environment: None,
        include: Vec::new(),
        exclude: Vec::new(),
        expand: false,
    });

    let invalid = raw.destination.is_invalid();
    let (dest_at, raw_dest) = match raw.destination {
        Field::Set(d) => (d.referenced, d.value),
        Field::Absent | Field::Invalid => (at, RawDestination::default()),
    };
    let dest_ctx = DestCtx {
        sync: ctx,
        at: dest_at,
        invalid,
        sync_name: &name,
        template_name,
        environment: if environment_invalid {
            Some("environment")
        } else {
            source.environment.as_deref()
        },
    };
    let (destination, naming_ok, naming_at) = resolve_destination(report, &dest_ctx, raw_dest);

    let options_at = raw.options.get().map(|o| o.referenced);
    let options = resolve_options(report, raw.options.into_option());
    if options.initial_sync != InitialSync::OverwriteDestination
        && let Some(first) = source.files.first().filter(|f| has_glob_chars(f))
        && let Some(options_at) = &options_at
    {
        report.at(
            options_at,
            format!(
                "options.initial_sync imports into the first file of source.files, but \
                 '{first}' is a glob; list a plain file first"
            ),
        );
    }

    let namespace = (name_ok && source_ok && naming_ok).then(|| {
        let kind = match destination.mapping {
            Mapping::ManyToOne => {
                NameKind::Exact(destination.secret_name.clone().unwrap_or_default())
            }
            Mapping::OneToOne => NameKind::Pattern(
                naming::schema_parts(
                    &destination.key_schema,
                    source.environment.as_deref(),
                    &name,
                )
                .unwrap_or_default(),
            ),
        };
        let mut regions = vec![destination.region.clone()];
        regions.extend(destination.replica_regions.iter().cloned());
        Namespace {
            sync: name.clone(),
            line,
            regions,
            account: (
                destination.profile.clone(),
                destination.role_arn.clone(),
                destination.endpoint_url.clone(),
            ),
            kind,
            source: source.clone(),
            at: naming_at,
        }
    });

    let sync = SyncConfig {
        name,
        description: raw.description.into_option(),
        enabled: raw.enabled.into_option().unwrap_or(true),
        auto_sync: raw.auto_sync.into_option().unwrap_or(true),
        source,
        destination,
        options,
        line,
    };
    (sync, namespace)
}

/// Returns `None` when a required part is missing, so that later checks do
/// not pile up errors about an incomplete source.
pub(super) fn resolve_source(
    report: &mut Report<'_>,
    base: &Path,
    raw: Spanned<RawSource>,
) -> Option<SourceSettings> {
    let at = raw.referenced;
    let raw = raw.value;
    let mut complete = true;

    let mut files = Vec::new();
    match &raw.files {
        Field::Absent => {
            report.at(&at, "missing required key `files` in source");
            complete = false;
        }
        Field::Invalid => complete = false,
        Field::Set(list) if list.value.is_empty() => {
            report.at(
                &list.referenced,
                "source.files is empty; list at least one file or glob",
            );
            complete = false;
        }
        Field::Set(list) => {
            for file in list.value.iter().filter_map(Lenient::get) {
                match resolve_source_file(base, &file.value) {
                    Ok(p) => files.push(p),
                    Err(e) => report.at(&file.referenced, e),
                }
            }
        }
    }

    let format = report.value(raw.format.get(), FormatSetting::Auto, |s| {
        parse_choice(
            "source.format",
            s,
            &[
                ("auto", FormatSetting::Auto),
                ("env", FormatSetting::Env),
                ("yaml", FormatSetting::Yaml),
            ],
        )
    });
    let environment = report.value(raw.environment.get(), None, |s| {
        non_empty("source.environment", s).map(Some)
    });

    let include = match &raw.include {
        Field::Absent => vec!["*".to_string()],
        Field::Invalid => Vec::new(),
        Field::Set(list) if list.value.is_empty() => {
            report.at(
                &list.referenced,
                "source.include is empty, so no key would be synced; use [\"*\"] for all keys",
            );
            Vec::new()
        }
        Field::Set(list) => compile_globs(report, "source.include", valid(Some(&list.value))),
    };
    let exclude = compile_globs(report, "source.exclude", valid(raw.exclude.get()));

    complete.then_some(SourceSettings {
        files,
        format,
        environment,
        include,
        exclude,
        expand: raw.expand.into_option().unwrap_or(false),
    })
}

/// Keeps the patterns that compile, reporting the others.
pub(super) fn compile_globs<'a>(
    report: &mut Report<'_>,
    what: &str,
    list: impl Iterator<Item = &'a SStr>,
) -> Vec<String> {
    let mut out = Vec::new();
    for item in list {
        if item.value.is_empty() {
            report.at(
                &item.referenced,
                format!("{what} entries must not be empty"),
            );
            continue;
        }
        match glob::Pattern::new(&item.value) {
            Ok(_) => out.push(item.value.clone()),
            Err(e) => report.at(
                &item.referenced,
                format!("{what} pattern is not a valid glob: {}", e.msg),
            ),
        }
    }
    out
}

pub(super) fn resolve_source_file(base: &Path, file: &str) -> Result<String, String> {
    let path = resolve_path(base, file, "source.files entry")?;
    let path = path.to_string_lossy().into_owned();
    glob::Pattern::new(&path)
        .map_err(|e| format!("source.files pattern is not a valid glob: {}", e.msg))?;
    Ok(path)
}

pub(super) struct DestCtx<'a> {
    sync: &'a SyncCtx<'a>,
    /// The `destination:` mapping, or the sync when there is none.
    at: Location,
    /// `destination:` had a type error, so its settings are unknown: checks
    /// of the defaults that stand in for them stay quiet.
    invalid: bool,
    sync_name: &'a str,
    /// The sync name if valid, else a neutral stand-in for rendering.
    template_name: &'a str,
    environment: Option<&'a str>,
}

/// Returns the settings, whether naming (mapping, template, region) is
/// valid, and where to report a name overlap.
pub(super) fn resolve_destination(
    report: &mut Report<'_>,
    ctx: &DestCtx<'_>,
    raw: RawDestination,
) -> (DestinationSettings, bool, Location) {
    let aws = ctx.sync.aws;
    // Unreadable naming settings leave the secret names unknown.
    let mut naming_ok = !(ctx.invalid
        || raw.mapping.is_invalid()
        || raw.key_schema.is_invalid()
        || raw.secret_name.is_invalid());

    let mapping = match raw.mapping.get() {
        None => Mapping::OneToOne,
        Some(m) => match parse_choice(
            "destination.mapping",
            &m.value,
            &[
                ("one-to-one", Mapping::OneToOne),
                ("many-to-one", Mapping::ManyToOne),
            ],
        ) {
            Ok(v) => v,
            Err(e) => {
                report.at(&m.referenced, e);
                naming_ok = false;
                Mapping::OneToOne
            }
        },
    };

    // Region: destination, then aws.region, then the environment.
    let region = match (&raw.region, &aws.region) {
        (Field::Invalid, _) => {
            naming_ok = false;
            String::new()
        }
        (Field::Set(r), _) => {
            if let Err(e) = validate_region(&r.value) {
                report.at(&r.referenced, format!("destination.region {e}"));
                naming_ok = false;
            }
            r.value.clone()
        }
        (Field::Absent, Some(r)) => {
            if let (Some(var), Err(e)) = (ctx.sync.aws_locs.region_from_env, validate_region(r)) {
                report.at(&ctx.at, format!("region from {var} {e}"));
                naming_ok = false;
            }
            r.clone()
        }
        (Field::Absent, None) => {
            if !(ctx.sync.aws_locs.region_invalid || ctx.invalid) {
                report.at(
                    &ctx.at,
                    "no AWS region for this sync: set destination.region or aws.region \
                 (or AWS_REGION in the agent's environment)",
                );
            }
            naming_ok = false;
            String::new()
        }
    };

    let vars = TemplateVars {
        secret_key: None,
        environment: ctx.environment,
        sync_name: ctx.template_name,
    };
    let mut naming_at = ctx.at;
    let mut secret_name = None;
    let key_schema = raw
        .key_schema
        .get()
        .map_or_else(|| "{{secretKey}}".to_string(), |s| s.value.clone());
    match mapping {
        Mapping::OneToOne => {
            if let (Some(s), false) = (raw.secret_name.get(), raw.mapping.is_invalid()) {
                report.at(
                    &s.referenced,
                    "destination.secret_name is only used with mapping: many-to-one; \
                     set the mapping or name secrets with key_schema",
                );
            }
            if let Some(k) = raw.key_schema.get() {
                naming_at = k.referenced;
            }
            if let Err(e) = check_key_schema(&key_schema, &vars) {
                let at = raw.key_schema.get().map_or(ctx.at, |k| k.referenced);
                report.at(&at, format!("destination.key_schema {e}"));
                naming_ok = false;
            }
        }
        Mapping::ManyToOne => match &raw.secret_name {
            Field::Invalid => {}
            Field::Absent => {
                let at = raw.mapping.get().map_or(ctx.at, |m| m.referenced);
                report.at(
                    &at,
                    "mapping many-to-one needs destination.secret_name (the one secret all keys go to)",
                );
                naming_ok = false;
            }
            Field::Set(s) => {
                naming_at = s.referenced;
                match check_secret_name(&s.value, &vars) {
                    Ok(rendered) => secret_name = Some(rendered),
                    Err(e) => {
                        report.at(&s.referenced, format!("destination.secret_name {e}"));
                        naming_ok = false;
                    }
                }
            }
        },
    }

    let kms_key_id = report.value(raw.kms_key_id.get(), None, |s| {
        let s = non_empty("destination.kms_key_id", s)?;
        if s.chars().count() > MAX_KMS_KEY_ID_LEN {
            return Err(format!(
                "destination.kms_key_id is longer than {MAX_KMS_KEY_ID_LEN} characters"
            ));
        }
        Ok(Some(s))
    });
    let description = report.value(raw.description.get(), None, |s| {
        if s.chars().count() > MAX_DESCRIPTION_LEN {
            return Err(format!(
                "destination.description is longer than {MAX_DESCRIPTION_LEN} characters"
            ));
        }
        Ok(Some(s.to_string()))
    });

    let tags = resolve_tags(report, ctx, raw.tags.into_option());

    let mut replica_regions: Vec<String> = Vec::new();
    for r in valid(raw.replica_regions.get()) {
        if let Err(e) = validate_region(&r.value) {
            report.at(
                &r.referenced,
                format!("destination.replica_regions entry {e}"),
            );
        } else if r.value == region {
            report.at(
                &r.referenced,
                "this replica region is the sync's own region",
            );
        } else if replica_regions.contains(&r.value) {
            report.at(&r.referenced, "this replica region is listed twice");
        } else {
            replica_regions.push(r.value.clone());
        }
    }

    let profile = report.value(raw.profile.get(), aws.profile.clone(), |s| {
        non_empty("destination.profile", s).map(Some)
    });
    let role_arn = report.value(raw.role_arn.get(), aws.role_arn.clone(), |s| {
        validate_role_arn(s).map_err(|e| format!("destination.role_arn {e}"))?;
        Ok(Some(s.to_string()))
    });
    let external_id = report.value(raw.external_id.get(), aws.external_id.clone(), |s| {
        validate_external_id(s).map_err(|e| format!("destination.external_id {e}"))?;
        Ok(Some(s.to_string()))
    });
    let role_unknown = raw.role_arn.is_invalid() || ctx.sync.aws_locs.role_arn_invalid;
    if external_id.is_some() && role_arn.is_none() && !role_unknown {
        let at = raw
            .external_id
            .get()
            .map(|s| s.referenced)
            .or(ctx.sync.aws_locs.external_id)
            .unwrap_or(ctx.at);
        report.at(
            &at,
            "external_id is only used when assuming a role; set role_arn too",
        );
    }

    let recovery_window_days = match raw.recovery_window_days.get() {
        None => 7,
        Some(d) => match u8::try_from(d.value) {
            Ok(v) if v == 0 || (7..=30).contains(&v) => v,
            _ => {
                report.at(
                    &d.referenced,
                    "destination.recovery_window_days must be 7..=30, or 0 to delete without \
                         recovery",
                );
                7
            }
        },
    };

    let destination = DestinationSettings {
        region,
        mapping,
        secret_name,
        key_schema,
        kms_key_id,
        description,
        tags,
        sync_metadata_as_tags: raw.sync_metadata_as_tags.into_option().unwrap_or(false),
        replica_regions,
        profile,
        role_arn,
        external_id,
        endpoint_url: aws.endpoint_url.clone(),
        recovery_window_days,
        adopt_existing: raw.adopt_existing.into_option().unwrap_or(false),
    };
    (destination, naming_ok, naming_at)
}

pub(super) fn resolve_tags(
    report: &mut Report<'_>,
    ctx: &DestCtx<'_>,
    raw: Option<Spanned<crate::config::raw::SpannedMap>>,
) -> BTreeMap<String, String> {
    let mut tags = BTreeMap::new();
    let Some(raw) = raw else { return tags };
    for (key, value) in &raw.value.0 {
        // A value of the wrong type is reported already; its key is still
        // checked.
        let (value, value_at) = match value {
            Lenient::Valid(v) => (v.value.as_str(), &v.referenced),
            Lenient::Invalid => ("", &key.referenced),
        };
        if let Err(e) = naming::validate_user_tag(&key.value, value) {
            // Point at the value when only its length is the problem.
            let at = if naming::validate_user_tag(&key.value, "").is_ok() {
                value_at
            } else {
                &key.referenced
            };
            report.at(at, format!("destination.tags: {e}"));
            continue;
        }
        if let Some(c) = key.value.chars().find(|c| !is_tag_char(*c)) {
            report.at(
                &key.referenced,
                format!(
                    "destination.tags: tag key '{}' contains {c:?}; {TAG_CHARS_HELP}",
                    key.value
                ),
            );
            continue;
        }
        if let Some(c) = value.chars().find(|c| !is_tag_char(*c)) {
            report.at(
                value_at,
                format!(
                    "destination.tags: value of tag '{}' contains {c:?}; {TAG_CHARS_HELP}",
                    key.value
                ),
            );
            continue;
        }
        tags.insert(key.value.clone(), value.to_string());
    }
    if raw.value.0.len() > MAX_USER_TAGS {
        let mut all = BTreeMap::new();
        for (i, (k, v)) in raw.value.0.iter().enumerate() {
            // Keys are distinct in YAML; index them so the count is exact
            // even for entries rejected above.
            let v = v.get().map_or("", |v| v.value.as_str());
            all.insert(format!("{i}:{}", k.value), v.to_string());
        }
        all.insert(naming::TAG_AGENT.to_string(), ctx.sync.agent_id.to_string());
        all.insert(naming::TAG_SYNC.to_string(), ctx.sync_name.to_string());
        let detail = naming::validate_tag_count(&all)
            .err()
            .unwrap_or_else(|| "too many tags".to_string());
        report.at(
            &raw.referenced,
            format!(
                "destination.tags has {} tags, at most {MAX_USER_TAGS} are allowed ({detail})",
                raw.value.0.len()
            ),
        );
    }
    tags
}

pub(super) fn resolve_options(
    report: &mut Report<'_>,
    raw: Option<Spanned<RawOptions>>,
) -> SyncOptions {
    let raw = raw.map(|s| s.value).unwrap_or_default();
    let initial_sync = report.value(
        raw.initial_sync.get(),
        InitialSync::OverwriteDestination,
        |s| {
            parse_choice(
                "options.initial_sync",
                s,
                &[
                    ("overwrite-destination", InitialSync::OverwriteDestination),
                    (
                        "import-prioritize-source",
                        InitialSync::ImportPrioritizeSource,
                    ),
                    (
                        "import-prioritize-destination",
                        InitialSync::ImportPrioritizeDestination,
                    ),
                ],
            )
        },
    );
    let max_delete_fraction = match raw.max_delete_fraction.get() {
        None => 0.5,
        Some(f) if (0.0..=1.0).contains(&f.value) => f.value,
        Some(f) => {
            report.at(
                &f.referenced,
                "options.max_delete_fraction must be between 0.0 and 1.0 (1.0 turns the \
                     guard off)",
            );
            0.5
        }
    };
    SyncOptions {
        initial_sync,
        disable_secret_deletion: raw.disable_secret_deletion.into_option().unwrap_or(false),
        max_delete_fraction,
    }
}

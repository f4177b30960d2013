//! Reads in bulk (listings, batched values, describes) and the SDK shapes they return, as store types.

#[allow(unused_imports)]
use super::*;

impl Reader {
    /// All `ListSecrets` pages for `filters`, pending deletion included.
    pub(super) async fn list_all(
        &self,
        filters: Vec<Filter>,
    ) -> Result<Vec<SecretListEntry>, StoreError> {
        match self.list_pages(filters, MAX_PAGES).await? {
            Some(out) => Ok(out),
            None => Err(StoreError::Unavailable {
                op: OP_LIST,
                message: format!("listing did not end after {MAX_PAGES} pages"),
            }),
        }
    }

    /// Up to `max_pages` pages of a listing; `None` when more remained.
    pub(super) async fn list_pages(
        &self,
        filters: Vec<Filter>,
        max_pages: usize,
    ) -> Result<Option<Vec<SecretListEntry>>, StoreError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        let mut seen_tokens = HashSet::new();
        for _ in 0..max_pages {
            self.reads.acquire().await;
            let page = self
                .client
                .list_secrets()
                .include_planned_deletion(true)
                .max_results(LIST_PAGE_MAX)
                .set_filters(Some(filters.clone()))
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| classify(OP_LIST, &e, None))?;
            out.extend(page.secret_list.unwrap_or_default());
            match page.next_token {
                Some(next) if !next.is_empty() => {
                    if !seen_tokens.insert(next.clone()) {
                        return Err(StoreError::Unavailable {
                            op: OP_LIST,
                            message: "AWS returned the same NextToken twice".into(),
                        });
                    }
                    token = Some(next);
                }
                _ => return Ok(Some(out)),
            }
        }
        Ok(None)
    }

    /// One `BatchGetSecretValue` round (≤ [`BATCH_GET_MAX`] ids), every id
    /// answered exactly once.
    pub(super) async fn batch_get(&self, ids: &[String]) -> Result<Vec<ValueRead>, StoreError> {
        let mut answers: BTreeMap<String, Result<RemoteValue, StoreError>> = BTreeMap::new();
        let mut token: Option<String> = None;
        let mut seen_tokens = HashSet::new();
        for _ in 0..MAX_PAGES {
            self.reads.acquire().await;
            let resp = self
                .client
                .batch_get_secret_value()
                .set_secret_id_list(Some(ids.to_vec()))
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| classify(OP_BATCH_GET, &e, None))?;
            let request_id = resp.request_id().map(str::to_owned);
            for entry in resp.secret_values() {
                let Some(id) = match_id(ids, entry.name(), entry.arn()) else {
                    continue;
                };
                let value = RemoteValue {
                    name: entry.name().unwrap_or(id).to_owned(),
                    version_id: entry.version_id().map(str::to_owned),
                    value: entry.secret_string().map(SecretValue::new),
                };
                answers.entry(id.to_owned()).or_insert(Ok(value));
            }
            for err in resp.errors() {
                let Some(id) = err.secret_id().and_then(|s| ids.iter().find(|i| *i == s)) else {
                    continue;
                };
                let mapped = from_code(
                    OP_BATCH_GET,
                    err.error_code(),
                    err.message(),
                    None,
                    request_id.as_deref(),
                    None,
                );
                answers.entry(id.clone()).or_insert(Err(mapped));
            }
            match resp.next_token {
                Some(next) if !next.is_empty() && seen_tokens.insert(next.clone()) => {
                    token = Some(next);
                }
                _ => break,
            }
        }
        Ok(ids
            .iter()
            .map(|id| {
                let answer = answers.remove(id).unwrap_or_else(|| {
                    Err(StoreError::Unavailable {
                        op: OP_BATCH_GET,
                        message: "the response did not mention this secret".into(),
                    })
                });
                (id.clone(), answer)
            })
            .collect())
    }
}

/// Which requested id a returned value answers: by name, by full ARN, or by
/// partial ARN (ARN without the 6-character random suffix).
pub(super) fn match_id<'a>(
    ids: &'a [String],
    name: Option<&str>,
    arn: Option<&str>,
) -> Option<&'a str> {
    ids.iter()
        .find(|id| Some(id.as_str()) == name || Some(id.as_str()) == arn)
        .or_else(|| {
            let arn = arn?;
            ids.iter()
                .find(|id| id.starts_with("arn:") && arn.starts_with(id.as_str()))
        })
        .map(String::as_str)
}

/// The version id labelled `AWSCURRENT` in a version → stages map.
pub(super) fn current_version(stages: Option<&HashMap<String, Vec<String>>>) -> Option<String> {
    stages?
        .iter()
        .find(|(_, stages)| stages.iter().any(|s| s == AWSCURRENT))
        .map(|(id, _)| id.clone())
}

/// The SDK's tag list as a map (a tag without a key is skipped).
pub(super) fn tag_map(tags: &[Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .filter_map(|t| Some((t.key()?.to_owned(), t.value().unwrap_or("").to_owned())))
        .collect()
}

/// Converts a listing entry; entries without a name are skipped.
pub(super) fn to_remote(entry: SecretListEntry) -> Option<RemoteSecret> {
    Some(RemoteSecret {
        current_version: current_version(entry.secret_versions_to_stages()),
        tags: tag_map(entry.tags()),
        name: entry.name?,
        arn: entry.arn.unwrap_or_default(),
        kms_key_id: entry.kms_key_id,
        description: entry.description,
        pending_deletion: entry.deleted_date.is_some(),
        rotation_enabled: entry.rotation_enabled.unwrap_or(false),
    })
}

/// Converts a `DescribeSecret` answer to the listing's shape.
pub(super) fn describe_to_remote(
    out: sm::operation::describe_secret::DescribeSecretOutput,
) -> Option<RemoteSecret> {
    Some(RemoteSecret {
        current_version: current_version(out.version_ids_to_stages()),
        tags: tag_map(out.tags()),
        name: out.name?,
        arn: out.arn.unwrap_or_default(),
        kms_key_id: out.kms_key_id,
        description: out.description,
        pending_deletion: out.deleted_date.is_some(),
        rotation_enabled: out.rotation_enabled.unwrap_or(false),
    })
}

/// One `ListSecrets` filter.
pub(super) fn filter(key: FilterNameStringType, values: Vec<String>) -> Filter {
    Filter::builder().key(key).set_values(Some(values)).build()
}

/// Our tag map in the SDK's shape.
pub(super) fn sdk_tags(tags: &BTreeMap<String, String>) -> Vec<Tag> {
    tags.iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

/// Logs one finished call; never a value.
pub(super) fn log_call<T>(op: &'static str, secret: &str, result: &Result<T, StoreError>) {
    match result {
        Ok(_) => tracing::debug!(op, secret, "AWS call ok"),
        Err(err) => tracing::debug!(op, secret, error = %err, "AWS call failed"),
    }
}

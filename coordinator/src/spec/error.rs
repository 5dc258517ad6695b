//! [`SpecError`]: what is wrong with an experiment, where, in one line.

/// An experiment file (or a job list received over gRPC) that cannot be accepted.
///
/// Displayed cargo style on one line: the file in backticks, the position when the
/// YAML parser knew it, then `message`, e.g.
/// ``"`exp.yaml` line 4 column 7: did not find expected key"`` or
/// ``"`exp.yaml`: job `prep-3` (jobs[0]): params: unknown field `resolutoin`, …"``.
///
/// `message` is the whole sentence after the position, already naming the job and the
/// field; `job` and `path` repeat them for programs (the CLI, the gRPC status details).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("`{file}`{}: {message}", position(.line, .column))]
pub struct SpecError {
    /// The file as the user named it (or a placeholder such as `<request>` for gRPC).
    pub file: String,
    /// 1-based; only for errors found while reading the YAML text itself.
    pub line: Option<usize>,
    /// 1-based; only together with `line`.
    pub column: Option<usize>,
    /// Where in the document, e.g. `jobs[2].params.resolution` or
    /// `sweep.parameters.params.foo`.
    pub path: Option<String>,
    /// The job concerned, by its name after sweep expansion.
    pub job: Option<String>,
    pub message: String,
}

fn position(line: &Option<usize>, column: &Option<usize>) -> String {
    match (line, column) {
        (Some(line), Some(column)) => format!(" line {line} column {column}"),
        (Some(line), None) => format!(" line {line}"),
        _ => String::new(),
    }
}

impl SpecError {
    pub(crate) fn new(file: &str, message: impl Into<String>) -> Self {
        SpecError {
            file: file.to_string(),
            line: None,
            column: None,
            path: None,
            job: None,
            message: message.into(),
        }
    }

    pub(crate) fn with_path(mut self, path: impl Into<String>) -> Self {
        self.path = Some(path.into());
        self
    }

    pub(crate) fn with_job(mut self, job: impl Into<String>) -> Self {
        self.job = Some(job.into());
        self
    }

    /// An error about one job: ``job `NAME` (ORIGIN): FIELD: MESSAGE``, where ORIGIN is
    /// where the job was written (`jobs[0]`; several expanded jobs share one).
    pub(crate) fn for_job(
        file: &str,
        job: &str,
        origin: &str,
        field: Option<&str>,
        message: impl std::fmt::Display,
    ) -> Self {
        let (path, text) = match field {
            Some(field) => (
                format!("{origin}.{field}"),
                format!("job `{job}` ({origin}): {field}: {message}"),
            ),
            None => (
                origin.to_string(),
                format!("job `{job}` ({origin}): {message}"),
            ),
        };
        SpecError::new(file, text).with_path(path).with_job(job)
    }

    /// Converts a serde_yaml error. `positions_valid` is false when the YAML that was
    /// parsed is not the user's text (it was rewritten by `--set` or vars), so its line
    /// numbers would point nowhere useful.
    pub(crate) fn from_yaml(file: &str, err: &serde_yaml::Error, positions_valid: bool) -> Self {
        let mut message = err.to_string();
        let location = err.location();
        if let Some(loc) = &location {
            // serde_yaml appends " at line L column C" (and, for parser errors, a
            // context after it); the position is shown by our own prefix instead.
            let suffix = format!(" at line {} column {}", loc.line(), loc.column());
            if let Some(at) = message.find(&suffix) {
                message.truncate(at);
            }
        }
        // Messages from the deserializer start with the document path: `jobs[0].requires: ...`.
        let path = message.split_once(": ").and_then(|(prefix, _)| {
            let looks_like_path = !prefix.is_empty()
                && prefix
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '[' | ']'));
            looks_like_path.then(|| prefix.to_string())
        });
        let mut error = SpecError::new(file, message);
        error.path = path;
        if positions_valid {
            if let Some(loc) = location {
                error.line = Some(loc.line());
                error.column = Some(loc.column());
            }
        }
        error
    }
}

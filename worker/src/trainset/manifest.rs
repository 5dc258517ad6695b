//! `trainset.toml`: what a trainset is (written by hand: name, token, captions,
//! class prompt, resolution, expected count, where the images come from) and what
//! `import` found and stored (counts, conversions, rejects, duplicates, and the
//! sha256 of every stored file, which `check` verifies).

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::{ManifestError, TrainsetError};
use super::position;
use crate::prepare::Rejected;

pub const MANIFEST_FILE: &str = "trainset.toml";
/// The folder of a trainset that holds its images and captions.
pub const IMAGES_DIR: &str = "images";
/// SD1.5's training resolution.
pub const DEFAULT_RESOLUTION: u32 = 512;

/// Written above the fields: the serialiser keeps no comments, so this one is
/// written again on every import.
const HEADER: &str = "\
# An atelier trainset: see trainsets/README.md. `atelier trainset import` rewrites this
# file: it keeps every field but `[import]` and `[[files]]`, which it writes, and no
# comments but this one.

";

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrainsetManifest {
    /// The folder's name; a manifest whose name is not its folder's is refused, so
    /// that a copied folder is not taken for the original.
    pub name: String,
    /// The placeholder word training learns (`<monet-style>`). Absent when every
    /// image's caption names its own token, as the demo's three styles do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Caption of an image with no `.txt` beside it; `{}` is the token (the syntax
    /// of the training config's `caption_template`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caption_template: Option<String>,
    /// DreamBooth's class prompt: prior-preservation images are drawn from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_prompt: Option<String>,
    /// Side of the training images, in pixels.
    #[serde(default = "default_resolution")]
    pub resolution: u32,
    /// How many images the set is known to have; `ls` shows found / expected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_images: Option<usize>,
    #[serde(default, skip_serializing_if = "Source::is_empty")]
    pub source: Source,
    /// Written by `import`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub import: Option<ImportRecord>,
    /// Written by `import`: every stored image, in the order of its source path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileEntry>,
}

fn default_resolution() -> u32 {
    DEFAULT_RESOLUTION
}

/// Where the images come from, for people: free text.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Source {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Where such images are publicly found.
    #[serde(default, rename = "where", skip_serializing_if = "Option::is_none")]
    pub where_found: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub licence: Option<String>,
}

impl Source {
    fn is_empty(&self) -> bool {
        *self == Source::default()
    }
}

/// What the last import found in its source folder and did with it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ImportRecord {
    /// The source folder as it was given.
    pub from: String,
    /// Whether images stored as they were are symbolic links to the source files.
    pub linked: bool,
    /// Image files (by extension) found in the source.
    pub found: usize,
    /// Images stored: the number of `[[files]]`.
    pub images: usize,
    /// Stored images with a caption file.
    pub captions: usize,
    /// Files of the source that are neither images nor captions of one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignored: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub converted: Vec<Conversion>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rejected: Vec<Rejected>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub duplicates: Vec<DuplicateOf>,
}

/// An image stored as an 8-bit RGB PNG because it was not one (nor an RGB JPEG).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Conversion {
    /// Path in the source folder.
    pub file: String,
    /// Name in `images/`.
    pub stored_as: String,
    /// What it was: `CMYK JPEG`, `16-bit RGB PNG`, `GIF, first of several frames`, ….
    pub from: String,
}

/// An image left out because an earlier one has the same bytes or pixels.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DuplicateOf {
    /// Path in the source folder.
    pub file: String,
    /// Source path of the stored image it equals.
    pub same_as: String,
    pub same: Sameness,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Sameness {
    /// The same file content.
    Bytes,
    /// Other bytes (another format or encoding) decoding to the same RGB pixels.
    Pixels,
}

/// A stored image.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Name in `images/` (flat: training reads that folder alone, not sub-folders).
    pub path: String,
    /// Hex sha256 of the stored file (of its target, for a link).
    pub sha256: String,
    pub width: u32,
    pub height: u32,
    /// Hex sha256 of the caption file `<stem>.txt` beside it, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caption_sha256: Option<String>,
}

impl FileEntry {
    /// The name of its caption file: its stem and `.txt`.
    pub fn caption_path(&self) -> String {
        caption_path(&self.path)
    }
}

/// `<stem>.txt` for an image name.
pub fn caption_path(image: &str) -> String {
    let stem = image.rsplit_once('.').map_or(image, |(stem, _)| stem);
    format!("{stem}.txt")
}

impl TrainsetManifest {
    /// A manifest with only a name, and the default resolution.
    pub fn new(name: &str) -> Self {
        TrainsetManifest {
            name: name.to_string(),
            token: None,
            caption_template: None,
            class_prompt: None,
            resolution: DEFAULT_RESOLUTION,
            expected_images: None,
            source: Source::default(),
            import: None,
            files: Vec::new(),
        }
    }

    /// `dir/trainset.toml`, whose `name` must be `dir`'s folder name.
    pub fn load(dir: &Path) -> Result<Self, TrainsetError> {
        let path = dir.join(MANIFEST_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(TrainsetError::NoManifest(dir.to_path_buf()))
            }
            Err(error) => return Err(TrainsetError::Read { path, error }),
        };
        let manifest = Self::parse(&text, &path)?;
        let folder = folder_name(dir);
        if folder.as_deref() != Some(manifest.name.as_str()) {
            return Err(error_at(
                &text,
                &path,
                "name",
                format!(
                    "is `{}`, but the folder is `{}`",
                    manifest.name,
                    folder.unwrap_or_default()
                ),
            )
            .into());
        }
        Ok(manifest)
    }

    /// Parses and validates `text`; `path` is only for the messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ManifestError> {
        let manifest: TrainsetManifest = toml::from_str(text).map_err(|e| {
            let offset = e.span().map(|span| span.start);
            // "missing field `x`" names the field itself and points at its table.
            let field = offset
                .filter(|_| !e.message().starts_with("missing field"))
                .and_then(|offset| position::field_at(text, offset));
            ManifestError {
                path: path.to_path_buf(),
                line: offset.map(|offset| position::line_of(text, offset)),
                field,
                message: e.message().trim_end().to_string(),
            }
        })?;
        manifest
            .validate()
            .map_err(|(field, message)| error_at(text, path, &field, message))?;
        Ok(manifest)
    }

    /// The file's text: a header comment, then the fields.
    pub fn to_toml(&self) -> String {
        // Every field is a string, a number, a bool or a table of those: the
        // serialiser cannot fail on them.
        let body = toml::to_string_pretty(self).expect("a manifest serialises to TOML");
        format!("{HEADER}{body}")
    }

    /// The first value out of range, as (dotted field, message).
    pub fn validate(&self) -> Result<(), (String, String)> {
        let bad = |field: &str, message: String| Err((field.to_string(), message));
        if let Err(message) = check_name(&self.name) {
            return bad("name", message);
        }
        if let Some(token) = &self.token {
            if let Err(message) = check_token(token) {
                return bad("token", message);
            }
        }
        if let Some(template) = &self.caption_template {
            if let Err(message) = check_caption_template(template) {
                return bad("caption_template", message);
            }
            if self.token.is_none() {
                return bad(
                    "caption_template",
                    "needs a `token` to put in place of `{}`".into(),
                );
            }
        }
        if let Some(prompt) = &self.class_prompt {
            if prompt.trim().is_empty() {
                return bad("class_prompt", "is empty".into());
            }
        }
        if let Err(message) = check_resolution(self.resolution) {
            return bad("resolution", message);
        }
        let captions = self
            .files
            .iter()
            .filter(|f| f.caption_sha256.is_some())
            .count();
        match &self.import {
            Some(import) if import.images != self.files.len() => {
                return bad(
                    "import.images",
                    format!(
                        "is {}, but {} `[[files]]` are listed",
                        import.images,
                        self.files.len()
                    ),
                )
            }
            Some(import) if import.captions != captions => {
                return bad(
                    "import.captions",
                    format!(
                        "is {}, but {captions} `[[files]]` have a `caption_sha256`",
                        import.captions
                    ),
                )
            }
            None if !self.files.is_empty() => {
                return bad("files", "are listed without an `[import]` table".into())
            }
            _ => {}
        }
        let mut seen = std::collections::HashSet::new();
        for (i, file) in self.files.iter().enumerate() {
            if file.path.is_empty() || file.path.contains(['/', '\\']) || file.path.starts_with('.')
            {
                return bad(
                    &format!("files[{i}].path"),
                    format!(
                        "`{}` is not a file name in `images/` (no folders, not hidden)",
                        file.path
                    ),
                );
            }
            if !seen.insert(file.path.to_lowercase()) {
                return bad(
                    &format!("files[{i}].path"),
                    format!("`{}` is listed twice", file.path),
                );
            }
            let hashes = [
                ("sha256", Some(&file.sha256)),
                ("caption_sha256", file.caption_sha256.as_ref()),
            ];
            for (key, hash) in hashes {
                if let Some(hash) = hash.filter(|h| !is_sha256(h)) {
                    return bad(
                        &format!("files[{i}].{key}"),
                        format!("`{hash}` is not a hex sha256 (64 characters 0-9, a-f)"),
                    );
                }
            }
        }
        Ok(())
    }
}

/// An error about `field`, on its line when the text has it.
fn error_at(text: &str, path: &Path, field: &str, message: String) -> ManifestError {
    ManifestError {
        path: path.to_path_buf(),
        line: position::line_of_field(text, field),
        field: Some(field.to_string()),
        message,
    }
}

fn folder_name(dir: &Path) -> Option<String> {
    let dir: PathBuf = if dir.file_name().is_some() {
        dir.to_path_buf()
    } else {
        dir.canonicalize().ok()?
    };
    dir.file_name().map(|n| n.to_string_lossy().into_owned())
}

fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A trainset name is a folder name: letters, digits, `-`, `_`, `.`, not hidden.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("is empty".into());
    }
    if name.starts_with('.')
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(format!(
            "`{name}` is not a plain folder name (letters, digits, `-`, `_`, `.`; not starting with `.`)"
        ));
    }
    Ok(())
}

/// A token is one word of the prompt.
pub fn check_token(token: &str) -> Result<(), String> {
    if token.is_empty() || token.chars().any(char::is_whitespace) {
        return Err(format!("`{token}` is not one word"));
    }
    Ok(())
}

pub fn check_caption_template(template: &str) -> Result<(), String> {
    if !template.contains("{}") {
        return Err(format!("`{template}` has no `{{}}` where the token goes"));
    }
    Ok(())
}

/// Latents are an eighth of the image's side: the side must divide by 8.
pub fn check_resolution(resolution: u32) -> Result<(), String> {
    if !(8..=4096).contains(&resolution) || !resolution.is_multiple_of(8) {
        return Err(format!(
            "{resolution} is not a multiple of 8 between 8 and 4096"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path() -> PathBuf {
        PathBuf::from("trainsets/monet/trainset.toml")
    }

    fn imported() -> TrainsetManifest {
        let mut m = TrainsetManifest::new("monet");
        m.token = Some("<monet-style>".into());
        m.caption_template = Some("a painting in the style of {}".into());
        m.class_prompt = Some("a painting".into());
        m.expected_images = Some(1365);
        m.source.where_found = Some("Kaggle's \"Monet paintings\"".into());
        m.source.licence = Some("public domain\n(the paintings)".into());
        m.import = Some(ImportRecord {
            from: "/data/monet".into(),
            linked: false,
            found: 4,
            images: 2,
            captions: 1,
            ignored: vec!["notes.md".into()],
            converted: vec![Conversion {
                file: "b.gif".into(),
                stored_as: "b.png".into(),
                from: "GIF".into(),
            }],
            rejected: vec![Rejected {
                file: "c.png".into(),
                reason: "truncated".into(),
            }],
            duplicates: vec![DuplicateOf {
                file: "d.png".into(),
                same_as: "a.png".into(),
                same: Sameness::Pixels,
            }],
        });
        m.files = vec![
            FileEntry {
                path: "a.png".into(),
                sha256: "a".repeat(64),
                width: 4,
                height: 3,
                caption_sha256: Some("b".repeat(64)),
            },
            FileEntry {
                path: "b.png".into(),
                sha256: "c".repeat(64),
                width: 4,
                height: 3,
                caption_sha256: None,
            },
        ];
        m
    }

    fn parse(text: &str) -> Result<TrainsetManifest, ManifestError> {
        TrainsetManifest::parse(text, &path())
    }

    #[test]
    fn a_manifest_survives_writing_and_reading() {
        let m = imported();
        let text = m.to_toml();
        assert!(text.starts_with("# An atelier trainset"));
        assert!(text.contains("[[import.converted]]"), "{text}");
        assert!(text.contains("[[files]]"), "{text}");
        assert!(text.contains("same = \"pixels\""), "{text}");
        assert_eq!(parse(&text).unwrap(), m);
        // The same manifest gives the same bytes: re-imports compare them.
        assert_eq!(parse(&text).unwrap().to_toml(), text);
    }

    #[test]
    fn defaults_fill_what_a_hand_written_manifest_leaves_out() {
        let m = parse("name = \"demo\"\n").unwrap();
        assert_eq!(m, TrainsetManifest::new("demo"));
        assert_eq!(m.resolution, DEFAULT_RESOLUTION);
    }

    #[test]
    fn a_wrong_type_names_the_file_line_and_field() {
        let err = parse("name = \"monet\"\ntoken = \"<m>\"\nresolution = \"big\"\n").unwrap_err();
        assert_eq!(err.path, path());
        assert_eq!(err.line, Some(3));
        assert_eq!(err.field.as_deref(), Some("resolution"));
        let text = err.to_string();
        assert!(
            text.starts_with(
                "invalid `trainsets/monet/trainset.toml`, line 3, field `resolution`: "
            ),
            "{text}"
        );
        assert!(text.contains("string"), "{text}");
    }

    #[test]
    fn a_wrong_type_inside_an_array_of_tables_names_the_element() {
        let mut text = imported().to_toml();
        text = text.replacen("width = 4", "width = -4", 2);
        let err = parse(&text).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("files[0].width"), "{err}");
        assert_eq!(
            err.line,
            Some(text.lines().position(|l| l == "width = -4").unwrap() + 1)
        );
    }

    #[test]
    fn an_unknown_field_is_named() {
        let err = parse("name = \"monet\"\ntoke = \"<m>\"\n").unwrap_err();
        assert_eq!(err.line, Some(2));
        assert_eq!(err.field.as_deref(), Some("toke"));
        assert!(err.message.contains("unknown field `toke`"), "{err}");
    }

    #[test]
    fn a_missing_field_is_named_by_the_message() {
        let err = parse("token = \"<m>\"\n").unwrap_err();
        assert!(err.message.contains("missing field `name`"), "{err}");
        assert_eq!(err.field, None);
    }

    #[test]
    fn a_syntax_error_names_its_line() {
        let err = parse("name = \"monet\"\n\nresolution = = 3\n").unwrap_err();
        assert_eq!(err.line, Some(3), "{err}");
    }

    #[test]
    fn values_out_of_range_name_their_field_and_line() {
        let cases = [
            (
                "name = \"monet\"\nresolution = 500\n",
                "resolution",
                Some(2),
                "multiple of 8",
            ),
            (
                "name = \"mo net\"\n",
                "name",
                Some(1),
                "not a plain folder name",
            ),
            (
                "name = \"m\"\ntoken = \"two words\"\n",
                "token",
                Some(2),
                "not one word",
            ),
            (
                "name = \"m\"\ntoken = \"<m>\"\ncaption_template = \"a painting\"\n",
                "caption_template",
                Some(3),
                "no `{}`",
            ),
            (
                "name = \"m\"\ncaption_template = \"a {} painting\"\n",
                "caption_template",
                Some(2),
                "needs a `token`",
            ),
            (
                "name = \"m\"\nclass_prompt = \" \"\n",
                "class_prompt",
                Some(2),
                "empty",
            ),
        ];
        for (text, field, line, message) in cases {
            let err = parse(text).unwrap_err();
            assert_eq!(err.field.as_deref(), Some(field), "{text}: {err}");
            assert_eq!(err.line, line, "{text}: {err}");
            assert!(err.message.contains(message), "{text}: {err}");
        }
    }

    #[test]
    fn counts_and_hashes_must_agree_with_the_files() {
        let text = imported().to_toml();
        let err = parse(&text.replace("images = 2", "images = 3")).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("import.images"));
        assert!(err.message.contains("2 `[[files]]`"), "{err}");
        assert_eq!(
            err.line,
            Some(text.lines().position(|l| l == "images = 2").unwrap() + 1)
        );

        let short = text.replacen(&"c".repeat(64), "cafe", 1);
        let err = parse(&short).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("files[1].sha256"), "{err}");
        assert!(err.message.contains("`cafe` is not a hex sha256"), "{err}");

        let twice = text.replace("path = \"b.png\"", "path = \"A.PNG\"");
        let err = parse(&twice).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("files[1].path"), "{err}");
        assert!(err.message.contains("listed twice"), "{err}");
    }

    #[test]
    fn load_names_a_missing_file_and_a_foreign_name() {
        let dir = tempfile::tempdir().unwrap();
        let monet = dir.path().join("monet");
        fs::create_dir(&monet).unwrap();
        assert!(matches!(
            TrainsetManifest::load(&monet),
            Err(TrainsetError::NoManifest(p)) if p == monet
        ));
        fs::write(monet.join(MANIFEST_FILE), "name = \"vangogh\"\n").unwrap();
        let err = TrainsetManifest::load(&monet).unwrap_err().to_string();
        assert!(
            err.contains("monet/trainset.toml`, line 1, field `name`"),
            "{err}"
        );
        assert!(
            err.contains("is `vangogh`, but the folder is `monet`"),
            "{err}"
        );
    }

    #[test]
    fn caption_paths_replace_the_extension() {
        assert_eq!(caption_path("a.b.png"), "a.b.txt");
        assert_eq!(caption_path("photo"), "photo.txt");
    }
}

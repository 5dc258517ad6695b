//! Where a field is in a TOML text, so that an error can name its line and its
//! dotted name (`import.images`, `files[3].sha256`) even when the parser's message
//! does not.
//!
//! This reads the shapes `trainset.toml` uses: `key = value` lines, `[table]` and
//! `[[array]]` headers, and multi-line `"""` strings; not inline tables.

/// A `key = value` line: its 1-based number, byte range and dotted name.
struct KeyLine {
    line: usize,
    start: usize,
    /// Up to the start of the next key or header line.
    end: usize,
    field: String,
}

/// What a header or key line sets, in text order.
enum Item {
    Header {
        line: usize,
        start: usize,
        table: String,
    },
    Key(KeyLine),
}

fn items(text: &str) -> Vec<Item> {
    let mut items = Vec::new();
    let mut table = String::new();
    let mut arrays: std::collections::HashMap<String, usize> = Default::default();
    let mut in_string = false;
    let mut offset = 0;
    for (index, raw) in text.split_inclusive('\n').enumerate() {
        let start = offset;
        offset += raw.len();
        let line = raw.trim();
        let quotes = raw.matches("\"\"\"").count();
        if in_string {
            in_string = quotes % 2 == 0;
            continue;
        }
        if let Some(name) = line.strip_prefix("[[").and_then(|l| l.split("]]").next()) {
            let name = name.trim().to_string();
            let n = arrays.entry(name.clone()).or_insert(0);
            table = format!("{name}[{n}]");
            *n += 1;
            // A nested array restarts under each element of its parent.
            arrays.retain(|k, _| !k.starts_with(&format!("{name}.")));
            items.push(Item::Header {
                line: index + 1,
                start,
                table: table.clone(),
            });
        } else if let Some(name) = line.strip_prefix('[').and_then(|l| l.split(']').next()) {
            table = name.trim().to_string();
            items.push(Item::Header {
                line: index + 1,
                start,
                table: table.clone(),
            });
        } else if let Some((key, _)) = line.split_once('=').filter(|_| !line.starts_with('#')) {
            let key = key.trim().trim_matches('"');
            let field = if table.is_empty() {
                key.to_string()
            } else {
                format!("{table}.{key}")
            };
            items.push(Item::Key(KeyLine {
                line: index + 1,
                start,
                end: text.len(),
                field,
            }));
            in_string = quotes % 2 == 1;
        }
    }
    // Each key's value runs until the next key or header.
    let starts: Vec<usize> = items
        .iter()
        .map(|i| match i {
            Item::Header { start, .. } => *start,
            Item::Key(k) => k.start,
        })
        .collect();
    for (i, item) in items.iter_mut().enumerate() {
        if let Item::Key(k) = item {
            k.end = starts.get(i + 1).copied().unwrap_or(text.len());
        }
    }
    items
}

/// 1-based line of byte `offset`.
pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The field whose value (or key, or table header) holds byte `offset`.
pub(crate) fn field_at(text: &str, offset: usize) -> Option<String> {
    let mut found = None;
    for item in items(text) {
        match item {
            Item::Header { start, table, .. } if start <= offset => found = Some(table),
            Item::Key(k) if k.start <= offset && offset < k.end => return Some(k.field),
            Item::Key(k) if k.start > offset => break,
            Item::Header { start, .. } if start > offset => break,
            _ => {}
        }
    }
    found
}

/// The 1-based line of `field` (as [`field_at`] names it), if the text has it.
pub(crate) fn line_of_field(text: &str, field: &str) -> Option<usize> {
    items(text).into_iter().find_map(|item| match item {
        Item::Key(k) if k.field == field => Some(k.line),
        Item::Header { line, table, .. } if table == field => Some(line),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"name = "monet"
resolution = 512

[source]
licence = """
public domain
"""

[import]
images = 2

[[import.converted]]
file = "a.gif"

[[files]]
path = "a.png"

[[files]]
path = "b.png"
sha256 = "00"
"#;

    #[test]
    fn fields_are_named_with_their_tables_and_positions() {
        let at = |needle: &str| field_at(TEXT, TEXT.find(needle).unwrap());
        assert_eq!(at("512").as_deref(), Some("resolution"));
        assert_eq!(at("public domain").as_deref(), Some("source.licence"));
        assert_eq!(at("images = 2").as_deref(), Some("import.images"));
        assert_eq!(at("\"a.gif\"").as_deref(), Some("import.converted[0].file"));
        assert_eq!(at("\"b.png\"").as_deref(), Some("files[1].path"));
        assert_eq!(at("\"00\"").as_deref(), Some("files[1].sha256"));
    }

    #[test]
    fn lines_are_found_by_field() {
        assert_eq!(line_of_field(TEXT, "resolution"), Some(2));
        assert_eq!(line_of_field(TEXT, "import.images"), Some(10));
        assert_eq!(line_of_field(TEXT, "files[1].sha256"), Some(20));
        assert_eq!(line_of_field(TEXT, "token"), None);
        assert_eq!(line_of(TEXT, TEXT.find("512").unwrap()), 2);
    }
}

//! What an artifact may be called: a relative path of plain names, so that
//! `atelier pull` can write it under its output folder as is
//! (`checkpoint-200/state.json`) and nothing can point outside that folder.

/// Most `/`-separated parts a name may have.
pub const MAX_PARTS: usize = 4;

/// Checks an artifact name; the error says what is wrong with it.
pub fn check(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("an artifact name is empty".into());
    }
    if name.len() > 500 {
        return Err(format!("artifact name `{name}` is longer than 500 bytes"));
    }
    let parts: Vec<&str> = name.split('/').collect();
    if parts.len() > MAX_PARTS {
        return Err(format!(
            "artifact name `{name}` has more than {MAX_PARTS} `/`-separated parts"
        ));
    }
    for part in parts {
        if part.is_empty()
            || part.starts_with('.')
            || part.contains('\\')
            || part.chars().any(char::is_control)
        {
            return Err(format!(
                "artifact name `{name}` must be plain file names joined by `/` \
                 (none empty or starting with `.`, no `\\`)"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn plain_names_and_folders_pass() {
        for ok in ["model.safetensors", "checkpoint-200/state.json", "a/b/c/d"] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "/abs",
            "a//b",
            "../up",
            "a/../b",
            ".hidden",
            "a/.partial",
            "dir/",
            "a\\b",
            "a/b/c/d/e",
            "new\nline",
        ] {
            assert!(check(bad).is_err(), "{bad:?}");
        }
    }
}

//! Golden tests of the CLIP tokenizer against transformers' `CLIPTokenizer`.
//!
//! The fixtures (`tests/fixtures/clip-tokenizer*/`) are written by
//! `tools/make_tokenizer_fixtures.py`; see its docstring for what each folder holds.

use std::fs;
use std::path::{Path, PathBuf};

use atelier_sd::tokenizer::{ClipTokenizer, TokenizerError};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn main_dir() -> PathBuf {
    fixtures().join("clip-tokenizer")
}

struct Case {
    prompt: String,
    added_tokens: bool,
    ids: Vec<u32>,
    ids_truncated: Vec<u32>,
    ids_padded: Vec<u32>,
}

struct Cases {
    max_length: usize,
    pad_id: u32,
    base_vocab_size: usize,
    vocab_size: usize,
    added_tokens: Vec<(String, u32)>,
    cases: Vec<Case>,
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("ids list")
        .iter()
        .map(|x| u32::try_from(x.as_u64().expect("id")).expect("u32 id"))
        .collect()
}

fn load_cases(dir: &Path) -> Cases {
    let text = fs::read_to_string(dir.join("cases.json")).expect("cases.json");
    let json: Value = serde_json::from_str(&text).expect("cases.json is JSON");
    let num = |k: &str| json[k].as_u64().unwrap_or_else(|| panic!("{k}"));
    let added_tokens = json["added_tokens"]
        .as_array()
        .expect("added_tokens")
        .iter()
        .map(|t| {
            let content = t["content"].as_str().expect("content").to_string();
            (content, t["id"].as_u64().expect("id") as u32)
        })
        .collect();
    let cases = json["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .map(|c| Case {
            prompt: c["prompt"].as_str().expect("prompt").to_string(),
            added_tokens: c["added_tokens"].as_bool().expect("added_tokens flag"),
            ids: ids(&c["ids"]),
            ids_truncated: ids(&c["ids_truncated"]),
            ids_padded: ids(&c["ids_padded"]),
        })
        .collect();
    Cases {
        max_length: num("max_length") as usize,
        pad_id: num("pad_id") as u32,
        base_vocab_size: num("base_vocab_size") as usize,
        vocab_size: num("vocab_size") as usize,
        added_tokens,
        cases,
    }
}

/// Copies `files` of the folders into a fresh temp dir (later folders win).
fn assemble(parts: &[(&Path, &[&str])]) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().expect("tempdir");
    for (dir, files) in parts {
        for f in *files {
            fs::copy(dir.join(f), tmp.path().join(f)).unwrap_or_else(|e| panic!("copy {f}: {e}"));
        }
    }
    tmp
}

const CONFIGS: &[&str] = &["tokenizer_config.json", "special_tokens_map.json"];
const VOCAB_MERGES: &[&str] = &["vocab.json", "merges.txt"];

/// Checks every case, the ones without added tokens first, then adds the tokens of the
/// case file and checks the rest. Returns the number of cases checked.
fn check_cases(tok: &mut ClipTokenizer, cases: &Cases, what: &str) -> usize {
    assert_eq!(tok.max_length(), cases.max_length, "{what}: max_length");
    assert_eq!(tok.pad_id(), cases.pad_id, "{what}: pad_id");
    assert_eq!(tok.bos_id(), 49406, "{what}: bos_id");
    assert_eq!(tok.eos_id(), 49407, "{what}: eos_id");
    assert_eq!(
        tok.base_vocab_size(),
        cases.base_vocab_size,
        "{what}: base vocab size"
    );

    let mut failures = Vec::new();
    let mut checked = 0;
    let mut run = |tok: &ClipTokenizer, added: bool| {
        for case in cases.cases.iter().filter(|c| c.added_tokens == added) {
            checked += 1;
            let got = (
                tok.encode_full(&case.prompt),
                tok.encode(&case.prompt),
                tok.encode_padded(&case.prompt),
            );
            if got.0 != case.ids || got.1 != case.ids_truncated || got.2 != case.ids_padded {
                failures.push(format!(
                    "{:?}\n   want {:?}\n   got  {:?}",
                    case.prompt, case.ids, got.0
                ));
            }
        }
    };
    run(tok, false);
    if !cases.added_tokens.is_empty() {
        let names: Vec<&str> = cases.added_tokens.iter().map(|(t, _)| t.as_str()).collect();
        let want: Vec<u32> = cases.added_tokens.iter().map(|(_, id)| *id).collect();
        assert_eq!(tok.add_tokens(&names), want, "{what}: added token ids");
        for (name, id) in &cases.added_tokens {
            assert_eq!(tok.token_id(name), Some(*id), "{what}: token_id({name})");
        }
    }
    run(tok, true);
    assert_eq!(tok.vocab_size(), cases.vocab_size, "{what}: vocab size");
    assert!(
        failures.is_empty(),
        "{what}: {} of {checked} cases differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
    checked
}

#[test]
fn golden_cases_from_tokenizer_json() {
    let cases = load_cases(&main_dir());
    assert!(cases.cases.len() >= 200);
    assert!(cases.cases.iter().any(|c| c.added_tokens));
    let mut tok = ClipTokenizer::from_dir(main_dir()).expect("load");
    let n = check_cases(&mut tok, &cases, "folder with tokenizer.json");
    assert_eq!(n, cases.cases.len());
}

#[test]
fn golden_cases_from_vocab_and_merges() {
    let cases = load_cases(&main_dir());
    let main = main_dir();
    let tmp = assemble(&[(&main, VOCAB_MERGES), (&main, CONFIGS)]);
    let mut tok = ClipTokenizer::from_dir(tmp.path()).expect("load");
    check_cases(&mut tok, &cases, "vocab.json + merges.txt");
}

#[test]
fn golden_cases_from_tokenizer_json_alone() {
    // No config at all: the special tokens' flags come from tokenizer.json, max length 77.
    let cases = load_cases(&main_dir());
    let main = main_dir();
    let tmp = assemble(&[(&main, &["tokenizer.json"])]);
    let mut tok = ClipTokenizer::from_dir(tmp.path()).expect("load");
    check_cases(&mut tok, &cases, "tokenizer.json alone");
}

#[test]
fn golden_cases_pad0_sd2_style() {
    let dir = fixtures().join("clip-tokenizer-pad0");
    let cases = load_cases(&dir);
    assert_eq!(cases.pad_id, 0);
    let main = main_dir();
    let tmp = assemble(&[(&main, VOCAB_MERGES), (&dir, CONFIGS)]);
    let mut tok = ClipTokenizer::from_dir(tmp.path()).expect("load");
    check_cases(&mut tok, &cases, "pad0 (SD 2)");
    // "!" is a special added token here: every "!" is id 0, not "!</w>" (256).
    assert_eq!(tok.encode("hello!"), vec![49406, 3306, 0, 49407]);
    let padded = tok.encode_padded("a photo of a cat");
    assert_eq!(padded.len(), 77);
    assert!(padded[7..].iter().all(|&id| id == 0));
}

#[test]
fn golden_cases_added_tokens_decoder_config() {
    let dir = fixtures().join("clip-tokenizer-addedcfg");
    let cases = load_cases(&dir);
    let main = main_dir();
    let tmp = assemble(&[(&main, VOCAB_MERGES), (&dir, CONFIGS)]);
    let mut tok = ClipTokenizer::from_dir(tmp.path()).expect("load");
    assert_eq!(tok.token_id("<cat-toy>"), Some(49408));
    check_cases(&mut tok, &cases, "added_tokens_decoder config");
}

#[test]
fn golden_cases_legacy_added_tokens() {
    // additional_special_tokens (config and special_tokens_map.json) and added_tokens.json.
    let dir = fixtures().join("clip-tokenizer-legacy");
    let cases = load_cases(&dir);
    let main = main_dir();
    let tmp = assemble(&[
        (&main, VOCAB_MERGES),
        (
            &dir,
            &[
                "tokenizer_config.json",
                "special_tokens_map.json",
                "added_tokens.json",
            ],
        ),
    ]);
    let mut tok = ClipTokenizer::from_dir(tmp.path()).expect("load");
    assert_eq!(tok.token_id("<extra1>"), Some(49408));
    assert_eq!(tok.token_id("<legacy-tok>"), Some(49409));
    assert_eq!(tok.token_id("<Extra2>"), Some(49410));
    assert_eq!(tok.token_id("<extra3>"), None);
    check_cases(&mut tok, &cases, "legacy added tokens");
}

#[test]
fn accessors_and_add_tokens() {
    fn shareable<T: Send + Sync + Clone>() {}
    shareable::<ClipTokenizer>();

    let mut tok = ClipTokenizer::from_dir(main_dir()).expect("load");
    assert_eq!(tok.vocab_size(), 49408);
    assert_eq!(tok.base_vocab_size(), 49408);
    assert_eq!(
        (tok.bos_id(), tok.eos_id(), tok.pad_id()),
        (49406, 49407, 49407)
    );
    assert_eq!(tok.max_length(), 77);
    assert_eq!(tok.token_id("cat</w>"), Some(2368));
    assert_eq!(tok.token_id("<monet-style>"), None);
    assert_eq!(
        tok.encode("a photo of a cat"),
        vec![49406, 320, 1125, 539, 320, 2368, 49407]
    );

    assert_eq!(
        tok.add_tokens(&["<monet-style>", "<vangogh-style>"]),
        vec![49408, 49409]
    );
    // Again, and a vocabulary entry: no new ids.
    assert_eq!(
        tok.add_tokens(&["<monet-style>", "cat</w>"]),
        vec![49408, 2368]
    );
    assert_eq!(tok.vocab_size(), 49410);
    assert_eq!(tok.base_vocab_size(), 49408);
    assert_eq!(
        tok.encode("<MONET-style> cat"),
        vec![49406, 49408, 2368, 49407]
    );

    let long = "cat ".repeat(200);
    assert_eq!(tok.encode_full(&long).len(), 202);
    let truncated = tok.encode(&long);
    assert_eq!(truncated.len(), 77);
    assert_eq!(truncated[76], 49407);
    assert_eq!(tok.add_tokens(&[]), Vec::<u32>::new());
    assert_eq!(tok.encode_padded(""), {
        let mut v = vec![49406, 49407];
        v.resize(77, 49407);
        v
    });
}

#[test]
fn max_length_comes_from_the_config() {
    let main = main_dir();
    let tmp = assemble(&[(&main, VOCAB_MERGES)]);
    let config = r#"{"model_max_length": 10, "pad_token": "!"}"#;
    fs::write(tmp.path().join("tokenizer_config.json"), config).unwrap();
    let tok = ClipTokenizer::from_dir(tmp.path()).expect("load");
    assert_eq!(tok.max_length(), 10);
    assert_eq!(tok.pad_id(), 0);
    let ids = tok.encode("a b c d e f g h i j k l");
    assert_eq!(
        ids,
        vec![49406, 320, 321, 322, 323, 324, 325, 326, 327, 49407]
    );
    assert_eq!(
        tok.encode_padded("a"),
        vec![49406, 320, 49407, 0, 0, 0, 0, 0, 0, 0]
    );

    // transformers' "no limit" (1e30) and a missing value both mean CLIP's 77.
    for config in [
        r#"{"model_max_length": 1e30}"#,
        r#"{"model_max_length": 1000000000000000019884624838656}"#,
        "{}",
    ] {
        fs::write(tmp.path().join("tokenizer_config.json"), config).unwrap();
        let tok = ClipTokenizer::from_dir(tmp.path()).expect("load");
        assert_eq!(tok.max_length(), 77, "{config}");
    }
}

fn load_err(dir: &Path) -> (TokenizerError, String) {
    let err = ClipTokenizer::from_dir(dir).expect_err("loading should fail");
    let msg = err.to_string();
    (err, msg)
}

#[test]
fn missing_folder_and_files_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no-such-tokenizer");
    let (err, msg) = load_err(&missing);
    assert!(matches!(err, TokenizerError::NotAFolder(_)), "{err:?}");
    assert!(msg.contains("no-such-tokenizer"), "{msg}");

    let (err, msg) = load_err(tmp.path());
    assert!(matches!(err, TokenizerError::NoVocabulary(_)), "{err:?}");
    assert!(
        msg.contains("has neither tokenizer.json nor vocab.json + merges.txt"),
        "{msg}"
    );
    assert!(msg.contains(&tmp.path().display().to_string()), "{msg}");

    let main = main_dir();
    let only_vocab = assemble(&[(&main, &["vocab.json"])]);
    let (_, msg) = load_err(only_vocab.path());
    assert!(msg.contains("no merges.txt"), "{msg}");
    let only_merges = assemble(&[(&main, &["merges.txt"])]);
    let (_, msg) = load_err(only_merges.path());
    assert!(msg.contains("no vocab.json"), "{msg}");
}

#[test]
fn malformed_files_are_named() {
    let main = main_dir();
    let cases: &[(&str, &str, &str)] = &[
        ("vocab.json", "{\"a\": 0,", "invalid JSON"),
        ("vocab.json", "[1, 2, 3]", "not a JSON object"),
        ("vocab.json", "{\"a\": \"zero\"}", "the id of `a`"),
        ("vocab.json", "{}", "empty"),
        ("merges.txt", "#version: 0.2\ni n\nt h e\n", "line 3"),
        ("tokenizer_config.json", "{not json", "invalid JSON"),
        ("tokenizer_config.json", "{\"pad_token\": 3}", "`pad_token`"),
        (
            "tokenizer_config.json",
            "{\"model_max_length\": 1}",
            "below 2",
        ),
        ("special_tokens_map.json", "[]", "not a JSON object"),
    ];
    for (file, content, want) in cases {
        let tmp = assemble(&[(&main, VOCAB_MERGES)]);
        fs::write(tmp.path().join(file), content).unwrap();
        let (err, msg) = load_err(tmp.path());
        assert!(
            matches!(err, TokenizerError::Malformed { .. }),
            "{file}: {err:?}"
        );
        assert!(msg.contains(file), "{file}: {msg}");
        assert!(msg.contains(want), "{file}: {msg}");
    }

    let tmp = tempfile::tempdir().unwrap();
    for (content, want) in [
        ("{\"model\": 1", "invalid JSON"),
        ("{\"added_tokens\": []}", "no `model`"),
        (
            "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {}}}",
            "not BPE",
        ),
        (
            "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [\"a b c\"]}}",
            "merges[0]",
        ),
    ] {
        fs::write(tmp.path().join("tokenizer.json"), content).unwrap();
        let (_, msg) = load_err(tmp.path());
        assert!(msg.contains("tokenizer.json"), "{msg}");
        assert!(msg.contains(want), "{msg}");
    }
}

#[test]
fn a_vocabulary_that_is_not_clip_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(
        tmp.path().join("vocab.json"),
        r#"{"a": 0, "b": 1, "ab": 2}"#,
    )
    .unwrap();
    fs::write(tmp.path().join("merges.txt"), "#version: 0.2\na b\n").unwrap();
    let (err, msg) = load_err(tmp.path());
    assert!(matches!(err, TokenizerError::Invalid { .. }), "{err:?}");
    assert!(msg.contains("byte-level symbol"), "{msg}");
}

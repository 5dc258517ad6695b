//! The CLIP BPE tokenizer of Stable Diffusion's text encoder, id for id equal to
//! transformers' `CLIPTokenizer` (transformers 5).
//!
//! # Design
//!
//! In transformers 5, `CLIPTokenizer` *is* a pipeline of the HF `tokenizers` library
//! (`TokenizersBackend`), so this module builds the same pipeline with the `tokenizers`
//! crate instead of re-implementing BPE:
//!
//! * normalizer: NFC, `\s+` -> `" "`, lower-casing;
//! * pre-tokenizer: `Split` on CLIP's regex (`'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+`,
//!   plus the two special tokens), then GPT-2 `ByteLevel`;
//! * model: BPE with `end_of_word_suffix = "</w>"`, unk `<|endoftext|>`;
//! * post-processor: `RobertaProcessing` (`<|startoftext|> … <|endoftext|>`);
//! * added tokens (special tokens of the config, textual-inversion tokens) are matched
//!   before normalization/BPE by the crate's `AddedVocabulary`, with the same
//!   `normalized`/`special` flags that transformers gives them.
//!
//! Why the crate and not a hand-written BPE (~150 lines on the `regex` crate, which would
//! add no dependency): the details that decide ids at the edges — NFC, Unicode
//! lower-casing, how added tokens with `normalized = true/false` are cut out of the raw or
//! the normalized text, the GPT-2 byte-level split that runs after CLIP's split (it cuts
//! `<|endoftext|>` typed in a prompt into `<|`, `endoftext`, `|>`) — are the `tokenizers`
//! code that transformers runs, so reusing it keeps the ids equal by construction; the
//! golden tests (`tests/tokenizer.rs`, 800+ prompts) check it. The cost is ~35 extra small
//! crates, ~40 s of CPU for `tokenizers` itself in a debug build; little next to burn.
//!
//! The crate is used with `default-features = false` and the pure-Rust `fancy-regex`
//! engine instead of the default `onig` (C, needs a C toolchain). The Python wheel uses
//! onig; the golden tests and a sweep over every code point (`a{c}b{c}{c}1 {c}`, all
//! 1,112,064 of them) gave the same ids. The version is 0.23 because 0.22's
//! `AddedVocabulary` keeps the first flags of a special token added twice (SD 1.5's eos
//! comes as `normalized` from the config and again as the plain-string pad token), so
//! `<|ENDOFTEXT|>` in a prompt became 49407 where transformers (tokenizers 0.23) does not.
//!
//! What is written by hand, and why:
//!
//! * Reading the folder. transformers 5 does not run a CLIP `tokenizer.json` as it is: it
//!   rebuilds the CLIP pipeline and takes only the vocabulary, the merges and the added
//!   tokens from the file, so this module does the same instead of
//!   `tokenizers::Tokenizer::from_file` (which would also pick up a stored
//!   truncation/padding or a differing pipeline). Without `tokenizer.json` the vocabulary
//!   and merges come from `vocab.json` + `merges.txt`.
//! * Which special tokens become added tokens, with which flags, in which order: that is
//!   transformers' Python code (`from_pretrained` + `TokenizersBackend.__init__`), followed
//!   here step by step (see `SpecialTokens`). It matters for prompts that contain the
//!   special tokens' text: SD 1.5 matches `<|STARTOFTEXT|>` (normalized) but not
//!   `<|ENDOFTEXT|>`; SD 2 pads with `"!"`, which makes every `!` in a prompt id 0.
//! * Truncation and padding: cut to `max_length - 1` and put `<|endoftext|>` back, then pad
//!   with the pad id — what `truncation=True, padding="max_length"` does with
//!   `RobertaProcessing`; simpler than keeping two configured tokenizers.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::{Lowercase, Replace, Sequence as NormalizerSequence, NFC};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::roberta::RobertaProcessing;
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

/// CLIP's text context length, used when `tokenizer_config.json` has no usable
/// `model_max_length`.
pub const DEFAULT_MAX_LENGTH: usize = 77;

/// transformers' `VERY_LARGE_INTEGER` (1e30) stands for "no limit"; anything above this is
/// treated like a missing `model_max_length`.
const MAX_SANE_MAX_LENGTH: u64 = 1 << 20;

/// CLIP's pre-tokenizer regex, as in transformers' `CLIPTokenizer.__init__`.
const CLIP_SPLIT_PATTERN: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

const DEFAULT_BOS: &str = "<|startoftext|>";
const DEFAULT_EOS: &str = "<|endoftext|>";
const DEFAULT_UNK: &str = "<|endoftext|>";
const DEFAULT_PAD: &str = "<|endoftext|>";

/// transformers' `SPECIAL_TOKENS_ATTRIBUTES`, in its order (the order tokens are added in).
const SPECIAL_TOKEN_KEYS: [&str; 7] = [
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
];

const TOKENIZER_JSON: &str = "tokenizer.json";
const VOCAB_JSON: &str = "vocab.json";
const MERGES_TXT: &str = "merges.txt";
const TOKENIZER_CONFIG_JSON: &str = "tokenizer_config.json";
const SPECIAL_TOKENS_MAP_JSON: &str = "special_tokens_map.json";
const ADDED_TOKENS_JSON: &str = "added_tokens.json";

/// Errors of [`ClipTokenizer::from_dir`].
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// The folder does not exist (or is not a folder).
    #[error("tokenizer folder `{}` does not exist or is not a folder", .0.display())]
    NotAFolder(PathBuf),
    /// Neither loadable file set is there.
    #[error(
        "tokenizer folder `{}` has neither tokenizer.json nor vocab.json + merges.txt",
        .0.display()
    )]
    NoVocabulary(PathBuf),
    /// One of vocab.json / merges.txt is there, the other is not (and no tokenizer.json).
    #[error("tokenizer folder `{}` has {found} but no {missing} (and no tokenizer.json)", .dir.display())]
    MissingFile {
        dir: PathBuf,
        found: &'static str,
        missing: &'static str,
    },
    /// A file could not be read.
    #[error("cannot read `{}`: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A file is there but its content is not what a CLIP tokenizer folder holds.
    #[error("malformed `{}`: {reason}", .path.display())]
    Malformed { path: PathBuf, reason: String },
    /// The vocabulary lacks a token the tokenizer needs (a special token, a byte symbol).
    #[error("tokenizer folder `{}`: {reason}", .dir.display())]
    Invalid { dir: PathBuf, reason: String },
}

/// transformers' `CLIPTokenizer`, loaded from a diffusers/transformers `tokenizer/` folder.
#[derive(Clone)]
pub struct ClipTokenizer {
    tokenizer: Tokenizer,
    max_length: usize,
    bos_id: u32,
    eos_id: u32,
    pad_id: u32,
}

impl fmt::Debug for ClipTokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClipTokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("max_length", &self.max_length)
            .field("bos_id", &self.bos_id)
            .field("eos_id", &self.eos_id)
            .field("pad_id", &self.pad_id)
            .finish_non_exhaustive()
    }
}

impl ClipTokenizer {
    /// Loads a tokenizer folder: `tokenizer.json` if present (its vocabulary, merges and
    /// added tokens; the pipeline is CLIP's, as in transformers 5), else `vocab.json` +
    /// `merges.txt`; plus `tokenizer_config.json` / `special_tokens_map.json` /
    /// `added_tokens.json` when present (special tokens, pad token, `model_max_length`,
    /// added tokens).
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self, TokenizerError> {
        let dir = dir.as_ref();
        if !dir.is_dir() {
            return Err(TokenizerError::NotAFolder(dir.to_path_buf()));
        }
        let tokenizer_json_path = dir.join(TOKENIZER_JSON);
        let tokenizer_json = if tokenizer_json_path.is_file() {
            Some(read_json_object(&tokenizer_json_path)?)
        } else {
            None
        };
        let (vocab, merges) = match &tokenizer_json {
            Some(json) => vocab_and_merges_from_tokenizer_json(&tokenizer_json_path, json)?,
            None => {
                let vocab_path = dir.join(VOCAB_JSON);
                let merges_path = dir.join(MERGES_TXT);
                match (vocab_path.is_file(), merges_path.is_file()) {
                    (true, true) => (
                        read_vocab_json(&vocab_path)?,
                        read_merges_txt(&merges_path)?,
                    ),
                    (false, false) => return Err(TokenizerError::NoVocabulary(dir.to_path_buf())),
                    (true, false) => {
                        return Err(TokenizerError::MissingFile {
                            dir: dir.to_path_buf(),
                            found: VOCAB_JSON,
                            missing: MERGES_TXT,
                        })
                    }
                    (false, true) => {
                        return Err(TokenizerError::MissingFile {
                            dir: dir.to_path_buf(),
                            found: MERGES_TXT,
                            missing: VOCAB_JSON,
                        })
                    }
                }
            }
        };

        let config_path = dir.join(TOKENIZER_CONFIG_JSON);
        let config = if config_path.is_file() {
            read_json_object(&config_path)?
        } else {
            Map::new()
        };
        let max_length = max_length_from_config(&config_path, &config)?;
        let special = SpecialTokens::from_files(dir, &config, tokenizer_json.as_ref())?;
        drop(tokenizer_json);

        Self::build(dir, vocab, merges, special, max_length)
    }

    fn build(
        dir: &Path,
        vocab: HashMap<String, u32>,
        merges: Vec<(String, String)>,
        special: SpecialTokens,
        max_length: usize,
    ) -> Result<Self, TokenizerError> {
        let invalid = |reason: String| TokenizerError::Invalid {
            dir: dir.to_path_buf(),
            reason,
        };
        let unk = special
            .content("unk_token")
            .unwrap_or(DEFAULT_UNK)
            .to_string();
        let bos = special
            .content("bos_token")
            .unwrap_or(DEFAULT_BOS)
            .to_string();
        let eos = special
            .content("eos_token")
            .unwrap_or(DEFAULT_EOS)
            .to_string();
        let pad = special
            .content("pad_token")
            .unwrap_or(DEFAULT_PAD)
            .to_string();

        // Every byte symbol, alone and as a word end, must be in the vocabulary: then BPE
        // never needs the unknown token and encoding cannot fail.
        for c in ByteLevel::alphabet() {
            for symbol in [c.to_string(), format!("{c}</w>")] {
                if !vocab.contains_key(&symbol) {
                    return Err(invalid(format!(
                        "the vocabulary lacks the byte-level symbol `{symbol}`; not a CLIP BPE vocabulary"
                    )));
                }
            }
        }
        if !vocab.contains_key(&unk) {
            return Err(invalid(format!(
                "the unknown token `{unk}` is not in the vocabulary"
            )));
        }

        let model = BPE::builder()
            .vocab_and_merges(vocab.into_iter().collect::<Vocab>(), merges)
            .continuing_subword_prefix(String::new())
            .end_of_word_suffix("</w>".to_string())
            .fuse_unk(false)
            .unk_token(unk)
            .build()
            .map_err(|e| invalid(format!("bad BPE vocabulary/merges: {e}")))?;

        let mut tokenizer = Tokenizer::new(model);
        let normalizer = NormalizerSequence::new(vec![
            NFC.into(),
            Replace::new(
                tokenizers::normalizers::replace::ReplacePattern::Regex(r"\s+".into()),
                " ",
            )
            .expect("valid regex")
            .into(),
            Lowercase.into(),
        ]);
        tokenizer
            .with_normalizer(Some(normalizer))
            .expect("setting a normalizer on a tokenizer without added tokens");
        let split = Split::new(
            SplitPattern::Regex(CLIP_SPLIT_PATTERN.into()),
            SplitDelimiterBehavior::Removed,
            true,
        )
        .expect("valid regex");
        tokenizer.with_pre_tokenizer(Some(PreTokenizerSequence::new(vec![
            split.into(),
            ByteLevel::new(false, true, true).into(),
        ])));
        tokenizer.with_decoder(Some(ByteLevelDecoder::default()));

        let to_add = special.tokens_to_add();
        if !to_add.is_empty() {
            tokenizer
                .add_tokens(to_add)
                .map_err(|e| invalid(format!("cannot add the special tokens: {e}")))?;
        }

        let id = |token: &str, what: &str| {
            tokenizer
                .token_to_id(token)
                .ok_or_else(|| invalid(format!("the {what} token `{token}` has no id")))
        };
        let bos_id = id(&bos, "bos")?;
        let eos_id = id(&eos, "eos")?;
        let pad_id = id(&pad, "pad")?;
        tokenizer.with_post_processor(Some(
            RobertaProcessing::new((eos, eos_id), (bos, bos_id))
                .trim_offsets(false)
                .add_prefix_space(false),
        ));

        Ok(Self {
            tokenizer,
            max_length,
            bos_id,
            eos_id,
            pad_id,
        })
    }

    /// `<|startoftext|>` + tokens + `<|endoftext|>`, without truncation or padding
    /// (`tok(text).input_ids`); may be longer than [`Self::max_length`].
    pub fn encode_full(&self, text: &str) -> Vec<u32> {
        self.tokenizer
            .encode_fast(text, true)
            // Cannot fail: the unknown token and every byte symbol are in the vocabulary
            // (checked in `from_dir`), and no truncation is configured.
            .expect("CLIP tokenization does not fail")
            .get_ids()
            .to_vec()
    }

    /// `<|startoftext|>` + tokens + `<|endoftext|>`, the tokens cut so that the whole is at
    /// most [`Self::max_length`] long
    /// (`tok(text, truncation=True, max_length=77).input_ids`).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut ids = self.encode_full(text);
        if ids.len() > self.max_length {
            ids.truncate(self.max_length - 1);
            ids.push(self.eos_id);
        }
        ids
    }

    /// [`Self::encode`] padded with the pad id to exactly [`Self::max_length`]
    /// (`tok(text, padding="max_length", truncation=True, max_length=77).input_ids`).
    pub fn encode_padded(&self, text: &str) -> Vec<u32> {
        let mut ids = self.encode(text);
        ids.resize(self.max_length, self.pad_id);
        ids
    }

    /// Adds tokens (textual inversion: `tok.add_tokens([...])`): each is matched in the
    /// (normalized) text before BPE, and gets the next free id after the vocabulary unless
    /// the vocabulary or an earlier added token has it already. Returns their ids, in order.
    ///
    /// # Panics
    /// If a token is empty: it could never match, and transformers gives it no id.
    pub fn add_tokens(&mut self, tokens: &[&str]) -> Vec<u32> {
        assert!(
            tokens.iter().all(|t| !t.is_empty()),
            "added tokens must not be empty"
        );
        let new: Vec<AddedToken> = tokens.iter().map(|t| AddedToken::from(*t, false)).collect();
        self.tokenizer
            .add_tokens(new)
            .expect("adding tokens does not fail");
        tokens
            .iter()
            .map(|t| self.token_id(t).expect("an added token has an id"))
            .collect()
    }

    /// The id of a vocabulary entry (`"cat</w>"`) or an added token (`"<monet-style>"`).
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.tokenizer.token_to_id(token)
    }

    /// Number of ids, added tokens included (`len(tok)`): the rows the text encoder's
    /// token embedding needs.
    pub fn vocab_size(&self) -> usize {
        let base = self.tokenizer.get_vocab_size(false);
        let added_max = self
            .tokenizer
            .get_added_tokens_decoder()
            .keys()
            .max()
            .map_or(0, |&id| id as usize + 1);
        base.max(added_max)
    }

    /// Size of the BPE vocabulary alone (`tok.vocab_size`), 49408 for CLIP.
    pub fn base_vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(false)
    }

    /// Length of [`Self::encode_padded`] and the most [`Self::encode`] returns:
    /// `model_max_length` of `tokenizer_config.json`, else 77.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// Id of `<|startoftext|>` (49406).
    pub fn bos_id(&self) -> u32 {
        self.bos_id
    }

    /// Id of `<|endoftext|>` (49407).
    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    /// Id of the pad token: 49407 (`<|endoftext|>`) for SD 1.x, 0 (`!`) for SD 2.x.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }
}

/// A special token as the config gives it: a plain string, or an `AddedToken` dict.
/// Equality is Python's: strings by value, `AddedToken`s by all fields, never across.
#[derive(Clone, Debug, PartialEq, Eq)]
enum TokenValue {
    Str(String),
    Added(AddedToken),
}

impl TokenValue {
    fn content(&self) -> &str {
        match self {
            TokenValue::Str(s) => s,
            TokenValue::Added(t) => &t.content,
        }
    }
}

/// The special tokens and added tokens of a folder, gathered the way transformers 5's
/// `from_pretrained` does for a `TokenizersBackend` tokenizer.
struct SpecialTokens {
    /// `bos_token`, `eos_token`, … in [`SPECIAL_TOKEN_KEYS`] order.
    named: Vec<(&'static str, TokenValue)>,
    /// `additional_special_tokens` / `extra_special_tokens`.
    extra: Vec<TokenValue>,
    /// `added_tokens_decoder` (config), else `added_tokens.json` + tokenizer.json's
    /// `added_tokens`, by id.
    decoder: Vec<(u32, AddedToken)>,
}

impl SpecialTokens {
    fn from_files(
        dir: &Path,
        config: &Map<String, Value>,
        tokenizer_json: Option<&Map<String, Value>>,
    ) -> Result<Self, TokenizerError> {
        let config_path = dir.join(TOKENIZER_CONFIG_JSON);
        let mut named: HashMap<&'static str, TokenValue> = HashMap::new();
        for key in SPECIAL_TOKEN_KEYS {
            if let Some(v) = config.get(key) {
                if let Some(t) = parse_token_value(&config_path, key, v, None)? {
                    named.insert(key, t);
                }
            }
        }
        let mut extra = Vec::new();
        for key in ["extra_special_tokens", "additional_special_tokens"] {
            if let Some(v) = config.get(key) {
                extra = parse_token_list(&config_path, key, v, None)?;
                if !extra.is_empty() {
                    break;
                }
            }
        }

        let mut decoder: Vec<(u32, AddedToken)> = Vec::new();
        if let Some(v) = config.get("added_tokens_decoder") {
            let entries = v.as_object().ok_or_else(|| {
                malformed(&config_path, "`added_tokens_decoder` is not an object")
            })?;
            for (id, token) in entries {
                let id: u32 = id.parse().map_err(|_| {
                    malformed(
                        &config_path,
                        format!("`added_tokens_decoder` key `{id}` is not an id"),
                    )
                })?;
                let token = parse_added_token(&config_path, "added_tokens_decoder", token, None)?;
                decoder.retain(|(i, _)| *i != id);
                decoder.push((id, token));
            }
        } else {
            // Legacy files, read only when the config has no `added_tokens_decoder`.
            let map_path = dir.join(SPECIAL_TOKENS_MAP_JSON);
            if map_path.is_file() {
                let map = read_json_object(&map_path)?;
                let mut map_additional = Vec::new();
                for (key, v) in &map {
                    if let Some(&key) = SPECIAL_TOKEN_KEYS.iter().find(|k| *k == key) {
                        // Dicts become AddedToken(**value, special=True).
                        if let Some(t) = parse_token_value(&map_path, key, v, Some(true))? {
                            named.insert(key, t);
                        }
                    } else if key == "extra_special_tokens" {
                        for t in parse_token_list(&map_path, key, v, Some(true))? {
                            if !extra.contains(&t) {
                                extra.push(t);
                            }
                        }
                    } else if key == "additional_special_tokens" {
                        // The deprecated name counts only when nothing else gave extra tokens.
                        map_additional = parse_token_list(&map_path, key, v, Some(true))?;
                    }
                }
                if extra.is_empty() {
                    extra = map_additional;
                }
            }
            let added_path = dir.join(ADDED_TOKENS_JSON);
            if added_path.is_file() {
                let specials: Vec<String> = named
                    .values()
                    .chain(extra.iter())
                    .map(|t| t.content().to_string())
                    .collect();
                for (content, id) in &read_json_object(&added_path)? {
                    let id = json_id(id).ok_or_else(|| {
                        malformed(
                            &added_path,
                            format!("the id of `{content}` is not an integer"),
                        )
                    })?;
                    let is_special = specials.contains(content);
                    let token =
                        AddedToken::from(content.as_str(), is_special).normalized(!is_special);
                    decoder.retain(|(i, _)| *i != id);
                    decoder.push((id, token));
                }
            }
            if let Some(json) = tokenizer_json {
                let path = dir.join(TOKENIZER_JSON);
                if let Some(v) = json.get("added_tokens") {
                    let list = v
                        .as_array()
                        .ok_or_else(|| malformed(&path, "`added_tokens` is not a list"))?;
                    for entry in list {
                        let id = entry.get("id").and_then(json_id).ok_or_else(|| {
                            malformed(&path, "an `added_tokens` entry has no integer `id`")
                        })?;
                        let token = parse_added_token(&path, "added_tokens", entry, None)?;
                        decoder.retain(|(i, _)| *i != id);
                        decoder.push((id, token));
                    }
                }
            }
        }
        decoder.sort_by_key(|(id, _)| *id);

        // A named token whose text is an added token becomes that AddedToken.
        if !decoder.is_empty() {
            for value in named.values_mut() {
                // The last entry with this content wins, as in a Python dict.
                if let Some((_, t)) = decoder
                    .iter()
                    .rev()
                    .find(|(_, t)| t.content == value.content())
                {
                    *value = TokenValue::Added(t.clone());
                }
            }
        }

        // CLIPTokenizer's defaults for the four it always has.
        for (key, default) in [
            ("bos_token", DEFAULT_BOS),
            ("eos_token", DEFAULT_EOS),
            ("unk_token", DEFAULT_UNK),
            ("pad_token", DEFAULT_PAD),
        ] {
            named
                .entry(key)
                .or_insert_with(|| TokenValue::Str(default.to_string()));
        }
        let named = SPECIAL_TOKEN_KEYS
            .iter()
            .filter_map(|k| named.remove(k).map(|v| (*k, v)))
            .collect();
        Ok(Self {
            named,
            extra,
            decoder,
        })
    }

    fn content(&self, key: &str) -> Option<&str> {
        self.named
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.content())
    }

    /// The list `TokenizersBackend.__init__` hands to `add_tokens`: the decoder's tokens by
    /// id, then each named and extra special token whose text is not among them yet (and
    /// that is not equal to one already listed), strings as `AddedToken(special=True)`.
    fn tokens_to_add(&self) -> Vec<AddedToken> {
        let decoder_contents: Vec<&str> = self
            .decoder
            .iter()
            .map(|(_, t)| t.content.as_str())
            .collect();
        let mut list: Vec<TokenValue> = self
            .decoder
            .iter()
            .map(|(_, t)| TokenValue::Added(t.clone()))
            .collect();
        for value in self.named.iter().map(|(_, v)| v).chain(self.extra.iter()) {
            if !decoder_contents.contains(&value.content()) && !list.contains(value) {
                list.push(value.clone());
            }
        }
        let named_contents: Vec<&str> = self.named.iter().map(|(_, v)| v.content()).collect();
        list.into_iter()
            .map(|value| match value {
                TokenValue::Str(s) => AddedToken::from(s, true),
                TokenValue::Added(mut t) => {
                    if !t.special && named_contents.contains(&t.content.as_str()) {
                        t.special = true;
                    }
                    t
                }
            })
            .collect()
    }
}

/// A special-token entry: `"<|endoftext|>"` or `{"content": …, "normalized": …, …}`;
/// `null` is no token. `special` overrides the dict's `special` (special_tokens_map.json).
fn parse_token_value(
    path: &Path,
    key: &str,
    value: &Value,
    special: Option<bool>,
) -> Result<Option<TokenValue>, TokenizerError> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(TokenValue::Str(s.clone()))),
        Value::Object(_) => Ok(Some(TokenValue::Added(parse_added_token(
            path, key, value, special,
        )?))),
        _ => Err(malformed(
            path,
            format!("`{key}` is neither a string nor a token object"),
        )),
    }
}

fn parse_token_list(
    path: &Path,
    key: &str,
    value: &Value,
    special: Option<bool>,
) -> Result<Vec<TokenValue>, TokenizerError> {
    match value {
        Value::Null => Ok(Vec::new()),
        // A dict (model-specific names -> tokens) counts by its values.
        Value::Array(_) | Value::Object(_) => {
            let items: Vec<&Value> = match value {
                Value::Array(items) => items.iter().collect(),
                Value::Object(map) => map.values().collect(),
                _ => unreachable!(),
            };
            let mut out = Vec::new();
            for item in items {
                if let Some(t) = parse_token_value(path, key, item, special)? {
                    out.push(t);
                }
            }
            Ok(out)
        }
        _ => Err(malformed(path, format!("`{key}` is not a list of tokens"))),
    }
}

/// Python's `AddedToken(**dict)`: flags default to false, `normalized` to `not special`.
fn parse_added_token(
    path: &Path,
    key: &str,
    value: &Value,
    special: Option<bool>,
) -> Result<AddedToken, TokenizerError> {
    let obj = value.as_object().ok_or_else(|| {
        malformed(
            path,
            format!("`{key}` has an entry that is not a token object"),
        )
    })?;
    let content = obj.get("content").and_then(Value::as_str).ok_or_else(|| {
        malformed(
            path,
            format!("`{key}` has a token without a string `content`"),
        )
    })?;
    let flag = |name: &str| -> Result<Option<bool>, TokenizerError> {
        match obj.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(malformed(
                path,
                format!("`{key}`: `{name}` of `{content}` is not a boolean"),
            )),
        }
    };
    let special = match special {
        Some(s) => s,
        None => flag("special")?.unwrap_or(false),
    };
    Ok(AddedToken::from(content, special)
        .single_word(flag("single_word")?.unwrap_or(false))
        .lstrip(flag("lstrip")?.unwrap_or(false))
        .rstrip(flag("rstrip")?.unwrap_or(false))
        .normalized(flag("normalized")?.unwrap_or(!special)))
}

fn max_length_from_config(
    path: &Path,
    config: &Map<String, Value>,
) -> Result<usize, TokenizerError> {
    let Some(value) = config.get("model_max_length") else {
        return Ok(DEFAULT_MAX_LENGTH);
    };
    let n = match value {
        Value::Null => return Ok(DEFAULT_MAX_LENGTH),
        Value::Number(n) => n,
        _ => return Err(malformed(path, "`model_max_length` is not a number")),
    };
    match n.as_u64() {
        Some(n) if n > MAX_SANE_MAX_LENGTH => Ok(DEFAULT_MAX_LENGTH),
        // BOS and EOS alone take 2.
        Some(n) if n >= 2 => Ok(n as usize),
        Some(n) => Err(malformed(
            path,
            format!("`model_max_length` {n} is below 2"),
        )),
        // 1e30 is stored as a float by some writers.
        None if n.as_f64().is_some_and(|f| f > MAX_SANE_MAX_LENGTH as f64) => {
            Ok(DEFAULT_MAX_LENGTH)
        }
        None => Err(malformed(
            path,
            format!("`model_max_length` {n} is not a length"),
        )),
    }
}

fn malformed(path: &Path, reason: impl Into<String>) -> TokenizerError {
    TokenizerError::Malformed {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn read_text(path: &Path) -> Result<String, TokenizerError> {
    std::fs::read_to_string(path).map_err(|source| TokenizerError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn read_json_object(path: &Path) -> Result<Map<String, Value>, TokenizerError> {
    let text = read_text(path)?;
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(malformed(path, "not a JSON object")),
        Err(e) => Err(malformed(path, format!("invalid JSON: {e}"))),
    }
}

fn json_id(value: &Value) -> Option<u32> {
    value.as_u64().and_then(|n| u32::try_from(n).ok())
}

fn vocab_from_object(
    path: &Path,
    what: &str,
    map: &Map<String, Value>,
) -> Result<HashMap<String, u32>, TokenizerError> {
    let mut vocab = HashMap::with_capacity(map.len());
    for (token, id) in map {
        let id = json_id(id).ok_or_else(|| {
            malformed(
                path,
                format!("{what}: the id of `{token}` is not a non-negative integer"),
            )
        })?;
        vocab.insert(token.clone(), id);
    }
    if vocab.is_empty() {
        return Err(malformed(path, format!("{what} is empty")));
    }
    Ok(vocab)
}

fn read_vocab_json(path: &Path) -> Result<HashMap<String, u32>, TokenizerError> {
    let map = read_json_object(path)?;
    vocab_from_object(path, "the vocabulary", &map)
}

/// merges.txt as `tokenizers`' `BPE::read_file` reads it: `#version` lines skipped, every
/// other line exactly two symbols separated by one space.
fn read_merges_txt(path: &Path) -> Result<Vec<(String, String)>, TokenizerError> {
    let text = read_text(path)?;
    let mut merges = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.starts_with("#version") {
            continue;
        }
        merges.push(split_merge(line).ok_or_else(|| {
            malformed(
                path,
                format!(
                    "line {} is not two symbols separated by a space: {line:?}",
                    i + 1
                ),
            )
        })?);
    }
    Ok(merges)
}

fn split_merge(line: &str) -> Option<(String, String)> {
    let mut parts = line.split(' ');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(a), Some(b), None) => Some((a.to_string(), b.to_string())),
        _ => None,
    }
}

/// The BPE vocabulary and merges of a tokenizer.json (`model.vocab`, `model.merges` as
/// `"a b"` strings or `["a", "b"]` pairs).
#[allow(clippy::type_complexity)]
fn vocab_and_merges_from_tokenizer_json(
    path: &Path,
    json: &Map<String, Value>,
) -> Result<(HashMap<String, u32>, Vec<(String, String)>), TokenizerError> {
    let model = json
        .get("model")
        .and_then(Value::as_object)
        .ok_or_else(|| malformed(path, "no `model` object"))?;
    if let Some(kind) = model.get("type").and_then(Value::as_str) {
        if kind != "BPE" {
            return Err(malformed(path, format!("the model is {kind}, not BPE")));
        }
    }
    let vocab = model
        .get("vocab")
        .and_then(Value::as_object)
        .ok_or_else(|| malformed(path, "`model.vocab` is not an object"))?;
    let vocab = vocab_from_object(path, "`model.vocab`", vocab)?;
    let list = model
        .get("merges")
        .and_then(Value::as_array)
        .ok_or_else(|| malformed(path, "`model.merges` is not a list"))?;
    let mut merges = Vec::with_capacity(list.len());
    for (i, m) in list.iter().enumerate() {
        let pair = match m {
            Value::String(s) => split_merge(s),
            Value::Array(p) => match p.as_slice() {
                [Value::String(a), Value::String(b)] => Some((a.clone(), b.clone())),
                _ => None,
            },
            _ => None,
        };
        merges.push(pair.ok_or_else(|| {
            malformed(
                path,
                format!("`model.merges[{i}]` is not a pair of symbols"),
            )
        })?);
    }
    Ok((vocab, merges))
}

#!/usr/bin/env python3
"""Writes the golden CLIP tokenizer fixtures used by `worker/sd/tests/tokenizer.rs`.

    python3 -m venv /tmp/venv-sd
    /tmp/venv-sd/bin/pip install torch transformers==5.24.0 open-clip-torch
    /tmp/venv-sd/bin/python tools/make_tokenizer_fixtures.py

(torch is only there because open-clip-torch needs it; only the wheel's BPE file
`open_clip/bpe_simple_vocab_16e6.txt.gz` is read.) The output goes to
`worker/sd/tests/fixtures/clip-tokenizer*/` (replaced on each run) and is committed;
re-run this only to change the fixtures.

The reference is transformers' `CLIPTokenizer` (transformers 5, a pipeline of the
`tokenizers` library). The real 49408-entry CLIP vocabulary is built from open_clip's
BPE the way transformers' conversion does (256 byte characters, the same with `</w>`,
one entry per merge, `<|startoftext|>`, `<|endoftext|>`), so no model download is needed.

Folders:

    clip-tokenizer/          an SD 1.5 `tokenizer/` folder as the hub ships it (vocab.json,
                             merges.txt, tokenizer_config.json and special_tokens_map.json in
                             the transformers-4 format: bos/eos/unk as AddedToken dicts with
                             normalized=true, pad "<|endoftext|>") plus the tokenizer.json that
                             transformers 5's `save_pretrained` writes for it (re-serialized
                             without indentation to halve its size; same JSON value).
                             cases.json: the prompts and their ids.
    clip-tokenizer-pad0/     SD 2 style: only tokenizer_config.json + special_tokens_map.json
                             (pad "!" in special_tokens_map.json, id 0) and cases.json; the test
                             copies vocab.json + merges.txt from clip-tokenizer/.
    clip-tokenizer-addedcfg/ SDXL tokenizer_2 style config as transformers 4.3x saves it: plain
                             strings for the special tokens, an `added_tokens_decoder` (pad "!",
                             normalized flags, and a textual-inversion token `<cat-toy>` = 49408);
                             config files + cases.json only, vocab/merges copied by the test.
    clip-tokenizer-legacy/   the older ways to add tokens: `additional_special_tokens` in the
                             config (a string and an AddedToken dict), in special_tokens_map.json
                             (ignored by transformers when the config has some), and an
                             added_tokens.json; config files + cases.json, vocab/merges copied.

cases.json holds `max_length`, `pad_id`, `base_vocab_size` (`tok.vocab_size`), `vocab_size`
(`len(tok)`, after the added tokens), `added_tokens` (the tokens added with
`tok.add_tokens([...])` before the cases flagged `added_tokens: true`, with their ids; the
cases flagged false are encoded before adding them) and `cases`, each with the prompt and:

    ids            tok(prompt).input_ids                         (no truncation, no padding)
    ids_truncated  tok(prompt, truncation=True, max_length=77).input_ids
    ids_padded     tok(prompt, padding="max_length", truncation=True, max_length=77).input_ids

The script checks that every case gives the same ids whether transformers loads the folder
with or without tokenizer.json, and whether it loads the `save_pretrained` output.
"""

import gzip
import json
import shutil
import tempfile
from pathlib import Path

import open_clip
import transformers
from transformers import CLIPTokenizer

transformers.logging.set_verbosity_error()  # "sequence length is longer than ..." on long prompts

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "worker" / "sd" / "tests" / "fixtures"
MAX_LEN = 77
ADDED_TOKENS = ["<monet-style>", "<vangogh-style>", "<francis-style>", "<anime-style>", "<Crème-Brûlée>", "zorblax"]


def bytes_to_unicode():
    """GPT-2 / CLIP byte -> printable unicode character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def clip_vocab_and_merges():
    path = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    lines = gzip.open(path).read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == 49408, len(vocab)
    assert len(set(vocab)) == len(vocab)
    return {v: i for i, v in enumerate(vocab)}, merges


def added_token_dict(content, normalized, special=None, with_type=False):
    d = {"content": content, "lstrip": False, "normalized": normalized, "rstrip": False, "single_word": False}
    if special is not None:
        d["special"] = special
    if with_type:
        d = {"__type": "AddedToken", **d}
    return d


def sd15_configs():
    """tokenizer_config.json and special_tokens_map.json of runwayml/stable-diffusion-v1-5/tokenizer."""
    at = lambda c: added_token_dict(c, True, with_type=True)  # noqa: E731
    config = {
        "add_prefix_space": False,
        "bos_token": at("<|startoftext|>"),
        "do_lower_case": True,
        "eos_token": at("<|endoftext|>"),
        "errors": "replace",
        "model_max_length": MAX_LEN,
        "name_or_path": "openai/clip-vit-large-patch14",
        "pad_token": "<|endoftext|>",
        "special_tokens_map_file": "./special_tokens_map.json",
        "tokenizer_class": "CLIPTokenizer",
        "unk_token": at("<|endoftext|>"),
    }
    st = lambda c: added_token_dict(c, True)  # noqa: E731
    special = {
        "bos_token": st("<|startoftext|>"),
        "eos_token": st("<|endoftext|>"),
        "pad_token": "<|endoftext|>",
        "unk_token": st("<|endoftext|>"),
    }
    return config, special


def sd2_configs():
    """stabilityai/stable-diffusion-2-1/tokenizer: as SD 1.5 but special_tokens_map pads with "!"."""
    config, special = sd15_configs()
    special = dict(special, pad_token="!")
    return config, special


def addedcfg_configs():
    """SDXL tokenizer_2 config as transformers 4.3x saves it, plus a textual-inversion token."""
    config = {
        "add_prefix_space": False,
        "added_tokens_decoder": {
            "0": added_token_dict("!", False, True),
            "49406": added_token_dict("<|startoftext|>", True, True),
            "49407": added_token_dict("<|endoftext|>", False, True),
            "49408": added_token_dict("<cat-toy>", True, False),
        },
        "bos_token": "<|startoftext|>",
        "clean_up_tokenization_spaces": True,
        "do_lower_case": True,
        "eos_token": "<|endoftext|>",
        "errors": "replace",
        "model_max_length": MAX_LEN,
        "pad_token": "!",
        "tokenizer_class": "CLIPTokenizer",
        "unk_token": "<|endoftext|>",
    }
    special = {
        "bos_token": added_token_dict("<|startoftext|>", True),
        "eos_token": added_token_dict("<|endoftext|>", True),
        "pad_token": "!",
        "unk_token": added_token_dict("<|endoftext|>", True),
    }
    return config, special


def legacy_configs():
    """SD 1.5 configs plus additional_special_tokens, and an added_tokens.json."""
    config, special = sd15_configs()
    config = dict(config)
    config["additional_special_tokens"] = ["<extra1>", added_token_dict("<Extra2>", True, with_type=True)]
    special = dict(special)
    special["additional_special_tokens"] = [added_token_dict("<extra3>", False)]
    added = {"<extra1>": 49408, "<legacy-tok>": 49411}
    return config, special, added


def write_json(path, value, compact=False):
    if compact:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    else:
        text = json.dumps(value, ensure_ascii=False, indent=2)
    path.write_text(text + "\n", encoding="utf-8")


def write_folder(folder, vocab, merges, config, special):
    folder.mkdir(parents=True)
    # vocab.json / merges.txt exactly as transformers' slow CLIPTokenizer.save_vocabulary wrote them.
    (folder / "vocab.json").write_text(
        json.dumps(vocab, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    with open(folder / "merges.txt", "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        for m in merges:
            f.write(" ".join(m) + "\n")
    write_json(folder / "tokenizer_config.json", config)
    write_json(folder / "special_tokens_map.json", special)


# ---------------------------------------------------------------------------------------- prompts

LONG_1 = (
    "a highly detailed matte painting of a sprawling futuristic city at dusk, neon lights reflecting "
    "on wet streets, flying cars, towering skyscrapers with holographic billboards, crowds of people "
    "with umbrellas, steam rising from manholes, cinematic lighting, volumetric fog, octane render, "
    "unreal engine 5, trending on artstation, 8k resolution, ultra sharp focus, by greg rutkowski and "
    "syd mead and moebius, masterpiece, best quality, intricate, elegant, dramatic composition"
)
LONG_2 = " ".join(["cat"] * 200)
LONG_3 = "(masterpiece:1.2), (best quality:1.1), " * 12
LONG_4 = "漢字かな交じり文の長いプロンプト、" * 20
LONG_5 = "🐱" * 100


def exact_len_prompt(n_words):
    # "a" is one token, so this gives n_words content tokens.
    return " ".join(["a"] * n_words)


BASE_PROMPTS = [
    # plain prompts
    "a photo of a cat",
    "",
    "a",
    "A photo of an astronaut riding a horse on mars",
    "portrait of a woman, oil on canvas, by john singer sargent",
    "a watercolor painting of a fox in a snowy forest",
    "an isometric 3d render of a tiny cozy bedroom, pastel colors, soft lighting",
    "sks dog sitting on the beach",
    "photo of ohwx man in a suit",
    "low poly, blender, cycles render",
    "pixel art sprite sheet of a knight",
    "macro photograph of a dew drop on a spider web, bokeh",
    "black and white photograph, 35mm film, grain",
    "studio ghibli style landscape",
    "the quick brown fox jumps over the lazy dog",
    "hello world",
    "antidisestablishmentarianism",
    "pneumonoultramicroscopicsilicovolcanoconiosis",
    "supercalifragilisticexpialidocious and floccinaucinihilipilification",
    "a b c d e f g h i j k l m n o p q r s t u v w x y z",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "xyzzy plugh qwfp zxcvbnm",
    # upper / mixed case
    "A PHOTO OF A CAT",
    "PhOtO oF a CaT",
    "NASA Space Shuttle",
    "iPhone McDonald's O'Brien",
    "İstanbul",
    "ΣΊΣΥΦΟΣ ΟΔΟΣ",
    "straße STRASSE Straße ẞ",
    "ǅemal Ǆ ǆ",
    "ÀÉÎÕÜ ÇÑ",
    "ΑΒΓΔΕ αβγδε",
    "КОШКА кошка Кошка",
    "ﬁne ﬂower ﬀ ﬃ",
    "Ⓐ Ⓑ ⓒ",
    "ＡＢＣ ｆｕｌｌｗｉｄｔｈ",
    # accents, NFC/NFD
    "café crème brûlée",
    "cafe\u0301 cre\u0300me",
    "naïve résumé façade",
    "Ångström",
    "A\u030angstro\u0308m",
    "señor niño año",
    "Ærøskøbing",
    "Đặng Thị Ngọc Thịnh",
    "Łódź Kraków Gdańsk",
    "Dvořák Škoda",
    "Ḩ̶e̷l̸l̵o̴",
    # combining marks
    "\u0301",
    "\u0301\u0302\u0303 a",
    "e\u0301\u0301\u0301",
    "Z̤͔ͧ̑̓ä͖̭̈̇lͮ̒ͫǒ̍ ̠̟͕g̼̿̂o̟͑",
    "a\u20dd b\u20e3",
    "क्षत्रिय",
    "ภาษาไทย",
    "\u0915\u093c",
    # CJK
    "猫の写真",
    "一只猫坐在窗台上",
    "고양이 사진",
    "東京タワー、夜景、4K",
    "中文，标点。符号！",
    "ｶﾀｶﾅ ｈａｌｆｗｉｄｔｈ",
    "𠀀𠀁𠀂 CJK extension B",
    "々〆〤",
    "㍻ ㌀",
    # emoji
    "🐱 cat",
    "🐶🐱🐭🐹",
    "a cat 😺 and a dog 🐕",
    "👩‍👩‍👧‍👦 family",
    "👍🏽 thumbs up",
    "🇯🇵 🇺🇸 🇫🇷",
    "❤️ love",
    "☕️ coffee",
    "🏳️‍🌈",
    "🧑🏾‍🚀 astronaut",
    "1️⃣ keycap",
    # RTL
    "صورة قطة",
    "חתול שחור",
    "مرحبا بالعالم 123",
    "שלום world",
    "\u202eevil\u202c text",
    "\u200fRTL mark\u200e",
    # other scripts
    "Привет мир",
    "Γειά σου Κόσμε",
    "नमस्ते दुनिया",
    "ሰላም ዓለም",
    "Բարեւ աշխարհ",
    "გამარჯობა",
    "ᚠᚢᚦᚨᚱᚲ runes",
    "𝔣𝔯𝔞𝔨𝔱𝔲𝔯 𝓈𝒸𝓇𝒾𝓅𝓉 𝕕𝕠𝕦𝕓𝕝𝕖",
    "\U0001e4d0\U0001e4d1\U0001e4d2 nag mundari",
    "\U00011f04\U00011f05 kawi",
    "\U00031350\U00031351 cjk ext h",
    "\U0002ebf0\U0002ebf1 cjk ext i",
    "\U0001e5d0\U0001e5d1 ol onal",
    "\U00010d4a\U00010d4b garay",
    "\U0001e5f1\U0001e5f2 ol onal digits",
    "\U00016d43\U00016d44 kirat rai",
    "\U0001fae8\U0001fae9 new emoji",
    "\U000e0001\U000e0041 tags",
    "\U0010fffd private use",
    "\ue000\uf8ff",
    # punctuation runs
    "!!!",
    "hello!!!???",
    "...",
    "wait... what?!",
    "--==--",
    "a.b.c.d",
    "((((cat))))",
    "[[dog]] {{bird}}",
    "(masterpiece:1.2), (best quality), [lowres]",
    "cat | dog | bird",
    "cat AND dog",
    "#hashtag @mention $dollar %percent ^caret &amp *star",
    "~`!@#$%^&*()_+-={}[]|\\:;\"'<>,.?/",
    "«guillemets» „quotes“ “smart” ‘single’",
    "—em dash– en dash‐hyphen",
    "…",
    "a__b__c",
    "snake_case_name kebab-case-name camelCaseName",
    "http://example.com/path?q=1&r=2#frag",
    "user@example.com",
    "C:\\Users\\name\\file.txt",
    "/usr/local/bin",
    "¡¿Qué?!",
    "※ § ¶ † ‡",
    "° ± × ÷ ∞ ≠ ≤ ≥",
    "→ ← ↑ ↓ ⇒",
    "★☆♥♦♣♠",
    "<b>bold</b>",
    "<|",
    "|>",
    # apostrophes and contractions
    "it's",
    "don't",
    "we're",
    "I've",
    "I'm",
    "you'll",
    "he'd",
    "IT'S DON'T WE'RE I'VE I'M YOU'LL HE'D",
    "it’s don’t",
    "''s '''t",
    "'s't're've'm'll'd",
    "cats' toys",
    "rock 'n' roll",
    "'quoted'",
    "o'clock y'all ma'am",
    "'sup 'til",
    "the cat's meow isn't it",
    "'",
    "''",
    "'s",
    "'S",
    "x's",
    "x'sy",
    # numbers
    "1",
    "1234567890",
    "1,000,000",
    "3.14159",
    "1/2 cup",
    "2024-01-01",
    "12:30:45",
    "+1 (555) 123-4567",
    "1e10 1E-5",
    "0x1F 0b1010",
    "version 1.2.3",
    "4k 8K 1080p 60fps",
    "100%",
    "$9.99 €10 £5 ¥100",
    "١٢٣ ٤٥٦",
    "۱۲۳",
    "१२३",
    "一二三 壹贰叁",
    "² ³ ¹ ⁴",
    "½ ¼ ¾",
    "Ⅻ ⅻ Ⅳ",
    "①②③",
    "𝟙𝟚𝟛",
    "1st 2nd 3rd 4th",
    "1,234.56 1.234,56 1 234,56",
    # whitespace
    " ",
    "   ",
    "  a photo of a cat  ",
    "a\tphoto\tof\ta\tcat",
    "a\nphoto\nof\na\ncat",
    "line1\r\nline2\rline3",
    "a  \t \n  b",
    "\t\n\r ",
    "a\u00a0b",
    "a\u3000b",
    "a\u2003b\u2009c",
    "a\u200bb",
    "a\u2028b\u2029c",
    "a\x0bb\x0cc",
    "a\x85b",
    "a\x1cb\x1dc\x1ed\x1ff",
    "a\u180eb",
    "a\ufeffb",
    "a\u2060b",
    "a\u200db",
    # control characters
    "\x00",
    "a\x00b",
    "bell\x07",
    "\x1b[31mred\x1b[0m",
    "del\x7f",
    "\x01\x02\x03",
    "\ufffd replacement",
    "\x80\x9f c1",
    "\ufeffbom at start",
    # html entities (not unescaped by CLIPTokenizer)
    "&amp;",
    "cats &amp; dogs",
    "&lt;cat&gt;",
    "&#39;quoted&#39;",
    "&quot;hello&quot; &nbsp; &copy;",
    "&#x1F431;",
    # special token literals
    "<|startoftext|>",
    "<|endoftext|>",
    "<|startoftext|>a photo<|endoftext|>",
    "a <|endoftext|> b",
    "<|STARTOFTEXT|>",
    "<|ENDOFTEXT|>",
    "<|StartOfText|> mixed",
    "<|endoftext|><|endoftext|><|endoftext|>",
    "<|endoftext|",
    "<|startoftext",
    "< |endoftext| >",
    "x<|endoftext|>y",
    "<|endoftext|>" * 80,
    "<s> </s> <pad> <unk> [CLS] [SEP]",
    "</w>",
    "cat</w>",
    # long prompts and the 77 boundary
    LONG_1,
    LONG_2,
    LONG_3,
    LONG_4,
    LONG_5,
    LONG_1.upper(),
    exact_len_prompt(74),
    exact_len_prompt(75),
    exact_len_prompt(76),
    exact_len_prompt(77),
    exact_len_prompt(150),
    "word " * 100,
    "\n".join(["a line of text"] * 30),
]

ADDED_PROMPTS = [
    "<monet-style>",
    "a painting in <monet-style>",
    "a <monet-style> painting of a <vangogh-style> garden",
    "<francis-style> portrait, <anime-style>",
    "<monet-style><vangogh-style><francis-style><anime-style>",
    "<MONET-STYLE>",
    "<Monet-Style> lilies",
    "x<monet-style>y",
    "a<anime-style>b<anime-style>c",
    "<monet-style>s",
    "<monet-style",
    "monet-style>",
    "monet-style",
    "< monet-style >",
    "<monet-style >",
    "<monet - style>",
    "<<monet-style>>",
    "(<monet-style>:1.3)",
    "  <monet-style>  ",
    "\t<monet-style>\n",
    "<monet-style> " * 40,
    "<crème-brûlée>",
    "<Crème-Brûlée> dessert",
    "<cre\u0300me-bru\u0302le\u0301e> decomposed",
    "<CRÈME-BRÛLÉE>",
    "zorblax",
    "zorblaxes and ZORBLAX",
    "a zorblax<monet-style>zorblax",
    "<|startoftext|><monet-style><|endoftext|>",
    "a photo of a cat",
    "",
    "A photo of a <anime-style> girl, masterpiece, best quality",
    LONG_1 + " <monet-style>",
    "<vangogh-style> " + LONG_1,
]

PAD0_EXTRA_PROMPTS = [
    "hello!",
    "!",
    "!!!",
    "wow!!! amazing!",
    "¡hola!",
    "!important",
    "a!b",
    "‼ ⁉ ！",
]

LEGACY_PROMPTS = [
    "<extra1> <EXTRA1> <extra2> <EXTRA2> <extra3> <EXTRA3> <legacy-tok> <LEGACY-TOK>",
    "a<extra1>b<Extra2>c<legacy-tok>d",
    "<|STARTOFTEXT|> <|ENDOFTEXT|> x",
    "a photo of a cat",
    "",
    "hello!",
]

ADDEDCFG_EXTRA_PROMPTS = [
    "<cat-toy>",
    "a <cat-toy> on the beach!",
    "<CAT-TOY> <Cat-Toy>",
    "<cat-toy><cat-toy>",
    "x<cat-toy>y!",
]


def encode_all(tok, prompts, added):
    cases = []
    for p in prompts:
        cases.append(
            {
                "prompt": p,
                "added_tokens": added,
                "ids": tok(p).input_ids,
                "ids_truncated": tok(p, truncation=True, max_length=MAX_LEN).input_ids,
                "ids_padded": tok(p, padding="max_length", truncation=True, max_length=MAX_LEN).input_ids,
            }
        )
    return cases


def check_same(cases, tok, what):
    for c in cases:
        got = encode_all(tok, [c["prompt"]], c["added_tokens"])[0]
        if got != c:
            raise SystemExit(f"{what}: {c['prompt']!r} differs:\n{got}\n{c}")


def load(folder, drop=(), keep_only=None):
    """from_pretrained on a copy of `folder`, without the files in `drop` (or with `keep_only`)."""
    with tempfile.TemporaryDirectory() as tmp:
        for f in Path(folder).iterdir():
            if f.name in drop or (keep_only is not None and f.name not in keep_only) or f.name == "cases.json":
                continue
            shutil.copy(f, tmp)
        return CLIPTokenizer.from_pretrained(tmp)


def write_cases(folder, tok, prompts, added_prompts, added_tokens):
    cases = encode_all(tok, prompts, False)
    added = []
    if added_tokens:
        n = tok.add_tokens(added_tokens)
        assert n == len(added_tokens), n
        added = [{"content": t, "id": tok.convert_tokens_to_ids(t)} for t in added_tokens]
        cases += encode_all(tok, added_prompts, True)
    lines = [
        "{",
        f'  "transformers": {json.dumps(transformers.__version__)},',
        f'  "max_length": {MAX_LEN},',
        f'  "pad_id": {tok.pad_token_id},',
        f'  "base_vocab_size": {tok.vocab_size},',
        f'  "vocab_size": {len(tok)},',
        f'  "added_tokens": {json.dumps(added, ensure_ascii=False)},',
        '  "cases": [',
        ",\n".join("    " + json.dumps(c, ensure_ascii=False) for c in cases),
        "  ]",
        "}",
    ]
    (folder / "cases.json").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return cases


def main():
    vocab, merges = clip_vocab_and_merges()

    # ---- SD 1.5 folder, with the tokenizer.json that transformers 5 writes for it.
    main_dir = FIXTURES / "clip-tokenizer"
    shutil.rmtree(main_dir, ignore_errors=True)
    write_folder(main_dir, vocab, merges, *sd15_configs())
    tok = CLIPTokenizer.from_pretrained(main_dir)
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert len(tok) == 49408 and tok.pad_token_id == 49407 and tok.model_max_length == MAX_LEN
    with tempfile.TemporaryDirectory() as tmp:
        written = tok.save_pretrained(tmp)
        names = sorted(Path(f).name for f in written)
        print("save_pretrained wrote", names)
        saved_json = json.loads((Path(tmp) / "tokenizer.json").read_text(encoding="utf-8"))
        saved_dir = Path(tmp) / "saved"
        saved_dir.mkdir()
        for name in names:
            shutil.copy(Path(tmp) / name, saved_dir)
        saved_tok = CLIPTokenizer.from_pretrained(saved_dir)
    write_json(main_dir / "tokenizer.json", saved_json, compact=True)

    cases = write_cases(main_dir, tok, BASE_PROMPTS, ADDED_PROMPTS, ADDED_TOKENS)
    # The same ids whichever way transformers loads it.
    for what, t in [
        ("folder with tokenizer.json", load(main_dir)),
        ("vocab.json + merges.txt only", load(main_dir, drop={"tokenizer.json"})),
        ("save_pretrained output", saved_tok),
    ]:
        t.add_tokens(ADDED_TOKENS)
        check_same(cases, t, what)

    # ---- SD 2: pad "!" via special_tokens_map.json.
    pad0_dir = FIXTURES / "clip-tokenizer-pad0"
    shutil.rmtree(pad0_dir, ignore_errors=True)
    pad0_dir.mkdir()
    config, special = sd2_configs()
    write_json(pad0_dir / "tokenizer_config.json", config)
    write_json(pad0_dir / "special_tokens_map.json", special)
    with tempfile.TemporaryDirectory() as tmp:
        for f in ["vocab.json", "merges.txt"]:
            shutil.copy(main_dir / f, tmp)
        for f in ["tokenizer_config.json", "special_tokens_map.json"]:
            shutil.copy(pad0_dir / f, tmp)
        tok = CLIPTokenizer.from_pretrained(tmp)
    assert tok.pad_token == "!" and tok.pad_token_id == 0, (tok.pad_token, tok.pad_token_id)
    assert tok("hello!").input_ids == [49406, 3306, 0, 49407]  # "!" is a special added token here
    write_cases(pad0_dir, tok, BASE_PROMPTS + PAD0_EXTRA_PROMPTS, ADDED_PROMPTS, ADDED_TOKENS)

    # ---- transformers-4.3x config with added_tokens_decoder (SDXL tokenizer_2 + a TI token).
    cfg_dir = FIXTURES / "clip-tokenizer-addedcfg"
    shutil.rmtree(cfg_dir, ignore_errors=True)
    cfg_dir.mkdir()
    config, special = addedcfg_configs()
    write_json(cfg_dir / "tokenizer_config.json", config)
    write_json(cfg_dir / "special_tokens_map.json", special)
    with tempfile.TemporaryDirectory() as tmp:
        for f in ["vocab.json", "merges.txt"]:
            shutil.copy(main_dir / f, tmp)
        for f in ["tokenizer_config.json", "special_tokens_map.json"]:
            shutil.copy(cfg_dir / f, tmp)
        tok = CLIPTokenizer.from_pretrained(tmp)
    assert tok.pad_token_id == 0 and tok.convert_tokens_to_ids("<cat-toy>") == 49408
    write_cases(cfg_dir, tok, BASE_PROMPTS + PAD0_EXTRA_PROMPTS + ADDEDCFG_EXTRA_PROMPTS, [], [])

    # ---- additional_special_tokens and added_tokens.json.
    legacy_dir = FIXTURES / "clip-tokenizer-legacy"
    shutil.rmtree(legacy_dir, ignore_errors=True)
    legacy_dir.mkdir()
    config, special, added = legacy_configs()
    write_json(legacy_dir / "tokenizer_config.json", config)
    write_json(legacy_dir / "special_tokens_map.json", special)
    write_json(legacy_dir / "added_tokens.json", added)
    with tempfile.TemporaryDirectory() as tmp:
        for f in ["vocab.json", "merges.txt"]:
            shutil.copy(main_dir / f, tmp)
        for f in ["tokenizer_config.json", "special_tokens_map.json", "added_tokens.json"]:
            shutil.copy(legacy_dir / f, tmp)
        tok = CLIPTokenizer.from_pretrained(tmp)
    # <extra1> 49408 (special), <legacy-tok> 49409 (ids are handed out in order), <Extra2> 49410.
    ids = [tok.convert_tokens_to_ids(t) for t in ["<extra1>", "<legacy-tok>", "<Extra2>"]]
    assert ids == [49408, 49409, 49410], ids
    assert tok.convert_tokens_to_ids("<extra3>") in (None, tok.unk_token_id)  # not added
    write_cases(legacy_dir, tok, LEGACY_PROMPTS, [], [])

    total = 0
    for d in sorted(FIXTURES.glob("clip-tokenizer*")):
        for f in sorted(d.iterdir()):
            total += f.stat().st_size
            print(f"{f.relative_to(FIXTURES)}: {f.stat().st_size} bytes")
    print(f"total {total} bytes")


if __name__ == "__main__":
    main()

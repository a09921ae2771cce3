//! Differential tests: the fast path agrees with the full reader whenever
//! it answers, and answers for what SkyPilot actually sends.

use serde_json::{json, Value};

use super::{fast, Node};

fn full(text: &str) -> Result<Node, String> {
    match super::full::parse(text) {
        Ok(Some(n)) => Ok(n),
        Ok(None) => Err("empty".to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

fn parse(text: &str) -> Option<Value> {
    fast(text).map(|n| n.to_json())
}

/// The property: `Some(v)` from the fast path means the full parser gives `v`.
fn check(text: &str) -> bool {
    match fast(text) {
        None => false,
        Some(fast) => {
            match full(text) {
                Ok(slow) => assert_eq!(fast, slow, "fast path disagrees on {text:?}"),
                Err(e) => panic!("fast path accepted {text:?}, which the full parser rejects: {e}"),
            }
            true
        }
    }
}

/// Every task, config and user document in the captured fixtures.
fn fixture_docs() -> Vec<String> {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/skypilot-0.14.1"
    );
    let mut docs = Vec::new();
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .expect("fixtures dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 7, "fixtures: {paths:?}");
    for path in paths {
        let body = std::fs::read(&path).expect("fixture");
        let inner: String = serde_json::from_slice(&body).expect("string literal");
        let v: Value = serde_json::from_str(&inner).expect("object");
        for key in ["task", "skypilot_config", "user"] {
            if let Some(Value::String(text)) = v.get(key) {
                if !text.trim().is_empty() {
                    docs.push(text.clone());
                }
            }
        }
    }
    docs
}

fn pyyaml_docs() -> Vec<String> {
    include_str!("pyyaml_corpus.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).expect("corpus line"))
        .collect()
}

#[test]
fn every_fixture_document_takes_the_fast_path_and_agrees() {
    for doc in fixture_docs() {
        assert!(
            check(&doc),
            "fixture document fell back to the full parser:\n{doc}"
        );
    }
}

#[test]
fn pyyaml_documents_agree_and_mostly_take_the_fast_path() {
    let docs = pyyaml_docs();
    let fast = docs.iter().filter(|d| check(d)).count();
    // The corpus deliberately holds what the subset leaves out (`? ''` keys,
    // numeric and bool-word keys, floats like 1.0e+20, 128-bit integers).
    assert!(
        fast * 3 >= docs.len(),
        "{fast} of {} took the fast path",
        docs.len()
    );
    // SkyPilot's own task shape, the last document, must be fast.
    assert!(check(docs.last().expect("corpus")));
}

#[test]
fn shapes_and_scalars() {
    let cases: &[(&str, Value)] = &[
        ("a: 1\nb: -2\nc: +3\n", json!({"a": 1, "b": -2, "c": 3})),
        (
            "a: 0123\nb: 1.5\nc: 1e3\nd: 4+\ne: 1.0e+3\nf: 0o17\ng: 0x1F\nh: 1:30\ni: 1_000\n",
            json!({"a": 83, "b": 1.5, "c": "1e3", "d": "4+", "e": 1000.0, "f": "0o17", "g": 31, "h": 90, "i": 1000}),
        ),
        (
            "a: ~\nb: null\nc:\nd: true\ne: False\nf: yes\n",
            json!({"a": null, "b": null, "c": null, "d": true, "e": false, "f": true}),
        ),
        (
            "a: inf\nb: nan\nc: .x\nd: H100:8\ne: .inf\nf: 2024-01-31\ng: y\nh: On\n",
            json!({"a": "inf", "b": "nan", "c": ".x", "d": "H100:8", "e": ".inf", "f": "2024-01-31", "g": "y", "h": true}),
        ),
        (
            "l:\n- 1\n- x\nm: {}\nn: []\n",
            json!({"l": [1, "x"], "m": {}, "n": []}),
        ),
        (
            "l:\n  - a: 1\n    b: 2\n  - c\n",
            json!({"l": [{"a": 1, "b": 2}, "c"]}),
        ),
        ("- a:\n  - x\n  b: y\n", json!([{"a": ["x"], "b": "y"}])),
        (
            "a:\n  b:\n    c: d\n  e: f\ng: h\n",
            json!({"a": {"b": {"c": "d"}, "e": "f"}, "g": "h"}),
        ),
        ("run: 'nvidia-smi\n\n  '\n", json!({"run": "nvidia-smi\n"})),
        (
            "s: 'it''s  \n  a   \n\n\n  b '\n",
            json!({"s": "it's a\n\nb "}),
        ),
        (
            "s: \"a\\tb\\u00e9\\x41\\\n  \\ c\"\n",
            json!({"s": "a\tbéA c"}),
        ),
        ("s: \"x\\\n\n  y\"\n", json!({"s": "x\ny"})),
        ("s: \"end \\ \n  z\"\n", json!({"s": "end   z"})),
        (
            "k: v with spaces  \nk2: é日本\n",
            json!({"k": "v with spaces", "k2": "é日本"}),
        ),
        ("-\n- b\n", json!([null, "b"])),
        (
            "'q': 1\n\"8080\": 2\nyes: -x\n",
            json!({"q": 1, "8080": 2, "yes": "-x"}),
        ),
        (
            "null: docker:x\non: 1\na: 1\na: 2\n",
            json!({"null": "docker:x", "on": 1, "a": 2}),
        ),
        (
            "- - a\n  - 'k': v\n    j: -0.25\n",
            json!([["a", {"k": "v", "j": -0.25}]]),
        ),
    ];
    for (text, want) in cases {
        assert_eq!(parse(text).as_ref(), Some(want), "{text:?}");
        assert!(check(text));
    }
}

#[test]
fn leaves_everything_else_to_the_full_parser() {
    for text in [
        "a: 1 # comment\n",
        "# comment\na: 1\n",
        "a: &x 1\nb: *x\n",
        "a: !!str 1\n",
        "a: |\n  text\n",
        "a: >\n  text\n",
        "a: {b: 1}\n",
        "a: [1, 2]\n",
        "a:\tb\n",
        "a: b\r\n",
        "---\na: 1\n",
        "a: 1\n...\n",
        "a b: 1\n",
        "a: b: c\n",
        "a: b\n  c\n",
        "a: 'x\nb'\n",
        "a: \"\\q\"\n",
        "a: 'open\n",
        "? a\n: b\n",
        "a:\n- - x\n -\n",
        "\u{feff}a: 1\n",
        "a: x\u{2028}y\n",
        "plain scalar\n",
        "a: =\n",
        "a: 0b_\n",
        "8080: x\n",
    ] {
        assert_eq!(parse(text), None, "{text:?}");
    }
}

/// A small deterministic generator (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(n).expect("n")).expect("index")
    }
}

/// Random edits of real documents: whatever the fast path accepts, the full
/// parser must accept with the same value.
#[test]
fn mutations_never_make_the_two_parsers_disagree() {
    const PIECES: &[&str] = &[
        " ", "  ", "\n", "\n\n", ":", ": ", "- ", "-", "'", "''", "\"", "\\", "\\\n", "#", "{}",
        "[]", "{", "]", "a", "key: v", "0", "07", "-1", "1.5", "~", "null", "true", "é", "&", "*",
        "!", "|", ">", "?", "\t", "---",
    ];
    let mut docs = fixture_docs();
    docs.extend(pyyaml_docs().into_iter().take(60));
    let mut rng = Rng(0x5eed_2026_1123_0001);
    let mut accepted = 0usize;
    let mut tried = 0usize;
    for doc in &docs {
        for _ in 0..150 {
            let mut text = doc.clone();
            for _ in 0..=rng.below(3) {
                // Edit at a char boundary.
                let bounds: Vec<usize> = (0..=text.len())
                    .filter(|i| text.is_char_boundary(*i))
                    .collect();
                let at = bounds[rng.below(bounds.len())];
                match rng.below(4) {
                    0 => text.insert_str(at, PIECES[rng.below(PIECES.len())]),
                    1 => {
                        let end = bounds.iter().copied().find(|b| *b > at).unwrap_or(at);
                        text.replace_range(at..end, "");
                    }
                    2 => {
                        // Re-indent the line holding `at`.
                        let line = text[..at].rfind('\n').map_or(0, |i| i + 1);
                        if rng.below(2) == 0 {
                            text.insert(line, ' ');
                        } else if text[line..].starts_with(' ') {
                            text.remove(line);
                        }
                    }
                    _ => {
                        // Duplicate the line holding `at`.
                        let line = text[..at].rfind('\n').map_or(0, |i| i + 1);
                        let end = text[at..].find('\n').map_or(text.len(), |i| at + i + 1);
                        let copy = text[line..end].to_owned();
                        text.insert_str(line, &copy);
                    }
                }
            }
            tried += 1;
            if check(&text) {
                accepted += 1;
            }
        }
    }
    // The mutations must exercise the fast path, not only its refusals.
    assert!(
        accepted * 10 >= tried,
        "only {accepted} of {tried} mutations took the fast path"
    );
}

//! The netcat line protocol (docs/PROTOCOL.md, version 1): a nickname prompt, then plain
//! lines, `/` commands, and sentences for everything that happens in the user's one room.

pub mod cmd;
pub mod render;
pub mod session;
pub mod visits;
pub mod words;

pub use session::run;

/// The server's lines cannot be forged: every word a line the server sends can start with is
/// reserved as a nickname, found by reading the sources that send netcat users lines.
#[cfg(test)]
mod server_words {
    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};

    use crate::core::names::{is_reserved, SERVER_WORDS};

    /// Words the scan finds that start no line a client receives: the history header's middle
    /// (`--- History of dev: the last 3 messages, …`), and the operator's startup errors.
    const NOT_LINE_STARTS: &[&str] = &["the", "cannot", "port"];

    fn sources() -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for entry in std::fs::read_dir(dir).expect("read the sources") {
                let path = entry.expect("a directory entry").path();
                if path.is_dir() {
                    walk(&path, out);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    out.push(path);
                }
            }
        }
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = vec![src.join("proto/codec.rs"), src.join("server.rs")];
        walk(&src.join("proto/line"), &mut files);
        files
    }

    /// The string literals of Rust source `src`, each with its text (escapes `\n` and `\\n` kept as
    /// a newline) and the code just before it.
    fn literals(src: &str) -> Vec<(String, String)> {
        let b = src.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        let mut code_start = 0;
        while i < b.len() {
            match b[i] {
                b'/' if b.get(i + 1) == Some(&b'/') => {
                    while i < b.len() && b[i] != b'\n' {
                        i += 1;
                    }
                }
                b'\'' => {
                    if b.get(i + 1) == Some(&b'\\') {
                        i += 2;
                        while i < b.len() && b[i] != b'\'' {
                            i += 1;
                        }
                        i += 1;
                    } else if b.get(i + 2) == Some(&b'\'') {
                        i += 3;
                    } else {
                        // A char of several bytes, or a lifetime.
                        let rest = &src[i + 1..];
                        let c = rest.chars().next().map_or(1, char::len_utf8);
                        if rest.as_bytes().get(c) == Some(&b'\'') {
                            i += 2 + c
                        } else {
                            i += 1
                        }
                    }
                }
                b'"' => {
                    let before = src[code_start..i].to_owned();
                    let mut text = String::new();
                    i += 1;
                    while i < b.len() && b[i] != b'"' {
                        if b[i] == b'\\' {
                            match b.get(i + 1) {
                                Some(b'n') => text.push('\n'),
                                Some(b'\n') => {
                                    // A continuation: the newline and the indentation after it vanish.
                                    i += 2;
                                    while i < b.len() && (b[i] == b' ' || b[i] == b'\n') {
                                        i += 1;
                                    }
                                    continue;
                                }
                                Some(&c) => text.push(c as char),
                                None => {}
                            }
                            i += 2;
                        } else {
                            let c = src[i..].chars().next().unwrap();
                            text.push(c);
                            i += c.len_utf8();
                        }
                    }
                    i += 1;
                    code_start = i;
                    out.push((text, before));
                }
                _ => i += 1,
            }
        }
        out
    }

    /// Where a literal's text begins a line the server sends: the code before it hands it to a
    /// reply, a format or a line-writing call.
    fn starts_a_line(before: &str) -> bool {
        let before = before.trim_end();
        let before = before.strip_suffix('b').unwrap_or(before).trim_end();
        [
            "reply(",
            "format!(",
            "format_args!(",
            "#[error(",
            "push_str(",
            "send(",
            "from_static(",
            "=>",
            "&str =",
            "Usage(",
        ]
        .iter()
        .any(|c| before.ends_with(c))
            || (before.ends_with(',')
                && before
                    .rsplit_once("writeln!(")
                    .is_some_and(|(_, a)| !a.contains(['(', ')', '"'])))
    }

    /// The first word of every line the source's literals start: the longest prefix that could be
    /// a nickname (a letter, then letters, digits and `_-[]\^{}|``).
    fn line_starts(src: &str) -> Vec<(String, String)> {
        let mut words = Vec::new();
        for (text, before) in literals(src) {
            let mut starts: Vec<&str> = text.split('\n').skip(1).collect();
            if starts_a_line(&before) {
                starts.push(text.split('\n').next().unwrap());
            }
            for start in starts {
                let word: String = start
                    .chars()
                    .take_while(|&c| c.is_ascii_alphanumeric() || "_-[]\\^{}|`".contains(c))
                    .collect();
                if word.starts_with(|c: char| c.is_ascii_alphabetic()) {
                    words.push((word, text.chars().take(40).collect()));
                }
            }
        }
        words
    }

    #[test]
    fn every_word_the_server_starts_a_line_with_is_reserved() {
        let mut found = BTreeSet::new();
        for file in sources() {
            let src = std::fs::read_to_string(&file).expect("read a source");
            // Tests say what they like.
            let src = src.split("#[cfg(test)]").next().unwrap_or_default();
            for (word, line) in line_starts(src) {
                if !word.contains(['{', '}']) && !NOT_LINE_STARTS.contains(&&*word) {
                    found.insert(word.to_ascii_lowercase());
                    assert!(
                        is_reserved(&word),
                        "{}: the server starts a line with {word:?} ({line:?}); add it to \
                         SERVER_WORDS in src/core/names.rs so nobody can take it as a nickname",
                        file.display()
                    );
                }
            }
        }
        // And the list holds nothing the server no longer says, so it stays derived from the
        // code (the words `error` and `server` are also reserved for other reasons).
        for word in SERVER_WORDS {
            assert!(
                found.contains(*word),
                "SERVER_WORDS has {word:?}, which no line starts with any more"
            );
        }
        assert!(
            found.contains("error") && found.contains("server"),
            "{found:?}"
        );
    }
}

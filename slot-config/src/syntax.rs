//! The one rule for every string that goes into a generated file: refuse what systemd
//! cannot represent in that setting, quote the rest exactly as systemd's parser reads it.
//!
//! Validation (`check_*`) runs at parse time, for every key, so a refused value never
//! reaches a renderer; the renderers only ever write through the `*_word` functions
//! below, which are correct for any input they are given (tests/oracle.rs reads their
//! output back with a model of systemd's parser).
//!
//! What systemd does with the text, from its source (v252 and later):
//! - every file (src/shared/conf-parser.c): `read_line()` ends a line at `\n`, `\r` and
//!   NUL; a line ending in an odd number of `\` continues on the next; a line starting
//!   with `#` or `;` is a comment; `key=value` is split at the first `=` and both sides
//!   are stripped of " \t\n\r".
//! - `.nspawn` `Parameters=`, `Environment=` (config_parse_strv): words split on
//!   whitespace by extract_first_word(EXTRACT_UNQUOTE|EXTRACT_RETAIN_ESCAPE): `"…"` and
//!   `'…'` group, a backslash is an ordinary character (it escapes nothing, even in
//!   quotes), no `%` specifiers, no `$` expansion.
//! - `.nspawn` `Bind=`/`BindReadOnly=` (bind_mount_parse): split at `:` by
//!   extract_first_word(EXTRACT_DONT_COALESCE_SEPARATORS): no quoting, `\x` is `x`, text
//!   after a second `:` is mount options, a leading `+` means "inside the slot".
//! - unit `ExecStart=` (config_parse_exec): `%` specifiers are expanded on the whole
//!   line first, then words are split with EXTRACT_UNQUOTE|EXTRACT_CUNESCAPE, then
//!   `$VAR`/`${VAR}` are expanded when the command starts (`$$` is `$`).
//! - networkd `[Match] Name=` (config_parse_match_ifnames): a whitespace-separated list of
//!   shell globs (`*?[]`), the whole list inverted by a leading `!`.

use std::borrow::Cow;

/// Why a control character is refused everywhere: `\n`, `\r` and NUL end a line (the rest
/// becomes new settings), the others are not text any systemd setting is meant to hold.
pub fn check_text(s: &str) -> Result<(), String> {
    match s.chars().find(|c| c.is_control()) {
        Some(c) => Err(format!(
            "{s:?} contains a control character ({c:?}), which a generated systemd file cannot carry"
        )),
        None => Ok(()),
    }
}

/// Where a path is written, which decides what it may contain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathUse {
    /// `.nspawn` `Bind=source:target`.
    Bind,
    /// A word of a unit's `ExecStart=` (the machines dir in `--directory=`), and host
    /// paths the helper may one day put there (backups).
    Exec,
}

/// An absolute, normalised path (no `.`, `..`, `//` or trailing `/`: systemd and the
/// helper would each normalise it their own way) that the setting it goes into can carry.
pub fn check_path(s: &str, use_: PathUse) -> Result<(), String> {
    check_text(s)?;
    if !s.starts_with('/') {
        return Err(format!("{s:?} is not an absolute path; start it with '/'"));
    }
    if s.split('/').any(|c| c == ".." || c == ".") {
        return Err(format!(
            "{s:?} contains '.' or '..'; write the path without them"
        ));
    }
    if s != "/" && (s.contains("//") || s.ends_with('/')) {
        return Err(format!(
            "{s:?} contains '//' or ends in '/'; write the path without them"
        ));
    }
    match use_ {
        PathUse::Bind => {
            if let Some(c) = s.chars().find(|c| matches!(c, '\\' | ':')) {
                return Err(format!(
                    "{s:?} contains {c:?}; a bind path cannot carry '\\' or ':' (systemd-nspawn's Bind= reads them as an escape and a separator)"
                ));
            }
            if s.ends_with(char::is_whitespace) {
                return Err(format!(
                    "{s:?} ends in whitespace, which systemd strips from a Bind= line; remove it"
                ));
            }
        }
        PathUse::Exec => {
            if let Some(c) = s
                .chars()
                .find(|c| c.is_whitespace() || matches!(c, '\\' | '"' | '\'' | '$' | '%' | ':'))
            {
                return Err(format!(
                    "{s:?} contains {c:?}; this path is written into a unit's ExecStart= line, which cannot carry whitespace, quotes, '\\', '$', '%' or ':'"
                ));
            }
        }
    }
    Ok(())
}

/// A host interface name for networkd's `Name=` match, taken literally: anything that
/// networkd reads as a glob, a list or an inversion would enslave other host NICs (the
/// uplink included) to a slot bridge.
pub fn check_ifname(s: &str) -> Result<(), String> {
    check_text(s)?;
    if s.is_empty() || s.len() > 15 || s == "." || s == ".." {
        return Err(format!(
            "{s:?} is not an interface name; use 1 to 15 characters"
        ));
    }
    if !s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(format!(
            "{s:?} is not a plain interface name; use letters, digits, '-', '_' and '.' (networkd reads '*', '?', '[', ']' and a leading '!' as patterns that match other host NICs)"
        ));
    }
    Ok(())
}

/// One word of a `.nspawn` `Parameters=` or `Environment=` value. With
/// EXTRACT_RETAIN_ESCAPE nothing can be escaped, so a `"` is written inside `'…'` and
/// everything else inside `"…"`; adjacent quoted parts join into one word. The result
/// never ends in a backslash (which would continue the line).
pub fn strv_word(s: &str) -> String {
    let plain = !s.is_empty()
        && !s
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '"' | '\'' | '\\'));
    if plain {
        return s.to_string();
    }
    let mut q = String::with_capacity(s.len() + 4);
    let mut rest = s;
    if rest.is_empty() {
        q.push_str("\"\"");
    }
    while !rest.is_empty() {
        let n = rest.find('"').unwrap_or(rest.len());
        if n > 0 {
            q.push('"');
            q.push_str(&rest[..n]);
            q.push('"');
            rest = &rest[n..];
        }
        let m = rest.len() - rest.trim_start_matches('"').len();
        if m > 0 {
            q.push('\'');
            q.push_str(&rest[..m]);
            q.push('\'');
            rest = &rest[m..];
        }
    }
    q
}

/// One side of a `.nspawn` `Bind=source:target`: `\` and `:` escaped with a backslash,
/// as bind_mount_parse reads them (check_path refuses both anyway, and trailing space).
pub fn bind_word(s: &str) -> String {
    let mut q = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | ':') {
            q.push('\\');
        }
        q.push(c);
    }
    q
}

/// One word of a unit's `ExecStart=`: `%` doubled (specifiers), `$` doubled (variables),
/// and, when it holds whitespace, quotes or backslashes, double-quoted with `\\` and `\"`
/// C escapes.
pub fn exec_word(s: &str) -> String {
    let s = s.replace('%', "%%").replace('$', "$$");
    if !s.is_empty()
        && !s
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '"' | '\'' | '\\'))
    {
        return s;
    }
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        if matches!(c, '"' | '\\') {
            q.push('\\');
        }
        q.push(c);
    }
    q.push('"');
    q
}

/// Text for a message line: control characters shown as escapes, so a hostile key cannot
/// forge log lines.
pub fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(
        s.chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_debug().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strv_words_as_systemd_reads_them() {
        // Plain words stay as they were (existing fixtures keep their bytes).
        assert_eq!(strv_word("APP_MODE=production"), "APP_MODE=production");
        assert_eq!(
            strv_word("GREETING=hello world"),
            "\"GREETING=hello world\""
        );
        assert_eq!(strv_word(""), "\"\"");
        // The issue's case: a quote cannot be escaped, so it is quoted the other way.
        assert_eq!(
            strv_word("A=x\" B=inj C=a\""),
            "\"A=x\"'\"'\" B=inj C=a\"'\"'"
        );
        assert_eq!(strv_word("\""), "'\"'");
        // A backslash is literal in config_parse_strv; quoted so it never ends the line.
        assert_eq!(strv_word("C:\\dir\\"), "\"C:\\dir\\\"");
        assert_eq!(strv_word("it's"), "\"it's\"");
    }

    #[test]
    fn exec_words_as_systemd_service_5_reads_them() {
        assert_eq!(exec_word("/var/lib/machines/x"), "/var/lib/machines/x");
        assert_eq!(exec_word("100%"), "100%%");
        assert_eq!(exec_word("$HOME"), "$$HOME");
        assert_eq!(exec_word("a b"), "\"a b\"");
        assert_eq!(exec_word("a\"b\\"), "\"a\\\"b\\\\\"");
    }

    #[test]
    fn bind_words() {
        assert_eq!(bind_word("/srv/with space"), "/srv/with space");
        assert_eq!(bind_word("/a:b\\"), "/a\\:b\\\\");
    }

    #[test]
    fn paths() {
        assert!(check_path("/srv/with space", PathUse::Bind).is_ok());
        assert!(check_path("/srv/with space", PathUse::Exec).is_err());
        assert!(check_path("/", PathUse::Bind).is_ok());
        for bad in [
            "//", "/a/", "/a//b", "/a\r", "/a\0b", "rel", "/a/../b", "/a:b",
        ] {
            assert!(check_path(bad, PathUse::Bind).is_err(), "{bad:?}");
            assert!(check_path(bad, PathUse::Exec).is_err(), "{bad:?}");
        }
        for bad in ["/a$b", "/a%i", "/a\"", "/a'", "/a\\"] {
            assert!(check_path(bad, PathUse::Exec).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ifnames() {
        assert!(check_ifname("eth0").is_ok());
        assert!(check_ifname("enp0s31f6.100").is_ok());
        for bad in [
            "e*", "!eth0", "eth?", "eth[01]", "eth 0", "a/b", "", "eth0\n",
        ] {
            assert!(check_ifname(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn printable_escapes_controls() {
        assert_eq!(printable("a\rb"), "a\\rb");
        assert_eq!(printable("ok"), "ok");
    }
}

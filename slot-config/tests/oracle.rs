//! Oracle for parse + validate + render: hostile config values go in, and every generated
//! file is read back the way systemd reads it (conf-parser line splitting on `\n`, `\r`
//! and NUL, comments, continuation lines, sections, `key=value`, then the word extraction
//! of that setting). The test fails on any section or setting the config did not ask for
//! and on any value that does not come back as the config's value.
//!
//! The reader below is written from systemd's source (src/shared/conf-parser.c
//! config_parse/parse_line, src/basic/extract-word.c extract_first_word,
//! src/nspawn/nspawn-mount.c bind_mount_parse, src/core/load-fragment.c
//! config_parse_exec), independently of slot-config's quoting, so a quoting bug cannot
//! hide behind the same bug in the oracle.
//!
//! `SLOT_OS_FUZZ_SECONDS=S SLOT_OS_FUZZ_CASES=N cargo test -p slot-config --test oracle --
//! --nocapture` runs rounds of N hostile cases (default 2000) until S seconds have passed
//! (default 10; at least one round) and prints how many were run, accepted and refused.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use proptest::test_runner::{Config as PtConfig, TestRunner};
use slot_config::load::load_dir_with;
use slot_config::render::{render_all, Content, OutDir, Output};
use slot_config::{CpuSet, HostFacts, Paths};

// ---------------------------------------------------------------- systemd's reader

const WHITESPACE: &[char] = &[' ', '\t', '\n', '\r'];

#[derive(Debug, Clone, PartialEq, Eq)]
struct Setting {
    section: String,
    key: String,
    value: String,
}

/// conf-parser.c: read_line() ends a line at `\n`, `\r` or NUL; a line whose first
/// non-blank character is `#` or `;` is a comment (also inside a continuation); a line
/// ending in an odd number of backslashes continues on the next one (the backslash
/// becomes a space); parse_line() strips the line, `[x]` opens a section, anything else
/// must be `key=value` (both stripped, split at the first `=`).
fn read_conf(text: &str) -> Result<Vec<Setting>, String> {
    let mut out = Vec::new();
    let mut section: Option<String> = None;
    let mut continuation: Option<String> = None;
    for raw in text.split(['\n', '\r', '\0']) {
        let l = raw.trim_start_matches(WHITESPACE);
        if l.starts_with(['#', ';']) {
            continue;
        }
        let mut p = match continuation.take() {
            Some(c) => c + raw,
            None => raw.to_string(),
        };
        let mut escaped = false;
        for ch in p.chars() {
            if escaped {
                escaped = false;
            } else if ch == '\\' {
                escaped = true;
            }
        }
        if escaped {
            p.pop();
            p.push(' ');
            continuation = Some(p);
            continue;
        }
        let l = p.trim_matches(WHITESPACE);
        if l.is_empty() {
            continue;
        }
        if let Some(rest) = l.strip_prefix('[') {
            let name = rest
                .strip_suffix(']')
                .ok_or_else(|| format!("invalid section header {l:?}"))?;
            section = Some(name.to_string());
            continue;
        }
        let (k, v) = l
            .split_once('=')
            .ok_or_else(|| format!("line without '=': {l:?}"))?;
        let section = section
            .clone()
            .ok_or_else(|| format!("assignment outside a section: {l:?}"))?;
        out.push(Setting {
            section,
            key: k.trim_matches(WHITESPACE).to_string(),
            value: v.trim_matches(WHITESPACE).to_string(),
        });
    }
    if let Some(c) = continuation {
        return Err(format!("file ends inside a continuation line: {c:?}"));
    }
    Ok(out)
}

/// extract_first_word() repeated over a value, separators WHITESPACE, coalescing.
/// `cunescape` false = EXTRACT_UNQUOTE|EXTRACT_RETAIN_ESCAPE (config_parse_strv: `.nspawn`
/// Environment=, Parameters=; networkd's Name= match): a backslash is an ordinary
/// character, in quotes or not. `cunescape` true = EXTRACT_UNQUOTE|EXTRACT_CUNESCAPE
/// (config_parse_exec): a backslash starts a C escape everywhere.
fn extract_words(s: &str, cunescape: bool) -> Result<Vec<String>, String> {
    let c: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut words = Vec::new();
    loop {
        while i < c.len() && WHITESPACE.contains(&c[i]) {
            i += 1;
        }
        if i == c.len() {
            return Ok(words);
        }
        let mut word = String::new();
        let mut quote: Option<char> = None;
        loop {
            if i == c.len() {
                if quote.is_some() {
                    return Err(format!("unbalanced quotes in {s:?}"));
                }
                break;
            }
            let ch = c[i];
            if cunescape && ch == '\\' {
                let next = c
                    .get(i + 1)
                    .ok_or_else(|| format!("trailing backslash in {s:?}"))?;
                word.push(match next {
                    '\\' => '\\',
                    '"' => '"',
                    '\'' => '\'',
                    's' => ' ',
                    'n' => '\n',
                    't' => '\t',
                    other => return Err(format!("escape \\{other} the oracle does not model")),
                });
                i += 2;
                continue;
            }
            if let Some(q) = quote {
                if ch == q {
                    quote = None;
                } else {
                    word.push(ch);
                }
                i += 1;
                continue;
            }
            if ch == '"' || ch == '\'' {
                quote = Some(ch);
                i += 1;
                continue;
            }
            if WHITESPACE.contains(&ch) {
                break;
            }
            word.push(ch);
            i += 1;
        }
        words.push(word);
    }
}

/// bind_mount_parse(): extract_many_words(":", EXTRACT_DONT_COALESCE_SEPARATORS) for the
/// source and the destination (a backslash takes the next character literally, a trailing
/// one is an error), the rest of the value is the mount options.
fn read_bind(v: &str) -> Result<(String, String, Option<String>), String> {
    let c: Vec<char> = v.chars().collect();
    let mut i = 0;
    let mut word = || -> Result<Option<String>, String> {
        if i > c.len() {
            return Ok(None);
        }
        let mut w = String::new();
        while i < c.len() {
            match c[i] {
                '\\' => {
                    let n = c
                        .get(i + 1)
                        .ok_or_else(|| format!("trailing backslash in {v:?}"))?;
                    w.push(*n);
                    i += 2;
                }
                ':' => {
                    i += 1;
                    return Ok(Some(w));
                }
                ch => {
                    w.push(ch);
                    i += 1;
                }
            }
        }
        i = c.len() + 1;
        Ok(Some(w))
    };
    let src = word()?.ok_or("empty Bind=")?;
    let dst = word()?;
    let rest: String = if i < c.len() {
        c[i..].iter().collect()
    } else {
        String::new()
    };
    let dst = match dst {
        Some(d) => d,
        None => src.strip_prefix('+').unwrap_or(&src).to_string(),
    };
    Ok((src, dst, (!rest.is_empty()).then_some(rest)))
}

/// Unit file specifiers (systemd.unit(5)) on the whole value, before word splitting:
/// `%%` is `%`, `%i` the instance; any other specifier is something the config did not ask
/// for.
fn expand_specifiers(v: &str, instance: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut it = v.chars();
    while let Some(ch) = it.next() {
        if ch != '%' {
            out.push(ch);
            continue;
        }
        match it.next() {
            Some('%') => out.push('%'),
            Some('i') => out.push_str(instance),
            other => return Err(format!("unexpected specifier %{other:?} in {v:?}")),
        }
    }
    Ok(out)
}

/// ExecStart= words are also subject to `$VAR` expansion at start; `$$` is a `$`.
fn expand_dollars(w: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut it = w.chars().peekable();
    while let Some(ch) = it.next() {
        if ch == '$' {
            match it.peek() {
                Some('$') => {
                    it.next();
                    out.push('$');
                }
                Some(c) if c.is_ascii_alphabetic() || *c == '_' || *c == '{' => {
                    return Err(format!("environment variable expansion in {w:?}"))
                }
                _ => out.push('$'),
            }
        } else {
            out.push(ch);
        }
    }
    Ok(out)
}

/// A strv setting: every value's words are appended; an empty value empties the list.
fn strv(settings: &[Setting], section: &str, key: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for s in settings
        .iter()
        .filter(|s| s.section == section && s.key == key)
    {
        if s.value.is_empty() {
            out.clear();
        } else {
            out.extend(extract_words(&s.value, false)?);
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------- hostile input

#[derive(Debug, Clone)]
struct Input {
    boot: bool,
    privileged: bool,
    command: Vec<String>,
    env: BTreeMap<String, String>,
    binds: Vec<(String, String, bool)>,
    image: Option<String>,
    nic: bool,
    machines: Option<String>,
    devices: Vec<String>,
    storage: Option<String>,
    /// `disk`, `tasks_max`, `io_weight`, `io_read_bandwidth_max`, `io_write_bandwidth_max`
    /// as the slot file sets them (absent: `None`).
    limits: [Option<toml::Value>; 5],
}

const LIMIT_KEYS: [&str; 5] = [
    "disk",
    "tasks_max",
    "io_weight",
    "io_read_bandwidth_max",
    "io_write_bandwidth_max",
];

const SLOT: &str = "slot05";
const DEFAULT_MACHINES: &str = "/var/lib/machines";

/// Characters systemd's parsers treat specially, line ends, other control characters,
/// and non-ASCII text (including Unicode line and no-break spaces).
fn hostile_char() -> impl Strategy<Value = char> {
    prop_oneof![
        6 => prop::sample::select(vec!['a', 'B', '0', '_', '-', '/', '.', 'x']),
        8 => prop::sample::select(vec![
            ' ', '"', '\'', '\\', '$', '%', ':', '*', '?', '[', ']', '!', '=', '#', ';', '{',
            '}', '+', '@', '&', '|', '`', '~',
        ]),
        2 => prop::sample::select(vec!['\n', '\r', '\0', '\t', '\u{1}', '\u{1b}', '\u{7f}']),
        2 => prop::sample::select(vec!['é', 'ü', '\u{2028}', '\u{a0}', '💥', 'ß']),
    ]
}

fn hostile_string() -> impl Strategy<Value = String> {
    prop::collection::vec(hostile_char(), 0..10).prop_map(|v| v.into_iter().collect())
}

/// Mostly absolute paths, some with `..`, `//`, trailing `/` or spaces.
fn hostile_path() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => hostile_string().prop_map(|s| format!("/{s}")),
        1 => hostile_string(),
        1 => prop::sample::select(vec![
            "/", "//", "/a/", "/a//b", "/a/./b", "/a/../b", "/a ", "/a b", "/x\\", "/a:b", "/srv/data",
        ])
        .prop_map(str::to_string),
    ]
}

/// A value for one of the limit keys: mostly one of `valid` (so that enough slots are
/// accepted to read back), else edge numbers, other keys' values and hostile strings.
fn limit_value(valid: &[&str]) -> impl Strategy<Value = Option<toml::Value>> {
    let valid: Vec<toml::Value> = valid
        .iter()
        .map(|v| match v.parse::<i64>() {
            Ok(n) => toml::Value::from(n),
            Err(_) => toml::Value::from(v.to_string()),
        })
        .collect();
    prop::option::weighted(
        0.3,
        prop_oneof![
            6 => prop::sample::select(valid),
            1 => prop::sample::select(vec![
                "10G", "none", "512", "1536M", "5M", "1M", "100", "infinity", "0", "1k", "2TB",
                "4194304", "18446744073709551615", " 7M ", "5 M", "/dev/sda 5M",
            ])
            .prop_map(|s| toml::Value::from(s.to_string())),
            1 => prop::sample::select(vec![-1i64, 0, 1, 100, 10000, 10001, 4194304, 4194305])
                .prop_map(toml::Value::from),
            1 => hostile_string().prop_map(toml::Value::from),
        ],
    )
}

fn input() -> impl Strategy<Value = Input> {
    (
        any::<bool>(),
        any::<bool>(),
        prop::collection::vec(hostile_string(), 1..4),
        prop::collection::btree_map(
            prop::sample::select(vec!["A", "B_1", "PATH", "x"]).prop_map(str::to_string),
            hostile_string(),
            0..3,
        ),
        prop::collection::vec((hostile_path(), hostile_path(), any::<bool>()), 0..3),
        prop::option::of(Just("img1".to_string())),
        any::<bool>(),
        prop::option::of(hostile_path()),
        prop::collection::vec(hostile_string(), 0..2),
        prop::option::of(prop_oneof![
            3 => prop::sample::select(vec!["overlay", "copy", "btrfs"]).prop_map(str::to_string),
            1 => hostile_string(),
        ]),
        [
            limit_value(&["10G", "none", "1536M", " 2t ", "1M"]),
            limit_value(&["512", "1", "4194304", "none", "infinity"]),
            limit_value(&["1", "100", "10000"]),
            limit_value(&["5M", "none", "1G", "3000000"]),
            limit_value(&["50M", "none", "7T"]),
        ],
    )
        .prop_map(
            |(
                boot,
                privileged,
                command,
                env,
                binds,
                image,
                nic,
                machines,
                devices,
                storage,
                limits,
            )| {
                Input {
                    boot,
                    privileged,
                    command,
                    env,
                    binds,
                    image,
                    nic,
                    machines,
                    devices,
                    storage,
                    limits,
                }
            },
        )
}

impl Input {
    fn slot_toml(&self) -> String {
        let mut t = toml::Table::new();
        t.insert("boot".into(), self.boot.into());
        t.insert("privileged".into(), self.privileged.into());
        if !self.boot {
            t.insert("command".into(), self.command.clone().into());
        }
        if let Some(i) = &self.image {
            t.insert("image".into(), i.clone().into());
        }
        if let Some(st) = &self.storage {
            t.insert("storage".into(), st.clone().into());
        }
        let env: toml::Table = self
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().into()))
            .collect();
        t.insert("environment".into(), env.into());
        let binds: Vec<toml::Value> = self
            .binds
            .iter()
            .map(|(s, d, ro)| {
                let mut b = toml::Table::new();
                b.insert("source".into(), s.clone().into());
                b.insert("target".into(), d.clone().into());
                b.insert("read_only".into(), (*ro).into());
                b.into()
            })
            .collect();
        t.insert("bind".into(), binds.into());
        for (k, v) in LIMIT_KEYS.iter().zip(&self.limits) {
            if let Some(v) = v {
                t.insert((*k).into(), v.clone());
            }
        }
        if self.nic {
            let mut n = toml::Table::new();
            n.insert("number".into(), 1.into());
            n.insert("bridge".into(), 1.into());
            t.insert("nic".into(), vec![toml::Value::from(n)].into());
        }
        toml::to_string(&t).expect("any table serialises")
    }

    fn host_toml(&self) -> String {
        let mut t = toml::Table::new();
        if let Some(m) = &self.machines {
            let mut s = toml::Table::new();
            s.insert("machines".into(), m.clone().into());
            t.insert("storage".into(), s.into());
        }
        let mut b = toml::Table::new();
        b.insert("number".into(), 1.into());
        b.insert("address".into(), "10.1.0.1/24".into());
        b.insert("device".into(), self.devices.clone().into());
        t.insert("bridge".into(), vec![toml::Value::from(b)].into());
        toml::to_string(&t).expect("any table serialises")
    }
}

// ---------------------------------------------------------------- the oracle

fn allowed(kind: &str, section: &str, key: &str) -> bool {
    let keys: &[&str] = match (kind, section) {
        ("nspawn", "Exec") => &[
            "Boot",
            "NotifyReady",
            "Parameters",
            "PrivateUsers",
            "Environment",
        ],
        ("nspawn", "Files") => &["Bind", "BindReadOnly", "PrivateUsersOwnership"],
        ("nspawn", "Network") => &["Zone", "VirtualEthernet", "Private", "VirtualEthernetExtra"],
        ("dropin", "Unit") => &["Description", "Wants", "After", "Requires"],
        ("dropin", "Service") => &[
            "CPUQuota",
            "AllowedCPUs",
            "MemoryMax",
            "TasksMax",
            "IOWeight",
            "IOReadBandwidthMax",
            "IOWriteBandwidthMax",
            "ExecStartPre",
            "ExecStartPost",
            "ExecStopPost",
            "ExecStart",
        ],
        ("network", "Match") => &["Name", "Driver"],
        ("network", "Network") => &[
            "Address",
            "Bridge",
            "ConfigureWithoutCarrier",
            "IPv6AcceptRA",
            "DHCPServer",
            "IPMasquerade",
        ],
        ("network", "NetDev") => &["Name", "Kind"],
        _ => &[],
    };
    keys.contains(&key)
}

struct Expect<'a> {
    input: &'a Input,
    host_ok: bool,
}

/// slot05's user namespace base as an overlay slot: 0x70000000 + 5 * 65536.
const SLOT_UID_BASE: u32 = 0x7005_0000;

impl Expect<'_> {
    fn overlay(&self) -> bool {
        self.input.storage.as_deref() == Some("overlay")
    }
    fn machines(&self) -> String {
        match (&self.input.machines, self.host_ok) {
            (Some(m), true) => m.clone(),
            _ => DEFAULT_MACHINES.to_string(),
        }
    }
    fn devices(&self) -> Vec<String> {
        if self.host_ok {
            self.input.devices.clone()
        } else {
            Vec::new()
        }
    }
}

fn check_output(o: &Output, e: &Expect<'_>, slot_accepted: bool) -> Result<(), String> {
    let path = o.path.to_string_lossy().into_owned();
    if path.chars().any(|c| c.is_control())
        || o.path
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(format!("unsafe output path {path:?}"));
    }
    let Content::Text(text) = &o.content else {
        return Ok(());
    };
    let kind = match o.dir {
        OutDir::Nspawn => "nspawn",
        OutDir::Network => "network",
        OutDir::Units => "dropin",
    };
    let settings = read_conf(text).map_err(|err| format!("{path}: {err}\n{text}"))?;
    for s in &settings {
        if !allowed(kind, &s.section, &s.key) {
            return Err(format!(
                "{path}: [{}] {}= was not asked for\n{text}",
                s.section, s.key
            ));
        }
    }
    let get = |sec: &str, key: &str| -> Vec<&Setting> {
        settings
            .iter()
            .filter(|s| s.section == sec && s.key == key)
            .collect()
    };
    let input = e.input;
    match kind {
        "nspawn" => {
            if !slot_accepted {
                return Err(format!("{path}: written for a refused slot"));
            }
            let boot: Vec<&str> = get("Exec", "Boot").iter().map(|s| &*s.value).collect();
            let want = if input.boot { "yes" } else { "no" };
            if boot != [want] {
                return Err(format!("{path}: Boot= {boot:?}, config says {want}"));
            }
            if !matches!(
                input.storage.as_deref(),
                None | Some("overlay" | "copy" | "btrfs")
            ) {
                return Err(format!("{path}: written for storage = {:?}", input.storage));
            }
            let pu: Vec<&str> = get("Exec", "PrivateUsers")
                .iter()
                .map(|s| &*s.value)
                .collect();
            let shift = format!("{SLOT_UID_BASE}:65536");
            let want: &[&str] = match (input.privileged, e.overlay()) {
                (true, _) => &["no"],
                (false, true) => &[&shift],
                (false, false) => &[],
            };
            if pu != want {
                return Err(format!(
                    "{path}: PrivateUsers= {pu:?} for privileged = {}, storage = {:?}",
                    input.privileged, input.storage
                ));
            }
            let own: Vec<&str> = get("Files", "PrivateUsersOwnership")
                .iter()
                .map(|s| &*s.value)
                .collect();
            let want: &[&str] = if e.overlay() && !input.privileged {
                &["off"]
            } else {
                &[]
            };
            if own != want {
                return Err(format!("{path}: PrivateUsersOwnership= {own:?}\n{text}"));
            }
            let params = strv(&settings, "Exec", "Parameters")?;
            let want: Vec<String> = if input.boot {
                Vec::new()
            } else {
                input.command.clone()
            };
            if params != want {
                return Err(format!(
                    "{path}: Parameters= reads as {params:?}, config has {want:?}\n{text}"
                ));
            }
            let mut env = strv(&settings, "Exec", "Environment")?;
            env.sort();
            let want: Vec<String> = input.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
            if env != want {
                return Err(format!(
                    "{path}: Environment= reads as {env:?}, config has {want:?}\n{text}"
                ));
            }
            let mut binds = Vec::new();
            for s in settings
                .iter()
                .filter(|s| s.section == "Files" && s.key != "PrivateUsersOwnership")
            {
                let (src, dst, opts) = read_bind(&s.value)?;
                if opts.is_some() {
                    return Err(format!("{path}: bind options {opts:?} not asked for"));
                }
                binds.push((src, dst, s.key == "BindReadOnly"));
            }
            if binds != input.binds {
                return Err(format!(
                    "{path}: binds read as {binds:?}, config has {:?}\n{text}",
                    input.binds
                ));
            }
        }
        "dropin" => {
            if !slot_accepted {
                return Err(format!("{path}: written for a refused slot"));
            }
            let root = "slot-os-root@slot05.service".to_string();
            for key in ["Requires", "After"] {
                let mut words = Vec::new();
                for s in get("Unit", key) {
                    words.extend(extract_words(&s.value, false)?);
                }
                if words.contains(&root) != e.overlay() {
                    return Err(format!(
                        "{path}: {key}= {words:?} for storage = {:?}\n{text}",
                        input.storage
                    ));
                }
            }
            check_limits(&path, text, &settings, e)?;
            let mut execs: Vec<Vec<String>> = Vec::new();
            for s in get("Service", "ExecStart") {
                if s.value.is_empty() {
                    execs.clear();
                    continue;
                }
                let v = expand_specifiers(&s.value, SLOT)?;
                let words = extract_words(&v, true)?
                    .iter()
                    .map(|w| expand_dollars(w))
                    .collect::<Result<Vec<_>, _>>()?;
                execs.push(words);
            }
            match (&input.image, execs.as_slice()) {
                (None, []) => {}
                (Some(img), [words]) => {
                    let dir = format!("--directory={}/{img}", e.machines().trim_end_matches('/'));
                    let machine = format!("--machine={SLOT}");
                    if words.last() != Some(&dir)
                        || !words.contains(&machine)
                        || words[0] != "systemd-nspawn"
                        || words
                            .iter()
                            .filter(|w| w.starts_with("--directory"))
                            .count()
                            != 1
                    {
                        return Err(format!(
                            "{path}: ExecStart= reads as {words:?}, expected it to end in {dir:?}\n{text}"
                        ));
                    }
                }
                (img, got) => {
                    return Err(format!(
                        "{path}: ExecStart= lines {got:?} for image {img:?}\n{text}"
                    ))
                }
            }
        }
        _ => {
            for s in get("Match", "Name") {
                let words = extract_words(&s.value, false)?;
                let lit = |w: &str| !w.contains(['*', '?', '[', ']']);
                if s.value.starts_with('!') || words.len() != 1 || !lit(&words[0]) {
                    return Err(format!(
                        "{path}: Name={} is a pattern or a list, not one interface",
                        s.value
                    ));
                }
                let name = &words[0];
                let ours = name.starts_with("slotbr")
                    || name.starts_with("slotvx")
                    || name.starts_with("vs-")
                    || name.starts_with("vz-");
                if !ours && !e.devices().contains(name) {
                    return Err(format!(
                        "{path}: Name={name} is no device of the config {:?}",
                        e.devices()
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Sizes as the config documents them, read independently of slot-config: digits with
/// an optional K, M, G or T (powers of 1024) and an optional trailing B.
fn oracle_size(v: &str) -> Option<u64> {
    let t = v.trim();
    let t = t.strip_suffix(['b', 'B']).unwrap_or(t);
    let (num, shift) = match t.chars().last()?.to_ascii_uppercase() {
        'K' => (&t[..t.len() - 1], 10),
        'M' => (&t[..t.len() - 1], 20),
        'G' => (&t[..t.len() - 1], 30),
        'T' => (&t[..t.len() - 1], 40),
        _ => (t, 0),
    };
    let n: u64 = num.trim().parse().ok()?;
    n.checked_mul(1u64 << shift)
}

/// What an accepted slot's limit keys must come back as: TasksMax=, IOWeight=,
/// IO*BandwidthMax=MACHINES BYTES exactly as asked, and the disk-apply line enforcing
/// (no '-') exactly when there is a disk limit. A key not set renders nothing.
fn check_limits(
    path: &str,
    text: &str,
    settings: &[Setting],
    e: &Expect<'_>,
) -> Result<(), String> {
    let asked = |i: usize| -> Option<String> {
        e.input.limits[i].as_ref().map(|v| match v {
            toml::Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    };
    let values = |key: &str| -> Vec<String> {
        settings
            .iter()
            .filter(|s| s.section == "Service" && s.key == key)
            .map(|s| s.value.clone())
            .collect()
    };
    let want_tasks: Vec<String> = match asked(1).as_deref().map(str::trim) {
        None => vec![],
        Some("none" | "infinity") => vec!["infinity".into()],
        Some(v) => vec![v
            .parse::<u64>()
            .map_err(|_| format!("{path}: tasks_max {v:?} accepted"))?
            .to_string()],
    };
    let want_weight: Vec<String> = asked(2).into_iter().collect();
    let bw = |i: usize| -> Result<Vec<String>, String> {
        Ok(match asked(i).as_deref() {
            None => vec![],
            Some(v) if v.trim() == "none" => vec![],
            Some(v) => {
                let b =
                    oracle_size(v).ok_or_else(|| format!("{path}: bandwidth {v:?} accepted"))?;
                vec![format!("{} {b}", e.machines())]
            }
        })
    };
    for (key, want) in [
        ("TasksMax", want_tasks),
        ("IOWeight", want_weight),
        ("IOReadBandwidthMax", bw(3)?),
        ("IOWriteBandwidthMax", bw(4)?),
    ] {
        let got = values(key);
        if got != want {
            return Err(format!(
                "{path}: {key}= reads as {got:?}, config asks {want:?}\n{text}"
            ));
        }
    }
    let limited = match asked(0).as_deref() {
        None => false,
        Some(v) if v.trim() == "none" => false,
        Some(v) => {
            oracle_size(v).ok_or_else(|| format!("{path}: disk {v:?} accepted"))?;
            true
        }
    };
    let want = format!(
        "{}/usr/bin/slot-os disk-apply %i",
        if limited { "" } else { "-" }
    );
    let pre = values("ExecStartPre");
    if pre
        .iter()
        .filter(|v| v.contains("disk-apply"))
        .collect::<Vec<_>>()
        != [&want]
    {
        return Err(format!(
            "{path}: ExecStartPre= {pre:?}, expected one {want:?}\n{text}"
        ));
    }
    Ok(())
}

/// One case: load the hostile config, render, read back. Returns whether the slot was
/// accepted.
fn run_case(input: &Input) -> Result<bool, String> {
    let root = PathBuf::from("/nonexistent-slot-os-oracle-root");
    let paths = Paths::with_root(&root);
    let dir = paths.config_dir();
    let facts = HostFacts {
        cpus: CpuSet::from_cpus(0..4),
        mem_total: Some(16 << 30),
    };
    let cfg = load_dir_with(
        &paths,
        &facts,
        &[
            (dir.join(format!("{SLOT}.toml")), Some(input.slot_toml())),
            (dir.join("slot-os.toml"), Some(input.host_toml())),
        ],
    );
    let accepted = cfg.slot(SLOT).is_some();
    if accepted == cfg.skipped.iter().any(|s| s == SLOT) {
        return Err("slot neither accepted nor skipped".into());
    }
    let e = Expect {
        input,
        host_ok: !cfg.host_skipped,
    };
    for o in render_all(&cfg) {
        check_output(&o, &e, accepted)?;
    }
    Ok(accepted)
}

fn cases() -> u32 {
    std::env::var("SLOT_OS_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

/// The hostile run goes on in rounds of `cases()` fresh random cases until this many
/// seconds have passed (at least one round): a bounded time in CI, whatever the load.
fn seconds() -> f64 {
    std::env::var("SLOT_OS_FUZZ_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10.0)
}

#[test]
fn hostile_configs_render_only_what_they_ask_for() {
    let runs = AtomicUsize::new(0);
    let accepted = AtomicUsize::new(0);
    let start = std::time::Instant::now();
    let mut rounds = 0;
    while rounds == 0 || start.elapsed().as_secs_f64() < seconds() {
        rounds += 1;
        // Each runner draws its own seed, so every round adds new cases.
        let mut runner = TestRunner::new(PtConfig {
            cases: cases(),
            failure_persistence: None,
            ..PtConfig::default()
        });
        let result = runner.run(&input(), |inp| {
            runs.fetch_add(1, Ordering::Relaxed);
            match run_case(&inp) {
                Ok(true) => {
                    accepted.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                }
                Ok(false) => Ok(()),
                Err(e) => Err(TestCaseError::fail(e)),
            }
        });
        if let Err(e) = result {
            panic!("{e}");
        }
    }
    let (n, a) = (runs.into_inner(), accepted.into_inner());
    eprintln!(
        "oracle: {n} hostile configs run in {rounds} rounds ({:.1} s), {a} slots accepted and read back, {} refused",
        start.elapsed().as_secs_f64(),
        n - a
    );
    assert!(
        a > n / 20,
        "too few slots accepted ({a} of {n}) for the oracle to mean anything"
    );
}

/// Legal but hard values (every quoting-relevant character, Unicode, empty words) are
/// accepted, so the oracle above is not passing only because everything is refused.
#[test]
fn hard_legal_values_are_accepted_and_read_back() {
    let legal = |s: &str| s.chars().filter(|c| !c.is_control()).collect::<String>();
    let mut runner = TestRunner::new(PtConfig {
        cases: cases() / 3,
        failure_persistence: None,
        ..PtConfig::default()
    });
    let n = AtomicUsize::new(0);
    let result = runner.run(
        &(
            prop::collection::vec(hostile_string(), 1..4),
            prop::collection::btree_map(
                prop::sample::select(vec!["A", "B_1"]).prop_map(str::to_string),
                hostile_string(),
                0..3,
            ),
        ),
        |(command, env)| {
            n.fetch_add(1, Ordering::Relaxed);
            let inp = Input {
                boot: false,
                privileged: false,
                command: command.iter().map(|s| legal(s)).collect(),
                env: env.into_iter().map(|(k, v)| (k, legal(&v))).collect(),
                binds: vec![("/srv/with space".into(), "/mnt/é x".into(), true)],
                image: Some("img1".into()),
                nic: false,
                machines: Some("/var/lib/machines-ü".into()),
                devices: vec!["eth0.100".into()],
                storage: Some("overlay".into()),
                limits: [
                    Some("1536M".into()),
                    Some(4194304.into()),
                    Some(1.into()),
                    Some("1T".into()),
                    Some("none".into()),
                ],
            };
            match run_case(&inp) {
                Ok(true) => Ok(()),
                Ok(false) => Err(TestCaseError::fail(format!("legal input refused: {inp:?}"))),
                Err(e) => Err(TestCaseError::fail(e)),
            }
        },
    );
    eprintln!(
        "oracle: {} legal hard configs accepted and read back",
        n.into_inner()
    );
    if let Err(e) = result {
        panic!("{e}");
    }
}

// ---------------------------------------------------------------- the reader itself

/// The reader against systemd's documented examples, so the oracle is itself checked.
#[test]
fn reader_follows_systemd_examples() {
    // systemd.syntax(5): quotes group words, a backslash continues a line.
    let s = read_conf("[Exec]\nParameters=a \"b c\" 'd \"e'\\\n  f\n").unwrap();
    assert_eq!(s.len(), 1);
    assert_eq!(
        strv(&s, "Exec", "Parameters").unwrap(),
        ["a", "b c", "d \"e", "f"]
    );
    // conf-parser: \r and NUL end a line too.
    let s = read_conf("[Exec]\nEnvironment=A=x\rPrivateUsers=no\0[Files]\rBind=/:/h").unwrap();
    assert_eq!(s.len(), 3, "{s:?}");
    // config_parse_strv keeps backslashes (EXTRACT_RETAIN_ESCAPE).
    assert_eq!(extract_words("\"a\\\"", false).unwrap(), ["a\\"]);
    assert_eq!(extract_words("x\"\"y ''", false).unwrap(), ["xy", ""]);
    // systemd.service(5): "one\ two" style C escapes in ExecStart=.
    assert_eq!(
        extract_words("/bin/echo \"a\\\"b\" c\\\\d", true).unwrap(),
        ["/bin/echo", "a\"b", "c\\d"]
    );
    assert_eq!(expand_specifiers("100%% %i", "web").unwrap(), "100% web");
    assert_eq!(
        read_bind("/a\\:b:/c:ro").unwrap(),
        ("/a:b".into(), "/c".into(), Some("ro".into()))
    );
    assert_eq!(read_bind("/a").unwrap(), ("/a".into(), "/a".into(), None));
}

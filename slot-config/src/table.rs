//! Reading typed keys out of a parsed TOML table while collecting every problem (serde
//! stops at the first one; `slot-os check` must list them all).

use std::path::Path;
use std::str::FromStr;

use toml::{Table, Value};

use crate::Problem;

pub struct Fields<'a, 'p> {
    table: &'a Table,
    file: &'a Path,
    prefix: String,
    allowed: &'static [&'static str],
    pub problems: &'p mut Vec<Problem>,
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a date",
        Value::Array(_) => "an array",
        Value::Table(_) => "a table",
    }
}

impl<'a, 'p> Fields<'a, 'p> {
    /// Reports every key of `table` not in `allowed` right away.
    pub fn new(
        table: &'a Table,
        file: &'a Path,
        prefix: impl Into<String>,
        allowed: &'static [&'static str],
        problems: &'p mut Vec<Problem>,
    ) -> Self {
        let prefix = prefix.into();
        for k in table.keys() {
            if !allowed.contains(&k.as_str()) {
                problems.push(Problem::new(
                    file,
                    join_key(&prefix, k),
                    format!("unknown key; allowed keys here: {}", allowed.join(", ")),
                ));
            }
        }
        Fields {
            table,
            file,
            prefix,
            allowed,
            problems,
        }
    }

    pub fn key(&self, k: &str) -> String {
        debug_assert!(self.allowed.contains(&k), "{k} not declared");
        join_key(&self.prefix, k)
    }

    pub fn file(&self) -> &Path {
        self.file
    }

    pub fn problem(&mut self, key: &str, message: impl Into<String>) {
        let key = self.key(key);
        self.problems.push(Problem::new(self.file, key, message));
    }

    fn wrong_type(&mut self, k: &str, v: &Value, want: &str) {
        self.problem(k, format!("expected {want}, found {}", type_name(v)));
    }

    pub fn get(&self, k: &str) -> Option<&'a Value> {
        self.table.get(k)
    }

    /// A string without control characters (syntax::check_text): every string of the
    /// config may end up in a generated file.
    pub fn string(&mut self, k: &str) -> Option<String> {
        match self.table.get(k)? {
            Value::String(s) => match crate::syntax::check_text(s) {
                Ok(()) => Some(s.clone()),
                Err(e) => {
                    self.problem(k, e);
                    None
                }
            },
            v => {
                self.wrong_type(k, v, "a string");
                None
            }
        }
    }

    pub fn boolean(&mut self, k: &str) -> Option<bool> {
        match self.table.get(k)? {
            Value::Boolean(b) => Some(*b),
            v => {
                self.wrong_type(k, v, "true or false");
                None
            }
        }
    }

    /// An integer within `lo..=hi`.
    pub fn integer(&mut self, k: &str, lo: u32, hi: u32) -> Option<u32> {
        match self.table.get(k)? {
            Value::Integer(i) => match u32::try_from(*i).ok().filter(|n| (lo..=hi).contains(n)) {
                Some(n) => Some(n),
                None => {
                    self.problem(k, format!("{i} is out of range; use {lo} to {hi}"));
                    None
                }
            },
            v => {
                self.wrong_type(k, v, "an integer");
                None
            }
        }
    }

    /// A string parsed by `FromStr`, whose error text is used as the message.
    pub fn parsed<T: FromStr<Err = String>>(&mut self, k: &str) -> Option<T> {
        let s = self.string(k)?;
        match s.parse() {
            Ok(v) => Some(v),
            Err(e) => {
                self.problem(k, e);
                None
            }
        }
    }

    /// Like `parsed`, but also accepting a bare integer (`cpu_quota = 50`).
    pub fn parsed_or_int<T: FromStr<Err = String>>(&mut self, k: &str) -> Option<T> {
        match self.table.get(k)? {
            Value::Integer(i) => match i.to_string().parse() {
                Ok(v) => Some(v),
                Err(e) => {
                    self.problem(k, e);
                    None
                }
            },
            Value::String(_) => self.parsed(k),
            v => {
                self.wrong_type(k, v, "a string or an integer");
                None
            }
        }
    }

    /// A string or an array of strings (`address = "a"` or `address = ["a", "b"]`),
    /// without control characters. A refused element makes the whole key refused.
    pub fn strings(&mut self, k: &str) -> Option<Vec<String>> {
        match self.table.get(k)? {
            Value::String(_) => self.string(k).map(|s| vec![s]),
            Value::Array(a) => {
                let mut out = Vec::with_capacity(a.len());
                let mut refused = false;
                for (i, v) in a.iter().enumerate() {
                    match v {
                        Value::String(s) => match crate::syntax::check_text(s) {
                            Ok(()) => out.push(s.clone()),
                            Err(e) => {
                                refused = true;
                                let key = format!("{}[{i}]", self.key(k));
                                self.problems.push(Problem::new(self.file, key, e));
                            }
                        },
                        v => {
                            let key = format!("{}[{i}]", self.key(k));
                            self.problems.push(Problem::new(
                                self.file,
                                key,
                                format!("expected a string, found {}", type_name(v)),
                            ));
                        }
                    }
                }
                (!refused).then_some(out)
            }
            v => {
                self.wrong_type(k, v, "a string or an array of strings");
                None
            }
        }
    }

    pub fn table(&mut self, k: &str) -> Option<&'a Table> {
        match self.table.get(k)? {
            Value::Table(t) => Some(t),
            v => {
                self.wrong_type(k, v, "a table");
                None
            }
        }
    }

    /// An array of tables (`[[nic]]`).
    pub fn tables(&mut self, k: &str) -> Vec<&'a Table> {
        match self.table.get(k) {
            None => Vec::new(),
            Some(Value::Array(a)) => {
                let mut out = Vec::new();
                for (i, v) in a.iter().enumerate() {
                    match v {
                        Value::Table(t) => out.push(t),
                        v => {
                            let key = format!("{}[{i}]", self.key(k));
                            self.problems.push(Problem::new(
                                self.file,
                                key,
                                format!("expected a table, found {}", type_name(v)),
                            ));
                        }
                    }
                }
                out
            }
            Some(v) => {
                self.wrong_type(k, v, &format!("an array of tables ([[{k}]])"));
                Vec::new()
            }
        }
    }
}

pub fn join_key(prefix: &str, k: &str) -> String {
    if prefix.is_empty() {
        k.to_string()
    } else {
        format!("{prefix}.{k}")
    }
}

/// Parses TOML text; a syntax error becomes one problem naming the line.
pub fn parse_toml(text: &str, file: &Path) -> Result<Table, Problem> {
    text.parse::<Table>().map_err(|e| {
        let msg = e.message().to_string();
        let at = e
            .span()
            .map(|s| {
                let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
                format!("line {line}: ")
            })
            .unwrap_or_default();
        Problem::new(file, "", format!("{at}not valid TOML: {msg}"))
    })
}

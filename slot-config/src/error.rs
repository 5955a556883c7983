use std::fmt;
use std::path::PathBuf;

/// One thing wrong with the configuration: which file, which key, what is wrong and what
/// would be allowed. Validation collects all of them instead of stopping at the first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    /// Dotted key path (`nic[0].address`), empty when the problem is about the whole file.
    pub key: String,
    pub message: String,
}

impl Problem {
    pub fn new(
        file: impl Into<PathBuf>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Problem {
            file: file.into(),
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A hostile file or key name must not be able to forge log lines.
        let line = if self.key.is_empty() {
            format!("{}: {}", self.file.display(), self.message)
        } else {
            format!("{}: {}: {}", self.file.display(), self.key, self.message)
        };
        f.write_str(&crate::syntax::printable(&line))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}", format_problems(.0))]
    Invalid(Vec<Problem>),
    #[error("{action} {}: {source}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ConfigError {
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ConfigError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

fn format_problems(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

//! Changing /etc/slot-os files the way a person would: keys set or removed in place with
//! toml_edit (comments and layout kept), written to a temporary file, fsynced, renamed.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;
use slot_config::Config;
use toml_edit::DocumentMut;

use super::Ctx;
use crate::error::bad_input;

pub fn read_doc(path: &Path) -> anyhow::Result<DocumentMut> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    text.parse::<DocumentMut>()
        .with_context(|| format!("parsing {}", path.display()))
}

/// Atomic replace: readers see the old file or the new one, never a mix, even if we
/// are killed halfway.
pub fn write_atomic(path: &Path, text: &str) -> anyhow::Result<()> {
    let dir = path.parent().context("config path has no directory")?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = path
        .file_name()
        .context("config path has no file name")?
        .to_string_lossy();
    crate::sys::replace_file(path, &dir.join(format!(".{name}.tmp")), text, None)
}

/// Removes a config file; one that is already gone is fine.
pub fn remove_file(path: &Path) -> anyhow::Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}

pub fn write_doc(path: &Path, doc: &DocumentMut) -> anyhow::Result<()> {
    write_atomic(path, &doc.to_string())
}

/// A new slot file as `build` and `create` (`by`) write it: the base image it is cloned
/// from, and its number when its name does not imply it (`web`, not `slot03`).
pub fn new_slot_text(
    name: &str,
    base: &str,
    number: Option<u32>,
    storage: Option<slot_config::Storage>,
    by: &str,
) -> String {
    let mut doc = DocumentMut::new();
    if let Some(n) = number {
        doc["number"] = toml_edit::value(i64::from(n));
    }
    doc["base_image"] = toml_edit::value(base);
    if let Some(st) = storage {
        doc["storage"] = toml_edit::value(st.as_str());
    }
    format!(
        "# Slot {name}, made by `slot-os {by}`. Keys and defaults: slot-os.toml(5).\n\
         # Resources not set here follow [defaults] in slot-os.toml.\n{doc}"
    )
}

/// Writes what `build` or `create` made a slot's root with into its existing file (an admin's file, or
/// one whose root was removed and is made again), unless the file says so already.
pub fn record_storage(file: &Path, storage: Option<slot_config::Storage>) -> anyhow::Result<()> {
    let Some(st) = storage else {
        return Ok(());
    };
    let mut doc = read_doc(file)?;
    if doc.get("storage").and_then(|v| v.as_str()) == Some(st.as_str()) {
        return Ok(());
    }
    doc["storage"] = toml_edit::value(st.as_str());
    write_doc(file, &doc)
}

/// The config as it would be with `path` holding `text`, or bad input (exit 2, nothing
/// written) if that adds any problem anywhere: an edit of one file can invalidate
/// another (an address another slot holds, a bridge a slot still uses).
pub fn validate_change(ctx: &Ctx, path: &Path, text: &str) -> anyhow::Result<Config> {
    validate_changes(ctx, &[(path.to_path_buf(), text.to_string())])
}

/// [`validate_change`] for an edit of several files at once (`resource` on many slots):
/// every config edit of the helper goes through here before anything is written.
pub fn validate_changes(ctx: &Ctx, changes: &[(PathBuf, String)]) -> anyhow::Result<Config> {
    let before = ctx.load();
    let overlay: Vec<(PathBuf, Option<String>)> = changes
        .iter()
        .map(|(p, t)| (p.clone(), Some(t.clone())))
        .collect();
    let after = slot_config::load::load_dir_with(&ctx.paths, &ctx.facts, &overlay);
    let new: Vec<String> = after
        .problems
        .iter()
        .filter(|p| !before.problems.contains(p))
        .map(|p| p.to_string())
        .collect();
    if new.is_empty() {
        Ok(after)
    } else {
        Err(bad_input(format!(
            "{}\nnothing was changed",
            new.join("\n")
        )))
    }
}

/// A slot file arriving from another host (import, move) as `name`: its root becomes the
/// image of its own name (no `image`), and its number (`number`, else the one `name`
/// implies) is written only when the name does not imply it. Returns the number.
pub fn arriving(doc: &mut DocumentMut, name: &str, number: Option<u32>) -> Option<u32> {
    let implied = slot_config::names::number_from_name(name);
    let number = implied.or(number);
    doc.remove("image");
    match number {
        Some(n) if implied != Some(n) => doc["number"] = toml_edit::value(i64::from(n)),
        _ => {
            doc.remove("number");
        }
    }
    number
}

#[cfg(test)]
mod tests {
    use super::*;
    use toml_edit::value;

    #[test]
    fn edits_keep_comments_and_layout() {
        let dir = std::env::temp_dir().join(format!("slot-os-edit-{}", std::process::id()));
        let path = dir.join("slot00.toml");
        write_atomic(
            &path,
            "# keep me\nmemory = \"512M\" # inline\n\n[[bind]]\nsource = \"/a\"\ntarget = \"/b\"\n",
        )
        .unwrap();
        let mut doc = read_doc(&path).unwrap();
        doc["memory"] = value("256M");
        doc["cpu_quota"] = value("50%");
        write_doc(&path, &doc).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# keep me\n"), "{text}");
        assert!(text.contains("memory = \"256M\""), "{text}");
        assert!(text.contains("cpu_quota = \"50%\""), "{text}");
        assert!(text.contains("[[bind]]\nsource = \"/a\""), "{text}");
        assert!(!dir.join(".slot00.toml.tmp").exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn new_slot_files_hold_base_image_and_number() {
        assert_eq!(
            new_slot_text("slot01", "slot-os", None, None, "build"),
            "# Slot slot01, made by `slot-os build`. Keys and defaults: slot-os.toml(5).\n\
             # Resources not set here follow [defaults] in slot-os.toml.\n\
             base_image = \"slot-os\"\n"
        );
        let t = new_slot_text("web", "deb\"12", Some(10), None, "create");
        let doc: DocumentMut = t.parse().unwrap();
        assert_eq!(doc["number"].as_integer(), Some(10));
        assert_eq!(doc["base_image"].as_str(), Some("deb\"12"));
        let t = new_slot_text(
            "web",
            "b",
            None,
            Some(slot_config::Storage::Overlay),
            "create",
        );
        assert!(
            t.ends_with("base_image = \"b\"\nstorage = \"overlay\"\n"),
            "{t}"
        );
    }

    #[test]
    fn missing_file_reads_as_empty_document() {
        let doc = read_doc(Path::new("/nonexistent/slot-os/x.toml")).unwrap();
        assert!(doc.as_table().is_empty());
    }
}

//! How a slot's image comes to exist and how it goes, shared by `build` (the slotNN range)
//! and `create` (one slot).
//!
//! An image is cloned from the base image (machined's CloneImage: a btrfs snapshot where
//! possible) under a temporary name, given its own identity there, and only then renamed
//! to its real name. A run killed at any point leaves at most the temporary clone, never
//! an image under the slot's name that is half copied or still has the base image's
//! machine-id (the next run would take such an image as built). The temporary name is
//! `IMAGE.slot-os-new`: slot and image names have no dots, so it is never a slot's; the
//! next run removes a leftover one first.
//!
//! An overlay slot (`storage = "overlay"`) is not cloned: it gets the current read-only
//! version of the base image (`storage::lower`, made now if the base changed) and its own
//! layer, made and given its identity under a temporary name and renamed into place the
//! same way (`storage::layer::provision`).

use std::fs;
use std::path::Path;

use anyhow::Context;
use slot_config::{Paths, Storage};

use crate::dbus::Bus;
use crate::storage::hostkeys::HostKeys;
use crate::storage::image;
use crate::storage::layout::{self, Layout};
use crate::storage::{layer, lower};
use crate::sys::workers;

const NEW_SUFFIX: &str = ".slot-os-new";

/// Where `image` is made before it is renamed into place.
pub fn temp_name(image: &str) -> String {
    format!("{image}{NEW_SUFFIX}")
}

/// One image to make: its name, the host name its slot gets, and how it is stored.
pub struct NewImage<'a> {
    pub image: &'a str,
    pub hostname: &'a str,
    pub storage: Storage,
}

/// Makes every image of `new` from image `base`, all clones in flight at once; one result
/// per entry, in order. A failed entry leaves nothing behind under either name.
pub fn images(
    bus: &Bus,
    paths: &Paths,
    machines: &Path,
    base: &str,
    new: &[NewImage<'_>],
) -> Vec<anyhow::Result<()>> {
    let (overlays, clones): (Vec<&NewImage<'_>>, Vec<&NewImage<'_>>) =
        new.iter().partition(|n| n.storage == Storage::Overlay);
    let mut cloned = clone_images(bus, machines, base, &clones).into_iter();
    let mut layered = overlay_images(paths, machines, base, &overlays).into_iter();
    new.iter()
        .map(|n| {
            let next = if n.storage == Storage::Overlay {
                layered.next()
            } else {
                cloned.next()
            };
            next.unwrap_or_else(|| Err(anyhow::anyhow!("{}: not made", n.image)))
        })
        .collect()
}

/// Overlay slots: one version of the base for all of them (copied now if the base changed
/// since the newest one, or there is none, else shared), and each its own layer.
fn overlay_images(
    paths: &Paths,
    machines: &Path,
    base: &str,
    new: &[&NewImage<'_>],
) -> Vec<anyhow::Result<()>> {
    if new.is_empty() {
        return Vec::new();
    }
    let v = match lower::current(machines, base) {
        Ok((v, made)) => {
            if made {
                println!("{base}: new read-only version {v} for overlay slots");
            }
            v
        }
        Err(e) => {
            let e = anyhow::Error::new(e);
            return new.iter().map(|_| Err(anyhow::anyhow!("{e:#}"))).collect();
        }
    };
    let stage = layout::stage_dir(paths);
    // Each layer's SSH host keys (RSA: seconds of CPU) are most of the time: one per CPU.
    workers::map(new, workers::per_cpu(), |n| {
        layer::provision(machines, n.image, &v, &stage, |root| {
            let id = image::new_machine_id()?;
            image::set_identity_in(root, n.hostname, Some(&id), HostKeys::New)
        })
        .with_context(|| format!("making an overlay root on {v}"))
    })
}

fn clone_images(
    bus: &Bus,
    machines: &Path,
    base: &str,
    new: &[&NewImage<'_>],
) -> Vec<anyhow::Result<()>> {
    let temps: Vec<String> = new.iter().map(|n| temp_name(n.image)).collect();
    // A leftover of a killed run; machined refuses to remove it while it is still cloning
    // it (the image is locked), and then this run fails for that image rather than race.
    let swept: Vec<anyhow::Result<()>> = temps
        .iter()
        .map(|t| {
            if machines.join(t).symlink_metadata().is_err() {
                return Ok(());
            }
            bus.remove_image(t).with_context(|| {
                format!("removing {t}, left by an interrupted run (if machined is still cloning it, try again when it is done)")
            })
        })
        .collect();
    let todo: Vec<String> = temps
        .iter()
        .zip(&swept)
        .filter(|(_, s)| s.is_ok())
        .map(|(t, _)| t.clone())
        .collect();
    let mut cloned = bus.clone_images(base, &todo).into_iter();
    let made: Vec<anyhow::Result<()>> = swept
        .into_iter()
        .map(|s| {
            s?;
            cloned
                .next()
                .unwrap_or_else(|| Err(anyhow::anyhow!("no answer from machined")))
                .with_context(|| format!("cloning image {base}"))
        })
        .collect();
    // Each clone's identity (its SSH host keys: seconds of CPU for RSA) one per CPU.
    let jobs: Vec<_> = new.iter().zip(&temps).zip(made).collect();
    workers::map(&jobs, workers::per_cpu(), |((n, t), made)| {
        let r = match made {
            Ok(()) => finish(bus, machines, t, n),
            Err(e) => Err(anyhow::anyhow!("{e:#}")),
        };
        if r.is_err() && machines.join(t).symlink_metadata().is_ok() {
            let _ = bus.remove_image(t);
        }
        r
    })
}

/// The fresh clone at `temp` gets its own machine-id, host name and SSH host keys, loses
/// any restore mark the base image carried, and takes its real name.
fn finish(bus: &Bus, machines: &Path, temp: &str, n: &NewImage<'_>) -> anyhow::Result<()> {
    let root = machines.join(temp);
    let id = image::new_machine_id()?;
    image::set_identity(&root, n.hostname, Some(&id), HostKeys::New)?;
    image::clear_restored(&root)?;
    bus.rename_image(temp, n.image)
}

/// Deletes image `name` (machined's RemoveImage, or an overlay slot's layer and mount
/// point) and the journal link nspawn made for it, and lifts its disk limit first, so its
/// project ID is free once its files are gone. The slot must be stopped.
pub fn remove_image(bus: &Bus, paths: &Paths, machines: &Path, name: &str) -> anyhow::Result<()> {
    let img = machines.join(name);
    let overlay = Layout::named(machines, name, Some(Storage::Overlay));
    let is_overlay = overlay.exists() || layer::is_mounted(machines, name);
    let (own, root) = if is_overlay {
        (
            overlay.restore_target().to_path_buf(),
            overlay.capture_dir(),
        )
    } else {
        (img.clone(), img.clone())
    };
    let id = image::machine_id(&root);
    if let Err(e) = crate::storage::quota::release(&own) {
        eprintln!("warning: {name}: disk limit not lifted: {e:#}");
    }
    if is_overlay {
        // Its root unit stops with the slot (StopWhenUnneeded); stopping it here waits for
        // the unmount instead of racing it.
        if let Some(Err(e)) = bus
            .stop_units(&[slot_config::names::root_unit_name(name)])
            .pop()
        {
            eprintln!("warning: {name}: stopping its root unit: {e:#}");
        }
        layer::remove(machines, name).with_context(|| format!("removing overlay slot {name}"))?;
    } else if img.symlink_metadata().is_ok() {
        bus.remove_image(name)
            .with_context(|| format!("removing image {name}"))?;
    }
    // nspawn's --link-journal=try-guest leaves /var/log/journal/<id> pointing into the
    // image; it dangles once the image is gone.
    if let Some(id) = id {
        let link = paths.under("/var/log/journal").join(id);
        if link
            .symlink_metadata()
            .is_ok_and(|m| m.file_type().is_symlink())
        {
            let _ = fs::remove_file(&link);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names_are_never_slot_or_image_names() {
        let t = temp_name("slot00");
        assert_eq!(t, "slot00.slot-os-new");
        assert!(slot_config::names::check_name("image", &t).is_err());
        assert!(slot_config::names::check_slot_name(&t).is_err());
    }
}

//! `forward on|off|status`: lets slot traffic through an iptables FORWARD chain whose
//! policy is DROP (as Docker sets it). Bridged frames cross FORWARD too, because
//! br_netfilter hands them to iptables, so without this slots on one bridge (or one
//! VXLAN) stop reaching each other and the NAT network stops forwarding.
//!
//! The rules live in a chain of our own, `SLOT-OS-FORWARD`, jumped to from the top of
//! FORWARD, for IPv4 and IPv6; `on` is idempotent and `off` removes exactly what `on`
//! added. Run by slot-os-forward.service, which every slot with a network wants.

use std::process::{Command, ExitCode};

use anyhow::{bail, Context};
use slot_config::host::NAT_ZONE;

use crate::cli::ForwardAction;

const CHAIN: &str = "SLOT-OS-FORWARD";

fn rules() -> Vec<Vec<String>> {
    let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    // Slots on one bridge, VXLAN included (bridged: in and out is the bridge).
    let mut r = vec![v(&["-i", "slotbr+", "-o", "slotbr+", "-j", "ACCEPT"])];
    // The NAT network and nspawn's host-only veths: out freely, replies back in.
    for dev in [format!("vz-{NAT_ZONE}"), "ve-+".to_string()] {
        let replies = [
            "-m",
            "conntrack",
            "--ctstate",
            "RELATED,ESTABLISHED",
            "-j",
            "ACCEPT",
        ];
        r.push(v(&["-i", &dev, "-j", "ACCEPT"]));
        r.push(v(&[&["-o", dev.as_str()][..], &replies].concat()));
    }
    r
}

struct Tables {
    bin: &'static str,
}

impl Tables {
    fn output(&self, args: &[&str]) -> anyhow::Result<std::process::Output> {
        Command::new(self.bin)
            .arg("-w")
            .args(args)
            .output()
            .with_context(|| format!("running {}", self.bin))
    }
    /// True when the command succeeds (for the `-C`/`-S` checks).
    fn run(&self, args: &[&str]) -> anyhow::Result<bool> {
        Ok(self.output(args)?.status.success())
    }
    fn must(&self, args: &[&str]) -> anyhow::Result<()> {
        let out = self.output(args)?;
        if !out.status.success() {
            bail!(
                "{} {}: {}",
                self.bin,
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }
    fn on(&self) -> anyhow::Result<()> {
        if !self.run(&["-S", CHAIN])? {
            self.must(&["-N", CHAIN])?;
        }
        self.must(&["-F", CHAIN])?;
        for r in rules() {
            let mut a = vec!["-A", CHAIN];
            a.extend(r.iter().map(String::as_str));
            self.must(&a)?;
        }
        if !self.run(&["-C", "FORWARD", "-j", CHAIN])? {
            self.must(&["-I", "FORWARD", "1", "-j", CHAIN])?;
        }
        Ok(())
    }
    fn off(&self) -> anyhow::Result<()> {
        while self.run(&["-C", "FORWARD", "-j", CHAIN])? {
            self.must(&["-D", "FORWARD", "-j", CHAIN])?;
        }
        if self.run(&["-S", CHAIN])? {
            self.must(&["-F", CHAIN])?;
            self.must(&["-X", CHAIN])?;
        }
        Ok(())
    }
    fn status(&self) -> anyhow::Result<String> {
        let jump = self.run(&["-C", "FORWARD", "-j", CHAIN])?;
        let out = self.output(&["-S", "FORWARD"])?;
        let policy = String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("-P FORWARD ").map(str::to_string))
            .unwrap_or_else(|| "?".into());
        Ok(format!(
            "{}: FORWARD policy {policy}, slot rules {}",
            self.bin,
            if jump { "on" } else { "off" }
        ))
    }
}

fn installed(bin: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
        .unwrap_or(false)
        || ["/usr/sbin", "/sbin"]
            .iter()
            .any(|d| std::path::Path::new(d).join(bin).is_file())
}

pub fn run(action: ForwardAction) -> anyhow::Result<ExitCode> {
    let tables: Vec<Tables> = ["iptables", "ip6tables"]
        .into_iter()
        .filter(|b| installed(b))
        .map(|bin| Tables { bin })
        .collect();
    if tables.is_empty() {
        println!("iptables is not installed: no FORWARD chain to open; nothing to do");
        return Ok(ExitCode::SUCCESS);
    }
    for t in &tables {
        match action {
            ForwardAction::On => t.on()?,
            ForwardAction::Off => t.off()?,
            ForwardAction::Status => println!("{}", t.status()?),
        }
    }
    match action {
        ForwardAction::On => println!("slot traffic accepted in FORWARD ({CHAIN})"),
        ForwardAction::Off => println!("{CHAIN} removed"),
        ForwardAction::Status => {}
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    #[test]
    fn rules_cover_bridges_the_nat_zone_and_veths() {
        let r: Vec<String> = super::rules().iter().map(|x| x.join(" ")).collect();
        assert_eq!(
            r,
            [
                "-i slotbr+ -o slotbr+ -j ACCEPT",
                "-i vz-slots -j ACCEPT",
                "-o vz-slots -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
                "-i ve-+ -j ACCEPT",
                "-o ve-+ -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
            ]
        );
    }
}

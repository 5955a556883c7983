//! slot-os's iptables FORWARD chain, `SLOT-OS-FORWARD`, jumped to from the top of FORWARD,
//! for IPv4 and IPv6: `on` is idempotent and `off` removes exactly what `on` added.

use std::process::Command;

use anyhow::{bail, Context};
use slot_config::host::NAT_ZONE;

pub const CHAIN: &str = "SLOT-OS-FORWARD";

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

pub struct Tables {
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
    pub fn on(&self) -> anyhow::Result<()> {
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
    pub fn off(&self) -> anyhow::Result<()> {
        while self.run(&["-C", "FORWARD", "-j", CHAIN])? {
            self.must(&["-D", "FORWARD", "-j", CHAIN])?;
        }
        if self.run(&["-S", CHAIN])? {
            self.must(&["-F", CHAIN])?;
            self.must(&["-X", CHAIN])?;
        }
        Ok(())
    }
    pub fn status(&self) -> anyhow::Result<String> {
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

/// The iptables programs installed here (none: no FORWARD chain to open).
pub fn installed_tables() -> Vec<Tables> {
    ["iptables", "ip6tables"]
        .into_iter()
        .filter(|b| installed(b))
        .map(|bin| Tables { bin })
        .collect()
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

//! slot-os's Open vSwitch bridges and ports, kept in OVSDB (docs/ovs.md).
//!
//! What slot-os made carries a mark in `external_ids`, so it only ever changes or removes
//! its own rows: a bridge `slot-os-bridge=<number>`, a port `slot-os-owner=<slot>`. Every
//! change is one OVSDB transaction that also bumps `next_cfg`; the call returns once
//! ovs-vswitchd reports (`cur_cfg`) that it has applied it, as `ovs-vsctl` does.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use slot_config::Bridge;

use crate::net::ovsdb::{self, as_uuid, map_get, named, set_members, string_map, uuid, Client};

const BRIDGE_KEY: &str = "slot-os-bridge";
const OWNER_KEY: &str = "slot-os-owner";
/// How long ovs-vswitchd may take to apply a change (it takes milliseconds).
const APPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// `cur_cfg` in a monitor's table updates (`{"Open_vSwitch": {UUID: {"new": {...}}}}`).
fn cur_cfg(updates: &Value) -> Option<i64> {
    updates
        .get("Open_vSwitch")?
        .as_object()?
        .values()
        .find_map(|row| row.get("new")?.get("cur_cfg")?.as_i64())
}

/// The userspace datapath needs no kernel module; the kernel's is faster and is used when
/// the openvswitch module is loaded (ovs-vswitchd's start script loads it where it exists).
pub fn datapath_type() -> &'static str {
    if Path::new("/sys/module/openvswitch").exists() {
        "system"
    } else {
        "netdev"
    }
}

#[derive(Debug, Clone)]
pub struct OvsBridge {
    pub uuid: String,
    pub name: String,
    pub datapath_type: String,
    pub ports: Vec<String>,
    /// The number slot-os marked it with, if it is slot-os's.
    pub number: Option<String>,
}

#[derive(Debug, Clone)]
pub struct OvsPort {
    pub uuid: String,
    pub name: String,
    /// The slot it belongs to, if slot-os made it.
    pub owner: Option<String>,
}

pub struct Ovs {
    db: Client,
}

fn select(table: &str, columns: &[&str]) -> Value {
    json!({"op": "select", "table": table, "where": [], "columns": columns})
}

fn rows(result: &Value) -> &[Value] {
    result
        .get("rows")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

fn text(row: &Value, col: &str) -> String {
    row.get(col)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn row_uuid(row: &Value) -> String {
    row.get("_uuid")
        .and_then(as_uuid)
        .unwrap_or_default()
        .to_string()
}

impl Ovs {
    pub fn connect() -> anyhow::Result<Ovs> {
        let path = ovsdb::default_socket();
        Ok(Ovs {
            db: Client::connect(&path)?,
        })
    }

    pub fn bridges(&mut self) -> anyhow::Result<Vec<OvsBridge>> {
        let r = self.db.transact(vec![select(
            "Bridge",
            &["_uuid", "name", "datapath_type", "ports", "external_ids"],
        )])?;
        Ok(rows(&r[0])
            .iter()
            .map(|row| OvsBridge {
                uuid: row_uuid(row),
                name: text(row, "name"),
                datapath_type: text(row, "datapath_type"),
                ports: row
                    .get("ports")
                    .map(|p| {
                        set_members(p)
                            .into_iter()
                            .filter_map(as_uuid)
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default(),
                number: row
                    .get("external_ids")
                    .and_then(|m| map_get(m, BRIDGE_KEY))
                    .map(str::to_string),
            })
            .collect())
    }

    pub fn ports(&mut self) -> anyhow::Result<Vec<OvsPort>> {
        let r = self
            .db
            .transact(vec![select("Port", &["_uuid", "name", "external_ids"])])?;
        Ok(rows(&r[0])
            .iter()
            .map(|row| OvsPort {
                uuid: row_uuid(row),
                name: text(row, "name"),
                owner: row
                    .get("external_ids")
                    .and_then(|m| map_get(m, OWNER_KEY))
                    .map(str::to_string),
            })
            .collect())
    }

    /// Runs `ops` and waits until ovs-vswitchd has applied them: `cur_cfg` reaching the
    /// `next_cfg` the transaction set, seen through an OVSDB monitor (as ovs-vsctl does).
    fn commit(&mut self, mut ops: Vec<Value>) -> anyhow::Result<Vec<Value>> {
        const MONITOR: &str = "slot-os-cur-cfg";
        // Started first, so the change that ends the wait cannot come before it.
        let mut cur = cur_cfg(&self.db.monitor(MONITOR, "Open_vSwitch", &["cur_cfg"])?);
        ops.push(json!({"op": "mutate", "table": "Open_vSwitch", "where": [],
            "mutations": [["next_cfg", "+=", 1]]}));
        ops.push(select("Open_vSwitch", &["next_cfg"]));
        let n = ops.len();
        let r = self.db.transact(ops)?;
        if r[n - 2].get("count").and_then(Value::as_u64) != Some(1) {
            bail!("OVSDB has no Open_vSwitch record (has `ovs-vsctl init` run?)");
        }
        let want = rows(&r[n - 1])
            .first()
            .and_then(|row| row.get("next_cfg"))
            .and_then(Value::as_i64)
            .context("OVSDB did not report next_cfg")?;
        let deadline = Instant::now() + APPLY_TIMEOUT;
        while cur.is_none_or(|c| c < want) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.db.next_update(MONITOR, left)? {
                Some(u) => cur = cur_cfg(&u).or(cur),
                None => bail!(
                    "ovs-vswitchd did not apply the change within {} s (it is in OVSDB; is ovs-vswitchd running?)",
                    APPLY_TIMEOUT.as_secs()
                ),
            }
        }
        self.db.monitor_cancel(MONITOR)?;
        Ok(r)
    }

    /// Makes bridge `b` exist with the datapath `datapath` and slot-os's mark (an existing
    /// bridge of that name is adopted). Returns its datapath type.
    pub fn ensure_bridge(&mut self, b: &Bridge, datapath: &str) -> anyhow::Result<String> {
        let name = b.ifname();
        let number = b.number.to_string();
        let mark = string_map(&[(BRIDGE_KEY, &number)]);
        if let Some(have) = self.bridges()?.into_iter().find(|x| x.name == name) {
            if have.datapath_type == datapath && have.number.as_deref() == Some(&number) {
                return Ok(have.datapath_type);
            }
            self.commit(vec![
                json!({"op": "mutate", "table": "Bridge",
                "where": [["_uuid", "==", uuid(&have.uuid)]],
                "mutations": [["external_ids", "delete", ["set", [BRIDGE_KEY]]],
                              ["external_ids", "insert", mark]]}),
                json!({"op": "update", "table": "Bridge",
                "where": [["_uuid", "==", uuid(&have.uuid)]],
                "row": {"datapath_type": datapath}}),
            ])
            .with_context(|| format!("updating OVS bridge {name}"))?;
            return Ok(datapath.to_string());
        }
        // A bridge's own port: the internal interface the host's addresses go on.
        let made = self.commit(vec![
            json!({"op": "wait", "table": "Bridge", "where": [["name", "==", name]],
                "columns": ["name"], "until": "==", "rows": [], "timeout": 0}),
            json!({"op": "insert", "table": "Interface", "uuid-name": "iface",
                "row": {"name": name, "type": "internal"}}),
            json!({"op": "insert", "table": "Port", "uuid-name": "port",
                "row": {"name": name, "interfaces": named("iface")}}),
            json!({"op": "insert", "table": "Bridge", "uuid-name": "br",
                "row": {"name": name, "ports": named("port"), "datapath_type": datapath,
                        "external_ids": mark}}),
            json!({"op": "mutate", "table": "Open_vSwitch", "where": [],
                "mutations": [["bridges", "insert", ["set", [named("br")]]]]}),
        ]);
        if let Err(e) = made {
            // Two slots starting at once may both find it missing; the `wait` lets only
            // one create it.
            if !self.bridges()?.iter().any(|x| x.name == name) {
                return Err(e.context(format!("creating OVS bridge {name}")));
            }
        }
        Ok(datapath.to_string())
    }

    /// Removes bridge `name` if slot-os made it; its ports and interfaces go with it
    /// (OVSDB drops rows nothing refers to). Returns whether it was there.
    pub fn delete_bridge(&mut self, name: &str) -> anyhow::Result<bool> {
        let Some(b) = self
            .bridges()?
            .into_iter()
            .find(|x| x.name == name && x.number.is_some())
        else {
            return Ok(false);
        };
        self.commit(vec![
            json!({"op": "mutate", "table": "Open_vSwitch", "where": [],
            "mutations": [["bridges", "delete", ["set", [uuid(&b.uuid)]]]]}),
        ])
        .with_context(|| format!("deleting OVS bridge {name}"))?;
        Ok(true)
    }

    /// Makes host interface `port` a port of bridge `bridge`, owned by slot `owner`; moves
    /// it there if it is on another bridge.
    pub fn ensure_port(&mut self, bridge: &str, port: &str, owner: &str) -> anyhow::Result<()> {
        let bridges = self.bridges()?;
        let Some(target) = bridges.iter().find(|b| b.name == bridge) else {
            bail!("OVS bridge {bridge} is not in OVSDB");
        };
        let existing = self.ports()?.into_iter().find(|p| p.name == port);
        let mut ops = Vec::new();
        if let Some(p) = &existing {
            if target.ports.contains(&p.uuid) && p.owner.as_deref() == Some(owner) {
                return Ok(());
            }
            for b in bridges.iter().filter(|b| b.ports.contains(&p.uuid)) {
                ops.push(json!({"op": "mutate", "table": "Bridge",
                    "where": [["_uuid", "==", uuid(&b.uuid)]],
                    "mutations": [["ports", "delete", ["set", [uuid(&p.uuid)]]]]}));
            }
        }
        ops.extend([
            json!({"op": "insert", "table": "Interface", "uuid-name": "iface",
                "row": {"name": port}}),
            json!({"op": "insert", "table": "Port", "uuid-name": "port",
                "row": {"name": port, "interfaces": named("iface"),
                        "external_ids": string_map(&[(OWNER_KEY, owner)])}}),
            json!({"op": "mutate", "table": "Bridge",
                "where": [["_uuid", "==", uuid(&target.uuid)]],
                "mutations": [["ports", "insert", ["set", [named("port")]]]]}),
        ]);
        self.commit(ops)
            .with_context(|| format!("adding port {port} to OVS bridge {bridge}"))?;
        Ok(())
    }

    /// Removes slot-os's ports for which `gone` says so, from whatever bridge holds them.
    /// Returns their names.
    pub fn delete_ports(
        &mut self,
        mut gone: impl FnMut(&OvsPort) -> anyhow::Result<bool>,
    ) -> anyhow::Result<Vec<String>> {
        let mut ports = Vec::new();
        for p in self.ports()? {
            if p.owner.is_some() && gone(&p)? {
                ports.push(p);
            }
        }
        if ports.is_empty() {
            return Ok(Vec::new());
        }
        let bridges = self.bridges()?;
        let mut ops = Vec::new();
        for b in &bridges {
            let mine: Vec<Value> = ports
                .iter()
                .filter(|p| b.ports.contains(&p.uuid))
                .map(|p| uuid(&p.uuid))
                .collect();
            if !mine.is_empty() {
                ops.push(json!({"op": "mutate", "table": "Bridge",
                    "where": [["_uuid", "==", uuid(&b.uuid)]],
                    "mutations": [["ports", "delete", ["set", mine]]]}));
            }
        }
        let names: Vec<String> = ports.into_iter().map(|p| p.name).collect();
        if !ops.is_empty() {
            self.commit(ops)
                .with_context(|| format!("removing OVS ports {}", names.join(", ")))?;
        }
        Ok(names)
    }

    /// Port names of bridge `name`, except its own internal port.
    pub fn port_names(&mut self, name: &str) -> anyhow::Result<Vec<String>> {
        let Some(b) = self.bridges()?.into_iter().find(|b| b.name == name) else {
            return Ok(Vec::new());
        };
        let ids: BTreeSet<String> = b.ports.into_iter().collect();
        let mut names: Vec<String> = self
            .ports()?
            .into_iter()
            .filter(|p| ids.contains(&p.uuid) && p.name != name)
            .map(|p| p.name)
            .collect();
        names.sort();
        Ok(names)
    }
}
/// Removes slot-os's OVS ports that no configured NIC accounts for, or whose veth has
/// vanished (a slot that stopped without `net-release`, a reboot).
pub fn prune_ports(o: &mut Ovs, cfg: &slot_config::Config) -> anyhow::Result<()> {
    let wanted: std::collections::BTreeSet<(String, String)> = cfg
        .slots
        .iter()
        .flat_map(|s| {
            s.nics
                .iter()
                .filter(|n| cfg.host.is_ovs(n.bridge))
                .map(|n| (s.name.clone(), s.nic_host_ifname(n.number)))
        })
        .collect();
    // Links are listed after the ports are read: a slot starting meanwhile adds its port
    // only once its veth exists, so that veth is in this list.
    let mut links: Option<std::collections::BTreeSet<String>> = None;
    let gone = o.delete_ports(|p| {
        let owner = p.owner.clone().unwrap_or_default();
        if !wanted.contains(&(owner, p.name.clone())) {
            return Ok(true);
        }
        let links = match &mut links {
            Some(l) => l,
            None => links.insert(
                crate::net::netlink::Netlink::here()?
                    .interfaces()?
                    .into_iter()
                    .map(|(name, _)| name)
                    .collect(),
            ),
        };
        Ok(!links.contains(&p.name))
    })?;
    if !gone.is_empty() {
        eprintln!("removed stale OVS ports: {}", gone.join(", "));
    }
    Ok(())
}

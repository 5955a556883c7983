//! org.freedesktop.systemd1: units' state, start/stop waiting for each job's JobRemoved
//! signal, freeze/thaw, runtime properties, daemon-reload.
//!
//! Over 400 lines: systemd1 is the helper's largest D-Bus surface; every call made to it is
//! here, one short method each.

use std::collections::HashMap;

use anyhow::{anyhow, Context};
use futures_util::future::{select, Either};
use futures_util::stream::{FuturesUnordered, StreamExt};
use slot_config::CpuSet;
use zbus::proxy::CacheProperties;
use zbus::OwnedObjectPath;
use zbus_systemd::systemd1::{ManagerProxy, ServiceProxy, UnitProxy};

use super::{encode_path, join_bounded, within, Bus, CALL_TIMEOUT, IN_FLIGHT, RELOAD_TIMEOUT};

/// Property reads [`Bus::status_at`] makes at once for one unit.
const STATUS_CALLS: usize = 9;

/// How many start (or stop) jobs run at once when the caller does not say: a slot's boot
/// is mostly CPU work, so starting far more slots than there are CPUs only makes each boot
/// slower (and 200 at once on 2 CPUs ran past the 90 s start timeout); a few per CPU keep
/// the CPUs busy while others wait on I/O. Measured in docs/notes/scale.md.
pub fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()) * 4
}

/// A resource property for `SetUnitProperties`.
#[derive(Debug, Clone)]
pub enum UnitProp {
    /// CPUQuota= in percent of one CPU (200 = two CPUs' worth).
    CpuQuotaPercent(u32),
    /// AllowedCPUs=; `None` = all CPUs (an empty set for systemd).
    AllowedCpus(Option<CpuSet>),
    /// MemoryMax= in bytes (`u64::MAX` = infinity).
    MemoryMax(u64),
    /// TasksMax= (`u64::MAX` = infinity).
    TasksMax(u64),
    /// IOWeight= (`u64::MAX` = not set: systemd's default).
    IoWeight(u64),
    /// IOReadBandwidthMax= on the block device of a path; `None` lifts every read limit.
    IoReadBandwidthMax(Option<(std::path::PathBuf, u64)>),
    /// IOWriteBandwidthMax=, likewise.
    IoWriteBandwidthMax(Option<(std::path::PathBuf, u64)>),
}

/// What systemd reports about a unit. Service properties are 0/`u64::MAX`/empty for a unit
/// that has none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitStatus {
    pub active_state: String,
    pub sub_state: String,
    /// "running", "freezing", "frozen" or "thawing"; empty on a systemd without the freezer.
    pub freezer_state: String,
    pub main_pid: u32,
    /// `u64::MAX` = no quota.
    pub cpu_quota_per_sec_usec: u64,
    /// Raw AllowedCPUs bitmask as systemd reports it (bit n of byte n/8 = CPU n); empty = all.
    pub allowed_cpus: Vec<u8>,
    /// `u64::MAX` = infinity.
    pub memory_max: u64,
    pub active_enter_timestamp_usec: u64,
    pub load_state: String,
}

impl UnitStatus {
    /// Up (or coming up, or reloading): its processes exist.
    pub fn is_running(&self) -> bool {
        matches!(
            self.active_state.as_str(),
            "active" | "reloading" | "activating"
        )
    }

    pub fn is_frozen(&self) -> bool {
        matches!(self.freezer_state.as_str(), "frozen" | "freezing")
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum JobKind {
    Start,
    Stop,
}

impl JobKind {
    fn verb(self) -> &'static str {
        match self {
            JobKind::Start => "start",
            JobKind::Stop => "stop",
        }
    }
}

fn unit_path(unit: &str) -> String {
    encode_path("/org/freedesktop/systemd1/unit", unit)
}

/// systemd's AllowedCPUs bitmask: bit n of byte n/8 is CPU n.
pub(crate) fn cpu_mask(set: &CpuSet) -> Vec<u8> {
    let mut mask = Vec::new();
    for c in set.iter() {
        let byte = (c / 8) as usize;
        if mask.len() <= byte {
            mask.resize(byte + 1, 0);
        }
        mask[byte] |= 1 << (c % 8);
    }
    mask
}

/// An `a(st)` of (path, bytes) pairs as the IO*BandwidthMax properties take it; empty
/// resets the limit on every device.
fn device_limits(l: &Option<(std::path::PathBuf, u64)>) -> anyhow::Result<zbus::OwnedVariant> {
    let list: Vec<(String, u64)> = l
        .iter()
        .map(|(p, b)| (p.display().to_string(), *b))
        .collect();
    zbus::OwnedVariant::try_from(zbus::Variant::from(list)).context("encoding an IO limit")
}

fn is_timeout(e: &zbus::Error) -> bool {
    matches!(e, zbus::Error::InputOutput(io) if io.kind() == std::io::ErrorKind::TimedOut)
}

impl Bus {
    async fn manager(&self) -> zbus::Result<ManagerProxy<'static>> {
        ManagerProxy::builder(self.conn())
            .cache_properties(CacheProperties::No)
            .build()
            .await
    }

    async fn unit_proxy(&self, path: String) -> zbus::Result<UnitProxy<'static>> {
        UnitProxy::builder(self.conn())
            .path(path)
            .cache_properties(CacheProperties::No)
            .build()
            .await
    }

    /// `systemctl daemon-reload`: systemd answers Reload only once the reload (generators
    /// included) is complete, so the reply is the end of it (systemd 252 keeps the reply
    /// as `pending_reload_message` and sends it after reloading, as systemctl relies on).
    pub fn daemon_reload(&self) -> anyhow::Result<()> {
        zbus::block_on(async { within(RELOAD_TIMEOUT, self.manager().await?.reload()).await })
            .context("systemd1 Reload (daemon-reload)")
    }

    pub fn set_unit_properties(
        &self,
        unit: &str,
        runtime: bool,
        props: &[UnitProp],
    ) -> anyhow::Result<()> {
        let mut list: Vec<(String, zbus::OwnedVariant)> = Vec::new();
        for p in props {
            match p {
                UnitProp::CpuQuotaPercent(pct) => list.push((
                    "CPUQuotaPerSecUSec".into(),
                    (u64::from(*pct) * 10_000).into(),
                )),
                UnitProp::AllowedCpus(set) => {
                    let mask = set.as_ref().map(cpu_mask).unwrap_or_default();
                    let v = zbus::OwnedVariant::try_from(zbus::Variant::from(mask))
                        .context("encoding AllowedCPUs")?;
                    list.push(("AllowedCPUs".into(), v));
                }
                UnitProp::MemoryMax(b) => list.push(("MemoryMax".into(), (*b).into())),
                UnitProp::TasksMax(n) => list.push(("TasksMax".into(), (*n).into())),
                UnitProp::IoWeight(w) => list.push(("IOWeight".into(), (*w).into())),
                UnitProp::IoReadBandwidthMax(l) => {
                    list.push(("IOReadBandwidthMax".into(), device_limits(l)?))
                }
                UnitProp::IoWriteBandwidthMax(l) => {
                    list.push(("IOWriteBandwidthMax".into(), device_limits(l)?))
                }
            }
        }
        zbus::block_on(async {
            within(
                CALL_TIMEOUT,
                self.manager()
                    .await?
                    .set_unit_properties(unit.to_string(), runtime, list),
            )
            .await
        })
        .with_context(|| format!("systemd1 SetUnitProperties on {unit}"))
    }

    /// All properties of one unit object, read concurrently.
    async fn status_at(&self, path: String) -> zbus::Result<UnitStatus> {
        let u = self.unit_proxy(path.clone()).await?;
        let s = ServiceProxy::builder(self.conn())
            .path(path)
            .cache_properties(CacheProperties::No)
            .build()
            .await?;
        let ((load, active, sub, freezer, since), (pid, quota, cpus, mem)) = futures_util::join!(
            async {
                futures_util::join!(
                    u.load_state(),
                    u.active_state(),
                    u.sub_state(),
                    u.freezer_state(),
                    u.active_enter_timestamp()
                )
            },
            async {
                futures_util::join!(
                    s.main_pid(),
                    s.cpu_quota_per_sec_u_sec(),
                    s.allowed_cp_us(),
                    s.memory_max()
                )
            }
        );
        Ok(UnitStatus {
            load_state: load?,
            active_state: active?,
            sub_state: sub?,
            // A systemd without the freezer has no FreezerState.
            freezer_state: freezer.unwrap_or_default(),
            active_enter_timestamp_usec: since.unwrap_or(0),
            // Not a service (or no such property): the "not set" values.
            main_pid: pid.unwrap_or(0),
            cpu_quota_per_sec_usec: quota.unwrap_or(u64::MAX),
            allowed_cpus: cpus.unwrap_or_default(),
            memory_max: mem.unwrap_or(u64::MAX),
        })
    }

    async fn status_async(&self, unit: &str) -> anyhow::Result<UnitStatus> {
        // systemd loads a unit on demand when its object path is looked up (as `systemctl
        // show` relies on), so this also works for a unit that was never loaded...
        match within(CALL_TIMEOUT, self.status_at(unit_path(unit))).await {
            Ok(st) => Ok(st),
            Err(e) if is_timeout(&e) => Err(e.into()),
            // ...and if it ever does not, LoadUnit says where the unit is.
            Err(_) => {
                let path = within(CALL_TIMEOUT, self.manager().await?.load_unit(unit.into()))
                    .await
                    .context("systemd1 LoadUnit")?;
                Ok(within(CALL_TIMEOUT, self.status_at(path.to_string())).await?)
            }
        }
    }

    pub fn unit_status(&self, unit: &str) -> anyhow::Result<UnitStatus> {
        zbus::block_on(self.status_async(unit))
            .with_context(|| format!("reading the state of {unit} (systemd1)"))
    }

    /// [`Bus::unit_status`] of many units, several in flight at once; one result per unit.
    pub fn unit_statuses(&self, units: &[String]) -> Vec<anyhow::Result<UnitStatus>> {
        zbus::block_on(self.statuses_async(units))
    }

    async fn statuses_async(&self, units: &[String]) -> Vec<anyhow::Result<UnitStatus>> {
        join_bounded(
            units.iter().map(|u| async move {
                self.status_async(u)
                    .await
                    .with_context(|| format!("reading the state of {u} (systemd1)"))
            }),
            IN_FLIGHT / STATUS_CALLS,
        )
        .await
    }

    /// The cheap part of [`Bus::unit_statuses`], for `list` and for deciding what is left
    /// to do: load/active/sub state of all units in one ListUnitsByPatterns call, plus
    /// FreezerState of the units that are up. Unlike ListUnitsByNames (or reading a unit's
    /// properties), this does not make systemd load units that are not loaded — which costs
    /// milliseconds per unit, on every call, as systemd unloads them again. A unit that is
    /// not loaded is not running: "inactive"/"dead", with an empty `load_state`. The other
    /// fields are left at their "not set" values.
    pub fn unit_states(&self, units: &[String]) -> Vec<anyhow::Result<UnitStatus>> {
        zbus::block_on(self.unit_states_async(units))
    }

    pub(crate) async fn unit_states_async(
        &self,
        units: &[String],
    ) -> Vec<anyhow::Result<UnitStatus>> {
        if units.is_empty() {
            return Vec::new();
        }
        // Names are matched as fnmatch patterns: a name with glob characters goes the slow way.
        let plain = units
            .iter()
            .all(|u| !u.contains(['*', '?', '[', ']', '\\']));
        {
            let listed = async {
                let m = self.manager().await?;
                within(
                    CALL_TIMEOUT,
                    m.list_units_by_patterns(Vec::new(), units.to_vec()),
                )
                .await
            };
            let rows = if plain {
                listed.await
            } else {
                Err(zbus::Error::Unsupported)
            };
            let rows = match rows {
                Ok(rows) => rows,
                // A systemd without ListUnitsByPatterns (< 230), or odd names.
                Err(_) => return self.statuses_async(units).await,
            };
            let mut by_name: HashMap<String, (String, String, String, OwnedObjectPath)> = rows
                .into_iter()
                .map(|(name, _desc, load, active, sub, _following, path, ..)| {
                    (name, (load, active, sub, path))
                })
                .collect();
            let rows: Vec<_> = units.iter().map(|u| by_name.remove(u)).collect();
            join_bounded(
                rows.into_iter().map(|row| async move {
                    let Some((load, active, sub, path)) = row else {
                        return Ok(UnitStatus {
                            active_state: "inactive".into(),
                            sub_state: "dead".into(),
                            // What systemd reports for a unit that is not running.
                            freezer_state: "running".into(),
                            cpu_quota_per_sec_usec: u64::MAX,
                            memory_max: u64::MAX,
                            ..Default::default()
                        });
                    };
                    let up = matches!(
                        active.as_str(),
                        "active" | "reloading" | "activating" | "deactivating"
                    );
                    let freezer_state = if up {
                        within(CALL_TIMEOUT, async {
                            self.unit_proxy(path.to_string())
                                .await?
                                .freezer_state()
                                .await
                        })
                        .await
                        .unwrap_or_default()
                    } else {
                        "running".to_string()
                    };
                    Ok(UnitStatus {
                        load_state: load,
                        active_state: active,
                        sub_state: sub,
                        freezer_state,
                        cpu_quota_per_sec_usec: u64::MAX,
                        memory_max: u64::MAX,
                        ..Default::default()
                    })
                }),
                IN_FLIGHT,
            )
            .await
        }
    }

    /// Queues one job per unit (mode "replace"), at most `jobs` of them under way at a time
    /// (a job is under way from its call until its JobRemoved signal; the next unit's call
    /// goes out as one ends), and waits for each job's own JobRemoved signal; a job that
    /// ends with a result other than "done" is an error naming the unit and the result.
    fn run_jobs(&self, units: &[String], kind: JobKind, jobs: usize) -> Vec<anyhow::Result<()>> {
        if units.is_empty() {
            return Vec::new();
        }
        let verb = kind.verb();
        let started = std::time::Instant::now();
        let r = zbus::block_on(async {
            let m = self.manager().await?;
            // Subscribed before any job is queued, so no job can end unseen. (systemd sends
            // JobRemoved to the client that queued the job even without Subscribe.)
            let removed = within(CALL_TIMEOUT, m.receive_job_removed()).await?;
            let mut removed = std::pin::pin!(removed);
            if kind == JobKind::Stop {
                // A frozen unit's processes cannot react to being stopped: thaw it first.
                self.thaw_frozen(&m, units).await;
            }

            enum Ev {
                Queued(usize, zbus::Result<OwnedObjectPath>),
                Removed(Option<(OwnedObjectPath, String)>),
            }
            let queue = |i: usize| {
                let m = &m;
                let u = &units[i];
                async move {
                    let call = async {
                        match kind {
                            JobKind::Start => m.start_unit(u.clone(), "replace".into()).await,
                            JobKind::Stop => m.stop_unit(u.clone(), "replace".into()).await,
                        }
                    };
                    Ev::Queued(i, within(CALL_TIMEOUT, call).await)
                }
            };
            let window = jobs.max(1);
            let mut calls = FuturesUnordered::new();
            let mut next = 0;
            // Units whose call is out or whose job has not ended yet.
            let mut under_way = 0;
            // Per unit: None = still waiting, Some(Ok(job result)) or Some(Err(call error)).
            let mut outcome: Vec<Option<Result<String, zbus::Error>>> =
                (0..units.len()).map(|_| None).collect();
            let mut waiting: HashMap<OwnedObjectPath, Vec<usize>> = HashMap::new();
            // Jobs that ended before their StartUnit/StopUnit reply was read.
            let mut ended_early: HashMap<OwnedObjectPath, String> = HashMap::new();
            loop {
                while next < units.len() && under_way < window && calls.len() < IN_FLIGHT {
                    calls.push(queue(next));
                    next += 1;
                    under_way += 1;
                }
                if under_way == 0 {
                    break;
                }
                let removed_ev = |sig: Option<zbus_systemd::systemd1::JobRemoved>| {
                    sig.map(|sig| {
                        Ev::Removed(
                            sig.args()
                                .ok()
                                .map(|a| (a.job().clone(), a.result().to_string())),
                        )
                    })
                };
                let ev = if calls.is_empty() {
                    removed_ev(removed.next().await)
                } else {
                    match select(calls.next(), removed.next()).await {
                        Either::Left((ev, _)) => ev,
                        Either::Right((sig, _)) => removed_ev(sig),
                    }
                };
                // The signal stream ended: the connection is gone.
                let Some(ev) = ev else { break };
                match ev {
                    Ev::Queued(i, Ok(job)) => match ended_early.remove(&job) {
                        Some(res) => {
                            outcome[i] = Some(Ok(res));
                            under_way -= 1;
                        }
                        None => waiting.entry(job).or_default().push(i),
                    },
                    Ev::Queued(i, Err(e)) => {
                        outcome[i] = Some(Err(e));
                        under_way -= 1;
                    }
                    Ev::Removed(Some((job, res))) => {
                        if let Some(idx) = waiting.remove(&job) {
                            for i in idx {
                                outcome[i] = Some(Ok(res.clone()));
                                under_way -= 1;
                            }
                        } else if !calls.is_empty() {
                            ended_early.insert(job, res);
                        }
                    }
                    Ev::Removed(None) => {}
                }
            }

            // Turn outcomes into results; for a unit whose job failed, say why if systemd
            // knows (the service's Result) and where to look.
            let results = join_bounded(
                outcome.into_iter().zip(units).map(|(o, u)| async move {
                    match o {
                        None => Err(anyhow!(
                            "{verb} {u}: lost track of its job (the bus connection closed)"
                        )),
                        Some(Err(e)) => Err(anyhow!(e).context(format!(
                            "systemd1 {} {u}",
                            if kind == JobKind::Start {
                                "StartUnit"
                            } else {
                                "StopUnit"
                            }
                        ))),
                        Some(Ok(res)) if res == "done" => Ok(()),
                        Some(Ok(res)) => {
                            let why = self.failure_detail(u, started.elapsed()).await;
                            Err(anyhow!(
                                "{verb} job of {u} ended with result '{res}'{why}; \
                                 see its last log lines: journalctl -u {u} -n 30"
                            ))
                        }
                    }
                }),
                IN_FLIGHT / 3,
            )
            .await;
            Ok::<_, zbus::Error>(results)
        });
        match r {
            Ok(results) => results,
            Err(e) => units
                .iter()
                .map(|u| Err(anyhow!("{verb} {u}: {e}")))
                .collect(),
        }
    }

    /// " (service result: exit-code, status 1)" for a failed service, or "".
    async fn failure_detail(&self, unit: &str, waited: std::time::Duration) -> String {
        let read = async {
            let s = ServiceProxy::builder(self.conn())
                .path(unit_path(unit))
                .cache_properties(CacheProperties::No)
                .build()
                .await?;
            let (r, st, tmo) =
                futures_util::join!(s.result(), s.exec_main_status(), s.timeout_start_u_sec());
            Ok::<_, zbus::Error>((r?, st.unwrap_or(0), tmo.unwrap_or(u64::MAX)))
        };
        let timed_out = |tmo: u64| tmo != u64::MAX && waited.as_micros() as u64 + 2_000_000 >= tmo;
        let booting = |tmo: u64| {
            format!(
                "; the slot did not finish booting within its start timeout (TimeoutStartSec={} s); \
                 with many slots, `slot-os check` shows the host's limits",
                tmo / 1_000_000
            )
        };
        match within(CALL_TIMEOUT, read).await {
            Ok((r, st, tmo)) if r == "timeout" || (r == "exit-code" && timed_out(tmo)) => {
                format!(" (service result: {r}, status {st}{})", booting(tmo))
            }
            Ok((r, _, _)) if r == "success" || r.is_empty() => String::new(),
            Ok((r, st, _)) if r == "exit-code" => format!(" (service result: {r}, status {st})"),
            Ok((r, _, _)) => format!(" (service result: {r})"),
            Err(_) => String::new(),
        }
    }

    /// Thaws those of `units` that are frozen (or freezing), concurrently; errors are left
    /// for the stop job to report.
    async fn thaw_frozen(&self, m: &ManagerProxy<'static>, units: &[String]) {
        join_bounded(
            units.iter().map(|u| async move {
                let state = within(CALL_TIMEOUT, async {
                    self.unit_proxy(unit_path(u)).await?.freezer_state().await
                })
                .await
                .unwrap_or_default();
                if matches!(state.as_str(), "frozen" | "freezing") {
                    let _ = within(CALL_TIMEOUT, m.thaw_unit(u.clone())).await;
                }
            }),
            IN_FLIGHT,
        )
        .await;
    }

    /// StartUnit on every unit, [`default_jobs`] at a time; returns when each job is done
    /// (for a slot with NotifyReady=yes: when it has booted). Starting a running unit is a
    /// no-op.
    pub fn start_units(&self, units: &[String]) -> Vec<anyhow::Result<()>> {
        self.run_jobs(units, JobKind::Start, default_jobs())
    }

    /// [`Bus::start_units`] with at most `jobs` start jobs under way at once.
    pub fn start_units_at_most(&self, units: &[String], jobs: usize) -> Vec<anyhow::Result<()>> {
        self.run_jobs(units, JobKind::Start, jobs)
    }

    /// StopUnit on every unit, [`default_jobs`] at a time (frozen units are thawed first,
    /// so the stop cannot hang); returns when each is stopped. Stopping a stopped unit is
    /// a no-op.
    pub fn stop_units(&self, units: &[String]) -> Vec<anyhow::Result<()>> {
        self.run_jobs(units, JobKind::Stop, default_jobs())
    }

    /// [`Bus::stop_units`] with at most `jobs` stop jobs under way at once.
    pub fn stop_units_at_most(&self, units: &[String], jobs: usize) -> Vec<anyhow::Result<()>> {
        self.run_jobs(units, JobKind::Stop, jobs)
    }

    fn freeze_thaw(
        &self,
        units: &[String],
        freeze: bool,
        at_most: usize,
    ) -> Vec<anyhow::Result<()>> {
        zbus::block_on(async {
            let m = match self.manager().await {
                Ok(m) => m,
                Err(e) => {
                    return units
                        .iter()
                        .map(|_| Err(anyhow!("connecting to systemd1: {e}")))
                        .collect()
                }
            };
            join_bounded(
                units.iter().map(|u| {
                    let m = &m;
                    async move {
                        let call = async {
                            if freeze {
                                m.freeze_unit(u.clone()).await
                            } else {
                                m.thaw_unit(u.clone()).await
                            }
                        };
                        within(CALL_TIMEOUT, call)
                            .await
                            .map_err(|e| freeze_error(u, freeze, e))
                    }
                }),
                at_most.clamp(1, IN_FLIGHT),
            )
            .await
        })
    }

    /// ResetFailedUnit: a unit that ended by a signal we sent is not left "failed".
    pub fn reset_failed(&self, unit: &str) -> anyhow::Result<()> {
        zbus::block_on(async {
            let m = self.manager().await?;
            within(CALL_TIMEOUT, m.reset_failed_unit(unit.to_string())).await
        })
        .with_context(|| format!("systemd1 ResetFailedUnit {unit}"))
    }

    /// FreezeUnit on every unit, [`IN_FLIGHT`] at a time (the cgroup freezer; needs the unified cgroup v2
    /// hierarchy, otherwise a clear error says this host cannot suspend).
    pub fn freeze_units(&self, units: &[String]) -> Vec<anyhow::Result<()>> {
        self.freeze_thaw(units, true, IN_FLIGHT)
    }

    /// ThawUnit on every unit, [`IN_FLIGHT`] at a time.
    pub fn thaw_units(&self, units: &[String]) -> Vec<anyhow::Result<()>> {
        self.freeze_thaw(units, false, IN_FLIGHT)
    }

    /// [`Bus::freeze_units`] with at most `calls` freezes under way at once (FreezeUnit
    /// answers once the unit is frozen).
    pub fn freeze_units_at_most(&self, units: &[String], calls: usize) -> Vec<anyhow::Result<()>> {
        self.freeze_thaw(units, true, calls)
    }

    /// [`Bus::thaw_units`] with at most `calls` thaws under way at once.
    pub fn thaw_units_at_most(&self, units: &[String], calls: usize) -> Vec<anyhow::Result<()>> {
        self.freeze_thaw(units, false, calls)
    }
}

/// The D-Bus error name of a failed call (`org.freedesktop.systemd1.UnitInactive`): from a
/// method error, or from the head of a message that carries it ("NAME: text").
/// zbus turns the well-known `org.freedesktop.DBus.Error.*` replies into `Error::FDO`
/// (systemd's NotSupported from FreezeUnit on a hybrid host arrives so), whose text starts
/// with the name as well.
pub(crate) fn error_name(e: &zbus::Error) -> Option<String> {
    let m = match e {
        zbus::Error::MethodError(name, _, _) => return Some(name.as_str().to_string()),
        zbus::Error::Failure(m) => m.clone(),
        zbus::Error::FDO(f) => f.to_string(),
        _ => return None,
    };
    let head = m.split_once(": ")?.0;
    (head.contains('.') && !head.contains(' ')).then(|| head.to_string())
}

/// systemd's freezer errors (by their D-Bus error names), said in the terms of slots.
fn freeze_error(unit: &str, freeze: bool, e: zbus::Error) -> anyhow::Error {
    let (verb, method) = if freeze {
        ("suspend", "FreezeUnit")
    } else {
        ("resume", "ThawUnit")
    };
    match error_name(&e).as_deref() {
        Some("org.freedesktop.DBus.Error.NotSupported") => anyhow!(
            "this host cannot {verb} slots: freezing needs the unified cgroup v2 hierarchy \
             (the cgroup freezer), which this host's cgroup setup does not offer ({unit})"
        ),
        Some("org.freedesktop.systemd1.UnitInactive" | "org.freedesktop.systemd1.NoSuchUnit") => {
            anyhow!("{unit} is not running; nothing to {verb}")
        }
        Some("org.freedesktop.systemd1.UnitBusy") => anyhow!(
            "{unit} is busy (starting, stopping or already being frozen/thawed); try again: {e}"
        ),
        _ => anyhow!("systemd1 {method} {unit}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn cpu_mask_bits() {
        let s: slot_config::CpuSet = "0,2,9".parse().unwrap();
        assert_eq!(super::cpu_mask(&s), vec![0b101, 0b10]);
    }

    #[test]
    fn freezer_errors_are_said_plainly() {
        let e = super::freeze_error(
            "systemd-nspawn@slot00.service",
            true,
            zbus::Error::Failure(
                "org.freedesktop.DBus.Error.NotSupported: Unit 'systemd-nspawn@slot00.service' does not support freezing.".into(),
            ),
        );
        assert!(e
            .to_string()
            .contains("cannot suspend slots: freezing needs the unified cgroup v2 hierarchy"));
        // As zbus hands it over from a hybrid host (21-hybrid-cgroups).
        let e = super::freeze_error(
            "systemd-nspawn@slot00.service",
            true,
            zbus::Error::FDO(Box::new(zbus::fdo::Error::NotSupported(
                "Unit 'systemd-nspawn@slot00.service' does not support freezing.".into(),
            ))),
        );
        assert!(
            e.to_string()
                .contains("cannot suspend slots: freezing needs the unified cgroup v2 hierarchy"),
            "{e}"
        );
        let e = super::freeze_error(
            "u.service",
            true,
            zbus::Error::Failure("org.freedesktop.systemd1.UnitInactive: Unit is inactive.".into()),
        );
        assert_eq!(
            e.to_string(),
            "u.service is not running; nothing to suspend"
        );
    }
}

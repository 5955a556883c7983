//! The smallest OVSDB client that is sound: RFC 7047 JSON-RPC over ovsdb-server's unix
//! socket, blocking, one request at a time (the helper never needs more).
//!
//! Over 400 lines: a third is tests against a scripted server.
//!
//! Why not the `ovsdb-client` crate (0.0.1, checked against ovsdb-server 3.1.0 of Debian 12):
//! it has no `transact` (only list_dbs, get_schema and monitor); its framing parses each read
//! as exactly one JSON value, so two answers arriving in one read ("trailing characters") or
//! one OVSDB error reply (not a JSON-RPC 2.0 error object: "Unparseable message") end the
//! connection for good; and it needs jsonrpsee 0.24 with a multi-threaded tokio (68 crates).
//! See docs/ovs.md.
//!
//! Messages are read with serde_json's streaming deserializer, which takes concatenated
//! values and values split across reads alike. Requests from the server (`echo`, the
//! inactivity probe) are answered; notifications are skipped.

use std::io::{self, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

/// The database Open vSwitch keeps its configuration in.
pub const DB: &str = "Open_vSwitch";
/// No answer within this time means the server is stuck (it answers in milliseconds).
const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum OvsdbError {
    #[error("cannot connect to ovsdb-server at {path}: {source} (is Open vSwitch installed and running?)")]
    Connect { path: PathBuf, source: io::Error },
    #[error("talking to ovsdb-server: {0}")]
    Io(#[from] io::Error),
    #[error("ovsdb-server sent something that is not JSON: {0}")]
    Json(serde_json::Error),
    #[error("ovsdb-server closed the connection")]
    Closed,
    #[error("ovsdb-server answered {method} with an error: {error}")]
    Rpc { method: String, error: String },
    #[error("OVSDB transaction failed: {0}")]
    Transaction(String),
    #[error("unexpected answer from ovsdb-server: {0}")]
    Protocol(String),
}

type Messages =
    serde_json::StreamDeserializer<'static, serde_json::de::IoRead<BufReader<UnixStream>>, Value>;

pub struct Client {
    writer: UnixStream,
    messages: Messages,
    next_id: u64,
    /// `update` notifications of a monitor that arrived while a call waited for its answer.
    updates: std::collections::VecDeque<Value>,
}

/// Where ovsdb-server listens: `$OVS_RUNDIR/db.sock` as for ovs-vsctl, else
/// `/run/openvswitch/db.sock`.
pub fn default_socket() -> PathBuf {
    std::env::var_os("OVS_RUNDIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/openvswitch"))
        .join("db.sock")
}

impl Client {
    pub fn connect(path: &Path) -> Result<Client, OvsdbError> {
        let stream = UnixStream::connect(path).map_err(|source| OvsdbError::Connect {
            path: path.to_path_buf(),
            source,
        })?;
        Client::from_stream(stream)
    }

    pub fn from_stream(stream: UnixStream) -> Result<Client, OvsdbError> {
        stream.set_read_timeout(Some(TIMEOUT))?;
        stream.set_write_timeout(Some(TIMEOUT))?;
        let reader = BufReader::new(stream.try_clone()?);
        Ok(Client {
            writer: stream,
            messages: serde_json::Deserializer::from_reader(reader).into_iter(),
            next_id: 0,
            updates: Default::default(),
        })
    }

    fn send(&mut self, msg: &Value) -> Result<(), OvsdbError> {
        let mut bytes = serde_json::to_vec(msg).map_err(OvsdbError::Json)?;
        bytes.push(b'\n');
        self.writer.write_all(&bytes)?;
        Ok(())
    }

    fn next_message(&mut self) -> Result<Value, OvsdbError> {
        match self.messages.next() {
            None => Err(OvsdbError::Closed),
            Some(Ok(v)) => Ok(v),
            Some(Err(e)) if e.is_io() => Err(OvsdbError::Io(e.into())),
            Some(Err(e)) if e.is_eof() => Err(OvsdbError::Closed),
            Some(Err(e)) => Err(OvsdbError::Json(e)),
        }
    }

    /// One JSON-RPC call; the `result` of its answer.
    pub fn call(&mut self, method: &str, params: Value) -> Result<Value, OvsdbError> {
        self.next_id += 1;
        let id = self.next_id;
        self.send(&json!({"method": method, "params": params, "id": id}))?;
        loop {
            let mut msg = self.next_message()?;
            if msg.get("method").and_then(Value::as_str) == Some("echo") {
                let params = msg.get_mut("params").map(Value::take).unwrap_or(json!([]));
                let echo_id = msg.get_mut("id").map(Value::take).unwrap_or(Value::Null);
                self.send(&json!({"result": params, "error": null, "id": echo_id}))?;
                continue;
            }
            if msg.get("method").and_then(Value::as_str) == Some("update") {
                self.updates.push_back(msg);
                continue;
            }
            if msg.get("id").and_then(Value::as_u64) != Some(id) {
                continue; // the answer to an echo of ours
            }
            match msg.get("error") {
                None | Some(Value::Null) => {}
                Some(e) => {
                    return Err(OvsdbError::Rpc {
                        method: method.into(),
                        error: describe_error(e),
                    })
                }
            }
            return Ok(msg
                .get_mut("result")
                .map(Value::take)
                .unwrap_or(Value::Null));
        }
    }

    /// Runs `ops` as one transaction on the Open_vSwitch database: all or nothing. Returns
    /// one result per operation; fails with the first operation's (or the commit's) error.
    pub fn transact(&mut self, ops: Vec<Value>) -> Result<Vec<Value>, OvsdbError> {
        let n = ops.len();
        let mut params = vec![json!(DB)];
        params.extend(ops);
        let result = self.call("transact", Value::Array(params))?;
        let Value::Array(results) = result else {
            return Err(OvsdbError::Protocol(format!(
                "transact returned {result} instead of an array"
            )));
        };
        // A failed operation has an "error" member; a failed commit adds one more result.
        if let Some(e) = results.iter().find(|r| r.get("error").is_some()) {
            return Err(OvsdbError::Transaction(describe_error(e)));
        }
        if results.len() < n {
            return Err(OvsdbError::Protocol(format!(
                "{} results for {n} operations",
                results.len()
            )));
        }
        Ok(results)
    }
}

impl Client {
    /// Starts monitor `id` on `columns` of `table` (RFC 7047 `monitor`): returns the rows as
    /// they are now; each later change arrives as an update, see [`Client::next_update`].
    pub fn monitor(
        &mut self,
        id: &str,
        table: &str,
        columns: &[&str],
    ) -> Result<Value, OvsdbError> {
        self.call(
            "monitor",
            json!([DB, id, {table: {"columns": columns, "select": {"initial": true, "modify": true}}}]),
        )
    }

    pub fn monitor_cancel(&mut self, id: &str) -> Result<(), OvsdbError> {
        self.call("monitor_cancel", json!([id])).map(drop)
    }

    /// The table updates of the next change monitor `id` reports, waiting for it at most
    /// `limit` (`Ok(None)`: nothing changed in that time).
    pub fn next_update(&mut self, id: &str, limit: Duration) -> Result<Option<Value>, OvsdbError> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            while let Some(mut m) = self.updates.pop_front() {
                let p = m.get_mut("params").map(Value::take).unwrap_or(Value::Null);
                if p.get(0).and_then(Value::as_str) == Some(id) {
                    return Ok(p.get(1).cloned());
                }
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.writer.set_read_timeout(Some(left))?;
            let msg = self.next_message();
            self.writer.set_read_timeout(Some(TIMEOUT))?;
            match msg {
                Ok(mut m) if m.get("method").and_then(Value::as_str) == Some("echo") => {
                    let params = m.get_mut("params").map(Value::take).unwrap_or(json!([]));
                    let echo_id = m.get_mut("id").map(Value::take).unwrap_or(Value::Null);
                    self.send(&json!({"result": params, "error": null, "id": echo_id}))?;
                }
                Ok(m) if m.get("method").and_then(Value::as_str) == Some("update") => {
                    self.updates.push_back(m)
                }
                Ok(_) => {}
                Err(OvsdbError::Io(e))
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None)
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// "error: details" from an OVSDB error object (or whatever the server sent).
fn describe_error(e: &Value) -> String {
    let obj = e.get("error").unwrap_or(e);
    let kind = obj
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| obj.to_string());
    match e.get("details").and_then(Value::as_str) {
        Some(d) => format!("{kind}: {d}"),
        None => kind,
    }
}

// RFC 7047 data: <uuid> is ["uuid", "..."], a set is one atom or ["set", [...]], a map is
// ["map", [[k, v], ...]].

pub fn uuid(s: &str) -> Value {
    json!(["uuid", s])
}

pub fn named(s: &str) -> Value {
    json!(["named-uuid", s])
}

/// The UUID string of a `["uuid", "..."]` value.
pub fn as_uuid(v: &Value) -> Option<&str> {
    match v.as_array().map(Vec::as_slice) {
        Some([tag, id]) if tag == "uuid" => id.as_str(),
        _ => None,
    }
}

/// The members of a set (a lone atom is a set of one).
pub fn set_members(v: &Value) -> Vec<&Value> {
    match v.as_array().map(Vec::as_slice) {
        Some([tag, members]) if tag == "set" => members
            .as_array()
            .map(|m| m.iter().collect())
            .unwrap_or_default(),
        _ => vec![v],
    }
}

/// A string-to-string map's value for `key`.
pub fn map_get<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    match v.as_array().map(Vec::as_slice) {
        Some([tag, pairs]) if tag == "map" => {
            pairs
                .as_array()?
                .iter()
                .find_map(|p| match p.as_array().map(Vec::as_slice) {
                    Some([k, v]) if k == key => v.as_str(),
                    _ => None,
                })
        }
        _ => None,
    }
}

pub fn string_map(pairs: &[(&str, &str)]) -> Value {
    json!([
        "map",
        pairs.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>()
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// A scripted server on the other end of a socket pair: reads requests, and for each
    /// sends the bytes `answer` makes of it (several messages at once, split ones, ...).
    fn server(
        answer: impl Fn(&Value) -> Vec<u8> + Send + 'static,
    ) -> (Client, std::thread::JoinHandle<Vec<Value>>) {
        let (a, mut b) = UnixStream::pair().unwrap();
        let h = std::thread::spawn(move || {
            let mut seen = Vec::new();
            let reader = b.try_clone().unwrap();
            for v in serde_json::Deserializer::from_reader(reader).into_iter::<Value>() {
                let Ok(v) = v else { break };
                let out = answer(&v);
                seen.push(v);
                if b.write_all(&out).is_err() {
                    break;
                }
            }
            let mut rest = Vec::new();
            let _ = b.read_to_end(&mut rest);
            seen
        });
        (Client::from_stream(a).unwrap(), h)
    }

    #[test]
    fn answers_echo_and_takes_concatenated_and_split_messages() {
        let (mut c, h) = server(|req| {
            let id = req["id"].clone();
            if req.get("method") == Some(&json!("echo")) || req.get("result").is_some() {
                return Vec::new(); // our answer to the server's echo
            }
            // an echo request, a notification, then the answer split in the middle of a
            // string, all in one write
            let mut out = br#"{"method":"echo","params":["x"],"id":"echo"}{"method":"update","params":[null,{}],"id":null}"#.to_vec();
            out.extend(
                format!(r#"{{"id":{id},"error":null,"result":[{{"rows":[{{"name":"slot"#)
                    .as_bytes(),
            );
            out.extend(br#"br1"}]}]}"#);
            out
        });
        let r = c
            .transact(vec![
                json!({"op": "select", "table": "Bridge", "where": []}),
            ])
            .unwrap();
        assert_eq!(r[0]["rows"][0]["name"], "slotbr1");
        let r = c.call("list_dbs", json!([])).unwrap();
        assert_eq!(r[0]["rows"][0]["name"], "slotbr1");
        drop(c);
        let seen = h.join().unwrap();
        // request, echo reply, request, echo reply
        assert_eq!(seen.len(), 4, "{seen:?}");
        assert_eq!(
            seen[1],
            json!({"result": ["x"], "error": null, "id": "echo"})
        );
    }

    #[test]
    fn a_monitor_update_that_came_with_an_answer_is_kept() {
        let (mut c, h) = server(|req| {
            let id = req["id"].clone();
            match req["method"].as_str() {
                Some("monitor") => format!(r#"{{"id":{id},"error":null,"result":{{"T":{{"u":{{"new":{{"n":1}}}}}}}}}}"#).into_bytes(),
                // The change lands before the answer to the transaction that caused it.
                Some("transact") => format!(r#"{{"method":"update","params":["m",{{"T":{{"u":{{"new":{{"n":2}}}}}}}}],"id":null}}{{"id":{id},"error":null,"result":[{{}}]}}"#).into_bytes(),
                _ => format!(r#"{{"id":{id},"error":null,"result":{{}}}}"#).into_bytes(),
            }
        });
        let first = c.monitor("m", "T", &["n"]).unwrap();
        assert_eq!(first["T"]["u"]["new"]["n"], 1);
        c.transact(vec![json!({"op": "comment", "comment": "x"})])
            .unwrap();
        let u = c.next_update("m", Duration::from_secs(5)).unwrap().unwrap();
        assert_eq!(u["T"]["u"]["new"]["n"], 2);
        // Nothing more: the wait ends at its limit.
        assert!(c
            .next_update("m", Duration::from_millis(50))
            .unwrap()
            .is_none());
        drop(c);
        h.join().unwrap();
    }

    #[test]
    fn operation_and_rpc_errors_are_reported() {
        let (mut c, _h) = server(|req| {
            let id = &req["id"];
            if req["params"][0] == "NoSuchDb" {
                format!(r#"{{"id":{id},"error":{{"error":"unknown database","details":"transact request specifies unknown database NoSuchDb"}}}}"#).into_bytes()
            } else {
                format!(r#"{{"id":{id},"error":null,"result":[{{"count":1}},{{"error":"constraint violation","details":"Transaction causes multiple rows in \"Bridge\" table to have identical values"}}]}}"#).into_bytes()
            }
        });
        let e = c
            .transact(vec![json!({"op": "insert", "table": "Bridge", "row": {}})])
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "OVSDB transaction failed: constraint violation: Transaction causes multiple rows in \"Bridge\" table to have identical values"
        );
        let e = c
            .call("transact", json!(["NoSuchDb", {"op": "select"}]))
            .unwrap_err();
        assert!(
            e.to_string().contains("unknown database: transact request"),
            "{e}"
        );
        // The connection survives both.
        assert!(c.transact(vec![json!({})]).is_err());
    }

    #[test]
    fn data_helpers() {
        let v = json!(["set", [["uuid", "a"], ["uuid", "b"]]]);
        let ids: Vec<_> = set_members(&v).into_iter().filter_map(as_uuid).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(set_members(&json!(["uuid", "c"])).len(), 1);
        let m = string_map(&[("slot-os-owner", "slot00")]);
        assert_eq!(map_get(&m, "slot-os-owner"), Some("slot00"));
        assert_eq!(map_get(&m, "other"), None);
    }
}

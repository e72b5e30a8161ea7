//! Human tables (default) or JSON (`-o json`).

use ferrox_control::api::*;
use ferrox_control::validate::human;
use serde::Serialize;

/// Whether to print JSON.
pub struct Out(pub bool);

fn table(head: &[&str], rows: &[Vec<String>]) {
    let mut w: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let s: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = w[i]))
            .collect();
        println!("{}", s.join("  ").trim_end());
    };
    line(head.iter().map(|s| s.to_string()).collect());
    for r in rows {
        line(r.clone());
    }
}

fn json<T: Serialize + ?Sized>(v: &T) {
    match serde_json::to_string_pretty(v) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("ferroxctl: cannot print JSON: {e}"),
    }
}

fn yes(b: bool) -> String {
    if b { "yes" } else { "no" }.into()
}

fn or_dash(s: &str) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s.into()
    }
}

impl Out {
    pub fn nodes(&self, r: &ListNodesResponse) {
        if self.0 {
            return json(r);
        }
        let rows: Vec<Vec<String>> = r
            .nodes
            .iter()
            .map(|n| {
                let labels: Vec<String> =
                    n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let pools: Vec<String> = n
                    .pools
                    .iter()
                    .map(|p| {
                        format!(
                            "{} ({} free of {})",
                            p.name,
                            human(p.free_bytes),
                            human(p.capacity_bytes)
                        )
                    })
                    .collect();
                vec![
                    n.name.clone(),
                    n.state.clone(),
                    yes(n.cordoned),
                    yes(n.leader),
                    labels.join(","),
                    n.listeners.join(","),
                    pools.join(", "),
                    n.id.clone(),
                ]
            })
            .collect();
        table(
            &[
                "NAME",
                "STATE",
                "CORDONED",
                "LEADER",
                "LABELS",
                "LISTENERS",
                "POOLS",
                "ID",
            ],
            &rows,
        );
    }

    pub fn cluster_node(&self, n: &ClusterNode) {
        if self.0 {
            return json(n);
        }
        let labels: Vec<String> = n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("name       {}", n.name);
        println!("id         {}", n.id);
        println!("state      {}", n.state);
        println!("cordoned   {}", yes(n.cordoned));
        println!("leader     {}", yes(n.leader));
        println!("labels     {}", or_dash(&labels.join(",")));
        println!("listeners  {}", or_dash(&n.listeners.join(", ")));
        println!("control    {}", or_dash(&n.control.join(", ")));
        for p in &n.pools {
            println!(
                "pool       {} ({} free of {})",
                p.name,
                human(p.free_bytes),
                human(p.capacity_bytes)
            );
        }
        println!("orphans    {}", or_dash(&n.orphans.join(", ")));
    }

    pub fn node(&self, n: &NodeInfo) {
        if self.0 {
            return json(n);
        }
        println!("node      {}", n.node_name);
        println!("node id   {}", n.node_id);
        println!("version   {}", n.version);
        println!("uptime    {} s", n.uptime_seconds);
        println!("ready     {}", n.ready);
        println!("features  {}", n.features.join(", "));
        println!("listeners {}", n.listeners.join(", "));
        println!();
        let rows: Vec<Vec<String>> = n
            .reactors
            .iter()
            .map(|r| {
                vec![
                    r.id.to_string(),
                    r.core.to_string(),
                    r.busy_turns.to_string(),
                    r.idle_turns.to_string(),
                    r.parks.to_string(),
                    r.stalls.to_string(),
                ]
            })
            .collect();
        table(
            &["REACTOR", "CORE", "BUSY", "IDLE", "PARKS", "STALLS"],
            &rows,
        );
        println!();
        let rows: Vec<Vec<String>> = n
            .bdevs
            .iter()
            .map(|b| {
                vec![
                    b.name.clone(),
                    human(b.size_bytes),
                    b.block_size.to_string(),
                ]
            })
            .collect();
        table(&["BDEV", "SIZE", "BLOCK"], &rows);
    }

    pub fn pools(&self, p: &[Pool]) {
        if self.0 {
            return json(p);
        }
        let rows: Vec<Vec<String>> = p
            .iter()
            .map(|p| {
                vec![
                    p.name.clone(),
                    p.state.clone(),
                    human(p.capacity_bytes),
                    human(p.allocated_bytes),
                    human(p.free_bytes),
                    human(p.cluster_size),
                    p.volumes.to_string(),
                    if p.path.is_empty() {
                        p.bdev.clone()
                    } else {
                        p.path.clone()
                    },
                    p.message.clone(),
                ]
            })
            .collect();
        table(
            &[
                "NAME",
                "STATE",
                "CAPACITY",
                "ALLOCATED",
                "FREE",
                "CLUSTER",
                "VOLUMES",
                "BASE",
                "",
            ],
            &rows,
        );
    }

    pub fn volumes(&self, v: &[Volume]) {
        if self.0 {
            return json(v);
        }
        let rows: Vec<Vec<String>> = v
            .iter()
            .map(|v| {
                let labels: Vec<String> =
                    v.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                vec![
                    v.name.clone(),
                    v.pool.clone(),
                    human(v.size_bytes),
                    human(v.allocated_bytes),
                    if v.thin { "thin" } else { "thick" }.into(),
                    v.state.clone(),
                    or_dash(&v.parent),
                    or_dash(&v.published_nqn),
                    labels.join(","),
                    // Where each replica lives: node:pool.
                    or_dash(
                        &v.replicas
                            .iter()
                            .map(|r| format!("{}:{}", r.node, r.pool))
                            .collect::<Vec<_>>()
                            .join(","),
                    ),
                ]
            })
            .collect();
        table(
            &[
                "NAME",
                "POOL",
                "SIZE",
                "ALLOCATED",
                "TYPE",
                "STATE",
                "PARENT",
                "PUBLISHED",
                "LABELS",
                "REPLICAS",
            ],
            &rows,
        );
    }

    pub fn snapshots(&self, s: &[Snapshot]) {
        if self.0 {
            return json(s);
        }
        let rows: Vec<Vec<String>> = s
            .iter()
            .map(|s| {
                vec![
                    s.name.clone(),
                    s.volume.clone(),
                    s.pool.clone(),
                    human(s.size_bytes),
                    human(s.allocated_bytes),
                    s.created_unix.to_string(),
                    or_dash(&s.group_id),
                    s.state.clone(),
                    s.children.join(","),
                ]
            })
            .collect();
        table(
            &[
                "NAME",
                "VOLUME",
                "POOL",
                "SIZE",
                "ALLOCATED",
                "CREATED",
                "GROUP",
                "STATE",
                "CHILDREN",
            ],
            &rows,
        );
    }

    pub fn subsystems(&self, s: &[Subsystem]) {
        if self.0 {
            return json(s);
        }
        let rows: Vec<Vec<String>> = s
            .iter()
            .map(|s| {
                let ns: Vec<String> = s
                    .namespaces
                    .iter()
                    .map(|n| format!("{}:{}({})", n.nsid, n.bdev, human(n.size_bytes)))
                    .collect();
                let ctrls: Vec<String> = s
                    .controllers
                    .iter()
                    .map(|c| format!("{}:{}", c.cntlid, c.hostnqn))
                    .collect();
                vec![
                    s.nqn.clone(),
                    or_dash(&s.volume),
                    if s.any_host {
                        "any".into()
                    } else {
                        s.hosts.join(",")
                    },
                    or_dash(&ns.join(",")),
                    or_dash(&ctrls.join(",")),
                ]
            })
            .collect();
        table(
            &["NQN", "VOLUME", "HOSTS", "NAMESPACES", "CONTROLLERS"],
            &rows,
        );
    }

    pub fn volume_stats(&self, s: &VolumeStats) {
        if self.0 {
            return json(s);
        }
        println!("volume     {}", s.name);
        println!("allocated  {}", human(s.allocated_bytes));
        if s.nqn.is_empty() {
            println!("not published: no I/O figures");
            return;
        }
        let k = |v: f64| {
            if v >= 1000.0 {
                format!("{:.1}k", v / 1000.0)
            } else {
                format!("{v:.0}")
            }
        };
        println!("nqn        {}", s.nqn);
        println!(
            "window     {:.2} s, {} controller(s) connected",
            s.window_seconds, s.controllers
        );
        println!(
            "read       {} IOPS, {}/s (total {} commands, {})",
            k(s.read_iops),
            human(s.read_bytes_per_second as u64),
            s.read_ops,
            human(s.read_bytes)
        );
        println!(
            "write      {} IOPS, {}/s (total {} commands, {})",
            k(s.write_iops),
            human(s.write_bytes_per_second as u64),
            s.write_ops,
            human(s.write_bytes)
        );
        if s.window_ops == 0 {
            println!("latency    - (no I/O in the window)");
        } else {
            println!(
                "latency    mean {:.1} µs, p50 <{} p90 <{} p99 <{} p99.9 <{} µs ({} commands)",
                s.latency_mean_us,
                s.latency_p50_us,
                s.latency_p90_us,
                s.latency_p99_us,
                s.latency_p999_us,
                s.window_ops
            );
        }
    }

    pub fn published(&self, p: &PublishResponse) {
        if self.0 {
            return json(p);
        }
        println!("published as {} ({})", p.nqn, p.note);
        for c in &p.connect {
            println!("{c}");
        }
    }

    pub fn deleted(&self, what: &str, name: &str, existed: bool) {
        if self.0 {
            return json(&serde_json::json!({ "name": name, "existed": existed }));
        }
        if existed {
            println!("{what} {name} deleted");
        } else {
            println!("{what} {name} did not exist");
        }
    }
}

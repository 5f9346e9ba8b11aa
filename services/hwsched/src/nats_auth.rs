//! `hwsched nats-auth`: the `authorization` block of a nats-server
//! configuration with one user per hwsched role and one per worker, each
//! allowed exactly the subjects its role needs (`SECURITY.md` explains them).
//! Passwords are not in the file: each is an environment reference
//! (`$HWSCHED_NATS_PASSWORD_<USER>`) that nats-server resolves at start.
//!
//! Every connection of a user gets inboxes `_INBOX_<user>.*` (`NatsConfig::
//! inbox_prefix`), so a user may subscribe to its own replies and no one else's.

use std::fmt::Write as _;

use clap::Args;

/// `hwsched nats-auth`.
#[derive(Debug, Args)]
pub struct NatsAuthArgs {
    /// A worker (monitor) to give its own user; repeat per worker.
    #[arg(long = "worker", value_name = "WORKER_ID")]
    workers: Vec<String>,
    /// Also one user `monitor` that every worker may log in as (a Kubernetes
    /// DaemonSet cannot give each node its own secret). Weaker: a worker
    /// logged in as it can act as any other worker (SECURITY.md).
    #[arg(long)]
    shared_monitor: bool,
    /// A site behind a leaf node: the user `leaf-<SITE>` its leaf server logs in
    /// to the hub with, bounding what crosses the link to what the site's monitors
    /// need, with the JetStream API under the hub's domain (`--js-domain`, which
    /// the site's monitors name too); repeat per site. docs/CLUSTERS.md.
    #[arg(long = "leaf-site", value_name = "SITE")]
    leaf_sites: Vec<String>,
}

/// One user's permissions.
struct User {
    name: String,
    publish: Vec<String>,
    subscribe: Vec<String>,
}

/// The environment variable holding `user`'s password.
pub fn password_var(user: &str) -> String {
    format!("HWSCHED_NATS_PASSWORD_{}", user.to_uppercase().replace('-', "_"))
}

fn own_inbox(user: &str) -> String {
    format!("_INBOX_{user}.>")
}

fn v(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// The users of the control plane, producers and operators (subject prefix `p`).
fn roles(p: &str) -> Vec<User> {
    let b = p.replace('.', "_"); // buckets are named after the prefix
                                 // replies to producers' `Hws-Reply-To` inboxes (nats-py and other clients use `_INBOX.`)
    let reply_inboxes = ["_INBOX.>", "_INBOX_producer.>", "_INBOX_operator.>"];
    let control_plane = |name: &str, publish: Vec<String>, subscribe: Vec<String>| User {
        name: name.into(),
        publish: [v(&["$JS.API.>", "$JS.ACK.>"]), vec![format!("{p}.deadletter.{name}")], publish].concat(),
        subscribe: [vec![own_inbox(name)], subscribe].concat(),
    };
    let producer_pub = producer_publish(p);
    vec![
        control_plane(
            "scheduler",
            [
                vec![
                    format!("{p}.assign.*"),
                    format!("{p}.events.>"),
                    format!("{p}.tasks.rejected"),
                    format!("{p}.metrics.hwsched-scheduler"),
                    format!("{p}.workers.*.capabilities"),
                    // stops the losing copy of a hedged task
                    format!("{p}.control.cancel"),
                    // announces quarantines to the learner
                    format!("{p}.health.quarantined"),
                    format!("$KV.{b}_tasks.>"),
                    format!("$KV.{b}_leases.>"),
                ],
                v(&reply_inboxes),
            ]
            .concat(),
            vec![
                format!("{p}.workers.*.heartbeat"),
                format!("{p}.workers.*.register"),
                format!("{p}.control.>"),
                "$SRV.>".into(),
            ],
        ),
        control_plane(
            "learner",
            vec![format!("$KV.{b}_model.>"), format!("{p}.model.>"), format!("{p}.metrics.hwsched-learner")],
            vec![format!("{p}.health.quarantined")],
        ),
        control_plane(
            "alerting",
            vec![format!("$KV.{b}_alerts.>"), format!("$KV.{b}_silences.>"), format!("{p}.alerts.>")],
            vec![format!("{p}.metrics.>"), format!("{p}.workers.*.heartbeat"), format!("{p}.results.>")],
        ),
        control_plane(
            "recorder",
            vec![format!("{p}.workers.*.capabilities")],
            vec![format!("{p}.workers.*.register"), format!("{p}.workers.*.heartbeat")],
        ),
        User {
            name: "producer".into(),
            publish: producer_pub.clone(),
            subscribe: vec![
                format!("{p}.events.>"),
                format!("{p}.results.>"),
                // live output (`submit --wait --logs`)
                format!("{p}.logs.>"),
                own_inbox("producer"),
                // clients without a per-user inbox prefix (nats-py's default)
                "_INBOX.>".into(),
            ],
        },
        User {
            name: "operator".into(),
            // everything a producer may, plus drain, quarantine, capabilities, silences, mutes, the model and streams
            publish: [
                producer_pub,
                vec![
                    format!("{p}.workers.*.drain"),
                    format!("{p}.control.quarantine"),
                    format!("{p}.workers.*.capabilities"),
                    "$JS.API.>".into(),
                    format!("$KV.{b}_silences.>"),
                    format!("$KV.{b}_mutes.>"),
                ],
            ]
            .concat(),
            subscribe: vec![format!("{p}.>"), own_inbox("operator"), "$SRV.>".into()],
        },
    ]
}

/// What a producer may publish (subject prefix `p`): submit, ask and cancel, and the
/// read-only views of the event and result streams and the model that `hwsched tasks ID`
/// and the suite ETA use. An operator may all this and more.
fn producer_publish(p: &str) -> Vec<String> {
    let b = p.replace('.', "_"); // buckets and streams are named after the prefix
    let streams = b.to_uppercase();
    vec![
        format!("{p}.tasks.submit"),
        format!("{p}.control.queue"),
        format!("{p}.control.tasks"),
        format!("{p}.control.explain"),
        format!("{p}.control.cancel"),
        "$JS.API.INFO".into(),
        // `hwsched tasks ID` and the suite ETA: read-only views of streams and the model
        format!("$JS.API.STREAM.INFO.{streams}_EVENTS"),
        format!("$JS.API.STREAM.INFO.{streams}_RESULTS"),
        format!("$JS.API.STREAM.INFO.KV_{b}_model"),
        format!("$JS.API.CONSUMER.CREATE.{streams}_EVENTS"),
        format!("$JS.API.CONSUMER.CREATE.{streams}_RESULTS"),
        format!("$JS.API.CONSUMER.CREATE.{streams}_EVENTS.>"),
        format!("$JS.API.CONSUMER.CREATE.{streams}_RESULTS.>"),
        format!("$JS.API.CONSUMER.MSG.NEXT.{streams}_EVENTS.>"),
        format!("$JS.API.CONSUMER.MSG.NEXT.{streams}_RESULTS.>"),
        format!("$JS.API.CONSUMER.DELETE.{streams}_EVENTS.>"),
        format!("$JS.API.CONSUMER.DELETE.{streams}_RESULTS.>"),
        format!("$JS.API.STREAM.MSG.GET.{streams}_RESULTS"),
        format!("$JS.API.DIRECT.GET.{streams}_RESULTS.>"),
        format!("$JS.API.DIRECT.GET.KV_{b}_model.>"),
        format!("$JS.API.STREAM.MSG.GET.KV_{b}_model"),
        // `submit --bundle`: look a digest up and upload it (chunks, then its metadata);
        // no purge or delete, so a producer cannot remove what others uploaded
        format!("$JS.API.STREAM.INFO.OBJ_{b}_bundles"),
        format!("$JS.API.DIRECT.GET.OBJ_{b}_bundles.>"),
        format!("$O.{b}_bundles.C.>"),
        format!("$O.{b}_bundles.M.>"),
        // `submit --wait`: the muted tests (listed through an ordered consumer), read-only
        format!("$JS.API.STREAM.INFO.KV_{b}_mutes"),
        format!("$JS.API.CONSUMER.CREATE.KV_{b}_mutes"),
        format!("$JS.API.CONSUMER.CREATE.KV_{b}_mutes.>"),
        format!("$JS.API.CONSUMER.DELETE.KV_{b}_mutes.>"),
        format!("$JS.API.DIRECT.GET.KV_{b}_mutes.>"),
        format!("$JS.API.STREAM.MSG.GET.KV_{b}_mutes"),
        format!("$JS.FC.KV_{b}_mutes.>"),
        // `hwsched logs -f`: the live output stream, read-only
        format!("$JS.API.STREAM.INFO.{streams}_LOGS"),
        format!("$JS.API.CONSUMER.CREATE.{streams}_LOGS"),
        format!("$JS.API.CONSUMER.CREATE.{streams}_LOGS.>"),
        format!("$JS.API.CONSUMER.MSG.NEXT.{streams}_LOGS.>"),
        format!("$JS.API.CONSUMER.DELETE.{streams}_LOGS.>"),
    ]
    .into_iter()
    .chain(["logs", "artifacts"].iter().flat_map(|store| object_store_read(&b, store)))
    .collect()
}

/// Reading objects of the Object Store `<b>_<store>` (its info, then its chunks
/// through an ordered consumer, answering its flow control).
fn object_store_read(b: &str, store: &str) -> Vec<String> {
    let stream = format!("OBJ_{b}_{store}");
    vec![
        format!("$JS.API.STREAM.INFO.{stream}"),
        format!("$JS.API.DIRECT.GET.{stream}.>"),
        format!("$JS.API.STREAM.MSG.GET.{stream}"),
        format!("$JS.API.CONSUMER.CREATE.{stream}"),
        format!("$JS.API.CONSUMER.CREATE.{stream}.>"),
        format!("$JS.API.CONSUMER.DELETE.{stream}.>"),
        format!("$JS.FC.{stream}.>"),
    ]
}

/// What a monitor may publish to read bundles (never to write them): look
/// one up, and read its chunks through an ordered consumer.
fn bundle_reader(b: &str) -> Vec<String> {
    let stream = format!("OBJ_{b}_bundles");
    vec![
        format!("$JS.API.DIRECT.GET.{stream}.>"),
        format!("$JS.API.CONSUMER.CREATE.{stream}"),
        format!("$JS.API.CONSUMER.CREATE.{stream}.>"),
        format!("$JS.API.CONSUMER.DELETE.{stream}.>"),
        format!("$JS.FC.{stream}.>"),
    ]
}

/// Writing objects into the Object Store `<b>_<store>`: chunks and metadata,
/// the lookup of an existing version and the purge of its chunks it replaces.
fn object_store_write(b: &str, store: &str) -> Vec<String> {
    let stream = format!("OBJ_{b}_{store}");
    vec![
        format!("$O.{b}_{store}.>"),
        format!("$JS.API.DIRECT.GET.{stream}.>"),
        format!("$JS.API.STREAM.MSG.GET.{stream}"),
        format!("$JS.API.STREAM.PURGE.{stream}"),
    ]
}

/// The user of worker `id` (`*` for the shared `monitor` user): its own
/// telemetry, heartbeats, assignments and drain; events, results and live
/// output (of any task: the scheduler ignores a result whose attempt or
/// worker is not the one it assigned); writing the stored logs and artifacts.
fn monitor(p: &str, name: &str, id: &str) -> User {
    let b = p.replace('.', "_");
    let assign = format!("{}_ASSIGN", b.to_uppercase());
    let consumer = if id == "*" { "*".to_string() } else { format!("monitor-{id}") };
    User {
        name: name.into(),
        publish: [
            vec![
                format!("{p}.metrics.{id}"),
                format!("{p}.workers.{id}.>"),
                format!("{p}.events.>"),
                format!("{p}.results.{id}.>"),
                format!("{p}.deadletter.{id}"),
                "$JS.API.INFO".into(),
                "$JS.API.STREAM.INFO.>".into(),
                format!("$JS.API.CONSUMER.CREATE.{assign}.{consumer}.>"),
                format!("$JS.API.CONSUMER.CREATE.{assign}.{consumer}"),
                format!("$JS.API.CONSUMER.INFO.{assign}.{consumer}"),
                format!("$JS.API.CONSUMER.MSG.NEXT.{assign}.{consumer}"),
                format!("$JS.ACK.{assign}.{consumer}.>"),
                format!("$JS.API.DIRECT.GET.KV_{b}_tasks.>"),
                format!("$JS.API.DIRECT.GET.KV_{b}_attempts.>"),
                format!("$JS.API.DIRECT.GET.KV_{b}_drains.$KV.{b}_drains.{id}"),
                format!("$KV.{b}_attempts.>"),
                format!("$KV.{b}_drains.{id}"),
                format!("{p}.logs.>"),
            ],
            bundle_reader(&b),
            object_store_write(&b, "logs"),
            object_store_write(&b, "artifacts"),
        ]
        .concat(),
        subscribe: vec![format!("{p}.workers.{id}.>"), format!("{p}.control.cancel"), "$SRV.>".into(), own_inbox(name)],
    }
}

/// The user a site's leaf server logs in to the hub with: what any monitor may
/// publish, its JetStream API under the hub's `domain`; it receives the replies
/// to the site's monitors, whose local user is `monitor` (inboxes
/// `_INBOX_monitor.*`), and what the hub sends any worker.
///
/// Two widenings the link needs: a hub propagates a stream's interest over a
/// leaf link only where the leaf may publish the stream's whole subject, so
/// results, metrics and dead letters are allowed under their streams'
/// subjects (`<p>.results.>`, not `<p>.results.*.>`); and a client naming a
/// domain writes KV keys and objects through the API prefix
/// (`$JS.<domain>.API.$KV.<bucket>.<key>`).
fn leaf(p: &str, site: &str, domain: &str) -> User {
    let m = monitor(p, &format!("leaf-{site}"), "*");
    let api = format!("$JS.{domain}.API.");
    let whole = |s: String| match s {
        s if s == format!("{p}.results.*.>") => format!("{p}.results.>"),
        s if s == format!("{p}.metrics.*") => format!("{p}.metrics.>"),
        s if s == format!("{p}.deadletter.*") => format!("{p}.deadletter.>"),
        s => s,
    };
    let publish = m
        .publish
        .into_iter()
        .map(whole)
        .flat_map(|s| match s {
            s if s.starts_with("$JS.API.") => vec![s.replacen("$JS.API.", &api, 1)],
            s if s.starts_with("$KV.") || s.starts_with("$O.") => vec![format!("{api}{s}"), s],
            s => vec![s],
        })
        .collect();
    User { publish, subscribe: [m.subscribe, vec![own_inbox("monitor")]].concat(), ..m }
}

/// The `authorization { ... }` block for subject prefix `prefix`, `workers`,
/// with `shared_monitor` the user `monitor` for any worker, and a user per
/// leaf site (`leaf_sites` and the hub's JetStream domain).
pub fn render(prefix: &str, workers: &[String], shared_monitor: bool, leaf_sites: (&[String], &str)) -> String {
    let mut users = roles(prefix);
    if shared_monitor {
        users.push(monitor(prefix, "monitor", "*"));
    }
    users.extend(workers.iter().map(|w| monitor(prefix, w, w)));
    users.extend(leaf_sites.0.iter().map(|site| leaf(prefix, site, leaf_sites.1)));
    let list = |items: &[String]| items.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(", ");
    let mut out = String::from(
        "# hwsched NATS users (rendered by `hwsched nats-auth`; see SECURITY.md).\n\
         # Passwords come from the environment of nats-server: one $HWSCHED_NATS_PASSWORD_<USER> each.\n\
         authorization {\n  users = [\n",
    );
    for u in &users {
        let _ = writeln!(
            out,
            "    {{\n      user: \"{}\"\n      password: ${}\n      permissions: {{\n        publish: {{ allow: [{}] }}\n        subscribe: {{ allow: [{}] }}\n        allow_responses: true\n      }}\n    }}",
            u.name,
            password_var(&u.name),
            list(&u.publish),
            list(&u.subscribe)
        );
    }
    out.push_str("  ]\n}\n");
    out
}

/// Prints the block (`js_domain`: the hub's JetStream domain, for leaf sites).
pub fn run(prefix: &str, js_domain: Option<&str>, args: &NatsAuthArgs) -> anyhow::Result<()> {
    for site in &args.leaf_sites {
        anyhow::ensure!(
            hwsched_proto::is_valid_id(site),
            "--leaf-site {site:?}: a site is letters, digits, '-' and '_'"
        );
    }
    let domain = match (args.leaf_sites.is_empty(), js_domain) {
        (true, _) => "",
        (false, Some(d)) => d,
        (false, None) => {
            anyhow::bail!("--leaf-site needs --js-domain: the hub's JetStream domain, which the site's monitors name")
        }
    };
    for w in &args.workers {
        anyhow::ensure!(hwsched_proto::is_valid_id(w), "--worker {w:?}: a worker id is letters, digits, '-' and '_'");
        anyhow::ensure!(
            w != "monitor" && roles(prefix).iter().all(|r| &r.name != w),
            "--worker {w:?}: that name is a role's user"
        );
    }
    anyhow::ensure!(
        args.shared_monitor || !args.workers.is_empty() || !args.leaf_sites.is_empty(),
        "no monitor user: give --worker ID per worker, --shared-monitor, or --leaf-site SITE"
    );
    print!("{}", render(prefix, &args.workers, args.shared_monitor, (&args.leaf_sites, domain)));
    Ok(())
}

//! NATS over TLS with client certificates (mutual TLS), on a real
//! nats-server with a CA and certificates made for the test (openssl): the
//! services and the CLI work with `HWSCHED_NATS_TLS_*`, and a client without
//! the CA, or without its own certificate, is refused.

use std::{path::Path, process::Command, time::Duration};

use hwsched_testkit::NatsServer;
use hwsched_tests::{hwsched_bin, Proc};

fn openssl(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("openssl").args(args).current_dir(dir).output()?;
    anyhow::ensure!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}

/// ca.pem, server.pem/server.key (for 127.0.0.1), client.pem/client.key, all signed by the CA.
fn certificates(dir: &Path) -> anyhow::Result<()> {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    openssl(
        dir,
        &[
            &["req", "-x509"][..],
            &ec,
            &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=hwsched test CA"],
        ]
        .concat(),
    )?;
    for (name, ext) in
        [("server", "subjectAltName=IP:127.0.0.1,DNS:localhost"), ("client", "extendedKeyUsage=clientAuth")]
    {
        openssl(
            dir,
            &[
                &["req"][..],
                &ec,
                &["-keyout", &format!("{name}.key"), "-out", &format!("{name}.csr"), "-subj", &format!("/CN={name}")],
            ]
            .concat(),
        )?;
        std::fs::write(dir.join(format!("{name}.ext")), ext)?;
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{name}.pem"),
                "-days",
                "2",
                "-extfile",
                &format!("{name}.ext"),
            ],
        )?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_and_cli_work_over_mutual_tls_and_others_are_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    certificates(dir.path())?;
    let p = |f: &str| dir.path().join(f).display().to_string();
    let conf = dir.path().join("tls.conf");
    std::fs::write(
        &conf,
        format!(
            "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  ca_file: \"{}\"\n  verify: true\n}}\n",
            p("server.pem"),
            p("server.key"),
            p("ca.pem")
        ),
    )?;
    let nats = NatsServer::start_with_config(&conf, &[])?;
    let url = nats.url();
    let tls = vec![
        ("HWSCHED_NATS_TLS_CA", p("ca.pem")),
        ("HWSCHED_NATS_TLS_CERT", p("client.pem")),
        ("HWSCHED_NATS_TLS_KEY", p("client.key")),
    ];
    let sched = Proc::spawn("scheduler", &url, &["scheduler", "--startup-grace-s", "0"], &tls)?;
    sched.wait_for_log("scheduler ready", Duration::from_secs(30)).await?;
    let mon = Proc::spawn("monitor", &url, &["monitor", "--worker-id", "w-tls", "--interval-ms", "200"], &tls)?;
    mon.wait_for_log("monitor ready", Duration::from_secs(30)).await?;

    let cli = |envs: Vec<(&'static str, String)>, args: &'static [&'static str]| {
        let url = url.clone();
        async move {
            let out = hwsched_tests::cli_with_async(&url, args, &envs).await?;
            anyhow::Ok((Some(out.code), out.stdout + &out.stderr))
        }
    };
    let (code, out) = cli(tls.clone(), &["submit", "--id", "over-tls", "--wait", "--", "true"]).await?;
    assert_eq!(code, Some(0), "{out}\nscheduler:\n{}\nmonitor:\n{}", sched.log(), mon.log());
    assert!(out.contains("finished succeeded on w-tls"), "{out}");

    // no TLS at all, the CA but no client certificate: refused (exit 3)
    let (code, out) = cli(vec![], &["queue"]).await?;
    assert_eq!(code, Some(3), "{out}");
    let (code, out) = cli(vec![tls[0].clone()], &["queue"]).await?;
    assert_eq!(code, Some(3), "{out}");
    assert!(out.contains("cannot connect to NATS"), "{out}");
    // a server certificate from another CA is not trusted
    let other = tempfile::tempdir()?;
    certificates(other.path())?;
    let mut wrong_ca = tls.clone();
    wrong_ca[0].1 = other.path().join("ca.pem").display().to_string();
    let (code, out) = cli(wrong_ca, &["queue"]).await?;
    assert_eq!(code, Some(3), "{out}");
    Ok(())
}

#[test]
fn clickhouse_over_https_is_trusted_through_ssl_cert_file() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    certificates(dir.path())?;
    let ch =
        hwsched_tests::ClickHouse::start_with_https(&dir.path().join("server.pem"), &dir.path().join("server.key"))?;
    let https = ch.https_url().expect("https");
    let migrate = |ca: Option<&Path>| -> anyhow::Result<(Option<i32>, String)> {
        let mut cmd = Command::new(hwsched_bin()?);
        cmd.args(["--clickhouse-url", &https, "--clickhouse-database", "over_tls", "schema", "migrate"])
            .env_remove("SSL_CERT_FILE");
        if let Some(ca) = ca {
            cmd.env("SSL_CERT_FILE", ca);
        }
        let out = cmd.output()?;
        Ok((
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        ))
    };
    // the test CA is not in the system's store: refused, with what to do
    let (code, out) = migrate(None)?;
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("UnknownIssuer") && out.contains("SSL_CERT_FILE"), "{out}");
    // trusted through SSL_CERT_FILE: the migrations run over HTTPS
    let (code, out) = migrate(Some(&dir.path().join("ca.pem")))?;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("server 18.16") && out.contains("applied now"), "{out}");
    Ok(())
}

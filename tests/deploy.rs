//! The example deployment in `deploy/`: the systemd units name options the binary has and read
//! the example config, and their health check asks the address that config serves /healthz on.

use std::process::Command;

const ZMS: &str = env!("CARGO_BIN_EXE_zms");
const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy");

/// The values of `key=` lines of a unit file.
fn unit_values(unit: &str, key: &str) -> Vec<String> {
    let prefix = format!("{key}=");
    unit.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(str::to_string)
        .collect()
}

fn help(args: &[&str]) -> String {
    let out = Command::new(ZMS).args(args).arg("--help").output().unwrap();
    assert!(out.status.success(), "zms {args:?} --help");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_units_name_options_that_exist_and_check_health_where_the_config_serves_it() {
    let config: toml::Table = std::fs::read_to_string(format!("{DEPLOY}/zms.toml"))
        .unwrap()
        .parse()
        .unwrap();
    for role in ["message-server", "group-server"] {
        let unit = std::fs::read_to_string(format!("{DEPLOY}/zms-{role}.service")).unwrap();
        let start = unit_values(&unit, "ExecStart");
        assert_eq!(
            start,
            [format!(
                "/usr/local/bin/zms --config /etc/zms/zms.toml {role}"
            )],
            "{role}: runs the server with the example config's path"
        );
        let usage = help(&[role]);
        for env in unit_values(&unit, "Environment") {
            let name = env.split('=').next().unwrap();
            assert!(
                usage.contains(&format!("[env: {name}=")),
                "{role}: Environment={env} names no variable of `zms {role}`"
            );
        }
        // The health check asks the address the config serves metrics on.
        let metrics = config[role]["metrics"].as_str().expect("a metrics key");
        let post = unit_values(&unit, "ExecStartPost");
        assert_eq!(post.len(), 1, "{role}: one health check");
        assert!(
            post[0].contains(&format!("http://{metrics}/healthz")),
            "{role}: {} does not ask {metrics}",
            post[0]
        );
        assert!(usage.contains("--metrics"), "{role} has --metrics");
        assert!(!unit_values(&unit, "TimeoutStartSec").is_empty());
    }
}

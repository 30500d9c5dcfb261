use super::*;

fn parse_with(file: &str, args: &[&str]) -> Result<Cli, Failure> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("zms.toml");
    std::fs::write(&path, file).unwrap();
    let mut line: Vec<OsString> = vec!["zms".into(), "--config".into(), path.into()];
    line.extend(args.iter().map(OsString::from));
    parse(line)
}

fn file_error(result: Result<Cli, Failure>) -> String {
    match result {
        Err(Failure::File(err)) => err,
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[test]
fn every_server_flag_has_a_config_key_and_a_variable() {
    let cmd = command();
    let example = example();
    for section in SERVER_SECTIONS {
        let sub = cmd.find_subcommand(section).unwrap();
        let args: Vec<&Arg> = server_args(sub).collect();
        assert!(args.len() > 5, "{section} has its flags");
        for arg in args {
            let long = arg.get_long().unwrap();
            assert!(
                example.contains(&format!("\n{long} = "))
                    || example.contains(&format!("\n# {long} = ")),
                "the example has [{section}] {long}"
            );
            let env = arg
                .get_env()
                .expect("a variable")
                .to_string_lossy()
                .into_owned();
            assert!(env.starts_with("ZMS_"), "{long}: {env}");
            // The key is taken: a config naming it is no error.
            let value = match arg.get_action() {
                ArgAction::SetTrue => "false".to_string(),
                ArgAction::Append => "[]".to_string(),
                _ => "\"127.0.0.1:0\"".to_string(),
            };
            let file = format!("[{section}]\n{long} = {value}\n");
            if let Err(Failure::File(err)) = parse_with(&file, &["list"]) {
                assert!(!err.contains("unknown key"), "{err}");
            }
        }
    }
}

#[test]
fn the_example_parses_back_to_the_defaults() {
    let example = example();
    for section in SERVER_SECTIONS {
        let from_file = parse_with(&example, &[section]).expect("the example parses");
        let plain = parse(vec!["zms".into(), section.into()]).unwrap();
        assert_eq!(
            format!("{:?}", from_file.command),
            format!("{:?}", plain.command),
            "[{section}]"
        );
        assert_eq!(from_file.log, plain.log);
        assert_eq!(from_file.log_format, plain.log_format);
    }
}

#[test]
fn the_file_gives_what_no_flag_gives() {
    let file = "[log]\nfilter = \"debug\"\nformat = \"json\"\n\n[message-server]\nmax-groups = 7\n\
                operator = [\"a\", \"b\"]\nsecure = true\n\n[group-server]\nmax-members = 3\n";
    let cli = parse_with(file, &["message-server"]).unwrap();
    let shown = format!("{:?}", cli.command);
    assert!(shown.contains("max_groups: 7"), "{shown}");
    assert!(shown.contains(r#"operators: ["a", "b"]"#), "{shown}");
    assert!(shown.contains("secure: true"), "{shown}");
    assert_eq!(cli.log.as_deref(), Some("debug"));
    assert_eq!(cli.log_format, crate::cli::LogFormat::Json);

    let cli = parse_with(
        file,
        &["--log", "warn", "message-server", "--max-groups", "9"],
    )
    .unwrap();
    assert!(
        format!("{:?}", cli.command).contains("max_groups: 9"),
        "the flag wins"
    );
    assert_eq!(cli.log.as_deref(), Some("warn"), "the flag wins");

    let cli = parse_with(file, &["group-server"]).unwrap();
    assert!(format!("{:?}", cli.command).contains("max_members: 3"));
}

#[test]
fn unknown_keys_and_bad_values_are_errors_naming_the_key_and_the_file() {
    let err = file_error(parse_with(
        "[group-server]\nmax-member = 3\n",
        &["group-server"],
    ));
    assert!(
        err.starts_with("config ") && err.contains("zms.toml"),
        "{err}"
    );
    assert!(
        err.contains("unknown key 'max-member' in [group-server]"),
        "{err}"
    );

    // Checked even when another server runs: a mistake shows before it matters.
    let err = file_error(parse_with(
        "[group-server]\nmax-members = \"many\"\n",
        &["message-server"],
    ));
    assert!(
        err.contains("[group-server] max-members: invalid value 'many' for '--max-members"),
        "{err}"
    );

    let err = file_error(parse_with(
        "[group-server]\nfsync = \"yes\"\n",
        &["group-server"],
    ));
    assert!(
        err.contains("[group-server] fsync: expected true or false"),
        "{err}"
    );

    let err = file_error(parse_with("[log]\nfilter = \"verbose\"\n", &["list"]));
    assert!(
        err.contains("[log] filter: invalid value 'verbose' for '--log"),
        "{err}"
    );

    let err = file_error(parse_with("[log]\nformat = \"xml\"\n", &["list"]));
    assert!(err.contains("[log] format: invalid value 'xml'"), "{err}");

    let err = file_error(parse_with("[server]\nbind = \"x\"\n", &["list"]));
    assert!(err.contains("unknown section [server]"), "{err}");

    let err = file_error(parse_with("[message-server\n", &["list"]));
    assert!(err.contains("zms.toml"), "{err}");

    let missing = parse(vec![
        "zms".into(),
        "--config".into(),
        "/nonexistent/zms.toml".into(),
        "list".into(),
    ]);
    assert!(file_error(missing).contains("/nonexistent/zms.toml"));
}

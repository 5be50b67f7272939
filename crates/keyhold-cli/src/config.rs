//! `keyhold.toml`: every flag of `keyhold serve` in a file. Precedence is flags, then the
//! environment (`KEYHOLD_*`), then the file, then the defaults. The file's settings are the
//! flags' long names without the dashes (`listen = "0.0.0.0:7443"`, `tls-name = ["a", "b"]`,
//! `insecure-http = true`); they become command-line arguments for the flags the command line
//! and the environment leave unset, so clap validates them exactly as it validates flags.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::CommandFactory;

/// The file read when neither `--config` nor `KEYHOLD_CONFIG` names one (if it exists).
pub const DEFAULT_FILE: &str = "keyhold.toml";

/// The config file `serve` reads: `--config FILE`/`--config=FILE` in `args`, else
/// `KEYHOLD_CONFIG`, else `./keyhold.toml` when it exists.
fn config_path(args: &[OsString]) -> Option<PathBuf> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let a = a.to_string_lossy();
        if a == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(v) = a.strip_prefix("--config=") {
            return Some(PathBuf::from(v));
        }
    }
    if let Some(v) = std::env::var_os("KEYHOLD_CONFIG") {
        return Some(PathBuf::from(v));
    }
    Path::new(DEFAULT_FILE)
        .exists()
        .then(|| PathBuf::from(DEFAULT_FILE))
}

/// True when `args` set flag `--long` (as `--long`, `--long=...`).
fn given(args: &[OsString], long: &str) -> bool {
    let flag = format!("--{long}");
    let eq = format!("--{long}=");
    args.iter().any(|a| {
        let a = a.to_string_lossy();
        a == flag || a.starts_with(&eq)
    })
}

/// The arguments of `keyhold serve` settings from `file` (TOML) that `args` and the
/// environment do not set.
pub fn file_args(file: &Path, args: &[OsString]) -> Result<Vec<OsString>, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e| format!("{}: not TOML: {e}", file.display()))?;
    let cli = crate::Cli::command();
    let serve = cli
        .find_subcommand("serve")
        .ok_or("the serve command is missing")?;
    let mut out = Vec::new();
    for (name, value) in &table {
        // A setting is a flag's long name or one of its visible aliases (`regions`).
        let Some(arg) = serve.get_arguments().find(|a| {
            a.get_long() == Some(name.as_str())
                || a.get_visible_aliases()
                    .is_some_and(|v| v.contains(&name.as_str()))
        }) else {
            return Err(format!(
                "{}: {name:?} is not a setting of keyhold serve (the settings are its flags' long \
                 names, e.g. listen, data-dir, max-inflight)",
                file.display()
            ));
        };
        if name == "config" {
            return Err(format!(
                "{}: a config file cannot name another",
                file.display()
            ));
        }
        let from_env = arg.get_env().is_some_and(|e| std::env::var_os(e).is_some());
        let long = arg.get_long().unwrap_or(name.as_str());
        let aliases = arg.get_visible_aliases().unwrap_or_default();
        if given(args, long) || aliases.iter().any(|a| given(args, a)) || from_env {
            continue;
        }
        let flag = OsString::from(format!("--{long}"));
        let scalar = |v: &toml::Value| -> Result<String, String> {
            match v {
                toml::Value::String(s) => Ok(s.clone()),
                toml::Value::Integer(i) => Ok(i.to_string()),
                toml::Value::Float(f) => Ok(f.to_string()),
                other => Err(format!(
                    "{}: {name} = {other}: give a string, a number, true/false or a list",
                    file.display()
                )),
            }
        };
        match value {
            toml::Value::Boolean(true) => out.push(flag),
            toml::Value::Boolean(false) => {}
            toml::Value::Array(items) => {
                for v in items {
                    out.push(flag.clone());
                    out.push(scalar(v)?.into());
                }
            }
            v => {
                out.push(flag);
                out.push(scalar(v)?.into());
            }
        }
    }
    Ok(out)
}

/// `argv` with the settings of the config file `keyhold serve` reads inserted after `serve`
/// (other commands are left as they are).
pub fn with_file_settings(argv: Vec<OsString>) -> Result<Vec<OsString>, String> {
    // Only when `serve` is the command (the first argument).
    if argv.get(1).is_none_or(|a| a != "serve") {
        return Ok(argv);
    }
    let rest = argv.get(2..).unwrap_or_default();
    let Some(file) = config_path(rest) else {
        return Ok(argv);
    };
    let extra = file_args(&file, rest)?;
    let mut out: Vec<OsString> = argv.get(..2).unwrap_or_default().to_vec();
    out.extend(extra);
    out.extend_from_slice(rest);
    Ok(out)
}

/// True for settings whose values are never printed.
fn secret(name: &str) -> bool {
    ["secret", "passphrase", "pin", "password"]
        .iter()
        .any(|s| name.contains(s))
}

/// `keyhold config check`: checks a config file as `serve` would read it (with the
/// environment and flags given after `--`), and prints the effective settings with where each
/// came from; secrets are redacted.
pub fn check(file: &Path, flags: &[String]) -> Result<(), String> {
    let mut argv: Vec<OsString> = vec!["keyhold".into(), "serve".into()];
    argv.extend(flags.iter().map(OsString::from));
    let extra = file_args(file, argv.get(2..).unwrap_or_default())?;
    let from_file: Vec<String> = extra
        .iter()
        .filter_map(|a| a.to_str()?.strip_prefix("--").map(str::to_string))
        .collect();
    let mut full: Vec<OsString> = argv.get(..2).unwrap_or_default().to_vec();
    full.extend(extra);
    full.extend_from_slice(argv.get(2..).unwrap_or_default());
    let matches = crate::Cli::command()
        .try_get_matches_from(full)
        .map_err(|e| format!("{}: {e}", file.display()))?;
    let Some(("serve", serve)) = matches.subcommand() else {
        return Err("not a serve configuration".into());
    };
    println!("{}: valid", file.display());
    let cli = crate::Cli::command();
    let cmd = cli
        .find_subcommand("serve")
        .ok_or("the serve command is missing")?;
    for arg in cmd.get_arguments() {
        let id = arg.get_id().as_str();
        let Some(long) = arg.get_long() else { continue };
        let Some(values) = serve.get_raw(id) else {
            continue;
        };
        let shown: Vec<String> = values.map(|v| v.to_string_lossy().into_owned()).collect();
        let source = match serve.value_source(id) {
            Some(clap::parser::ValueSource::EnvVariable) => "environment",
            Some(clap::parser::ValueSource::DefaultValue) => "default",
            _ if from_file.iter().any(|f| f == long) => "file",
            _ => "flag",
        };
        let value = if secret(long) {
            "(redacted)".to_string()
        } else {
            shown.join(", ")
        };
        println!("{long} = {value}    # {source}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn file_settings_fill_what_flags_leave_unset() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("k.toml");
        std::fs::write(
            &f,
            "listen = \"127.0.0.1:9999\"\nmax-inflight = 7\ntls-name = [\"a\", \"b\"]\n\
             insecure-http = true\ndev = false\n",
        )
        .unwrap();
        let args = file_args(&f, &os(&["--max-inflight", "9"])).unwrap();
        let args: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(args.windows(2).any(|w| w == ["--listen", "127.0.0.1:9999"]));
        assert!(!args.iter().any(|a| a == "--max-inflight"), "the flag wins");
        assert_eq!(args.iter().filter(|a| *a == "--tls-name").count(), 2);
        assert!(args.iter().any(|a| a == "--insecure-http"));
        assert!(!args.iter().any(|a| a == "--dev"));
    }

    #[test]
    fn a_list_of_regions_is_one_setting_under_either_name() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keyhold.toml");
        std::fs::write(&file, "regions = \"us-east-1,eu-west-1\"\n").unwrap();
        assert_eq!(
            file_args(&file, &[]).unwrap(),
            os(&["--region", "us-east-1,eu-west-1"])
        );
        // A flag given under the other name wins over the file.
        assert!(file_args(&file, &os(&["--region", "ap-south-1"]))
            .unwrap()
            .is_empty());
        std::fs::write(&file, "region = [\"us-east-1\", \"eu-west-1\"]\n").unwrap();
        assert_eq!(
            file_args(&file, &os(&[])).unwrap(),
            os(&["--region", "us-east-1", "--region", "eu-west-1"])
        );
        assert!(file_args(&file, &os(&["--regions=eu-west-1"]))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn unknown_settings_and_bad_values_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("k.toml");
        std::fs::write(&f, "lisen = \"x\"\n").unwrap();
        assert!(file_args(&f, &[]).unwrap_err().contains("lisen"));
        std::fs::write(&f, "listen = { a = 1 }\n").unwrap();
        assert!(file_args(&f, &[]).is_err());
        std::fs::write(&f, "not toml [").unwrap();
        assert!(file_args(&f, &[]).unwrap_err().contains("not TOML"));
    }
}

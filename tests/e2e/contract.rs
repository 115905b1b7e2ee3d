//! docs/contract.md stays true to the binary: every subcommand, every option of every
//! subcommand and every bench figure the binary knows is written in the contract.

use std::path::PathBuf;

use crate::support::sockbox;

fn contract() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/contract.md");
    std::fs::read_to_string(&path).expect("read docs/contract.md")
}

/// The long options (`--name`) a `--help` text lists, without clap's own.
fn long_options(help: &str) -> Vec<String> {
    help.lines()
        .filter_map(|line| {
            let line = line.trim_start();
            let line = line.strip_prefix("-o, ").unwrap_or(line);
            let option = line.strip_prefix("--")?;
            let name: String = option
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            (!matches!(name.as_str(), "help" | "version")).then(|| format!("--{name}"))
        })
        .collect()
}

/// The subcommands `sockbox --help` lists.
fn subcommands() -> Vec<String> {
    let (code, help, _) = sockbox(&["--help"]);
    assert_eq!(code, Some(0));
    help.lines()
        .skip_while(|line| !line.starts_with("Commands:"))
        .skip(1)
        .take_while(|line| line.starts_with("  "))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_string)
        .collect()
}

#[test]
fn every_subcommand_and_option_is_in_the_contract() {
    let contract = contract();
    let commands = subcommands();
    assert!(commands.len() >= 9, "{commands:?}");
    // Options of every command (`--log-format`) are in the contract once, not per command.
    let (_, top, _) = sockbox(&["--help"]);
    let global = long_options(&top);
    for option in &global {
        assert!(
            contract.contains(&format!("`{option} ")),
            "contract lacks {option}"
        );
    }
    for command in &commands {
        let synopsis = format!("sockbox {command} ");
        assert!(contract.contains(&synopsis), "contract lacks `{synopsis}`");
        let mut args = vec![command.as_str()];
        if command == "policy" {
            args.push("explain");
        }
        args.push("--help");
        let (code, help, _) = sockbox(&args);
        assert_eq!(code, Some(0), "sockbox {args:?}");
        for option in long_options(&help)
            .into_iter()
            .filter(|o| !global.contains(o))
        {
            // Each option is named in the contract's synopsis of its own command.
            let section = contract
                .split(&synopsis)
                .nth(1)
                .and_then(|rest| rest.split("\nsockbox ").next())
                .unwrap_or_default();
            assert!(
                section.contains(&option),
                "the contract's `sockbox {command}` lacks {option}"
            );
        }
    }
}

#[test]
fn every_bench_figure_is_in_the_contract() {
    let contract = contract();
    let (code, help, _) = sockbox(&["bench", "--help"]);
    assert_eq!(code, Some(0));
    let figures = help
        .split("Figures:")
        .nth(1)
        .expect("bench --help lists its figures");
    // The paragraph after "Figures:", up to the blank line.
    let paragraph = figures.split("\n\n").next().unwrap_or_default();
    let names: Vec<&str> = paragraph
        .split(|c: char| c.is_whitespace() || c == ',' || c == '.')
        .filter(|word| {
            word.contains('-')
                && !word.starts_with('-')
                && word
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
        .collect();
    assert!(
        names.contains(&"tcp-rr-64") && names.contains(&"open-10k-s"),
        "{names:?}"
    );
    for name in names {
        assert!(
            contract.contains(name),
            "the contract lacks bench figure {name}"
        );
    }
}

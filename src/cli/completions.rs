//! Shell completion scripts for `secretsync completions SHELL` and the
//! packaging (`examples/gen_docs.rs` writes the files the .deb installs).
//!
//! The script is generated from [`crate::cli::Cli`], so every subcommand and
//! flag clap knows about is completed without a list kept by hand.

use std::io::{self, Write};

use clap::CommandFactory;
pub use clap_complete::Shell;

/// Name the completion scripts complete (the installed binary).
pub const BIN_NAME: &str = "secretsync";

/// Writes the completion script for `shell` to `out`.
///
/// The script is built in memory first: clap_complete panics when its writer
/// fails, and `secretsync completions bash | head` must end with an error
/// (broken pipe), not a panic.
pub fn write_completions(shell: Shell, out: &mut dyn Write) -> io::Result<()> {
    let mut cmd = crate::cli::Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, BIN_NAME, &mut script);
    out.write_all(&script)?;
    out.flush()
}

/// File name a shell's completion loader looks for, e.g. `_secretsync` for
/// zsh, `secretsync.fish` for fish.
pub fn file_name(shell: Shell) -> String {
    use clap_complete::Generator;
    shell.file_name(BIN_NAME)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(shell: Shell) -> String {
        let mut out = Vec::new();
        write_completions(shell, &mut out).expect("written");
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn every_shell_completes_the_subcommands_and_flags() {
        for shell in [
            Shell::Bash,
            Shell::Zsh,
            Shell::Fish,
            Shell::Elvish,
            Shell::PowerShell,
        ] {
            let text = script(shell);
            for word in [
                "secretsync",
                "check",
                "plan",
                "sync",
                "offline",
                "config",
                "get",
                "reveal",
                "any",
            ] {
                assert!(text.contains(word), "{shell}: no {word:?} in the script");
            }
        }
    }

    #[test]
    fn bash_script_registers_a_completion_function_for_the_binary() {
        let text = script(Shell::Bash);
        assert!(
            text.contains("complete -F _secretsync") && text.contains("secretsync"),
            "bash script does not register _secretsync:\n{text}"
        );
    }

    #[test]
    fn file_names_match_what_each_shell_loads() {
        assert_eq!(file_name(Shell::Bash), "secretsync.bash");
        assert_eq!(file_name(Shell::Zsh), "_secretsync");
        assert_eq!(file_name(Shell::Fish), "secretsync.fish");
    }

    /// A writer that fails like a closed pipe.
    struct Closed;
    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from(io::ErrorKind::BrokenPipe))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_failing_writer_is_an_error_not_a_panic() {
        let err = write_completions(Shell::Bash, &mut Closed).expect_err("must fail");
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }
}

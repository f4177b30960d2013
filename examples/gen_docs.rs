//! Writes the generated documentation the Debian package ships:
//!
//! ```text
//! cargo run --example gen_docs -- OUT_DIR
//!   OUT_DIR/completions/secretsync.bash   bash-completion
//!   OUT_DIR/completions/_secretsync       zsh
//!   OUT_DIR/completions/secretsync.fish   fish
//!   OUT_DIR/man/secretsync.1              the main page (+ EXIT STATUS, FILES, ...)
//!   OUT_DIR/man/secretsync-<cmd>.1        one page per subcommand
//! ```
//!
//! Everything comes from `secretsync::cli::Cli`, so new commands and flags
//! appear here without edits. An example rather than a binary so that
//! clap_mangen stays a dev-dependency and out of the shipped binary.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::CommandFactory;
use secretsync::cli::completions::{self, Shell};

/// Shells whose completion files the package installs.
const SHELLS: [Shell; 3] = [Shell::Bash, Shell::Zsh, Shell::Fish];

/// Sections clap knows nothing about, appended to secretsync(1) in roff.
const EXTRA_SECTIONS: &str = r#".SH "EXIT STATUS"
.TP
\fB0\fR
Success; nothing wrong.
.TP
\fB1\fR
An operation or sync failed: a secret in ERROR or CONFLICT, a source file that does not parse, a tripped deletion guard, \fBremove\fR refused.
.TP
\fB2\fR
Usage error, unknown sync name, or invalid configuration (also a \fBreload\fR rejected for an invalid configuration). The systemd unit does not restart the agent after this status.
.TP
\fB3\fR
The agent's control socket or AWS cannot be reached.
.TP
\fB4\fR
\fBplan \-\-detailed\-exitcode\fR: changes are pending.
.SH ENVIRONMENT
.TP
\fBSECRETSYNC_CONFIG\fR
Configuration file used when \fB\-\-config\fR is not given.
.TP
\fBSECRETSYNC_SOCKET\fR
Control socket used when \fB\-\-socket\fR is not given.
.TP
\fBAWS_PROFILE\fR, \fBAWS_CONFIG_FILE\fR, \fBAWS_SHARED_CREDENTIALS_FILE\fR, \fBAWS_REGION\fR, \fBAWS_ENDPOINT_URL\fR
Read by the AWS SDK's default credential and region chain.
.TP
\fBRUST_LOG\fR
Log filter (for example \fBdebug\fR or \fBsecretsync=debug\fR); values are never logged at any level.
.SH FILES
.TP
\fI/etc/secretsync/agent.yaml\fR
Agent configuration; every key is documented in \fI/usr/share/doc/secretsync/agent.example.yaml\fR.
.TP
\fI/run/secretsync/control.sock\fR
Control socket of the running agent (status, resync, reload).
.TP
\fI/var/lib/secretsync\fR
Agent state: which syncs finished their initial sync, which tags the agent set.
.TP
\fI/usr/lib/systemd/system/secretsync.service\fR
The systemd unit; site changes go into a drop-in (\fBsystemctl edit secretsync\fR).
.SH "SEE ALSO"
\fBsystemctl\fR(1), \fBjournalctl\fR(1), \fBsystemd.exec\fR(5),
\fI/usr/share/doc/secretsync/install.md\fR
"#;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(out), None) = (args.next(), args.next()) else {
        eprintln!("usage: gen_docs OUT_DIR");
        return ExitCode::from(2);
    };
    match generate(Path::new(&out)) {
        Ok(files) => {
            for f in files {
                println!("{}", f.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn generate(out: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut written = Vec::new();

    let comp_dir = out.join("completions");
    fs::create_dir_all(&comp_dir)?;
    for shell in SHELLS {
        let path = comp_dir.join(completions::file_name(shell));
        let mut file = fs::File::create(&path)?;
        completions::write_completions(shell, &mut file)?;
        written.push(path);
    }

    let man_dir = out.join("man");
    fs::create_dir_all(&man_dir)?;
    let mut cmd = secretsync::cli::Cli::command().disable_help_subcommand(true);
    // Gives subcommands their display names (secretsync-check, ...).
    cmd.build();

    let main_page = man_dir.join("secretsync.1");
    let mut file = fs::File::create(&main_page)?;
    render_main_page(cmd.clone(), &mut file)?;
    written.push(main_page);

    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        written.push(clap_mangen::Man::new(sub.clone()).generate_to(&man_dir)?);
    }
    Ok(written)
}

/// clap_mangen's sections, then ours before VERSION.
fn render_main_page(cmd: clap::Command, w: &mut dyn Write) -> std::io::Result<()> {
    let man = clap_mangen::Man::new(cmd).manual("secretsync manual");
    man.render_title(w)?;
    man.render_name_section(w)?;
    man.render_synopsis_section(w)?;
    man.render_description_section(w)?;
    man.render_options_section(w)?;
    man.render_subcommands_section(w)?;
    w.write_all(EXTRA_SECTIONS.as_bytes())?;
    man.render_version_section(w)?;
    w.flush()
}

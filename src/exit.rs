//! Process exit codes of the CLI contract.

/// Exit status of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: success, nothing wrong.
    Ok,
    /// 1: an operation or sync failed.
    Failed,
    /// 2: usage error, unknown sync, invalid config.
    Usage,
    /// 3: cannot reach the agent or AWS.
    Unreachable,
    /// 4: `plan --detailed-exitcode` with changes pending.
    Changes,
}

impl Exit {
    /// The numeric code.
    pub fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Failed => 1,
            Exit::Usage => 2,
            Exit::Unreachable => 3,
            Exit::Changes => 4,
        }
    }
}

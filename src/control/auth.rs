//! Who may do what on the control socket, from the peer's credentials.
//!
//! `status` and `plan` are open to anyone who can connect (the socket's
//! mode and directory decide that); `resync` and `reload` change things and
//! need uid 0, the agent's own uid, a uid in `control.allow_uids`, or
//! membership (primary or supplementary) of a group in
//! `control.allow_groups`.

use nix::unistd::{Gid, Group, Uid, User};

/// Credentials of the connected process (SO_PEERCRED).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Process id, for logs.
    pub pid: Option<i32>,
}

/// Whether a command only reads.
pub fn is_read_only(cmd: &str) -> bool {
    matches!(cmd, "status" | "plan")
}

/// The pure decision for privileged commands.
pub fn may_change(
    peer: &Peer,
    agent_uid: u32,
    allow_uids: &[u32],
    allowed_gids: &[u32],
    peer_gids: &[u32],
) -> bool {
    peer.uid == 0
        || peer.uid == agent_uid
        || allow_uids.contains(&peer.uid)
        || allowed_gids.contains(&peer.gid)
        || peer_gids.iter().any(|g| allowed_gids.contains(g))
}

/// Group ids of `names`, unknown names skipped (logged once at startup).
pub fn resolve_groups(names: &[String]) -> Vec<u32> {
    names
        .iter()
        .filter_map(|n| match Group::from_name(n) {
            Ok(Some(g)) => Some(g.gid.as_raw()),
            _ => {
                tracing::warn!(group = %n, "control.allow_groups: no such group");
                None
            }
        })
        .collect()
}

/// All groups of the peer's user (primary and supplementary), looked up
/// now so membership changes apply without a restart.
pub fn peer_groups(peer: &Peer) -> Vec<u32> {
    let Ok(Some(user)) = User::from_uid(Uid::from_raw(peer.uid)) else {
        return vec![peer.gid];
    };
    let Ok(name) = std::ffi::CString::new(user.name) else {
        return vec![peer.gid];
    };
    nix::unistd::getgrouplist(&name, Gid::from_raw(peer.gid))
        .map(|gs| gs.into_iter().map(Gid::as_raw).collect())
        .unwrap_or_else(|_| vec![peer.gid])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decision_table() {
        let peer = |uid, gid| Peer {
            uid,
            gid,
            pid: None,
        };
        let agent = 990;
        // (peer, allow_uids, allowed_gids, peer's groups, expected)
        type Case = (Peer, Vec<u32>, Vec<u32>, Vec<u32>, bool);
        let cases: Vec<Case> = vec![
            (peer(0, 0), vec![], vec![], vec![], true),
            (peer(990, 990), vec![], vec![], vec![], true),
            (peer(1000, 1000), vec![], vec![], vec![1000], false),
            (peer(1000, 1000), vec![1000], vec![], vec![], true),
            (peer(1000, 1000), vec![], vec![500], vec![1000, 500], true),
            (peer(1000, 500), vec![], vec![500], vec![], true),
            (
                peer(1000, 1000),
                vec![1001],
                vec![500],
                vec![1000, 27],
                false,
            ),
        ];
        for (i, (p, uids, gids, pg, want)) in cases.into_iter().enumerate() {
            assert_eq!(may_change(&p, agent, &uids, &gids, &pg), want, "case {i}");
        }
        assert!(is_read_only("status") && is_read_only("plan"));
        assert!(!is_read_only("resync") && !is_read_only("reload"));
    }

    #[test]
    fn root_groups_resolve() {
        let groups = peer_groups(&Peer {
            uid: 0,
            gid: 0,
            pid: None,
        });
        assert!(groups.contains(&0));
        assert_eq!(
            resolve_groups(&["root".into(), "no-such-group-xyz".into()]),
            vec![0]
        );
    }
}

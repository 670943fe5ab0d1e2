//! A rename, for both protocols (netcat `/nick`, IRC `NICK`). On a cluster the new name is
//! the broker's to give first (docs/CLUSTER.md, "Nicknames"): it is claimed in `lc_nicks`,
//! then the hub renames, then the old claim is released, so for an instant both names are
//! held and never neither; a rename the hub refuses (the name taken here meanwhile) gives the
//! new claim back. Without a cluster it is the hub's rename alone.

use crate::cluster;
use crate::context::Shared;
use crate::core::hub::Renamed;
use crate::core::names::{nick_key, validate_nick, NickError};
use crate::core::MemberId;

/// Why a rename did not happen; the name is unchanged either way. Each protocol words it.
#[derive(Debug, thiserror::Error)]
pub enum RenameError {
    #[error(transparent)]
    Nick(#[from] NickError),
    /// The broker did not answer within the claim's bound, or failed: nobody can say
    /// whether the name is free across the cluster.
    #[error("the cluster cannot confirm that name now: {0}")]
    Unsure(cluster::Error),
}

/// Renames member `id` to `new`: on a cluster, only once the broker has given `new` to this
/// node (at most the claim's bound, 5 s). Returns once the old name is free again across the
/// cluster (or its release is queued, if the broker fails it now), so whoever is told of the
/// rename can take the old name at once.
pub async fn rename(shared: &Shared, id: MemberId, new: &str) -> Result<Renamed, RenameError> {
    let Some(cluster) = &shared.cluster else {
        return Ok(shared.hub.rename(id, new)?);
    };
    validate_nick(new)?;
    let old = shared.hub.identity(id).ok_or(NickError::Invalid)?;
    // The same name in other letters is the same claim, which this node holds already.
    if nick_key(&old.nick) == nick_key(new) {
        return Ok(shared.hub.rename(id, new)?);
    }
    if !cluster.claim(new, id).await.map_err(RenameError::Unsure)? {
        return Err(NickError::Taken(new.to_owned()).into());
    }
    match shared.hub.rename(id, new) {
        Ok(renamed) => {
            cluster.release_now(&renamed.old.nick, id).await;
            Ok(renamed)
        }
        Err(e) => {
            cluster.release_now(new, id).await;
            Err(e.into())
        }
    }
}

//! Live contact validation when cascades start. The directory is synced from
//! HR systems on an interval and may be hours stale, so each person's current
//! contacts are fetched from the system of record (the `ContactLookup` port)
//! and snapshotted in the cascade. When the source fails or does not know the
//! person, the directory copy is used and the cascade is flagged for review.
//! Lookups run with at most `policy.lookup_max_in_flight` in flight.

use crate::domain::{ContactCheck, ContactMethods, Stakeholder, StakeholderId};
use crate::ports::{Deps, LookupError};
use futures::stream::{self, StreamExt};

/// A person as the cascade will use them.
pub(crate) struct Resolved {
    pub id: StakeholderId,
    pub person: Option<Stakeholder>,
    pub check: Option<ContactCheck>,
}

/// Looks up every listed person's current contacts (directory people only;
/// people missing from the directory are passed through).
pub(crate) async fn resolve(
    deps: &Deps,
    people: Vec<(StakeholderId, Option<Stakeholder>)>,
) -> Vec<Resolved> {
    let Some(source) = deps.contacts.clone() else {
        return people
            .into_iter()
            .map(|(id, person)| Resolved {
                id,
                person,
                check: None,
            })
            .collect();
    };
    let limit = deps.policy.lookup_max_in_flight.max(1) as usize;
    let mut out: Vec<(usize, Resolved)> = stream::iter(people.into_iter().enumerate())
        .map(|(i, (id, person))| {
            let source = source.clone();
            async move {
                let Some(mut p) = person else {
                    return (i, Resolved { id, person: None, check: None });
                };
                let check = match source.lookup(&id).await {
                    Ok(Some(live)) => {
                        let check = if same_addresses(&live, &p.contacts) { ContactCheck::Validated } else { ContactCheck::Changed };
                        p.contacts = ContactMethods { sms_opted_out: p.contacts.sms_opted_out, ..live };
                        check
                    }
                    Ok(None) => ContactCheck::Unknown,
                    Err(e) => {
                        let reason = match e {
                            LookupError::Timeout => "timeout",
                            LookupError::Unavailable(_) => "unavailable",
                        };
                        tracing::warn!(stakeholder_id = %id, reason, "live contact lookup failed; directory copy used");
                        ContactCheck::Unavailable
                    }
                };
                (i, Resolved { id, person: Some(p), check: Some(check) })
            }
        })
        .buffer_unordered(limit)
        .collect()
        .await;
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, r)| r).collect()
}

fn same_addresses(a: &ContactMethods, b: &ContactMethods) -> bool {
    a.phone == b.phone && a.sms == b.sms && a.email == b.email && a.push == b.push
}

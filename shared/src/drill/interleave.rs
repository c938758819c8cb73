//! Concurrent writers for drills: a cascade store whose every call first
//! yields to the executor, so two workers handling the same job or event at
//! once (`faults.concurrent_deliveries`: a queue delivering one message to
//! two consumers, a webhook retried while its first delivery still runs)
//! interleave at each read and write, as two Lambda invocations do, rather
//! than one running to its end before the other starts. What the design
//! promises holds whatever the interleaving: each change is a conditional
//! write, the loser of a race reads again and decides again, and nothing is
//! sent twice or lost.

use crate::audit::AuditEntry;
use crate::domain::{IncidentId, Millis, PhoneNumber, StakeholderId, Ts};
use crate::engine::{CascadeKey, ReceiptStatus, Tally};
use crate::error::Result;
use crate::ports::{CascadeRecord, CascadeStore, NumberIndex, OpenEscalation, Page, SendClaim};
use async_trait::async_trait;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// Ready on its second poll: lets every other ready future run first.
struct YieldNow(bool);

impl Future for YieldNow {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

fn yield_now() -> YieldNow {
    YieldNow(false)
}

/// `inner`, yielding before every call.
pub struct Interleaved<S: ?Sized>(pub Arc<S>);

#[async_trait]
impl<S: CascadeStore + ?Sized> CascadeStore for Interleaved<S> {
    async fn create_cascade(&self, record: &CascadeRecord, audit: &AuditEntry) -> Result<()> {
        yield_now().await;
        self.0.create_cascade(record, audit).await
    }
    async fn get_cascade(&self, key: &CascadeKey) -> Result<Option<CascadeRecord>> {
        yield_now().await;
        self.0.get_cascade(key).await
    }
    async fn transition(
        &self,
        before: &CascadeRecord,
        after: &CascadeRecord,
        audit: &AuditEntry,
    ) -> Result<()> {
        yield_now().await;
        self.0.transition(before, after, audit).await
    }
    async fn tally(&self, incident: &IncidentId) -> Result<Tally> {
        yield_now().await;
        self.0.tally(incident).await
    }
    fn parts(&self) -> u16 {
        self.0.parts()
    }
    async fn list_part(
        &self,
        incident: &IncidentId,
        part: u16,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<Page<CascadeRecord>> {
        yield_now().await;
        self.0.list_part(incident, part, cursor, limit).await
    }
    async fn list_cascades(
        &self,
        incident: &IncidentId,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<Page<CascadeRecord>> {
        yield_now().await;
        self.0.list_cascades(incident, cursor, limit).await
    }
    async fn overdue(
        &self,
        due_before: Ts,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<Page<CascadeKey>> {
        yield_now().await;
        self.0.overdue(due_before, cursor, limit).await
    }
    async fn person_cascades(
        &self,
        incident: &IncidentId,
        stakeholder: &StakeholderId,
    ) -> Result<Vec<CascadeRecord>> {
        yield_now().await;
        self.0.person_cascades(incident, stakeholder).await
    }
    async fn open_escalations(
        &self,
        incident: &IncidentId,
        stakeholder: &StakeholderId,
        limit: usize,
    ) -> Result<Vec<OpenEscalation>> {
        yield_now().await;
        self.0.open_escalations(incident, stakeholder, limit).await
    }
    async fn audit_trail(&self, incident: &IncidentId) -> Result<Vec<AuditEntry>> {
        yield_now().await;
        self.0.audit_trail(incident).await
    }
    async fn audit_page(
        &self,
        incident: &IncidentId,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<Page<AuditEntry>> {
        yield_now().await;
        self.0.audit_page(incident, cursor, limit).await
    }
    async fn put_message_ref(
        &self,
        provider_message_id: &str,
        key: &CascadeKey,
        attempt: u32,
    ) -> Result<Vec<ReceiptStatus>> {
        yield_now().await;
        self.0
            .put_message_ref(provider_message_id, key, attempt)
            .await
    }
    async fn hold_receipt(
        &self,
        provider_message_id: &str,
        status: ReceiptStatus,
    ) -> Result<Option<(CascadeKey, u32)>> {
        yield_now().await;
        self.0.hold_receipt(provider_message_id, status).await
    }
    async fn get_message_ref(
        &self,
        provider_message_id: &str,
    ) -> Result<Option<(CascadeKey, u32)>> {
        yield_now().await;
        self.0.get_message_ref(provider_message_id).await
    }
    async fn claim_send(
        &self,
        record: &CascadeRecord,
        attempt: u32,
        phase_since: Ts,
        now: Ts,
        lease: Millis,
    ) -> Result<SendClaim> {
        yield_now().await;
        self.0
            .claim_send(record, attempt, phase_since, now, lease)
            .await
    }
}

#[async_trait]
impl<S: NumberIndex + ?Sized> NumberIndex for Interleaved<S> {
    async fn open_cascades_for_number(&self, number: &PhoneNumber) -> Result<Vec<CascadeRecord>> {
        yield_now().await;
        self.0.open_cascades_for_number(number).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_workers_interleave_at_each_call() {
        // Two futures joined: each yields before its step, so their steps
        // alternate instead of one finishing first.
        let log = std::sync::Mutex::new(Vec::new());
        let worker = |name: &'static str| {
            let log = &log;
            async move {
                for step in 0..3 {
                    yield_now().await;
                    log.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((name, step));
                }
            }
        };
        futures::executor::block_on(futures::future::join(worker("a"), worker("b")));
        let log = log.into_inner().unwrap_or_else(|e| e.into_inner());
        assert_eq!(
            log,
            vec![("a", 0), ("b", 0), ("a", 1), ("b", 1), ("a", 2), ("b", 2)]
        );
    }
}

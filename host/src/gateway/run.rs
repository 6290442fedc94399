//! Driving one request to completion: answering its calls, advancing the
//! clock, and giving up instead of hanging.

use super::Gateway;
use crate::http::{CallId, ClientResponse, Reply, Request, RequestId, UpstreamCall};
use crate::HostError;
use std::collections::HashSet;

/// The result of [`Gateway::run`].
#[derive(Debug, Clone)]
pub struct Exchange {
    pub request: RequestId,
    pub response: ClientResponse,
    /// The upstream calls made for this request, in order.
    pub calls: Vec<UpstreamCall>,
}

const MAX_RUN_STEPS: usize = 10_000;
const MAX_RUN_FAKE_MS: u64 = 3_600_000;

impl Gateway {
    /// Drives one request to completion: new pending calls are answered by
    /// `upstream`; when nothing is pending the clock advances to the next
    /// timer or delayed answer. Errors instead of hanging.
    pub fn run(
        &mut self,
        request: Request,
        upstream: impl FnMut(&UpstreamCall) -> Reply,
    ) -> Result<Exchange, HostError> {
        self.run_on(0, request, upstream)
    }

    /// [`Gateway::run`] on a given worker.
    pub fn run_on(
        &mut self,
        worker: usize,
        request: Request,
        mut upstream: impl FnMut(&UpstreamCall) -> Reply,
    ) -> Result<Exchange, HostError> {
        let start_ms = self.now_ms();
        let rid = self.send(worker, request);
        let mut seen: HashSet<CallId> = HashSet::new();
        let mut scheduled: Vec<(u64, CallId, Reply)> = Vec::new();
        for step in 0..MAX_RUN_STEPS {
            if let Some(reason) = self.hung(rid) {
                return Err(HostError::Hung {
                    request: rid,
                    reason,
                });
            }
            if let Some(response) = self.response(rid) {
                let calls = self
                    .history
                    .iter()
                    .filter(|c| c.request == Some(rid))
                    .cloned()
                    .collect();
                return Ok(Exchange {
                    request: rid,
                    response,
                    calls,
                });
            }
            let fresh: Vec<UpstreamCall> = self
                .pending
                .values()
                .filter(|p| !seen.contains(&p.call.id))
                .map(|p| p.call.clone())
                .collect();
            if !fresh.is_empty() {
                for call in fresh {
                    seen.insert(call.id);
                    let reply = upstream(&call);
                    if reply.delay_ms() == 0 {
                        let _ = self.answer(call.id, reply);
                    } else {
                        scheduled.push((self.now_ms() + reply.delay_ms(), call.id, reply));
                    }
                }
                continue;
            }
            let next_answer = scheduled.iter().map(|(t, _, _)| *t).min();
            let next = match (next_answer, self.next_timer_ms()) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => match a.or(b) {
                    Some(t) => t,
                    None => {
                        return Err(HostError::Stuck {
                            request: rid,
                            steps: step,
                            reason: "no response, nothing pending and no timer".to_string(),
                        })
                    }
                },
            };
            if next.saturating_sub(start_ms) > MAX_RUN_FAKE_MS {
                return Err(HostError::Stuck {
                    request: rid,
                    steps: step,
                    reason: format!("no response after {MAX_RUN_FAKE_MS} ms of fake time"),
                });
            }
            let now = self.now_ms();
            self.advance(next.saturating_sub(now));
            let now = self.now_ms();
            let (due, later): (Vec<_>, Vec<_>) =
                scheduled.into_iter().partition(|(t, _, _)| *t <= now);
            scheduled = later;
            for (_, id, reply) in due {
                if self.pending.contains_key(&id) {
                    let _ = self.answer(id, reply);
                }
            }
        }
        Err(HostError::Stuck {
            request: rid,
            steps: MAX_RUN_STEPS,
            reason: "step limit reached".to_string(),
        })
    }
}

//! What one request asks the upstream to do, read from its query string, so that a test
//! scripts the upstream per request id without any set-up call:
//!
//! `?id=flaky-1&plan=503*2,ok&status=200&size=1048576&echo=1&cookies=3&delay_ms=50&retry_after=1`
//!
//! `plan` is a comma list of steps for the calls of this `id`, in order, the last one
//! repeating: a status code (answered with a short body and `retry_after` if set), `ok`
//! (the success answer), `hang` (no answer until the peer goes away), `reset` (headers and
//! half the announced body, then a TCP reset). `step*N` repeats a step N times.

/// One call's action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Ok,
    Status(u16),
    Hang,
    Reset,
}

impl Step {
    /// The name recorded for a call.
    pub fn label(self) -> String {
        match self {
            Step::Ok => "ok".into(),
            Step::Status(s) => s.to_string(),
            Step::Hang => "hang".into(),
            Step::Reset => "reset".into(),
        }
    }
}

/// A request's script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    pub id: String,
    pub plan: Vec<Step>,
    /// Status of the success answer (`ok`).
    pub status: u16,
    /// Success body: this many bytes of [`pattern`] (else a short text).
    pub size: Option<usize>,
    /// Success body: the request body.
    pub echo: bool,
    /// This many `set-cookie` headers on every answer.
    pub cookies: usize,
    /// Wait this long before answering.
    pub delay_ms: u64,
    /// `retry-after` value on status steps.
    pub retry_after: Option<String>,
}

impl Script {
    /// Reads the query part of a request target (unknown keys are ignored).
    pub fn from_target(target: &str) -> Result<Script, String> {
        let query = target.split_once('?').map_or("", |(_, q)| q);
        let mut s = Script {
            id: "-".into(),
            plan: vec![Step::Ok],
            status: 200,
            size: None,
            echo: false,
            cookies: 0,
            delay_ms: 0,
            retry_after: None,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let num = |v: &str| {
                v.parse::<u64>()
                    .map_err(|_| format!("{k}={v:?}: not a number"))
            };
            match k {
                "id" => s.id = v.to_string(),
                "plan" => s.plan = parse_plan(v)?,
                "status" => s.status = num(v)? as u16,
                "size" => s.size = Some(num(v)? as usize),
                "echo" => s.echo = v != "0",
                "cookies" => s.cookies = num(v)? as usize,
                "delay_ms" => s.delay_ms = num(v)?,
                "retry_after" => s.retry_after = Some(v.to_string()),
                _ => {}
            }
        }
        Ok(s)
    }

    /// The step for call `n` (1-based) of this id.
    pub fn step(&self, n: u64) -> Step {
        let i = usize::try_from(n.saturating_sub(1)).unwrap_or(usize::MAX);
        self.plan
            .get(i)
            .or(self.plan.last())
            .copied()
            .unwrap_or(Step::Ok)
    }
}

fn parse_plan(text: &str) -> Result<Vec<Step>, String> {
    let mut plan = Vec::new();
    for item in text.split(',').filter(|i| !i.is_empty()) {
        let (name, times) = match item.split_once('*') {
            Some((n, t)) => (
                n,
                t.parse::<usize>()
                    .map_err(|_| format!("plan step {item:?}"))?,
            ),
            None => (item, 1),
        };
        let step = match name {
            "ok" => Step::Ok,
            "hang" => Step::Hang,
            "reset" => Step::Reset,
            code => Step::Status(code.parse().map_err(|_| format!("plan step {item:?}"))?),
        };
        plan.extend(std::iter::repeat_n(step, times.min(10_000)));
    }
    if plan.is_empty() {
        plan.push(Step::Ok);
    }
    Ok(plan)
}

/// The deterministic binary body of `size=N`: every byte value, in a shifting order.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| ((i * 31 + i / 256) % 256) as u8).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_steps_repeat_the_last() {
        let s = Script::from_target("/x?id=a&plan=503*2,hang,ok&size=10").unwrap();
        assert_eq!(s.id, "a");
        let steps: Vec<Step> = (1..=5).map(|n| s.step(n)).collect();
        use Step::*;
        assert_eq!(steps, [Status(503), Status(503), Hang, Ok, Ok]);
        assert_eq!(s.size, Some(10));
        assert!(Script::from_target("/x?plan=abc").is_err());
        assert_eq!(Script::from_target("/x").unwrap().step(1), Ok);
        assert_eq!(
            pattern(512)
                .iter()
                .collect::<std::collections::HashSet<_>>()
                .len(),
            256
        );
    }
}

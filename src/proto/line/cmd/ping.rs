//! `/ping [token]` — `pong` (with the token), and this connection's round-trip time as the
//! kernel measures it (`TCP_INFO`), with the recent min and average.

use super::{Command, Ctx, Flow, Spec};
use crate::context::Shared;
use crate::core::{lock, Member};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ping {
    pub token: Option<String>,
}

pub const SPEC: Spec = Spec {
    name: "ping",
    args: "[token]",
    help: "pong, with your connection's round-trip time",
    parse: |args| {
        Some(Command::Ping(Ping {
            token: (!args.is_empty()).then(|| args.to_owned()),
        }))
    },
};

impl Ping {
    pub fn run(self, ctx: &mut Ctx<'_>) -> Flow {
        ctx.reply(report(ctx.shared, ctx.member, self.token.as_deref()));
        Flow::Continue
    }
}

/// `pong` with the connection's round-trip time, sampled now, as `/ping` shows it.
pub fn report(shared: &Shared, member: &Member, token: Option<&str>) -> String {
    let pong = match token {
        Some(token) => format!("pong {token}"),
        None => "pong".to_owned(),
    };
    let stats = &member.stats;
    match shared.metrics.sample_tcp(member) {
        Some(now) => {
            let log = lock(&stats.rtt).clone();
            format!(
                "{pong} (round trip {}; recent min {}, avg {} over {} samples)",
                super::metrics::ms(now.rtt_us as f64),
                super::metrics::ms(log.min_us.unwrap_or(now.rtt_us) as f64),
                super::metrics::ms(log.avg_us().unwrap_or(now.rtt_us as f64)),
                log.count
            )
        }
        None => format!("{pong} (round-trip time unavailable on this platform)"),
    }
}

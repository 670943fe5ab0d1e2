//! `/time` — the server's clock in UTC, in the original server's layout
//! `Server time: 15:04:05 UTC 2006-01-02`.

use time::macros::format_description;
use time::OffsetDateTime;

use super::{no_args, Command, Ctx, Flow, Spec};

pub const SPEC: Spec = Spec {
    name: "time",
    args: "",
    help: "show the server's time (UTC)",
    parse: |args| no_args(args, Command::Time),
};

pub fn run(ctx: &mut Ctx<'_>) -> Flow {
    ctx.reply(server_time());
    Flow::Continue
}

/// `Server time: 15:04:05 UTC 2006-01-02`, now.
pub fn server_time() -> String {
    format_time(OffsetDateTime::now_utc())
}

fn format_time(at: OffsetDateTime) -> String {
    let layout = format_description!("[hour]:[minute]:[second] UTC [year]-[month]-[day]");
    let text = at
        .format(&layout)
        .unwrap_or_else(|_| "unavailable".to_owned());
    format!("Server time: {text}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn original_layout() {
        let at = time::macros::datetime!(2006-01-02 15:04:05 UTC);
        assert_eq!(
            super::format_time(at),
            "Server time: 15:04:05 UTC 2006-01-02"
        );
    }
}

//! `/echo <message>` — sends the message back to the caller alone.

use super::{Command, Ctx, Flow, Spec};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Echo {
    pub message: String,
}

pub const SPEC: Spec = Spec {
    name: "echo",
    args: "<message>",
    help: "send the message back to you alone",
    parse: |args| {
        (!args.is_empty()).then(|| {
            Command::Echo(Echo {
                message: args.to_owned(),
            })
        })
    },
};

impl Echo {
    pub fn run(self, ctx: &mut Ctx<'_>) -> Flow {
        ctx.reply(self.message);
        Flow::Continue
    }
}

//! `/me <action>` — `* alice waves` to the caller's room. Like a chat line, it is kept in the
//! room's history and not echoed to the sender.

use bytes::{BufMut, BytesMut};

use super::{Command, Ctx, Flow, Spec};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Me {
    pub action: String,
}

pub const SPEC: Spec = Spec {
    name: "me",
    args: "<action>",
    help: "tell the room what you are doing: * you <action>",
    parse: |args| {
        (!args.is_empty()).then(|| {
            Command::Me(Me {
                action: args.to_owned(),
            })
        })
    },
};

impl Me {
    pub fn run(self, ctx: &mut Ctx<'_>) -> Flow {
        let mut msg = BytesMut::with_capacity(ctx.nick.len() + self.action.len() + 4);
        msg.put_slice(b"* ");
        msg.put_slice(ctx.nick.as_bytes());
        msg.put_u8(b' ');
        msg.put_slice(self.action.as_bytes());
        msg.put_u8(b'\n');
        let delivered = ctx.shared.hub.broadcast(ctx.client.id, &msg.freeze());
        ctx.count_message(delivered);
        Flow::Continue
    }
}

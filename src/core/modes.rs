//! A room's modes and a member's standing in it: plain values that events carry and rooms
//! keep, below both so neither needs the other to name them.

/// What a room's operators may change about it (IRC's channel modes `+t` and `+s`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Modes {
    /// Only operators set the topic. On in every new room, since its creator is its operator
    /// and a topic anyone may overwrite is rarely what a room wants.
    pub topic_lock: bool,
    /// The room is listed, and its members, topic and history shown, only to its members; it
    /// can still be entered by name.
    pub secret: bool,
}

impl Modes {
    /// A new room's settings.
    pub const NEW: Modes = Modes {
        topic_lock: true,
        secret: false,
    };
}

/// One change to a room: its modes, or someone's standing in it. `Who` names the member: as
/// typed in a request, as registered in the change made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode<Who> {
    TopicLock(bool),
    Secret(bool),
    Operator(bool, Who),
    Voice(bool, Who),
}

impl<Who> Mode<Who> {
    /// Whether the change turns something on (`+`) rather than off (`-`).
    pub fn on(&self) -> bool {
        match self {
            Mode::TopicLock(on) | Mode::Secret(on) | Mode::Operator(on, _) | Mode::Voice(on, _) => {
                *on
            }
        }
    }
}

/// Someone's standing in a room (IRC's `@` and `+`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Standing {
    pub op: bool,
    pub voice: bool,
}

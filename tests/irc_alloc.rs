//! Parsing a typical IRC line allocates only the tag and parameter vectors.
//!
//! A binary of its own because a counting `#[global_allocator]` is process-wide: it must not sit
//! under the integration tests, and the count is per thread so libtest's threads do not blur it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::borrow::Cow;
use std::cell::Cell;

use linechat::proto::irc::message::parse;

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded unchanged to `System`; the counter is a const-initialised
// thread-local without a destructor, so touching it never allocates or re-enters.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: the caller's contract for `realloc` is passed on as is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = ALLOCATIONS.with(Cell::get);
    let out = f();
    (out, ALLOCATIONS.with(Cell::get) - before)
}

#[test]
fn a_tagged_privmsg_allocates_only_its_two_vecs() {
    let line =
        "@time=2024-05-01T12:00:00.000Z;msgid=Q2xhdWRl :nick!user@host PRIVMSG #chan :hello world";
    let (msg, allocations) = allocations_during(|| parse(line).unwrap());
    assert_eq!(allocations, 2, "one Vec for the tags, one for the params");
    assert!(msg
        .tags
        .iter()
        .all(|t| matches!(t.value, Some(Cow::Borrowed(_)))));
    assert_eq!(msg.params, ["#chan", "hello world"]);

    let (_, allocations) = allocations_during(|| parse("PING :irc.example.net").unwrap());
    assert_eq!(allocations, 1, "no tags, no tag Vec");
}

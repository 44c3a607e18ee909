//! Indexing a message of up to 64 header fields, reading the headers a proxy
//! reads, and writing a forwarded copy into a warm buffer allocate nothing.

#![allow(unsafe_code, clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use rvoip_dataplane::sip::{
    Forward, Framing, HeaderName, INLINE_HEADERS, Limits, SipMessage, check, write_response,
};

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; the counter is a const-initialised
// thread-local Cell, which needs no allocation to access.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        // SAFETY: caller's contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: caller's contract.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        // SAFETY: caller's contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_during(f: impl FnOnce()) -> u64 {
    let before = ALLOCS.with(Cell::get);
    f();
    ALLOCS.with(Cell::get) - before
}

fn message_with(headers: usize) -> Vec<u8> {
    let mut m = b"INVITE sip:bob@example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds;rport\r\n\
Max-Forwards: 70\r\n\
To: Bob <sip:bob@example.com>\r\n\
From: \"Alice\" <sip:alice@example.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.example.com\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:alice@192.0.2.1:5060>\r\n\
Route: <sip:p1.example.com;lr>\r\n\
Content-Type: application/sdp\r\n"
        .to_vec();
    for i in 9..headers - 1 {
        m.extend_from_slice(format!("X-Extension-{i}: value number {i}\r\n").as_bytes());
    }
    m.extend_from_slice(b"Content-Length: 4\r\n\r\nv=0\n");
    m
}

#[test]
fn indexing_and_reading_64_headers_allocates_nothing() {
    let raw = message_with(INLINE_HEADERS);
    let limits = Limits::default();
    let mut out = Vec::with_capacity(4096);
    let mut n = 0usize;
    let allocs = allocations_during(|| {
        let m = SipMessage::parse(&raw, Framing::Datagram, &limits).expect("parses");
        assert_eq!(m.header_count(), INLINE_HEADERS);
        assert_eq!(check(&m), Ok(()));
        n += m
            .top_via()
            .ok()
            .and_then(|v| v.branch())
            .map_or(0, <[u8]>::len);
        n += m.cseq().map_or(0, |c| c.seq as usize);
        n += m.from().ok().and_then(|f| f.tag()).map_or(0, <[u8]>::len);
        n += m.to().map_or(0, |t| t.uri.as_bytes().len());
        n += m.call_id().map_or(0, <[u8]>::len);
        n += m.contacts().count() + m.routes().count();
        n += m.header(HeaderName::ContentType).map_or(0, <[u8]>::len);
        let mut f = Forward::new(&m);
        f.push_via(b"SIP/2.0/UDP 203.0.113.1;branch=z9hG4bKproxy");
        f.pop_route().expect("route");
        f.decrement_max_forwards().expect("mf");
        f.add_record_route(b"<sip:203.0.113.1;lr>");
        f.write_to(&mut out);
        write_response(&m, 100, b"Trying", None, &[], &mut out);
    });
    assert!(n > 0);
    assert_eq!(allocs, 0, "allocations on the message path");
}

#[test]
fn more_header_fields_than_inline_still_parse() {
    let raw = message_with(200);
    let m = SipMessage::parse(&raw, Framing::Datagram, &Limits::default()).expect("parses");
    assert_eq!(m.header_count(), 200);
    assert_eq!(check(&m), Ok(()));
}

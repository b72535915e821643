//! Cost of seats: the keyed hash of an identity (HMAC-SHA256), the seat check of a
//! seated person (every governed request with an identity) and the admission of a
//! new one (a login) with 10,000 seats held, and the memory one seat takes.
//!
//! `cargo bench --bench seats`. The memory figure is printed first (`bytes per
//! seat`), counted by this binary's allocator over 100,000 seats.

#![allow(
    unsafe_code,
    reason = "a counting global allocator over the system one"
)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use licgate::seats::book::{SavedSeat, SeatTimes, TenantSeats};
use licgate::seats::limits::SeatLimits;
use licgate::seats::{SeatId, SeatSecret};

/// The system allocator, counting the bytes held.
struct Counting;

static HELD: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        HELD.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HELD.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        HELD.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const TIMES: SeatTimes = SeatTimes {
    idle_timeout: 1_800,
    active_window: 30 * 86_400,
};
const NOW: i64 = 1_900_000_000;

fn limits(max_seats: u64) -> SeatLimits {
    SeatLimits {
        max_seats: Some(max_seats),
        max_active: None,
        overage: None,
    }
}

/// A book of `n` seats held (identities 0..n, from distinct client addresses),
/// filled as a restart restores them (admitting one by one counts the seats each
/// time: quadratic, too slow for the test run of this bench in debug builds).
fn book_of(secret: &SeatSecret, n: u32) -> TenantSeats {
    let book = TenantSeats::default();
    book.restore((0..n).map(|i| SavedSeat {
        id: SeatId::of(secret, format!("session-{i}").as_bytes()),
        first_seen: NOW,
        last_seen: NOW,
        client: Some(std::net::IpAddr::from([10, 0, (i >> 8) as u8, i as u8])),
        over: false,
    }));
    assert_eq!(book.len(), n as usize);
    book
}

fn memory(secret: &SeatSecret) {
    let n = 100_000;
    let before = HELD.load(Ordering::Relaxed);
    let book = book_of(secret, n);
    let after = HELD.load(Ordering::Relaxed);
    println!(
        "seats: {} bytes per seat ({} seats held, {:.1} MiB)",
        (after - before) / n as isize,
        book.len(),
        (after - before) as f64 / (1024.0 * 1024.0)
    );
}

fn bench(c: &mut Criterion) {
    let secret = SeatSecret::new(b"bench instance key signature");
    memory(&secret);
    let session = b"k2b9x3y1q8m4n7v6c5z0a1s2d3f4g5h6";
    let mut group = c.benchmark_group("seats");
    group.bench_function("keyed hash of a session id (HMAC-SHA256)", |b| {
        b.iter(|| SeatId::of(&secret, black_box(session)))
    });
    let book = book_of(&secret, 10_000);
    let held = SeatId::of(&secret, b"session-4242");
    let client = Some(std::net::IpAddr::from([10, 0, 16, 146]));
    let seat_limits = limits(20_000);
    group.bench_function("check of a seated person (10,000 seats held)", |b| {
        b.iter(|| book.admit(black_box(held), client, NOW, &seat_limits, TIMES))
    });
    let full = limits(10_001);
    let mut n = 0u64;
    group.bench_function("admission of a new person (10,000 seats held)", |b| {
        b.iter(|| {
            n += 1;
            let id = SeatId::of(&secret, &n.to_be_bytes());
            let admitted = book.admit(id, client, NOW, &full, TIMES);
            book.remove(id);
            admitted
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

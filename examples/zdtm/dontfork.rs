//! Memory marked MADV_DONTFORK (V8 marks its whole heap so): 4 MiB filled with a pattern, next
//! to an ordinary mapping it may merge with while the advice is lifted. After restore the
//! contents are there, the range is still MADV_DONTFORK (a forked child does not get it), and the
//! ordinary neighbour is not.

#[path = "common.rs"]
mod common;

const LEN: usize = 4 << 20;

fn map(len: usize) -> *mut u8 {
    // SAFETY: a fresh private anonymous mapping where the kernel chooses.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    p.cast()
}

fn flags_at(addr: usize) -> String {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let mut inside = false;
    for l in smaps.lines() {
        if let Some(e) = thaw::procfs::parse_map_line(l) {
            inside = (e.start as usize) <= addr && addr < e.end as usize;
        } else if inside {
            if let Some(f) = l.strip_prefix("VmFlags:") {
                return f.trim().to_owned();
            }
        }
    }
    String::new()
}

fn main() {
    // One mapping, its upper half marked DONTFORK: lifting the advice merges the two halves.
    let base = map(2 * LEN);
    let heap = base.wrapping_add(LEN);
    // SAFETY: the upper half of our own mapping.
    let r = unsafe { libc::madvise(heap.cast(), LEN, libc::MADV_DONTFORK) };
    assert_eq!(r, 0);
    // SAFETY: both halves are ours, LEN bytes each.
    let (lower, upper) = unsafe {
        (
            std::slice::from_raw_parts_mut(base, LEN),
            std::slice::from_raw_parts_mut(heap, LEN),
        )
    };
    for (i, b) in upper.iter_mut().enumerate() {
        *b = (i * 13 + i / 4096) as u8;
    }
    lower[0] = 1;
    common::checkpoint();
    let mut c = common::Checks::default();
    c.check(
        "contents",
        upper
            .iter()
            .enumerate()
            .all(|(i, &b)| b == (i * 13 + i / 4096) as u8)
            && lower[0] == 1,
        "",
    );
    let up = flags_at(heap as usize);
    let low = flags_at(base as usize);
    c.check(
        "still MADV_DONTFORK, the neighbour not",
        up.split(' ').any(|f| f == "dc") && !low.split(' ').any(|f| f == "dc"),
        format!("upper [{up}] lower [{low}]"),
    );
    c.finish();
}

//! Process attributes a program can read back: membarrier registrations, guard regions
//! (MADV_GUARD_INSTALL), the login uid and glibc's rseq registration. After restore each is as
//! it was: the process is registered for private expedited membarriers, the guard pages still
//! fault while their neighbours hold their contents, /proc/self/loginuid reads the same, and
//! glibc's rseq area is still the one registered. So are the core dump filter and a sealed
//! mapping (mseal: its contents, and mprotect still refused).

#[path = "common.rs"]
mod common;

const MEMBARRIER_CMD_GET_REGISTRATIONS: i64 = 1 << 9;
const MEMBARRIER_CMD_PRIVATE_EXPEDITED: i64 = 1 << 3;
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: i64 = 1 << 4;
const MADV_GUARD_INSTALL: i32 = 102;
const PAGE: usize = 4096;
const LOGINUID: &str = "4242";

fn membarrier(cmd: i64) -> i64 {
    // SAFETY: membarrier takes no pointers.
    unsafe { libc::syscall(libc::SYS_membarrier, cmd, 0, 0) }
}

/// Whether reading `addr` faults: read it from a child process, which dies of SIGSEGV if so.
fn faults(addr: *const u8) -> bool {
    // SAFETY: the child only reads and exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: a volatile read of our own (possibly guarded) page.
        let v = unsafe { std::ptr::read_volatile(addr) };
        // SAFETY: leaves the child without running destructors.
        unsafe { libc::_exit(i32::from(v)) };
    }
    let mut status = 0;
    // SAFETY: waits for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSEGV
}

/// With `own-rseq`: the main thread replaces glibc's rseq area with one of its own. The checkpoint
/// is refused, naming the thread, and the program goes on with its area still registered.
fn own_rseq() -> ! {
    #[repr(C, align(32))]
    struct Area([u8; 32]);
    static mut AREA: Area = Area([0; 32]);
    const SIG: u32 = 0x5305_3053;
    let (fs, _) = thaw::sys::fs_gs_base();
    if let Some((addr, size)) = thaw::sys::glibc_rseq(fs) {
        // SAFETY: unregisters glibc's area of this thread (glibc falls back to system calls).
        let r = unsafe { libc::syscall(libc::SYS_rseq, addr, size.max(32), 1, SIG) };
        assert_eq!(r, 0, "unregister glibc's rseq");
    }
    // A static, aligned area that lives as long as the process.
    let area = std::ptr::addr_of_mut!(AREA) as u64;
    // SAFETY: registers that area for this thread.
    let r = unsafe { libc::syscall(libc::SYS_rseq, area, 32, 0, SIG) };
    assert_eq!(r, 0, "register an rseq area");
    let (image, _, _) = common::argv();
    match thaw::Checkpoint::to(&image).save() {
        Ok(_) => println!("unexpectedly saved"),
        Err(e) => println!("error: {e}"),
    }
    // SAFETY: asking again with the same area answers EBUSY while it is registered.
    let r = unsafe { libc::syscall(libc::SYS_rseq, area, 32, 0, SIG) };
    let busy = r == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EBUSY);
    println!("own area still registered: {busy}");
    std::process::exit(0);
}

fn main() {
    if common::argv().2.iter().any(|a| a == "own-rseq") {
        own_rseq();
    }
    // Membarrier: registered, so the private expedited command works.
    assert_eq!(membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED), 0);
    // Guard pages 4 and 5 of 16, inside a mapping full of a pattern.
    // SAFETY: a fresh private anonymous mapping.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            16 * PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    } as *mut u8;
    assert_ne!(p.cast(), libc::MAP_FAILED);
    // SAFETY: our own 16 pages.
    let all = unsafe { std::slice::from_raw_parts_mut(p, 16 * PAGE) };
    for (i, b) in all.iter_mut().enumerate() {
        *b = (i / PAGE + 1) as u8;
    }
    // SAFETY: advice on our own mapping.
    let guarded = unsafe { libc::madvise(p.add(4 * PAGE).cast(), 2 * PAGE, MADV_GUARD_INSTALL) };
    let guards_supported = guarded == 0;
    // A locked mapping (MAP_LOCKED) of 8 MiB with a pattern, and one with MADV_SEQUENTIAL.
    let locked_len = 8 << 20;
    // SAFETY: fresh private anonymous mappings.
    let (locked, seq) = unsafe {
        (
            libc::mmap(
                std::ptr::null_mut(),
                locked_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_LOCKED,
                -1,
                0,
            ) as *mut u8,
            libc::mmap(
                std::ptr::null_mut(),
                16 * PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            ) as *mut u8,
        )
    };
    assert!(locked.cast() != libc::MAP_FAILED && seq.cast() != libc::MAP_FAILED);
    // SAFETY: inside our own mappings.
    unsafe {
        for i in (0..locked_len).step_by(PAGE) {
            *locked.add(i) = (i / PAGE) as u8 | 1;
        }
        libc::madvise(seq.cast(), 16 * PAGE, libc::MADV_SEQUENTIAL);
    }
    // A parent-death signal, and memory-deny-write-execute (irreversible; nothing here needs
    // writable code after it).
    // SAFETY: prctl calls with plain arguments.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGUSR2);
        assert_eq!(libc::prctl(65, 1, 0, 0, 0), 0, "PR_SET_MDWE");
    }
    // The login uid: set (allowed while it is unset, or as root), then read back; `no-loginuid`
    // leaves it alone (a namespace restore cannot set an id outside its mapping).
    let loginuid_set = !common::argv().2.iter().any(|a| a == "no-loginuid")
        && std::fs::write("/proc/self/loginuid", LOGINUID).is_ok();
    let loginuid = std::fs::read_to_string("/proc/self/loginuid").unwrap_or_default();
    // A sealed mapping (mseal, Linux 6.10+) holding a pattern, read-only.
    // SAFETY: a fresh private anonymous mapping, written, then made read-only and sealed.
    let (sealed, seal_supported) = unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            2 * PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        ) as *mut u8;
        assert!(p.cast() != libc::MAP_FAILED);
        std::ptr::write_bytes(p, 0x5e, 2 * PAGE);
        libc::mprotect(p.cast(), 2 * PAGE, libc::PROT_READ);
        (p, libc::syscall(462, p, 2 * PAGE, 0) == 0)
    };
    // Core dumps with every kind of mapping (0x7f; the default is 0x33).
    std::fs::write("/proc/self/coredump_filter", "0x7f").unwrap();
    let args = common::checkpoint();
    let mut c = common::Checks::default();
    let regs = membarrier(MEMBARRIER_CMD_GET_REGISTRATIONS);
    c.check(
        "membarrier registration",
        regs >= 0
            && regs & MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED != 0
            && membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) == 0,
        format!("registrations {regs:#x}"),
    );
    if guards_supported {
        // SAFETY: pages outside the guard are readable and ours.
        let kept = [0usize, 3, 6, 15]
            .iter()
            .all(|&i| unsafe { *p.add(i * PAGE + 7) } == (i + 1) as u8);
        c.check(
            "guard pages fault, their neighbours keep their contents",
            kept && faults(p.wrapping_add(4 * PAGE))
                && faults(p.wrapping_add(5 * PAGE + 1))
                && !faults(p.wrapping_add(6 * PAGE)),
            "",
        );
    }
    let flags = |addr: *mut u8| {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut inside = false;
        for l in smaps.lines() {
            if let Some(e) = thaw::procfs::parse_map_line(l) {
                inside = e.start as usize == addr as usize;
            } else if inside {
                if let Some(f) = l.strip_prefix("VmFlags:") {
                    return f.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
                }
            }
        }
        Vec::new()
    };
    let (lf, sf) = (flags(locked), flags(seq));
    // SAFETY: inside our own mapping.
    let kept = (0..locked_len)
        .step_by(PAGE)
        .all(|i| unsafe { *locked.add(i) } == (i / PAGE) as u8 | 1);
    c.check(
        "locked mapping locked again, with its contents",
        kept && lf.iter().any(|f| f == "lo"),
        format!("{lf:?}"),
    );
    c.check(
        "MADV_SEQUENTIAL and MAP_NORESERVE",
        sf.iter().any(|f| f == "sr") && sf.iter().any(|f| f == "nr"),
        format!("{sf:?}"),
    );
    let mut pdeath = 0i32;
    // SAFETY: prctl getters writing to a local / returning a value.
    let mdwe = unsafe {
        libc::prctl(libc::PR_GET_PDEATHSIG, &mut pdeath);
        libc::prctl(66, 0, 0, 0, 0)
    };
    // Lazily filled, the process keeps SIGKILL: it must die with its launcher (docs/restore.md).
    let lazy = args.iter().any(|a| a == "lazy");
    c.check(
        "parent-death signal and memory-deny-write-execute",
        mdwe == 1 && (pdeath == libc::SIGUSR2 || (lazy && pdeath == libc::SIGKILL)),
        format!("pdeathsig {pdeath}, mdwe {mdwe}"),
    );
    let now = std::fs::read_to_string("/proc/self/loginuid").unwrap_or_default();
    c.check(
        "login uid",
        now == loginuid && (!loginuid_set || now == LOGINUID),
        format!("{now} (was {loginuid})"),
    );
    let (fs, _) = thaw::sys::fs_gs_base();
    let rseq_ok = match thaw::sys::glibc_rseq(fs) {
        Some((addr, size)) => {
            // Registering glibc's area again says EBUSY exactly when it is the one registered.
            // SAFETY: rseq with glibc's own area and signature registers nothing new.
            let r = unsafe { libc::syscall(libc::SYS_rseq, addr, size.max(32), 0, 0x5305_3053u32) };
            r == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EBUSY)
        }
        None => true,
    };
    c.check("glibc's rseq area registered", rseq_ok, "");
    if seal_supported {
        // SAFETY: reads of our own read-only mapping; mprotect only asks.
        let (kept, changed) = unsafe {
            (
                *sealed == 0x5e && *sealed.add(2 * PAGE - 1) == 0x5e,
                libc::mprotect(sealed.cast(), 2 * PAGE, libc::PROT_READ | libc::PROT_WRITE) == 0,
            )
        };
        c.check(
            "sealed mapping sealed again, with its contents",
            kept && !changed,
            format!("contents kept {kept}, mprotect allowed {changed}"),
        );
    }
    let filter = std::fs::read_to_string("/proc/self/coredump_filter").unwrap_or_default();
    c.check(
        "core dump filter",
        filter.trim() == "0000007f",
        filter.trim(),
    );
    c.finish();
}

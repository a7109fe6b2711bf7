//! A process holding state thaw cannot restore (a socket, a shared writable mapping): the
//! checkpoint fails with an error naming each item, and the application keeps running.

fn main() {
    let image = std::env::args().nth(1).expect("IMAGE");
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    // SAFETY: a fresh shared anonymous mapping.
    let shared = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    match thaw::Checkpoint::to(&image).save() {
        Ok(_) => {
            println!("unexpectedly saved");
            std::process::exit(1);
        }
        Err(e) => println!("error: {e}"),
    }
    // Still alive and well.
    println!("still running: socket on {}", sock.local_addr().unwrap());
    let _ = shared;
    println!("exists: {}", std::path::Path::new(&image).exists());
}

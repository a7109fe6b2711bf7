//! A thread that blocks the checkpoint signal: the checkpoint fails with an error naming the
//! thread (tid and name), and the application goes on.

fn main() {
    let image = std::env::args().nth(1).expect("IMAGE");
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let t = std::thread::Builder::new()
        .name("stubborn".into())
        .spawn(move || {
            // SAFETY: blocking one signal in this thread's own mask.
            unsafe {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, thaw::DEFAULT_SIGNAL);
                libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
                tx.send(libc::gettid()).unwrap();
            }
            stop_rx.recv().unwrap();
            "done"
        })
        .unwrap();
    let tid = rx.recv().unwrap();
    match thaw::Checkpoint::to(&image).save() {
        Ok(_) => {
            println!("unexpectedly saved");
            std::process::exit(1);
        }
        Err(e) => println!("error: {e}"),
    }
    stop_tx.send(()).unwrap();
    println!("stubborn tid {tid} finished: {}", t.join().unwrap());
    println!("exists: {}", std::path::Path::new(&image).exists());
}

//! The restorer: a position-independent routine that runs a [`thaw::restore::Plan`] inside the
//! new process. It uses no libc, no allocator, no stack frames beyond two pushes, and no
//! relocations, so its bytes can be copied anywhere and run from there after everything else of
//! the launcher has been unmapped.
//!
//! Entry: `rdi` points at the control block `{ steps, count, error_fd }`, where `count` is the
//! length of the first thread's list. Each 64-byte step is `{ op, nr, args[6] }` (see
//! `thaw::restore`). Threads created by a step run their own list from the same array. On a
//! failing step the routine writes `{ step index, errno }` (two u64) to `error_fd` and calls
//! `exit_group(127)`; each thread's last step is an `rt_sigreturn` that makes it the restored one.

use std::arch::global_asm;

global_asm!(
    ".pushsection .text.thaw_restorer,\"ax\",@progbits",
    ".globl thaw_restorer_start",
    ".globl thaw_restorer_end",
    ".p2align 4",
    "thaw_restorer_start:",
    "    mov rbx, [rdi]",      // all steps (threads find theirs from here)
    "    mov r12, rbx",        // current step
    "    mov r13, [rdi + 8]",  // index where this thread's list ends
    "    mov r15, [rdi + 16]", // error fd
    "    xor r14d, r14d",      // current index
    "10:",
    "    cmp r14, r13",
    "    jae 85f",
    "    mov rax, [r12]",
    "    cmp rax, 3",
    "    je 30f",
    "    cmp rax, 4",
    "    je 40f",
    "    cmp rax, 5",
    "    je 50f",
    "    cmp rax, 6",
    "    je 60f",
    "    cmp rax, 7",
    "    je 70f",
    "    cmp rax, 8",
    "    je 71f",
    "    cmp rax, 9",
    "    je 73f",
    "    cmp rax, 10",
    "    je 80f",
    "    cmp rax, 11",
    "    je 86f",
    "    cmp rax, 12",
    "    je 100f",
    "    cmp rax, 13",
    "    je 110f",
    "    cmp rax, 14",
    "    je 120f",
    "    cmp rax, 15",
    "    je 130f",
    "    cmp rax, 16",
    "    je 140f",
    // OP_SYSCALL (1) and OP_SYSCALL_ANY (2); OP_SYSCALL_LOADED (16) joins at 15 (only
    // OP_SYSCALL_ANY's failure is no failure)
    "    mov rax, [r12 + 8]",
    "    mov rdi, [r12 + 16]",
    "15:",
    "    mov rsi, [r12 + 24]",
    "    mov rdx, [r12 + 32]",
    "    mov r10, [r12 + 40]",
    "    mov r8,  [r12 + 48]",
    "    mov r9,  [r12 + 56]",
    "    syscall",
    "    cmp qword ptr [r12], 2",
    "    je 20f",
    "    cmp rax, -4095",
    "    jae 90f",
    "20:",
    "    add r12, 64",
    "    inc r14",
    "    jmp 10b",
    // OP_STORE: *(u64 *)args[0] = args[1]
    "30:",
    "    mov rdi, [r12 + 16]",
    "    mov rsi, [r12 + 24]",
    "    mov [rdi], rsi",
    "    jmp 20b",
    // OP_PREAD: pread64(fd, buf, len, off) until len bytes are read
    "40:",
    "    mov rdi, [r12 + 16]",
    "    mov rsi, [r12 + 24]",
    "    mov rdx, [r12 + 32]",
    "    mov r10, [r12 + 40]",
    "41:",
    "    test rdx, rdx",
    "    jz 20b",
    "    mov eax, 17",
    "    syscall",
    "    cmp rax, -4095",
    "    jae 90f",
    "    test rax, rax",
    "    jz 42f",
    "    add rsi, rax",
    "    sub rdx, rax",
    "    add r10, rax",
    "    jmp 41b",
    "42:",
    "    mov rax, -5", // EIO: the image ended early
    "    jmp 90f",
    // OP_SIGRETURN: count out of the region if asked, then become the restored thread. From the
    // counter decrement on, only this code page is used.
    "50:",
    "    mov rdi, [r12 + 24]",
    "    mov rsp, [r12 + 16]",
    "    test rdi, rdi",
    "    jz 51f",
    "    lock dec dword ptr [rdi]",
    "    mov esi, 129", // FUTEX_WAKE_PRIVATE
    "    mov edx, 0x7fffffff",
    "    mov eax, 202",
    "    syscall",
    "51:",
    "    mov eax, 15",
    "    syscall",
    "    jmp 90f",
    // OP_CLONE_THREAD: clone3(args, size); the child runs steps [start, end). EEXIST is retried
    // 2000 times, at least 100 µs apart: an exited thread's ID is freed only after its parent may
    // have reaped the process (Linux >= 6.15), so a restore right after another can meet it (20
    // ms of retries were not enough on a busy 2-core machine).
    "60:",
    "    mov ebp, 2000",
    "62:",
    "    mov rdi, [r12 + 16]",
    "    mov rsi, [r12 + 24]",
    "    mov r8,  [r12 + 32]",
    "    mov r9,  [r12 + 40]",
    "    mov eax, 435",
    "    syscall",
    "    test rax, rax",
    "    jz 61f",
    "    cmp rax, -17",
    "    jne 63f",
    "    dec ebp",
    "    jz 90f",
    "    push 100000", // struct timespec { 0 s, 100000 ns } on the stack
    "    push 0",
    "    mov rdi, rsp",
    "    xor esi, esi",
    "    mov eax, 35", // nanosleep
    "    syscall",
    "    add rsp, 16",
    "    jmp 62b",
    "63:",
    "    cmp rax, -4095",
    "    jae 90f",
    "    jmp 20b",
    "61:",
    "    mov r14, r8",
    "    mov r13, r9",
    "    mov r12, r8",
    "    shl r12, 6",
    "    add r12, rbx",
    "    jmp 10b",
    // OP_DEC_WAKE
    "70:",
    "    mov rdi, [r12 + 16]",
    "    lock dec dword ptr [rdi]",
    "    mov esi, 129",
    "    mov edx, 0x7fffffff",
    "    mov eax, 202",
    "    syscall",
    "    jmp 20b",
    // OP_WAIT_ZERO
    "71:",
    "    mov rdi, [r12 + 16]",
    "72:",
    "    mov edx, dword ptr [rdi]",
    "    test edx, edx",
    "    jz 20b",
    "    mov esi, 128", // FUTEX_WAIT_PRIVATE while the word still holds edx
    "    xor r10d, r10d",
    "    mov eax, 202",
    "    syscall",
    "    jmp 72b",
    // OP_WAIT_NONZERO
    "73:",
    "    mov rdi, [r12 + 16]",
    "74:",
    "    mov edx, dword ptr [rdi]",
    "    test edx, edx",
    "    jnz 20b",
    "    mov esi, 128",
    "    xor r10d, r10d",
    "    mov eax, 202",
    "    syscall",
    "    jmp 74b",
    // OP_SYSCALL_FD: the call, then dup3(result, args[5], O_CLOEXEC) and close(result)
    "80:",
    "    mov rax, [r12 + 8]",
    "    mov rdi, [r12 + 16]",
    "    mov rsi, [r12 + 24]",
    "    mov rdx, [r12 + 32]",
    "    mov r10, [r12 + 40]",
    "    mov r8,  [r12 + 48]",
    "    syscall",
    "    cmp rax, -4095",
    "    jae 90f",
    "    mov rsi, [r12 + 56]",
    "    cmp rax, rsi",
    "    je 20b",
    "    mov rbp, rax",
    "    mov rdi, rax",
    "    mov edx, 0x80000",
    "    mov eax, 292",
    "    syscall",
    "    cmp rax, -4095",
    "    jae 90f",
    "    mov rdi, rbp",
    "    mov eax, 3",
    "    syscall",
    "    jmp 20b",
    // OP_WRITE_FILE: openat(AT_FDCWD, args[0], O_WRONLY | O_CLOEXEC), write args[2] bytes from
    // args[1], close
    "86:",
    "    mov rdi, -100",
    "    mov rsi, [r12 + 16]",
    "    mov edx, 0x80001",
    "    xor r10d, r10d",
    "    mov eax, 257",
    "    syscall",
    "    cmp rax, -4095",
    "    jae 90f",
    "    mov rbp, rax",
    "    mov rdi, rax",
    "    mov rsi, [r12 + 24]",
    "    mov rdx, [r12 + 32]",
    "    mov eax, 1",
    "    syscall",
    "    push rax",
    "    mov rdi, rbp",
    "    mov eax, 3",
    "    syscall",
    "    pop rax",
    "    cmp rax, -4095",
    "    jae 90f",
    "    jmp 20b",
    // OP_SERVE: recvmsg, setns(first fd, CLONE_NEWPID), clone3; the child goes on, the parent
    // closes what it received, answers with the PID (or -errno) and waits again
    "100:",
    "    mov rdi, [r12 + 16]",
    "    mov rsi, [r12 + 24]",
    "    mov rax, [r12 + 56]",
    "    mov [rsi + 40], rax", // msg_controllen
    "    xor edx, edx",
    "    mov eax, 47",
    "    syscall",
    "    cmp rax, -4", // EINTR
    "    je 100b",
    "    cmp rax, -4095",
    "    jae 90f",
    "    test rax, rax",
    "    jz 105f",
    "    mov rdi, [r12 + 48]",
    "    mov [rdi], rax",
    "    mov rdi, [r12 + 40]",
    "    mov esi, 0x20000000", // CLONE_NEWPID
    "    mov eax, 308",
    "    syscall",
    "    test rax, rax",
    "    jnz 102f",
    "    mov rdi, [r12 + 32]",
    "    mov esi, 88",
    "    mov eax, 435",
    "    syscall",
    "    test rax, rax",
    "    jz 20b",
    // closed before the answer: once the server has it, only the instance holds them
    "102:",
    "    push rax",
    "    mov rdi, [r12 + 40]",
    "    mov esi, 0xffffffff",
    "    xor edx, edx",
    "    mov eax, 436", // close_range
    "    syscall",
    "    mov rdi, [r12 + 16]",
    "    mov rsi, rsp",
    "    mov edx, 8",
    "    mov eax, 1",
    "    syscall",
    "    pop rax",
    "    jmp 100b",
    "105:",
    "    xor edi, edi",
    "    mov eax, 231",
    "    syscall",
    // OP_RECV: recvmsg(args[0], args[1], 0), again on EINTR; end of file fails the step
    // (ECONNRESET); the byte count goes to args[2]
    "110:",
    "    mov rdi, [r12 + 16]",
    "    mov rsi, [r12 + 24]",
    "    xor edx, edx",
    "    mov eax, 47",
    "    syscall",
    "    cmp rax, -4",
    "    je 110b",
    "    cmp rax, -4095",
    "    jae 90f",
    "    test rax, rax",
    "    jnz 111f",
    "    mov rax, -104",
    "    jmp 90f",
    "111:",
    "    mov rdi, [r12 + 32]",
    "    mov [rdi], rax",
    "    jmp 20b",
    // OP_EXPECT: the 32-bit word at args[0] must be args[1], else EPROTO
    "120:",
    "    mov rdi, [r12 + 16]",
    "    mov eax, dword ptr [rdi]",
    "    cmp rax, [r12 + 24]",
    "    je 20b",
    "    mov rax, -71",
    "    jmp 90f",
    // OP_XSTATE_FIRST_USE: xrstor of components args[1] from the XSAVE area at args[0]: their
    // first use, on which the kernel gives the thread room for them
    "130:",
    "    mov rdi, [r12 + 16]",
    "    mov rax, [r12 + 24]",
    "    mov rdx, rax",
    "    shr rdx, 32",
    "    xrstor64 [rdi]",
    "    jmp 20b",
    // OP_SYSCALL_LOADED: as OP_SYSCALL, the first argument read from the word at args[0]
    "140:",
    "    mov rax, [r12 + 8]",
    "    mov rdi, [r12 + 16]",
    "    mov rdi, [rdi]",
    "    jmp 15b",
    // ran out of steps without a sigreturn
    "85:",
    "    mov rax, -22",
    // failure: report { index, errno } and end the whole process
    "90:",
    "    neg rax",
    "    push rax",
    "    push r14",
    "    mov rdi, r15",
    "    mov rsi, rsp",
    "    mov edx, 16",
    "    mov eax, 1",
    "    syscall",
    "    mov edi, 127",
    "    mov eax, 231",
    "    syscall",
    "    ud2",
    "thaw_restorer_end:",
    ".popsection",
);

extern "C" {
    static thaw_restorer_start: u8;
    static thaw_restorer_end: u8;
}

/// The routine's machine code.
pub fn code() -> &'static [u8] {
    // SAFETY: both symbols are defined by the global_asm above, in one section, start before end;
    // the bytes between them are the routine's code, immutable for the life of the program.
    unsafe {
        let start = &raw const thaw_restorer_start;
        let end = &raw const thaw_restorer_end;
        std::slice::from_raw_parts(start, end.offset_from(start) as usize)
    }
}

/// The control block the routine reads at entry.
#[repr(C)]
#[derive(Debug)]
pub struct Control {
    pub steps: u64,
    pub count: u64,
    pub error_fd: u64,
}

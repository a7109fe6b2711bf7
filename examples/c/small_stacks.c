/* Threads running on small stacks of their own, as Go runs goroutines (2 KiB each, side by side,
 * the runtime's signal handling on a per-thread alternate stack): the checkpoint's signal must
 * not write its frame there. Two threads each switch (swapcontext) to a 2 KiB stack inside a
 * buffer filled with a pattern, one spinning, one blocked in read(2), with an alternate signal
 * stack set; the main thread checkpoints. Then, in the first life that goes on and after every
 * restore, the pattern around those stacks must be intact.
 *
 *   small_stacks IMAGE KEY     prints "first life: intact" or "first life: overwritten N"
 *   thaw run IMAGE             prints "restored: intact" or "restored: overwritten N" */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>
#include <unistd.h>

#include "thaw.h"

#define AREA (64 * 1024)
#define SMALL 2048
#define PATTERN 0x5a

struct worker {
    unsigned char area[AREA]; /* the pattern, a small stack in its middle */
    ucontext_t home, small;
    int blocking;
    int pipe[2];
    pthread_t thread;
};

static struct worker workers[2];
static atomic_int started, stop;

/* Calls nothing but read(2), bound beforehand (see `run`). */
static void on_small_stack(int i) {
    struct worker *w = &workers[i];
    atomic_fetch_add(&started, 1);
    if (w->blocking) {
        char b;
        while (read(w->pipe[0], &b, 1) < 0) {}
    } else {
        while (!atomic_load(&stop)) {}
    }
}

static void *run(void *arg) {
    struct worker *w = arg;
    stack_t ss = {.ss_sp = malloc(64 * 1024), .ss_size = 64 * 1024};
    sigaltstack(&ss, NULL);
    getcontext(&w->small);
    /* The small stack sits well inside the area: what a frame spills below it is seen. */
    w->small.uc_stack.ss_sp = w->area + AREA / 2;
    w->small.uc_stack.ss_size = SMALL;
    w->small.uc_link = &w->home;
    makecontext(&w->small, (void (*)(void))on_small_stack, 1, (int)(w - workers));
    /* read(2) bound now: binding it lazily saves every vector register on the small stack. */
    if (read(w->pipe[0], NULL, 0) < 0) return NULL;
    swapcontext(&w->home, &w->small);
    return NULL;
}

/* Bytes of the pattern overwritten outside the small stacks. */
static int overwritten(void) {
    int n = 0;
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < AREA; j++) {
            int in_stack = j >= AREA / 2 && j < AREA / 2 + SMALL;
            if (!in_stack && workers[i].area[j] != PATTERN) n++;
        }
    return n;
}

int main(int argc, char **argv) {
    if (argc < 3) return 64;
    for (int i = 0; i < 2; i++) {
        memset(workers[i].area, PATTERN, AREA);
        workers[i].blocking = i;
        if (pipe(workers[i].pipe)) return 1;
        pthread_create(&workers[i].thread, NULL, run, &workers[i]);
    }
    /* (The blocking one may or may not be in read(2) yet: either is a small stack in use.) */
    while (atomic_load(&started) < 2) {}
    int r = thaw_checkpoint(argv[1], argv[2], 0);
    if (r < 0) {
        fprintf(stderr, "checkpoint: %s\n", thaw_last_error());
        return 2;
    }
    atomic_store(&stop, 1);
    if (write(workers[1].pipe[1], "x", 1) != 1) return 1;
    for (int i = 0; i < 2; i++) pthread_join(workers[i].thread, NULL);
    int n = overwritten();
    if (n) printf("%s: overwritten %d\n", r ? "restored" : "first life", n);
    else printf("%s: intact\n", r ? "restored" : "first life");
    return 0;
}

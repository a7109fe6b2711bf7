/* thaw_restores() is right in every thread from a restored process's first instruction on: a
 * thread woken by an after-restore hook, while the checkpointing thread has not returned from
 * thaw_checkpoint yet, reads the same count as the hook and as the caller afterwards. */
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

#include "thaw.h"

static int wake[2], reply[2];

static void *reader(void *arg) {
    (void)arg;
    char c;
    while (read(wake[0], &c, 1) == 1) {
        int n = thaw_restores();
        if (write(reply[1], &n, sizeof n) != (ssize_t)sizeof n) break;
    }
    return NULL;
}

static int ask_the_thread(void *ctx) {
    (void)ctx;
    int n = -1;
    if (write(wake[1], "x", 1) != 1 || read(reply[0], &n, sizeof n) != (ssize_t)sizeof n) return 1;
    printf("in the hook: thread %d, hook %d\n", n, thaw_restores());
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    if (pipe(wake) || pipe(reply)) return 3;
    pthread_t t;
    if (pthread_create(&t, NULL, reader, NULL)) return 4;
    printf("first life: %d\n", thaw_restores());
    fflush(stdout);
    thaw_on_restore(ask_the_thread, NULL);
    int r = thaw_checkpoint(argv[1], argv[2], THAW_EXIT_AFTER_SAVE);
    if (r != THAW_RESTORED) {
        fprintf(stderr, "%d: %s\n", r, thaw_last_error());
        return 5;
    }
    printf("returned: %d\n", thaw_restores());
    return 0;
}

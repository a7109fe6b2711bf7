/* A C program that warms up, checkpoints through libthaw.so, and reseeds after every restore.
 *   cc warm.c -I sdk/include -L target/debug -lthaw -Wl,-rpath,$PWD/target/debug -o warm
 *   ./warm app.thaw k.key          # first life: warm up, write the image, exit 0
 *   thaw run app.thaw -- hello     # second life, as many times as you like            */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "thaw.h"

static unsigned long long session_id; /* must differ between restores of one image */

static int reseed(void *ctx) {
    (void)ctx;
    FILE *f = fopen("/dev/urandom", "rb");
    if (!f || fread(&session_id, sizeof session_id, 1, f) != 1) return -1;
    fclose(f);
    return 0;
}

static int before_checkpoint(void *ctx) {
    ++*(int *)ctx; /* close sockets, stop pools, … */
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s IMAGE [KEY]\n", argv[0]);
        return 64;
    }
    /* Warm up: a table that takes a while to build. */
    size_t n = (size_t)1 << 22;
    unsigned *table = malloc(n * sizeof *table);
    if (!table) return 1;
    for (size_t i = 0; i < n; i++) table[i] = (unsigned)(i * 2654435761u) >> 3;

    static int checkpoints;
    thaw_on_checkpoint(before_checkpoint, &checkpoints);
    thaw_on_restore(reseed, NULL);
    /* Descriptors left open by whatever started us (a shell's pipe) are closed after restore. */
    thaw_set_fd_policy("any=drop");
    int r = thaw_checkpoint(argv[1], argc > 2 ? argv[2] : NULL, THAW_EXIT_AFTER_SAVE);
    if (r < 0) {
        fprintf(stderr, "checkpoint failed (%d): %s\n", r, thaw_last_error());
        return 1;
    }
    /* r == THAW_RESTORED: the second life (THAW_EXIT_AFTER_SAVE ended the first). */
    printf("restored pid %d after %d checkpoint hook call(s), table[12345] = %u\n", (int)getpid(),
           checkpoints, table[12345]);
    for (int i = 0; i < thaw_restored_argc(); i++) printf("arg %d: %s\n", i, thaw_restored_arg(i));
    printf("session %016llx\n", session_id);
    return 0;
}

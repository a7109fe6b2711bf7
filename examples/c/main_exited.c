/* A process whose main thread has ended (pthread_exit in main) while another runs: /proc shows
 * the main thread as a zombie with no memory, descriptors or cgroups, and the checkpoint is
 * refused, saying so (alone, not with what a zombie's /proc files would suggest).
 *
 *   main_exited IMAGE KEY     prints "rc N: MESSAGE" and exits 0 once refused */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "thaw.h"

static char *image, *key;

/* The main thread's state letter, from /proc/self/task/PID/stat. */
static char main_state(void) {
    char path[64], line[512];
    snprintf(path, sizeof path, "/proc/self/task/%d/stat", (int)getpid());
    FILE *f = fopen(path, "r");
    if (!f) return '?';
    char *got = fgets(line, sizeof line, f);
    fclose(f);
    char *close = got ? strrchr(line, ')') : NULL;
    return close ? close[2] : '?';
}

static void *checkpointer(void *unused) {
    (void)unused;
    while (main_state() != 'Z') usleep(1000);
    int rc = thaw_checkpoint(image, key, THAW_EXIT_AFTER_SAVE);
    printf("rc %d: %s\n", rc, rc < 0 ? thaw_last_error() : "");
    fflush(stdout);
    exit(rc < 0 ? 0 : 1);
}

int main(int argc, char **argv) {
    if (argc < 3) return 64;
    image = argv[1];
    key = argv[2];
    pthread_t t;
    if (pthread_create(&t, NULL, checkpointer, NULL)) return 1;
    pthread_exit(NULL);
}

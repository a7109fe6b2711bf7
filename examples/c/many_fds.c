/* A process holding more than half its soft limit of open files (CPython, a server with many
 * connections; the common soft limit is 1024): the checkpoint needs as many numbers again for
 * its own duplicates, so it raises the soft limit to the hard one for as long as it runs; the
 * image, the first life afterwards and the restored process keep the process's own.
 *
 *   many_fds IMAGE KEY N   holds N descriptors under a soft limit of 1024, checkpoints, prints
 *                          "first life: limit L, N open" (or the error)
 *   thaw run IMAGE         prints "restored: limit L, N open" */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>

#include "thaw.h"

int main(int argc, char **argv) {
    if (argc < 4) return 64;
    int n = atoi(argv[3]);
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_max < 4096) return 77; /* the hard limit must leave room */
    rl.rlim_cur = 1024;
    if (setrlimit(RLIMIT_NOFILE, &rl)) return 1;
    int first = open("/dev/null", O_RDONLY), last = first;
    for (int i = 1; i < n; i++) last = dup(first);
    if (last < 0) return 1;
    int r = thaw_checkpoint(argv[1], argv[2], 0);
    if (r < 0) {
        printf("error: %s\n", thaw_last_error());
        return 2;
    }
    getrlimit(RLIMIT_NOFILE, &rl);
    int open_now = 0;
    for (int fd = first; fd <= last; fd++) open_now += fcntl(fd, F_GETFD) >= 0;
    printf("%s: limit %llu, %d open\n", r ? "restored" : "first life",
           (unsigned long long)rl.rlim_cur, open_now);
    return 0;
}

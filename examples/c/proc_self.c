/* A process holding its own /proc files open across a restore (wasmtime keeps
 * /proc/self/pagemap open for its dirty-page scans): opened again by the restorer as the same
 * files of the same process.
 *
 *   proc_self IMAGE KEY            holds pagemap and status, checkpoints, exits 0
 *   proc_self IMAGE KEY midway     status read partway first: refused (prints the error)
 *   thaw run IMAGE                 prints "pagemap present 1, status of itself 1, link 1" */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "thaw.h"

static char page[4096] __attribute__((aligned(4096)));

int main(int argc, char **argv) {
    if (argc < 3) return 64;
    int pm = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    int st = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
    if (pm < 0 || st < 0) return 1;
    char buf[8192];
    if (argc > 3 && read(st, buf, 10) != 10) return 1;
    int r = thaw_checkpoint(argv[1], argv[2], THAW_EXIT_AFTER_SAVE);
    if (r < 0) {
        printf("error: %s\n", thaw_last_error());
        return 3;
    }
    page[0] = 1;
    uint64_t e = 0;
    if (pread(pm, &e, 8, (uintptr_t)page / 4096 * 8) != 8) return 1;
    ssize_t n = read(st, buf, sizeof buf - 1);
    buf[n > 0 ? n : 0] = 0;
    char want[64], link[256], path[64];
    snprintf(want, sizeof want, "\nPid:\t%d\n", getpid());
    snprintf(path, sizeof path, "/proc/self/fd/%d", pm);
    ssize_t l = readlink(path, link, sizeof link - 1);
    link[l > 0 ? l : 0] = 0;
    snprintf(path, sizeof path, "/proc/%d/pagemap", getpid());
    printf("pagemap present %d, status of itself %d, link %d\n", (int)(e >> 63),
           strstr(buf, want) != NULL, strcmp(link, path) == 0);
    return 0;
}

/* A function host in C: starts instances of a served image through libthaw and collects their
 * exit statuses. Usage: serve_client SOCKET N
 * Instance i gets "instance i" as its argument and its own pipes for stdin and stdout; an
 * instance of zdtm-waiter prints "ready PID" and exits with the status read on stdin (i), except
 * the last one, which is sent SIGTERM instead. Prints "i PID STATUS" per instance. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "thaw.h"

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: serve_client SOCKET N\n");
        return 64;
    }
    int n = atoi(argv[2]);
    int *handles = calloc(n, sizeof(int)), *in = calloc(n, sizeof(int)), *out = calloc(n, sizeof(int));
    for (int i = 0; i < n; i++) {
        int to[2], from[2];
        if (pipe(to) || pipe(from)) return 70;
        char arg[32];
        snprintf(arg, sizeof arg, "instance %d", i);
        const char *args[] = {arg, NULL};
        const char *env[] = {"ZDTM_ENV=from C", NULL};
        int stdio[3] = {to[0], from[1], 2};
        int pid = 0;
        handles[i] = thaw_serve_start(argv[1], args, env, stdio, &pid);
        if (handles[i] < 0) {
            fprintf(stderr, "thaw_serve_start: %d: %s\n", handles[i], thaw_last_error());
            return 1;
        }
        close(to[0]);
        close(from[1]);
        in[i] = to[1];
        out[i] = from[0];
    }
    for (int i = 0; i < n; i++) {
        char line[64] = {0};
        ssize_t got = read(out[i], line, sizeof line - 1);
        int pid = got > 6 ? atoi(line + 6) : -1;
        if (i == n - 1) {
            if (thaw_serve_signal(handles[i], SIGTERM) < 0) return 1;
        } else {
            char status[16];
            int len = snprintf(status, sizeof status, "%d\n", i);
            if (write(in[i], status, len) != len) return 70;
        }
        printf("%d %d %d\n", i, pid, thaw_serve_wait(handles[i]));
    }
    return 0;
}

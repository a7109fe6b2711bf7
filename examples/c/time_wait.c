/* A TCP server without SO_REUSEADDR that closed a connection first (its port keeps a TIME_WAIT
 * entry for a minute, which such a listener cannot bind through: the kernel lets only a socket
 * with SO_REUSEADDR pass an entry made with it) checkpoints with its listener open: restored at
 * once, the refusal says why. (Restored later, it prints "reuseaddr 0, accepted 1".)
 *
 *   time_wait IMAGE KEY     serves one connection, closes it first, checkpoints, exits 0
 *   thaw run IMAGE          refused, or prints "reuseaddr 0, accepted 1" */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include "thaw.h"

static int connect_to(struct sockaddr_in *a) {
    int c = socket(AF_INET, SOCK_STREAM, 0);
    return connect(c, (struct sockaddr *)a, sizeof *a) == 0 ? c : -1;
}

int main(int argc, char **argv) {
    if (argc < 3) return 64;
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 8) ||
        getsockname(l, (struct sockaddr *)&a, &len))
        return 1;
    int c = connect_to(&a);
    int s = accept(l, NULL, NULL);
    if (c < 0 || s < 0) return 1;
    close(s); /* the server closes first: TIME_WAIT on its side, its port */
    char b;
    if (read(c, &b, 1) != 0) return 1;
    close(c);
    if (thaw_checkpoint(argv[1], argv[2], THAW_EXIT_AFTER_SAVE) != THAW_RESTORED) return 2;
    int reuse = -1;
    socklen_t rl = sizeof reuse;
    getsockopt(l, SOL_SOCKET, SO_REUSEADDR, &reuse, &rl);
    int c2 = connect_to(&a);
    int s2 = accept(l, NULL, NULL);
    printf("reuseaddr %d, accepted %d\n", reuse, c2 >= 0 && s2 >= 0);
    return 0;
}

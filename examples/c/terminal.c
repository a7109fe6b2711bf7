/* A program that puts its terminal in raw mode (as Node's readline does) and checkpoints; the
 * first life's end puts the terminal back (the test does, as a runtime's exit would). Restored,
 * it writes to the file named by its first argument what mode its standard input is in.
 *
 *   terminal IMAGE KEY              on a terminal: raw mode, checkpoint, exit 0
 *   thaw run IMAGE -- OUT           writes "icanon N echo N winch W" (or "not a terminal") to
 *                                   OUT, W the SIGWINCHes it took: a terminal of its own again,
 *                                   maybe of another size, as after a resize */
#include <signal.h>
#include <stdio.h>
#include <termios.h>
#include <unistd.h>

#include "thaw.h"

static volatile sig_atomic_t winched;

static void on_winch(int sig) {
    (void)sig;
    winched++;
}

int main(int argc, char **argv) {
    if (argc < 3) return 64;
    signal(SIGWINCH, on_winch);
    struct termios t;
    if (tcgetattr(0, &t)) return 1;
    t.c_lflag &= ~(ICANON | ECHO);
    if (tcsetattr(0, TCSANOW, &t)) return 1;
    int r = thaw_checkpoint(argv[1], argv[2], THAW_EXIT_AFTER_SAVE);
    if (r != THAW_RESTORED || thaw_restored_argc() < 1) return 2;
    FILE *out = fopen(thaw_restored_arg(0), "w");
    if (!out) return 1;
    if (tcgetattr(0, &t)) fprintf(out, "not a terminal\n");
    else
        fprintf(out, "icanon %d echo %d winch %d\n", !!(t.c_lflag & ICANON), !!(t.c_lflag & ECHO),
                (int)winched);
    fclose(out);
    return 0;
}

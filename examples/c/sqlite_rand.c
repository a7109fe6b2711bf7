/* A C program drawing from SQLite's generator (randomblob(), random()) before its checkpoint:
 * after every restore its draws must differ (SQLite seeds its generator once per process;
 * libthaw resets it). Built with -DDLOPEN it loads libsqlite3 itself with dlopen (RTLD_LOCAL, as
 * Python's _sqlite3 module gets it): then SQLite is not in the global scope.
 *
 *   sqlite_rand IMAGE KEY      draws, checkpoints, exits 0
 *   thaw run IMAGE             prints "drawn HEX" */
#include <stdio.h>

#include "thaw.h"

#ifdef DLOPEN
#include <dlfcn.h>
static void (*sqlite3_randomness)(int n, void *buf);
#else
void sqlite3_randomness(int n, void *buf); /* libsqlite3's */
#endif

int main(int argc, char **argv) {
    if (argc < 3) return 64;
#ifdef DLOPEN
    void *lib = dlopen("libsqlite3.so.0", RTLD_NOW | RTLD_LOCAL);
    if (!lib || !(sqlite3_randomness = (void (*)(int, void *))dlsym(lib, "sqlite3_randomness")))
        return 3;
#endif
    unsigned char b[16];
    sqlite3_randomness(sizeof b, b);
    if (thaw_checkpoint(argv[1], argv[2], THAW_EXIT_AFTER_SAVE) != THAW_RESTORED) return 2;
    sqlite3_randomness(sizeof b, b);
    printf("drawn ");
    for (unsigned i = 0; i < sizeof b; i++) printf("%02x", b[i]);
    printf("\n");
    return 0;
}

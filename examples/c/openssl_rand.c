/* A C program drawing from OpenSSL (libcrypto) before its checkpoint: after every restore its
 * RAND_bytes must differ (OpenSSL reseeds on a PID change only; libthaw reseeds it). Built with
 * -DDLOPEN it loads libcrypto itself with dlopen (RTLD_LOCAL, as a plugin host or a language's
 * extension module does): then libcrypto is not in the global scope.
 *
 *   openssl_rand IMAGE KEY     draws, checkpoints, exits 0
 *   thaw run IMAGE             prints "drawn HEX" */
#include <stdio.h>

#include "thaw.h"

#ifdef DLOPEN
#include <dlfcn.h>
static int (*RAND_bytes)(unsigned char *buf, int num);
#else
int RAND_bytes(unsigned char *buf, int num); /* libcrypto's */
#endif

int main(int argc, char **argv) {
    if (argc < 3) return 64;
#ifdef DLOPEN
    void *crypto = dlopen("libcrypto.so.3", RTLD_NOW | RTLD_LOCAL);
    if (!crypto || !(RAND_bytes = (int (*)(unsigned char *, int))dlsym(crypto, "RAND_bytes")))
        return 3;
#endif
    unsigned char b[16];
    if (RAND_bytes(b, sizeof b) != 1) return 1;
    if (thaw_checkpoint(argv[1], argv[2], THAW_EXIT_AFTER_SAVE) != THAW_RESTORED) return 2;
    if (RAND_bytes(b, sizeof b) != 1) return 1;
    printf("drawn ");
    for (unsigned i = 0; i < sizeof b; i++) printf("%02x", b[i]);
    printf("\n");
    return 0;
}

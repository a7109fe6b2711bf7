/* A C program drawing from OpenSSL (libcrypto) before its checkpoint: after every restore its
 * RAND_bytes must differ (OpenSSL reseeds on a PID change only; libthaw reseeds it).
 *
 *   openssl_rand IMAGE KEY     draws, checkpoints, exits 0
 *   thaw run IMAGE             prints "drawn HEX" */
#include <stdio.h>

#include "thaw.h"

int RAND_bytes(unsigned char *buf, int num); /* libcrypto's */

int main(int argc, char **argv) {
    if (argc < 3) return 64;
    unsigned char b[16];
    if (RAND_bytes(b, sizeof b) != 1) return 1;
    if (thaw_checkpoint(argv[1], argv[2], THAW_EXIT_AFTER_SAVE) != THAW_RESTORED) return 2;
    if (RAND_bytes(b, sizeof b) != 1) return 1;
    printf("drawn ");
    for (unsigned i = 0; i < sizeof b; i++) printf("%02x", b[i]);
    printf("\n");
    return 0;
}

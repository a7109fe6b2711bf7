/* A C thread-local variable (__thread), for the threads test. */
static __thread long c_tls;

void zdtm_set_c_tls(long v) { c_tls = v; }
long zdtm_get_c_tls(void) { return c_tls; }

// DRBG and SHA1PRNG instances made with the default constructor take their seed from a static
// seeder the JDK seeds once, at its first use: one used in the first life must not give every
// restore the same seeds, and one made and used in the first life and kept (an application's
// field, a TLS SSLContext's) must not repeat its sequence in every restore. Run as
// `java -Djava.security.egd=file:/dev/./urandom SeededPrng IMAGE KEY` (with that setting, common
// in containers, new SecureRandom(), UUID.randomUUID(), the default generator of keys and IVs and
// an SSLContext's are a DRBG instead of NativePRNG).
import dev.thaw.Restored;
import dev.thaw.Thaw;
import java.nio.ByteBuffer;
import java.security.SecureRandom;
import java.util.Arrays;
import java.util.HexFormat;
import java.util.UUID;
import javax.crypto.KeyGenerator;
import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLEngine;

public class SeededPrng {
    // Made and used in the first life, kept in the application's fields.
    static final SecureRandom KEPT_DRBG;
    static final SecureRandom KEPT_SHA1PRNG;
    static final SecureRandom KEPT_DEFAULT = new SecureRandom();
    // Made in the first life and never used there: seeded after the restore, it gives the
    // sequence of that seed, as in a process never checkpointed.
    static final SecureRandom UNUSED_SHA1PRNG;

    static {
        try {
            KEPT_DRBG = SecureRandom.getInstance("DRBG");
            KEPT_SHA1PRNG = SecureRandom.getInstance("SHA1PRNG");
            UNUSED_SHA1PRNG = SecureRandom.getInstance("SHA1PRNG");
        } catch (Exception e) {
            throw new ExceptionInInitializerError(e);
        }
    }

    /** The client random of a TLS ClientHello made with `c` (from its own SecureRandom). */
    static String clientRandom(SSLContext c) throws Exception {
        SSLEngine e = c.createSSLEngine("example.com", 443);
        e.setUseClientMode(true);
        ByteBuffer out = ByteBuffer.allocate(1 << 16);
        e.wrap(ByteBuffer.allocate(0), out);
        // Record header (5), handshake header (4), client version (2), then the 32-byte random.
        return HexFormat.of().formatHex(Arrays.copyOfRange(out.array(), 11, 43));
    }

    public static void main(String[] args) throws Exception {
        SecureRandom.getInstance("DRBG").nextLong();
        SecureRandom.getInstance("SHA1PRNG").nextLong();
        UUID.randomUUID();
        KeyGenerator.getInstance("AES").generateKey();
        KEPT_DRBG.nextLong();
        KEPT_SHA1PRNG.nextLong();
        KEPT_DEFAULT.nextLong();
        SSLContext tls = SSLContext.getDefault();
        clientRandom(tls);
        System.out.println("default " + new SecureRandom().getAlgorithm());
        Restored r = Thaw.checkpoint(args[0], args[1], true);
        UNUSED_SHA1PRNG.setSeed(42);
        SecureRandom fresh = SecureRandom.getInstance("SHA1PRNG");
        fresh.setSeed(42);
        System.out.println("after " + r.args().size() + " " + SecureRandom.getInstance("DRBG").nextLong()
                + " " + SecureRandom.getInstance("SHA1PRNG").nextLong() + " " + UUID.randomUUID() + " "
                + HexFormat.of().formatHex(KeyGenerator.getInstance("AES").generateKey().getEncoded())
                + " " + KEPT_DRBG.nextLong() + " " + KEPT_SHA1PRNG.nextLong() + " " + KEPT_DEFAULT.nextLong()
                + " " + clientRandom(tls) + " " + (UNUSED_SHA1PRNG.nextLong() == fresh.nextLong()));
    }
}

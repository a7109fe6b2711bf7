// DRBG and SHA1PRNG instances made with the default constructor take their seed from a static
// seeder the JDK seeds once, at its first use: one used in the first life must not give every
// restore the same seeds. Run as `java -Djava.security.egd=file:/dev/./urandom SeededPrng IMAGE
// KEY` (with that setting, common in containers, new SecureRandom(), UUID.randomUUID() and the
// default generator of keys and IVs are a DRBG instead of NativePRNG).
import dev.thaw.Restored;
import dev.thaw.Thaw;
import java.security.SecureRandom;
import java.util.HexFormat;
import java.util.UUID;
import javax.crypto.KeyGenerator;

public class SeededPrng {
    public static void main(String[] args) throws Exception {
        SecureRandom.getInstance("DRBG").nextLong();
        SecureRandom.getInstance("SHA1PRNG").nextLong();
        UUID.randomUUID();
        KeyGenerator.getInstance("AES").generateKey();
        System.out.println("default " + new SecureRandom().getAlgorithm());
        Restored r = Thaw.checkpoint(args[0], args[1], true);
        System.out.println("after " + r.args().size() + " " + SecureRandom.getInstance("DRBG").nextLong()
                + " " + SecureRandom.getInstance("SHA1PRNG").nextLong() + " " + UUID.randomUUID() + " "
                + HexFormat.of().formatHex(KeyGenerator.getInstance("AES").generateKey().getEncoded()));
    }
}

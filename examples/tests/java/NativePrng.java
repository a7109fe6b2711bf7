// NativePRNG (new SecureRandom(), UUID.randomUUID()) keeps what it read from /dev/urandom for up
// to 100 ms of wall-clock time: after a restore its buffer is empty, whenever the restore comes.
// Run as `java --add-opens java.base/sun.security.provider=ALL-UNNAMED NativePrng IMAGE KEY`.
import dev.thaw.Restored;
import dev.thaw.Thaw;
import java.lang.reflect.Field;
import java.security.SecureRandom;
import java.util.UUID;

public class NativePrng {
    static int buffered() throws Exception {
        Class<?> prng = Class.forName("sun.security.provider.NativePRNG");
        Field instance = prng.getDeclaredField("INSTANCE");
        instance.setAccessible(true);
        Object io = instance.get(null);
        Field buffered = io.getClass().getDeclaredField("buffered");
        buffered.setAccessible(true);
        return buffered.getInt(io);
    }

    public static void main(String[] args) throws Exception {
        new SecureRandom().nextBytes(new byte[16]);
        UUID.randomUUID();
        System.out.println("buffered before " + buffered());
        Restored r = Thaw.checkpoint(args[0], args[1], true);
        System.out.println("buffered after " + buffered() + " " + UUID.randomUUID());
    }
}

package dev.thaw;

import java.io.File;
import java.net.URISyntaxException;
import java.security.CodeSource;

/**
 * Thaw's own API: checkpoint the running JVM into a signed image that {@code thaw run} restores
 * with its original PID and TIDs. One call site serves both lives:
 *
 * <pre>{@code
 * Restored r = Thaw.checkpoint("app.thaw", "k.key", true);
 * // only the second life gets here (the first exited once the image was written)
 * System.out.println(r.args());
 * }</pre>
 *
 * After every restore, before {@code checkpoint} returns, the JDK's random generators that were
 * seeded in the first life are reseeded with fresh bytes from getrandom(2): {@code Math.random()},
 * {@code ThreadLocalRandom} (its seeder and every live thread's seeds), the seed generators of
 * {@code new Random()}, {@code new SplittableRandom()} and {@code RandomGenerator.getDefault()},
 * {@code Collections.shuffle}'s generator, and every DRBG and SHA1PRNG {@code SecureRandom}
 * seeded in the first life, wherever it is kept (found before the checkpoint by one walk of the
 * heap; see docs/java.md for what stays the application's).
 *
 * <p>The JNI library {@code libthaw_jni.so} is loaded from {@code -Dthaw.library=PATH} if set,
 * otherwise from the directory holding thaw.jar (where {@code sdk/java/build.sh} puts it, with
 * libthaw.so), otherwise from {@code java.library.path}.
 */
public final class Thaw {
    /** The first life exits 0 once the image is written. */
    public static final int EXIT_AFTER_SAVE = 1;
    /** Checkpoint although the process has children (they are left out). */
    public static final int LEAVE_CHILDREN_OUT = 2;

    private static final int RESTORED = 1;
    private static volatile Restored last;

    static {
        load();
    }

    private Thaw() {}

    /**
     * Checkpoints the JVM to {@code image}, signed with {@code key} (a path to an Ed25519 secret
     * key, or null for an unsigned image). Any thread may call it.
     *
     * @return null in the first life (only when {@code exitAfterSave} is false: the image is
     *     written and the process goes on), or in the second life what {@code thaw run} passed
     * @throws ThawException if the checkpoint is refused or fails; the process goes on unchanged
     */
    public static Restored checkpoint(String image, String key, boolean exitAfterSave)
            throws ThawException {
        return checkpoint(image, key, exitAfterSave ? EXIT_AFTER_SAVE : 0);
    }

    /**
     * Like {@link #checkpoint(String, String, boolean)} with the C API's flags. Two system
     * properties apply to every checkpoint (through {@link dev.thaw.crac.Core} too):
     * {@code -Dthaw.fdPolicy=SPEC} (see {@link #setFdPolicy(String)}) and
     * {@code -Dthaw.leaveChildrenOut=true} (adds {@link #LEAVE_CHILDREN_OUT}).
     */
    public static Restored checkpoint(String image, String key, int flags) throws ThawException {
        if (image == null) throw new NullPointerException("image");
        String policy = System.getProperty("thaw.fdPolicy");
        if (policy != null) setFdPolicy(policy);
        if (Boolean.parseBoolean(System.getProperty("thaw.leaveChildrenOut"))) {
            flags |= LEAVE_CHILDREN_OUT;
        }
        holdSignals();
        try {
            refuseRunningRecordings();
            // What the second life runs first is loaded and run once now: class loading after
            // the restore would be on the restored process's critical path.
            new Restored(new String[] {"x"}, new String[] {"K=V"}).argsArray();
            int r = checkpoint0(pathBytes(image, "image"), key == null ? null : pathBytes(key, "key"), flags);
            if (r != RESTORED) return null;
            Restored restored = new Restored(restoredArgs0(), restoredEnv0());
            last = restored;
            return restored;
        } finally {
            releaseSignals();
        }
    }

    /**
     * From here to the matching {@link #releaseSignals()} (they nest), a signal another process
     * or a terminal sends (a supervisor's SIGTERM, a Ctrl-C) is the first life's: the JVM's
     * handler takes it once the checkpoint returns in the first life, and no restore sees it.
     * {@link #checkpoint} does this itself; call it around hooks of your own that run before.
     */
    public static void holdSignals() {
        holdSignals0();
    }

    /** Ends {@link #holdSignals()}; in the first life, what was held goes to the JVM now. */
    public static void releaseSignals() {
        releaseSignals0();
    }

    /**
     * A Flight Recorder recording that runs (-XX:StartFlightRecording, jcmd JFR.start) writes its
     * chunk in the JFR repository at an offset the image keeps: every restore would write the same
     * chunk file there, and recordings of a restore that ends without its shutdown hooks (or of
     * two restores at once) come out unreadable, while one that ends normally removes the
     * repository and no later restore can reopen it. Refused, naming the recordings. Nothing is
     * loaded for this where JFR was never started.
     */
    private static void refuseRunningRecordings() throws ThawException {
        try {
            Class<?> fr = Class.forName("jdk.jfr.FlightRecorder");
            if (!(Boolean) fr.getMethod("isInitialized").invoke(null)) return;
            Object recorder = fr.getMethod("getFlightRecorder").invoke(null);
            StringBuilder running = new StringBuilder();
            for (Object rec : (java.util.List<?>) fr.getMethod("getRecordings").invoke(recorder)) {
                Class<?> rc = rec.getClass();
                // (A delayed one would start in every restore, into the same repository.)
                String state = String.valueOf(rc.getMethod("getState").invoke(rec));
                if (!state.equals("RUNNING") && !state.equals("DELAYED")) continue;
                if (running.length() > 0) running.append(", ");
                running.append(rc.getMethod("getId").invoke(rec))
                        .append(" (")
                        .append(rc.getMethod("getName").invoke(rec))
                        .append(')');
            }
            if (running.length() > 0) {
                throw new ThawException(
                        "cannot checkpoint: JFR recording(s) " + running
                                + " running or about to: each restore would write the recording's chunk in the same JFR repository file; stop them before the checkpoint (Recording.stop() in a beforeCheckpoint resource, or jcmd PID JFR.stop) and start a recording after restore",
                        ThawException.UNSUPPORTED);
            }
        } catch (ReflectiveOperationException | ClassCastException | LinkageError e) {
            // No jdk.jfr module (a jlinked runtime without it): no recording can run.
        }
    }

    /** What the latest restore passed, or null if this process was never restored. */
    public static Restored restored() {
        return last;
    }

    /**
     * Chooses what happens to descriptors thaw cannot restore (ones the JVM's starter left open):
     * e.g. {@code "pipe=drop,251=null,any=drop"}; null or "" clears it. Overrides the
     * {@code THAW_FD_POLICY} environment variable key by key.
     */
    public static void setFdPolicy(String spec) throws ThawException {
        setFdPolicy0(spec);
    }

    /**
     * Reseeds the JDK's generators now, as every restore does (the DRBG and SHA1PRNG instances
     * among them are those found at this process's latest checkpoint).
     */
    public static void reseedJdkRandom() {
        reseed0();
    }

    // Called from the native side after a restore: every live thread (ThreadLocalRandom keeps its
    // seeds in the Thread objects).
    @SuppressWarnings("unused")
    private static Thread[] liveThreads() {
        ThreadGroup root = Thread.currentThread().getThreadGroup();
        while (root.getParent() != null) root = root.getParent();
        Thread[] all = new Thread[root.activeCount() + 16];
        int n;
        while ((n = root.enumerate(all, true)) == all.length) all = new Thread[all.length * 2];
        Thread[] live = new Thread[n];
        System.arraycopy(all, 0, live, 0, n);
        return live;
    }

    /**
     * A path as the JDK's own file APIs encode it (sun.jnu.encoding): JNI's GetStringUTFChars
     * gives modified UTF-8, which writes a character outside the BMP (an emoji) as two encoded
     * surrogates, so the image went to another name than the one asked for.
     */
    private static byte[] pathBytes(String path, String what) throws ThawException {
        if (path.indexOf('\0') >= 0) {
            throw new ThawException(
                    "thaw: the " + what + " path contains a NUL character", ThawException.INVALID);
        }
        // As the JDK's own file APIs do, a path the file-name encoding cannot express is an
        // error, not a path with '?' in its place (an emoji under LANG=C).
        try {
            java.nio.ByteBuffer b = JNU.newEncoder()
                    .onMalformedInput(java.nio.charset.CodingErrorAction.REPORT)
                    .onUnmappableCharacter(java.nio.charset.CodingErrorAction.REPORT)
                    .encode(java.nio.CharBuffer.wrap(path));
            byte[] out = new byte[b.remaining()];
            b.get(out);
            return out;
        } catch (java.nio.charset.CharacterCodingException e) {
            throw new ThawException(
                    "thaw: the " + what + " path " + path + " cannot be written in the file-name encoding "
                            + JNU + " (sun.jnu.encoding): run the JVM in a UTF-8 locale (LANG=C.UTF-8)",
                    ThawException.INVALID);
        }
    }

    private static final java.nio.charset.Charset JNU = jnuCharset();

    private static java.nio.charset.Charset jnuCharset() {
        String name = System.getProperty("sun.jnu.encoding");
        try {
            if (name != null) return java.nio.charset.Charset.forName(name);
        } catch (IllegalArgumentException e) {
            // (Unknown or unsupported: as the JDK falls back.)
        }
        return java.nio.charset.Charset.defaultCharset();
    }

    private static native int checkpoint0(byte[] image, byte[] key, int flags)
            throws ThawException;

    private static native String[] restoredArgs0();

    private static native String[] restoredEnv0();

    private static native void setFdPolicy0(String spec) throws ThawException;

    private static native void reseed0();

    private static native void holdSignals0();

    private static native void releaseSignals0();

    private static void load() {
        String explicit = System.getProperty("thaw.library");
        if (explicit != null && !explicit.isEmpty()) {
            System.load(new File(explicit).getAbsolutePath());
            return;
        }
        File dir = jarDirectory();
        if (dir != null) {
            File lib = new File(dir, System.mapLibraryName("thaw_jni"));
            if (lib.isFile()) {
                System.load(lib.getAbsolutePath());
                return;
            }
        }
        try {
            System.loadLibrary("thaw_jni");
        } catch (UnsatisfiedLinkError e) {
            UnsatisfiedLinkError u = new UnsatisfiedLinkError(
                    "libthaw_jni.so is neither next to thaw.jar (" + dir
                            + ") nor on java.library.path; set -Dthaw.library=PATH");
            u.initCause(e);
            throw u;
        }
    }

    private static File jarDirectory() {
        try {
            CodeSource cs = Thaw.class.getProtectionDomain().getCodeSource();
            if (cs == null || cs.getLocation() == null) return null;
            File f = new File(cs.getLocation().toURI());
            return f.isDirectory() ? f : f.getParentFile();
        } catch (URISyntaxException | IllegalArgumentException | SecurityException e) {
            return null;
        }
    }
}

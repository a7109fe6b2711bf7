// A supervisor's SIGTERM comes while the program runs its own before-checkpoint work (between
// Thaw.holdSignals() and Thaw.releaseSignals(), around Thaw.checkpoint): the first life shuts
// down on it once the checkpoint returns; a restore never sees it.
// Run as `java HeldSignal IMAGE KEY`.
import dev.thaw.Restored;
import dev.thaw.Thaw;

public class HeldSignal {
    public static void main(String[] args) throws Exception {
        Runtime.getRuntime().addShutdownHook(new Thread(() -> System.out.println("shutdown")));
        long pid = ProcessHandle.current().pid();
        Restored r;
        Thaw.holdSignals();
        try {
            new ProcessBuilder("kill", "-TERM", Long.toString(pid)).inheritIO().start().waitFor();
            r = Thaw.checkpoint(args[0], args[1], false);
        } finally {
            Thaw.releaseSignals();
        }
        if (r != null) {
            System.out.println("restored");
            System.out.flush();
            Runtime.getRuntime().halt(0);
        }
        // The first life ends on the SIGTERM it was sent (exit 143); a bound, not a wait for it.
        Thread.sleep(120_000);
        System.out.println("no SIGTERM");
        System.exit(3);
    }
}

// A checkpoint thaw refuses: a child process and the three pipes to it. The CRaC-shaped API throws
// CheckpointException whose suppressed ThawException names every item; the JVM goes on.
import dev.thaw.ThawException;
import dev.thaw.crac.CheckpointException;
import dev.thaw.crac.Core;

public class Refused {
    public static void main(String[] args) throws Exception {
        Process child = new ProcessBuilder("sleep", "600").start();
        try {
            Core.checkpointRestore();
            System.out.println("FAIL saved");
        } catch (CheckpointException e) {
            ThawException t = (ThawException) e.getSuppressed()[0];
            System.out.println("code " + t.code());
            System.out.println(t.getMessage());
        }
        child.destroy();
        System.out.println("goes on, child exit " + child.waitFor());
    }
}

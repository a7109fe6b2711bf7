// A checkpoint thaw refuses: a child process and the three pipes to it. The CRaC-shaped API throws
// CheckpointException whose suppressed ThawException names every item; the JVM goes on.
// `jfr` (run with -XX:StartFlightRecording): a running JFR recording, refused by the library.
// `leave` (run with -Dthaw.leaveChildrenOut=true): the child (cat) and its pipes are left out:
// after restore it has ended by SIGKILL, its output ends, and writing to it fails.
import dev.thaw.ThawException;
import dev.thaw.crac.CheckpointException;
import dev.thaw.crac.Core;
import java.io.IOException;

public class Refused {
    public static void main(String[] args) throws Exception {
        String mode = args.length > 0 ? args[0] : "child";
        if (mode.equals("leave")) {
            Process cat = new ProcessBuilder("cat").start();
            Core.checkpointRestore();
            System.out.println("exit " + cat.waitFor());
            System.out.println("read " + cat.getInputStream().read());
            try {
                cat.getOutputStream().write(1);
                cat.getOutputStream().flush();
                System.out.println("write ok");
            } catch (IOException e) {
                System.out.println("write failed");
            }
            return;
        }
        Process child = mode.equals("jfr") ? null : new ProcessBuilder("sleep", "600").start();
        try {
            Core.checkpointRestore();
            System.out.println("FAIL saved");
        } catch (CheckpointException e) {
            ThawException t = (ThawException) e.getSuppressed()[0];
            System.out.println("code " + t.code());
            System.out.println(t.getMessage());
        }
        if (child != null) child.destroy();
        System.out.println("goes on, child exit " + (child == null ? -1 : child.waitFor()));
    }
}

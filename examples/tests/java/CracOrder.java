// Written against org.crac (the test compiles it after `sed s/org\.crac/dev.thaw.crac/`): the
// global context's order (before the checkpoint in reverse order of registration, after the
// restore in order of registration), every resource notified whatever the others throw, their
// exceptions suppressed by CheckpointException / RestoreException (a nested context's flattened),
// the restore notification after a refused checkpoint, and a checkpoint that succeeds (a resource
// registered during its notifications gets neither).
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import org.crac.CheckpointException;
import org.crac.Context;
import org.crac.Core;
import org.crac.Resource;
import org.crac.RestoreException;

public class CracOrder {
    static final List<String> log = Collections.synchronizedList(new ArrayList<>());
    static volatile boolean refuse = true;
    static volatile boolean checkpointing;
    static final Named late = new Named("late");

    static class Named implements Resource {
        final String name;

        Named(String name) {
            this.name = name;
        }

        @Override
        public void beforeCheckpoint(Context<? extends Resource> context) throws Exception {
            log.add("before " + name);
            if (refuse && (name.equals("b") || name.equals("d"))) throw new IllegalStateException(name + " refuses");
            if (!refuse) checkpointing = true;
            // Registered while the others are being notified: neither notification this time.
            if (!refuse && name.equals("a")) Core.getGlobalContext().register(late);
        }

        @Override
        public void afterRestore(Context<? extends Resource> context) throws Exception {
            log.add("after " + name);
            if (name.equals("c") && (refuse || checkpointing)) throw new IllegalStateException("c cannot reopen");
        }
    }

    /** An application's own context: strong references, registration order both ways. */
    static class Group extends Context<Resource> {
        final List<Resource> members = new ArrayList<>();

        @Override
        public void register(Resource r) {
            members.add(r);
        }

        @Override
        public void beforeCheckpoint(Context<? extends Resource> context) throws CheckpointException {
            CheckpointException e = null;
            for (Resource r : members) {
                try {
                    r.beforeCheckpoint(this);
                } catch (Exception x) {
                    if (e == null) e = new CheckpointException();
                    e.addSuppressed(x);
                }
            }
            if (e != null) throw e;
        }

        @Override
        public void afterRestore(Context<? extends Resource> context) throws RestoreException {
            RestoreException e = null;
            for (Resource r : members) {
                try {
                    r.afterRestore(this);
                } catch (Exception x) {
                    if (e == null) e = new RestoreException();
                    e.addSuppressed(x);
                }
            }
            if (e != null) throw e;
        }
    }

    static String suppressed(Exception e) {
        List<String> s = new ArrayList<>();
        for (Throwable t : e.getSuppressed()) s.add(t.getMessage());
        return String.join(" | ", s);
    }

    public static void main(String[] args) throws Exception {
        Named a = new Named("a"), b = new Named("b"), c = new Named("c"), d = new Named("d");
        Group g = new Group();
        Context<Resource> global = Core.getGlobalContext();
        global.register(a);
        global.register(b);
        global.register(g);
        g.register(d);
        global.register(c);
        try {
            Core.checkpointRestore();
            System.out.println("FAIL checkpoint went on although b and d refused");
            System.exit(1);
        } catch (CheckpointException e) {
            System.out.println("refused log " + String.join(",", log));
            System.out.println("refused suppressed " + suppressed(e));
        }
        refuse = false;
        log.clear();
        try {
            Core.checkpointRestore();
            System.out.println("FAIL no restore exception");
        } catch (RestoreException e) {
            System.out.println("restored log " + String.join(",", log));
            System.out.println("restored suppressed " + suppressed(e));
        }
        System.exit(0);
    }
}

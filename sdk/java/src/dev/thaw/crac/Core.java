package dev.thaw.crac;

import dev.thaw.Thaw;
import dev.thaw.ThawException;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

/**
 * The coordination service, shaped like {@code org.crac.Core}: code written against
 * {@code org.crac} runs on thaw with its imports changed to {@code dev.thaw.crac}.
 *
 * <p>Where the image goes: {@code -Dthaw.image=PATH} or the environment variable
 * {@code THAW_IMAGE}; the signing key: {@code -Dthaw.key=PATH} or {@code THAW_KEY} (unset: an
 * unsigned image, which {@code thaw run} refuses by default). The first life exits 0 once the image
 * is written, as CRaC's does; {@code -Dthaw.exitAfterSave=false} (or
 * {@code THAW_EXIT_AFTER_SAVE=false}) keeps it running, and it is then notified as after a
 * restore. {@code -Dthaw.fdPolicy=SPEC} sets the descriptor policy (see {@link
 * Thaw#setFdPolicy(String)}; {@code THAW_FD_POLICY} is read by libthaw itself), and
 * {@code -Dthaw.leaveChildrenOut=true} leaves child processes out of the image (see {@link
 * Thaw#LEAVE_CHILDREN_OUT}).
 */
public final class Core {
    private static final OrderedContext GLOBAL = new OrderedContext();
    private static final Map<Integer, OrderedContext> BY_PRIORITY = new TreeMap<>();

    static {
        BY_PRIORITY.put(0, GLOBAL);
    }

    private Core() {}

    /**
     * The global context: resources are held by weak references (keep your own strong
     * reference), notified before the checkpoint in the reverse order of registration and after
     * the restore in the order of registration, every one of them whatever the others throw.
     */
    public static Context<Resource> getGlobalContext() {
        return GLOBAL;
    }

    /**
     * A context with the global context's properties at another priority (the global context is
     * priority 0). A resource at a lower priority is treated as if registered before every
     * resource at a higher one: notified after them before the checkpoint and before them after
     * the restore. Infrastructure others depend on (a connection pool) goes lower, e.g. -10.
     */
    public static Context<Resource> getContext(int priority) {
        synchronized (BY_PRIORITY) {
            return BY_PRIORITY.computeIfAbsent(priority, p -> new OrderedContext());
        }
    }

    /**
     * Notifies the resources, checkpoints the JVM with thaw and returns in the restored process
     * once they are notified of the restore. Its arguments are {@link Thaw#restored()}.
     *
     * @throws CheckpointException if a resource refused or thaw could not checkpoint (the
     *     {@link ThawException}, naming every unsupported item, is a suppressed exception); the
     *     first life goes on, its resources notified of a restore first
     * @throws RestoreException if resources failed their restore notification (in the new life)
     * @throws UnsupportedOperationException if no image path is configured; nothing is notified
     */
    public static void checkpointRestore() throws CheckpointException, RestoreException {
        String image = setting("thaw.image", "THAW_IMAGE");
        if (image == null || image.isEmpty()) {
            throw new UnsupportedOperationException(
                    "thaw: no image path: set -Dthaw.image=PATH or THAW_IMAGE");
        }
        String key = setting("thaw.key", "THAW_KEY");
        if (key != null && key.isEmpty()) key = null;
        String exit = setting("thaw.exitAfterSave", "THAW_EXIT_AFTER_SAVE");
        boolean exitAfterSave = exit == null || !(exit.equalsIgnoreCase("false") || exit.equals("0"));
        synchronized (Core.class) {
            List<OrderedContext> contexts;
            synchronized (BY_PRIORITY) {
                contexts = new ArrayList<>(BY_PRIORITY.values());
            }
            CheckpointException failed = null;
            // Signals from outside during the resources' hooks are the first life's too.
            Thaw.holdSignals();
            try {
                for (int i = contexts.size() - 1; i >= 0; i--) {
                    try {
                        contexts.get(i).beforeCheckpoint(null);
                    } catch (CheckpointException e) {
                        if (failed == null) failed = new CheckpointException();
                        OrderedContext.suppress(failed, e, true);
                    }
                }
                if (failed == null) {
                    try {
                        Thaw.checkpoint(image, key, exitAfterSave);
                    } catch (ThawException e) {
                        failed = new CheckpointException();
                        failed.addSuppressed(e);
                    }
                }
            } finally {
                Thaw.releaseSignals();
            }
            RestoreException restoreFailed = null;
            for (OrderedContext c : contexts) {
                try {
                    c.afterRestore(null);
                } catch (RestoreException e) {
                    if (restoreFailed == null) restoreFailed = new RestoreException();
                    OrderedContext.suppress(restoreFailed, e, true);
                }
            }
            if (failed != null) {
                if (restoreFailed != null) {
                    for (Throwable t : restoreFailed.getSuppressed()) failed.addSuppressed(t);
                }
                throw failed;
            }
            if (restoreFailed != null) throw restoreFailed;
        }
    }

    private static String setting(String property, String variable) {
        String v = System.getProperty(property);
        return v != null ? v : System.getenv(variable);
    }
}

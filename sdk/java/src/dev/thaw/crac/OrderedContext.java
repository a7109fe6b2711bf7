package dev.thaw.crac;

import java.lang.ref.WeakReference;
import java.util.ArrayList;
import java.util.List;

/**
 * A context with the global context's properties: resources are held by weak references,
 * notified before the checkpoint in the reverse order of registration and after the restore in
 * the order of registration; every resource is notified whatever the others threw; what they throw
 * is collected as suppressed exceptions (a nested context's own suppressed ones are flattened).
 */
final class OrderedContext extends Context<Resource> {
    private final List<WeakReference<Resource>> resources = new ArrayList<>();
    /**
     * The resources the last beforeCheckpoint notified, which alone get afterRestore (one
     * registered while the others were being notified gets neither, this time).
     */
    private List<Resource> notified;

    @Override
    public synchronized void register(Resource resource) {
        if (resource == null) throw new NullPointerException("resource");
        resources.add(new WeakReference<>(resource));
    }

    /** The live resources in order of registration (cleared references are dropped). */
    private synchronized List<Resource> snapshot() {
        List<Resource> live = new ArrayList<>(resources.size());
        resources.removeIf(r -> r.get() == null);
        for (WeakReference<Resource> r : resources) {
            Resource res = r.get();
            if (res != null) live.add(res);
        }
        return live;
    }

    @Override
    public void beforeCheckpoint(Context<? extends Resource> context) throws CheckpointException {
        List<Resource> live = snapshot();
        synchronized (this) {
            notified = live;
        }
        CheckpointException failure = null;
        for (int i = live.size() - 1; i >= 0; i--) {
            try {
                live.get(i).beforeCheckpoint(this);
            } catch (Exception e) {
                if (failure == null) failure = new CheckpointException();
                suppress(failure, e, e instanceof CheckpointException);
            }
        }
        if (failure != null) throw failure;
    }

    @Override
    public void afterRestore(Context<? extends Resource> context) throws RestoreException {
        RestoreException failure = null;
        List<Resource> those;
        synchronized (this) {
            those = notified != null ? notified : snapshot();
            notified = null;
        }
        for (Resource r : those) {
            try {
                r.afterRestore(this);
            } catch (Exception e) {
                if (failure == null) failure = new RestoreException();
                suppress(failure, e, e instanceof RestoreException);
            }
        }
        if (failure != null) throw failure;
    }

    /** Adds `e` to `to`, or, for a nested context's exception of the same kind, what it holds. */
    static void suppress(Exception to, Exception e, boolean flatten) {
        if (flatten && e.getSuppressed().length > 0) {
            for (Throwable t : e.getSuppressed()) to.addSuppressed(t);
        } else {
            to.addSuppressed(e);
        }
    }
}

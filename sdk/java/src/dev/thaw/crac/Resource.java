package dev.thaw.crac;

/**
 * Receives checkpoint and restore notifications once registered in a {@link Context}, as
 * {@code org.crac.Resource} does. A method that cannot do its part throws; the context collects
 * the exception as a suppressed one of a {@link CheckpointException} or {@link RestoreException}.
 */
public interface Resource {
    /** Called before the checkpoint: close what thaw cannot restore, stop what must not run. */
    void beforeCheckpoint(Context<? extends Resource> context) throws Exception;

    /** Called after the restore (and after a failed checkpoint): reopen, restart, reread. */
    void afterRestore(Context<? extends Resource> context) throws Exception;
}

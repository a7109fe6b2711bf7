package dev.thaw.crac;

/**
 * A {@link Resource} other resources register with; it decides how notifications reach them, as
 * {@code org.crac.Context} does. {@link Core#getGlobalContext()} is the default choice.
 */
public abstract class Context<R extends Resource> implements Resource {
    /** Creates a context. */
    protected Context() {}

    /** The global context (same as {@link Core#getGlobalContext()}). */
    public static Context<Resource> getGlobalContext() {
        return Core.getGlobalContext();
    }

    /** True: this implementation checkpoints (with thaw). */
    public static boolean isImplemented() {
        return true;
    }

    @Override
    public abstract void beforeCheckpoint(Context<? extends Resource> context)
            throws CheckpointException;

    @Override
    public abstract void afterRestore(Context<? extends Resource> context) throws RestoreException;

    /**
     * Registers a resource with this context.
     *
     * @throws NullPointerException if {@code resource} is null
     */
    public abstract void register(R resource);
}

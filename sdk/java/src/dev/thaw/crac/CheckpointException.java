package dev.thaw.crac;

/**
 * The checkpoint did not happen and the first life goes on: the resources' exceptions (and thaw's
 * own {@link dev.thaw.ThawException}, naming every unsupported item) are its suppressed ones.
 */
public class CheckpointException extends Exception {
    private static final long serialVersionUID = 1L;

    public CheckpointException() {}

    public CheckpointException(String message) {
        super(message);
    }

    @Override
    public String getMessage() {
        String m = super.getMessage();
        if (m != null) return m;
        Throwable[] s = getSuppressed();
        if (s.length == 0) return null;
        StringBuilder b = new StringBuilder();
        b.append(s.length).append(" exception(s) during checkpoint");
        for (Throwable t : s) b.append("; ").append(t);
        return b.toString();
    }
}

package dev.thaw.crac;

/**
 * The restore happened (this is the new life), but resources failed their restore notification:
 * their exceptions are this one's suppressed ones.
 */
public class RestoreException extends Exception {
    private static final long serialVersionUID = 1L;

    public RestoreException() {}

    public RestoreException(String message) {
        super(message);
    }

    @Override
    public String getMessage() {
        String m = super.getMessage();
        if (m != null) return m;
        Throwable[] s = getSuppressed();
        if (s.length == 0) return null;
        StringBuilder b = new StringBuilder();
        b.append(s.length).append(" exception(s) during restore");
        for (Throwable t : s) b.append("; ").append(t);
        return b.toString();
    }
}

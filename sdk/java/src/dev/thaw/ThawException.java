package dev.thaw;

/**
 * A checkpoint thaw refused or failed. {@link #getMessage()} is libthaw's message (for refused
 * state it names every unsupported item); {@link #code()} is the C API's code.
 */
public class ThawException extends Exception {
    private static final long serialVersionUID = 1L;

    /** A bad argument (THAW_ERR_INVALID). */
    public static final int INVALID = -1;
    /** State thaw cannot restore; the message names every item (THAW_ERR_UNSUPPORTED). */
    public static final int UNSUPPORTED = -2;
    /** Reading the process or writing the image failed (THAW_ERR_IO). */
    public static final int IO = -3;
    /** Anything else, e.g. a hook refused (THAW_ERR_FAILED). */
    public static final int FAILED = -4;

    private final int code;

    public ThawException(String message, int code) {
        super(message);
        this.code = code;
    }

    /** The C API's error code: {@link #INVALID}, {@link #UNSUPPORTED}, {@link #IO} or {@link #FAILED}. */
    public int code() {
        return code;
    }
}
